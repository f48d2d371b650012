"""mmdopq: DopQ-ViT post-training quantization of vision transformers for MMDetection 3.x.

Importing mmdopq (1) checks the torch / mmengine / mmcv versions (ImportError with the fix if
one is out of range) and (2) if mmengine is installed, makes its checkpoint loading work with
torch >= 2.6 (:mod:`mmdopq.utils.compat`) and lets its configs resolve ``mmdopq::`` bases
(:mod:`mmdopq.utils.config_package`). It imports torch and ``mmengine.runner`` (for (2)),
but not mmdet, mmcv or the registries: mmdopq types are registered on demand when a config names
them ``mmdopq.X``. Without mmengine installed, the pure-torch core (``mmdopq.quantizers``,
``mmdopq.nn``, ``mmdopq.reparam``) still imports and works.
"""

import importlib.util

from .utils.compat import apply_checkpoint_compat
from .utils.config_package import register_config_package
from .utils.version_check import check_dependencies
from .version import __version__, short_version, version_info

check_dependencies()
if importlib.util.find_spec('mmengine') is not None:
    apply_checkpoint_compat()
    register_config_package()  # `mmdopq::` references in config bases

# Public API re-exported from subpackages. Names that pull in mmdet / mmcv / timm are resolved
# lazily on first attribute access (PEP 562), so ``import mmdopq`` stays light; add them here
# as ``name: module`` (tests/test_foundation.py checks that ``import mmdopq`` stays light).
_LAZY_ATTRS = {
    'QuantizedModel': 'mmdopq.models',
}


def __getattr__(name: str):
    if name in _LAZY_ATTRS:
        import importlib

        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['__version__', 'short_version', 'version_info', *_LAZY_ATTRS]
