"""Quantized ``nn.Linear``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..quantizers import BaseQuantizer
from .quant_module import WeightActQuantMixin


class QuantLinear(WeightActQuantMixin, nn.Linear):
    """``nn.Linear`` with a per-output-channel weight quantizer and an input quantizer.

    It is a subclass of ``nn.Linear`` whose ``weight`` / ``bias`` are the float
    module's own parameters, so float checkpoints load unchanged and code that
    checks ``isinstance(m, nn.Linear)`` keeps working.

    Args:
        linear: The float layer to wrap (its parameters are shared, not copied).
        weight_quantizer: Quantizer of ``weight`` (per channel on axis 0).
        input_quantizer: Quantizer of the input activation.
    """

    def __init__(
        self, linear: nn.Linear, weight_quantizer: BaseQuantizer, input_quantizer: BaseQuantizer
    ) -> None:
        # Build on the meta device: the parameters are replaced by the float ones.
        super().__init__(
            linear.in_features, linear.out_features, bias=linear.bias is not None, device='meta'
        )
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    @classmethod
    def from_float(
        cls, linear: nn.Linear, weight_quantizer: BaseQuantizer, input_quantizer: BaseQuantizer
    ) -> QuantLinear:
        return cls(linear, weight_quantizer, input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        return self._quant_forward(x, lambda x_, w: F.linear(x_, w, self.bias))
