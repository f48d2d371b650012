"""The reference models: configs, committed checkpoints, their data and recorded float metrics.

mmdopq carries its own small, genuinely trained models (``configs/reference/``, model card in
``configs/reference/README.md``) so that the demo, the benchmark and the tests can measure
quantization quality without COCO, ImageNet or a model hub. A reference config describes its
data in a top-level ``synthetic_data`` dict; :func:`ensure_data` generates it when missing.
"""

from __future__ import annotations

import os.path as osp
from dataclasses import dataclass
from typing import Any, Optional, Union

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@dataclass(frozen=True)
class ReferenceModel:
    """One reference model.

    Attributes:
        name: Short name used by the demo, the benchmark and results files.
        float_config: Training / float config (repo-relative).
        quant_config: Quantized config (``mmdopq.QuantizedModel``; repo-relative).
        checkpoint: Committed float checkpoint (fp16 storage; repo-relative).
        metric_name: Primary metric key of ``runner.test()``.
        metric_names: Every metric reported in tables (primary first).
        task: ``'detection'`` or ``'classification'``.
    """

    name: str
    float_config: str
    quant_config: str
    checkpoint: str
    metric_name: str
    metric_names: tuple
    task: str

    def path(self, attr: str) -> str:
        """Absolute path of ``float_config``, ``quant_config`` or ``checkpoint``."""
        return osp.join(REPO_ROOT, getattr(self, attr))


#: Reported metrics per task (primary first).
_TASK_METRICS = {
    'detection': ('coco/bbox_mAP', 'coco/segm_mAP'),
    'classification': ('accuracy/top1',),
}


def _reference(name: str, stem: str, task: str) -> ReferenceModel:
    """A reference model laid out as ``configs/reference/{,dopq_w4a4_}STEM.py`` and
    ``checkpoints/reference/STEM.pth``."""
    metrics = _TASK_METRICS[task]
    return ReferenceModel(
        name=name,
        float_config=f'configs/reference/{stem}.py',
        quant_config=f'configs/reference/dopq_w4a4_{stem}.py',
        checkpoint=f'checkpoints/reference/{stem}.pth',
        metric_name=metrics[0],
        metric_names=metrics,
        task=task,
    )


#: The reference models with a committed checkpoint, by name (the model card,
#: ``configs/reference/README.md``, says which reach their float targets).
REFERENCE_MODELS: dict[str, ReferenceModel] = {
    m.name: m
    for m in (
        _reference(
            'mask-rcnn_swin-ref', 'mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes', 'detection'
        ),
        _reference(
            'cascade-mask-rcnn_swin-ref',
            'cascade-mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes',
            'detection',
        ),
        _reference('vit-ref', 'vit-ref-p8_synthetic-cls', 'classification'),
        _reference('swin-ref', 'swin-ref-p4-w7_synthetic-cls', 'classification'),
    )
}


def get_reference_model(name: str) -> ReferenceModel:
    """The reference model called ``name`` (clear error listing the known ones)."""
    if name not in REFERENCE_MODELS:
        raise KeyError(f'unknown reference model {name!r}; choose from {sorted(REFERENCE_MODELS)}')
    return REFERENCE_MODELS[name]


def synthetic_data_spec(cfg: Union[str, Any]) -> dict[str, Any]:
    """The ``synthetic_data`` dict of a reference config (a path, a loaded config or a dict)."""
    if isinstance(cfg, str):
        from mmengine.config import Config

        cfg = Config.fromfile(cfg)
    spec = cfg.get('synthetic_data')
    if not spec:
        raise KeyError(f'{getattr(cfg, "filename", "config")} has no `synthetic_data` dict')
    return dict(spec)


def ensure_data(
    cfg: Union[str, Any], root: Optional[str] = None, **overrides: Any
) -> dict[str, Any]:
    """Generate the synthetic data a reference config describes, unless it is up to date.

    Args:
        cfg: A config path or a loaded :class:`mmengine.config.Config` with a top-level
            ``synthetic_data`` dict (``kind`` = ``'coco'`` or ``'cls'``, ``out_dir`` and the
            generator's arguments).
        root: Directory that a relative ``out_dir`` is resolved against (default: the cwd,
            as the configs' own ``data_root`` is).
        **overrides: Generator arguments to override (tests use fewer images).

    Returns:
        dict: The generator's summary (``skipped`` is True when nothing was written).
    """
    from mmdopq.datasets.synthetic_classification import generate_shapes_classification
    from mmdopq.datasets.synthetic_shapes import generate_coco_shapes

    spec = {**synthetic_data_spec(cfg), **overrides}
    kind = spec.pop('kind', None)
    out_dir = spec.pop('out_dir')
    if root is not None and not osp.isabs(out_dir):
        out_dir = osp.join(root, out_dir)
    if kind == 'coco':
        return generate_coco_shapes(out_dir, **spec)
    if kind == 'cls':
        return generate_shapes_classification(
            out_dir,
            num_train_per_class=spec.pop('num_train'),
            num_val_per_class=spec.pop('num_val'),
            **spec,
        )
    raise ValueError(f"synthetic_data.kind must be 'coco' or 'cls', got {kind!r}")


#: Added to a reference dataset's seed to make its held-out tuning split.
TUNE_SEED_OFFSET = 1000


def ensure_tune_split(
    cfg: Union[str, Any], root: Optional[str] = None, **overrides: Any
) -> tuple[dict[str, Any], list[str]]:
    """Generate the held-out tuning split of a reference config and say how to evaluate on it.

    Anything tuned or investigated (quantizer grids, objectives, calibration size) must not be
    judged on the val split whose numbers are reported. The tuning split is drawn by the same
    generator with the same difficulty and image count as the config's val split, from the
    seed ``synthetic_data.seed + TUNE_SEED_OFFSET``, into ``<out_dir>_tune/``; it has no train
    images, and the reference models never saw it.

    Args:
        cfg: A config path or loaded config with a ``synthetic_data`` dict.
        root: Directory a relative ``out_dir`` is resolved against (default: the cwd).
        **overrides: Generator arguments to override (e.g. ``num_val``).

    Returns:
        tuple: The generator's summary, and the ``--cfg-options`` (``key=value`` strings) that
        point a config's test dataloader and evaluator at the tuning split.
    """
    spec = synthetic_data_spec(cfg)
    out_dir = spec['out_dir'].rstrip('/') + '_tune/'
    tune = dict(
        synthetic_data=dict(
            spec, out_dir=out_dir, num_train=0, seed=spec['seed'] + TUNE_SEED_OFFSET, **overrides
        )
    )
    summary = ensure_data(tune, root=root)
    opts = [f'test_dataloader.dataset.data_root={out_dir}']
    if spec['kind'] == 'coco':
        opts.append(f'test_evaluator.ann_file={out_dir}annotations/instances_val.json')
    return summary, opts
