"""The mmdopq demo: float vs RepQ-ViT recipe vs DopQ-ViT on the reference Swin Mask R-CNN.

``make demo`` runs this after installing. It generates the reference data if it is missing,
then runs ``tools/quantize.py`` on the committed reference checkpoint for the float model and
for the RepQ-ViT recipe and DopQ at W4A4 and W6A6, prints a table (box AP, mask AP, drop vs
float, calibration and evaluation time) and writes ``results.json``, ``results.md``,
``plots/`` and each run's own work dir (log, ``results.json``, ``calib_ids.json``,
``quantized.pth``) into ``--work-dir``::

    python -m benchmarks.demo [--work-dir work_dirs/demo] [--val-images 100] [--threads 2]

(from the repository root, or with it on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

from .reference import ensure_data, get_reference_model
from .sweep import build_specs, run_sweep

DEMO_MODEL = 'mask-rcnn_swin-ref'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='mmdopq demo on the reference Mask R-CNN')
    parser.add_argument('--work-dir', default='work_dirs/demo', help='output directory')
    parser.add_argument(
        '--val-images',
        type=int,
        default=200,
        help='evaluate on the first N val images (0 = the whole val split; default 200)',
    )
    parser.add_argument(
        '--calib-images', type=int, default=32, help='calibration images (default 32)'
    )
    parser.add_argument('--recipes', nargs='+', default=['float', 'repq', 'dopq'])
    parser.add_argument('--bits', nargs='+', default=['w4a4', 'w6a6'])
    parser.add_argument('--seed', type=int, default=0, help='calibration seed')
    parser.add_argument('--threads', type=int, default=2, help='torch threads per run')
    parser.add_argument('--model', default=DEMO_MODEL, help='reference model name')
    parser.add_argument('--checkpoint', help='float checkpoint (default: the committed one)')
    parser.add_argument('--no-plots', action='store_true', help='skip the plots')
    parser.add_argument(
        '--data-subset',
        type=int,
        nargs=2,
        metavar=('N_TRAIN', 'N_VAL'),
        help='generate only the first N_TRAIN / N_VAL images of the reference data (a quick '
        'look; images are the same as in the full set, which is replaced if present)',
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    model = get_reference_model(args.model)
    ckpt = args.checkpoint or model.path('checkpoint')
    if not osp.isfile(ckpt):
        raise FileNotFoundError(f'reference checkpoint not found: {ckpt}')
    print(f'mmdopq demo: {model.name} ({model.float_config})', flush=True)
    subset = {}
    if args.data_subset:
        subset = dict(num_train=args.data_subset[0], num_val=args.data_subset[1])
    summary = ensure_data(model.path('float_config'), **subset)
    state = 'up to date' if summary.get('skipped') else f'generated in {summary["seconds"]:.0f}s'
    print(f'data: {summary.get("out_dir", summary.get("root"))} {state}', flush=True)
    opts = []
    if args.val_images > 0:
        opts.append(f'test_dataloader.dataset.indices={args.val_images}')
    opts.append(f'custom_hooks.0.num_images={args.calib_images}')
    specs = build_specs(
        [model],
        args.recipes,
        args.bits,
        [args.seed],
        args.work_dir,
        {model.name: opts},
        save=True,
        options_subdir=False,
    )
    for s in specs:
        s.checkpoint = ckpt
    out = run_sweep(
        specs,
        args.work_dir,
        title=f'mmdopq demo: {model.name}',
        command=' '.join(['python -m benchmarks.demo', *sys.argv[1:]])
        if argv is None
        else ' '.join(argv),
        threads=args.threads,
        echo=lambda m: print(m, flush=True),
        plots=not args.no_plots,
    )
    with open(out['md']) as f:
        print('\n' + f.read())
    print(f'wrote {out["json"]}, {out["md"]} and {len(out["plots"])} plots')
    print(f'demo finished in {time.perf_counter() - t0:.0f}s')
    return out


if __name__ == '__main__':
    main()
