"""Adapter for timm's ``VisionTransformer`` (ViT-S/B, DeiT-T/S/B, DeiT distilled).

Every site of the protocol in METHOD.md is declared explicitly, walking the
module structure of timm 1.0.x (never matching names):

* patch embedding ``patch_embed.proj`` (Conv2d; input kept at
  ``recipe.patch_embed_abits``, 8 bits by protocol);
* per block: ``attn.qkv`` (post-LN, pair ``norm1``), the explicit ``q @ k^T``
  (``attn.qk_matmul``) and ``attn @ v`` (``attn.av_matmul``, the attention map
  through the recipe's post-Softmax quantizer), ``attn.proj``, ``mlp.fc1``
  (post-LN, pair ``norm2``) and ``mlp.fc2``;
* the classifier ``head`` (and DeiT's ``head_dist``) when ``recipe.scope`` is
  ``'whole'``; ``'backbone'`` leaves them float.

timm's ``Attention`` normally runs ``F.scaled_dot_product_attention``, which
hides the softmax. Each instance gets the subclass :class:`QuantAttention`
(``__class__`` swap: parameters, buffers and state-dict keys are unchanged)
whose forward is timm's non-fused branch with the two matmuls as
:class:`~mmdopq.nn.QuantMatMul` sites. In float mode it equals timm with
``fused_attn=False`` bit for bit.

Optional parts of timm's block are handled where the maths stays exact: a
gated attention's ``gate`` Linear is a second consumer of ``norm1``; a
LayerNorm ``attn.norm`` (``scale_attn_norm``) pairs with ``attn.proj`` and a
LayerNorm ``mlp.norm`` (``scale_mlp_norm``) with ``mlp.fc2``. Anything else
(other block, attention or MLP classes, attention pooling heads, non-LayerNorm
norms) is rejected with a ``TypeError`` naming the module.

:func:`adapt_timm_classifier` is the entry used by ``get_adapter``: it accepts
a timm model or a wrapper holding one (``model`` or ``timm_model``) and dispatches to the
ViT or the Swin adapter.
"""

from __future__ import annotations

from typing import Optional

from timm.layers import Attention, Mlp, PatchEmbed, maybe_add_mask, resolve_self_attn_mask
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from ..nn import QuantConv2d, QuantLinear, QuantMatMul, QuantModuleMixin
from . import unwrap_timm_model
from .quant_plan import QuantPlan
from .quant_recipe import QuantRecipe

#: Attribute under which a classifier wrapper holds its timm model.


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
    proj: nn.Module, recipe: QuantRecipe, name: str, plan: QuantPlan
) -> QuantConv2d:
    """Declare a patch-embedding Conv2d (input at ``recipe.patch_embed_abits``).

    Args:
        proj: The float ``nn.Conv2d``.
        recipe: Quantizer factory.
        name: Qualified name of ``proj``.
        plan: Plan the site is added to.

    Returns:
        The quantized layer to put in place of ``proj``.
    """
    check_type(proj, nn.Conv2d, name)
    return plan.add(
        name,
        QuantConv2d.from_float(proj, recipe.weight(), recipe.act(bits=recipe.patch_embed_abits)),
    )


def quantize_linear(
    linear: nn.Module, recipe: QuantRecipe, name: str, plan: QuantPlan, post_ln: bool = False
) -> QuantLinear:
    """Declare a plain ``nn.Linear`` site.

    Args:
        linear: The float layer.
        recipe: Quantizer factory.
        name: Qualified name of ``linear``.
        plan: Plan the site is added to.
        post_ln: The input is a LayerNorm output: per-channel input quantizer
            (folded to per tensor by reparameterization).

    Returns:
        The quantized layer to put in place of ``linear``.
    """
    check_type(linear, nn.Linear, name)
    act = recipe.post_ln_act() if post_ln else recipe.act()
    return plan.add(name, QuantLinear.from_float(linear, recipe.weight(), act))


def check_mlp(mlp: nn.Module, name: str) -> None:
    """Raise a ``TypeError`` unless ``mlp`` is a timm ``Mlp`` the adapters support.

    Args:
        mlp: The module found in the block.
        name: Its qualified name, for the message.
    """
    check_type(mlp, Mlp, name)
    check_type(mlp.fc1, nn.Linear, f'{name}.fc1')
    check_type(mlp.fc2, nn.Linear, f'{name}.fc2')
    if not isinstance(mlp.norm, nn.Identity):
        check_layernorm(mlp.norm, f'{name}.norm')


