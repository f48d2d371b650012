"""Adapter for ``mmdet.models.backbones.SwinTransformer`` and mmdet detector heads.

Every site of the protocol in docs/method.md is declared explicitly, walking the
module structure of mmdet's Swin (never matching names):

* patch embedding ``patch_embed.projection`` (Conv2d; input kept at 8 bits);
* per block: ``attn.w_msa.qkv`` (post-LN, pair ``norm1``), the explicit
  ``q @ k^T`` and ``attn @ v`` matmuls (the attention map through the recipe's
  post-Softmax quantizer), ``attn.w_msa.proj``, ``ffn.layers.0.0`` (fc1,
  post-LN, pair ``norm2``) and ``ffn.layers.1`` (fc2);
* per patch merging: ``downsample.reduction`` (post-LN, pair ``downsample.norm``).

``WindowMSA`` and ``ShiftWindowMSA`` instances get a subclass that keeps their
parameters and buffers (so state-dict keys do not change) and only changes
``forward``: explicit matmul sites, and padding with the folded image of zero
once ``norm1`` has been reparameterized (Swin pads *after* the norm).
"""

from __future__ import annotations

import torch
from mmdet.models.backbones.swin import ShiftWindowMSA, SwinTransformer, WindowMSA
from mmdet.models.layers.transformer.utils import PatchEmbed, PatchMerging
from torch import Tensor, nn

from ..nn import QuantConv2d, QuantLinear, QuantMatMul
from ..plan import QuantizerFactory, QuantPlan, RoiSource
from .torch_layers import quantize_linear_layers


