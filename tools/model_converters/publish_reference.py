"""Turn a training checkpoint into a committed reference checkpoint (like mmdet's publish_model).

Keeps only the model weights and a small ``meta`` (iteration / epoch, config, seed, versions),
stores floating-point tensors as fp16 (loading into the model restores fp32: parameters keep
their dtype when a state dict is copied in), writes atomically and prints the size and sha256::

    python tools/model_converters/publish_reference.py work_dirs/ref_mask_rcnn/iter_2500.pth \\
        checkpoints/reference/mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.pth
"""

from __future__ import annotations

import argparse
import os.path as osp

import torch

import mmdopq  # noqa: F401  (checkpoint compat)
from mmdopq.utils.fileio import file_sha256, write_atomic

META_KEYS = ('epoch', 'iter', 'seed', 'mmengine_version', 'time', 'dataset_meta', 'experiment_name')


def publish(src: str, dst: str, fp16: bool = True) -> dict:
    """Write the slim checkpoint; returns ``dst``, ``size_mb``, ``sha256`` and ``num_tensors``."""
    if not osp.isfile(src):
        raise FileNotFoundError(f'checkpoint not found: {src}')
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    if not state:
        raise ValueError(f'{src} holds no state_dict')
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    old_meta = ckpt.get('meta') or {}
    meta = {k: old_meta[k] for k in META_KEYS if k in old_meta}
    meta.update(source=osp.basename(src), storage='fp16' if fp16 else 'fp32')
    meta['torch_version'] = torch.__version__
    if 'cfg' in old_meta:
        meta['cfg'] = old_meta['cfg']
    write_atomic(dst, lambda tmp: torch.save(dict(meta=meta, state_dict=state), tmp))
    digest = file_sha256(dst)
    return dict(dst=dst, size_mb=osp.getsize(dst) / 2**20, sha256=digest, num_tensors=len(state))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description='publish a reference checkpoint')
    parser.add_argument('src', help='training checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--fp32', action='store_true', help='keep fp32 storage')
    args = parser.parse_args(argv)
    info = publish(args.src, args.dst, fp16=not args.fp32)
    print(
        f'{info["dst"]}: {info["num_tensors"]} tensors, {info["size_mb"]:.2f} MB, '
        f'sha256 {info["sha256"]}'
    )
    return info


if __name__ == '__main__':
    main()