def quantize_mlp(mlp: nn.Module, recipe: QuantRecipe, name: str, plan: QuantPlan) -> None:
    """Declare ``fc1`` (post-LN) and ``fc2`` of a timm ``Mlp`` in place.

    A LayerNorm ``mlp.norm`` between the activation and ``fc2`` is declared as
    the pair ``mlp.norm -> [fc2]``. The caller declares the pair of ``fc1``.

    Args:
        mlp: The timm ``Mlp``.
        recipe: Quantizer factory.
        name: Qualified name of ``mlp``.
        plan: Plan the sites are added to.

    Raises:
        TypeError: See :func:`check_mlp`.
    """
    check_mlp(mlp, name)
    mlp.fc1 = quantize_linear(mlp.fc1, recipe, f'{name}.fc1', plan, post_ln=True)
    inner_norm = not isinstance(mlp.norm, nn.Identity)
    mlp.fc2 = quantize_linear(mlp.fc2, recipe, f'{name}.fc2', plan, post_ln=inner_norm)
    if inner_norm:
        plan.add_pair(f'{name}.norm', mlp.norm, [f'{name}.fc2'])


class QuantAttention(Attention):
    """timm ``Attention`` with explicit, quantizable ``q @ k^T`` and ``attn @ v``.

    Created from a float instance by :meth:`convert` (no new parameters, two
    new child modules holding only quantizer buffers). The forward is timm
    1.0.x's non-fused branch, op for op.
    """

    qk_matmul: QuantMatMul
    av_matmul: QuantMatMul

    @classmethod
    def convert(cls, attn: Attention, recipe: QuantRecipe) -> QuantAttention:
        """Turn ``attn`` into a :class:`QuantAttention` in place and return it.

        Args:
            attn: A timm ``Attention`` (exact class).
            recipe: Quantizer factory: ``q``, ``k`` and ``v`` through
                ``recipe.act()``, the attention map through ``recipe.softmax()``
                calibrated with ``recipe.softmax_objective``.

        Returns:
            The same object, now a :class:`QuantAttention`.
        """
        attn.__class__ = cls
        attn.qk_matmul, attn.av_matmul = recipe.attention_matmuls()
        return attn

    def forward(
        self, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False
    ) -> Tensor:
        """Self-attention over ``x`` of shape ``[B, N, C]`` (timm's signature)."""
        B, N, C = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = self.qk_matmul(q, k.transpose(-2, -1))
        attn_bias = resolve_self_attn_mask(N, attn, attn_mask, is_causal)
        attn = maybe_add_mask(attn, attn_bias)
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = self.av_matmul(attn, v)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


def check_vit_block(block: nn.Module, name: str) -> None:
    """Raise a ``TypeError`` naming the module unless ``block`` is supported.

    Supported: timm ``Block`` with a timm ``Attention`` (optionally with
    ``qk_norm``, a LayerNorm ``scale_norm`` or a ``gate``, not both of the
    latter) and a timm ``Mlp``, all norms affine LayerNorms.

    Args:
        block: The block.
        name: Its qualified name.
    """
    check_type(block, Block, name)
    check_layernorm(block.norm1, f'{name}.norm1')
    check_layernorm(block.norm2, f'{name}.norm2')
    attn = block.attn
    check_type(attn, Attention, f'{name}.attn')
    for child in ('qkv', 'proj'):
        check_type(getattr(attn, child), nn.Linear, f'{name}.attn.{child}')
    if attn.gate is not None:
        check_type(attn.gate, nn.Linear, f'{name}.attn.gate')
    if not isinstance(attn.norm, nn.Identity):
        check_layernorm(attn.norm, f'{name}.attn.norm')
        if attn.gate is not None:
            raise TypeError(
                f'{name}.attn: a gated attention with scale_norm multiplies the '
                'norm output by the gate before proj; it cannot be reparameterized'
            )
    check_mlp(block.mlp, f'{name}.mlp')


def adapt_vit_block(block: nn.Module, recipe: QuantRecipe, name: str, plan: QuantPlan) -> None:
    """Swap the quantization sites of one timm ``Block`` in place.

    Args:
        block: The block.
        recipe: Quantizer factory.
        name: Qualified name of ``block``.
        plan: Plan the sites and pairs are added to.

    Raises:
        TypeError: See :func:`check_vit_block`.
    """
    check_vit_block(block, name)
    attn = block.attn
    scale_norm = not isinstance(attn.norm, nn.Identity)
    p = f'{name}.attn'
    attn.qkv = quantize_linear(attn.qkv, recipe, f'{p}.qkv', plan, post_ln=True)
    norm1_consumers = [f'{p}.qkv']
    if attn.gate is not None:
        attn.gate = quantize_linear(attn.gate, recipe, f'{p}.gate', plan, post_ln=True)
        norm1_consumers.append(f'{p}.gate')
    QuantAttention.convert(attn, recipe)
    plan.add(f'{p}.qk_matmul', attn.qk_matmul)
    plan.add(f'{p}.av_matmul', attn.av_matmul)
    plan.post_softmax_sites.append(f'{p}.av_matmul')
    attn.proj = quantize_linear(attn.proj, recipe, f'{p}.proj', plan, post_ln=scale_norm)
    if scale_norm:
        plan.add_pair(f'{p}.norm', attn.norm, [f'{p}.proj'])
    plan.add_pair(f'{name}.norm1', block.norm1, norm1_consumers)
    quantize_mlp(block.mlp, recipe, f'{name}.mlp', plan)
    plan.add_pair(f'{name}.norm2', block.norm2, [f'{name}.mlp.fc1'])


