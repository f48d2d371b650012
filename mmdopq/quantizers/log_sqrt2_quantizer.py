"""Log-sqrt2 quantizer for post-Softmax activations (the RepQ-ViT baseline)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from .base_quantizer import (
    BaseQuantizer,
    Objective,
    check_percentile_mode,
    linear_quantiles,
    lookup,
    mse,
    order_statistics,
)
from .uniform_quantizer import REPQ_PERCENTILES

SQRT2_MINUS_1 = math.sqrt(2.0) - 1.0


class LogSqrt2Quantizer(BaseQuantizer):
    """Log-sqrt2 quantizer of RepQ-ViT for values in ``[0, 1]``.

    ``q = clamp(round(-2 * log2(x / delta)), 0, 2^b - 1)``; dequantized
    ``delta * 2^(-ceil(q / 2)) * (1 + (q mod 2) * (sqrt2 - 1))``; values whose
    unclamped code is ``>= 2^b`` (and exact zeros) dequantize to 0. As in
    RepQ-ViT, the ``2^b`` codes are all non-zero levels and 0 is an extra
    out-of-range value, so the output takes at most ``2^b + 1`` distinct values.

    ``delta`` is searched like RepQ-ViT's activation range: each candidate
    percentile of the sample is tried and the least error kept.

    Args:
        bits: Bit width (2..8, or 16).
        percentiles: Candidate percentiles for ``delta``.
        max_samples: Element budget of :meth:`observe`.
        seed: Seed of the calibration subsampling.
        percentile_mode: ``'nearest'`` (default) or ``'linear'`` (the official code's
            ``torch.quantile``), as for :class:`UniformQuantizer`.
    """

    def __init__(
        self,
        bits: int,
        percentiles: Sequence[float] = REPQ_PERCENTILES,
        max_samples: int = 1 << 20,
        seed: int = 0,
        percentile_mode: str = 'nearest',
    ) -> None:
        super().__init__(bits, max_samples, seed)
        self.percentiles = tuple(float(p) for p in percentiles)
        self.percentile_mode = check_percentile_mode(percentile_mode)
        self.register_buffer('delta', torch.tensor(1.0))

    def level_table(self, delta: Tensor) -> Tensor:
        """Value of each code ``0 .. 2^b - 1``, then 0 (out of range), in float64 and
        differentiable in ``delta`` (reconstruction learns ``delta`` through it)."""
        q = torch.arange(self.n_levels, dtype=torch.float64, device=delta.device)
        vals = delta.double() * torch.exp2(-torch.ceil(q / 2)) * (1 + (q % 2) * SQRT2_MINUS_1)
        return torch.cat([vals, vals.new_zeros(1)])

    def _table(self, delta: Tensor) -> Tensor:
        """Dequantized value of each code (the fake-quant lookup table, float32)."""
        return self.level_table(delta.detach()).float()

    def _quant(self, x: Tensor, delta: Tensor) -> Tensor:
        """``code = round(-2 log2(x / delta))``; codes >= 2^b (and x <= 0) dequantize to 0.

        Table lookup on an in-place chain: this is the fake-quant hot path.
        """
        if self.bits >= 16:  # "keep high precision": a 16-bit uniform grid on [0, delta]
            top = (1 << 16) - 1
            return (
                x.clamp(0.0, float(delta))
                .mul_(top / float(delta))
                .round_()
                .mul_(float(delta) / top)
            )
        return lookup(self._table(delta), self.codes(x, delta))

    def codes(self, x: Tensor, delta: Tensor) -> Tensor:
        """``round(-2 log2(x / delta))`` clamped to ``0 .. 2^b``; code ``2^b`` is the zero
        entry of the table (every code >= 2^b and x <= 0). Float, integral."""
        n = self.n_levels
        code = x.clamp_min(0).div_(delta).log2_().mul_(-2.0).round_()  # +inf where x == 0
        return code.nan_to_num_(posinf=n).clamp_(0, n)

    def _calibrate(self, x: Tensor, objective: Optional[Objective]) -> None:
        objective = objective or mse
        flat = x.reshape(-1)
        if flat.max() <= 0:
            raise ValueError(f'{self.name}: calibration sample has no positive value')
        n = flat.numel()
        ranks = [min(n - 1, int(round(p * (n - 1)))) for p in self.percentiles] + [n - 1]
        vals = order_statistics(flat[None], ranks)[0]
        if self.percentile_mode == 'linear':
            vals[:-1] = linear_quantiles(flat[None], list(self.percentiles))[0]
        cands = [d if d > 0 else vals[-1] for d in vals[:-1]]
        errs = [float(objective(self._quant(x, d), x)) for d in cands]
        best = cands[min(range(len(errs)), key=errs.__getitem__)]
        self.delta = best.clone().to(self.delta.device)

    def fake_quant(self, x: Tensor) -> Tensor:
        return self._quant(x, self.delta)

    def levels(self) -> Tensor:
        return self._table(self.delta).unique().sort().values
