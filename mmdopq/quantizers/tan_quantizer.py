"""TanQ: tangent-based quantizer for post-Softmax activations (DopQ-ViT).

This is a **reconstruction** of the Tan Quantizer of DopQ-ViT: the paper's
exact equation could not be retrieved, so mmdopq implements the form described
in ``docs/method.md``:

* map ``x`` in ``[0, 1]`` through a tangent centred at ``c`` with curvature
  ``alpha``: ``u = (tan(alpha * (x - c)) - lo) / (hi - lo)`` with
  ``lo = tan(-alpha * c)`` and ``hi = tan(alpha * (1 - c))``, so ``u`` is in
  ``[0, 1]`` (``alpha * max(c, 1 - c) < pi / 2``);
* quantize ``u`` uniformly with ``2^b`` levels on ``[0, 1]``;
* dequantize ``x_hat = c + arctan(lo + u_hat * (hi - lo)) / alpha``.

Hence 0 and 1 are represented exactly, the levels are dense near both ends and
sparse near ``c``, ``alpha -> 0`` is the uniform quantizer on ``[0, 1]`` and
``c = 0.5`` is the symmetric variant. The levels are a fixed table of ``2^b``
values per layer, so integer inference costs a lookup, like a log quantizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable, Optional

import torch
from torch import Tensor

from .base_quantizer import BaseQuantizer, Objective, lookup

#: Below this curvature the map is numerically the identity: quantize uniformly.
ALPHA_EPS = 1e-4
DEFAULT_CENTRES = tuple(round(0.1 * i, 1) for i in range(1, 10))  # 0.1 .. 0.9
#: Curvature as a fraction of its upper bound ``pi / (2 max(c, 1 - c))``.
DEFAULT_FRACTIONS = (0.0, 0.3, 0.5, 0.65, 0.75, 0.83, 0.89, 0.93, 0.96, 0.98)


def alpha_bound(centre: float) -> float:
    """Largest admissible curvature for ``centre``: ``pi / (2 max(c, 1 - c))``."""
    return math.pi / (2.0 * max(centre, 1.0 - centre))


class TanQuantizer(BaseQuantizer):
    """Tan quantizer (reconstruction of DopQ-ViT's TanQ, see the module docstring).

    Buffers ``alpha`` (curvature) and ``centre`` are calibrated by a grid search:
    a coarse grid over ``centre`` x ``alpha``, then a local refinement around
    the best point (the MSE is scored on a fine histogram of the sample). The objective is
    pluggable: by default the mean squared error of the quantized tensor; a
    caller can pass ``objective(x_hat, x)``, e.g. the error of ``attn @ v``.

    Args:
        bits: Bit width (2..8, or 16).
        symmetric: Fix the centre at 0.5 (search ``alpha`` only).
        centres: Coarse grid of centres (ignored when ``symmetric``).
        alpha_fractions: Coarse grid of curvatures, as fractions in ``[0, 1)``
            of the largest admissible curvature for each centre.
        refine_steps: Points per axis of the local refinement (0: none).
        coarse_samples: Element budget of the coarse search with a caller
            objective: it is evaluated on ``x[:n]``, the largest prefix of the
            leading dimension within this budget, and the refinement on a prefix
            four times larger (objectives must accept prefixes).
        hist_bins: Bins of the histogram that scores the default (MSE) objective.
        max_samples: Element budget of :meth:`observe`.
        seed: Seed of the calibration subsampling.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool = False,
        centres: Sequence[float] = DEFAULT_CENTRES,
        alpha_fractions: Sequence[float] = DEFAULT_FRACTIONS,
        refine_steps: int = 5,
        coarse_samples: int = 1 << 16,
        hist_bins: int = 1 << 14,
        max_samples: int = 1 << 20,
        seed: int = 0,
    ) -> None:
        super().__init__(bits, max_samples, seed)
        if any(not 0.0 < c < 1.0 for c in centres):
            raise ValueError(f'centres={tuple(centres)} must lie in (0, 1)')
        if any(not 0.0 <= f < 1.0 for f in alpha_fractions):
            raise ValueError(f'alpha_fractions={tuple(alpha_fractions)} must lie in [0, 1)')
        self.symmetric = bool(symmetric)
        self.centres = (0.5,) if self.symmetric else tuple(float(c) for c in centres)
        self.alpha_fractions = tuple(float(f) for f in alpha_fractions)
        self.refine_steps = int(refine_steps)
        self.coarse_samples = int(coarse_samples)
        self.hist_bins = int(hist_bins)
        self.register_buffer('alpha', torch.tensor(0.0))
        self.register_buffer('centre', torch.tensor(0.5))

    def extra_repr(self) -> str:
        return (
            f'{super().extra_repr()}, symmetric={self.symmetric}, '
            f'alpha={float(self.alpha):.4f}, centre={float(self.centre):.4f}'
        )

    # -- the map ---------------------------------------------------------------
    def _table(self, alpha: float, centre: float, device) -> Tensor:
        """The ``2^b`` levels (a lookup table), with 0 and 1 exact at the ends."""
        top = self.n_levels - 1
        u_hat = torch.arange(self.n_levels, dtype=torch.float64) / top
        if alpha < ALPHA_EPS:
            table = u_hat
        else:
            lo, hi = math.tan(-alpha * centre), math.tan(alpha * (1.0 - centre))
            table = centre + torch.atan(lo + u_hat * (hi - lo)) / alpha
            table[0], table[-1] = 0.0, 1.0  # arctan(tan(.)) can be off by an ulp there
        return table.clamp(0.0, 1.0).to(device=device, dtype=torch.float32)

    def codes(self, x: Tensor, alpha: float, centre: float) -> Tensor:
        """The level index ``round(u(x) * (2^b - 1))`` of every element (float, integral).

        In-place chain on one temporary: this is the fake-quant hot path.
        """
        top = self.n_levels - 1
        if self.bits >= 16:  # "keep high precision": a 16-bit uniform grid on [0, 1]
            alpha = 0.0
        t = x.clamp(0.0, 1.0)
        if alpha >= ALPHA_EPS:
            lo, hi = math.tan(-alpha * centre), math.tan(alpha * (1.0 - centre))
            t.sub_(centre).mul_(alpha).tan_().sub_(lo).mul_(top / (hi - lo))
        else:
            t.mul_(top)
        return t.round_().clamp_(0, top)

    def _quant(self, x: Tensor, alpha: float, centre: float) -> Tensor:
        """Quantize ``x`` in [0, 1]: its level of the table."""
        if self.bits >= 16:
            alpha = 0.0
        return lookup(self._table(alpha, centre, x.device), self.codes(x, alpha, centre))

    def fake_quant(self, x: Tensor) -> Tensor:
        return self._quant(x, float(self.alpha), float(self.centre))

    def levels(self) -> Tensor:
        return self._table(float(self.alpha), float(self.centre), self.alpha.device)

    # -- calibration -------------------------------------------------------------
    def _grid(self, centres: Sequence[float], fractions: Sequence[float]) -> list:
        return [(f * alpha_bound(c), c) for c in centres for f in fractions]

    def _search(self, evaluate: Callable[[float, float], float], grid: list) -> tuple:
        best, best_err = grid[0], math.inf
        for alpha, centre in grid:
            err = evaluate(alpha, centre)
            if err < best_err:
                best, best_err = (alpha, centre), err
        return best

    def _coarse_to_fine(
        self,
        coarse: Callable[[float, float], float],
        fine: Callable[[float, float], float],
        extra: Sequence[tuple] = (),
    ) -> tuple:
        """Grid search with ``coarse``, then a local refinement scored by ``fine``."""
        alpha, centre = self._search(
            coarse, list(extra) + self._grid(self.centres, self.alpha_fractions)
        )
        if self.refine_steps > 1:
            frac = alpha / alpha_bound(centre)
            c_step = 0.05 if len(self.centres) > 1 else 0.0
            centres = {
                min(0.98, max(0.02, centre + d))
                for d in torch.linspace(-c_step, c_step, self.refine_steps).tolist()
            }
            fracs = {
                min(0.995, max(0.0, frac + d))
                for d in torch.linspace(-0.04, 0.04, self.refine_steps).tolist()
            }
            grid = [(alpha, centre)] + list(extra) + self._grid(sorted(centres), sorted(fracs))
            alpha, centre = self._search(fine, grid)
        return alpha, centre

    def _histogram_mse(self, x: Tensor) -> Callable[[float, float], float]:
        """MSE of the quantized sample from a fine histogram (fast, near exact).

        Each of ``hist_bins`` uniform bins of ``[0, 1]`` keeps its count, sum and
        sum of squares; a candidate quantizes the bin means, and
        ``sum (x - L)^2 = q - 2 L s + n L^2`` per bin is exact whenever a bin
        does not straddle a decision threshold (bins are ~1e-4 wide).
        """
        flat = x.reshape(-1).clamp(0.0, 1.0).double()
        idx = (flat * self.hist_bins).long().clamp_max(self.hist_bins - 1)
        n = torch.bincount(idx, minlength=self.hist_bins).double()
        s = torch.bincount(idx, weights=flat, minlength=self.hist_bins)
        q = torch.bincount(idx, weights=flat * flat, minlength=self.hist_bins)
        keep = n > 0
        n, s, q = n[keep], s[keep], q[keep]
        means = (s / n).float()
        total = float(flat.numel())

        def evaluate(alpha: float, centre: float) -> float:
            lv = self._quant(means, alpha, centre).double()
            return float((q - 2 * lv * s + n * lv * lv).sum().clamp_min(0) / total)

        return evaluate

    def _calibrate(self, x: Tensor, objective: Optional[Objective]) -> None:
        hist = self._histogram_mse(x)
        best = self._coarse_to_fine(hist, hist)
        if objective is not None:
            # Caller objective (e.g. the attn @ v error): coarse grid on a prefix of
            # the leading dim, refinement on the whole sample; the MSE optimum stays
            # a candidate, so the result is never worse than it on this objective.
            row = max(1, x[0].numel())
            head = x[: max(1, min(x.shape[0], self.coarse_samples // row))]
            body = x[: max(1, min(x.shape[0], 4 * self.coarse_samples // row))]

            def coarse(alpha: float, centre: float) -> float:
                return float(objective(self._quant(head, alpha, centre), head))

            def fine(alpha: float, centre: float) -> float:
                return float(objective(self._quant(body, alpha, centre), body))

            best = self._coarse_to_fine(coarse, fine, extra=[best])
        self.alpha.fill_(best[0])
        self.centre.fill_(best[1])
