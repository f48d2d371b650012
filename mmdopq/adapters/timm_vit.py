"""Adapter for timm's ``VisionTransformer`` (ViT-S/B, DeiT-T/S/B, DeiT distilled).

Every site of the protocol in docs/method.md is declared explicitly, walking the
module structure of timm 1.0.x (never matching names):

* patch embedding ``patch_embed.proj`` (Conv2d; input kept at
  the recipe's ``patch_embed_abits``, 8 bits by protocol);
* per block: ``attn.qkv`` (post-LN, pair ``norm1``), the explicit ``q @ k^T``
  (``attn.qk_matmul``) and ``attn @ v`` (``attn.av_matmul``, the attention map
  through the recipe's post-Softmax quantizer), ``attn.proj``, ``mlp.fc1``
  (post-LN, pair ``norm2``) and ``mlp.fc2``;
* the classifier ``head`` (and DeiT's ``head_dist``) when ``factory.recipe.scope`` is
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

:func:`mmdopq.adapters.adapt_timm_classifier` dispatches a timm model (or a wrapper
holding one) to this adapter or to the Swin one.
"""

from __future__ import annotations

from typing import Optional

from timm.layers import Attention, PatchEmbed, maybe_add_mask, resolve_self_attn_mask
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from ..nn import QuantMatMul
from ..plan import QuantizerFactory, QuantPlan
from .common import (
    check_layernorm,
    check_mlp,
    check_type,
    qualified,
    quantize_linear,
    quantize_mlp,
    quantize_patch_embed,
)


class QuantAttention(Attention):
    """timm ``Attention`` with explicit, quantizable ``q @ k^T`` and ``attn @ v``.

    Created from a float instance by :meth:`convert` (no new parameters, two
    new child modules holding only quantizer buffers). The forward is timm
    1.0.x's non-fused branch, op for op.
    """

    qk_matmul: QuantMatMul
    av_matmul: QuantMatMul

    @classmethod
    def convert(cls, attn: Attention, factory: QuantizerFactory) -> QuantAttention:
        """Turn ``attn`` into a :class:`QuantAttention` in place and return it.

        Args:
            attn: A timm ``Attention`` (exact class).
            factory: Quantizer factory of the model: ``q``, ``k`` and ``v`` through
                ``factory.act()``, the attention map through ``factory.softmax()``
                calibrated with the recipe's ``softmax_objective``.

        Returns:
            The same object, now a :class:`QuantAttention`.
        """
        attn.__class__ = cls
        attn.qk_matmul, attn.av_matmul = factory.attention_matmuls()
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


def adapt_vit_block(
    block: nn.Module, factory: QuantizerFactory, name: str, plan: QuantPlan
) -> None:
    """Swap the quantization sites of one timm ``Block`` in place.

    Args:
        block: The block.
        factory: Quantizer factory of the model.
        name: Qualified name of ``block``.
        plan: Plan the sites and pairs are added to.

    Raises:
        TypeError: See :func:`check_vit_block`.
    """
    check_vit_block(block, name)
    attn = block.attn
    scale_norm = not isinstance(attn.norm, nn.Identity)
    p = f'{name}.attn'
    attn.qkv = quantize_linear(attn.qkv, factory, f'{p}.qkv', plan, post_ln=True)
    norm1_consumers = [f'{p}.qkv']
    if attn.gate is not None:
        attn.gate = quantize_linear(attn.gate, factory, f'{p}.gate', plan, post_ln=True)
        norm1_consumers.append(f'{p}.gate')
    QuantAttention.convert(attn, factory)
    plan.add(f'{p}.qk_matmul', attn.qk_matmul)
    plan.add(f'{p}.av_matmul', attn.av_matmul)
    plan.post_softmax_sites.append(f'{p}.av_matmul')
    attn.proj = quantize_linear(attn.proj, factory, f'{p}.proj', plan, post_ln=scale_norm)
    if scale_norm:
        plan.add_pair(f'{p}.norm', attn.norm, [f'{p}.proj'])
    plan.add_pair(f'{name}.norm1', block.norm1, norm1_consumers)
    quantize_mlp(block.mlp, factory, f'{name}.mlp', plan)
    plan.add_pair(f'{name}.norm2', block.norm2, [f'{name}.mlp.fc1'])


def adapt_timm_vit(
    model: VisionTransformer, factory: QuantizerFactory, prefix: str = ''
) -> QuantPlan:
    """Swap the quantization sites of a timm ``VisionTransformer`` in place.

    Also handles ``VisionTransformerDistilled`` (DeiT with a distillation
    token): ``head_dist`` is quantized with ``head``.

    Args:
        model: The float model (not yet adapted).
        recipe: Quantizer factory; ``factory.recipe.scope == 'whole'`` also quantizes
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
    if factory.recipe.scope == 'whole':
        names = ['head', 'head_dist'] if isinstance(model, VisionTransformerDistilled) else ['head']
        heads = [h for h in names if not isinstance(getattr(model, h), nn.Identity)]
        for attr in heads:  # (Identity: num_classes=0, a feature extractor)
            check_type(getattr(model, attr), nn.Linear, qualified(prefix, attr))

    plan = QuantPlan(factory)
    pe.proj = quantize_patch_embed(pe.proj, factory, qualified(prefix, 'patch_embed.proj'), plan)
    plan.add_unit(qualified(prefix, 'patch_embed'), pe)
    for i, block in enumerate(model.blocks):
        adapt_vit_block(block, factory, qualified(prefix, f'blocks.{i}'), plan)
        plan.add_unit(qualified(prefix, f'blocks.{i}'), block)
    for attr in heads:
        head = getattr(model, attr)
        setattr(model, attr, quantize_linear(head, factory, qualified(prefix, attr), plan))
        plan.add_unit(qualified(prefix, attr), getattr(model, attr))
    return plan
