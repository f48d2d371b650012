# Stage 2 of the reference Swin Mask R-CNN: a fresh warmup + cosine schedule that starts from
# the stage-1 weights (the 2500-iteration from-scratch run of the base config, published in fp16
# with tools/model_converters/publish_reference.py to the path below). CPU sessions are
# short, so the reference model is trained in stages; each stage's command and result are in
# configs/reference/README.md.
_base_ = ['./mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py']

load_from = 'work_dirs/ref_mask_rcnn/stage1_fp16.pth'

max_iters = 1500
warmup_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=750)
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
randomness = dict(seed=1)
