# Stage 1 of the reference Cascade Mask R-CNN: warm-started from the reference Mask R-CNN
# checkpoint (backbone, FPN and RPN load; the cascade heads are new) and trained on the 'medium'
# preset of the generated shapes data (the Mask R-CNN's data), 2000 iterations. Stage 2, the
# reference config, fine-tunes its published weights on the 'faint' preset. Model card:
# configs/reference/README.md.
_base_ = ['./cascade-mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py']

data_root = 'data/reference_coco/'
synthetic_data = dict(_base_.synthetic_data, out_dir=data_root, difficulty='medium')
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

load_from = 'checkpoints/reference/mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.pth'
max_iters = 2000
warmup_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - warmup_iters,
        eta_min=1e-6,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters,
    ),
]
default_hooks = dict(checkpoint=dict(interval=250, max_keep_ckpts=2))
randomness = dict(seed=0)
