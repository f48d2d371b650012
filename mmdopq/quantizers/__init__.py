"""Pure-torch quantizers (no mm* imports)."""

from .base_quantizer import VALID_BITS, BaseQuantizer, check_bits, mse, quantizers_off
from .log_sqrt2_quantizer import LogSqrt2Quantizer
from .sample_collector import SampleCollector
from .tan_quantizer import TanQuantizer
from .uniform_quantizer import REPQ_PERCENTILES, ZERO_POINT_RULES, UniformQuantizer

__all__ = [
    'VALID_BITS',
    'BaseQuantizer',
    'check_bits',
    'mse',
    'quantizers_off',
    'LogSqrt2Quantizer',
    'SampleCollector',
    'TanQuantizer',
    'REPQ_PERCENTILES',
    'UniformQuantizer',
    'ZERO_POINT_RULES',
]
