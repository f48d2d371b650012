"""Measure and record a reference model's float metrics (``configs/reference/float_metrics.json``).

Evaluates the committed checkpoint with ``tools/quantize.py --recipe float`` on the whole val
split of its data and on a small generated subset (the first images of each split, the same
images as in the full set) that the test suite re-evaluates to check the checkpoint::

    python -m benchmarks.reference.record_float_metrics mask-rcnn_swin-ref [--subset-val 20]
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile

from mmdopq.utils.fileio import dump_json_atomic

from ..sweep import percent
from .data import ensure_data
from .models import REPO_ROOT, get_reference_model

RECORD = osp.join(REPO_ROOT, 'configs', 'reference', 'float_metrics.json')
#: Absolute tolerance (metric units as ``runner.test()`` returns them) of the subset check:
#: the evaluation is deterministic on one machine; this absorbs float reduction-order changes.
TOLERANCE = {'detection': 0.005, 'classification': 0.5}


def float_eval(model, cwd: str, work_dir: str, threads: int) -> dict:
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'quantize.py')]
    cmd += [model.path('quant_config'), model.path('checkpoint'), '--recipe', 'float']
    cmd += ['--work-dir', work_dir]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}')
    with open(osp.join(work_dir, 'results.json')) as f:
        return json.load(f)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description='record float metrics of a reference model')
    parser.add_argument('name', help='reference model name')
    parser.add_argument('--subset-train', type=int, default=2, help='train images (per class)')
    parser.add_argument('--subset-val', type=int, default=20, help='val images (per class)')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    model = get_reference_model(args.name)
    ensure_data(model.path('float_config'))
    with tempfile.TemporaryDirectory() as tmp:
        full = float_eval(model, os.getcwd(), osp.join(tmp, 'full'), args.threads)
        sub_root = osp.join(tmp, 'subset')
        os.makedirs(sub_root)
        ensure_data(
            model.path('float_config'),
            root=sub_root,
            num_train=args.subset_train,
            num_val=args.subset_val,
        )
        sub = float_eval(model, sub_root, osp.join(tmp, 'subset_wd'), args.threads)
    names = model.metric_names
    record = dict(
        val=dict(
            test_images=full['test_images'],
            metrics={k: full['metrics'][k] for k in names},
            metrics_percent={k: percent(k, full['metrics'][k]) for k in names},
            eval_s=full['eval_s'],
            versions=full['versions'],
        ),
        subset=dict(
            num_train=args.subset_train,
            num_val=args.subset_val,
            test_images=sub['test_images'],
            metrics={k: sub['metrics'][k] for k in names},
            tolerance=TOLERANCE[model.task],
        ),
    )
    data = {}
    if osp.isfile(RECORD):
        with open(RECORD) as f:
            data = json.load(f)
    data[model.name] = record
    dump_json_atomic(data, RECORD)
    print(json.dumps({model.name: record}, indent=1))
    return record


if __name__ == '__main__':
    main()
