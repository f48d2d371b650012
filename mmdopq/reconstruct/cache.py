"""The cached inputs and targets of one reconstruction unit."""

from __future__ import annotations

import math
import os
import os.path as osp
import shutil
import tempfile
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

_DTYPES = {'float32': torch.float32, 'float16': torch.float16}


def _batched(leaf: Any, batch: int) -> bool:
    return isinstance(leaf, Tensor) and leaf.dim() >= 1 and leaf.shape[0] == batch


def _batch_size(leaves: list) -> int:
    for leaf in leaves:
        if isinstance(leaf, Tensor) and leaf.dim() >= 1:
            return int(leaf.shape[0])
    raise ValueError('a reconstruction unit was called without a batched tensor argument')


def _signature(spec, leaves: list, batch: int) -> tuple:
    """What must agree for samples to share a minibatch: structure, shapes, constants."""
    sig = [repr(spec)]
    for leaf in leaves:
        if _batched(leaf, batch):
            sig.append(('t', tuple(leaf.shape[1:]), str(leaf.dtype)))
        elif isinstance(leaf, Tensor):
            sig.append(('c', tuple(leaf.shape), leaf.data_ptr()))
        else:
            sig.append(('v', repr(leaf)))
    return tuple(sig)


def take_rows(tree: Any, k: int, gen: torch.Generator) -> Optional[tuple[Any, Optional[Tensor]]]:
    """At most ``k`` random rows of a call's arguments (every tensor batched along dim 0).

    Returns ``(taken, idx)``: the tree with the same rows ``idx`` of every batched tensor
    (in their order), or the tree itself and ``idx=None`` when it has ``k`` rows or fewer
    (or ``k == 0``); ``None`` when it has none (e.g. an RoI head called on an image
    without detections).
    """
    leaves, spec = tree_flatten(tree)
    n = _batch_size(leaves)
    if n == 0:
        return None
    if not k or n <= k:
        return tree, None
    idx = torch.randperm(n, generator=gen)[:k].sort().values
    taken = tree_unflatten(
        [x.index_select(0, idx.to(x.device)) if _batched(x, n) else x for x in leaves], spec
    )
    return taken, idx


