"""Quantized ``nn.Conv2d``."""

from __future__ import annotations

from torch import Tensor, nn

from ..quantizers import BaseQuantizer
from .quant_module import WeightActQuantMixin


class QuantConv2d(WeightActQuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with a per-output-channel weight quantizer and an input quantizer.

    The float module's ``weight`` / ``bias`` parameters are shared, so float
    checkpoints load unchanged. The input is quantized before the convolution's
    zero padding, which therefore stays an exact zero.

    Args:
        conv: The float layer to wrap.
        weight_quantizer: Quantizer of ``weight`` (per channel on axis 0).
        input_quantizer: Quantizer of the input activation.
    """

    def __init__(
        self, conv: nn.Conv2d, weight_quantizer: BaseQuantizer, input_quantizer: BaseQuantizer
    ) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device='meta',
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, weight_quantizer: BaseQuantizer, input_quantizer: BaseQuantizer
    ) -> QuantConv2d:
        return cls(conv, weight_quantizer, input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        return self._quant_forward(x, lambda x_, w: self._conv_forward(x_, w, self.bias))
