"""Speed and memory of calibration and fake-quant inference vs float, on this CPU.

Models (random weights):

* ``mask-rcnn-swin-t``: Swin-T Mask R-CNN at 800x1333 (detection track; 8 images);
* ``deit-s``: timm DeiT-S at 224x224 (ImageNet track; 32 images, batches of 8);
* ``vit-ref`` / ``swin-ref``: the reference classifiers' architectures at their 64 / 56 px
  inputs (32 calibration images; timed passes over 4 batches of 100, their test batch size).

Measures, side by side in one invocation (each mode in its own subprocess so
that peak RSS is per mode):

* ``float``: N float forward passes (``test_step``);
* ``calib``: the whole calibration of N images (observe passes, calibrate,
  LayerNorm reparameterize, re-calibrate);
* ``quant``: N fake-quantized forward passes of the calibrated model; then, in the same
  process, ``--repeats`` float and fake-quant passes **interleaved** (float, quant, float,
  ...), whose median ratio is the least noisy figure on a shared machine.

Targets (issues 4 and 6): calibration <= 3x the N float passes, fake-quant
forward <= 1.5x float, peak memory <= 1.5x float.

    python -m benchmarks.bench_speed [--model mask-rcnn-swin-t|deit-s|vit-ref|swin-ref]
                                     [--images N] [--recipe dopq] [--repeats 3] [--json out.json]

Float and fake-quant times are the median of ``--repeats`` passes; calibration
runs once (it is a one-off; it includes its own observe pass over the images).
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = {
    'mask-rcnn-swin-t': dict(
        config='configs/dopq/{recipe}_w4a4_mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
        scope='mmdet',
        images=8,
        batch=1,
    ),
    'deit-s': dict(
        config='configs/imagenet/{recipe}_w4a4_deit-small-p16_in1k.py',
        scope='mmpretrain',
        images=32,
        batch=8,
        size=224,
    ),
    # the reference classifiers: their test batches (4 x 100) are timed, not the 32
    # calibration images, which one pass of these tiny models would barely register
    **{
        name: dict(
            config=f'configs/reference/dopq_w4a4_{stem}_synthetic-cls.py',
            scope='mmpretrain',
            images=32,
            batch=8,
            size=size,
            timed_images=400,
            timed_batch=100,
        )
        for name, stem, size in (('vit-ref', 'vit-ref-p8', 64), ('swin-ref', 'swin-ref-p4-w7', 56))
    },
}


def make_batches(model_name: str, n: int, seed: int = 0, batch: Optional[int] = None) -> list:
    """Random uint8 images packed like the model's test dataloader would."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    spec = MODELS[model_name]
    batch = batch or spec['batch']
    batches = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        if spec['scope'] == 'mmpretrain':
            from mmpretrain.structures import DataSample

            side = spec['size']
            imgs = [
                torch.randint(0, 256, (3, side, side), generator=gen, dtype=torch.uint8)
                for _ in range(size)
            ]
            samples = [DataSample().set_gt_label(0) for _ in range(size)]
        else:
            from mmdet.structures import DetDataSample

            imgs = [
                torch.randint(0, 256, (3, 800, 1333), generator=gen, dtype=torch.uint8)
                for _ in range(size)
            ]
            samples = [
                DetDataSample(
                    metainfo=dict(
                        img_id=start + i,
                        img_shape=(800, 1333),
                        ori_shape=(800, 1333),
                        scale_factor=(1.0, 1.0),
                    )
                )
                for i in range(size)
            ]
        batches.append(dict(inputs=imgs, data_samples=samples))
    return batches


def build(model_name: str, recipe: str):
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS as ROOT
    from mmengine.registry import DefaultScope

    from mmdopq.recipe import use_recipe

    spec = MODELS[model_name]
    cfg = Config.fromfile(osp.join(REPO, spec['config'].format(recipe=recipe)))
    if spec['scope'] == 'mmpretrain':
        use_recipe(cfg.model.quant, recipe)  # the reference configs are DopQ ones
    else:
        cfg.model.architecture.backbone.init_cfg = None
        # Random weights: keep the RoI-head workload identical in float and fake-quant
        # runs (always the top 100 detections, masks pasted for all of them).
        cfg.model.architecture.test_cfg.rcnn.score_thr = 0.0
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(spec['scope']):
        model = ROOT.build(cfg.model)
    if hasattr(model, 'init_weights'):
        model.init_weights()
    return model.eval()


