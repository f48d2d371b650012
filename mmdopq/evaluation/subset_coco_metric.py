"""COCO metric restricted to the images that were actually evaluated."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Optional

from mmdet.evaluation import CocoMetric

from mmdopq.registry import METRICS


@METRICS.register_module()
class SubsetCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` scored on the evaluated images only.

    ``CocoMetric`` scores every image of its ``ann_file``. When the dataloader covers only part
    of that file (``dataset.indices=N`` to evaluate the first N images, as the demo, the
    benchmark and the reference models' training-time validation do), the ground truth of the
    images that were never run counts as missed and AP shrinks by roughly the covered fraction.
    This metric sets COCOeval's image ids to the images that produced results, so a subset
    gives the AP of that subset; on the full split it equals ``CocoMetric``.

    Args:
        ann_file (str, optional): COCO annotation file of the split (None: built from the
            evaluated images' ground truth, which is already restricted to them).
        **kwargs: Passed to :class:`mmdet.evaluation.CocoMetric`.
    """

    def __init__(self, ann_file: Optional[str] = None, **kwargs) -> None:
        super().__init__(ann_file=ann_file, **kwargs)
        self.ann_file = ann_file

    def compute_metrics(self, results: Sequence) -> OrderedDict:
        """Score ``results`` (``(gt, pred)`` pairs) on the images they cover."""
        img_ids = sorted({int(pred['img_id']) for _, pred in results})
        if self._coco_api is not None:
            unknown = sorted(set(img_ids) - set(self._coco_api.get_img_ids()))
            if unknown:
                raise ValueError(
                    f'{len(unknown)} evaluated image ids are not in the annotation file '
                    f'{self.ann_file!r} (first: {unknown[:5]}); the evaluator and the '
                    'dataloader must use the same split'
                )
        self.img_ids = img_ids
        return super().compute_metrics(results)
