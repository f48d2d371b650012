"""Metrics registered in :data:`mmdopq.registry.METRICS` (imported lazily by MMEngine)."""

__all__: list = []
