"""Utilities of mmdopq. Importing this package imports no mm* package and no torch."""

from .compat import apply_checkpoint_compat, is_checkpoint_compat_applied
from .setup_env import DEFAULT_SCOPE, register_all_modules
from .version_check import check_dependencies, check_mmcv_ops, check_version

__all__ = [
    'DEFAULT_SCOPE',
    'apply_checkpoint_compat',
    'check_dependencies',
    'check_mmcv_ops',
    'check_version',
    'is_checkpoint_compat_applied',
    'register_all_modules',
]
