"""Key and layout conversions between Swin implementations (pure torch), for the converters.

Three layouts of the same Swin weights meet in mmdopq:

* the original Swin / Swin-Transformer-Object-Detection (mmdet 2.x) layout,
* mmdet 3.x's ``SwinTransformer`` (``stages.i``, ``w_msa``, ``ffn``, ``nn.Unfold`` patch
  merging at the end of a stage),
* timm 1.0's ``SwinTransformer`` (``layers.i``, the patch merging opening stage ``i > 0``).

The patch merging concatenates the four pixels of a 2x2 patch: the original and timm put them
in groups ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]`` (channel
``group * C + c``), mmdet 3.x's ``nn.Unfold`` channel-major (``c * 4 + row * 2 + col``), so its
norm and reduction channels are permuted between the two (:func:`merge_channel_index`).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor

#: Pixel (row, col) of a 2x2 patch held by each channel group of the original / timm patch
#: merging (groups 0..3).
SWIN_MERGE_GROUPS = ((0, 0), (1, 0), (0, 1), (1, 1))


def merge_channel_index(merged_channels: int) -> Tensor:
    """Index ``idx`` with ``mmdet[..., i] = grouped[..., idx[i]]`` for patch-merging channels.

    ``grouped`` is the original / timm layout (channel ``group * C + c``), ``mmdet`` the
    channel-major ``nn.Unfold`` layout of mmdet 3.x (``c * 4 + row * 2 + col``).

    Args:
        merged_channels: ``4 * C``, the input width of the merging's ``reduction``.

    Raises:
        ValueError: ``merged_channels`` is not a multiple of 4.
    """
    if merged_channels % 4:
        raise ValueError(f'patch merging width {merged_channels} is not a multiple of 4')
    c = merged_channels // 4
    ch = torch.arange(c)
    idx = torch.empty(merged_channels, dtype=torch.long)
    for group, (row, col) in enumerate(SWIN_MERGE_GROUPS):
        idx[ch * 4 + row * 2 + col] = group * c + ch
    return idx


def table_window(rows: int) -> int:
    """Window side ``W`` of a relative position table with ``(2W - 1)^2`` rows.

    Raises:
        ValueError: ``rows`` is not the square of an odd number.
    """
    side = round(rows**0.5)
    if side * side != rows or side % 2 == 0:
        raise ValueError(f'relative position table with {rows} rows is not (2W-1)^2')
    return (side + 1) // 2


def crop_relative_position_table(table: Tensor, window: int) -> Tensor:
    """The bias table of a smaller window: the central ``(2w - 1)^2`` relative offsets.

    A table of window ``W`` holds one row per relative offset ``(dy, dx)`` in
    ``[-(W - 1), W - 1]^2``, row-major; a window ``w <= W`` needs the offsets within
    ``[-(w - 1), w - 1]^2``, which keep their values (timm shrinks the window of a stage whose
    resolution is below it).

    Args:
        table: ``[(2W - 1)^2, heads]`` relative position bias table.
        window: Target window side ``w``.

    Raises:
        ValueError: The table is not square or ``window`` exceeds its window.
    """
    big = table_window(table.shape[0])
    side = 2 * big - 1
    if not 1 <= window <= big:
        raise ValueError(f'cannot crop a window-{big} table to window {window}')
    lo = big - window
    grid = table.reshape(side, side, -1)[lo : side - lo, lo : side - lo]
    return grid.reshape((2 * window - 1) ** 2, -1).contiguous()


_MMDET_BLOCK = r'stages\.(\d+)\.blocks\.(\d+)\.'
_TIMM_BLOCK = r'layers.\1.blocks.\2.'
#: mmdet 3.x backbone key (without ``backbone.``) -> timm key template.
MMDET_TO_TIMM = {
    r'patch_embed\.projection\.(weight|bias)': r'patch_embed.proj.\1',
    r'patch_embed\.norm\.(weight|bias)': r'patch_embed.norm.\1',
    _MMDET_BLOCK + r'(norm1|norm2)\.(weight|bias)': _TIMM_BLOCK + r'\3.\4',
    _MMDET_BLOCK + r'attn\.w_msa\.(qkv|proj)\.(weight|bias)': _TIMM_BLOCK + r'attn.\3.\4',
    _MMDET_BLOCK + r'attn\.w_msa\.relative_position_bias_table': _TIMM_BLOCK
    + 'attn.relative_position_bias_table',
    _MMDET_BLOCK + r'ffn\.layers\.0\.0\.(weight|bias)': _TIMM_BLOCK + r'mlp.fc1.\3',
    _MMDET_BLOCK + r'ffn\.layers\.1\.(weight|bias)': _TIMM_BLOCK + r'mlp.fc2.\3',
}
#: mmdet 3.x backbone keys a timm classifier has no use for (timm computes the index buffer;
#: the per-output norms of the detector's FPN inputs, except the last one, have no timm twin).
MMDET_DROPPED = (
    _MMDET_BLOCK + r'attn\.w_msa\.relative_position_index',
    r'norm[0-2]\.(weight|bias)',
)
_RULES = [(re.compile(p), t) for p, t in MMDET_TO_TIMM.items()]
_DROPPED = [re.compile(p) for p in MMDET_DROPPED]
_DOWNSAMPLE = re.compile(r'stages\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)')
_LAST_NORM = re.compile(r'norm(\d+)\.(weight|bias)')


def mmdet_swin_to_timm(state: dict, num_stages: int, prefix: str = 'backbone.') -> OrderedDict:
    """Map the Swin backbone of an mmdet 3.x state dict to timm ``SwinTransformer`` keys.

    Only keys under ``prefix`` are read (a whole detector's state dict is fine). The merging
    closing mmdet stage ``i`` becomes timm's ``layers.{i + 1}.downsample`` with its channels
    regrouped; ``norm{num_stages - 1}`` (the norm of the last stage's output) becomes timm's
    final ``norm``; the classifier head is not produced. Relative position tables keep the
    source window (see :func:`crop_relative_position_table`).

    Args:
        state: mmdet 3.x state dict.
        num_stages: Number of Swin stages of the source backbone.
        prefix: Prefix of the backbone's keys.

    Returns:
        The timm state dict (float tensors as stored).

    Raises:
        ValueError: No backbone key, or backbone keys that match no rule (all listed).
    """
    out: OrderedDict = OrderedDict()
    unknown = []
    keys = [k for k in state if k.startswith(prefix)]
    if not keys:
        raise ValueError(f'no key starts with {prefix!r}: not an mmdet Swin state dict')
    for key in keys:
        name = key[len(prefix) :]
        new = _convert_key(name, num_stages)
        if new is None:
            if not any(p.fullmatch(name) for p in _DROPPED):
                unknown.append(key)
            continue
        value = state[key]
        if '.downsample.' in new:
            inverse = torch.argsort(merge_channel_index(value.shape[-1]))
            value = value[..., inverse].contiguous()
        out[new] = value
    if unknown:
        raise ValueError(
            f'{len(unknown)} backbone key(s) match no mmdet -> timm Swin rule: '
            + ', '.join(unknown)
        )
    return out


def _convert_key(name: str, num_stages: int) -> Optional[str]:
    for pattern, template in _RULES:
        m = pattern.fullmatch(name)
        if m is not None:
            return m.expand(template)
    m = _DOWNSAMPLE.fullmatch(name)
    if m is not None:
        return f'layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}'
    m = _LAST_NORM.fullmatch(name)
    if m is not None and int(m.group(1)) == num_stages - 1:
        return f'norm.{m.group(2)}'
    return None
