"""Quantization recipe: the immutable settings of a quantized model and its quantizer factories.

A recipe fixes everything the adapters need to quantize a model: bit widths,
calibration methods, the post-Softmax quantizer and the LayerNorm fold rule.
Like torch.ao's ``QConfig`` it holds settings and factories, never state: the
per-site seeds are handed out by :class:`~mmdopq.plan.QuantizerFactory`, which
belongs to the model being quantized. Named recipes fill in defaults; any
explicit key overrides them::

    quant = dict(recipe='dopq', wbits=4, abits=4)             # TanQ + MOSF
    quant = dict(recipe='repq', wbits=4, abits=4)             # log-sqrt2 + mean fold
    quant = dict(recipe='dopq', wbits=4, abits=4, reparam_rule='median')
    quant = dict(recipe='repq_official', wbits=4, abits=4)    # the official RepQ-ViT code
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .quantizers import (
    REPQ_PERCENTILES,
    ZERO_POINT_RULES,
    BaseQuantizer,
    LogSqrt2Quantizer,
    TanQuantizer,
    UniformQuantizer,
    check_bits,
)
from .quantizers.base_quantizer import PERCENTILE_MODES
from .reconstruct.settings import ReconstructSettings, check_reconstruct
from .reparam.layernorm_reparam import FOLD_ZERO_POINTS

#: Component defaults of the named recipes.
RECIPES: dict[str, dict[str, Any]] = {
    # RepQ-ViT: log-sqrt2 post-Softmax, exact mean fold.
    'repq': dict(post_softmax='log_sqrt2', softmax_objective='tensor', reparam_rule='mean'),
    # The official RepQ-ViT code (zkkli/RepQ-ViT) where mmdopq deliberately differs: one
    # quantized calibration pass (each layer on the outputs of the quantized layers before it),
    # torch.quantile's linear percentiles over the whole tensor (no subsample), and the fold's
    # zero point mean(z) left fractional. For parity with published RepQ-ViT numbers; the
    # data side (first val2017 image for detection, DeiT crop 0.875) is in the configs.
    'repq_official': dict(
        post_softmax='log_sqrt2',
        softmax_objective='tensor',
        reparam_rule='mean',
        calib_mode='sequential',
        percentile_mode='linear',
        fold_zero_point='fractional',
    ),
    # DopQ-ViT: TanQ (calibrated on the attn @ v error) + MOSF.
    'dopq': dict(post_softmax='tan', softmax_objective='output', reparam_rule='mad'),
    # Ablations: one DopQ component on top of RepQ-ViT.
    'tanq_only': dict(post_softmax='tan', softmax_objective='output', reparam_rule='mean'),
    'mosf_only': dict(post_softmax='log_sqrt2', softmax_objective='tensor', reparam_rule='mad'),
    # The float baseline: no quantization sites at all (the stock model), no calibration. Lets
    # one tool and one config family evaluate float and quantized models side by side.
    'float': dict(),
}
#: Keys a named recipe sets (its components).
RECIPE_COMPONENTS = (
    'post_softmax',
    'softmax_objective',
    'reparam_rule',
    'calib_mode',
    'percentile_mode',
    'fold_zero_point',
)


def use_recipe(quant_cfg: dict, name: str) -> None:
    """Switch a ``quant`` config dict to the named recipe, in place.

    The config's own component values are dropped so that the recipe's apply; bits, scope
    and every other key are kept.

    Args:
        quant_cfg: The ``model.quant`` dict of a config.
        name: A key of :data:`RECIPES`.

    Raises:
        ValueError: If ``name`` is not a named recipe.
    """
    if name not in RECIPES:
        raise ValueError(f'unknown recipe {name!r}; choose from {sorted(RECIPES)}')
    for key in RECIPE_COMPONENTS:
        quant_cfg.pop(key, None)
    quant_cfg['recipe'] = name


class FrozenDict(dict):
    """A read-only dict: a recipe shared by several models must not change under them.

    A ``dict`` subclass (unlike ``types.MappingProxyType``) so that it pickles, deep-copies
    and serializes to JSON as a plain dict.
    """

    def _read_only(self, *args, **kwargs):
        raise TypeError('a recipe is immutable: build a new one with QuantRecipe.from_cfg')

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    def __reduce__(self):
        return type(self), (dict(self),)


POST_SOFTMAX = ('tan', 'tan_symmetric', 'log_sqrt2', 'uniform')
#: Settings of TanQ's calibration search that ``quant.tanq_search`` may override.
TANQ_SEARCH_KEYS = ('centres', 'alpha_fractions', 'refine_steps', 'coarse_samples')


def check_tanq_search(value: Any) -> dict:
    """Validate ``quant.tanq_search``; returns it with sequences as float tuples.

    Raises:
        ValueError: Naming the key and value, for anything TanQuantizer would reject.
    """
    if not isinstance(value, dict):
        raise ValueError(f'quant.tanq_search={value!r} must be a dict of {TANQ_SEARCH_KEYS}')
    unknown = sorted(set(value) - set(TANQ_SEARCH_KEYS))
    if unknown:
        raise ValueError(f'quant.tanq_search: unknown keys {unknown}; known: {TANQ_SEARCH_KEYS}')
    out = {}
    for key, v in value.items():
        if key in ('centres', 'alpha_fractions'):
            if isinstance(v, (str, bytes)) or not hasattr(v, '__iter__') or not len(v):
                raise ValueError(f'quant.tanq_search.{key}={v!r} must be a non-empty list')
            out[key] = tuple(float(x) for x in v)
        elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f'quant.tanq_search.{key}={v!r} must be an integer >= 0')
        else:
            out[key] = v
    try:  # the quantizer's own range checks, at config time rather than at model build
        TanQuantizer(4, **out)
    except ValueError as e:
        raise ValueError(f'quant.tanq_search: {e}') from None
    return out


SCOPES = ('whole', 'backbone', 'backbone_neck')
REPARAM_RULES = ('mean', 'median', 'mad', 'none')
CALIB_MODES = ('float', 'sequential')


@dataclass(frozen=True)
class QuantRecipe:
    """Resolved quantization settings (see the module docstring).

    Attributes:
        recipe: Name of the recipe the defaults came from.
        wbits: Weight bits (per output channel).
        abits: Activation bits (per tensor after reparameterization).
        scope: ``'whole'`` detector/classifier, ``'backbone'`` only, or (detectors)
            ``'backbone_neck'``: backbone and neck, the heads float.
        post_softmax: Quantizer of the attention map: ``'tan'``,
            ``'tan_symmetric'``, ``'log_sqrt2'`` or ``'uniform'``.
        softmax_objective: ``'output'`` (error of ``attn @ v``) or ``'tensor'``.
        qk_objective: Calibration objective of the query quantizer: ``'tensor'`` (its
            own error, as RepQ-ViT and DopQ-ViT) or ``'output'`` (error of ``q @ k^T``,
            an mmdopq option).
        reparam_rule: LayerNorm fold rule ``'mean'``, ``'median'``, ``'mad'``
            or ``'none'`` (keep per-channel post-LN quantizers, no fold).
        weight_method: Weight calibration (``'minmax'``, ``'percentile'``, ``'mse'``).
        act_method: Activation calibration method.
        act_zero_point: Zero-point rule of the asymmetric activation quantizers:
            ``'round'`` (RepQ-ViT) or ``'floor'`` (no level below the calibrated
            range, an mmdopq option; see :class:`UniformQuantizer`).
        percentiles: Candidates of the percentile search.
        percentile_mode: How a percentile becomes a value: ``'nearest'`` (mmdopq's default:
            nearest-rank order statistic of the calibration subsample of at most
            ``max_samples`` elements) or ``'linear'`` (the official RepQ-ViT code:
            ``torch.quantile``'s linear interpolation over **everything** observed, no
            subsample; calibration memory then grows with the calibration data).
        fold_zero_point: Zero point of the LayerNorm fold: ``'round'`` (mmdopq's default,
            ``round(mean(z))``: the folded per-tensor quantizer equals the per-channel one) or
            ``'fractional'`` (the official code: ``mean(z)``, within half a step of it).
        calib_mode: What the quantizers are calibrated on: ``'float'`` (mmdopq's
            default: one observe pass of the float model, every quantizer sees float
            activations, over any number of batches) or ``'sequential'`` (RepQ-ViT's
            protocol: one quantized forward pass in which every layer calibrates at its
            first call, on what the quantized layers before it produce; the calibration
            images form one batch).
        patch_embed_abits: Input bits of the patch embedding (8 by protocol).
        max_samples: Per-quantizer element budget of the calibration sample.
        seed: Seed of every random choice of the calibration.
        mad_k_grid: MAD multipliers of MOSF (``inf`` = no cap).
        tanq_search: Overrides of TanQ's calibration search (keys of :data:`TANQ_SEARCH_KEYS`:
            ``centres``, ``alpha_fractions``, ``refine_steps``, ``coarse_samples``; see
            :class:`TanQuantizer`); empty = its defaults. For studying the grid.
        reconstruct: Block reconstruction after calibration (keys of
            :class:`~mmdopq.reconstruct.ReconstructSettings`: ``iters``, ``batch_size``,
            ``num_images``, ``drop_prob``, ...); empty = off (calibration only).
    """

    recipe: str = 'dopq'
    wbits: int = 4
    abits: int = 4
    scope: str = 'whole'
    post_softmax: str = 'tan'
    softmax_objective: str = 'output'
    qk_objective: str = 'tensor'
    reparam_rule: str = 'mad'
    weight_method: str = 'percentile'
    act_method: str = 'percentile'
    act_zero_point: str = 'round'
    percentiles: tuple = REPQ_PERCENTILES
    percentile_mode: str = 'nearest'
    fold_zero_point: str = 'round'
    calib_mode: str = 'float'
    patch_embed_abits: int = 8
    max_samples: int = 1 << 19
    seed: int = 0
    mad_k_grid: tuple = (2.0, 4.0, 8.0, 16.0, float('inf'))
    tanq_search: Mapping = field(default_factory=FrozenDict)
    reconstruct: Mapping = field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'tanq_search', FrozenDict(self.tanq_search))
        frozen = {
            k: FrozenDict(v) if isinstance(v, Mapping) else v for k, v in self.reconstruct.items()
        }
        object.__setattr__(self, 'reconstruct', FrozenDict(frozen))

    @classmethod
    def from_cfg(cls, cfg: dict) -> QuantRecipe:
        """Build from a ``quant`` config dict; unknown keys and values are errors."""
        cfg = dict(cfg)
        name = cfg.get('recipe', 'dopq')
        if name not in RECIPES:
            raise ValueError(f'quant.recipe={name!r} is unknown; choose from {sorted(RECIPES)}')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f'unknown quant config keys {unknown}; known: {sorted(known)}')
        merged = {**RECIPES[name], **cfg}
        for key in ('wbits', 'abits', 'patch_embed_abits'):
            try:
                check_bits(merged.get(key, getattr(cls, key)))
            except ValueError as e:
                raise ValueError(f'quant.{key}: {e}') from None
        checks = (
            ('scope', SCOPES),
            ('post_softmax', POST_SOFTMAX),
            ('softmax_objective', ('tensor', 'output')),
            ('qk_objective', ('tensor', 'output')),
            ('reparam_rule', REPARAM_RULES),
            ('weight_method', ('minmax', 'percentile', 'mse')),
            ('act_method', ('minmax', 'percentile', 'mse')),
            ('act_zero_point', ZERO_POINT_RULES),
            ('calib_mode', CALIB_MODES),
            ('percentile_mode', PERCENTILE_MODES),
            ('fold_zero_point', FOLD_ZERO_POINTS),
        )
        for key, allowed in checks:
            if key in merged and merged[key] not in allowed:
                raise ValueError(f'quant.{key}={merged[key]!r}; choose from {allowed}')
        for key in ('percentiles', 'mad_k_grid'):
            if key in merged:
                merged[key] = tuple(float(v) for v in merged[key])
        if 'tanq_search' in merged:
            merged['tanq_search'] = check_tanq_search(merged['tanq_search'])
        if 'reconstruct' in merged:
            rec = check_reconstruct(merged['reconstruct'] or {})
            # a switched-off stage (a config's defaults for when it is switched on) is the
            # same recipe as none: recorded and compared as ``{}``
            merged['reconstruct'] = rec if rec.get('enabled', True) else {}
        return cls(**merged)

    def to_dict(self) -> dict:
        """Plain-dict form recorded in results and checkpoints."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out['tanq_search'] = dict(self.tanq_search)
        out['reconstruct'] = {
            k: dict(v) if isinstance(v, Mapping) else v for k, v in self.reconstruct.items()
        }
        return out

    @property
    def reconstruct_settings(self) -> ReconstructSettings | None:
        """The block-reconstruction settings, or ``None`` when the stage is off."""
        if not self.reconstruct or self.is_float:
            return None
        settings = ReconstructSettings.from_mapping(self.reconstruct)
        return settings if settings.enabled else None

    @property
    def is_float(self) -> bool:
        """True for the ``'float'`` recipe (nothing is quantized)."""
        return self.recipe == 'float'

    @property
    def bits_tag(self) -> str:
        return 'float' if self.is_float else f'w{self.wbits}a{self.abits}'

    def weight(self, seed: int = 0) -> BaseQuantizer:
        """Per-output-channel weight quantizer.

        Args:
            seed: Seed of the quantizer's calibration subsample.
        """
        return UniformQuantizer(
            self.wbits,
            per_channel=True,
            ch_axis=0,
            method=self.weight_method,
            percentiles=self.percentiles,
            seed=seed,
            percentile_mode=self.percentile_mode,
        )

    @property
    def act_max_samples(self) -> int | None:
        """Sample budget of an activation quantizer: none with linear percentiles."""
        return None if self.percentile_mode == 'linear' else self.max_samples

    def act(
        self, bits: int | None = None, per_channel: bool = False, seed: int = 0
    ) -> BaseQuantizer:
        """Activation quantizer (per channel on the last axis for post-LN inputs).

        Args:
            bits: Bit width; ``None`` for :attr:`abits`.
            per_channel: One scale per channel of the last axis.
            seed: Seed of the quantizer's calibration subsample.
        """
        return UniformQuantizer(
            bits or self.abits,
            per_channel=per_channel,
            ch_axis=-1,
            method=self.act_method,
            percentiles=self.percentiles,
            max_samples=self.act_max_samples,
            seed=seed,
            zero_point_rule=self.act_zero_point,
            percentile_mode=self.percentile_mode,
        )

    def softmax(self, seed: int = 0) -> BaseQuantizer:
        """Post-Softmax (attention map) quantizer.

        Args:
            seed: Seed of the quantizer's calibration subsample.
        """
        if self.post_softmax == 'uniform':
            return self.act(seed=seed)  # a plain per-tensor activation quantizer
        kw = dict(max_samples=self.max_samples, seed=seed)
        if self.post_softmax == 'log_sqrt2':
            return LogSqrt2Quantizer(
                self.abits,
                percentiles=self.percentiles,
                max_samples=self.act_max_samples,
                seed=seed,
                percentile_mode=self.percentile_mode,
            )
        if self.post_softmax in ('tan', 'tan_symmetric'):
            symmetric = self.post_softmax == 'tan_symmetric'
            return TanQuantizer(self.abits, symmetric=symmetric, **kw, **self.tanq_search)
        raise ValueError(f'quant.post_softmax={self.post_softmax!r}; choose from {POST_SOFTMAX}')
