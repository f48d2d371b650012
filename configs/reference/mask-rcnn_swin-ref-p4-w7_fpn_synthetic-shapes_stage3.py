# Stage 3 of the reference Swin Mask R-CNN: another warmup + cosine cycle, longer, from the
# stage-2 weights (its last checkpoint). The published reference checkpoint is this stage's
# last iteration; each stage's command and result are in configs/reference/README.md.
_base_ = ['./mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes_stage2.py']

load_from = 'work_dirs/ref_mask_rcnn_s2/iter_1500.pth'

max_iters = 4000
warmup_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - warmup_iters,
        eta_min=1e-6,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters,
    ),
]
randomness = dict(seed=2)
