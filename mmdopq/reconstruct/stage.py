"""Block reconstruction over the units of a calibrated model (the stage after calibration).

For every unit the plan declares, in forward order: record the unit's inputs in the
quantized model (whose earlier units are already reconstructed) and its float outputs on
the same data, both by running ``forward_loop`` with a hook on the unit (the rest of
each forward pass is skipped), then optimise the unit (:class:`UnitReconstructor`) and
write the result into the model. Pure torch: no mm* import.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from ..nn import QuantModuleMixin, WeightActQuantMixin
from ..utils.errors import ConfigError
from .cache import UnitCache, take_rows
from .progress import ProgressLine
from .settings import ReconstructSettings
from .unit import UnitReconstructor

ForwardLoop = Callable[[nn.Module], Any]
Log = Callable[[str], None]


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the unit has been seen."""


@contextmanager
def _guarded_forward(model: nn.Module, skip: Callable[[], bool]) -> Iterator[None]:
    """Make ``model.forward`` return ``None`` on :class:`_Stop` (and at once when ``skip()``).

    Only the outermost call returns early: a model whose ``forward`` calls itself (an
    mmpretrain classifier's ``predict`` calls ``self(inputs)``) lets the stop pass through
    the inner call.
    """
    had = 'forward' in model.__dict__
    orig = model.forward
    depth = [0]

    def forward(*args, **kwargs):
        if depth[0]:
            return orig(*args, **kwargs)
        if skip():
            return None
        depth[0] += 1
        try:
            return orig(*args, **kwargs)
        except _Stop:
            return None
        finally:
            depth[0] -= 1

    model.forward = forward
    try:
        yield
    finally:
        if had:
            model.forward = orig
        else:
            del model.forward


@contextmanager
def _modes(model: nn.Module, mode: str) -> Iterator[None]:
    """Every quantized layer in ``mode`` inside the block, then back to its own mode."""
    layers = [m for m in model.modules() if isinstance(m, QuantModuleMixin)]
    saved = [m.quant_mode for m in layers]
    for m in layers:
        m.set_quant_mode(mode)
    try:
        yield
    finally:
        for m, s in zip(layers, saved):
            m.set_quant_mode(s)


@contextmanager
def _float_weights(originals: dict[int, tuple[WeightActQuantMixin, Tensor]]) -> Iterator[None]:
    """The float weights of already reconstructed layers inside the block."""
    saved = []
    with torch.no_grad():
        for layer, w in originals.values():
            saved.append((layer, layer.weight.detach().clone()))
            layer.weight.copy_(w)
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, w in saved:
                layer.weight.copy_(w)


def _drive(
    model: nn.Module,
    forward_loop: ForwardLoop,
    done: Callable[[], bool],
    truncate: list[bool],
    reset: Callable[[], None],
) -> None:
    """Run ``forward_loop`` once; hooks that raise :class:`_Stop` end a forward pass early.

    Passes return at once when ``done()``. If ``forward_loop`` cannot cope with a model
    that returns ``None``, ``reset()`` forgets what was recorded and the loop runs again
    with ``truncate[0] = False`` (the hooks then must not stop).
    """
    truncate[0] = True
    with torch.no_grad():
        try:
            with _guarded_forward(model, done):
                forward_loop(model)
        except MemoryError:
            raise
        except Exception:
            # the loop used the (skipped) output: run it through in full (a real
            # error raises again there)
            truncate[0] = False
            reset()
            forward_loop(model)


class _RoiRegions:
    """The regions an RoI unit's samples come from, to pool the float features there.

    In the quantized pass it counts the model's forward passes (calls of the source's
    ``features`` module) and remembers the pooler's last call; each sample the unit keeps
    is then filed with its forward pass and its region. In the float pass the float
    features of the same forward pass are pooled at the filed regions and run through the
    float unit: the target.
    """

    def __init__(self, name: str, unit: nn.Module, source: Any) -> None:
        self.name, self.unit, self.source = name, unit, source
        self.calls: dict[int, list[tuple[int, Tensor]]] = {}
        self.forward = -1
        self.last: Optional[tuple[int, Tensor, Any]] = None

    def reset(self) -> None:
        self.calls, self.forward, self.last = {}, -1, None

    def watch(self) -> list:
        """Hooks of the quantized pass (to be removed by the caller)."""

        def count(module, args) -> None:
            self.forward += 1

        def pooled(module, args, out) -> None:
            if len(args) < 2 or not isinstance(args[0], (tuple, list)):
                self.last = None
            else:
                self.last = (len(args[0]), args[1], out)

        return [
            self.source.features.register_forward_pre_hook(count),
            self.source.pooler.register_forward_hook(pooled),
        ]

    def add(self, args: tuple, idx: Optional[Tensor]) -> None:
        """File the regions of the unit's call (rows ``idx``; ``None``: all)."""
        if self.last is None or not args or args[0] is not self.last[2]:
            raise ConfigError(
                f"quant.reconstruct.roi_target='float': the RoI head {self.name!r} is not "
                'called on the output of its RoI extractor (a shared head or a shared '
                "extractor in between); use roi_target='local'"
            )
        n, rois, _ = self.last
        if idx is not None:
            rois = rois.index_select(0, idx.to(rois.device))
        self.calls.setdefault(self.forward, []).append((n, rois.detach()))

    def targets(self, model: nn.Module, forward_loop: ForwardLoop, cache: UnitCache) -> None:
        """Run ``forward_loop`` (float mode) up to the features; record the targets."""
        last = max(self.calls, default=-1)
        seen = [-1]
        truncate = [True]

        def pool(module, args, out) -> None:
            seen[0] += 1
            for n, rois in self.calls.get(seen[0], ()):
                feats = tuple(out)[:n]
                cache.add_target(self.unit(self.source.pooler(feats, rois)))
            if truncate[0]:
                raise _Stop

        def reset() -> None:
            seen[0] = -1
            cache.reset('targets')

        handle = self.source.features.register_forward_hook(pool)
        try:
            _drive(model, forward_loop, lambda: seen[0] >= last, truncate, reset)
        finally:
            handle.remove()


