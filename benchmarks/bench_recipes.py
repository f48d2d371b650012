"""Recipe benchmark: every reference model x recipe x bit width x calibration seed.

Runs ``tools/quantize.py`` (one process per run, see :mod:`benchmarks.sweep`) on the
committed reference checkpoints and writes ``benchmarks/results.json`` (machine, versions, one
record per (model, recipe, bits) with the mean and spread over seeds, and every per-seed run),
``benchmarks/results.md`` and ``benchmarks/plots/``. Finished runs are reused from the work
dir, so an interrupted benchmark resumes::

    python -m benchmarks.bench_recipes                       # everything (hours on a CPU)
    python -m benchmarks.bench_recipes --models vit-ref --bits w4a4 --seeds 0 1 2
    python -m benchmarks.bench_recipes --models swin-ref --merge   # replace one model's rows
    python -m benchmarks.bench_recipes --seeds 0 1 --runs-from old/results.json  # seed 0 ran there

``--split tune`` evaluates on each model's held-out tuning split instead (same generator, another
seed, never trained on and never reported; :func:`benchmarks.reference.ensure_tune_split`) and
writes to ``benchmarks/tune/``: anything tuned or investigated is judged there, never on val.
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys

from .reference import REFERENCE_MODELS, ensure_data, ensure_tune_split, get_reference_model
from .sweep import VARIANTS, build_specs, run_sweep

HERE = osp.dirname(osp.abspath(__file__))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='mmdopq recipe benchmark')
    parser.add_argument('--models', nargs='+', default=sorted(REFERENCE_MODELS))
    parser.add_argument('--recipes', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--bits', nargs='+', default=['w3a3', 'w4a4', 'w6a6'])
    parser.add_argument(
        '--seeds',
        nargs='+',
        default=['0', '1', '2'],
        metavar='S|BITS=S[,S...]',
        help='calibration seeds of every bit width (default 0 1 2); BITS=S,... sets those of '
        'one width (e.g. 0 1 2 w6a6=0)',
    )
    parser.add_argument(
        '--val-images',
        nargs='+',
        default=['0'],
        metavar='N|MODEL=N',
        help='evaluate on the first N val images (0: all, the default); N applies to every '
        'model, MODEL=N to one (e.g. mask-rcnn_swin-ref=200)',
    )
    parser.add_argument(
        '--split',
        choices=('val', 'tune'),
        default='val',
        help='val (reported) or tune (the held-out tuning split, for investigations)',
    )
    parser.add_argument('--threads', type=int, default=2, help='torch threads per run')
    parser.add_argument(
        '--merge',
        action='store_true',
        help='keep the rows of other models already in the output results.json (each keeps '
        'its own sweep date, command, machine and versions); this sweep replaces its models',
    )
    parser.add_argument(
        '--runs-from',
        nargs='+',
        default=[],
        metavar='RESULTS_JSON',
        help="take runs recorded in these sweeps' results.json (same command but for its "
        '--work-dir, same checkpoint and threads) instead of running them again, e.g. seeds '
        'an earlier session ran',
    )
    parser.add_argument(
        '--work-dir',
        help='per-run outputs (default: work_dirs/bench_recipes, or work_dirs/bench_recipes_tune)',
    )
    parser.add_argument(
        '--out-dir', help='results.{json,md} and plots/ go here (default: benchmarks/[tune/])'
    )
    args = parser.parse_args(argv)
    args.val_images = parse_val_images(parser, args.val_images, args.models)
    args.seeds = parse_seeds(parser, args.seeds, args.bits)
    tune = args.split == 'tune'
    args.work_dir = args.work_dir or 'work_dirs/bench_recipes' + ('_tune' if tune else '')
    args.out_dir = args.out_dir or (osp.join(HERE, 'tune') if tune else HERE)
    return args


def parse_val_images(parser, values, models) -> dict:
    """``['200']`` or ``['mask-rcnn_swin-ref=200', ...]`` -> {model: N} (0 = all images)."""
    out = dict.fromkeys(models, 0)
    for v in values:
        name, _, n = v.rpartition('=')
        if name and name not in out:
            parser.error(f'--val-images {v}: {name!r} is not among --models {models}')
        if not n.isdigit():
            parser.error(f'--val-images {v}: expected N or MODEL=N with N >= 0')
        for m in [name] if name else models:
            out[m] = int(n)
    return out


def parse_seeds(parser, values, bits) -> dict:
    """``['0', '1', '2']`` or ``['0', '1', '2', 'w6a6=0']`` -> {bits: [seeds]}."""
    common, per_bits = [], {}
    for v in values:
        name, _, seeds = v.rpartition('=')
        if name and name not in bits:
            parser.error(f'--seeds {v}: {name!r} is not among --bits {bits}')
        parsed = [s for s in seeds.split(',') if s]
        if not parsed or not all(s.isdigit() for s in parsed):
            parser.error(f'--seeds {v}: expected S or BITS=S[,S...] with integer seeds >= 0')
        if name:
            per_bits[name] = [int(s) for s in parsed]
        else:
            common += [int(s) for s in parsed]
    out = {b: per_bits.get(b, common) for b in bits}
    empty = [b for b, s in out.items() if not s]
    if empty:
        parser.error(f'--seeds {values}: no seeds for {empty}')
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    models = [get_reference_model(m) for m in args.models]
    opts = {}
    for m in models:
        ensure_data(m.path('float_config'))  # calibration always draws from the train split
        opts[m.name] = []
        if args.split == 'tune':
            opts[m.name] += ensure_tune_split(m.path('float_config'))[1]
        if args.val_images[m.name] > 0:
            opts[m.name].append(f'test_dataloader.dataset.indices={args.val_images[m.name]}')
    specs = build_specs(models, args.recipes, args.bits, args.seeds, args.work_dir, opts)
    split = 'held-out tuning split' if args.split == 'tune' else 'val split'
    out = run_sweep(
        specs,
        args.out_dir,
        title=f'mmdopq recipe benchmark ({split})',
        command=' '.join(['python -m benchmarks.bench_recipes', *sys.argv[1:]])
        if argv is None
        else ' '.join(argv),
        threads=args.threads,
        echo=lambda m: print(m, flush=True),
        merge=args.merge,
        runs_from=args.runs_from,
    )
    print(f'wrote {out["json"]} and {out["md"]}')
    return out


if __name__ == '__main__':
    main()
