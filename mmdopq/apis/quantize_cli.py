"""The config-driven quantization tool: ``mmdopq-quantize`` / ``python -m mmdopq quantize``.

Like mmdet's ``tools/test.py``, with calibration::

    mmdopq-quantize CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
                    [--recipe NAME] [--bits wXaY] [--seed N]
                    [--out preds.pkl] [--launcher none|pytorch|slurm]

``CHECKPOINT`` is a float checkpoint (calibration runs in ``QuantCalibrationHook``:
calibrate -> reparameterize -> re-calibrate) or a quantized checkpoint written by this tool
(evaluated as is). With ``model.quant.recipe='float'`` the stock float model is evaluated
(no calibration, no ``quantized.pth``): the baseline of the same config family. Writes into
the work dir: ``results.json`` (metrics, recipe, bits, scope, calibration ids and size, seed,
versions, wall times), ``calib_ids.json`` and the quantized checkpoint ``quantized.pth``
(each atomically).
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import platform
import re
import sys
import time

import mmdopq

from ..recipe import RECIPES, QuantRecipe, use_recipe
from ..utils.data_checks import check_dataset_cfg
from ..utils.fileio import dump_json_atomic
from .checkpoint import check_same_recipe, load_checkpoint_file, load_into, save_quantized


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='mmdopq: post-training quantization and evaluation of a model'
    )
    parser.add_argument('config', help='mmdopq config file')
    parser.add_argument(
        'checkpoint',
        help='float or quantized checkpoint (.pth/.bin/.safetensors), or timm://<name> for '
        "timm's pretrained weights (needs the model hub)",
    )
    parser.add_argument('--work-dir', help='directory for logs, results.json and quantized.pth')
    parser.add_argument('--out', help='dump predictions to this pickle file (like mmdet)')
    parser.add_argument('--no-save', action='store_true', help='do not write quantized.pth')
    parser.add_argument(
        '--recipe',
        choices=sorted(RECIPES),
        help="replace the config's recipe and its components (post-Softmax quantizer and "
        'objective, LayerNorm fold rule) by this named recipe',
    )
    parser.add_argument('--bits', help='weight/activation bits as wXaY, e.g. w6a6')
    parser.add_argument(
        '--seed', type=int, help='calibration seed (image draw and quantizer subsampling)'
    )
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override config keys, xxx=yyy format'
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args):
    from mmengine.config import Config

    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    apply_recipe_args(cfg, args)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    model_cfg = cfg.get('model', {})
    if model_cfg.get('type') != 'mmdopq.QuantizedModel':
        raise ValueError(
            f'{args.config}: model.type must be mmdopq.QuantizedModel, got '
            f'{model_cfg.get("type")!r}'
        )
    recipe = QuantRecipe.from_cfg(model_cfg.get('quant', {}))  # fail early on bad quant keys
    hooks = [
        h
        for h in cfg.get('custom_hooks', [])
        if h.get('type') in ('mmdopq.QuantCalibrationHook', 'QuantCalibrationHook')
    ]
    if len(hooks) != 1:
        raise ValueError(
            f'{args.config}: custom_hooks needs exactly one mmdopq.QuantCalibrationHook'
        )
    check_dataset_cfg(cfg.test_dataloader.dataset, 'test_dataloader.dataset')
    calib_dataset = dict(hooks[0]['dataloader']['dataset'])
    calib_dataset.setdefault('pipeline', cfg.test_dataloader.dataset.get('pipeline'))
    check_dataset_cfg(calib_dataset, 'custom_hooks.QuantCalibrationHook.dataloader.dataset')
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out}')
        evaluator = cfg.test_evaluator
        metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
        detection = any('Coco' in str(m.get('type', '')) for m in metrics)
        # mmdet's dumper keeps masks RLE-encoded; mmengine's is generic (classification)
        dump = dict(type='DumpDetResults' if detection else 'DumpResults', out_file_path=args.out)
        if isinstance(evaluator, (list, tuple)):
            cfg.test_evaluator = [*evaluator, dump]
        else:
            cfg.test_evaluator = [evaluator, dump]
    return cfg, recipe


def parse_bits(text: str) -> tuple[int, int]:
    """``'w4a4'`` -> ``(4, 4)``, with an error that names the bad value."""
    m = re.fullmatch(r'w(\d+)a(\d+)', text.strip().lower())
    if not m:
        raise ValueError(f'--bits must look like w4a4 (weight and activation bits), got {text!r}')
    return int(m.group(1)), int(m.group(2))


def apply_recipe_args(cfg, args) -> None:
    """Apply ``--recipe``, ``--bits`` and ``--seed`` to ``cfg`` (before ``--cfg-options``)."""
    quant = cfg.get('model', {}).get('quant')
    if quant is None:
        return
    if args.recipe:
        use_recipe(quant, args.recipe)
    if args.bits:
        quant['wbits'], quant['abits'] = parse_bits(args.bits)
    if args.seed is not None:
        quant['seed'] = args.seed
        for hook in cfg.get('custom_hooks', []):
            if hook.get('type') in ('mmdopq.QuantCalibrationHook', 'QuantCalibrationHook'):
                hook['seed'] = args.seed


def setup_cpu_distributed(cfg) -> None:
    """``--launcher pytorch`` without CUDA: start a gloo process group ourselves.

    mmengine 0.10.7's pytorch launcher always calls ``torch.cuda.set_device``,
    which fails on CPU-only machines. Tests (and CPU clusters) still want sharded
    evaluation: init gloo from torchrun's environment and let the runner see an
    initialised process group with ``launcher='none'`` (no DDP wrapper is needed
    for evaluation; samplers and metric collection use the process group).
    """
    import torch
    import torch.distributed as dist

    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.launcher = 'none'


def versions() -> dict:
    import mmcv
    import mmengine
    import torch

    out = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        mmcv=mmcv.__version__,
        mmengine=mmengine.__version__,
        mmdopq=mmdopq.__version__,
        machine=f'{platform.machine()} {platform.system()}',
        cpu_threads=torch.get_num_threads(),
        cuda=torch.cuda.is_available(),
    )
    for name in ('mmdet', 'timm'):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def build_runner(args) -> tuple:
    """Config, recipe, runner and model with ``args.checkpoint`` loaded strictly.

    Returns:
        tuple: ``(cfg, recipe, runner, model, loaded, was_quantized)``; ``loaded`` is
        :func:`load_checkpoint_file`'s result, ``was_quantized`` whether the checkpoint held
        quantizer state.
    """
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner

    cfg, recipe = load_config(args)
    loaded = load_checkpoint_file(args.checkpoint)
    setup_cpu_distributed(cfg)
    cfg.load_from = None  # loaded below, strictly
    runner = Runner.from_cfg(cfg)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    check_same_recipe(loaded['ckpt'], recipe, args.checkpoint)
    was_quantized = load_into(model, loaded['state_dict'], args.checkpoint)
    return cfg, recipe, runner, model, loaded, was_quantized


def run(argv=None) -> dict:
    """Run the tool on ``argv`` (``None``: ``sys.argv[1:]``); returns the results record.

    The record is also written to ``<work_dir>/results.json``.
    """
    args = parse_args(argv)
    from mmengine.dist import is_main_process

    from mmdopq.engine.hooks import QuantCalibrationHook

    cfg, recipe, runner, model, _, was_quantized = build_runner(args)
    hook = next(h for h in runner.hooks if isinstance(h, QuantCalibrationHook))
    t0 = time.perf_counter()
    metrics = runner.test()
    total_s = time.perf_counter() - t0
    record = hook.record
    calib_s = 0.0 if record.get('skipped') else record['times']['total_s']
    results = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        metrics=metrics,
        recipe=recipe.recipe,
        bits=recipe.bits_tag,
        wbits=recipe.wbits,
        abits=recipe.abits,
        scope=recipe.scope,
        quant=recipe.to_dict(),
        calibration=dict(
            from_checkpoint=bool(record.get('skipped')) and not recipe.is_float,
            **{k: v for k, v in record.items() if k not in ('recipe', 'skipped')},
        ),
        seed=recipe.seed,
        test_images=len(runner.test_loop.dataloader.dataset),
        calib_s=calib_s,
        eval_s=total_s - calib_s,
        total_s=total_s,
        versions=versions(),
        argv=sys.argv if argv is None else list(argv),
        input_checkpoint_quantized=was_quantized,
    )
    if is_main_process():
        if not args.no_save and not recipe.is_float:  # a float run has nothing new to save
            path = osp.join(cfg.work_dir, 'quantized.pth')
            save_quantized(
                model,
                path,
                dict(
                    recipe=recipe.to_dict(),
                    calibration=results['calibration'],
                    metrics=metrics,
                    versions=results['versions'],
                    config=args.config,
                ),
            )
            results['quantized_checkpoint'] = path
        dump_json_atomic(results, osp.join(cfg.work_dir, 'results.json'))
        runner.logger.info(f'mmdopq: results written to {osp.join(cfg.work_dir, "results.json")}')
    return results


def main(argv=None) -> None:
    """Console entry point (``mmdopq-quantize``): :func:`run`, exit status 0 on success."""
    run(argv)


if __name__ == '__main__':
    main()
