"""SubsetCocoMetric: COCO AP over the evaluated images only."""

import json

import numpy as np
import pytest
import torch


def coco_file(path, num_images=4):
    images = [
        dict(id=i + 1, file_name=f'{i}.png', width=100, height=100) for i in range(num_images)
    ]
    anns = [
        dict(id=i + 1, image_id=i + 1, category_id=1, bbox=[10, 10, 40, 30], area=1200, iscrowd=0)
        for i in range(num_images)
    ]
    data = dict(images=images, annotations=anns, categories=[dict(id=1, name='square')])
    path.write_text(json.dumps(data))
    return str(path)


def sample(img_id):
    """A perfect prediction for the one box of image ``img_id``."""
    pred = dict(
        bboxes=torch.tensor([[10.0, 10.0, 50.0, 40.0]]),
        scores=torch.tensor([0.9]),
        labels=torch.tensor([0]),
    )
    return dict(img_id=img_id, ori_shape=(100, 100), pred_instances=pred)


def evaluate(metric_cls, ann_file, img_ids):
    metric = metric_cls(ann_file=ann_file, metric='bbox')
    metric.dataset_meta = dict(classes=('square',))
    metric.process({}, [sample(i) for i in img_ids])
    return metric.evaluate(len(img_ids))


def test_subset_scores_the_evaluated_images_only(tmp_path, require_mm):
    require_mm('mmdet.evaluation')
    from mmdet.evaluation import CocoMetric

    from mmdopq.evaluation import SubsetCocoMetric

    ann = coco_file(tmp_path / 'val.json', num_images=4)
    # Perfect predictions on 1 of 4 images: CocoMetric counts the other 3 boxes as missed.
    stock = evaluate(CocoMetric, ann, [2])['coco/bbox_mAP']
    subset = evaluate(SubsetCocoMetric, ann, [2])['coco/bbox_mAP']
    assert subset == pytest.approx(1.0)
    assert stock < 0.5
    # On the whole split both agree.
    full_stock = evaluate(CocoMetric, ann, [1, 2, 3, 4])['coco/bbox_mAP']
    full_subset = evaluate(SubsetCocoMetric, ann, [1, 2, 3, 4])['coco/bbox_mAP']
    assert full_subset == pytest.approx(full_stock) and np.isclose(full_subset, 1.0)


def test_images_missing_from_the_annotation_file_are_an_error(tmp_path, require_mm):
    require_mm('mmdet.evaluation')
    from mmdopq.evaluation import SubsetCocoMetric

    ann = coco_file(tmp_path / 'val.json', num_images=2)
    with pytest.raises(ValueError, match=r'not in the annotation file .*val\.json.*\[7\]'):
        evaluate(SubsetCocoMetric, ann, [1, 7])
