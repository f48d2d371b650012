"""Shared pytest fixtures: mm* imports, and the tiny models and data of ``tests/tiny_models.py``.

OpenMMLab packages (mmcv with compiled ops, mmdet) are optional outside CI: a test that needs
them skips with the reason. In CI (``CI=true``) or with ``MMDOPQ_REQUIRE_MM=1`` a failed import
is a hard test failure instead, so a broken installation can never pass as "all skipped".
"""

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
from mmengine.config import Config

from benchmarks.reference.synthetic import generate_coco_shapes, generate_shapes_classification
from tests.tiny_models import build_float_detector, config_path, shrink

_TRUE = ('1', 'true', 'yes', 'on')


def mm_required() -> bool:
    """Return whether mm* packages must import (CI or ``MMDOPQ_REQUIRE_MM=1``)."""
    return (
        os.environ.get('CI', '').strip().lower() in _TRUE
        or os.environ.get('MMDOPQ_REQUIRE_MM', '').strip().lower() in _TRUE
    )


def import_mm(name: str) -> ModuleType:
    """Import an OpenMMLab module, skipping the test if it is unavailable (failing under CI).

    Args:
        name (str): Module to import, e.g. ``'mmcv.ops'`` or ``'mmdet'``.

    Returns:
        ModuleType: The imported module.
    """
    try:
        if name == 'mmcv.ops':
            # Same import, but the error explains mmcv-lite vs mmcv with compiled ops.
            from mmdopq.utils import check_mmcv_ops

            return check_mmcv_ops()
        return importlib.import_module(name)
    except ImportError as e:
        message = f'cannot import {name}: {type(e).__name__}: {e}'
        if mm_required():
            pytest.fail(
                f'{message} (CI=true / MMDOPQ_REQUIRE_MM=1: mm* packages must import; '
                'run `make install`)',
                pytrace=False,
            )
        pytest.skip(f'{message} (run `make install`)')


@pytest.fixture
def require_mm() -> Callable[[str], ModuleType]:
    """Fixture giving :func:`import_mm`: ``ops = require_mm('mmcv.ops')`` in a test."""
    return import_mm


@pytest.fixture(scope='session')
def tmp_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide scratch work directory (like a runner's ``work_dir``)."""
    return tmp_path_factory.mktemp('work_dir')


# -- tiny models and data (see tests/tiny_models.py) ----------------------------------------
@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('tiny_coco'))
    summary = generate_coco_shapes(
        root, num_train=6, num_val=3, img_size=96, seed=0, difficulty='easy'
    )
    return dict(root=root, classes=tuple(summary['classes']))


@pytest.fixture(scope='session')
def tiny_cfg(tiny_coco, tmp_path_factory):
    """``tiny_cfg(recipe, bits, **quant_overrides) -> path of a dumped config``."""
    out = tmp_path_factory.mktemp('configs')

    def make(recipe: str = 'dopq', bits: int = 4, num_calib: int = 2, **quant) -> str:
        cfg = shrink(Config.fromfile(config_path(recipe, bits)), tiny_coco, num_calib)
        cfg.model.quant.update(quant)
        tag = '_'.join(f'{k}-{v}' for k, v in sorted(quant.items()))
        path = str(out / f'{recipe}_w{bits}a{bits}_{num_calib}{tag}.py')
        cfg.dump(path)
        return path

    return make


@pytest.fixture(scope='session')
def float_ckpt(tiny_cfg, tmp_path_factory):
    from mmengine.runner import save_checkpoint

    path = str(tmp_path_factory.mktemp('ckpt') / 'float.pth')
    model = build_float_detector(tiny_cfg('dopq', 4))
    save_checkpoint(dict(meta=dict(note='tiny float'), state_dict=model.state_dict()), path)
    return path


@pytest.fixture(scope='session')
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cls_data'))
    meta = generate_shapes_classification(
        root, num_train_per_class=2, num_val_per_class=2, img_size=40, seed=0
    )
    return dict(root=root, num_classes=len(meta['classes']))
