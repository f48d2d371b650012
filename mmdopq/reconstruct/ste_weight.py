"""Straight-through weight training on the fixed grid of a calibrated weight quantizer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..quantizers import UniformQuantizer
from .adaround import GridWeight
from .lsq import round_ste


class SteWeight(GridWeight):
    """A weight trained through round-to-nearest with a straight-through gradient.

    The alternative to :class:`~mmdopq.reconstruct.adaround.AdaRoundWeight` that I&S-ViT-style
    pipelines use: the weight itself is learned, in units of its channel's step (``u = W / s``,
    so one learning rate suits every layer), and always seen quantized,
    ``W_q = s * (clamp(round(u) + z, qmin, qmax) - z)``; the gradient passes ``round``
    unchanged and stops where ``clamp`` clips. Unlike AdaRound a weight may move by more than
    one step, which lets a short schedule compensate larger activation errors. The grid
    (``s``, ``z``) is the calibrated one and is not learned, so the result is an ordinary
    integer grid per output channel that ``quantizer(state_weight(...))`` reproduces exactly.

    Args:
        weight: The (folded) float weight, ``[out, ...]``.
        quantizer: Its calibrated per-channel :class:`UniformQuantizer` (axis 0).
    """

    def __init__(self, weight: Tensor, quantizer: UniformQuantizer) -> None:
        super().__init__(weight, quantizer, 'STE weight training')
        self.u = nn.Parameter(weight.detach().float() / self.scale)

    def forward(self, hard: bool = False) -> Tensor:
        """The fake-quantized weight (the same in both modes: STE has no soft state)."""
        return self.on_grid(round_ste(self.u))

    def regularizer(self, beta: float) -> Tensor:
        """No rounding regulariser: the weight is always on the grid."""
        return self.u.new_zeros(())

    @torch.no_grad()
    def hard_state(self) -> Tensor:
        """The current integer levels before the zero point (what a snapshot keeps)."""
        return torch.round(self.u)

    @torch.no_grad()
    def state_weight(self, state: Tensor) -> Tensor:
        """The grid value of levels ``state``: the value written into the weight."""
        return self.on_grid(state)
