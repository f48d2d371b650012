"""Adapter for timm's ``SwinTransformer`` (Swin-T/S/B classifiers).

Every site of the protocol in docs/method.md is declared explicitly, walking the
module structure of timm 1.0.x (never matching names):

* patch embedding ``patch_embed.proj`` (Conv2d; input kept at
  the recipe's ``patch_embed_abits``);
* per stage ``layers.i``: the patch merging ``downsample.reduction`` (post-LN,
  pair ``downsample.norm``; in timm the merging opens the stage, i > 0, and
  its norm runs right before the reduction);
* per block: ``attn.qkv`` (post-LN, pair ``norm1``), the explicit ``q @ k^T``
  (``attn.qk_matmul``) and ``attn @ v`` (``attn.av_matmul``, the attention map
  through the recipe's post-Softmax quantizer), ``attn.proj``, ``mlp.fc1``
  (post-LN, pair ``norm2``) and ``mlp.fc2``;
* the classifier ``head.fc`` when ``factory.recipe.scope`` is ``'whole'``.

Two classes are swapped in (``__class__`` swap: parameters, buffers and
state-dict keys are kept; only ``input_offset`` is added):

* :class:`QuantWindowAttention` replaces timm's (possibly fused) window
  attention by its non-fused branch with the two matmuls as
  :class:`~mmdopq.nn.QuantMatMul` sites (relative position bias and shift
  mask as timm adds them);
* :class:`QuantSwinTransformerBlock` pads with the folded image of zero. timm's
  block rolls the *normalized* tokens, then zero-pads them to a multiple of the
  window before ``qkv``; the padded tokens take part in attention as keys and
  values (timm's shift mask does not exclude them). Once ``norm1`` is reparameterized a float
  0 of the old activation is ``attn.input_offset`` (per channel) in the new one,
  so the block pads with that vector instead. Real tokens are never touched, so
  float mode is bit-exact with timm whatever the offset.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import ClassifierHead, PatchEmbed
from timm.models.swin_transformer import (
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    SwinTransformerStage,
    WindowAttention,
    window_partition,
    window_reverse,
)
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


class QuantWindowAttention(WindowAttention):
    """timm ``WindowAttention`` with explicit, quantizable ``q @ k^T`` and ``attn @ v``.

    Created from a float instance by :meth:`convert`. The forward is timm
    1.0.x's non-fused branch, op for op. ``input_offset`` (per channel, zeros
    until ``norm1`` is reparameterized) is the value the owning
    :class:`QuantSwinTransformerBlock` pads the window grid with.
    """

    qk_matmul: QuantMatMul
    av_matmul: QuantMatMul
    input_offset: Tensor

    @classmethod
    def convert(cls, attn: WindowAttention, factory: QuantizerFactory) -> QuantWindowAttention:
        """Turn ``attn`` into a :class:`QuantWindowAttention` in place and return it.

        Args:
            attn: A timm ``WindowAttention`` (exact class).
            factory: Quantizer factory of the model: ``q``, ``k`` and ``v`` through
                ``factory.act()``, the attention map through ``factory.softmax()``
                calibrated with the recipe's ``softmax_objective``.

        Returns:
            The same object, now a :class:`QuantWindowAttention`.
        """
        attn.__class__ = cls
        attn.qk_matmul, attn.av_matmul = factory.attention_matmuls()
        dev = attn.relative_position_bias_table.device
        attn.register_buffer('input_offset', torch.zeros(attn.dim, device=dev))
        return attn

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Attention within windows.

        Args:
            x: Window tokens, shape ``[num_windows * B, N, C]``.
            mask: (0 / -100) shift mask, shape ``[num_windows, N, N]``, or None.

        Returns:
            Shape ``[num_windows * B, N, C]``.
        """
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = self.qk_matmul(q, k.transpose(-2, -1))
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.softmax(attn)
        attn = self.attn_drop(attn)
        x = self.av_matmul(attn, v)
        x = x.transpose(1, 2).reshape(B_, N, -1)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class QuantSwinTransformerBlock(SwinTransformerBlock):
    """timm ``SwinTransformerBlock`` that pads windows with ``attn.input_offset``.

    ``_attn`` mirrors timm 1.0.x (cyclic shift, pad to a multiple of the
    window, partition, window attention with the shift mask, merge, crop,
    reverse shift); only the padding value differs, and only once
    ``attn.input_offset`` is non-zero (after ``norm1`` is reparameterized).
    """

    attn: QuantWindowAttention

    @classmethod
    def convert(cls, block: SwinTransformerBlock) -> QuantSwinTransformerBlock:
        """Turn ``block`` into a :class:`QuantSwinTransformerBlock` in place.

        Args:
            block: A timm ``SwinTransformerBlock`` whose ``attn`` is already a
                :class:`QuantWindowAttention`.

        Returns:
            The same object.
        """
        if not isinstance(block.attn, QuantWindowAttention):
            raise TypeError('convert block.attn to QuantWindowAttention first')
        block.__class__ = cls
        return block

    def _pad(self, x: Tensor, pad_h: int, pad_w: int) -> Tensor:
        """Pad ``[B, H, W, C]`` at the bottom/right with the folded image of zero."""
        offset = self.attn.input_offset
        if not (pad_h or pad_w) or not bool(offset.any()):
            return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # timm's own op (a copy if no pad)
        B, H, W, C = x.shape
        out = offset.to(x.dtype).expand(B, H + pad_h, W + pad_w, C).clone()
        out[:, :H, :W, :] = x
        return out

    def _attn(self, x: Tensor) -> Tensor:
        """Shifted-window attention of normalized tokens ``[B, H, W, C]`` (timm's op order)."""
        B, H, W, C = x.shape

        # cyclic shift
        has_shift = any(self.shift_size)
        if has_shift:
            shifted_x = torch.roll(
                x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2)
            )
        else:
            shifted_x = x

        # pad for resolution not divisible by window size (with the folded zero)
        pad_h = (self.window_size[0] - H % self.window_size[0]) % self.window_size[0]
        pad_w = (self.window_size[1] - W % self.window_size[1]) % self.window_size[1]
        shifted_x = self._pad(shifted_x, pad_h, pad_w)
        _, Hp, Wp, _ = shifted_x.shape

        # partition windows
        x_windows = window_partition(shifted_x, self.window_size)
        x_windows = x_windows.view(-1, self.window_area, C)

        # W-MSA/SW-MSA
        if getattr(self, 'dynamic_mask', False):
            attn_mask = self.get_attn_mask(shifted_x)
        else:
            attn_mask = self.attn_mask
        attn_windows = self.attn(x_windows, mask=attn_mask)

        # merge windows
        attn_windows = attn_windows.view(-1, self.window_size[0], self.window_size[1], C)
        shifted_x = window_reverse(attn_windows, self.window_size, Hp, Wp)
        shifted_x = shifted_x[:, :H, :W, :].contiguous()

        # reverse cyclic shift
        if has_shift:
            x = torch.roll(shifted_x, shifts=self.shift_size, dims=(1, 2))
        else:
            x = shifted_x
        return x