class _Group:
    """Samples of one signature: batched leaves concatenated along dim 0.

    With ``spill`` (a path prefix) every batched leaf is appended to its own file instead
    of being kept, and :meth:`finish` maps the files back (pages are read on demand), so
    the group costs disk, not memory; minibatches go back to the leaf's device.
    """

    def __init__(self, spec, leaves: list, batch: int, spill: Optional[str] = None) -> None:
        self.spec = spec
        self.mask = [_batched(leaf, batch) for leaf in leaves]
        self.const = [None if m else leaf for m, leaf in zip(self.mask, leaves)]
        batched = [leaf for leaf, m in zip(leaves, self.mask) if m]
        self.devices = [leaf.device for leaf in batched]
        self.files = [f'{spill}_{j}.bin' for j in range(len(batched))] if spill else []
        self.parts: list[list[Tensor]] = [[] for _ in batched]
        self.size = 0
        self.data: list[Tensor] = []
        self.add(leaves, batch)

    def add(self, leaves: list, batch: int) -> None:
        batched = [x for x, m in zip(leaves, self.mask) if m]
        for j, (part, leaf) in enumerate(zip(self.parts, batched)):
            if self.files:
                with open(self.files[j], 'ab') as f:
                    f.write(leaf.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
                if not part:
                    part.append(leaf[:0].cpu())  # dtype and per-sample shape
            else:
                part.append(leaf)
        self.size += batch

    def finish(self) -> None:
        if not self.files:
            self.data = [torch.cat(p) if len(p) > 1 else p[0] for p in self.parts]
        else:
            self.data = []
            for path, (empty,) in zip(self.files, self.parts):
                tail = tuple(empty.shape[1:])
                n = self.size * math.prod(tail)
                t = torch.from_file(path, shared=False, size=n, dtype=empty.dtype)
                self.data.append(t.view(self.size, *tail))
        self.parts = []

    def rebuild(self, idx: Tensor, dtype: Optional[torch.dtype]) -> Any:
        it = iter(zip(self.data, self.devices))
        leaves = []
        for m, c in zip(self.mask, self.const):
            if not m:
                leaves.append(c)
                continue
            t, device = next(it)
            t = t.index_select(0, idx.to(t.device)).to(device)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            leaves.append(t)
        return tree_unflatten(leaves, self.spec)


class UnitCache:
    """Inputs (``(args, kwargs)`` of the unit's calls) and targets (outputs) of one unit.

    Both are recorded call by call in two passes over the same data (the quantized model
    for the inputs, the float model for the targets), split into samples along the batch
    dimension (dim 0 of every tensor whose first size is the call's batch size) and grouped
    by signature (argument structure, per-sample shapes, non-tensor arguments): a minibatch
    is drawn from one group, so images of different sizes (detection) never mix.

    Args:
        max_samples: Samples kept (the first ones recorded); ``0``: all.
        dtype: ``'float32'`` or ``'float16'`` storage of floating tensors.
        budget_mb: Memory budget of inputs and targets together (MiB); exceeding it
            raises a ``MemoryError`` that names the remedies. Not used on disk.
        name: The unit's name, for messages.
        disk: Keep the tensors in files under a temporary directory (removed by
            :meth:`close`) instead of memory; running out of free space there raises a
            ``MemoryError`` naming the directory.
        cache_dir: Where that temporary directory goes (default: the system's temp dir).
    """

    #: Free space left on the cache's disk when it is considered full.
    DISK_MARGIN = 256 << 20

    def __init__(
        self,
        max_samples: int = 0,
        dtype: str = 'float32',
        budget_mb: int = 0,
        name: str = '',
        disk: bool = False,
        cache_dir: Optional[str] = None,
    ) -> None:
        self.max_samples = int(max_samples)
        self.store_dtype = _DTYPES[dtype]
        self.budget = int(budget_mb) << 20
        self.name = name
        self.dir: Optional[str] = None
        if disk:
            if cache_dir:
                os.makedirs(cache_dir, exist_ok=True)
            self.dir = tempfile.mkdtemp(prefix='mmdopq-recon-', dir=cache_dir)
        self.inputs: list[_Group] = []
        self.targets: list[_Group] = []
        self._in_index: dict[tuple, int] = {}
        self._in_order: list[tuple[int, int, int]] = []  # (group, offset, batch) per call
        self._tgt_calls = 0
        self._tgt_order: list[tuple[int, int]] = []
        self.bytes = 0
        self.n_inputs = 0
        self.n_targets = 0
        self.work_dtype: Optional[torch.dtype] = None

    # -- recording -------------------------------------------------------------------
    def full(self, which: str) -> bool:
        n = self.n_inputs if which == 'inputs' else self.n_targets
        return bool(self.max_samples) and n >= self.max_samples

    def reset(self, which: str) -> None:
        """Forget what was recorded of ``'inputs'`` or ``'targets'``."""
        if which == 'inputs':
            self.inputs, self._in_index, self._in_order, self.n_inputs = [], {}, [], 0
        else:
            self.targets, self._tgt_calls, self.n_targets = [], 0, 0
        if self.dir:
            tag = 'in_' if which == 'inputs' else 'out_'
            for f in os.listdir(self.dir):
                if f.startswith(tag):
                    os.remove(osp.join(self.dir, f))

    def _spill(self, which: str, group: int) -> Optional[str]:
        return osp.join(self.dir, f'{which}_{group}') if self.dir else None

    def close(self) -> None:
        """Drop the tensors and remove the disk cache's directory."""
        self.inputs, self.targets = [], []
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __del__(self) -> None:
        if getattr(self, 'dir', None):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _prepare(self, tree: Any, taken: int) -> tuple[Any, list, int]:
        leaves, spec = tree_flatten(tree)
        batch = _batch_size(leaves)
        keep = batch if not self.max_samples else min(batch, self.max_samples - taken)
        out = []
        for leaf in leaves:
            if _batched(leaf, batch):
                t = leaf.detach()[:keep]
                if t.is_floating_point():
                    if self.work_dtype is None:
                        self.work_dtype = t.dtype
                    t = t.to(self.store_dtype)
                out.append(t if self.dir else t.clone())  # the disk keeps its own copy
                self.bytes += out[-1].numel() * out[-1].element_size()
            else:
                out.append(leaf)
        if self.dir:
            free = shutil.disk_usage(self.dir).free
            need = sum(t.numel() * t.element_size() for t in out if isinstance(t, Tensor))
            if free - need < self.DISK_MARGIN:
                raise MemoryError(
                    f'reconstruction unit {self.name!r}: its disk cache in {self.dir} has '
                    f'{self.bytes >> 20} MiB and the disk {free >> 20} MiB free; set '
                    'quant.reconstruct.cache_dir to a larger disk, use cache_dtype="float16" '
                    'or fewer num_images'
                )
        elif self.budget and self.bytes > self.budget:
            raise MemoryError(
                f'reconstruction unit {self.name!r}: its cache exceeds '
                f'quant.reconstruct.cache_mb={self.budget >> 20} MiB after {taken + keep} '
                'samples; use cache_dtype="float16", cache="disk", fewer num_images, or '
                'raise cache_mb'
            )
        return spec, out, keep

    def add_input(self, args: tuple, kwargs: dict) -> None:
        """Record one call's arguments."""
        spec, leaves, batch = self._prepare((tuple(args), dict(kwargs)), self.n_inputs)
        sig = _signature(spec, leaves, batch)
        gi = self._in_index.get(sig)
        if gi is None:
            gi = self._in_index[sig] = len(self.inputs)
            self.inputs.append(_Group(spec, leaves, batch, self._spill('in', gi)))
            offset = 0
        else:
            offset = self.inputs[gi].size
            self.inputs[gi].add(leaves, batch)
        self._in_order.append((gi, offset, batch))
        self.n_inputs += batch

    def add_target(self, output: Any) -> None:
        """Record one call's output (calls in the order of :meth:`add_input`)."""
        call = self._tgt_calls
        if call >= len(self._in_order):
            raise ValueError(
                f'reconstruction unit {self.name!r}: more target calls than input calls; '
                'the forward loop must yield the same data on every pass'
            )
        gi, offset, batch = self._in_order[call]
        spec, leaves, n = self._prepare(output, self.n_targets)
        if n != batch:
            raise ValueError(
                f'reconstruction unit {self.name!r}: call {call} has {batch} input samples '
                f'but {n} targets; the forward loop must yield the same data on every pass'
            )
        while len(self.targets) <= gi:
            self.targets.append(None)  # type: ignore[arg-type]
        if self.targets[gi] is None:
            self.targets[gi] = _Group(spec, leaves, batch, self._spill('out', gi))
        else:
            self.targets[gi].add(leaves, batch)
        self._tgt_calls += 1
        self.n_targets += batch

    def finish(self) -> None:
        """Concatenate the recorded calls; check inputs and targets match."""
        if not self.n_inputs:
            raise ValueError(
                f'reconstruction unit {self.name!r} was never called by the forward loop; '
                'is it on the forward path of the model?'
            )
        if self.n_targets != self.n_inputs:
            raise ValueError(
                f'reconstruction unit {self.name!r}: {self.n_inputs} input samples but '
                f'{self.n_targets} targets; the forward loop must yield the same data on '
                'every pass'
            )
        for g in self.inputs + self.targets:
            g.finish()

    # -- use ---------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return self.n_inputs

    def batches(self, batch_size: int, indices: Optional[list[tuple[int, Tensor]]] = None):
        """Iterate ``(args, kwargs, target)`` over all samples (or the given ones) in order."""
        if indices is None:
            indices = [(g, torch.arange(grp.size)) for g, grp in enumerate(self.inputs)]
        for g, idx in indices:
            for start in range(0, len(idx), batch_size):
                yield self.get(g, idx[start : start + batch_size])

    def get(self, group: int, idx: Tensor) -> tuple[tuple, dict, Any]:
        args, kwargs = self.inputs[group].rebuild(idx, self.work_dtype)
        return args, kwargs, self.targets[group].rebuild(idx, self.work_dtype)

    def sample(self, batch_size: int, gen: torch.Generator) -> tuple[tuple, dict, Any]:
        """A random minibatch (one group, drawn in proportion to its size)."""
        sizes = torch.tensor([g.size for g in self.inputs], dtype=torch.float)
        g = int(torch.multinomial(sizes, 1, generator=gen)) if len(sizes) > 1 else 0
        n = self.inputs[g].size
        idx = torch.randperm(n, generator=gen)[: min(batch_size, n)]
        return self.get(g, idx)

    def subset(self, n: int, gen: torch.Generator) -> list[tuple[int, Tensor]]:
        """A fixed random subset of ``n`` samples (``0``: all) as ``(group, indices)``."""
        total = self.num_samples
        if not n or n >= total:
            return [(g, torch.arange(grp.size)) for g, grp in enumerate(self.inputs)]
        pick = torch.randperm(total, generator=gen)[:n].sort().values
        out, start = [], 0
        for g, grp in enumerate(self.inputs):
            sel = pick[(pick >= start) & (pick < start + grp.size)] - start
            if len(sel):
                out.append((g, sel))
            start += grp.size
        return out
