"""Convert Swin-Transformer-Object-Detection checkpoints (mmdet 2.x keys) to mmdet 3.x keys.

The float checkpoints behind the published RepQ-ViT / DopQ-ViT COCO numbers come from
https://github.com/SwinTransformer/Swin-Transformer-Object-Detection (Mask R-CNN and Cascade
Mask R-CNN with a Swin backbone, mmdet 2.x). This tool maps every key to the mmdet 3.x model of
our configs (``mmdet::swin/mask-rcnn_swin-*`` and ``configs/float/cascade-mask-rcnn_swin-*``),
run from the repository root::

    python -m tools.model_converters.swin_od_to_mmdet SRC DST [--config CFG]

* ``SRC``: the 2.x checkpoint (its ``state_dict`` or ``model`` entry, or a bare state dict);
* every key must match a rule (:data:`BACKBONE_RENAMES`, :data:`KEPT`): an unknown key is an
  error that lists all of them (nothing is guessed, nothing silently dropped);
* the 2.x Swin patch merging concatenates the four pixels of a 2x2 patch in another order than
  mmdet 3.x's ``nn.Unfold``-based ``PatchMerging``: the channels of ``downsample.norm`` and the
  input columns of ``downsample.reduction`` are permuted (:func:`merge_channel_index`);
* ``--config`` builds the float architecture of a config (float or ``mmdopq.QuantizedModel``)
  and refuses to write ``DST`` unless the converted keys and shapes match it exactly;
* ``DST`` is written atomically, with ``meta`` recording the source file, its mmdet version and
  its classes (as ``dataset_meta``, where mmdet 3.x looks for them).
"""

from __future__ import annotations

import argparse
import os.path as osp
import re
import sys
from collections import Counter, OrderedDict
from typing import Callable, Optional

import torch

from .swin_checkpoint import merge_channel_index


def _merge_reduction(w: torch.Tensor) -> torch.Tensor:
    return w[:, merge_channel_index(w.shape[1])].contiguous()


def _merge_norm(v: torch.Tensor) -> torch.Tensor:
    return v[merge_channel_index(v.shape[0])].contiguous()


_B = r'layers\.(\d+)\.blocks\.(\d+)\.'  # 2.x block j of stage i
_W = r'stages.\1.blocks.\2.'  # mmdet 3.x block j of stage i
#: The renames of the backbone: 2.x pattern (after ``backbone.``) -> mmdet 3.x template.
BACKBONE_RENAMES = {
    r'patch_embed\.proj\.(weight|bias)': r'patch_embed.projection.\1',
    r'patch_embed\.norm\.(weight|bias)': r'patch_embed.norm.\1',
    _B + r'(norm1|norm2)\.(weight|bias)': _W + r'\3.\4',
    _B + r'attn\.(qkv|proj)\.(weight|bias)': _W + r'attn.w_msa.\3.\4',
    _B + r'attn\.relative_position_(bias_table|index)': _W + r'attn.w_msa.relative_position_\3',
    _B + r'mlp\.fc1\.(weight|bias)': _W + r'ffn.layers.0.0.\3',
    _B + r'mlp\.fc2\.(weight|bias)': _W + r'ffn.layers.1.\3',
    r'layers\.(\d+)\.downsample\.reduction\.weight': r'stages.\1.downsample.reduction.weight',
    r'layers\.(\d+)\.downsample\.norm\.(weight|bias)': r'stages.\1.downsample.norm.\2',
    r'norm([0-3])\.(weight|bias)': r'norm\1.\2',
}
#: mmdet 3.x backbone keys whose channels need the patch-merging permutation.
MERGE_TRANSFORMS = {
    r'stages\.\d+\.downsample\.reduction\.weight': _merge_reduction,
    r'stages\.\d+\.downsample\.norm\.(weight|bias)': _merge_norm,
}
_S = r'(?:\.(\d+))?'  # cascade stage of roi_head.{bbox,mask}_head; none in Mask R-CNN
_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
#: Keys kept as they are (same module names in mmdet 2.x and 3.x): (group, pattern).
KEPT = [
    ('neck', r'neck\.(lateral_convs|fpn_convs)\.\d+\.conv\.(weight|bias)'),
    ('rpn_head', r'rpn_head\.(rpn_conv|rpn_cls|rpn_reg)\.(weight|bias)'),
    ('roi_head', rf'roi_head\.bbox_head{_S}\.(shared|cls|reg)_convs\.\d+\.conv\.(weight|bias)'),
    ('roi_head', rf'roi_head\.bbox_head{_S}\.(shared|cls|reg)_convs\.\d+\.(bn|gn)\.{_BN}'),
    ('roi_head', rf'roi_head\.bbox_head{_S}\.(shared|cls|reg)_fcs\.\d+\.(weight|bias)'),
    ('roi_head', rf'roi_head\.bbox_head{_S}\.(fc_cls|fc_reg)\.(weight|bias)'),
    ('roi_head', rf'roi_head\.mask_head{_S}\.convs\.\d+\.conv\.(weight|bias)'),
    ('roi_head', rf'roi_head\.mask_head{_S}\.(upsample|conv_logits)\.(weight|bias)'),
]
_RENAMES = [(re.compile(p), t) for p, t in BACKBONE_RENAMES.items()]
_TRANSFORMS = [(re.compile(p), f) for p, f in MERGE_TRANSFORMS.items()]
_KEPT = [(g, re.compile(p)) for g, p in KEPT]


