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
import tempfile
import time
from typing import Optional

import mmdopq

from ..quantizers import check_bits
from ..recipe import RECIPES, QuantRecipe, use_recipe
from ..utils.data_checks import check_dataset_cfg
from ..utils.errors import (
    ConfigError,
    DataError,
    ImageError,
    MissingFileError,
    UserError,
    WorkDirError,
)
from ..utils.fileio import dump_json_atomic, file_sha256, json_safe
from .checkpoint import check_same_recipe, load_checkpoint_file, load_into, save_quantized

#: ``--reconstruct`` without ITERS: the config's ``reconstruct.iters`` (or the default). Not
#: a string, which argparse would pass through ``type=int``.
CONFIG_ITERS = object()


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
    parser.add_argument(
        '--reconstruct',
        type=int,
        nargs='?',
        const=CONFIG_ITERS,
        metavar='ITERS',
        help='block reconstruction after calibration with ITERS iterations per unit '
        "(0: off); without ITERS, the config's model.quant.reconstruct.iters (or the "
        'default); other settings under model.quant.reconstruct',
    )
    parser.add_argument(
        '--debug', action='store_true', help='show the traceback of expected errors too'
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args):
    from mmengine.config import Config

    if not osp.isfile(args.config):
        raise MissingFileError(f'config file not found: {args.config}')
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
        raise ConfigError(
            f'{args.config}: model.type must be mmdopq.QuantizedModel, got '
            f'{model_cfg.get("type")!r}'
        )
    try:  # fail early on bad quant keys
        recipe = QuantRecipe.from_cfg(model_cfg.get('quant', {}))
    except ValueError as e:
        raise ConfigError(f'{args.config}: {e}') from None
    hooks = [
        h
        for h in cfg.get('custom_hooks', [])
        if h.get('type') in ('mmdopq.QuantCalibrationHook', 'QuantCalibrationHook')
    ]
    if len(hooks) != 1:
        raise ConfigError(
            f'{args.config}: custom_hooks needs exactly one mmdopq.QuantCalibrationHook'
        )
    check_dataset_cfg(cfg.test_dataloader.dataset, 'test_dataloader.dataset')
    calib_dataset = dict(hooks[0]['dataloader']['dataset'])
    calib_dataset.setdefault('pipeline', cfg.test_dataloader.dataset.get('pipeline'))
    check_dataset_cfg(calib_dataset, 'custom_hooks.QuantCalibrationHook.dataloader.dataset')
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ConfigError(f'--out must be a .pkl or .pickle file, got {args.out}')
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
        raise ConfigError(f'--bits must look like w4a4 (weight and activation bits), got {text!r}')
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
        for bits in (quant['wbits'], quant['abits']):
            try:
                check_bits(bits)
            except ValueError as e:
                raise ConfigError(f'--bits {args.bits}: {e}') from None
    if getattr(args, 'reconstruct', None) is not None:
        rest = dict(quant.get('reconstruct') or {})
        # the config's own settings (e.g. a detector's batch size) stay, switched on
        if args.reconstruct is CONFIG_ITERS:
            quant['reconstruct'] = dict(rest, enabled=True)
        elif args.reconstruct < 0:
            raise ConfigError(f'--reconstruct {args.reconstruct}: give iterations >= 0 (0: off)')
        elif args.reconstruct:
            quant['reconstruct'] = dict(rest, iters=args.reconstruct, enabled=True)
        else:
            quant['reconstruct'] = {}
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


def check_launcher(args) -> None:
    """``--launcher pytorch`` needs torchrun's environment (``RANK``, ``WORLD_SIZE``, ...)."""
    if args.launcher == 'pytorch' and not all(k in os.environ for k in ('RANK', 'WORLD_SIZE')):
        raise ConfigError(
            '--launcher pytorch needs the environment torchrun sets (RANK, WORLD_SIZE, '
            'MASTER_ADDR): start it with `torchrun --nproc_per_node N ...` or '
            '`bash tools/dist_quantize.sh CONFIG CHECKPOINT N`, or drop --launcher'
        )


