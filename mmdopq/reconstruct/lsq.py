"""LSQ: a learned step for a calibrated uniform activation quantizer, with QDrop."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..quantizers import UniformQuantizer


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` with the identity as gradient (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def keep_mask(
    shape: torch.Size, drop_prob: float, generator: Optional[torch.Generator], device
) -> Tensor:
    """A float ``{0, 1}`` mask, each element 1 with probability ``1 - drop_prob`` (QDrop).

    On the CPU one 64-bit draw gives four 16-bit uniforms (``torch.rand`` draws one number
    per element and cost as much as the rest of the fake quantization); ``drop_prob`` is then
    resolved to 1/65536. Other devices use ``torch.rand``.
    """
    n = math.prod(shape)
    if torch.device(device).type != 'cpu':
        return (torch.rand(shape, generator=generator, device=device) >= drop_prob).float()
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    words.random_(-(2**63), 2**63 - 1, generator=generator)
    u16 = words.view(torch.int16)[:n].reshape(shape)
    # u16 is uniform on [-32768, 32767]: P(u16 >= t) = 1 - drop_prob
    threshold = round(drop_prob * 65536) - 32768
    # bool -> uint8 is a view; uint8 -> float converts several times faster than bool -> float
    return (u16 >= threshold).view(torch.uint8).float()


def grad_scale(x: Tensor, g: float) -> Tensor:
    """``x`` in the forward pass, its gradient multiplied by ``g`` (LSQ's step-gradient scale)."""
    return (x - x * g).detach() + x * g


class _LSQFakeQuant(torch.autograd.Function):
    """``(clamp(round(x / s) + z, qmin, qmax) - z) * s``, QDrop-mixed, with LSQ's gradients.

    One autograd node instead of a chain of elementwise ones (the backward recomputes
    ``x / s``): ``dx`` is 1 inside the range (and where the quantization is dropped), 0
    where it clamps; ``ds`` is ``round(x / s) - x / s`` inside, ``qmin - z`` / ``qmax - z``
    where it clamps, 0 where dropped, summed to the shape of ``s``.
    """

    @staticmethod
    def forward(ctx, x, s, z, qmin: float, qmax: float, keep: Optional[Tensor]):
        q = torch.round(x / s).add_(z)
        out = q.clamp_(qmin, qmax).sub_(z).mul_(s)
        if keep is not None:
            # exact at 0 and 1, and much cheaper than torch.where on the CPU
            out = torch.lerp(x, out, keep)
        ctx.save_for_backward(x, s, z, keep)
        ctx.bounds = (qmin, qmax)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, s, z, keep = ctx.saved_tensors
        qmin, qmax = ctx.bounds
        u = x / s
        q = torch.round(u).add_(z)
        inside = (q >= qmin) & (q <= qmax)
        # inside: round(u) - u; clamped: the bound's level, clamp(q) - z
        ds = q.clamp_(qmin, qmax).sub_(z).sub_(u.mul_(inside))
        gx = None
        if ctx.needs_input_grad[0]:
            pass_x = inside.float()
            if keep is not None:  # dropped elements pass straight through
                pass_x.mul_(keep).sub_(keep).add_(1.0)  # inside * keep + (1 - keep)
            gx = grad * pass_x
        if keep is not None:
            ds.mul_(keep)
        gs = ds.mul_(grad).sum_to_size(s.shape) if ctx.needs_input_grad[1] else None
        return gx, gs, None, None, None, None


class LSQActQuantizer(nn.Module):
    """Stands in for a :class:`UniformQuantizer` while its unit is reconstructed.

    The forward is the quantizer's ``(clamp(round(x / s) + z, qmin, qmax) - z) * s`` with the
    step ``s`` a learned parameter (initialised from the calibrated ``scale``, same shape:
    per tensor or per channel of the last axis) and the zero point kept. Rounding passes
    gradients straight through; the step's gradient is scaled by ``1 / sqrt(n * qmax)``
    (LSQ). In training mode each element keeps its quantization with probability
    ``1 - drop_prob`` and passes in float otherwise (QDrop).

    Args:
        quantizer: The calibrated quantizer it stands in for (not modified until
            :meth:`write_back`).
        drop_prob: QDrop probability.
        generator: Random source of the drop masks (on the device of the activations).
        learn: Learn the step (``False``: the calibrated step, only QDrop applies).
    """

    def __init__(
        self,
        quantizer: UniformQuantizer,
        drop_prob: float = 0.5,
        generator: Optional[torch.Generator] = None,
        learn: bool = True,
    ) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.step = nn.Parameter(quantizer.scale.detach().float().clone(), requires_grad=learn)
        self.register_buffer('zero_point', quantizer.zero_point.detach().float().clone())
        self.qmin, self.qmax = float(quantizer.qmin), float(quantizer.qmax)
        self.drop_prob = float(drop_prob)
        self.generator = generator
        self.enabled = quantizer.enabled

    def _broadcast(self, t: Tensor, x: Tensor) -> Tensor:
        if t.dim() == 0:
            return t
        shape = [1] * x.dim()
        shape[self.quantizer.ch_axis] = -1
        return t.reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        xf = x.float()
        n = xf.numel() // max(1, self.step.numel())
        step = grad_scale(self.step.abs().clamp_min(1e-8), 1.0 / math.sqrt(max(1, n) * self.qmax))
        s = self._broadcast(step, xf)
        z = self._broadcast(self.zero_point, xf)
        keep = None
        if self.training and self.drop_prob > 0:
            keep = keep_mask(xf.shape, self.drop_prob, self.generator, xf.device)
        return _LSQFakeQuant.apply(xf, s, z, self.qmin, self.qmax, keep).to(x.dtype)

    def learned_scale(self) -> Tensor:
        """The step as the quantizer's ``scale`` buffer holds it."""
        return self.step.detach().abs().clamp_min(1e-8).to(self.quantizer.scale)

    @torch.no_grad()
    def write_back(self, scale: Optional[Tensor] = None) -> None:
        """Copy ``scale`` (default: the learned step) into the quantizer's ``scale`` buffer."""
        self.quantizer.scale.copy_(self.learned_scale() if scale is None else scale)


def is_lsq_quantizer(q: object) -> bool:
    """Whether ``q`` is an enabled, calibrated uniform quantizer LSQ can learn."""
    return isinstance(q, UniformQuantizer) and q.enabled and bool(q.calibrated)
