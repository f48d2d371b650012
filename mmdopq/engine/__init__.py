"""Runner-side components of mmdopq: the calibration hook.

Imported by MMEngine on the first use of :data:`mmdopq.registry.HOOKS`.
"""

from . import hooks  # noqa: F401  (registers the hooks)

__all__: list = []
