"""Runner-side components of mmdopq: hooks (calibration, observability), loops and runners.

Imported lazily by MMEngine for :data:`mmdopq.registry.RUNNERS` and :data:`~mmdopq.registry.LOOPS`.
"""

from . import hooks  # noqa: F401  (registers the hooks)

__all__: list = []
