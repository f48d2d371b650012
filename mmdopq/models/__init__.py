"""Quantized models registered in :data:`mmdopq.registry.MODELS`.

Imported lazily by MMEngine (``locations=['mmdopq.models']``) the first time a ``mmdopq.X`` model
type is looked up, and by :func:`mmdopq.utils.register_all_modules`.
"""

from .quantized_model import QuantizedModel

__all__ = ['QuantizedModel']
