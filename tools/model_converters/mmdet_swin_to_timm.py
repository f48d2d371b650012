"""Initialise a timm Swin classifier from the Swin backbone of an mmdet 3.x detector.

The reference Swin classifier starts from the backbone of the reference Swin Mask R-CNN (the
classification analogue of an ImageNet-pretrained backbone, which these machines cannot
download), run from the repository root::

    python -m tools.model_converters.mmdet_swin_to_timm \\
        checkpoints/reference/mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.pth \\
        configs/reference/swin-ref-p4-w7_synthetic-cls.py work_dirs/swin_cls_init.pth

* keys and the patch-merging channel order are mapped by
  :func:`.swin_checkpoint.mmdet_swin_to_timm` (exact: an mmdet and a timm Swin
  with the converted weights give the same features);
* the classifier of ``CONFIG`` (an mmpretrain ``TimmClassifier``, float or under
  ``mmdopq.QuantizedModel``) is built to check the result: every key but the head's must be
  produced, with its shape; relative position tables of stages whose window timm shrank to
  the stage resolution are cropped to that window (same biases for the offsets they keep);
* the head is left to the classifier's initialisation; ``DST`` is written atomically, fp32,
  with ``meta`` naming the source and its sha256.
"""

from __future__ import annotations

import argparse
import os.path as osp

import torch

import mmdopq  # noqa: F401  (checkpoint compat)
from mmdopq.utils.fileio import file_sha256, write_atomic

from .swin_checkpoint import crop_relative_position_table, mmdet_swin_to_timm, table_window

TABLE_SUFFIX = 'relative_position_bias_table'


def build_classifier(config: str) -> torch.nn.Module:
    """The float timm model of ``config`` (its ``TimmClassifier.model``)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(config)
    model_cfg = cfg.model
    if model_cfg.get('type') == 'mmdopq.QuantizedModel':
        model_cfg = model_cfg.architecture
    if model_cfg.get('type') != 'TimmClassifier':
        raise ValueError(f'{config}: model type {model_cfg.get("type")!r} is not TimmClassifier')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(model_cfg).model


def convert(src_state: dict, target: dict, num_stages: int) -> dict:
    """Converted backbone weights shaped like ``target`` (a timm state dict), fp32.

    Raises:
        ValueError: Missing or unexpected keys, or shapes that no crop explains (all listed).
    """
    state = mmdet_swin_to_timm(src_state, num_stages)
    problems = []
    for key, value in list(state.items()):
        if key not in target:
            problems.append(f'unexpected {key}')
            continue
        want = tuple(target[key].shape)
        if key.endswith(TABLE_SUFFIX) and tuple(value.shape) != want:
            value = crop_relative_position_table(value, table_window(want[0]))
        if tuple(value.shape) != want:
            problems.append(f'{key}: converted {tuple(value.shape)} vs classifier {want}')
            continue
        state[key] = value.float()
    missing = [k for k in target if k not in state and not k.startswith('head.')]
    problems += [f'missing {k}' for k in missing]
    if problems:
        raise ValueError(
            f'the detector backbone does not fit the classifier ({len(problems)} problem(s)): '
            + '; '.join(problems)
        )
    return state


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description='initialise a timm Swin classifier from an mmdet Swin detector backbone'
    )
    parser.add_argument('src', help='mmdet 3.x detector checkpoint with a Swin backbone')
    parser.add_argument('config', help='classifier config (TimmClassifier with a timm Swin)')
    parser.add_argument('dst', help='output checkpoint (load_from of the classifier config)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.src):
        raise FileNotFoundError(f'checkpoint not found: {args.src}')
    ckpt = torch.load(args.src, map_location='cpu', weights_only=False)
    src_state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    if not src_state:
        raise ValueError(f'{args.src} holds no state_dict')
    classifier = build_classifier(args.config)
    num_stages = len(classifier.layers)
    state = convert(src_state, classifier.state_dict(), num_stages)
    meta = dict(
        converted_from=osp.basename(args.src),
        source_sha256=file_sha256(args.src),
        converter='mmdopq tools/model_converters/mmdet_swin_to_timm.py',
        config=osp.basename(args.config),
    )
    write_atomic(args.dst, lambda tmp: torch.save(dict(meta=meta, state_dict=state), tmp))
    print(f'{args.dst}: {len(state)} tensors from {args.src} (head left to its initialisation)')
    return dict(dst=args.dst, num_tensors=len(state), meta=meta)


if __name__ == '__main__':
    main()
