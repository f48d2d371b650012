"""Learned parameters of the post-Softmax quantizers (TanQ, log-sqrt2) during reconstruction.

Both quantizers map an element to an entry of a small level table: the entry's index comes
from the current parameters (no gradient through the rounding), the table is a
differentiable function of the parameters, so the parameters learn from every element that
lands on each level, and the element itself passes its gradient straight through.
"""

from __future__ import annotations

import abc
import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..quantizers import LogSqrt2Quantizer, TanQuantizer
from ..quantizers.tan_quantizer import ALPHA_EPS, alpha_bound
from .lsq import keep_mask

#: Smallest curvature fraction the learned TanQ starts from (logit of 0 is -inf).
MIN_FRACTION = 1e-4


class _TableLookup(torch.autograd.Function):
    """``lerp(x, table[codes], keep)``: straight-through for ``x``, summed grads for ``table``."""

    @staticmethod
    def forward(ctx, x, table, codes, keep):
        idx = codes.int().reshape(-1)
        out = table.index_select(0, idx).view(codes.shape).to(x.dtype)
        if keep is not None:
            out = torch.lerp(x, out, keep)
        ctx.save_for_backward(idx, keep)
        ctx.table_size = table.numel()
        ctx.table_dtype = table.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        idx, keep = ctx.saved_tensors
        g = grad if keep is None else grad * keep
        gt = torch.zeros(ctx.table_size, dtype=ctx.table_dtype, device=grad.device)
        gt.index_add_(0, idx, g.reshape(-1).to(ctx.table_dtype))
        return grad, gt, None, None


def _as_stored(p: Tensor) -> Tensor:
    """``p`` rounded to float32 (what the quantizer's buffer will hold), gradient kept."""
    return p + (p.float().to(p.dtype) - p).detach()


class _LearnedTable(nn.Module, metaclass=abc.ABCMeta):
    """Common part: QDrop, the straight-through lookup, write-back."""

    def __init__(
        self,
        quantizer: nn.Module,
        drop_prob: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.drop_prob = float(drop_prob)
        self.generator = generator
        self.enabled = quantizer.enabled

    @abc.abstractmethod
    def table_and_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The level table (differentiable in the parameters) and every element's index."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        xf = x.float()
        table, codes = self.table_and_codes(xf)
        keep = None
        if self.training and self.drop_prob > 0:
            keep = keep_mask(xf.shape, self.drop_prob, self.generator, xf.device)
        return _TableLookup.apply(xf, table, codes, keep).to(x.dtype)


class LearnedTanQuantizer(_LearnedTable):
    """A calibrated :class:`~mmdopq.quantizers.TanQuantizer` whose centre and curvature learn.

    Parametrised so that every value is admissible: ``centre = sigmoid(a)`` in ``(0, 1)`` and
    ``alpha = alpha_bound(centre) * sigmoid(b)`` below the bound; initialised at the calibrated
    values (a curvature below ``ALPHA_EPS``, the uniform table, starts at ``MIN_FRACTION`` of
    the bound). The table keeps 0 and 1 exact.

    Args:
        quantizer: The calibrated quantizer (its buffers change only on :meth:`values` write).
        drop_prob: QDrop probability during optimisation.
        generator: Random source of the drop masks.
    """

    def __init__(
        self,
        quantizer: TanQuantizer,
        drop_prob: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(quantizer, drop_prob, generator)
        centre = min(max(float(quantizer.centre), 1e-4), 1 - 1e-4)
        frac = float(quantizer.alpha) / alpha_bound(centre)
        frac = min(max(frac, MIN_FRACTION), 1 - 1e-6)
        dev = quantizer.alpha.device
        self.logit_centre = nn.Parameter(torch.tensor(_logit(centre), dtype=torch.float64))
        self.logit_alpha = nn.Parameter(torch.tensor(_logit(frac), dtype=torch.float64))
        self.to(dev)

    def params(self) -> tuple[Tensor, Tensor]:
        """``(alpha, centre)`` as float64 tensors with gradients, rounded as stored."""
        centre = torch.sigmoid(self.logit_centre)
        bound = math.pi / (2.0 * torch.maximum(centre, 1.0 - centre))
        alpha = bound * torch.sigmoid(self.logit_alpha)
        return _as_stored(alpha), _as_stored(centre)

    def table_and_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q = self.quantizer
        alpha, centre = self.params()
        a, c = float(alpha.detach()), float(centre.detach())
        codes = q.codes(x.detach(), a, c)
        top = q.n_levels - 1
        u = torch.arange(q.n_levels, dtype=torch.float64, device=x.device) / top
        if a < ALPHA_EPS or q.bits >= 16:
            return u.clamp(0.0, 1.0), codes
        lo, hi = torch.tan(-alpha * centre), torch.tan(alpha * (1.0 - centre))
        inner = centre + torch.atan(lo + u[1:-1] * (hi - lo)) / alpha
        table = torch.cat([u[:1] * 0, inner, u[:1] * 0 + 1]).clamp(0.0, 1.0)
        return table, codes

    @torch.no_grad()
    def values(self) -> dict[str, Tensor]:
        """The learned buffers, as the quantizer stores them."""
        alpha, centre = self.params()
        return dict(alpha=alpha.float().detach(), centre=centre.float().detach())


class LearnedLogSqrt2Quantizer(_LearnedTable):
    """A calibrated :class:`~mmdopq.quantizers.LogSqrt2Quantizer` whose scale ``delta`` learns
    (as ``log(delta)``)."""

    def __init__(
        self,
        quantizer: LogSqrt2Quantizer,
        drop_prob: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(quantizer, drop_prob, generator)
        delta = quantizer.delta.detach().double().clamp_min(1e-12)
        self.log_delta = nn.Parameter(delta.log())

    def delta(self) -> Tensor:
        return _as_stored(self.log_delta.exp())

    def table_and_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q = self.quantizer
        delta = self.delta()
        codes = q.codes(x.detach(), delta.float().detach())
        return q.level_table(delta), codes

    @torch.no_grad()
    def values(self) -> dict[str, Tensor]:
        return dict(delta=self.delta().float().detach().reshape(self.quantizer.delta.shape))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def learned_post_softmax(
    q: nn.Module, drop_prob: float, generator: Optional[torch.Generator]
) -> Optional[_LearnedTable]:
    """The learnable stand-in of a calibrated post-Softmax quantizer, or ``None``."""
    if not getattr(q, 'enabled', False) or not bool(getattr(q, 'calibrated', False)):
        return None
    if q.bits >= 16:
        return None
    if isinstance(q, TanQuantizer):
        return LearnedTanQuantizer(q, drop_prob, generator)
    if isinstance(q, LogSqrt2Quantizer):
        return LearnedLogSqrt2Quantizer(q, drop_prob, generator)
    return None