def timed_passes(model, batches: list, repeats: int) -> dict:
    """Median wall time of ``repeats`` passes over all batches (and every pass time)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for b in batches:
            model.test_step(b)
        times.append(time.perf_counter() - t)
    return dict(seconds=statistics.median(times), pass_seconds=times)


def interleaved_passes(model, batches: list, repeats: int) -> dict:
    """Float and fake-quant passes in turn, in one process: drift on a shared machine hits
    both alike, so the median of the per-pair ratios is the steadiest speed figure."""
    from mmdopq.nn import set_quant_mode

    pairs = []
    for _ in range(repeats):
        pair = []
        for mode in ('float', 'quant'):
            set_quant_mode(model, mode)
            pair.append(timed_passes(model, batches, 1)['seconds'])
        pairs.append(pair)
    set_quant_mode(model, 'quant')
    return dict(
        float_s=statistics.median(p[0] for p in pairs),
        quant_s=statistics.median(p[1] for p in pairs),
        quant_vs_float=statistics.median(p[1] / p[0] for p in pairs),
        pair_seconds=pairs,
    )


def worker(
    model_name: str, mode: str, n: int, recipe: str, state_file: str, repeats: int = 1
) -> dict:
    import torch

    from mmdopq.nn import set_quant_mode

    torch.manual_seed(0)
    model = build(model_name, recipe)
    spec = MODELS[model_name]
    if mode != 'calib' and 'timed_images' in spec:  # tiny models: time test-size batches
        batches = make_batches(model_name, spec['timed_images'], 1, spec['timed_batch'])
    else:
        batches = make_batches(model_name, n)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # 'images': images per timed pass (the calibration images for calib)
    images = sum(len(b['inputs']) for b in batches)
    res = dict(model=model_name, mode=mode, images=images, threads=torch.get_num_threads())
    with torch.no_grad():
        model.test_step(batches[0])  # untimed warm-up (lazy init, allocator, kernels)
        if mode == 'float':
            res.update(timed_passes(model, batches, repeats))
        elif mode == 'calib':
            plan = model.quant_plan
            t = time.perf_counter()
            plan.start_calibration(model)
            for b in batches:
                model.test_step(b)
            t_obs = time.perf_counter()
            plan.calibrate_sites()
            t_cal = time.perf_counter()
            plan.reparameterize()
            t_rep = time.perf_counter()
            plan.recalibrate(model)
            t_end = time.perf_counter()
            res.update(
                seconds=t_end - t,
                observe_s=t_obs - t,
                calibrate_s=t_cal - t_obs,
                reparameterize_s=t_rep - t_cal,
                recalibrate_s=t_end - t_rep,
            )
            torch.save(model.state_dict(), state_file)
        else:  # quant: fake-quantized passes of the model calibrated by the calib worker
            model.load_state_dict(torch.load(state_file, weights_only=True))
            assert model.quant_plan.is_calibrated
            set_quant_mode(model, 'quant')
            res.update(timed_passes(model, batches, repeats))
            res['interleaved'] = interleaved_passes(model, batches, repeats)
    res['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res['rss_after_build_mb'] = rss_built
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='mask-rcnn-swin-t', choices=sorted(MODELS))
    parser.add_argument('--images', type=int, help='default: 8 (detection), 32 (deit-s)')
    parser.add_argument('--recipe', default='dopq', choices=['dopq', 'repq'])
    parser.add_argument(
        '--repeats', type=int, default=3, help='timed passes of float/quant (median reported)'
    )
    parser.add_argument('--json', help='write the results here')
    parser.add_argument('--worker', choices=['float', 'calib', 'quant'], help=argparse.SUPPRESS)
    parser.add_argument(
        '--state-file',
        default='/tmp/mmdopq_bench_speed_calibrated.pth',
        help='where the calib worker leaves the calibrated state for quant',
    )
    args = parser.parse_args()
    args.images = args.images or MODELS[args.model]['images']
    if args.worker:
        print(
            'RESULT '
            + json.dumps(
                worker(
                    args.model, args.worker, args.images, args.recipe, args.state_file, args.repeats
                )
            ),
            flush=True,
        )
        return
    results = {}
    for mode in ('float', 'calib', 'quant'):
        print(
            f'running {args.model} {mode} ({args.images} images, recipe {args.recipe}) ...',
            flush=True,
        )
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                '--worker',
                mode,
                '--model',
                args.model,
                '--images',
                str(args.images),
                '--recipe',
                args.recipe,
                '--repeats',
                str(args.repeats),
                '--state-file',
                args.state_file,
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        line = [ln for ln in out.stdout.splitlines() if ln.startswith('RESULT ')]
        if out.returncode or not line:
            sys.exit(f'{mode} worker failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}')
        results[mode] = json.loads(line[0][7:])
        print(json.dumps(results[mode]), flush=True)
    f = results['float']
    ratios = dict(
        # over one float pass of the calibration images (timed passes may hold more images)
        calib_vs_float=results['calib']['seconds']
        / (f['seconds'] / f['images'] * results['calib']['images']),
        quant_vs_float=results['quant']['seconds'] / f['seconds'],
        calib_peak_mem_vs_float=results['calib']['peak_rss_mb'] / f['peak_rss_mb'],
        quant_peak_mem_vs_float=results['quant']['peak_rss_mb'] / f['peak_rss_mb'],
        quant_vs_float_interleaved=results['quant']['interleaved']['quant_vs_float'],
    )
    print('\n| mode | images | seconds | s/image | peak RSS MB |\n|---|---|---|---|---|')
    for mode, r in results.items():
        print(
            f'| {mode} | {r["images"]} | {r["seconds"]:.1f} | {r["seconds"] / r["images"]:.3f} | '
            f'{r["peak_rss_mb"]:.0f} |'
        )
    print('\n' + '\n'.join(f'{k}: {v:.2f}' for k, v in ratios.items()))
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(dict(results=results, ratios=ratios), fh, indent=2)


if __name__ == '__main__':
    main()
