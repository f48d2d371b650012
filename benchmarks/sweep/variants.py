"""The sweep's recipe variants: name -> ``--recipe`` of tools/quantize.py and extra options."""

from __future__ import annotations

#: The dense TanQ grid of ``tanq_only-fine_grid``: 19 centres x 21 curvature fractions (the
#: default is 9 x 10) and a 9 x 9 refinement (default 5 x 5).
FINE_CENTRES = [f'{0.05 * i:.2f}' for i in range(1, 20)]
FINE_FRACTIONS = '0 .1 .2 .3 .4 .5 .6 .65 .7 .75 .8 .83 .86 .89 .91 .93 .95 .96 .97 .98 .99'.split()
#: ``--cfg-options`` of the official detection calibration: the first image of the val split.
VAL1 = (
    'custom_hooks.0.num_images=1',
    'custom_hooks.0.selection=first',
    'custom_hooks.0.dataloader.dataset.ann_file=annotations/instances_val.json',
    'custom_hooks.0.dataloader.dataset.data_prefix.img=val/',
)


def recon(iters: int) -> tuple[str, ...]:
    """``--cfg-options`` that switch block reconstruction on with ``iters`` per unit."""
    return ('model.quant.reconstruct.enabled=True', f'model.quant.reconstruct.iters={iters}')


#: ``--cfg-options`` of the straight-through weight training instead of AdaRound.
STE = 'model.quant.reconstruct.weight_mode=ste'
#: ``--cfg-options`` that never stop a unit early.
NO_STOP = 'model.quant.reconstruct.early_stop.patience=0'
#: ``--cfg-options`` that quantize (and reconstruct) the backbone only.
BACKBONE = 'model.quant.scope=backbone'
#: ``--cfg-options`` that quantize the backbone and the neck (detectors; heads float).
BACKBONE_NECK = 'model.quant.scope=backbone_neck'

#: ``--cfg-options`` that reconstruct a detector's neck and heads too.
NECK_HEADS = ('model.quant.reconstruct.neck=True', 'model.quant.reconstruct.heads=True')
#: ``--cfg-options``: RoI heads against the float model's features at the same regions.
FLOAT_ROI = 'model.quant.reconstruct.roi_target=float'

#: ``--cfg-options`` of mmdopq's query-quantizer objective (error of ``q @ k^T``).
QK_OUT = 'model.quant.qk_objective=output'
#: ``--cfg-options`` that calibrate activations on min/max with floored zero points.
MINMAX_FLOOR = ('model.quant.act_method=minmax', 'model.quant.act_zero_point=floor')

#: ``--cfg-options`` that calibrate the weights on the least-squares clipping of their
#: min/max range per output channel (the recipes use RepQ-ViT's percentile search).
WEIGHT_MSE = 'model.quant.weight_method=mse'

#: ``--cfg-options`` that reconstruct on 512 images (the classifiers' default is 128).
IMAGES_512 = 'model.quant.reconstruct.num_images=512'


def batch(n: int) -> str:
    """``--cfg-options`` of ``n`` images per reconstruction step (default 32, detectors 4)."""
    return f'model.quant.reconstruct.batch_size={n}'


#: ``--cfg-options`` that let reconstruction learn the post-Softmax quantizers too.
LEARN_PS = 'model.quant.reconstruct.learn_post_softmax=True'

