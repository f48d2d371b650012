"""Pure-torch quantized layers (no mm* imports)."""

from .quant_conv import QuantConv2d
from .quant_linear import QuantLinear
from .quant_matmul import QuantMatMul
from .quant_module import (
    QUANT_MODES,
    QuantModuleMixin,
    WeightActQuantMixin,
    quant_layers,
    set_quant_mode,
)

__all__ = [
    'QuantConv2d',
    'QuantLinear',
    'QuantMatMul',
    'QUANT_MODES',
    'QuantModuleMixin',
    'WeightActQuantMixin',
    'quant_layers',
    'set_quant_mode',
]