def check_work_dir(work_dir: str) -> None:
    """The work dir must be creatable and writable (mmengine would fail with a bare error)."""
    try:
        os.makedirs(work_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix='.mmdopq-write-test-'):
            pass
    except OSError as e:
        raise WorkDirError(
            f'work dir {work_dir} is not writable ({type(e).__name__}: {e.strerror or e}); '
            'pass another --work-dir or fix its permissions'
        ) from None


class WorkDirLock:
    """Exclusive use of a work dir by one run (``<work_dir>/.mmdopq.lock``, ``flock``).

    A second run on the same work dir stops at once with a message instead of mixing its
    files with the first one's. The lock goes with the process (also when it is killed).
    """

    FILE = '.mmdopq.lock'

    def __init__(self, work_dir: str) -> None:
        self.path = osp.join(work_dir, self.FILE)
        self._fh = None

    def __enter__(self) -> WorkDirLock:
        import fcntl

        self._fh = open(self.path, 'a+')
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or 'unknown'
            self._fh.close()
            raise WorkDirError(
                f'work dir {osp.dirname(self.path)} is in use by another mmdopq run '
                f'({holder}); wait for it or pass another --work-dir'
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f'pid {os.getpid()}')
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


def build_runner(args, lock: bool = False) -> tuple:
    """Config, recipe, runner and model with ``args.checkpoint`` loaded strictly.

    Args:
        args: The parsed arguments.
        lock: Take the work dir's lock (:class:`WorkDirLock`) before anything is written
            there; the lock is returned as ``runner.mmdopq_lock`` (released at exit).

    Returns:
        tuple: ``(cfg, recipe, runner, model, loaded, was_quantized)``; ``loaded`` is
        :func:`load_checkpoint_file`'s result, ``was_quantized`` whether the checkpoint held
        quantizer state.
    """
    from mmengine.dist import is_main_process
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner

    check_launcher(args)
    cfg, recipe = load_config(args)
    loaded = load_checkpoint_file(args.checkpoint)
    check_work_dir(cfg.work_dir)
    held = None
    if lock and (args.launcher == 'none' or os.environ.get('RANK', '0') == '0'):
        held = WorkDirLock(cfg.work_dir).__enter__()
    try:
        setup_cpu_distributed(cfg)
        cfg.load_from = None  # loaded below, strictly
        runner = Runner.from_cfg(cfg)
        runner.mmdopq_lock = held if is_main_process() else None
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        check_same_recipe(loaded['ckpt'], recipe, args.checkpoint)
        was_quantized = load_into(model, loaded['state_dict'], args.checkpoint)
    except BaseException:
        if held is not None:
            held.__exit__()
        raise
    return cfg, recipe, runner, model, loaded, was_quantized


def head_num_classes(model) -> Optional[int]:
    """Outputs of the classification head of a timm classifier or an mmdet detector."""
    from ..adapters import unwrap_timm_model

    timm_model, _ = unwrap_timm_model(model)
    if hasattr(timm_model, 'num_classes') and timm_model is not model:
        return int(timm_model.num_classes)
    heads = getattr(getattr(model, 'roi_head', None), 'bbox_head', None)
    if heads is None:
        heads = getattr(model, 'bbox_head', None)
    first = heads[0] if isinstance(heads, (list, tuple)) or hasattr(heads, '__getitem__') else heads
    return int(first.num_classes) if hasattr(first, 'num_classes') else None


