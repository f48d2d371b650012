"""Train a model with an mmdopq / mmdet config (thin over MMEngine's Runner, like mmdet's).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...]
                          [--launcher none|pytorch|slurm]

Used for the reference models that mmdopq quantizes in its demo and benchmark
(``configs/reference/``). ``--resume`` without a path resumes from the latest
checkpoint in the work dir, so long CPU trainings can be continued.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp

import mmdopq  # noqa: F401  (version checks, checkpoint compat)


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='mmdopq: train a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from this checkpoint, or from the latest one in the work dir if no path',
    )
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override config keys, xxx=yyy'
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    """Train; returns the runner (for tests and scripts)."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'checkpoint to resume from not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
