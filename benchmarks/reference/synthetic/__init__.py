"""Deterministic synthetic datasets of the reference models (no download needed).

* :func:`generate_coco_shapes` (:mod:`.coco`): COCO-format instance segmentation of shapes,
  drawn by :mod:`.rendering`, masks to polygons by :mod:`.geometry`;
* :func:`generate_shapes_classification` (:mod:`.classification`): shape x texture classes in
  the ``ImageFolder`` layout.

Both write their files with :mod:`.files` (fixed PNG settings, sorted JSON, atomic writes).
"""

from .classification import CLS_CLASSES, generate_shapes_classification
from .coco import CLASSES, generate_coco_shapes

__all__ = ['CLASSES', 'CLS_CLASSES', 'generate_coco_shapes', 'generate_shapes_classification']
