"""Recipe benchmark: every reference model x recipe x bit width x calibration seed.

Runs ``tools/quantize.py`` (one process per run, see :mod:`mmdopq.apis.recipe_sweep`) on the
committed reference checkpoints and writes ``benchmarks/results.json`` (machine, versions, one
record per (model, recipe, bits) with the mean and spread over seeds, and every per-seed run),
``benchmarks/results.md`` and ``benchmarks/plots/``. Finished runs are reused from the work
dir, so an interrupted benchmark resumes::

    python benchmarks/bench_recipes.py                       # everything (hours on a CPU)
    python benchmarks/bench_recipes.py --models vit-ref --bits w4a4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys

from mmdopq.apis import REFERENCE_MODELS, VARIANTS, ensure_data, get_reference_model
from mmdopq.apis.recipe_sweep import build_specs, run_sweep

HERE = osp.dirname(osp.abspath(__file__))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='mmdopq recipe benchmark')
    parser.add_argument('--models', nargs='+', default=sorted(REFERENCE_MODELS))
    parser.add_argument('--recipes', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--bits', nargs='+', default=['w3a3', 'w4a4', 'w6a6'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument(
        '--val-images',
        type=int,
        default=0,
        help='evaluate on the first N val images of each model (default 0: all)',
    )
    parser.add_argument('--threads', type=int, default=2, help='torch threads per run')
    parser.add_argument('--work-dir', default='work_dirs/bench_recipes', help='per-run outputs')
    parser.add_argument('--out-dir', default=HERE, help='results.{json,md} and plots/ go here')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    models = [get_reference_model(m) for m in args.models]
    for m in models:
        ensure_data(m.path('float_config'))
    opts = {}
    if args.val_images > 0:
        opts = {m.name: [f'test_dataloader.dataset.indices={args.val_images}'] for m in models}
    specs = build_specs(models, args.recipes, args.bits, args.seeds, args.work_dir, opts)
    out = run_sweep(
        specs,
        args.out_dir,
        title='mmdopq recipe benchmark',
        command=' '.join(['python', *sys.argv]) if argv is None else ' '.join(argv),
        threads=args.threads,
        echo=lambda m: print(m, flush=True),
    )
    print(f'wrote {out["json"]} and {out["md"]}')
    return out


if __name__ == '__main__':
    main()
