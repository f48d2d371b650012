"""Calibration of a :class:`~mmdopq.models.QuantizedModel` before evaluation."""

from __future__ import annotations

import copy
import hashlib
import os
import os.path as osp
import time
from typing import Optional

import numpy as np
import torch
from mmengine.dataset import BaseDataset, pseudo_collate
from mmengine.dist import all_gather_object, broadcast, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.registry import DATASETS
from mmengine.utils import ProgressBar

from ...calibrate import calibrate
from ...models import QuantizedModel
from ...nn import set_quant_mode
from ...registry import HOOKS
from ...utils.data_checks import check_dataset_cfg
from ...utils.errors import ConfigError, DataError, ImageError
from ...utils.fileio import dump_json_atomic, json_safe

SELECTIONS = ('random', 'first')


@HOOKS.register_module()
class QuantCalibrationHook(Hook):
    """Calibrate -> reparameterize (MOSF / RepQ fold) -> re-calibrate, before test/val.

    Runs in ``before_test`` / ``before_val``, i.e. after the runner loaded the
    checkpoint. If the loaded checkpoint is already calibrated (every declared
    site has calibrated parameters) calibration is skipped and the model is
    evaluated as loaded.

    The calibration images are ``num_images`` items of ``dataloader.dataset``,
    chosen with ``np.random.default_rng(seed)`` (``selection='random'``) or the
    first ones (``selection='first'``, the RepQ-ViT detection protocol: first
    val2017 image). Their ids are logged and written to ``<work_dir>/<ids_file>``.
    Under DDP every rank calibrates on the same images and then takes rank 0's
    parameters (broadcast), so all ranks evaluate the same quantized model.

    With the recipe's ``calib_mode='float'`` (default) the images run through the float
    model in batches of ``dataloader.batch_size`` while every quantizer observes its input;
    with ``calib_mode='sequential'`` (RepQ-ViT's order) they run as one batch through the
    model in ``calib_seq`` mode, where each layer calibrates at its first call on what the
    quantized layers before it produce.

    Args:
        dataloader: Dataloader config; its ``dataset`` (and ``batch_size``) are used.
        num_images: Number of calibration images.
        selection: ``'random'`` (seeded) or ``'first'``.
        seed: Seed of the image choice.
        ids_file: File name (in the work dir) of the calibration record.
        force: Calibrate even if the loaded checkpoint is calibrated.
    """

    priority = 'VERY_HIGH'

    def __init__(
        self,
        dataloader: dict,
        num_images: int = 32,
        selection: str = 'random',
        seed: int = 0,
        ids_file: str = 'calib_ids.json',
        force: bool = False,
    ) -> None:
        if selection not in SELECTIONS:
            raise ValueError(f'selection={selection!r}; choose from {SELECTIONS}')
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f'num_images={num_images!r} must be a positive integer')
        if not isinstance(dataloader, dict) or 'dataset' not in dataloader:
            raise ValueError('QuantCalibrationHook needs dataloader=dict(dataset=..., ...)')
        self.dataloader = dataloader
        self.num_images = num_images
        self.selection = selection
        self.seed = seed
        self.ids_file = ids_file
        self.force = force
        #: Filled by the calibration: ids, sizes, per-stage wall times, plan summary.
        self.record: dict = {}

    def settings(self) -> dict:
        """What decides the calibration images: compared before a calibration is reused."""
        return dict(
            num_images=self.num_images,
            selection=self.selection,
            seed=self.seed,
            dataset=json_safe(self.dataloader['dataset']),
        )

    # -- hook entry points -----------------------------------------------------------
    def before_val(self, runner) -> None:
        self.calibrate(runner)

    def before_test(self, runner) -> None:
        self.calibrate(runner)

    # -- data --------------------------------------------------------------------------
    def build_dataset(self, runner=None):
        """Build the calibration dataset (the test pipeline if it names none)."""
        cfg = copy.deepcopy(dict(self.dataloader['dataset']))
        # Serializing the annotations (and its gc.collect) only pays off for dataloader
        # worker processes; the hook loads its few items in this process. Only datasets
        # derived from mmengine's BaseDataset take the option (wrappers do not).
        if accepts_serialize_data(cfg.get('type')):
            cfg.setdefault('serialize_data', False)
        if 'pipeline' not in cfg:
            if runner is None:
                raise ConfigError('the calibration dataset names no pipeline')
            cfg['pipeline'] = copy.deepcopy(runner.cfg.test_dataloader.dataset.pipeline)
        check_dataset_cfg(cfg, 'calibration dataloader.dataset')
        try:
            dataset = DATASETS.build(cfg)
        except Exception as e:
            raise DataError(
                f'the calibration dataset could not be built (ann_file={cfg.get("ann_file")!r}, '
                f'data_root={cfg.get("data_root")!r}): {type(e).__name__}: {e} -- is the '
                'calibration dataset empty?'
            ) from e
        if len(dataset) == 0:
            raise DataError(
                f'the calibration dataset is empty (ann_file={cfg.get("ann_file")!r}, '
                f'data_root={cfg.get("data_root")!r})'
            )
        return dataset

    def select(self, dataset, num_images: Optional[int] = None, what: str = 'calibration'):
        """Dataset indices of ``num_images`` (default: the hook's) images, seeded."""
        count = self.num_images if num_images is None else num_images
        n = len(dataset)
        if n < count:
            raise DataError(f'{what} needs {count} images but the calibration dataset has only {n}')
        if self.selection == 'first':
            return list(range(count))
        rng = np.random.default_rng(self.seed)
        return sorted(int(i) for i in rng.choice(n, size=count, replace=False))

    @staticmethod
    def load_item(dataset, idx: int):
        try:
            item = dataset[idx]
        except Exception as e:  # name the image: pipelines raise bare errors
            info = dataset.get_data_info(idx)
            raise ImageError(
                f'calibration image {info.get("img_path", idx)!r} (dataset index '
                f'{idx}) could not be loaded: {type(e).__name__}: {e}'
            ) from e
        if item is None:
            info = dataset.get_data_info(idx)
            raise ImageError(f'calibration image {info.get("img_path", idx)!r} produced no data')
        return item

    def forward_loop(self, dataset, indices: list[int], batch_size: int, progress: bool = True):
        """The ``forward_loop`` of :func:`mmdopq.apis.calibrate` over ``indices`` of ``dataset``.

        Items are loaded and collated as mmengine's test loop does and run through the
        model's ``test_step`` in chunks of ``batch_size``, with a progress bar on rank 0.
        """

        def run(model) -> None:
            bar = ProgressBar(len(indices)) if progress and is_main_process() else None
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                model.test_step(pseudo_collate([self.load_item(dataset, i) for i in chunk]))
                if bar:
                    bar.update(len(chunk))
            if bar:
                print(flush=True)

        return run

    # -- calibration -------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, runner) -> Optional[dict]:
        """Calibrate ``runner.model`` (see the class docstring); returns the record."""
        logger = MMLogger.get_current_instance()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, QuantizedModel):
            raise TypeError(
                f'QuantCalibrationHook needs an mmdopq.QuantizedModel, got {type(model).__name__}'
            )
        plan = model.quant_plan
        if self.record.get('skipped') is False and model.is_quant_calibrated and not self.force:
            return self.record  # calibrated earlier in this run (e.g. by mmdopq-quantize)
        if model.quant_recipe.is_float:
            logger.info('mmdopq: recipe float: nothing to calibrate, evaluating the float model')
            self.record = dict(skipped=True, float=True)
            return self.record
        if model.is_quant_calibrated and not self.force:
            set_quant_mode(model, 'quant')
            logger.info(
                'mmdopq: the loaded checkpoint is already calibrated '
                f'({len(plan.sites)} sites); skipping calibration'
            )
            self.record = dict(skipped=True)
            return self.record
        recipe = model.quant_recipe
        # building the calibration dataset (a directory scan or annotation parse) is part of
        # the calibration's cost: timed here, not left to the evaluation that follows
        t0 = time.perf_counter()
        dataset = self.build_dataset(runner)
        indices = self.select(dataset)
        infos = [dataset.get_data_info(i) for i in indices]
        ids = image_ids(infos, indices)
        dataset_s = time.perf_counter() - t0
        logger.info(
            f'mmdopq: calibrating {recipe.recipe} {recipe.bits_tag} (scope '
            f'{recipe.scope}) on {len(ids)} images ({self.selection}, seed {self.seed}): '
            f'ids {ids}'
        )
        batch_size = int(self.dataloader.get('batch_size', 1))
        if recipe.calib_mode == 'sequential':
            # every layer calibrates at its first call: all images must be in that call
            batch_size = len(indices)
            logger.info(
                f'mmdopq: sequential calibration (RepQ-ViT order): the {len(indices)} images '
                'go through the model as one batch; each layer calibrates on what the '
                'quantized layers before it produce'
            )
        logger.info(f'mmdopq: stage 1/3 calibration dataset: {dataset_s:.1f}s')
        loop = self.forward_loop(dataset, indices, batch_size)
        recon_loop, recon_ids = None, None
        settings = recipe.reconstruct_settings
        if settings is not None:
            # its own images, drawn by the same seeded selection (run twice per unit: no bar)
            recon_indices = self.select(dataset, settings.num_images, 'block reconstruction')
            recon_loop = self.forward_loop(dataset, recon_indices, batch_size, progress=False)
            recon_ids = image_ids([dataset.get_data_info(i) for i in recon_indices], recon_indices)
        result = calibrate(model, loop, log=logger.info, reconstruct_loop=recon_loop)
        times = dict(dataset_s=dataset_s, **result['times'])
        t = time.perf_counter()
        rank_digests = self._broadcast(model)
        times['broadcast_s'] = time.perf_counter() - t
        times['total_s'] = time.perf_counter() - t0
        self.record = dict(
            skipped=False,
            num_images=len(ids),
            calib_mode=recipe.calib_mode,
            selection=self.selection,
            seed=self.seed,
            calib_ids=ids,
            calib_indices=indices,
            calib_files=[info.get('img_path') for info in infos],
            times=times,
            plan=result['plan'],
            # per-unit results of block reconstruction, when the recipe asks for it
            **(
                {'reconstruct': result['reconstruct'], 'reconstruct_ids': recon_ids}
                if 'reconstruct' in result
                else {}
            ),
            recipe=recipe.to_dict(),
            world_size=get_world_size(),
            qparams_digest=rank_digests[0],
            rank_digests=rank_digests,
        )
        if is_main_process():
            self._write(runner.work_dir, self.record)
        return self.record

    @staticmethod
    def _broadcast(model) -> list:
        """Give every rank rank 0's parameters; return each rank's digest of them.

        Every rank calibrated on the same images, so the broadcast is a guard
        against nondeterminism; the digests (gathered from all ranks after the
        broadcast) prove that all ranks evaluate the same quantized model.
        """
        state = model.state_dict()
        if get_world_size() > 1:
            for tensor in state.values():
                broadcast(tensor, src=0)
        digest = state_digest(state)
        if get_world_size() == 1:
            return [digest]
        digests = all_gather_object(digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f'ranks hold different quantization parameters: {digests}')
        return digests

    def _write(self, work_dir: str, record: dict) -> None:
        os.makedirs(work_dir, exist_ok=True)
        dump_json_atomic(record, osp.join(work_dir, self.ids_file))


def accepts_serialize_data(dataset_type) -> bool:
    """Whether a dataset ``type`` (registry name or class) derives from mmengine's BaseDataset."""
    cls = dataset_type
    if isinstance(dataset_type, str):  # resolved like DATASETS.build does: default scope first
        with DATASETS.switch_scope_and_registry(None) as registry:
            cls = registry.get(dataset_type)
    return isinstance(cls, type) and issubclass(cls, BaseDataset)


def state_digest(state: dict) -> str:
    """SHA-256 of every tensor of a state dict (weights, folds and quantizer state)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def image_ids(infos: list, indices: list) -> list:
    """The id of each image (COCO ``img_id``, else its path, else its dataset index)."""
    return [info.get('img_id', info.get('img_path', i)) for info, i in zip(infos, indices)]
