"""Uniform (affine) quantizer, per tensor or per channel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from .base_quantizer import (
    BaseQuantizer,
    Objective,
    check_percentile_mode,
    percentile_values,
)

#: Percentile candidates of the RepQ-ViT initialisation.
REPQ_PERCENTILES = (0.999, 0.9999, 0.99999)
CALIB_METHODS = ('minmax', 'percentile', 'mse')
ZERO_POINT_RULES = ('round', 'floor')


class UniformQuantizer(BaseQuantizer):
    """Uniform quantizer ``q = clamp(round(x / s) + z, qmin, qmax)``, ``x_hat = s * (q - z)``.

    Asymmetric: ``q`` in ``[0, 2^b - 1]`` and an integral zero point ``z``.
    Symmetric: ``q`` in ``[-2^(b-1), 2^(b-1) - 1]`` and ``z = 0``.

    Per-channel quantizers keep one ``(scale, zero_point)`` pair per index of
    ``ch_axis``; the parameter shape is taken from the calibration sample (and
    from a loaded state dict), so a per-channel quantizer can also be turned
    into a per-tensor one with :meth:`set_params` (LayerNorm reparameterization
    does this).

    Args:
        bits: Bit width (2..8, or 16).
        symmetric: Symmetric signed range with zero point 0.
        per_channel: One parameter pair per channel of ``ch_axis``.
        ch_axis: Channel axis for per-channel quantization (negative allowed).
        method: ``'minmax'``, ``'percentile'`` (RepQ-ViT: candidate percentiles,
            least L2 error) or ``'mse'`` (grid of clipping ratios, least L2 error).
        percentiles: Candidates of the ``'percentile'`` method.
        percentile_mode: How a candidate becomes a range: ``'nearest'`` (default: nearest-rank
            order statistics of the sample) or ``'linear'`` (the official RepQ-ViT code's
            ``torch.quantile``: linear interpolation between neighbouring order statistics,
            exact for any size). Pair ``'linear'`` with ``max_samples=None`` to search the
            whole tensor, as the official code does.
        mse_grid: Number of clipping ratios in ``[mse_min_ratio, 1]`` for ``'mse'``.
        mse_min_ratio: Smallest clipping ratio of the ``'mse'`` grid.
        max_samples: Element budget of :meth:`observe`.
        seed: Seed of the calibration subsampling.
        zero_point_rule: How the asymmetric zero point ``-lo / s`` becomes an
            integer: ``'round'`` (RepQ-ViT, the usual rule) or ``'floor'``, which
            never puts a level below the range's low end ``lo`` (values in
            ``[lo, -z * s)`` clamp up by less than one step; the top stays covered).
            With ``'round'`` the lowest level can land up to half a step below
            ``lo``: on post-GELU inputs that level sits below GELU's minimum and
            takes the dense mass of small negative values.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool = False,
        per_channel: bool = False,
        ch_axis: int = 0,
        method: str = 'minmax',
        percentiles: Sequence[float] = REPQ_PERCENTILES,
        mse_grid: int = 40,
        mse_min_ratio: float = 0.3,
        max_samples: int = 1 << 20,
        seed: int = 0,
        zero_point_rule: str = 'round',
        percentile_mode: str = 'nearest',
    ) -> None:
        super().__init__(bits, max_samples, seed)
        if method not in CALIB_METHODS:
            raise ValueError(f'unknown calibration method {method!r}; choose from {CALIB_METHODS}')
        if zero_point_rule not in ZERO_POINT_RULES:
            raise ValueError(
                f'unknown zero_point_rule {zero_point_rule!r}; choose from {ZERO_POINT_RULES}'
            )
        if not percentiles or any(not 0.5 < p <= 1.0 for p in percentiles):
            raise ValueError(f'percentiles={tuple(percentiles)} must be in (0.5, 1]')
        self.symmetric = bool(symmetric)
        self.per_channel = bool(per_channel)
        self.ch_axis = int(ch_axis)
        self.method = method
        self.percentiles = tuple(float(p) for p in percentiles)
        self.mse_grid = int(mse_grid)
        self.mse_min_ratio = float(mse_min_ratio)
        self.zero_point_rule = zero_point_rule
        self.percentile_mode = check_percentile_mode(percentile_mode)
        self.register_buffer('scale', torch.tensor(1.0))
        self.register_buffer('zero_point', torch.tensor(0.0))

    def extra_repr(self) -> str:
        kind = f'per_channel(axis={self.ch_axis})' if self.per_channel else 'per_tensor'
        sym = 'symmetric' if self.symmetric else 'asymmetric'
        zp = '' if self.symmetric or self.zero_point_rule == 'round' else ', zero_point=floor'
        if self.method == 'percentile' and self.percentile_mode != 'nearest':
            zp += f', percentile_mode={self.percentile_mode}'
        return f'{super().extra_repr()}, {sym}, {kind}, method={self.method}{zp}'

    # -- integer range -------------------------------------------------------
    @property
    def qmin(self) -> int:
        return -(self.n_levels // 2) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return self.n_levels // 2 - 1 if self.symmetric else self.n_levels - 1

    # -- parameters ------------------------------------------------------------
    def _params_from_range(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """Scale and integral zero point that cover ``[lo, hi]`` (elementwise)."""
        if self.symmetric:
            amax = torch.maximum(lo.abs(), hi.abs())
            scale = amax / self.qmax
            zero = torch.zeros_like(scale)
        else:
            width = hi - lo
            # A (near) constant channel: widen to include 0 so the step is sane.
            flat = width <= 1e-6 * (hi.abs() + lo.abs()) + 1e-12
            lo = torch.where(flat, torch.minimum(lo, torch.zeros_like(lo)), lo)
            hi = torch.where(flat, torch.maximum(hi, torch.zeros_like(hi)), hi)
            scale = (hi - lo) / (self.n_levels - 1)
            zero = None
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
        if zero is None:
            z = -lo / scale
            # floor: tolerate float error so an exact integer is not pushed a step down
            zero = torch.floor(z + 1e-4) if self.zero_point_rule == 'floor' else torch.round(z)
        return scale, zero

    def set_params(self, scale: Tensor, zero_point: Tensor, round_zero_point: bool = True) -> None:
        """Set the parameters directly (scalars: per tensor) and mark calibrated.

        Args:
            scale: Scale(s), positive.
            zero_point: Zero point(s); rounded to integers unless ``round_zero_point=False``.
            round_zero_point: ``False`` keeps a fractional zero point, as the official RepQ-ViT
                fold does (``z~ = mean(z)``): :meth:`fake_quant` then computes its
                ``clamp(round(x / s) + z, 0, 2^b - 1) - z`` unchanged, so 0 is no longer
                a level and the clamped ends fall off the grid.
        """
        scale = torch.as_tensor(scale, dtype=torch.float32, device=self.scale.device)
        zero_point = torch.as_tensor(zero_point, dtype=torch.float32, device=self.scale.device)
        if scale.shape != zero_point.shape:
            raise ValueError(
                f'scale shape {tuple(scale.shape)} != zero_point shape {tuple(zero_point.shape)}'
            )
        if not torch.isfinite(scale).all() or (scale <= 0).any():
            raise ValueError(f'{self.name}: scale must be finite and positive')
        if self.symmetric and (zero_point != 0).any():
            raise ValueError(f'{self.name}: a symmetric quantizer needs zero_point 0')
        self.scale = scale.clone()
        self.zero_point = (torch.round(zero_point) if round_zero_point else zero_point).clone()
        self.per_channel = scale.dim() > 0
        self.calibrated.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Parameter shapes are data dependent: adopt the shapes being loaded.
        for name in ('scale', 'zero_point'):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.scale.device))
        if prefix + 'scale' in state_dict:
            self.per_channel = state_dict[prefix + 'scale'].dim() > 0
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- sampling ----------------------------------------------------------------
    def _rows(self, x: Tensor) -> Tensor:
        if self.per_channel:
            self._sample_ndim = x.dim()
            return x.movedim(self.ch_axis, -1).reshape(-1, x.shape[self.ch_axis])
        return super()._rows(x)

    def _unrows(self, rows: Tensor) -> Tensor:
        if self.per_channel:
            # [N, C] rows back to a tensor whose axis ``ch_axis`` holds the channels.
            ndim = max(2, getattr(self, '_sample_ndim', 2))
            n, c = rows.shape
            return rows.reshape([n] + [1] * (ndim - 2) + [c]).movedim(-1, self.ch_axis % ndim)
        return rows.reshape(-1)

    # -- calibration -------------------------------------------------------------
    def _channels_first(self, x: Tensor) -> Tensor:
        """``[C, N]`` view for per-channel statistics, ``[1, N]`` per tensor."""
        if self.per_channel:
            return x.movedim(self.ch_axis % x.dim(), 0).reshape(x.shape[self.ch_axis], -1)
        return x.reshape(1, -1)

    def _fq_rows(self, x2: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
        """Fake-quantize a ``[C, N]`` matrix with ``[C]`` parameters."""
        s, z = scale[:, None], zero[:, None]
        return (torch.clamp(torch.round(x2 / s) + z, self.qmin, self.qmax) - z) * s

    def _candidate_ranges(self, x2: Tensor) -> list[tuple[Tensor, Tensor]]:
        lo, hi = x2.min(dim=1).values, x2.max(dim=1).values
        if self.method == 'minmax':
            return [(lo, hi)]
        if self.method == 'percentile':
            probs = [v for p in self.percentiles for v in (1.0 - p, p)]
            vals = percentile_values(x2, probs, self.percentile_mode)
            return [(vals[:, 2 * i], vals[:, 2 * i + 1]) for i in range(len(self.percentiles))]
        # 'mse': shrink the min/max range by each ratio of the grid
        ratios = torch.linspace(self.mse_min_ratio, 1.0, self.mse_grid).tolist()
        straddles = (lo <= 0) & (hi >= 0)
        mid = (lo + hi) / 2
        out = []
        for r in ratios:
            c_lo = torch.where(straddles, lo * r, mid - (mid - lo) * r)
            c_hi = torch.where(straddles, hi * r, mid + (hi - mid) * r)
            out.append((c_lo, c_hi))
        return out

    def _calibrate(self, x: Tensor, objective: Optional[Objective]) -> None:
        if objective is not None and self.per_channel:
            raise ValueError(f'{self.name}: a custom objective needs a per-tensor quantizer')
        x2 = self._channels_first(x)
        cands = [self._params_from_range(lo, hi) for lo, hi in self._candidate_ranges(x2)]
        if len(cands) == 1:
            scale, zero = cands[0]
        elif objective is None:
            # Least L2 error, chosen independently for every channel.
            errs = torch.stack([(self._fq_rows(x2, s, z) - x2).pow(2).sum(1) for s, z in cands])
            best = errs.argmin(dim=0)
            scale = torch.stack([c[0] for c in cands]).gather(0, best[None])[0]
            zero = torch.stack([c[1] for c in cands]).gather(0, best[None])[0]
        else:
            errs = [float(objective(self._fq_rows(x2, s, z).reshape(x.shape), x)) for s, z in cands]
            scale, zero = cands[min(range(len(errs)), key=errs.__getitem__)]
        if not self.per_channel:
            scale, zero = scale[0], zero[0]
        self.scale, self.zero_point = scale.to(self.scale.device), zero.to(self.scale.device)

    # -- forward -----------------------------------------------------------------
    def _broadcast(self, t: Tensor, x: Tensor) -> Tensor:
        if t.dim() == 0:
            return t
        shape = [1] * x.dim()
        shape[self.ch_axis] = -1
        return t.reshape(shape)

    def fake_quant(self, x: Tensor) -> Tensor:
        s = self._broadcast(self.scale, x)
        z = self._broadcast(self.zero_point, x)
        # one temporary, in place: the fake-quant hot path
        return torch.div(x, s).round_().add_(z).clamp_(self.qmin, self.qmax).sub_(z).mul_(s)

    def levels(self) -> Tensor:
        if self.scale.dim() != 0:
            raise ValueError('levels() is defined for per-tensor quantizers')
        q = torch.arange(self.qmin, self.qmax + 1, dtype=torch.float32, device=self.scale.device)
        return (q - self.zero_point) * self.scale
