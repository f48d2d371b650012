"""Checkpoint IO of quantized models: read float or quantized checkpoints, save quantized ones.

A quantized checkpoint is an mmengine checkpoint whose state dict holds the float model's
keys plus the quantizer buffers, and whose ``meta`` records the recipe and the calibration.
"""

from __future__ import annotations

import os.path as osp

from ..recipe import QuantRecipe
from ..utils.fileio import write_atomic


def load_checkpoint_file(path: str) -> dict:
    """Read a checkpoint's state dict, with errors that name the file."""
    from mmengine.runner import CheckpointLoader

    if path.startswith(TIMM_PREFIX):
        ckpt = dict(state_dict=timm_pretrained_state(path[len(TIMM_PREFIX) :]))
    elif not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    else:
        try:
            if path.endswith('.safetensors'):
                from safetensors.torch import load_file

                ckpt = dict(state_dict=load_file(path, device='cpu'))
            else:  # .pth / .bin / .pt: torch pickles
                ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        except Exception as e:
            raise RuntimeError(
                f'checkpoint {path} could not be read ({type(e).__name__}: {e})'
            ) from e
    if isinstance(ckpt, dict) and 'model' in ckpt and 'state_dict' not in ckpt:
        ckpt = dict(ckpt, state_dict=ckpt['model'])  # timm / DeiT training checkpoints
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise RuntimeError(f'checkpoint {path} holds no state dict')
    return dict(ckpt=ckpt, state_dict={k.removeprefix('module.'): v for k, v in state.items()})


TIMM_PREFIX = 'timm://'
HUB_HOST = ('huggingface.co', 443)


def timm_pretrained_state(name: str, timeout: float = 5.0) -> dict:
    """State dict of timm's pretrained ``name``; a clear error when the hub is unreachable."""
    import socket

    import timm

    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
    except OSError as e:
        raise RuntimeError(
            f'{TIMM_PREFIX}{name}: the model hub ({HUB_HOST[0]}) is not reachable from this '
            f'machine ({e}); download the weights elsewhere and pass the file instead'
        ) from e
    return timm.create_model(name, pretrained=True).state_dict()


def load_into(model, state_dict: dict, path: str) -> bool:
    """Load ``state_dict`` strictly up to quantizer state; returns True if it was quantized."""
    own = model.state_dict()
    quant_keys = model.quant_state_keys
    missing = sorted(set(own) - set(state_dict) - quant_keys)
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        k
        for k in set(own) & set(state_dict)
        if k not in quant_keys and own[k].shape != state_dict[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for what, keys in (
            ('missing keys', missing),
            ('unexpected keys', unexpected),
            ('shape mismatches', shapes),
        ):
            if keys:
                more = f' (+{len(keys) - 15} more)' if len(keys) > 15 else ''
                parts.append(f'{len(keys)} {what}: {keys[:15]}{more}')
        raise RuntimeError(
            f'checkpoint {path} does not match the config; refusing to quantize a '
            'model that did not load. ' + '; '.join(parts)
        )
    has_quant = any(k in state_dict for k in quant_keys)
    model.load_state_dict(state_dict, strict=False)
    return has_quant


def check_same_recipe(ckpt: dict, recipe: QuantRecipe, path: str) -> None:
    """A quantized checkpoint must have been made with the config's recipe."""
    saved = (ckpt.get('meta') or {}).get('recipe') or {}
    keys = ('recipe', 'wbits', 'abits', 'scope', 'post_softmax', 'reparam_rule')
    diff = {
        k: (saved.get(k), getattr(recipe, k))
        for k in keys
        if k in saved and saved.get(k) != getattr(recipe, k)
    }
    if diff:
        raise RuntimeError(
            f'quantized checkpoint {path} was made with another recipe than the '
            f'config (checkpoint vs config): {diff}'
        )


def save_quantized(model, path: str, meta: dict) -> None:
    from mmengine.runner import save_checkpoint

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = dict(meta=dict(meta, mmdopq_quantized=True), state_dict=state)
    write_atomic(path, lambda tmp: save_checkpoint(ckpt, tmp))