def check_swin_block(block: nn.Module, name: str) -> None:
    """Raise a ``TypeError`` naming the module unless ``block`` is supported.

    Args:
        block: The block (timm ``SwinTransformerBlock`` with a timm
            ``WindowAttention``, a timm ``Mlp`` and affine LayerNorms).
        name: Its qualified name.
    """
    check_type(block, SwinTransformerBlock, name)
    check_type(block.attn, WindowAttention, f'{name}.attn')
    for child in ('qkv', 'proj'):
        check_type(getattr(block.attn, child), nn.Linear, f'{name}.attn.{child}')
    check_mlp(block.mlp, f'{name}.mlp')
    check_layernorm(block.norm1, f'{name}.norm1')
    check_layernorm(block.norm2, f'{name}.norm2')


def adapt_swin_block(
    block: nn.Module, factory: QuantizerFactory, name: str, plan: QuantPlan
) -> None:
    """Swap the quantization sites of one timm ``SwinTransformerBlock`` in place.

    Args:
        block: The block.
        factory: Quantizer factory of the model.
        name: Qualified name of ``block``.
        plan: Plan the sites and pairs are added to.

    Raises:
        TypeError: See :func:`check_swin_block`.
    """
    check_swin_block(block, name)
    p = f'{name}.attn'
    attn = block.attn
    attn.qkv = quantize_linear(attn.qkv, factory, f'{p}.qkv', plan, post_ln=True)
    QuantWindowAttention.convert(attn, factory)
    QuantSwinTransformerBlock.convert(block)
    plan.add(f'{p}.qk_matmul', attn.qk_matmul)
    plan.add(f'{p}.av_matmul', attn.av_matmul)
    plan.post_softmax_sites.append(f'{p}.av_matmul')
    attn.proj = quantize_linear(attn.proj, factory, f'{p}.proj', plan)
    plan.add_pair(f'{name}.norm1', block.norm1, [f'{p}.qkv'], zero_image_owner=attn)
    quantize_mlp(block.mlp, factory, f'{name}.mlp', plan)
    plan.add_pair(f'{name}.norm2', block.norm2, [f'{name}.mlp.fc1'])


