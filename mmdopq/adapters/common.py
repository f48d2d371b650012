"""Helpers shared by the adapters: type checks, naming, and declaring common sites.

Nothing here knows a model family as a whole; the family adapters (``mmdet_swin``,
``timm_vit``, ``timm_swin``) import from this module and never from each other.
"""

from __future__ import annotations

from torch import nn

from ..nn import QuantConv2d, QuantLinear, QuantModuleMixin
from ..plan import QuantizerFactory, QuantPlan

#: Attributes under which a classifier wrapper holds its timm model
#: (``model``: mmpretrain's ``TimmClassifier``).
TIMM_WRAPPER_ATTRS = ('model', 'timm_model')


def defined_by_timm(module: object) -> bool:
    """Whether ``module`` is an ``nn.Module`` whose class timm defines."""
    return isinstance(module, nn.Module) and type(module).__module__.split('.')[0] == 'timm'


def unwrap_timm_model(model: nn.Module) -> tuple[nn.Module, str]:
    """``(timm model, its qualified name)`` of a timm model or a wrapper holding one."""
    for attr in TIMM_WRAPPER_ATTRS:
        inner = getattr(model, attr, None)
        if defined_by_timm(inner):
            return inner, attr
    return model, ''


def qualified(prefix: str, name: str) -> str:
    """Join a module path to its owner's qualified name (``prefix`` may be empty)."""
    return f'{prefix}.{name}' if prefix else name


def check_type(module: object, expected: type, name: str) -> None:
    """Raise a ``TypeError`` naming ``name`` unless ``type(module) is expected``.

    Subclasses are rejected on purpose: they may change the forward whose
    maths the adapter mirrors.

    Args:
        module: The module found in the model.
        expected: The exact class the adapter supports.
        name: Qualified name of ``module``, for the message.

    Raises:
        TypeError: On any other class (with a hint when it is already quantized).
    """
    if type(module) is expected:
        return
    cls = type(module)
    hint = ''
    if isinstance(module, QuantModuleMixin) or cls.__name__.startswith('Quant'):
        hint = ' (already adapted? adapt a float model once)'
    raise TypeError(
        f'{name}: expected {expected.__module__}.{expected.__name__}, got '
        f'{cls.__module__}.{cls.__name__}: mmdopq cannot quantize it faithfully{hint}'
    )


def is_affine_layernorm(module: nn.Module) -> bool:
    """Whether ``module`` is a 1-D affine ``nn.LayerNorm`` (a foldable norm)."""
    return (
        isinstance(module, nn.LayerNorm)
        and module.elementwise_affine
        and len(module.normalized_shape) == 1
        and module.bias is not None
    )


def check_layernorm(module: nn.Module, name: str) -> None:
    """Raise a ``TypeError`` unless ``module`` can be reparameterized."""
    if not is_affine_layernorm(module):
        raise TypeError(
            f'{name}: expected an affine 1-D nn.LayerNorm (its consumers are '
            f'reparameterized), got {type(module).__module__}.'
            f'{type(module).__name__}'
        )


def quantize_patch_embed(
    proj: nn.Module, factory: QuantizerFactory, name: str, plan: QuantPlan
) -> QuantConv2d:
    """Declare a patch-embedding Conv2d (input at the recipe's ``patch_embed_abits``).

    Args:
        proj: The float ``nn.Conv2d``.
        factory: Quantizer factory of the model.
        name: Qualified name of ``proj``.
        plan: Plan the site is added to.

    Returns:
        The quantized layer to put in place of ``proj``.
    """
    check_type(proj, nn.Conv2d, name)
    return plan.add(
        name,
        QuantConv2d.from_float(proj, factory.weight(), factory.patch_embed_act()),
    )


def quantize_linear(
    linear: nn.Module, factory: QuantizerFactory, name: str, plan: QuantPlan, post_ln: bool = False
) -> QuantLinear:
    """Declare a plain ``nn.Linear`` site.

    Args:
        linear: The float layer.
        factory: Quantizer factory of the model.
        name: Qualified name of ``linear``.
        plan: Plan the site is added to.
        post_ln: The input is a LayerNorm output: per-channel input quantizer
            (folded to per tensor by reparameterization).

    Returns:
        The quantized layer to put in place of ``linear``.
    """
    check_type(linear, nn.Linear, name)
    act = factory.post_ln_act() if post_ln else factory.act()
    return plan.add(name, QuantLinear.from_float(linear, factory.weight(), act))


def check_mlp(mlp: nn.Module, name: str) -> None:
    """Raise a ``TypeError`` unless ``mlp`` is a timm ``Mlp`` the adapters support.

    Args:
        mlp: The module found in the block.
        name: Its qualified name, for the message.
    """
    from timm.layers import Mlp  # timm is needed only by the timm adapters

    check_type(mlp, Mlp, name)
    check_type(mlp.fc1, nn.Linear, f'{name}.fc1')
    check_type(mlp.fc2, nn.Linear, f'{name}.fc2')
    if not isinstance(mlp.norm, nn.Identity):
        check_layernorm(mlp.norm, f'{name}.norm')


def quantize_mlp(mlp: nn.Module, factory: QuantizerFactory, name: str, plan: QuantPlan) -> None:
    """Declare ``fc1`` (post-LN) and ``fc2`` of a timm ``Mlp`` in place.

    A LayerNorm ``mlp.norm`` between the activation and ``fc2`` is declared as
    the pair ``mlp.norm -> [fc2]``. The caller declares the pair of ``fc1``.

    Args:
        mlp: The timm ``Mlp``.
        factory: Quantizer factory of the model.
        name: Qualified name of ``mlp``.
        plan: Plan the sites are added to.

    Raises:
        TypeError: See :func:`check_mlp`.
    """
    check_mlp(mlp, name)
    mlp.fc1 = quantize_linear(mlp.fc1, factory, f'{name}.fc1', plan, post_ln=True)
    inner_norm = not isinstance(mlp.norm, nn.Identity)
    mlp.fc2 = quantize_linear(mlp.fc2, factory, f'{name}.fc2', plan, post_ln=inner_norm)
    if inner_norm:
        plan.add_pair(f'{name}.norm', mlp.norm, [f'{name}.fc2'])
