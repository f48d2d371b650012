"""``mmdopq.QuantizedModel``: build a float model and make it quantizable in place."""

from __future__ import annotations

import copy
from typing import Any, Optional

from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from torch import nn

from ..calibrate import prepare
from ..plan import QuantPlan
from ..recipe import QuantRecipe
from ..registry import MODELS

_CLASS_CACHE: dict[type, type] = {}


@MODELS.register_module()
class QuantizedModel:
    """A float model (any mmdet detector, or a classifier) with quantization sites.

    ``QuantizedModel(architecture=..., quant=...)`` builds ``architecture`` in
    the host scope, lets the matching adapter swap in quantized layers (float
    mode: bit-exact with the original), and returns **the model itself**, its
    class swapped for a subclass of both its own class and ``QuantizedModel``.
    So the state dict keeps the float keys (plus quantizer buffers), float and
    quantized checkpoints load with stock mmengine tools, and ``predict``,
    ``loss``, ``data_preprocessor`` and mmdet's visualisation behave as the
    detector's; ``isinstance(model, QuantizedModel)`` identifies it.

    Args:
        architecture: Config of the float model (e.g. ``MaskRCNN``).
        quant: The quantization config (see :class:`~mmdopq.recipe.QuantRecipe`).
        data_preprocessor: Overrides ``architecture.data_preprocessor`` if given.
        init_cfg: Overrides ``architecture.init_cfg`` if given.
        adapter: Adapter name, or ``'auto'`` to pick one from the model.
        scope: Registry scope the architecture is built in; ``None`` (default): the config's
            ``default_scope`` (the scope in force when the model is built), else ``'mmdet'``.

    Attributes (of the returned model):
        quant_plan (QuantPlan): Declared sites, LayerNorm pairs, calibration steps.
        quant_recipe (QuantRecipe): Resolved quantization settings.
        quant_state_keys (set[str]): State-dict keys the quantization added.
    """

    quant_plan: QuantPlan
    quant_recipe: QuantRecipe
    quant_state_keys: set

    def __new__(
        cls,
        architecture: dict,
        quant: dict,
        data_preprocessor: Optional[dict] = None,
        init_cfg: Optional[Any] = None,
        adapter: str = 'auto',
        scope: Optional[str] = None,
    ) -> nn.Module:
        if not isinstance(architecture, dict) or 'type' not in architecture:
            raise ValueError('QuantizedModel needs `architecture`, a model config with a type')
        recipe = QuantRecipe.from_cfg(quant)
        arch = copy.deepcopy(dict(architecture))
        if data_preprocessor is not None:
            arch['data_preprocessor'] = data_preprocessor
        if init_cfg is not None:
            arch['init_cfg'] = init_cfg
        if scope is None:
            current = DefaultScope.get_current_instance()
            # an mmdopq-scoped base (`mmdopq::`) marks its dicts with scope mmdopq: not a host
            scope = current.scope_name if current and current.scope_name != 'mmdopq' else 'mmdet'
        with DefaultScope.overwrite_default_scope(scope):
            model = ROOT_MODELS.build(arch)
        prepare(model, recipe, adapter=adapter)
        model.__class__ = _quantized_class(type(model))
        return model

    def __init__(self, *args, **kwargs) -> None:
        # The instance was fully built by __new__ (Python calls __init__ on it).
        pass

    @property
    def is_quant_calibrated(self) -> bool:
        """True when every declared quantization site holds calibrated parameters."""
        return self.quant_plan.is_calibrated


def _quantized_class(base: type) -> type:
    """``Quantized<Base>``: a subclass of ``QuantizedModel`` and ``base`` (cached)."""
    if issubclass(base, QuantizedModel):
        return base
    if base not in _CLASS_CACHE:
        name = f'Quantized{base.__name__}'
        cls = type(
            name,
            (QuantizedModel, base),
            {
                '__module__': __name__,
                '__qualname__': name,
                '__doc__': base.__doc__,
                # copy/pickle re-create instances with cls.__new__(cls): plain allocation.
                '__new__': _allocate,
            },
        )
        _CLASS_CACHE[base] = cls
        globals().setdefault(name, cls)  # importable by name, so the model pickles
    return _CLASS_CACHE[base]


def _allocate(cls, *args, **kwargs):
    return object.__new__(cls)