def check_eval_data(runner, model) -> None:
    """Cheap checks of the evaluation data, run before calibration (which costs minutes).

    Every image file exists and is not empty; the dataset's classes match the model's head;
    the evaluator's annotation file exists. Failures name the file, index or key.
    """
    evaluators = runner.cfg.test_evaluator
    many = isinstance(evaluators, (list, tuple))
    for i, metric in enumerate(evaluators if many else [evaluators]):
        ann = metric.get('ann_file') if hasattr(metric, 'get') else None
        if ann and not osp.isfile(ann):
            key = 'test_evaluator' + (f'.{i}' if many else '')
            raise MissingFileError(f'annotation file not found: {ann} ({key}.ann_file)')
    try:
        dataset = runner.test_loop.dataloader.dataset  # built here (the test reuses it)
    except Exception as e:  # dataset classes assert on bad folders/annotations
        raise DataError(
            f'the evaluation dataset (test_dataloader.dataset) or metric (test_evaluator) '
            f'could not be built: '
            f'{type(e).__name__}: {e}'
        ) from e
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        path = info.get('img_path')
        if path and not path.startswith(('http://', 'https://', 's3://')):
            if not osp.isfile(path):
                raise DataError(f'evaluation image not found: {path} (dataset index {idx})')
            if osp.getsize(path) == 0:
                raise DataError(f'evaluation image {path} is empty (0 bytes; dataset index {idx})')
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    n_head = head_num_classes(model)
    if classes is not None and n_head is not None and len(classes) != n_head:
        raise DataError(
            f'the evaluation dataset has {len(classes)} classes ({list(classes)[:8]}'
            f"{'...' if len(classes) > 8 else ''}) but the model's head has {n_head}: "
            'point test_dataloader.dataset at data with all the classes the model was trained '
            "on (an image folder numbers the class folders it finds), or give the model's "
            'class list as test_dataloader.dataset.metainfo / classes'
        )


def name_failing_images(dataset) -> None:
    """Make a sample that fails to load name its file and dataset index (pipelines do not)."""
    prepare = dataset.prepare_data

    def prepare_data(idx):
        try:
            return prepare(idx)
        except Exception as e:
            info = dataset.get_data_info(idx)
            raise ImageError(
                f'evaluation image {info.get("img_path", idx)} (dataset index {idx}) could not '
                f'be loaded: {type(e).__name__}: {e}'
            ) from e

    dataset.prepare_data = prepare_data


def name_failing_batches(model) -> None:
    """Make an evaluation step that fails name its images (e.g. a size the model rejects)."""
    test_step = model.test_step

    def step(data):
        try:
            return test_step(data)
        except Exception as e:
            samples = data.get('data_samples') if isinstance(data, dict) else None
            paths = [getattr(s, 'img_path', None) for s in samples or []]
            indices = [getattr(s, 'sample_idx', None) for s in samples or []]
            raise RuntimeError(
                f'evaluation failed on images {paths} (dataset indices {indices}): '
                f'{type(e).__name__}: {e}'
            ) from e

    model.test_step = step


def provenance_of(loaded: dict) -> dict:
    """The calibration record, recipe and provenance a quantized checkpoint carries."""
    meta = (loaded['ckpt'].get('meta') or {}) if isinstance(loaded['ckpt'], dict) else {}
    calibration = dict(meta.get('calibration') or {})
    calibration.pop('from_checkpoint', None)
    return dict(
        recipe=meta.get('recipe') or {},
        calibration=calibration,
        provenance=meta.get('provenance') or {},
    )


def reusable_calibration(path: str, recipe, hook, source_sha256: Optional[str]) -> Optional[dict]:
    """``path``'s checkpoint if it holds this very calibration (same source, settings)."""
    if not osp.isfile(path) or source_sha256 is None:
        return None
    try:
        loaded = load_checkpoint_file(path)
    except UserError:
        return None
    info = provenance_of(loaded)
    same = (
        info['provenance'].get('source_sha256') == source_sha256
        and info['recipe'] == json_safe(recipe.to_dict())
        and info['provenance'].get('calibration_settings') == hook.settings()
    )
    return loaded if same else None


def run(argv=None) -> dict:
    """Run the tool on ``argv`` (``None``: ``sys.argv[1:]``); returns the results record.

    Order: load and check everything that is cheap to check (config, checkpoint, work dir,
    evaluation data), calibrate (or reuse the work dir's calibration of the same float
    checkpoint and settings, or evaluate a quantized checkpoint as it is), save
    ``quantized.pth``, evaluate, write ``results.json``. A failed evaluation keeps the saved
    calibration, and a rerun reuses it.
    """
    args = parse_args(argv)

    cfg, recipe, runner, model, loaded, was_quantized = build_runner(args, lock=True)
    try:
        return _run(args, argv, cfg, recipe, runner, model, loaded, was_quantized)
    finally:
        if runner.mmdopq_lock is not None:
            runner.mmdopq_lock.__exit__()


