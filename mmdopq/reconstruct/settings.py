"""Settings of block reconstruction (``quant.reconstruct`` of a config)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

#: Dtypes the unit caches may use.
CACHE_DTYPES = ('float32', 'float16')
#: Where the unit caches live.
CACHES = ('memory', 'disk')
#: How a unit's weights are learned: AdaRound's rounding variables, or the weights
#: themselves through a straight-through estimator (I&S-ViT style).
WEIGHT_MODES = ('adaround', 'ste')
#: Reconstruction losses (``'mse'``: relative output MSE; room for a weighted loss later).
LOSSES = ('mse',)
#: Targets of the RoI heads (see :class:`ReconstructSettings`).
ROI_TARGETS = ('local', 'float')


@dataclass(frozen=True)
class ReconstructSettings:
    """What block reconstruction does after calibration (all keys of ``quant.reconstruct``).

    Attributes:
        enabled: Run the stage (a non-empty ``quant.reconstruct`` turns it on; ``False``
            keeps the keys and switches it off).
        iters: Optimisation steps per unit (upper bound; early stopping may end sooner).
            Default 300: on the reference ViT at W4A4 (128 images) 100 / 300 iterations
            gave top-1 77.6 / 78.5 from 70.75.
        batch_size: Images per optimisation step.
        num_images: Images taken from the reconstruction data (the first ``num_images``
            samples the forward loop yields); ``0``: everything it yields.
        drop_prob: QDrop: probability that an activation element skips its quantization
            during optimisation (``0``: always quantized, as BRECQ).
        lr_weight: Adam learning rate of the AdaRound variables, or with
            ``weight_mode='ste'`` of the weights measured in steps of their grid.
        lr_step: Adam learning rate of the activation steps (cosine decay to 0). The
            defaults (1e-2, 1e-3) are chosen for short schedules: the published 1e-3 / 4e-5
            belong to 20 000-iteration schedules and barely move in a few hundred (reference
            ViT, W4A4, 100 iterations: top-1 72.0 with them, 77.6 with these; 70.75 without
            reconstruction).
        reg_weight: Weight of the rounding regulariser (the loss is a relative MSE, see
            :class:`~mmdopq.reconstruct.unit.UnitReconstructor`).
        anneal: ``(start, end)`` of the regulariser's exponent ``beta``, linear after the
            warm-up.
        warmup: Fraction of ``iters`` without the regulariser (AdaRound's warm-up).
        early_stop: ``patience`` (evaluations without a relative improvement of at least
            ``min_delta`` of the best loss; ``0``: never stop early) and ``min_delta``. It
            applies when no rounding regulariser anneals (``weight_mode='ste'``, weights
            not learned, or ``reg_weight=0``): AdaRound's anneal runs to the last iteration
            and its hardened state improves only as the anneal proceeds.
        eval_every: Iterations between evaluations of the hardened state (keep-best and
            early stopping); ``0``: ``max(1, iters // 20)``.
        eval_images: Samples of the fixed evaluation subset (``0``: all cached samples).
        learn_weights: Learn the weights (how: ``weight_mode``).
        weight_mode: ``'adaround'``: learned rounding up or down of each weight, annealed
            to a hard choice (within one step of round-to-nearest); ``'ste'``: the weights
            are trained through round-to-nearest with a straight-through gradient and may
            move by several steps (no regulariser). Both end on the calibrated grid.
        learn_steps: Learn the steps of the uniform activation quantizers (LSQ).
        learn_post_softmax: Learn the post-Softmax quantizers too (TanQ's centre and
            curvature, log-sqrt2's scale); off: they keep their calibration.
        lr_post_softmax: Adam learning rate of those parameters (cosine decay to 0).
        neck: Detectors: reconstruct the neck (FPN) after the backbone.
        heads: Detectors: reconstruct the heads too, after the neck: the RPN head (its
            target is the float RPN head's output on the float model's features, like every
            other unit) and each RoI box and mask head. An RoI head sees other regions in
            the float model than in the quantized one; its target is the float head on the
            quantized model's regions (see ``roi_target``). Its samples are regions, not
            images.
        roi_target: What an RoI head's float target is computed from, on the quantized
            model's regions: ``'local'``, the quantized model's pooled features (the target
            is what the float head makes of the head's own input; upstream errors stay), or
            ``'float'``, the float model's features pooled at those regions (the head also
            learns to make up for the error of the quantized backbone and neck, as every
            other unit does).
        rois_per_call: RoI heads: regions kept (a seeded random draw) from each call of
            the head, i.e. from each batch of ``batch_size`` images; ``0``: all of them.
        roi_batch_size: RoI heads: regions per optimisation step. Their fixed evaluation
            subset holds ``8 * roi_batch_size`` regions (``eval_images`` counts images).
        cache_dtype: ``'float32'`` or ``'float16'`` (halves the memory of the unit caches).
        cache_mb: Memory budget of one unit's cache (inputs + targets) in MiB; a unit
            whose cache would exceed it stops with an error that names the remedies.
        cache: ``'memory'`` or ``'disk'``: a unit's cache in files under a temporary
            directory, read back page by page (large detectors; ``cache_mb`` does not
            apply, the disk's free space does), removed when the unit is done.
        cache_dir: Where the disk cache's temporary directory goes (``None``: the
            system's temp dir, ``TMPDIR``).
        loss: ``'mse'`` (relative output MSE).
        seed: Seed of the sampling and of QDrop; ``None``: the recipe's seed.
        progress: Show a progress line per unit on stderr.
    """

    enabled: bool = True
    iters: int = 300
    batch_size: int = 32
    num_images: int = 128
    drop_prob: float = 0.5
    lr_weight: float = 1e-2
    lr_step: float = 1e-3
    reg_weight: float = 0.01
    anneal: tuple = (20.0, 2.0)
    warmup: float = 0.2
    early_stop: Mapping = dataclasses.field(
        default_factory=lambda: dict(patience=5, min_delta=1e-3)
    )
    eval_every: int = 0
    eval_images: int = 64
    learn_weights: bool = True
    weight_mode: str = 'adaround'
    learn_steps: bool = True
    learn_post_softmax: bool = False
    lr_post_softmax: float = 1e-2
    neck: bool = False
    heads: bool = False
    rois_per_call: int = 64
    roi_batch_size: int = 64
    roi_target: str = 'local'
    cache_dtype: str = 'float32'
    cache_mb: int = 4096
    cache: str = 'memory'
    cache_dir: Optional[str] = None
    loss: str = 'mse'
    seed: Optional[int] = None
    progress: bool = True

    @property
    def patience(self) -> int:
        return int(self.early_stop.get('patience', 5))

    @property
    def min_delta(self) -> float:
        return float(self.early_stop.get('min_delta', 1e-3))

    def for_rois(self) -> ReconstructSettings:
        """The settings of an RoI head unit: minibatches and evaluation counted in regions."""
        return dataclasses.replace(
            self, batch_size=self.roi_batch_size, eval_images=8 * self.roi_batch_size
        )

    def eval_interval(self) -> int:
        """Iterations between evaluations (resolving ``eval_every=0``)."""
        return self.eval_every or max(1, self.iters // 20)

    @classmethod
    def from_mapping(
        cls, cfg: Optional[Mapping], prefix: str = 'quant.reconstruct'
    ) -> ReconstructSettings:
        """Validated settings from a mapping; errors name ``<prefix>.<key>``.

        Raises:
            ValueError: Unknown key or a value out of range.
        """
        return cls(**check_reconstruct(cfg or {}, prefix))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out['anneal'] = list(self.anneal)
        out['early_stop'] = dict(self.early_stop)
        return out


def _fail(prefix: str, key: str, value: Any, what: str) -> ValueError:
    return ValueError(f'{prefix}.{key}={value!r} {what}')


def check_reconstruct(cfg: Mapping, prefix: str = 'quant.reconstruct') -> dict:
    """Validate a ``quant.reconstruct`` mapping; returns its normalised keys.

    Args:
        cfg: The mapping (unknown keys are errors).
        prefix: Name of the mapping in error messages.

    Raises:
        ValueError: Naming ``<prefix>.<key>`` and the value.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f'{prefix}={cfg!r} must be a dict of reconstruction settings')
    known = [f.name for f in dataclasses.fields(ReconstructSettings)]
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ValueError(f'{prefix}: unknown keys {unknown}; known: {known}')
    out: dict[str, Any] = {}

    def integer(key: str, v: Any, low: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise _fail(prefix, key, v, f'must be an integer >= {low}')
        return int(v)

    def number(key: str, v: Any, low: float, high: float = math.inf, open_low=False) -> float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < low or v > high or (open_low and v == low):
            bound = f'> {low}' if open_low else f'>= {low}'
            rng = f'{bound} and <= {high}' if math.isfinite(high) else bound
            raise _fail(prefix, key, v, f'must be a number {rng}')
        return float(v)

    for key, v in cfg.items():
        if key in (
            'enabled',
            'learn_weights',
            'learn_steps',
            'learn_post_softmax',
            'neck',
            'heads',
            'progress',
        ):
            if not isinstance(v, bool):
                raise _fail(prefix, key, v, 'must be True or False')
            out[key] = v
        elif key in ('iters', 'batch_size', 'roi_batch_size'):
            out[key] = integer(key, v, 1)
        elif key in ('num_images', 'eval_every', 'eval_images', 'cache_mb', 'rois_per_call'):
            out[key] = integer(key, v, 0)
        elif key == 'seed':
            out[key] = None if v is None else integer(key, v, 0)
        elif key == 'drop_prob':
            out[key] = number(key, v, 0.0, 0.99)
        elif key == 'warmup':
            out[key] = number(key, v, 0.0, 1.0)
        elif key in ('lr_weight', 'lr_step', 'lr_post_softmax', 'reg_weight'):
            out[key] = number(key, v, 0.0)
        elif key == 'anneal':
            if isinstance(v, (str, bytes)) or not hasattr(v, '__len__') or len(v) != 2:
                raise _fail(prefix, key, v, 'must be a pair (beta_start, beta_end)')
            out[key] = tuple(number(key, b, 0.0, open_low=True) for b in v)
        elif key == 'early_stop':
            if not isinstance(v, Mapping) or set(v) - {'patience', 'min_delta'}:
                raise _fail(prefix, key, v, 'must be a dict with keys patience, min_delta')
            es = dict(patience=5, min_delta=1e-3)
            if 'patience' in v:
                es['patience'] = integer(f'{key}.patience', v['patience'], 0)
            if 'min_delta' in v:
                es['min_delta'] = number(f'{key}.min_delta', v['min_delta'], 0.0, 1.0)
            out[key] = es
        elif key == 'cache_dtype':
            if v not in CACHE_DTYPES:
                raise _fail(prefix, key, v, f'must be one of {CACHE_DTYPES}')
            out[key] = v
        elif key == 'cache':
            if v not in CACHES:
                raise _fail(prefix, key, v, f'must be one of {CACHES}')
            out[key] = v
        elif key == 'cache_dir':
            if v is not None and (not isinstance(v, str) or not v):
                raise _fail(prefix, key, v, 'must be a directory path or None')
            out[key] = v
        elif key == 'weight_mode':
            if v not in WEIGHT_MODES:
                raise _fail(prefix, key, v, f'must be one of {WEIGHT_MODES}')
            out[key] = v
        elif key == 'roi_target':
            if v not in ROI_TARGETS:
                raise _fail(prefix, key, v, f'must be one of {ROI_TARGETS}')
            out[key] = v
        elif key == 'loss':
            if v not in LOSSES:
                raise _fail(prefix, key, v, f'must be one of {LOSSES}')
            out[key] = v
    return out
