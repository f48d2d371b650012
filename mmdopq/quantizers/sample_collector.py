"""Bounded, uniform, streaming subsample of calibration rows."""

from __future__ import annotations

from typing import Optional

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
        rows = rows.detach().float().cpu()
        n = rows.shape[0]
        if n == 0:
            return
        if self._rows is not None and rows.shape[1:] != self._rows.shape[1:]:
            raise ValueError(
                f'row shape changed from {tuple(self._rows.shape[1:])} to '
                f'{tuple(rows.shape[1:])} during calibration'
            )
        self.seen += n
        keys = torch.rand(n, generator=self._gen)
        cap = self.capacity(rows[0].numel())
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

    def peek(self) -> Tensor:
        """Return the sample without clearing."""
        if self._rows is None:
            raise ValueError('nothing was collected')
        return self._rows