#: Benchmark variants: name -> (``--recipe`` of tools/quantize.py, extra ``--cfg-options``).
#: The MOSF fold rules are the rows ``tanq_only`` (rule ``mean``: TanQ + RepQ-ViT's exact
#: fold), ``dopq-median`` (rule ``median``) and ``dopq`` (rule ``mad``, i.e. MOSF). The
#: ``*-qk_out`` rows add mmdopq's query-quantizer objective (error of ``q @ k^T``) to a recipe;
#: the ``*-act_minmax`` rows calibrate activations on their min/max range instead of RepQ-ViT's
#: percentile search, ``*-act_minmax_floor`` also floors their zero points (no level below the
#: range); ``*-seq`` calibrate in RepQ-ViT's order (``calib_mode='sequential'``: each layer on
#: what the quantized layers before it produce) instead of on float activations. The
#: ``tanq_only-*`` rows vary TanQ's calibration alone (objective, symmetric form, a denser search
#: grid) and the ``*-calib128`` rows calibrate on 128 images instead of 32.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    'float': ('float', ()),
    'repq': ('repq', ()),
    'dopq': ('dopq', ()),
    'tanq_only': ('tanq_only', ()),
    'mosf_only': ('mosf_only', ()),
    'dopq-median': ('dopq', ('model.quant.reparam_rule=median',)),
    'repq-qk_out': ('repq', (QK_OUT,)),
    'dopq-qk_out': ('dopq', (QK_OUT,)),
    'repq-act_minmax': ('repq', ('model.quant.act_method=minmax',)),
    'dopq-act_minmax': ('dopq', ('model.quant.act_method=minmax',)),
    'repq-act_minmax_floor': ('repq', MINMAX_FLOOR),
    'dopq-act_minmax_floor': ('dopq', MINMAX_FLOOR),
    'repq-seq': ('repq', ('model.quant.calib_mode=sequential',)),
    'dopq-seq': ('dopq', ('model.quant.calib_mode=sequential',)),
    'tanq_only-tensor_obj': ('tanq_only', ('model.quant.softmax_objective=tensor',)),
    'tanq_only-symmetric': ('tanq_only', ('model.quant.post_softmax=tan_symmetric',)),
    'tanq_only-fine_grid': (
        'tanq_only',
        (
            'model.quant.tanq_search.centres=[' + ','.join(FINE_CENTRES) + ']',
            'model.quant.tanq_search.alpha_fractions=[' + ','.join(FINE_FRACTIONS) + ']',
            'model.quant.tanq_search.refine_steps=9',
        ),
    ),
    'repq-calib128': ('repq', ('custom_hooks.0.num_images=128',)),
    # Parity with the official RepQ-ViT code (docs/method.md): the preset, and each of its
    # differences alone on top of the repq recipe. ``*-val1`` calibrate on the first val image
    # (the official detection protocol; detectors only).
    'repq_official': ('repq_official', ()),
    'repq_official-val1': ('repq_official', VAL1),
    'repq-val1': ('repq', VAL1),
    'repq-linear_pct': ('repq', ('model.quant.percentile_mode=linear',)),
    'repq-frac_zp': ('repq', ('model.quant.fold_zero_point=fractional',)),
    'dopq-calib128': ('dopq', ('custom_hooks.0.num_images=128',)),
    # Block reconstruction after calibration (docs/reconstruction.md) with the config's
    # settings and ``iters`` iterations per unit; ``*-recon`` is the default, 300.
    'repq-recon': ('repq', recon(300)),
    'dopq-recon': ('dopq', recon(300)),
    'dopq-recon100': ('dopq', recon(100)),
    'dopq-recon1000': ('dopq', recon(1000)),
    'repq-recon1000': ('repq', recon(1000)),
    'dopq-recon3000': ('dopq', recon(3000)),
    'dopq-recon-learn_ps': ('dopq', (*recon(300), LEARN_PS)),
    'dopq-recon-neck': ('dopq', (*recon(300), 'model.quant.reconstruct.neck=True')),
    'repq-recon-learn_ps': ('repq', (*recon(300), LEARN_PS)),
    'dopq-recon1000-nostop': ('dopq', (*recon(1000), NO_STOP)),
    'repq-recon-ste': ('repq', (*recon(300), STE)),
    'dopq-recon-ste': ('dopq', (*recon(300), STE)),
    'dopq-recon1000-ste': ('dopq', (*recon(1000), STE)),
    'repq-recon1000-ste': ('repq', (*recon(1000), STE)),
    'repq-recon-ste-learn_ps': ('repq', (*recon(300), STE, LEARN_PS)),
    'dopq-recon-ste-learn_ps': ('dopq', (*recon(300), STE, LEARN_PS)),
    'repq-recon1000-learn_ps': ('repq', (*recon(1000), LEARN_PS)),
    'dopq-recon1000-learn_ps': ('dopq', (*recon(1000), LEARN_PS)),
    'repq-recon1000-ste-learn_ps': ('repq', (*recon(1000), STE, LEARN_PS)),
    'dopq-recon1000-ste-learn_ps': ('dopq', (*recon(1000), STE, LEARN_PS)),
    'dopq-backbone': ('dopq', (BACKBONE,)),
    'dopq-recon-backbone': ('dopq', (*recon(300), BACKBONE)),
    'dopq-backbone_neck': ('dopq', (BACKBONE_NECK,)),
    'repq-recon-qk_out': ('repq', (*recon(300), QK_OUT)),
    'dopq-recon-qk_out': ('dopq', (*recon(300), QK_OUT)),
    'repq-recon-act_minmax_floor': ('repq', (*recon(300), *MINMAX_FLOOR)),
    'dopq-recon-act_minmax_floor': ('dopq', (*recon(300), *MINMAX_FLOOR)),
    'repq-recon-heads': ('repq', (*recon(300), *NECK_HEADS)),
    'dopq-recon-heads': ('dopq', (*recon(300), *NECK_HEADS)),
    'repq-recon-heads-float': ('repq', (*recon(300), *NECK_HEADS, FLOAT_ROI)),
    'dopq-recon-heads-float': ('dopq', (*recon(300), *NECK_HEADS, FLOAT_ROI)),
    'dopq-recon-img512': ('dopq', (*recon(300), IMAGES_512)),
    'dopq-recon1000-img512': ('dopq', (*recon(1000), IMAGES_512)),
    'dopq-recon1200-batch1': ('dopq', (*recon(1200), batch(1))),
    'dopq-recon1200-batch8': ('dopq', (*recon(1200), batch(8))),
    'repq-recon1200-batch8': ('repq', (*recon(1200), batch(8))),
    'repq-wmse': ('repq', (WEIGHT_MSE,)),
    'dopq-wmse': ('dopq', (WEIGHT_MSE,)),
    'repq-recon-wmse': ('repq', (*recon(300), WEIGHT_MSE)),
    'dopq-recon-wmse': ('dopq', (*recon(300), WEIGHT_MSE)),
    'dopq-recon-heads-wmse': ('dopq', (*recon(300), *NECK_HEADS, WEIGHT_MSE)),
    'dopq-recon100-published_lr': (
        'dopq',
        (
            *recon(100),
            'model.quant.reconstruct.lr_weight=1e-3',
            'model.quant.reconstruct.lr_step=4e-5',
        ),
    ),
}

