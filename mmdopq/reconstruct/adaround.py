"""AdaRound: learned rounding of a per-output-channel uniform weight grid."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..quantizers import UniformQuantizer

#: Stretch of the rectified sigmoid ``h(V) = clamp(sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0, 1)``.
GAMMA, ZETA = -0.1, 1.1


class GridWeight(nn.Module):
    """The fixed grid of a calibrated per-channel weight quantizer, for a learned weight.

    Holds the quantizer's per-output-channel ``scale`` and ``zero_point`` (reshaped to
    broadcast over the weight; not learned) and its integer range. Subclasses decide how
    the integers are learned (:class:`AdaRoundWeight`, ``SteWeight``).

    Args:
        weight: The (folded) float weight, ``[out, ...]``.
        quantizer: Its calibrated per-channel :class:`UniformQuantizer` (axis 0).
        method: What needs the grid, for the error message.
    """

    def __init__(self, weight: Tensor, quantizer: UniformQuantizer, method: str) -> None:
        super().__init__()
        if not is_adaround_quantizer(quantizer):
            raise TypeError(
                f'{quantizer.name}: {method} needs a calibrated per-channel UniformQuantizer'
            )
        shape = [-1] + [1] * (weight.dim() - 1)
        self.register_buffer('scale', quantizer.scale.detach().float().reshape(shape).clone())
        self.register_buffer(
            'zero_point', quantizer.zero_point.detach().float().reshape(shape).clone()
        )
        self.qmin, self.qmax = float(quantizer.qmin), float(quantizer.qmax)

    def on_grid(self, q: Tensor) -> Tensor:
        """``s * (clamp(q + z, qmin, qmax) - z)`` for integer levels ``q`` before the zero point."""
        q = torch.clamp(q + self.zero_point, self.qmin, self.qmax)
        return self.scale * (q - self.zero_point)


class AdaRoundWeight(GridWeight):
    """Soft rounding of a weight on the fixed grid of its calibrated quantizer.

    ``W_q = s * (clamp(floor(W / s) + h(V) + z, qmin, qmax) - z)`` with the quantizer's
    per-channel ``s`` and ``z`` (not learned) and ``h(V)`` the rectified sigmoid of a
    learned ``V``, initialised so that ``h`` equals the fractional part of ``W / s`` (the
    soft weight starts at the float weight, up to clamping). :meth:`hard_weight` rounds
    ``h`` to ``{0, 1}``: the result lies on the quantizer's integer grid, within one step
    of round-to-nearest, and ``quantizer(hard_weight)`` reproduces it exactly.

    Args:
        weight: The (folded) float weight, ``[out, ...]``.
        quantizer: Its calibrated per-channel :class:`UniformQuantizer` (axis 0).
    """

    def __init__(self, weight: Tensor, quantizer: UniformQuantizer) -> None:
        super().__init__(weight, quantizer, 'AdaRound')
        ratio = weight.detach().float() / self.scale
        self.register_buffer('w_floor', torch.floor(ratio))
        rest = (ratio - self.w_floor).clamp(0.0, 1.0)
        # h(V) = rest  <=>  sigmoid(V) = (rest - GAMMA) / (ZETA - GAMMA)
        p = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
        self.v = nn.Parameter(torch.log(p / (1 - p)))

    def h(self) -> Tensor:
        """The soft rounding offsets in ``[0, 1]``."""
        return (torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def hard_h(self) -> Tensor:
        """The hardened offsets in ``{0, 1}`` (``h >= 0.5``, i.e. ``V >= 0``)."""
        return (self.v.detach() >= 0).float()

    def _dequant(self, h: Tensor) -> Tensor:
        return self.on_grid(self.w_floor + h)

    def forward(self, hard: bool = False) -> Tensor:
        """The soft (default) or hardened fake-quantized weight."""
        return self._dequant(self.hard_h() if hard else self.h())

    def regularizer(self, beta: float) -> Tensor:
        """AdaRound's rounding regulariser ``mean(1 - |2h - 1|^beta)`` (0 when hardened)."""
        return (1 - (2 * self.h() - 1).abs().pow(beta)).mean()

    @torch.no_grad()
    def hard_weight(self, h: Tensor) -> Tensor:
        """``s * (q - z)`` for hard offsets ``h``: the value written into the float weight."""
        return self._dequant(h)

    @torch.no_grad()
    def hard_state(self) -> Tensor:
        """The hardened offsets as booleans (what a snapshot keeps: 1 bit per weight)."""
        return self.v >= 0

    @torch.no_grad()
    def state_weight(self, state: Tensor) -> Tensor:
        """The weight for a snapshot of :meth:`hard_state`."""
        return self._dequant(state.float())


def is_adaround_quantizer(q: object) -> bool:
    """Whether ``q`` is an enabled, calibrated per-output-channel uniform weight quantizer."""
    return (
        isinstance(q, UniformQuantizer)
        and q.enabled
        and bool(q.calibrated)
        and q.scale.dim() == 1
        and q.ch_axis == 0
    )
