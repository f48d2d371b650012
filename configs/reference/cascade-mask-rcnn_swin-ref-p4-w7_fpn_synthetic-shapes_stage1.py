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
train_cfg = dict(max_iters=max_iters, val_interval=500)
# stage 2's warmup, and its cosine stretched to this stage's length
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], T_max=max_iters - _base_.warmup_iters, end=max_iters),
]
default_hooks = dict(checkpoint=dict(interval=250, max_keep_ckpts=2))
randomness = dict(seed=0)
