"""Architecture adapters: declare and swap in the quantization sites of a model.

An adapter is a function ``adapter(model, factory) -> QuantPlan``: it replaces the float
layers of ``model`` in place by quantized ones built with ``factory`` (a
:class:`~mmdopq.plan.QuantizerFactory`) and declares every site and LayerNorm pair in the
returned plan. Each model family has its own module; they import the host library (mmdet,
timm) and are loaded on first use. ``docs/adapters.md`` explains how to add one.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

from torch import nn

from ..plan import QuantizerFactory, QuantPlan
from ..utils.errors import ConfigError
from .common import TIMM_WRAPPER_ATTRS, defined_by_timm, unwrap_timm_model

Adapter = Callable[[nn.Module, QuantizerFactory], QuantPlan]


def adapt_timm_classifier(
    model: nn.Module, factory: QuantizerFactory, arch: Optional[str] = None
) -> QuantPlan:
    """Quantize a timm ViT/DeiT or Swin classifier, bare or wrapped.

    Args:
        model: A timm model, or a wrapper holding one as ``model`` or ``timm_model``
            (site names are then qualified with that attribute).
        factory: Quantizer factory of the model.
        arch: ``None`` to dispatch on the model's type, or ``'vit'`` / ``'swin'``
            to require that architecture.

    Returns:
        The plan of the ViT or Swin adapter.

    Raises:
        ConfigError: ``scope='backbone_neck'`` (a classifier has no neck).
        TypeError: The timm model is neither a VisionTransformer nor a
            SwinTransformer, or not the architecture ``arch`` asks for.
    """
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    timm_model, prefix = unwrap_timm_model(model)
    if factory.recipe.scope == 'backbone_neck':
        raise ConfigError(
            f"quant.scope='backbone_neck' is for detectors; {type(timm_model).__name__} is a "
            "classifier (no neck): use 'whole' or 'backbone'"
        )
    if arch not in (None, 'vit', 'swin'):
        raise ValueError(f"arch={arch!r}; choose from None, 'vit', 'swin'")
    if isinstance(timm_model, VisionTransformer) and arch in (None, 'vit'):
        from .timm_vit import adapt_timm_vit

        return adapt_timm_vit(timm_model, factory, prefix)
    if isinstance(timm_model, SwinTransformer) and arch in (None, 'swin'):
        from .timm_swin import adapt_timm_swin

        return adapt_timm_swin(timm_model, factory, prefix)
    wanted = {
        None: 'a timm VisionTransformer or SwinTransformer',
        'vit': 'a timm VisionTransformer',
        'swin': 'a timm SwinTransformer',
    }[arch]
    raise TypeError(
        f'{prefix or "model"}: expected {wanted}, got '
        f'{type(timm_model).__module__}.{type(timm_model).__name__}'
    )


def _mmdet_swin() -> Adapter:
    from .mmdet_swin import adapt_mmdet_detector

    return adapt_mmdet_detector


#: Adapter name -> loader (lazy: an adapter imports its host library). The timm
#: adapters take a timm model or a wrapper holding one (see ``TIMM_WRAPPER_ATTRS``);
#: ``'timm'`` dispatches on the architecture (ViT/DeiT or Swin).
ADAPTERS: dict[str, Callable[[], Adapter]] = {
    'mmdet_swin': _mmdet_swin,
    'timm': lambda: adapt_timm_classifier,
    'timm_vit': lambda: partial(adapt_timm_classifier, arch='vit'),
    'timm_swin': lambda: partial(adapt_timm_classifier, arch='swin'),
}


def get_adapter(name: str, model: nn.Module) -> Adapter:
    """Return the adapter called ``name``, or the one matching ``model`` for ``'auto'``.

    Args:
        name: A key of :data:`ADAPTERS`, or ``'auto'``.
        model: The float model (``'auto'`` inspects it).

    Raises:
        ValueError: Unknown name, or no adapter matches the model.
    """
    if name == 'auto':
        backbone = getattr(model, 'backbone', None)
        if defined_by_timm(unwrap_timm_model(model)[0]):
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
    'TIMM_WRAPPER_ATTRS',
    'Adapter',
    'adapt_timm_classifier',
    'get_adapter',
    'unwrap_timm_model',
]