def check_timm_swin(model: nn.Module, factory: QuantizerFactory, prefix: str = '') -> None:
    """Raise a ``TypeError`` naming the module unless ``model`` is fully supported.

    Args:
        model: The float model.
        factory: Quantizer factory (its recipe's scope decides whether the head is checked).
        prefix: Qualified name of ``model``.
    """
    check_type(model, SwinTransformer, prefix or 'model')
    pe = model.patch_embed
    check_type(pe, PatchEmbed, qualified(prefix, 'patch_embed'))
    check_type(pe.proj, nn.Conv2d, qualified(prefix, 'patch_embed.proj'))
    for i, stage in enumerate(model.layers):
        sp = qualified(prefix, f'layers.{i}')
        check_type(stage, SwinTransformerStage, sp)
        ds = stage.downsample
        if not isinstance(ds, nn.Identity):
            check_type(ds, PatchMerging, f'{sp}.downsample')
            check_layernorm(ds.norm, f'{sp}.downsample.norm')
            check_type(ds.reduction, nn.Linear, f'{sp}.downsample.reduction')
        for j, block in enumerate(stage.blocks):
            check_swin_block(block, f'{sp}.blocks.{j}')
    if factory.recipe.scope == 'whole':
        check_type(model.head, ClassifierHead, qualified(prefix, 'head'))
        if not isinstance(model.head.fc, nn.Identity):
            check_type(model.head.fc, nn.Linear, qualified(prefix, 'head.fc'))


def adapt_timm_swin(
    model: SwinTransformer, factory: QuantizerFactory, prefix: str = ''
) -> QuantPlan:
    """Swap the quantization sites of a timm ``SwinTransformer`` in place.

    Args:
        model: The float model (not yet adapted).
        recipe: Quantizer factory; ``factory.recipe.scope == 'whole'`` also quantizes
            ``head.fc``, ``'backbone'`` keeps it float.
        prefix: Qualified name of ``model`` in the module the plan's site names
            refer to (e.g. ``'timm_model'`` for a wrapper); ``''`` for the model.

    Returns:
        The plan declaring every site, post-Softmax site and LayerNorm pair
        (``norm1`` pairs carry the attention as ``zero_image_owner``).

    Raises:
        TypeError: On an unsupported model or sub-module (named in the message).
    """
    check_timm_swin(model, factory, prefix)  # a rejected model is left untouched
    plan = QuantPlan(factory)
    pe = model.patch_embed
    pe.proj = quantize_patch_embed(pe.proj, factory, qualified(prefix, 'patch_embed.proj'), plan)
    plan.add_unit(qualified(prefix, 'patch_embed'), pe)
    for i, stage in enumerate(model.layers):
        sp = qualified(prefix, f'layers.{i}')
        ds = stage.downsample
        if not isinstance(ds, nn.Identity):
            # PatchMerging pads its input *before* the norm: a zero there is a raw zero.
            ds.reduction = quantize_linear(
                ds.reduction, factory, f'{sp}.downsample.reduction', plan, post_ln=True
            )
            plan.add_pair(f'{sp}.downsample.norm', ds.norm, [f'{sp}.downsample.reduction'])
            plan.add_unit(f'{sp}.downsample', ds)
        for j, block in enumerate(stage.blocks):
            adapt_swin_block(block, factory, f'{sp}.blocks.{j}', plan)
            plan.add_unit(f'{sp}.blocks.{j}', block)
    if factory.recipe.scope == 'whole' and not isinstance(model.head.fc, nn.Identity):
        head = model.head
        head.fc = quantize_linear(head.fc, factory, qualified(prefix, 'head.fc'), plan)
        plan.add_unit(qualified(prefix, 'head'), head)  # global pool + fc
    return plan