def _run(args, argv, cfg, recipe, runner, model, loaded, was_quantized) -> dict:
    from mmengine.dist import is_main_process

    from mmdopq.engine.hooks import QuantCalibrationHook

    hook = next(h for h in runner.hooks if isinstance(h, QuantCalibrationHook))
    check_eval_data(runner, model)
    name_failing_images(runner.test_loop.dataloader.dataset)
    name_failing_batches(model)
    results_path = osp.join(cfg.work_dir, 'results.json')
    ckpt_path = osp.join(cfg.work_dir, 'quantized.pth')
    if is_main_process() and osp.exists(results_path):
        os.remove(results_path)  # a stale record must not sit beside this run's files
    run_versions = versions()
    t0 = time.perf_counter()
    reused = None
    if was_quantized:
        info = provenance_of(loaded)
        hook.calibrate(runner)  # sees a calibrated model: quant mode, nothing else
        calibration = dict(from_checkpoint=True, **info['calibration'])
        saved_recipe = {**recipe.to_dict(), **info['recipe']}
        provenance = info['provenance']
    elif recipe.is_float:
        hook.calibrate(runner)
        calibration, saved_recipe, provenance = dict(hook.record), recipe.to_dict(), {}
    else:
        # the float checkpoint's digest: the key of a reusable calibration and its provenance
        source_sha = file_sha256(args.checkpoint) if osp.isfile(args.checkpoint) else None
        reused = reusable_calibration(ckpt_path, recipe, hook, source_sha)
        if reused is not None:
            model.load_state_dict(reused['state_dict'])
            hook.calibrate(runner)
            info = provenance_of(reused)
            calibration = dict(reused_from=ckpt_path, **info['calibration'])
            provenance = info['provenance']
            runner.logger.info(
                f'mmdopq: reusing the calibration in {ckpt_path} (same float checkpoint, '
                'recipe and calibration settings)'
            )
        else:
            calibration = dict(hook.calibrate(runner))
            provenance = dict(
                config=args.config,
                source_checkpoint=args.checkpoint,
                source_sha256=source_sha,
                calibration_settings=hook.settings(),
                calibrated_with=run_versions,
            )
        saved_recipe = recipe.to_dict()
    calib_s = time.perf_counter() - t0
    calibration.pop('recipe', None)
    calibration.pop('skipped', None)
    calibration.setdefault('from_checkpoint', False)
    meta = dict(
        recipe=json_safe(saved_recipe),
        calibration=json_safe(calibration),
        provenance=provenance,
        config=args.config,
    )
    save = not args.no_save and not recipe.is_float and reused is None
    if is_main_process() and save:
        # before evaluation: a failed evaluation must not cost the calibration
        save_quantized(model, ckpt_path, dict(meta, versions=run_versions))
    t = time.perf_counter()
    metrics = runner.test()
    eval_s = time.perf_counter() - t
    results = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        metrics=metrics,
        recipe=saved_recipe['recipe'],
        bits=recipe.bits_tag,
        wbits=recipe.wbits,
        abits=recipe.abits,
        scope=recipe.scope,
        quant=json_safe(saved_recipe),
        calibration=calibration,
        provenance=provenance,
        seed=saved_recipe['seed'],
        test_images=len(runner.test_loop.dataloader.dataset),
        calib_s=calib_s,
        eval_s=eval_s,
        total_s=calib_s + eval_s,
        versions=run_versions,
        argv=sys.argv if argv is None else list(argv),
        input_checkpoint_quantized=was_quantized,
    )
    if is_main_process():
        if save or reused is not None:
            results['quantized_checkpoint'] = ckpt_path
        if save:  # the same calibration, now with the metrics it gave
            save_quantized(model, ckpt_path, dict(meta, metrics=metrics, versions=run_versions))
        dump_json_atomic(results, results_path)
        runner.logger.info(f'mmdopq: results written to {results_path}')
    return results


def main(argv=None) -> None:
    """Console entry point (``mmdopq-quantize``).

    Exit status 0 on success; 2 with a one-line message for an error in what the user gave
    (config, checkpoint, data, options, work dir; ``--debug`` shows the traceback); a real
    bug keeps its traceback.
    """
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        run(argv)
    except UserError as e:
        if '--debug' in words:
            raise
        print(f'mmdopq-quantize: error: {e}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
