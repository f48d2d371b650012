"""Post-LayerNorm scale reparameterization (RepQ-ViT) with MOSF (DopQ-ViT).

Given per-channel activation quantization parameters ``(s, z)`` of a
LayerNorm's output, fold them into one per-tensor pair ``(s~, z~)``: with
``r1 = s / s~`` and shift ``t = s * (z - z~)``

* LayerNorm affine: ``gamma' = gamma / r1``, ``beta' = (beta + t) / r1``;
* every consumer Linear: ``W'[:, c] = W[:, c] * r1[c]``, ``b' = b - W @ t``.

The block output is unchanged in float, and because ``z~`` is an integer the
per-tensor quantization of the new activation equals the per-channel
quantization of the old one (``y' / s~ + z~ = y / s + z``): only the weight
quantization of ``W'`` differs from the per-channel model.

Scale invariance (why ``'mean'`` and ``'median'`` give the same result): the
choice of ``s~`` alone scales every column of ``W'`` by the same ``1 / s~``, and
per-output-channel weight quantization is scale invariant. What outlier
channels harm is the weights: their columns are amplified by ``s_c``.

Zero point: every rule uses ``z~ = round(mean(z))`` (RepQ-ViT's mean, rounded so
the fold stays exact). ``zero_point_rule='fractional'`` keeps ``z~ = mean(z)`` as the
official RepQ-ViT code does: each channel's grid is then shifted by the fractional part
of ``z_c - z~`` (0 is no longer a level), an approximation within half a step.
``z~`` is *not* irrelevant: with quantized weights the output error has a term
``sum_c delta_rc (code_c - z~)`` (``delta`` = weight quantization error), so two
rules that also changed ``z~`` would differ by that term. Keeping ``z~`` common makes
the rules differ only where they claim to: ``s~`` (no effect for exact folds) and,
for MOSF, the capped channels.

MOSF (``rule='mad'``) is mmdopq's **reconstruction** of DopQ-ViT's MAD-guided
optimal scaling factor as an outlier-aware fold: with ``m = median(s)`` and
``MAD = median(|s - m|)``, channels with ``s_c <= u_k = m + k * MAD`` fold
exactly; outlier channels fold with the capped ratio ``r1_c = u_k / s~`` (their
weight columns grow less; their activations get step ``u_k`` and a clipped
range, placed where it clips the channel's calibration data least). ``k`` is
chosen from a grid that includes "no cap" (the exact fold) by the least output
error of the fake-quantized consumers on the calibration inputs, so MOSF is
never worse than the exact fold on that data. Everything is folded offline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..quantizers import BaseQuantizer, UniformQuantizer

RULES = ('mean', 'median', 'mad')
#: How the folded zero point ``mean(z)`` is kept: rounded (exact fold) or fractional (official).
FOLD_ZERO_POINTS = ('round', 'fractional')
#: MAD multipliers of the MOSF grid; ``inf`` is the exact (uncapped) fold.
DEFAULT_K_GRID = (2.0, 4.0, 8.0, 16.0, math.inf)


@dataclass
class FoldResult:
    """Outcome of a fold; unpacks as ``(scale, zero_point)``.

    Attributes:
        scale: Per-tensor scale ``s~`` (0-dim tensor).
        zero_point: Per-tensor zero point ``z~`` (0-dim tensor; integral unless the fold
            kept it fractional).
        ratio: Per-channel ``r1`` applied to the norm and the consumers.
        shift: Per-channel ``t``; the new activation is ``(y + t) / r1``.
        k: Chosen MAD multiplier (``inf``: exact fold; ``None`` for mean/median).
        n_capped: Number of channels whose ratio was capped.
        errors: Output error of each ``k`` candidate (``'mad'`` only).
    """

    scale: Tensor
    zero_point: Tensor
    ratio: Tensor
    shift: Tensor
    k: Optional[float] = None
    n_capped: int = 0
    errors: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.scale, self.zero_point))

    @property
    def zero_image(self) -> Tensor:
        """Where a float 0 of the old activation lands in the new one (per channel).

        Code that pads the normalized tokens (Swin windows) must pad with this.
        """
        return self.shift / self.ratio


def _fold_params(s: Tensor, z: Tensor, s_t: Tensor, z_t: Tensor) -> tuple[Tensor, Tensor]:
    return s / s_t, s * (z - z_t)


def _fake_quant(y: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:
    top = (1 << bits) - 1
    return (torch.clamp(torch.round(y / scale) + zero, 0, top) - zero) * scale


def _default_weight_quantizer(bits: int) -> BaseQuantizer:
    return UniformQuantizer(bits, per_channel=True, ch_axis=0, method='minmax')


def _check(norm: nn.Module, linears: Sequence[nn.Linear], scale: Tensor, zero_point: Tensor) -> int:
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
        raise TypeError(f'expected an affine nn.LayerNorm, got {type(norm).__name__}')
    c = norm.normalized_shape[-1]
    if len(norm.normalized_shape) != 1:
        raise ValueError(f'LayerNorm over {tuple(norm.normalized_shape)}: only 1-D is supported')
    if not linears:
        raise ValueError('reparameterize_layernorm needs at least one consumer Linear')
    for i, lin in enumerate(linears):
        if not isinstance(lin, nn.Linear) or lin.in_features != c:
            raise ValueError(
                f'consumer {i} ({type(lin).__name__}) does not read the {c} channels of the norm'
            )
    for name, t in (('scale', scale), ('zero_point', zero_point)):
        if t.shape != (c,):
            raise ValueError(f'{name} has shape {tuple(t.shape)}, expected ({c},)')
        if not torch.isfinite(t).all():
            raise ValueError(f'{name} holds NaN or Inf')
    if (scale <= 0).any():
        raise ValueError('scale must be positive')
    return c


@torch.no_grad()
def reparameterize_layernorm(
    norm: nn.LayerNorm,
    linears: Sequence[nn.Linear],
    scale: Tensor,
    zero_point: Tensor,
    rule: str = 'mad',
    calib_input: Optional[Tensor] = None,
    wbits: int = 4,
    abits: int = 4,
    k_grid: Sequence[float] = DEFAULT_K_GRID,
    weight_quantizer: Optional[Callable[[int], BaseQuantizer]] = None,
    clip_quantiles: tuple[float, float] = (0.001, 0.999),
    zero_point_rule: str = 'round',
) -> FoldResult:
    """Fold per-channel ``(scale, zero_point)`` of ``norm``'s output into one pair.

    Rewrites ``norm``'s affine and every Linear of ``linears`` in place (see the
    module docstring for the equations and for MOSF).

    Args:
        norm: The LayerNorm whose output feeds ``linears``.
        linears: Every consumer of the norm's output.
        scale: Per-channel activation scale of the norm's output, shape ``[C]``.
        zero_point: Per-channel integral zero point, shape ``[C]``.
        rule: ``'mean'`` (RepQ-ViT), ``'median'`` or ``'mad'`` (MOSF).
        calib_input: Inputs of the norm, shape ``[N, C]`` (``'mad'`` only).
        wbits: Weight bits used to score the MOSF candidates.
        abits: Activation bits of the folded activation.
        k_grid: MAD multipliers tried by ``'mad'`` (``inf`` = no cap).
        weight_quantizer: ``bits -> quantizer`` used to score candidates
            (default: per-output-channel min/max uniform).
        clip_quantiles: Quantiles of a capped channel's data between which its
            (narrower) code window is placed, at the position that clips least.
        zero_point_rule: ``'round'`` (default, exact fold: ``z~ = round(mean(z))``) or
            ``'fractional'`` (the official RepQ-ViT code: ``z~ = mean(z)``).

    Returns:
        A :class:`FoldResult` that unpacks as ``(scale, zero_point)``.
    """
    if rule not in RULES:
        raise ValueError(f'unknown reparameterization rule {rule!r}; choose from {RULES}')
    if zero_point_rule not in FOLD_ZERO_POINTS:
        raise ValueError(
            f'unknown zero_point_rule {zero_point_rule!r}; choose from {FOLD_ZERO_POINTS}'
        )
    _check(norm, linears, scale, zero_point)
    dev = norm.weight.device
    s = scale.detach().float().to(dev)
    z = torch.round(zero_point.detach().float().to(dev))
    if rule in ('mean', 'median'):
        s_t = s.mean() if rule == 'mean' else s.median()
        z_t = torch.round(z.mean()) if zero_point_rule == 'round' else z.mean()
        ratio, shift = _fold_params(s, z, s_t, z_t)
        result = FoldResult(s_t, z_t, ratio, shift)
    else:
        if calib_input is None:
            raise ValueError(
                "rule='mad' (MOSF) needs calib_input: inputs of the norm, shape [N, C]"
            )
        if calib_input.dim() != 2 or calib_input.shape[1] != s.numel():
            raise ValueError(
                f'calib_input has shape {tuple(calib_input.shape)}, expected [N, {s.numel()}]'
            )
        if not torch.isfinite(calib_input).all():
            raise ValueError('calib_input holds NaN or Inf')
        result = _choose_mad_cap(
            norm,
            linears,
            s,
            z,
            calib_input.float().to(dev),
            wbits,
            abits,
            k_grid,
            weight_quantizer or _default_weight_quantizer,
            clip_quantiles,
            zero_point_rule=zero_point_rule,
        )
    _apply(norm, linears, result.ratio, result.shift)
    return result


def _apply(norm: nn.LayerNorm, linears: Sequence[nn.Linear], ratio: Tensor, shift: Tensor) -> None:
    for lin in linears:
        w = lin.weight.data
        if lin.bias is None:
            lin.bias = nn.Parameter(torch.zeros(lin.out_features, device=w.device, dtype=w.dtype))
        lin.bias.data -= (w.float() @ shift).to(w.dtype)
        lin.weight.data = (w.float() * ratio[None, :]).to(w.dtype)
    norm.bias.data = ((norm.bias.data.float() + shift) / ratio).to(norm.bias.dtype)
    norm.weight.data = (norm.weight.data.float() / ratio).to(norm.weight.dtype)


def _choose_mad_cap(
    norm,
    linears,
    s,
    z,
    x,
    wbits,
    abits,
    k_grid,
    make_wq,
    clip_quantiles,
    n_positions=5,
    zero_point_rule='round',
) -> FoldResult:
    y = norm(x).float()
    refs = [
        y @ lin.weight.float().T + (lin.bias.float() if lin.bias is not None else 0)
        for lin in linears
    ]
    m = s.median()
    mad = (s - m).abs().median()
    s_t, z_t = m, (torch.round(z.mean()) if zero_point_rule == 'round' else z.mean())
    top = (1 << abits) - 1

    def placement(cap: Tensor, capped: Tensor) -> Tensor:
        """Shift of each capped channel: the code window of width ``top * cap``
        placed (among evenly spaced positions) where it clips its data least."""
        shift = torch.zeros_like(s)
        for c in torch.nonzero(capped).flatten().tolist():
            yc = y[:, c]
            lo, hi = torch.quantile(yc, clip_quantiles[0]), torch.quantile(yc, clip_quantiles[1])
            width = top * cap
            starts = torch.linspace(float(lo), float(max(lo, hi - width)), n_positions)
            starts = torch.cat([starts, (yc.median() - width / 2).reshape(1)])
            # window [start, start + width] <-> codes [0, top]: t = -z~ * cap - start
            cands = -z_t * cap - starts.to(y)
            errs = [
                (_fake_quant((yc + t) / (cap / s_t), s_t, z_t, abits) * (cap / s_t) - t - yc)
                .pow(2)
                .mean()
                for t in cands
            ]
            shift[c] = cands[int(torch.stack(errs).argmin())]
        return shift

    def candidate(k: float) -> tuple[Tensor, Tensor, int]:
        ratio, shift = _fold_params(s, z, s_t, z_t)
        if math.isinf(k):
            return ratio, shift, 0
        cap = m + k * mad
        capped = s > cap
        ratio = torch.where(capped, cap / s_t, ratio)
        shift = torch.where(capped, placement(cap, capped), shift)
        return ratio, shift, int(capped.sum())

    def error(ratio: Tensor, shift: Tensor) -> float:
        y_q = _fake_quant((y + shift) / ratio, s_t, z_t, abits)
        err = 0.0
        for lin, ref in zip(linears, refs):
            w = lin.weight.float() * ratio[None, :]
            wq = make_wq(wbits).to(w.device)
            wq.calibrate(w)
            b = (lin.bias.float() if lin.bias is not None else 0) - lin.weight.float() @ shift
            err += float((y_q @ wq(w).T + b - ref).pow(2).mean())
        return err

    best, errors, seen = None, {}, {}
    for k in k_grid:
        k = float(k)
        capped = torch.zeros_like(s, dtype=torch.bool) if math.isinf(k) else s > m + k * mad
        if not capped.any() and not math.isinf(k):
            continue  # identical to the exact fold
        key = bytes(capped.cpu().numpy().tobytes())
        if key in seen:  # same capped channels: same candidate, same error
            errors[k] = errors[seen[key]]
            continue
        seen[key] = k
        ratio, shift, n_capped = candidate(k)
        errors[k] = error(ratio, shift)
        if best is None or errors[k] < best[0]:
            best = (errors[k], k, ratio, shift, n_capped)
    if best is None:
        raise ValueError('k_grid is empty')
    _, k, ratio, shift, n_capped = best
    return FoldResult(s_t, z_t, ratio, shift, k=k, n_capped=n_capped, errors=errors)
