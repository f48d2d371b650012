"""Post-training quantization of a PyTorch model in plain PyTorch: prepare, calibrate, quantize.

No Runner, no config: a float model, a recipe and a ``forward_loop`` are enough::

    from mmdopq.apis import quantize

    def forward_loop(model):
        for images in calib_batches:
            model(images)

    model = quantize(model, dict(recipe='dopq', wbits=4, abits=4), forward_loop)

:func:`quantize` is :func:`prepare` (the adapter swaps in quantized layers and declares the
sites: in ``float`` mode the model still computes exactly what it did) followed by
:func:`calibrate` (observe -> calibrate every site -> fold the LayerNorms (MOSF or the mean
rule) -> re-calibrate the folded consumers). ``QuantCalibrationHook`` runs the same function
inside an mmengine Runner. The device follows the model: nothing here moves tensors to a
fixed device.

This module imports no mm* package; the adapter of an mmdet model imports mmdet itself.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from .adapters import get_adapter
from .plan import QuantizerFactory, QuantPlan
from .recipe import QuantRecipe
from .reconstruct import reconstruct

#: ``forward_loop(model)`` runs the calibration data through ``model`` (return value unused).
ForwardLoop = Callable[[nn.Module], Any]
#: Receives one line of progress information per calibration stage.
Log = Callable[[str], None]


def as_recipe(recipe: Union[QuantRecipe, dict, None]) -> QuantRecipe:
    """A :class:`QuantRecipe` from a recipe, a ``quant`` config dict, or ``None`` (defaults)."""
    if isinstance(recipe, QuantRecipe):
        return recipe
    return QuantRecipe.from_cfg(dict(recipe or {}))


def prepare(
    model: nn.Module, recipe: Union[QuantRecipe, dict, None] = None, adapter: str = 'auto'
) -> nn.Module:
    """Make ``model`` quantizable in place: swap in quantized layers and declare the sites.

    The quantized layers start in ``float`` mode (the model computes what it did); the
    model gets three attributes: ``quant_plan`` (:class:`~mmdopq.plan.QuantPlan`),
    ``quant_recipe`` (:class:`~mmdopq.recipe.QuantRecipe`) and ``quant_state_keys`` (the
    state-dict keys the quantization added: quantizer buffers).

    Args:
        model: A float model an adapter supports (timm ViT/DeiT/Swin, bare or wrapped; an
            mmdet detector with a Swin backbone).
        recipe: A recipe or a ``quant`` config dict (``dict(recipe='dopq', wbits=4,
            abits=4)``); the ``'float'`` recipe declares no site.
        adapter: Adapter name (see :data:`mmdopq.adapters.ADAPTERS`) or ``'auto'``.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: The model was prepared already, or no adapter matches it.
        TypeError: The adapter cannot quantize a part of the model (named).
    """
    if getattr(model, 'quant_plan', None) is not None:
        raise ValueError(
            f'{type(model).__name__} is already prepared for quantization; prepare a float '
            'model once'
        )
    recipe = as_recipe(recipe)
    factory = QuantizerFactory(recipe)
    float_keys = set(model.state_dict())
    # the float recipe keeps the stock model: its timings are the baseline
    plan = QuantPlan(factory) if recipe.is_float else get_adapter(adapter, model)(model, factory)
    model.quant_plan = plan
    model.quant_recipe = recipe
    model.quant_state_keys = set(model.state_dict()) - float_keys
    return model


def _plan_of(model: nn.Module) -> QuantPlan:
    plan = getattr(model, 'quant_plan', None)
    if not isinstance(plan, QuantPlan):
        raise ValueError(
            f'{type(model).__name__} has no quant_plan: call mmdopq.apis.prepare(model, '
            'recipe) first (or use quantize)'
        )
    return plan


@torch.no_grad()
def calibrate(
    model: nn.Module,
    forward_loop: ForwardLoop,
    log: Optional[Log] = None,
    reconstruct_loop: Optional[ForwardLoop] = None,
) -> dict:
    """Calibrate a prepared model: observe -> calibrate -> fold LayerNorms -> re-calibrate.

    1. **observe**: ``forward_loop(model)`` runs the calibration data through the model in
       eval mode. With the recipe's ``calib_mode='float'`` every quantizer records its float
       input (any batching works); with ``'sequential'`` (RepQ-ViT's order) every site
       calibrates at its first call on what the quantized sites before it produce, so
       ``forward_loop`` must pass all calibration images in **one** call.
    2. **calibrate**: every site sets its quantization parameters from what it saw.
    3. **reparameterize**: the per-channel post-LayerNorm quantizers are folded into the
       LayerNorm and a per-tensor quantizer (MOSF or the mean rule, per the recipe).
    4. **recalibrate**: the weights of the folded consumers are re-calibrated; every site is
       checked to be calibrated and the model is left in ``quant`` mode.
    5. **reconstruct** (only with a recipe ``reconstruct`` setting): block reconstruction
       of the folded model, unit by unit (:func:`mmdopq.reconstruct.reconstruct`).

    Args:
        model: A model returned by :func:`prepare`.
        forward_loop: Runs the calibration data through its argument.
        log: Receives a line per stage (e.g. ``print`` or a logger's ``info``).
        reconstruct_loop: The data of the reconstruction stage (run twice per unit, the
            same data in the same order every time); default ``forward_loop``.

    Returns:
        dict: ``times`` (seconds per stage: ``forward_s``, ``calibrate_s``,
        ``reparameterize_s``, ``recalibrate_s``, with reconstruction ``reconstruct_s``,
        and ``total_s``), ``plan`` (site counts and MOSF choices,
        :meth:`QuantPlan.summary`) and, with reconstruction, ``reconstruct`` (per unit,
        see :func:`mmdopq.reconstruct.reconstruct`); ``skipped=True`` for the float recipe.

    Raises:
        ValueError: The model is not prepared, a site saw no data, or NaN/Inf reached a
            quantizer (named).
    """
    plan = _plan_of(model)
    recipe = plan.recipe
    say = log or (lambda _: None)
    if recipe.is_float:
        say('mmdopq: recipe float: nothing to calibrate')
        return dict(skipped=True, float=True)
    times: dict[str, float] = {}
    sequential = recipe.calib_mode == 'sequential'
    was_training = model.training
    model.eval()
    t0 = t = time.perf_counter()
    plan.start_calibration(model, sequential=sequential)
    try:
        forward_loop(model)
    finally:
        plan.stop_calibration()
    times['forward_s'] = time.perf_counter() - t
    say(
        f'mmdopq: stage 1/3 {"sequential pass" if sequential else "observe"}: '
        f'{times["forward_s"]:.1f}s'
    )
    t = time.perf_counter()
    plan.calibrate_sites()
    times['calibrate_s'] = time.perf_counter() - t
    say(f'mmdopq: stage 1/3 calibrate {len(plan.sites)} sites: {times["calibrate_s"]:.1f}s')
    t = time.perf_counter()
    folds = plan.reparameterize()
    times['reparameterize_s'] = time.perf_counter() - t
    capped = sum(r.n_capped for r in folds.values())
    say(
        f'mmdopq: stage 2/3 reparameterize {len(folds)} LayerNorms (rule '
        f'{recipe.reparam_rule}, {capped} channels capped): {times["reparameterize_s"]:.1f}s'
    )
    t = time.perf_counter()
    plan.recalibrate(model)
    times['recalibrate_s'] = time.perf_counter() - t
    times['total_s'] = time.perf_counter() - t0
    say(
        f'mmdopq: stage 3/3 re-calibrate: {times["recalibrate_s"]:.1f}s; calibration total '
        f'{times["total_s"]:.1f}s'
    )
    out = dict(skipped=False, times=times, plan=plan.summary())
    settings = recipe.reconstruct_settings
    if settings is not None:
        t = time.perf_counter()
        out['reconstruct'] = reconstruct(model, reconstruct_loop or forward_loop, settings, say)
        times['reconstruct_s'] = time.perf_counter() - t
        times['total_s'] = time.perf_counter() - t0
    model.train(was_training)
    return out


def quantize(
    model: nn.Module,
    recipe: Union[QuantRecipe, dict, None],
    forward_loop: ForwardLoop,
    adapter: str = 'auto',
    log: Optional[Log] = None,
) -> nn.Module:
    """Quantize a float model in place: :func:`prepare` then :func:`calibrate`.

    Args:
        model: The float model (timm ViT/DeiT/Swin, or an mmdet Swin detector).
        recipe: A recipe or a ``quant`` config dict, e.g. ``dict(recipe='dopq', wbits=4,
            abits=4)``.
        forward_loop: ``forward_loop(model)`` runs the calibration data through the model.
        adapter: Adapter name or ``'auto'``.
        log: Receives a line per calibration stage.

    Returns:
        ``model``, fake-quantized (``quant`` mode); the calibration record is in
        ``model.quant_calibration``.
    """
    prepare(model, recipe, adapter=adapter)
    model.quant_calibration = calibrate(model, forward_loop, log=log)
    return model