def convert_key(key: str) -> Optional[tuple[str, str, Optional[Callable]]]:
    """``(new_key, group, transform)`` of a 2.x key, or None if no rule knows it."""
    if key.startswith('backbone.'):
        name = key[len('backbone.') :]
        for pattern, template in _RENAMES:
            m = pattern.fullmatch(name)
            if m is not None:
                new = m.expand(template)
                transform = next((f for p, f in _TRANSFORMS if p.fullmatch(new)), None)
                return f'backbone.{new}', 'backbone', transform
        return None
    for group, pattern in _KEPT:
        m = pattern.fullmatch(key)
        if m is not None:
            stage = m.group(1) if group == 'roi_head' else None
            return key, group if stage is None else f'roi_head stage {stage}', None
    return None


def convert_state_dict(state: dict) -> tuple[OrderedDict, Counter]:
    """Map a 2.x state dict to mmdet 3.x keys.

    Args:
        state: 2.x state dict (a ``module.`` prefix of DDP checkpoints is dropped).

    Returns:
        The converted state dict and the number of tensors per group (``backbone``, ``neck``,
        ``rpn_head``, ``roi_head`` or ``roi_head stage <i>``).

    Raises:
        ValueError: Some keys match no rule (all are listed), or two keys map to one.
    """
    out: OrderedDict = OrderedDict()
    counts: Counter = Counter()
    unknown, clashes = [], []
    for key, value in state.items():
        src = key[len('module.') :] if key.startswith('module.') else key
        hit = convert_key(src)
        if hit is None:
            unknown.append(key)
            continue
        new_key, group, transform = hit
        if new_key in out:
            clashes.append(f'{key} -> {new_key}')
            continue
        out[new_key] = transform(value) if transform is not None else value
        counts[group] += 1
    if unknown or clashes:
        parts = []
        if unknown:
            parts.append(
                f'{len(unknown)} unknown key(s), no conversion rule: ' + ', '.join(unknown)
            )
        if clashes:
            parts.append('keys mapped twice: ' + ', '.join(clashes))
        raise ValueError(
            'not a Swin-Transformer-Object-Detection Mask R-CNN / Cascade Mask R-CNN state '
            'dict that this converter knows; ' + '; '.join(parts)
        )
    return out, counts


