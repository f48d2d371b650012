"""Quantize every ``Conv2d`` / ``Linear`` of a sub-module (necks and heads)."""

from __future__ import annotations

from torch import nn

from ..nn import QuantConv2d, QuantLinear, QuantModuleMixin
from ..plan import QuantizerFactory, QuantPlan


def _supported(module: nn.Module, base: type) -> bool:
    """Plain torch layer, or a thin wrapper that only adds empty-tensor handling."""
    cls = type(module)
    if cls is base:
        return True
    # mmcv.cnn.bricks.wrappers.{Conv2d,Linear}: same maths, empty-batch support.
    return cls.__name__ == base.__name__ and cls.__module__.startswith('mmcv.cnn.bricks.wrappers')


def quantize_linear_layers(root: nn.Module, factory: QuantizerFactory, prefix: str) -> QuantPlan:
    """Replace every ``nn.Conv2d`` and ``nn.Linear`` under ``root`` by its quantized form.

    ``nn.ConvTranspose2d`` (mask upsampling) is not a Conv2d and stays float, as
    do norms, activations and RoI ops. Any other *subclass* of Conv2d/Linear
    (deformable convs, ...) is rejected with a clear error rather than silently
    skipped or quantized with the wrong maths.

    Args:
        root: Module to walk (e.g. the neck or a RoI head).
        factory: Quantizer factory of the model.
        prefix: Qualified name of ``root`` in the model.

    Returns:
        A plan declaring each replaced layer as a site.
    """
    plan = QuantPlan(factory)
    for parent_name, parent in list(root.named_modules()):
        if isinstance(parent, QuantModuleMixin):
            continue
        for child_name, child in list(parent.named_children()):
            name = '.'.join(p for p in (prefix, parent_name, child_name) if p)
            if isinstance(child, QuantModuleMixin):
                continue
            if isinstance(child, nn.Conv2d):
                if not _supported(child, nn.Conv2d):
                    raise TypeError(
                        f'{name}: {type(child).__module__}.{type(child).__name__} is '
                        'a Conv2d subclass mmdopq cannot quantize faithfully'
                    )
                new = QuantConv2d.from_float(child, factory.weight(), factory.act())
            elif isinstance(child, nn.Linear):
                if not _supported(child, nn.Linear):
                    raise TypeError(
                        f'{name}: {type(child).__module__}.{type(child).__name__} is '
                        'a Linear subclass mmdopq cannot quantize faithfully'
                    )
                new = QuantLinear.from_float(child, factory.weight(), factory.act())
            else:
                continue
            setattr(parent, child_name, plan.add(name, new))
    return plan
