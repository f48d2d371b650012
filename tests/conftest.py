"""Shared pytest fixtures.

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