def compare_with_config(state: dict, config: str) -> dict:
    """Build the float architecture of ``config`` and compare keys and shapes with ``state``.

    A ``mmdopq.QuantizedModel`` config is compared through its float ``architecture``.

    Returns:
        ``dict(missing=[...], unexpected=[...], shape_mismatch=[...])``, all empty on a match.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(config)
    model_cfg = cfg.model
    if model_cfg.get('type') == 'mmdopq.QuantizedModel':
        model_cfg = model_cfg.architecture
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(model_cfg)  # no init_weights: nothing is downloaded
    own = model.state_dict()
    return dict(
        missing=sorted(set(own) - set(state)),
        unexpected=sorted(set(state) - set(own)),
        shape_mismatch=sorted(
            f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
            for k in set(own) & set(state)
            if tuple(own[k].shape) != tuple(state[k].shape)
        ),
    )


def load_source(path: str) -> tuple[dict, dict]:
    """``(state_dict, meta)`` of a 2.x checkpoint file."""
    from mmengine.runner import CheckpointLoader

    import mmdopq  # noqa: F401  (mmengine checkpoint loading on torch >= 2.6)

    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path}: expected a dict checkpoint, got {type(ckpt).__name__}')
    for entry in ('state_dict', 'model'):
        if isinstance(ckpt.get(entry), dict):
            return ckpt[entry], ckpt.get('meta') or {}
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, {}
    raise ValueError(f'{path}: no state_dict or model entry in the checkpoint')


def converted_meta(src: str, meta: dict) -> dict:
    """``meta`` of the converted checkpoint: provenance and mmdet 3.x ``dataset_meta``."""
    out = dict(
        converted_from=osp.abspath(src),
        converter='mmdopq tools/model_converters/swin_od_to_mmdet.py',
    )
    for key in ('mmdet_version', 'mmcv_version', 'epoch', 'iter'):
        if key in meta:
            out[f'source_{key}'] = meta[key]
    classes = meta.get('CLASSES') or (meta.get('dataset_meta') or {}).get('classes')
    if classes:
        out['dataset_meta'] = dict(classes=tuple(classes))
    return out


def save(state: dict, meta: dict, dst: str) -> None:
    from mmengine.runner import save_checkpoint

    from mmdopq.utils.fileio import write_atomic

    ckpt = dict(meta=meta, state_dict=state)
    write_atomic(dst, lambda tmp: save_checkpoint(ckpt, tmp))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a Swin-Transformer-Object-Detection (mmdet 2.x) Mask R-CNN / '
        'Cascade Mask R-CNN checkpoint to mmdet 3.x keys'
    )
    parser.add_argument('src', help='mmdet 2.x checkpoint')
    parser.add_argument('dst', help='output mmdet 3.x checkpoint')
    parser.add_argument(
        '--config',
        help='float or mmdopq config whose model must load the result with no missing or '
        'unexpected keys (checked before anything is written)',
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the conversion; returns ``dict(counts=..., num_keys=..., dst=...)``."""
    args = parse_args(argv)
    state, meta = load_source(args.src)
    converted, counts = convert_state_dict(state)
    if args.config:
        diff = compare_with_config(converted, args.config)
        if any(diff.values()):
            lines = [f'{len(v)} {k.replace("_", " ")}: {v}' for k, v in diff.items() if v]
            raise RuntimeError(
                f'the converted state dict does not match the model of {args.config}; '
                'nothing written. ' + '; '.join(lines)
            )
    save(converted, converted_meta(args.src, meta), args.dst)
    print(f'converted {len(converted)} tensors from {args.src}')
    for group in sorted(counts):
        print(f'  {group}: {counts[group]}')
    if args.config:
        print(f'  checked against {args.config}: no missing or unexpected keys, shapes match')
    print(f'saved {args.dst}')
    return dict(counts=dict(counts), num_keys=len(converted), dst=args.dst)


if __name__ == '__main__':
    try:
        main()
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