class QuantWindowMSA(WindowMSA):
    """mmdet ``WindowMSA`` with explicit, quantizable ``q @ k^T`` and ``attn @ v``.

    Created from a float instance by :func:`QuantWindowMSA.convert` (no new
    parameters). ``input_offset`` is added to the input tokens; it is non-zero
    only after reparameterization, see :class:`QuantShiftWindowMSA`.
    """

    qk_matmul: QuantMatMul
    av_matmul: QuantMatMul
    input_offset: Tensor

    @classmethod
    def convert(cls, msa: WindowMSA, factory: QuantizerFactory) -> QuantWindowMSA:
        msa.__class__ = cls
        msa.qk_matmul, msa.av_matmul = factory.attention_matmuls()
        msa.register_buffer('input_offset', torch.zeros(msa.embed_dims))
        return msa

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.input_offset.any():
            x = x + self.input_offset
        n_win, n_tok, ch = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(n_win, n_tok, 3, heads, ch // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = self.qk_matmul(q * self.scale, k.transpose(-2, -1))
        wh, ww = self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(wh * ww, wh * ww, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            groups = mask.shape[0]
            attn = attn.view(n_win // groups, groups, heads, n_tok, n_tok)
            attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n_tok, n_tok)
        attn = self.attn_drop(self.softmax(attn))
        x = self.av_matmul(attn, v).transpose(1, 2).reshape(n_win, n_tok, ch)
        return self.proj_drop(self.proj(x))


class QuantShiftWindowMSA(ShiftWindowMSA):
    """mmdet ``ShiftWindowMSA`` that pads with the folded image of zero.

    mmdet zero-pads the *normalized* tokens to a multiple of the window. After
    ``norm1`` is reparameterized a float 0 is represented by
    ``w_msa.input_offset`` (per channel), so the tokens are shifted by
    ``-input_offset`` before the (zero) padding and ``w_msa`` adds it back:
    padded positions then hold exactly the folded zero, real tokens are
    unchanged up to float rounding (exact while the offset is zero).
    """

    @classmethod
    def convert(cls, msa: ShiftWindowMSA) -> QuantShiftWindowMSA:
        if not isinstance(msa.w_msa, QuantWindowMSA):
            raise TypeError('convert w_msa to QuantWindowMSA first')
        msa.__class__ = cls
        return msa

    def forward(self, query: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        offset = self.w_msa.input_offset
        if offset.any():
            query = query - offset
        return super().forward(query, hw_shape)


def adapt_swin_backbone(
    backbone: SwinTransformer, factory: QuantizerFactory, prefix: str = 'backbone'
) -> QuantPlan:
    """Swap the quantization sites of an mmdet Swin backbone in place.

    Args:
        backbone: The float backbone.
        factory: Quantizer factory of the model.
        prefix: Qualified name of the backbone in the detector.

    Returns:
        The plan declaring every site and LayerNorm pair.
    """
    if not isinstance(backbone, SwinTransformer):
        raise TypeError(f'{prefix}: expected mmdet SwinTransformer, got {type(backbone).__name__}')
    plan = QuantPlan(factory)
    pe = backbone.patch_embed
    if not isinstance(pe, PatchEmbed) or type(pe.projection) is not nn.Conv2d:
        raise TypeError(f'{prefix}.patch_embed: unsupported patch embedding {type(pe).__name__}')
    pe.projection = plan.add(
        f'{prefix}.patch_embed.projection',
        QuantConv2d.from_float(pe.projection, factory.weight(), factory.patch_embed_act()),
    )
    plan.add_unit(f'{prefix}.patch_embed', pe)
    for i, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage.blocks):
            p = f'{prefix}.stages.{i}.blocks.{j}'
            shift_msa = block.attn
            w_msa = QuantWindowMSA.convert(shift_msa.w_msa, factory)
            QuantShiftWindowMSA.convert(shift_msa)
            w_msa.qkv = plan.add(
                f'{p}.attn.w_msa.qkv',
                QuantLinear.from_float(w_msa.qkv, factory.weight(), factory.post_ln_act()),
            )
            plan.add(f'{p}.attn.w_msa.qk_matmul', w_msa.qk_matmul)
            plan.add(f'{p}.attn.w_msa.av_matmul', w_msa.av_matmul)
            plan.post_softmax_sites.append(f'{p}.attn.w_msa.av_matmul')
            w_msa.proj = plan.add(
                f'{p}.attn.w_msa.proj',
                QuantLinear.from_float(w_msa.proj, factory.weight(), factory.act()),
            )
            fc1_seq, fc2 = block.ffn.layers[0], block.ffn.layers[1]
            fc1_seq[0] = plan.add(
                f'{p}.ffn.layers.0.0',
                QuantLinear.from_float(fc1_seq[0], factory.weight(), factory.post_ln_act()),
            )
            block.ffn.layers[1] = plan.add(
                f'{p}.ffn.layers.1', QuantLinear.from_float(fc2, factory.weight(), factory.act())
            )
            plan.add_pair(
                f'{p}.norm1', block.norm1, [f'{p}.attn.w_msa.qkv'], zero_image_owner=w_msa
            )
            plan.add_pair(f'{p}.norm2', block.norm2, [f'{p}.ffn.layers.0.0'])
            plan.add_unit(p, block)
        ds = stage.downsample
        if ds is not None:
            if not isinstance(ds, PatchMerging) or ds.norm is None:
                raise TypeError(
                    f'{prefix}.stages.{i}.downsample: unsupported '
                    f'{type(ds).__name__} (needs PatchMerging with a norm)'
                )
            name = f'{prefix}.stages.{i}.downsample.reduction'
            ds.reduction = plan.add(
                name, QuantLinear.from_float(ds.reduction, factory.weight(), factory.post_ln_act())
            )
            plan.add_pair(f'{prefix}.stages.{i}.downsample.norm', ds.norm, [name])
            plan.add_unit(f'{prefix}.stages.{i}.downsample', ds)
    return plan


#: Detector attributes quantized in ``scope='whole'`` besides the backbone.
DETECTOR_HEADS = ('neck', 'rpn_head', 'roi_head', 'bbox_head', 'mask_head')


def adapt_mmdet_detector(detector: nn.Module, factory: QuantizerFactory) -> QuantPlan:
    """Quantize an mmdet detector with a Swin backbone.

    The backbone always; every Conv2d and Linear of the neck with ``factory.recipe.scope``
    ``'whole'`` or ``'backbone_neck'``, and of the heads with ``'whole'``
    (``ConvTranspose2d``, norms and RoI ops stay float).
    """
    if not hasattr(detector, 'backbone'):
        raise TypeError(f'{type(detector).__name__} has no backbone to quantize')
    scope = factory.recipe.scope
    plan = adapt_swin_backbone(detector.backbone, factory, 'backbone')
    if scope == 'backbone':
        return plan
    quantized = DETECTOR_HEADS if scope == 'whole' else ('neck',)
    for attr in quantized:
        module = getattr(detector, attr, None)
        if isinstance(module, nn.Module):
            plan.extend(quantize_linear_layers(module, factory, attr))
    if isinstance(getattr(detector, 'neck', None), nn.Module):
        # the neck and the heads are optional reconstruction units
        plan.add_unit('neck', detector.neck, kind='neck')
    if scope == 'whole':
        add_head_units(detector, plan)
    return plan


def add_head_units(detector: nn.Module, plan: QuantPlan) -> None:
    """Declare a two-stage detector's heads as reconstruction units, in forward order.

    The RPN head (kind ``'head'``), then the RoI head's box heads and mask heads (kind
    ``'roi'``): one per stage of a cascade, all box stages before the mask stages, as
    mmdet's cascade ``predict`` runs them. Each RoI head comes with its
    :class:`~mmdopq.plan.RoiSource` (the neck and the head's RoI extractor). A
    single-stage head (``bbox_head``) is a ``'head'`` unit.
    """
    for attr in ('rpn_head', 'bbox_head'):
        head = getattr(detector, attr, None)
        if isinstance(head, nn.Module):
            plan.add_unit(attr, head, kind='head')
    roi_head = getattr(detector, 'roi_head', None)
    neck = getattr(detector, 'neck', None)
    for attr in ('bbox_head', 'mask_head'):
        heads = getattr(roi_head, attr, None)
        poolers = getattr(roi_head, attr.replace('head', 'roi_extractor'), None)
        if isinstance(heads, nn.ModuleList):
            named = [(f'roi_head.{attr}.{i}', head, i) for i, head in enumerate(heads)]
        elif isinstance(heads, nn.Module):
            named = [(f'roi_head.{attr}', heads, None)]
        else:
            continue
        for name, head, i in named:
            pooler = poolers[i] if i is not None and isinstance(poolers, nn.ModuleList) else poolers
            source = None
            if isinstance(neck, nn.Module) and isinstance(pooler, nn.Module):
                source = RoiSource(features=neck, pooler=pooler)
            plan.add_unit(name, head, kind='roi', roi_source=source)
