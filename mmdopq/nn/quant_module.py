"""Shared behaviour of mmdopq's quantized layers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Callable

import torch
from torch import Tensor, nn

from ..quantizers import BaseQuantizer

#: ``float``: bit-exact float layer; ``calib``: float output while the quantizers
#: observe their inputs; ``quant``: fake-quantized forward; ``calib_seq``: at the first
#: call, calibrate from that call's inputs, switch to ``quant`` and return the quantized
#: output (RepQ-ViT's lazy initialisation: with every layer in this mode, one forward pass
#: calibrates each layer on what the quantized layers before it produce).
QUANT_MODES = ('float', 'calib', 'quant', 'calib_seq')


class QuantModuleMixin:
    """Mode switch and calibration entry of a quantized layer.

    Subclasses own their quantizers as child modules and implement
    :meth:`calibrate`, which turns what the quantizers observed in ``calib``
    mode into parameters.
    """

    quant_mode: str = 'float'

    def set_quant_mode(self, mode: str) -> None:
        if mode not in QUANT_MODES:
            raise ValueError(f'unknown quant mode {mode!r}; choose from {QUANT_MODES}')
        self.quant_mode = mode

    def quantizers(self) -> Iterator[tuple[str, BaseQuantizer]]:
        """``(name, quantizer)`` pairs owned by this layer."""
        for name, child in nn.Module.named_children(self):  # type: ignore[arg-type]
            if isinstance(child, BaseQuantizer):
                yield name, child

    @property
    def is_calibrated(self) -> bool:
        return all(bool(q.calibrated) for _, q in self.quantizers() if q.enabled)


class WeightActQuantMixin(QuantModuleMixin):
    """A layer ``op(input, weight)`` with ``weight_quantizer`` and ``input_quantizer``."""

    weight: nn.Parameter
    weight_quantizer: BaseQuantizer
    input_quantizer: BaseQuantizer

    def _quant_forward(self, x: Tensor, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        if self.quant_mode == 'calib_seq':
            self.input_quantizer.observe(x)
            self.calibrate()
            self.quant_mode = 'quant'
        if self.quant_mode == 'quant':
            return op(self.input_quantizer(x), self.quantized_weight())
        if self.quant_mode == 'calib':
            self.input_quantizer.observe(x)
        return op(x, self.weight)

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight, cached while weight and quantizer state are unchanged.

        The cache key holds the storage and version counter of the weight and of
        every quantizer buffer, so in-place updates (``load_state_dict``), new
        tensors (reparameterization) and recalibration all invalidate it. With
        autograd recording, nothing is cached.
        """
        wq = self.weight_quantizer
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return wq(self.weight)
        tensors = (self.weight, *wq.buffers())
        key = (wq.enabled, *((t.data_ptr(), t._version) for t in tensors))
        if getattr(self, '_wq_key', None) != key:
            self._wq_cache = wq(self.weight.detach())
            self._wq_key = key
        return self._wq_cache

    @torch.no_grad()
    def calibrate(self) -> None:
        """Calibrate the input quantizer on what it observed, and the weights."""
        if self.input_quantizer.enabled and not self.input_quantizer.collector.empty:
            self.input_quantizer.calibrate()
        self.weight_quantizer.calibrate(self.weight.detach())


def set_quant_mode(model: nn.Module, mode: str) -> nn.Module:
    """Set ``mode`` on every quantized layer of ``model``; returns ``model``."""
    for m in model.modules():
        if isinstance(m, QuantModuleMixin):
            m.set_quant_mode(mode)
    return model


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantModuleMixin]]:
    """``(qualified name, layer)`` of every quantized layer of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, QuantModuleMixin):
            yield name, m
