"""The reference models' data: generate what a reference config's ``synthetic_data`` describes.

A reference config describes its data in a top-level ``synthetic_data`` dict (``kind`` =
``'coco'`` or ``'cls'``, ``out_dir`` and the generator's arguments); :func:`ensure_data`
generates it with :mod:`benchmarks.reference.synthetic` when missing, :func:`ensure_tune_split`
draws the held-out tuning split beside it.
"""

from __future__ import annotations

import os.path as osp
from typing import Any, Optional, Union


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
    from .synthetic import generate_coco_shapes, generate_shapes_classification

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
