"""Bounded, uniform, streaming subsample of calibration rows."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor


class SampleCollector:
    """Keeps a uniform random subsample of the rows it is fed, within a budget.

    Every row gets an independent uniform random key; the collector keeps the
    rows with the smallest keys ("bottom-k" sampling). That is an exact uniform
    sample without replacement of everything seen so far, computed in one pass
    with bounded memory, whatever the number and size of the batches.

    Args:
        max_elements: Budget in elements; the number of rows kept is
            ``max(min_rows, max_elements // row_size)``.
        seed: Seed of the key generator (same seed and data: same sample).
        min_rows: Lower bound on rows kept, for very wide rows.
    """

    def __init__(self, max_elements: int = 1 << 20, seed: int = 0, min_rows: int = 256) -> None:
        if max_elements <= 0:
            raise ValueError(f'max_elements={max_elements} must be positive')
        self.max_elements = int(max_elements)
        self.min_rows = int(min_rows)
        self.seed = int(seed)
        self.clear()

    def clear(self) -> None:
        """Drop everything collected and restart the key stream."""
        self._rows: Optional[Tensor] = None
        self._keys: Optional[Tensor] = None
        self._gen = torch.Generator().manual_seed(self.seed)
        self.seen = 0

    @property
    def empty(self) -> bool:
        return self._rows is None

    def capacity(self, row_size: int) -> int:
        return max(self.min_rows, self.max_elements // max(1, row_size))

    def add(self, rows: Tensor) -> None:
        """Feed a ``[n, ...]`` batch of rows (kept on CPU in float32)."""
        self.add_lazy(rows.shape[0], tuple(rows.shape[1:]), lambda idx: rows[idx])

    def add_lazy(self, n: int, row_shape: tuple, fetch: Callable[[Tensor], Tensor]) -> None:
        """Feed ``n`` rows of shape ``row_shape`` without materialising them all.

        Only rows that can enter the sample are fetched: a row outside the
        bottom-``cap`` keys of its own batch cannot be in the bottom-``cap`` of
        the union, so ``fetch(idx)`` is called with at most ``cap`` indices.
        This keeps calibration from copying whole activations.

        Args:
            n: Number of rows in the batch.
            row_shape: Shape of one row.
            fetch: ``fetch(idx) -> rows[idx]`` for a sorted index tensor.
        """
        if n == 0:
            return
        row_shape = tuple(row_shape)
        if self._rows is not None and row_shape != tuple(self._rows.shape[1:]):
            raise ValueError(
                f'row shape changed from {tuple(self._rows.shape[1:])} to {row_shape} '
                'during calibration'
            )
        self.seen += n
        keys = torch.rand(n, generator=self._gen)
        cap = self.capacity(math.prod(row_shape))
        if n > cap:
            idx = torch.topk(keys, cap, largest=False, sorted=False).indices.sort().values
            keys = keys[idx]
        else:
            idx = torch.arange(n)
        rows = fetch(idx).detach().float().cpu()
        if self._rows is not None:
            rows = torch.cat([self._rows, rows])
            keys = torch.cat([self._keys, keys])
        if rows.shape[0] > cap:
            idx = torch.topk(keys, cap, largest=False, sorted=False).indices
            idx = idx.sort().values  # keep arrival order: reproducible downstream
            rows, keys = rows[idx], keys[idx]
        self._rows, self._keys = rows.contiguous(), keys

    def take(self) -> Tensor:
        """Return the sample and clear the collector."""
        if self._rows is None:
            raise ValueError('nothing was collected')
        rows = self._rows
        self.clear()
        return rows