def _run_pass(
    model: nn.Module,
    forward_loop: ForwardLoop,
    unit: nn.Module,
    cache: UnitCache,
    which: str,
    rows: Optional[tuple[int, torch.Generator]] = None,
    regions: Optional[_RoiRegions] = None,
) -> None:
    """Run ``forward_loop`` once, recording the unit's inputs or outputs into ``cache``.

    Each forward pass stops at the unit; once ``cache`` holds its samples the remaining
    passes return at once. If ``forward_loop`` cannot cope with a model that returns
    ``None`` it is run again without stopping early.

    With ``rows = (k, generator)`` (an RoI head: ``'inputs'`` only) each call keeps at
    most ``k`` random rows. Without ``regions`` their target is recorded at once: the
    unit itself in float mode on those rows (a local target); with ``regions`` the rows'
    regions are filed for :meth:`_RoiRegions.targets`.
    """
    busy = [False]
    truncate = [True]

    def record(*args) -> None:
        if busy[0]:  # the unit's own float call below
            return
        if cache.full(which):
            if truncate[0]:
                raise _Stop
            return
        if which == 'inputs':
            _, a, kw = args
            if rows is None:
                cache.add_input(a, kw)
            else:
                picked = take_rows((tuple(a), dict(kw)), *rows)
                if picked is not None:
                    taken, idx = picked
                    cache.add_input(*taken)
                    if regions is not None:
                        regions.add(tuple(a), idx)
                    else:
                        busy[0] = True
                        try:
                            with _modes(unit, 'float'):
                                cache.add_target(unit(*taken[0], **taken[1]))
                        finally:
                            busy[0] = False
        else:
            cache.add_target(args[-1])
        if truncate[0]:
            raise _Stop

    gen_state = rows[1].get_state() if rows is not None else None

    def reset() -> None:
        cache.reset(which)
        if rows is not None:
            rows[1].set_state(gen_state)  # the full rerun keeps the same rows
            if regions is None:
                cache.reset('targets')  # local targets were recorded beside the inputs
        if regions is not None:
            regions.reset()

    if which == 'inputs':
        handles = [
            unit.register_forward_pre_hook(lambda m, a, kw: record(m, a, kw), with_kwargs=True)
        ]
    else:
        handles = [unit.register_forward_hook(lambda m, a, out: record(m, a, out))]
    if regions is not None:
        handles += regions.watch()
    try:
        _drive(model, forward_loop, lambda: cache.full(which), truncate, reset)
    finally:
        for handle in handles:
            handle.remove()


def select_units(plan: Any, settings: ReconstructSettings) -> list[tuple[str, nn.Module]]:
    """The plan's units the settings reconstruct, in forward order.

    ``block`` units always, ``neck`` units with ``settings.neck``, ``head`` and ``roi``
    units with ``settings.heads``.

    Raises:
        ConfigError: ``neck`` or ``heads`` is asked for and the plan declares no such unit.
    """
    kinds = getattr(plan, 'unit_kinds', {})
    present = set(kinds.values())
    for key, asked, needed in (
        ('neck', settings.neck, {'neck'}),
        ('heads', settings.heads, {'head', 'roi'}),
    ):
        if asked and not present & needed:
            scope = getattr(getattr(plan, 'recipe', None), 'scope', 'whole')
            if scope == 'whole':  # e.g. a classifier
                why, fix = f'the model has no {key} to reconstruct', ''
            else:
                why, fix = f'quant.scope={scope!r} leaves its {key} in float', ", or scope='whole'"
            raise ConfigError(f'quant.reconstruct.{key}=True, but {why}: set {key}=False{fix}')
    wanted = {'block': True, 'neck': settings.neck, 'head': settings.heads, 'roi': settings.heads}
    return [(n, m) for n, m in plan.units if wanted[kinds.get(n, 'block')]]