def adapt_timm_vit(model: VisionTransformer, recipe: QuantRecipe, prefix: str = '') -> QuantPlan:
    """Swap the quantization sites of a timm ``VisionTransformer`` in place.

    Also handles ``VisionTransformerDistilled`` (DeiT with a distillation
    token): ``head_dist`` is quantized with ``head``.

    Args:
        model: The float model (not yet adapted).
        recipe: Quantizer factory; ``recipe.scope == 'whole'`` also quantizes
            the classifier head(s), ``'backbone'`` keeps them float.
        prefix: Qualified name of ``model`` in the module the plan's site names
            refer to (e.g. ``'timm_model'`` for a wrapper); ``''`` for the model.

    Returns:
        The plan declaring every site, post-Softmax site and LayerNorm pair.

    Raises:
        TypeError: On an unsupported model or sub-module (named in the message).
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f'{prefix or "model"}: expected timm VisionTransformer, got '
            f'{type(model).__module__}.{type(model).__name__}'
        )
    if type(model) not in (VisionTransformer, VisionTransformerDistilled):
        raise TypeError(
            f'{prefix or "model"}: {type(model).__name__} subclasses timm '
            'VisionTransformer; only VisionTransformer and '
            'VisionTransformerDistilled are supported'
        )
    if model.attn_pool is not None:
        raise TypeError(
            f'{qualified(prefix, "attn_pool")}: attention pooling heads '
            f'(global_pool={model.global_pool!r}) are not supported'
        )
    # Validate the whole model first: a rejected model is left untouched.
    pe = model.patch_embed
    check_type(pe, PatchEmbed, qualified(prefix, 'patch_embed'))  # not e.g. a hybrid CNN stem
    check_type(pe.proj, nn.Conv2d, qualified(prefix, 'patch_embed.proj'))
    for i, block in enumerate(model.blocks):
        check_vit_block(block, qualified(prefix, f'blocks.{i}'))
    heads = []
    if recipe.scope == 'whole':
        names = ['head', 'head_dist'] if isinstance(model, VisionTransformerDistilled) else ['head']
        heads = [h for h in names if not isinstance(getattr(model, h), nn.Identity)]
        for attr in heads:  # (Identity: num_classes=0, a feature extractor)
            check_type(getattr(model, attr), nn.Linear, qualified(prefix, attr))

    plan = QuantPlan(recipe)
    pe.proj = quantize_patch_embed(pe.proj, recipe, qualified(prefix, 'patch_embed.proj'), plan)
    for i, block in enumerate(model.blocks):
        adapt_vit_block(block, recipe, qualified(prefix, f'blocks.{i}'), plan)
    for attr in heads:
        head = getattr(model, attr)
        setattr(model, attr, quantize_linear(head, recipe, qualified(prefix, attr), plan))
    return plan


def adapt_timm_classifier(
    model: nn.Module, recipe: QuantRecipe, arch: Optional[str] = None
) -> QuantPlan:
    """Quantize a timm ViT/DeiT or Swin classifier, bare or wrapped.

    Args:
        model: A timm model, or a wrapper holding one (``model`` or ``timm_model``) (site
            names are then qualified with ``'timm_model.'``).
        recipe: Quantizer factory.
        arch: ``None`` to dispatch on the model's type, or ``'vit'`` / ``'swin'``
            to require that architecture.

    Returns:
        The plan of the ViT or Swin adapter.

    Raises:
        TypeError: The timm model is neither a VisionTransformer nor a
            SwinTransformer, or not the architecture ``arch`` asks for.
    """
    from timm.models.swin_transformer import SwinTransformer

    timm_model, prefix = unwrap_timm_model(model)
    if arch not in (None, 'vit', 'swin'):
        raise ValueError(f"arch={arch!r}; choose from None, 'vit', 'swin'")
    if isinstance(timm_model, VisionTransformer) and arch in (None, 'vit'):
        return adapt_timm_vit(timm_model, recipe, prefix)
    if isinstance(timm_model, SwinTransformer) and arch in (None, 'swin'):
        from .timm_swin import adapt_timm_swin

        return adapt_timm_swin(timm_model, recipe, prefix)
    wanted = {
        None: 'a timm VisionTransformer or SwinTransformer',
        'vit': 'a timm VisionTransformer',
        'swin': 'a timm SwinTransformer',
    }[arch]
    raise TypeError(
        f'{prefix or "model"}: expected {wanted}, got '
        f'{type(timm_model).__module__}.{type(timm_model).__name__}'
    )
