"""Architecture adapters: declare and swap in the quantization sites of a model."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from .quant_plan import COMPONENTS, NormPair, QuantPlan
from .quant_recipe import RECIPES, QuantRecipe, use_recipe

Adapter = Callable[[nn.Module, QuantRecipe], QuantPlan]


def _mmdet_swin() -> Adapter:
    from .mmdet_swin import adapt_mmdet_detector

    return adapt_mmdet_detector


def _timm() -> Adapter:
    from .timm_vit import adapt_timm_classifier

    return adapt_timm_classifier


def _timm_vit() -> Adapter:
    from .timm_vit import adapt_timm_classifier

    return partial(adapt_timm_classifier, arch='vit')


def _timm_swin() -> Adapter:
    from .timm_vit import adapt_timm_classifier

    return partial(adapt_timm_classifier, arch='swin')


#: Attributes under which a classifier wrapper holds its timm model
#: (``model``: mmpretrain's ``TimmClassifier``).
TIMM_WRAPPER_ATTRS = ('model', 'timm_model')


def _defined_by_timm(module: object) -> bool:
    return isinstance(module, nn.Module) and type(module).__module__.split('.')[0] == 'timm'


def unwrap_timm_model(model: nn.Module) -> tuple[nn.Module, str]:
    """``(timm model, its qualified name)`` of a timm model or a wrapper holding one."""
    for attr in TIMM_WRAPPER_ATTRS:
        inner = getattr(model, attr, None)
        if _defined_by_timm(inner):
            return inner, attr
    return model, ''


def _is_timm_model(model: nn.Module) -> bool:
    """A model defined by timm, or a wrapper holding one (see ``TIMM_WRAPPER_ATTRS``)."""
    return _defined_by_timm(unwrap_timm_model(model)[0])


#: Adapter name -> loader (lazy: an adapter imports its host library). The timm
#: adapters take a timm model or a wrapper holding one as ``timm_model``;
#: ``'timm'`` dispatches on the architecture (ViT/DeiT or Swin).
ADAPTERS: dict[str, Callable[[], Adapter]] = {
    'mmdet_swin': _mmdet_swin,
    'timm': _timm,
    'timm_vit': _timm_vit,
    'timm_swin': _timm_swin,
}


def get_adapter(name: str, model: nn.Module) -> Adapter:
    """Return the adapter called ``name``, or the one matching ``model`` for ``'auto'``."""
    if name == 'auto':
        backbone = getattr(model, 'backbone', None)
        if _is_timm_model(model):
            name = 'timm'
        elif backbone is not None and type(backbone).__module__.startswith('mmdet.'):
            name = 'mmdet_swin'
        else:
            raise ValueError(
                f'no adapter matches {type(model).__name__}; set `adapter` to one '
                f'of {sorted(ADAPTERS)}'
            )
    if name not in ADAPTERS:
        raise ValueError(f'unknown adapter {name!r}; choose from {sorted(ADAPTERS)}')
    return ADAPTERS[name]()


__all__ = [
    'ADAPTERS',
    'COMPONENTS',
    'RECIPES',
    'NormPair',
    'QuantPlan',
    'QuantRecipe',
    'get_adapter',
    'use_recipe',
]
