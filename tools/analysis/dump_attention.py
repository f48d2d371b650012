"""Save a real post-Softmax attention map of a model (for ``plot_quantizers.py --input``).

Builds the model of an mmdopq config (float mode: nothing is quantized), loads a float
checkpoint, runs test images through it and saves the attention probabilities that enter
one ``attn @ v`` site, i.e. exactly the tensor the post-Softmax quantizer sees::

    python tools/analysis/dump_attention.py CONFIG CKPT --out attn.pt [--site 0] [--image 0]
    python tools/analysis/plot_quantizers.py --input attn.pt --bits 4 --out attn_w4.png
"""

from __future__ import annotations

import argparse
import os.path as osp

import torch

import mmdopq  # noqa: F401  (checkpoint compat)
from mmdopq.utils.fileio import write_atomic


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='save a post-Softmax attention map')
    parser.add_argument('config', help='mmdopq config (model.type=mmdopq.QuantizedModel)')
    parser.add_argument('checkpoint', help='float checkpoint')
    parser.add_argument('--out', required=True, help='output .pt file')
    parser.add_argument(
        '--site', type=int, default=0, help='index of the attention block (0 = first)'
    )
    parser.add_argument('--image', type=int, default=0, help='index into the test dataset')
    return parser.parse_args(argv)


@torch.no_grad()
def dump_attention(config: str, checkpoint: str, out: str, site: int = 0, image: int = 0) -> dict:
    """Save the post-Softmax input of attention site ``site`` for test image ``image``.

    Returns:
        dict: ``site`` (its name), ``shape``, ``out``.
    """
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=False)
    model.eval()
    names = model.quant_plan.post_softmax_sites
    if not 0 <= site < len(names):
        raise IndexError(f'--site {site} out of range: the model has {len(names)} attention sites')
    captured = []
    handle = model.quant_plan.sites[names[site]].register_forward_pre_hook(
        lambda mod, args: captured.append(args[0].detach().clone())
    )
    try:
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        if not 0 <= image < len(dataset):
            raise IndexError(f'--image {image} out of range: {len(dataset)} test images')
        model.test_step(pseudo_collate([dataset[image]]))
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f'attention site {names[site]} did not run')
    attn = captured[0].float()
    write_atomic(out, lambda tmp: torch.save(attn, tmp))
    return dict(site=names[site], shape=list(attn.shape), out=out)


def main(argv=None) -> dict:
    args = parse_args(argv)
    info = dump_attention(args.config, args.checkpoint, args.out, args.site, args.image)
    print(f'saved {info["shape"]} post-Softmax map of {info["site"]} to {info["out"]}')
    return info


if __name__ == '__main__':
    main()