def _roi_source(plan: Any, name: str) -> Any:
    source = getattr(plan, 'roi_sources', {}).get(name)
    if source is None:
        raise ConfigError(
            f"quant.reconstruct.roi_target='float': the adapter declares no feature source "
            f"for the RoI head {name!r} (a detector without a neck?); use roi_target='local'"
        )
    return source


def reconstruct(
    model: nn.Module,
    forward_loop: ForwardLoop,
    settings: Union[ReconstructSettings, Mapping, None] = None,
    log: Optional[Log] = None,
) -> dict:
    """Reconstruct every unit of a calibrated model, in forward order, in place.

    Args:
        model: A model calibrated by :func:`mmdopq.apis.calibrate` (``quant`` mode); its
            ``quant_plan.units`` are the units.
        forward_loop: Runs the reconstruction data through its argument (called twice per
            unit; it must yield the same data in the same order every time, and may ignore
            the model's return value, which is ``None`` when a pass stops early).
        settings: :class:`ReconstructSettings` or a ``quant.reconstruct`` mapping.
        log: Receives one line per unit (loss before/after, iterations, time).

    Returns:
        dict: ``units`` (per unit: ``loss_before``, ``loss_after``, ``iters``,
        ``best_iter``, ``reverted``, ``samples``, ``time_s``, ...), ``seed``, ``settings``,
        ``total_s``.
    """
    if not isinstance(settings, ReconstructSettings):
        settings = ReconstructSettings.from_mapping(settings)
    plan = getattr(model, 'quant_plan', None)
    if plan is None or not hasattr(plan, 'units'):
        raise ValueError(
            f'{type(model).__name__} has no quant_plan: prepare and calibrate it first'
        )
    say = log or (lambda _: None)
    seed = settings.seed if settings.seed is not None else plan.recipe.seed
    units = select_units(plan, settings)
    if not units:
        raise ValueError(f'{type(model).__name__}: its adapter declares no reconstruction units')
    kinds = getattr(plan, 'unit_kinds', {})
    sources = {
        name: _roi_source(plan, name)
        for name, _ in units
        if kinds.get(name) == 'roi' and settings.roi_target == 'float'
    }
    fixed = set()
    for name in plan.post_softmax_sites:
        fixed.add(id(plan.sites[name].quantizer_a))
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    originals: dict[int, tuple[WeightActQuantMixin, Tensor]] = {}
    records: dict[str, dict] = {}
    say(
        f'mmdopq: reconstruct {len(units)} units, up to {settings.iters} iterations each '
        f'(batch {settings.batch_size}, QDrop {settings.drop_prob}, seed {seed})'
    )
    for k, (name, unit) in enumerate(units):
        t = time.perf_counter()
        on_rois = kinds.get(name) == 'roi'
        cache = UnitCache(
            0 if on_rois else settings.num_images,  # RoI heads: every image of the loop
            settings.cache_dtype,
            settings.cache_mb,
            name,
            disk=settings.cache == 'disk',
            cache_dir=settings.cache_dir,
        )
        try:
            if on_rois:
                gen = torch.Generator().manual_seed(seed * 7919 + k + 1_000_003)
                rows = (settings.rois_per_call, gen)
                regions = None
                if name in sources:
                    regions = _RoiRegions(name, unit, sources[name])
                _run_pass(model, forward_loop, unit, cache, 'inputs', rows, regions)
                if regions is not None:
                    with _modes(model, 'float'), _float_weights(originals):
                        regions.targets(model, forward_loop, cache)
            else:
                _run_pass(model, forward_loop, unit, cache, 'inputs')
                with _modes(model, 'float'), _float_weights(originals):
                    _run_pass(model, forward_loop, unit, cache, 'targets')
            cache.finish()
            capture_s = time.perf_counter() - t
            progress = ProgressLine(
                f'mmdopq: reconstruct {k + 1}/{len(units)} {name}',
                settings.iters,
                enabled=settings.progress,
            )
            unit_settings = settings.for_rois() if on_rois else settings
            runner = UnitReconstructor(name, unit, fixed, unit_settings, seed=seed * 7919 + k)
            rec = runner.run(cache, progress)
            progress.close()
        finally:
            cache.close()
        originals.update(runner.original_weights)
        rec['capture_s'] = capture_s
        rec['time_s'] += capture_s
        records[name] = rec
        it_s = rec['iters'] and (rec['time_s'] - capture_s) / rec['iters']
        say(
            f'mmdopq: reconstruct {k + 1}/{len(units)} {name}: loss {rec["loss_before"]:.4g} '
            f'-> {rec["loss_after"]:.4g} ({rec["iters"]} iterations, best at '
            f'{rec["best_iter"]}{", reverted" if rec["reverted"] else ""}; '
            f'{rec["samples"]} samples) {rec["time_s"]:.1f}s ({it_s:.3f} s/iteration)'
        )
    total = time.perf_counter() - t0
    model.train(was_training)
    say(f'mmdopq: reconstruct: {len(units)} units in {total:.1f}s')
    return dict(units=records, seed=seed, settings=settings.to_dict(), total_s=total)