#: What each variant is, for tables.
VARIANT_NOTES = {
    'float': 'float model (no quantization)',
    'repq': 'RepQ-ViT recipe: log-sqrt2 post-Softmax + mean fold',
    'dopq': 'DopQ-ViT: TanQ + MOSF (fold rule mad)',
    'tanq_only': 'TanQ + mean fold (= DopQ with fold rule mean)',
    'mosf_only': 'log-sqrt2 + MOSF',
    'dopq-median': 'TanQ + median fold (DopQ with fold rule median)',
    'repq-qk_out': 'RepQ-ViT recipe, query quantizer calibrated on the q @ k^T error',
    'dopq-qk_out': 'DopQ-ViT, query quantizer calibrated on the q @ k^T error',
    'repq-act_minmax': 'RepQ-ViT recipe, activations calibrated on their min/max range',
    'dopq-act_minmax': 'DopQ-ViT, activations calibrated on their min/max range',
    'repq-act_minmax_floor': 'RepQ-ViT recipe, activations on min/max ranges, zero point floored',
    'dopq-act_minmax_floor': 'DopQ-ViT, activations on min/max ranges, zero point floored',
    'repq-seq': "RepQ-ViT recipe, calibrated in RepQ-ViT's order (on quantized inputs)",
    'dopq-seq': "DopQ-ViT, calibrated in RepQ-ViT's order (on quantized inputs)",
    'tanq_only-tensor_obj': 'TanQ calibrated on its own error (not the attn @ v error) + mean fold',
    'tanq_only-symmetric': 'TanQ with the centre fixed at 0.5 + mean fold',
    'tanq_only-fine_grid': 'TanQ searched on a 19 x 21 grid, 9 x 9 refinement + mean fold',
    'repq-calib128': 'RepQ-ViT recipe calibrated on 128 images',
    'repq_official': 'the official RepQ-ViT code: sequential order, linear percentiles over the '
    'whole tensor, fractional fold zero point',
    'repq_official-val1': 'repq_official calibrated on the first val image (official detection)',
    'repq-val1': 'RepQ-ViT recipe calibrated on the first val image only',
    'repq-linear_pct': 'RepQ-ViT recipe, linear percentiles over the whole tensor (official)',
    'repq-frac_zp': 'RepQ-ViT recipe, fold zero point mean(z) left fractional (official)',
    'dopq-calib128': 'DopQ-ViT calibrated on 128 images',
    'repq-recon': 'RepQ-ViT recipe + block reconstruction, 300 iterations per unit',
    'dopq-recon': 'DopQ-ViT + block reconstruction, 300 iterations per unit',
    'dopq-recon100': 'DopQ-ViT + block reconstruction, 100 iterations per unit',
    'dopq-recon1000': 'DopQ-ViT + block reconstruction, 1000 iterations per unit',
    'repq-recon1000': 'RepQ-ViT recipe + block reconstruction, 1000 iterations per unit',
    'dopq-recon3000': 'DopQ-ViT + block reconstruction, 3000 iterations per unit',
    'dopq-recon-neck': 'DopQ-ViT + reconstruction (300 iterations) of the backbone and the '
    "detector's neck (FPN)",
    'dopq-recon-learn_ps': 'DopQ-ViT + reconstruction (300 iterations) that also learns '
    "TanQ's centre and curvature",
    'repq-recon-learn_ps': 'RepQ-ViT recipe + reconstruction (300 iterations) that also learns '
    "log-sqrt2's scale",
    'dopq-recon100-published_lr': 'DopQ-ViT + reconstruction, 100 iterations, learning rates '
    'of the published 20k-iteration schedules (1e-3 rounding, 4e-5 steps)',
    'dopq-recon1000-nostop': 'DopQ-ViT + reconstruction, 1000 iterations, no early stop',
    'repq-recon-ste': 'RepQ-ViT recipe + reconstruction (300 iterations), weights trained '
    'straight-through instead of AdaRound',
    'dopq-recon-ste': 'DopQ-ViT + reconstruction (300 iterations), weights trained '
    'straight-through instead of AdaRound',
    'dopq-recon1000-ste': 'DopQ-ViT + reconstruction (1000 iterations), weights trained '
    'straight-through',
    'repq-recon1000-ste': 'RepQ-ViT recipe + reconstruction (1000 iterations), weights trained '
    'straight-through',
    'repq-recon-ste-learn_ps': 'RepQ-ViT recipe + reconstruction (300 iterations), weights '
    "trained straight-through, log-sqrt2's scale learned",
    'dopq-recon-ste-learn_ps': 'DopQ-ViT + reconstruction (300 iterations), weights trained '
    "straight-through, TanQ's centre and curvature learned",
    'repq-recon1000-learn_ps': 'RepQ-ViT recipe + reconstruction (1000 iterations) that also '
    "learns log-sqrt2's scale",
    'dopq-recon1000-learn_ps': 'DopQ-ViT + reconstruction (1000 iterations) that also learns '
    "TanQ's centre and curvature",
    'repq-recon1000-ste-learn_ps': 'RepQ-ViT recipe + reconstruction (1000 iterations), weights '
    "trained straight-through, log-sqrt2's scale learned",
    'dopq-recon1000-ste-learn_ps': 'DopQ-ViT + reconstruction (1000 iterations), weights trained '
    "straight-through, TanQ's centre and curvature learned",
    'dopq-backbone': 'DopQ-ViT, backbone quantized only (neck and heads float)',
    'dopq-recon-backbone': 'DopQ-ViT, backbone quantized only, + reconstruction (300 iterations)',
    'dopq-backbone_neck': 'DopQ-ViT, backbone and neck quantized (heads float)',
    'repq-recon-qk_out': 'RepQ-ViT recipe, query quantizer calibrated on the q @ k^T error, '
    '+ reconstruction (300 iterations)',
    'dopq-recon-qk_out': 'DopQ-ViT, query quantizer calibrated on the q @ k^T error, '
    '+ reconstruction (300 iterations)',
    'repq-recon-act_minmax_floor': 'RepQ-ViT recipe, activations on min/max with floored zero '
    'points, + reconstruction (300 iterations)',
    'dopq-recon-act_minmax_floor': 'DopQ-ViT, activations on min/max with floored zero points, '
    '+ reconstruction (300 iterations)',
    'repq-recon-heads': 'RepQ-ViT recipe + reconstruction (300 iterations) of the backbone, the '
    'neck and the heads (RoI heads against the float head on the same regions)',
    'dopq-recon-heads': 'DopQ-ViT + reconstruction (300 iterations) of the backbone, the neck '
    'and the heads (RoI heads against the float head on the same regions)',
    'repq-recon-heads-float': 'RepQ-ViT recipe + reconstruction (300 iterations) of the '
    'backbone, the neck and the heads (RoI heads against the float model on the same regions)',
    'dopq-recon-heads-float': 'DopQ-ViT + reconstruction (300 iterations) of the backbone, the '
    'neck and the heads (RoI heads against the float model on the same regions)',
    'dopq-recon-img512': 'DopQ-ViT + reconstruction (300 iterations) on 512 images',
    'dopq-recon1000-img512': 'DopQ-ViT + reconstruction (1000 iterations) on 512 images',
    'repq-wmse': 'RepQ-ViT recipe, weights clipped per channel on least squares',
    'dopq-wmse': 'DopQ-ViT, weights clipped per channel on least squares',
    'repq-recon-wmse': 'RepQ-ViT recipe, weights clipped per channel on least squares, '
    '+ reconstruction (300 iterations)',
    'dopq-recon-wmse': 'DopQ-ViT, weights clipped per channel on least squares, '
    '+ reconstruction (300 iterations)',
    'dopq-recon-heads-wmse': 'DopQ-ViT, weights clipped per channel on least squares, '
    '+ reconstruction (300 iterations) of the backbone, the neck and the heads',
    'dopq-recon1200-batch1': 'DopQ-ViT + reconstruction, 1200 iterations of one image each '
    '(about the cost of 300 iterations of 4 images)',
    'dopq-recon1200-batch8': 'DopQ-ViT + reconstruction, 1200 iterations of 8 images each '
    '(about the cost of 300 iterations of 32 images)',
    'repq-recon1200-batch8': 'RepQ-ViT recipe + reconstruction, 1200 iterations of 8 images '
    'each (about the cost of 300 iterations of 32 images)',
}
