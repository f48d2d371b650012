"""Checkpoint IO of quantized models: read float or quantized checkpoints, save quantized ones.

A quantized checkpoint is an mmengine checkpoint whose state dict holds the float model's
keys plus the quantizer buffers, and whose ``meta`` records the recipe and the calibration.
"""

from __future__ import annotations

import os.path as osp

from ..recipe import RECIPES, QuantRecipe
from ..utils.errors import CheckpointError, MissingFileError
from ..utils.fileio import json_safe, write_atomic


def load_checkpoint_file(path: str) -> dict:
    """Read a checkpoint's state dict, with errors that name the file."""
    from mmengine.runner import CheckpointLoader

    if path.startswith(TIMM_PREFIX):
        ckpt = dict(state_dict=timm_pretrained_state(path[len(TIMM_PREFIX) :]))
    elif not osp.isfile(path):
        raise MissingFileError(f'checkpoint not found: {path}')
    else:
        try:
            if path.endswith('.safetensors'):
                from safetensors.torch import load_file

                ckpt = dict(state_dict=load_file(path, device='cpu'))
            else:  # .pth / .bin / .pt: torch pickles
                ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        except Exception as e:
            raise CheckpointError(
                f'checkpoint {path} could not be read ({type(e).__name__}: {e})'
            ) from e
    if isinstance(ckpt, dict) and 'model' in ckpt and 'state_dict' not in ckpt:
        ckpt = dict(ckpt, state_dict=ckpt['model'])  # timm / DeiT training checkpoints
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f'checkpoint {path} holds no state dict')
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
        raise CheckpointError(
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
        raise CheckpointError(
            f'checkpoint {path} does not match the config; refusing to quantize a '
            'model that did not load. ' + '; '.join(parts)
        )
    check_finite_state(state_dict, path)
    has_quant = any(k in state_dict for k in quant_keys)
    model.load_state_dict(state_dict, strict=False)
    return has_quant


#: Recipe keys that only steer how the quantization parameters are chosen. A quantized
#: checkpoint holds the parameters they chose (in its buffers), so it may be re-evaluated with
#: other values of these: nothing about the loaded model changes, and the record keeps the
#: checkpoint's values. Every other key shapes the quantized model (bits, quantizer types,
#: scope, fold rule, ...) and must match; a key not listed here is compared.
CALIBRATION_ONLY_KEYS = (
    'seed',
    'calib_mode',
    'max_samples',
    'percentiles',
    'weight_method',
    'act_method',
    'act_zero_point',
    'softmax_objective',
    'qk_objective',
    'mad_k_grid',
    'tanq_search',
)


def check_same_recipe(ckpt: dict, recipe: QuantRecipe, path: str) -> None:
    """A quantized checkpoint must have been made with the settings of the config.

    Every key of the recipe recorded in the checkpoint is compared with the config's, except
    :data:`CALIBRATION_ONLY_KEYS` (the loaded quantization parameters already hold their
    result). A checkpoint of an older mmdopq records fewer keys; those it records must match.

    Raises:
        CheckpointError: Listing each differing key (checkpoint vs config) and the options
            that would reproduce the checkpoint's settings.
    """
    saved = (ckpt.get('meta') or {}).get('recipe') or {}
    current = recipe.to_dict()
    diff = {
        k: (v, current[k])
        for k, v in saved.items()
        if k in current
        and k not in CALIBRATION_ONLY_KEYS
        and json_safe(v) != json_safe(current[k])  # tuples come back from a checkpoint as lists
    }
    if not diff:
        return
    flags = []
    if 'wbits' in diff or 'abits' in diff:
        flags.append(
            f'--bits w{saved.get("wbits", recipe.wbits)}a{saved.get("abits", recipe.abits)}'
        )
    if 'recipe' in diff:
        flags.append(f'--recipe {saved["recipe"]}')
    # the components a named recipe sets come with --recipe
    implied = RECIPES.get(saved.get('recipe'), {}) if 'recipe' in diff else {}
    opts = [
        f'model.quant.{k}={_option_value(v)}'
        for k, (v, _) in diff.items()
        if k not in ('recipe', 'wbits', 'abits') and implied.get(k, object()) != v
    ]
    if opts:
        flags.append('--cfg-options ' + ' '.join(opts))
    listed = ', '.join(f'{k}: {v!r} vs {c!r}' for k, (v, c) in diff.items())
    raise CheckpointError(
        f'quantized checkpoint {path} was made with another recipe than the config '
        f'(checkpoint vs config: {listed}); evaluate it with the settings it was made with '
        f'({" ".join(flags)}) or quantize the float checkpoint again'
    )


def _option_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(str(v) for v in value) + ']'
    if isinstance(value, dict):
        return '{' + ','.join(f'{k}:{_option_value(v)}' for k, v in value.items()) + '}'
    return str(value)


def check_finite_state(state_dict: dict, path: str) -> None:
    """Refuse a checkpoint whose floating-point tensors hold NaN or Inf, naming them.

    Raises:
        CheckpointError: Listing the first tensors with non-finite values.
    """
    import torch

    bad = [
        k
        for k, v in state_dict.items()
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        more = f' (+{len(bad) - 10} more)' if len(bad) > 10 else ''
        raise CheckpointError(
            f'checkpoint {path} holds NaN/Inf values in {len(bad)} tensors: {bad[:10]}{more}; '
            'the float model is broken: re-export or re-train it'
        )


def save_quantized(model, path: str, meta: dict) -> None:
    """Write ``model``'s state and ``meta`` (recipe, calibration, provenance) atomically."""
    from mmengine.runner import save_checkpoint

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = dict(meta=dict(meta, mmdopq_quantized=True), state_dict=state)
    write_atomic(path, lambda tmp: save_checkpoint(ckpt, tmp))
