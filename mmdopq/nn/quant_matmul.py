"""Quantized matrix product of two activations (attention ``q @ k^T``, ``attn @ v``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..quantizers import BaseQuantizer, SampleCollector
from .quant_module import QuantModuleMixin

#: Objectives for calibrating the quantizer of operand ``a``.
A_OBJECTIVES = ('tensor', 'output')


class QuantMatMul(QuantModuleMixin, nn.Module):
    """``a @ b`` with one quantizer per operand.

    With ``a_objective='output'`` the quantizer of ``a`` (e.g. the post-Softmax
    attention map) is calibrated by the error of the product, ``||(a_hat - a) @ b||^2``
    on paired samples of ``a`` and ``b``, instead of the error of ``a`` itself.
    Pairs are sampled per leading index (window x head), within ``pair_budget``
    elements.

    Args:
        quantizer_a: Quantizer of the left operand.
        quantizer_b: Quantizer of the right operand.
        a_objective: ``'tensor'`` or ``'output'``.
        pair_budget: Element budget of the paired sample (``'output'`` only).
        seed: Seed of the pair subsampling.
    """

    def __init__(
        self,
        quantizer_a: BaseQuantizer,
        quantizer_b: BaseQuantizer,
        a_objective: str = 'tensor',
        pair_budget: int = 1 << 20,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if a_objective not in A_OBJECTIVES:
            raise ValueError(f'a_objective={a_objective!r}; choose from {A_OBJECTIVES}')
        self.quantizer_a = quantizer_a
        self.quantizer_b = quantizer_b
        self.a_objective = a_objective
        self.pairs = SampleCollector(pair_budget, seed, min_rows=4)
        self._pair_shapes: Optional[tuple] = None

    def extra_repr(self) -> str:
        return f'a_objective={self.a_objective}'

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if self.quant_mode in ('calib', 'calib_seq'):
            self.quantizer_a.observe(a)
            self.quantizer_b.observe(b)
            if self.a_objective == 'output' and self.quantizer_a.enabled:
                self._observe_pair(a, b)
            if self.quant_mode == 'calib_seq':  # calibrate now, quantize from here on
                self.calibrate()
                self.quant_mode = 'quant'
        if self.quant_mode == 'quant':
            return self.quantizer_a(a) @ self.quantizer_b(b)
        return a @ b

    def _observe_pair(self, a: Tensor, b: Tensor) -> None:
        a2 = a.detach().reshape(-1, a.shape[-2], a.shape[-1])
        b2 = b.detach().expand(*a.shape[:-2], *b.shape[-2:]).reshape(-1, b.shape[-2], b.shape[-1])
        self._pair_shapes = (a2.shape[1:], b2.shape[1:])

        def fetch(idx: Tensor) -> Tensor:  # only the sampled (window, head) pairs
            return torch.cat([a2[idx].flatten(1), b2[idx].flatten(1)], dim=1)

        width = a2[0].numel() + b2[0].numel()
        self.pairs.add_lazy(a2.shape[0], (width,), fetch)

    @torch.no_grad()
    def calibrate(self) -> None:
        """Calibrate ``b`` on its sample, then ``a`` (by the product error if asked)."""
        for q in (self.quantizer_a, self.quantizer_b):
            if q.enabled and q.collector.empty:
                raise ValueError(f'{q.name}: nothing observed; run calibration data first')
        if self.quantizer_b.enabled:
            self.quantizer_b.calibrate()
        if not self.quantizer_a.enabled:
            return
        if self.a_objective == 'output' and not self.pairs.empty:
            rows = self.pairs.take()
            # Random order: the quantizer's coarse search scores a prefix of the pairs.
            gen = torch.Generator().manual_seed(self.pairs.seed)
            rows = rows[torch.randperm(rows.shape[0], generator=gen)]
            sa, sb = self._pair_shapes
            n_a = sa.numel()
            a = rows[:, :n_a].reshape(-1, *sa)
            b = rows[:, n_a:].reshape(-1, *sb)
            self.quantizer_a.collector.clear()

            def product_error(a_hat: Tensor, a_ref: Tensor) -> Tensor:
                # a_hat may be a prefix of the pairs (coarse search)
                return ((a_hat - a_ref) @ b[: a_hat.shape[0]]).pow(2).mean()

            self.quantizer_a.calibrate(a, objective=product_error)
        else:
            self.quantizer_a.calibrate()
