"""Metrics registered in :data:`mmdopq.registry.METRICS` (imported lazily by MMEngine)."""

from .subset_coco_metric import SubsetCocoMetric

__all__ = ['SubsetCocoMetric']
