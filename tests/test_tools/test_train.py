"""tools/train.py trains (and resumes) the reference Mask R-CNN config on tiny data."""

import os
import os.path as osp

from tests.tiny_models import REPO
from tools import train

CONFIG = osp.join(REPO, 'configs', 'reference', 'mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py')


def test_train_and_resume(tiny_coco, tmp_path):
    opts = [
        f'train_dataloader.dataset.data_root={tiny_coco["root"]}/',
        f'val_dataloader.dataset.data_root={tiny_coco["root"]}/',
        f'test_dataloader.dataset.data_root={tiny_coco["root"]}/',
        f'val_evaluator.ann_file={tiny_coco["root"]}/annotations/instances_val.json',
        'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False',
        'train_cfg.max_iters=2',
        'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=1',
        'img_scale=[96,96]',
    ]
    runner = train.main([CONFIG, '--work-dir', str(tmp_path), '--cfg-options', *opts])
    assert runner.iter == 2
    assert osp.isfile(tmp_path / 'iter_2.pth')
    assert 'last_checkpoint' in os.listdir(tmp_path)
    opts[opts.index('train_cfg.max_iters=2')] = 'train_cfg.max_iters=3'
    runner = train.main([CONFIG, '--work-dir', str(tmp_path), '--resume', '--cfg-options', *opts])
    assert runner.iter == 3 and osp.isfile(tmp_path / 'iter_3.pth')
