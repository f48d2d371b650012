"""Datasets, samplers and transforms registered in mmdopq's registries (imported lazily)."""

from .synthetic_classification import CLS_CLASSES, generate_shapes_classification
from .synthetic_shapes import CLASSES, generate_coco_shapes

__all__: list = ['CLASSES', 'CLS_CLASSES', 'generate_coco_shapes', 'generate_shapes_classification']
