# Reference float model for the demo and the benchmark: a small Swin Mask R-CNN (Swin-T
# proportions: patch 4, window 7, heads 3/6/12/24 at head dim 16; embed 48, depths 2/2/2/2,
# FPN 96) trained from scratch on the generated shapes data described by `synthetic_data`
# below (python -m benchmarks.reference.make_data, or benchmarks.reference.ensure_data).
# Iteration based, with checkpoints every 250 iterations so CPU training can resume
# (`tools/train.py CONFIG --resume`). Model card: configs/reference/README.md.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

data_root = 'data/reference_coco/'
# How the data is made (read by benchmarks.reference.ensure_data, the demo and the benchmark).
synthetic_data = dict(
    kind='coco',
    out_dir=data_root,
    num_train=2000,
    num_val=500,
    img_size=320,
    seed=0,
    difficulty='medium',
)
classes = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')
img_scale = (256, 256)

model = dict(
    backbone=dict(
        embed_dims=48,
        depths=[2, 2, 2, 2],
        num_heads=[3, 6, 12, 24],
        drop_path_rate=0.1,
        convert_weights=False,
        init_cfg=None,
    ),
    neck=dict(in_channels=[48, 96, 192, 384], out_channels=96),
    rpn_head=dict(in_channels=96, feat_channels=96),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=96),
        bbox_head=dict(in_channels=96, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=96),
        mask_head=dict(in_channels=96, conv_out_channels=64, num_classes=len(classes)),
    ),
    # A few shapes per image: fewer proposals and sampled RoIs than COCO's defaults (the mask
    # head on the positive RoIs dominated the CPU training step) train about 2x faster.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=dict(sampler=dict(num=128)),
    ),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=500)),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'),
    ),
]
metainfo = dict(classes=classes)
train_dataloader = dict(
    batch_size=2,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline,
    ),
)
# Testing (the reported metrics, the demo, the benchmark) uses the whole val split;
# validation during training watches its first 100 images only (an eval pass is not cheap
# on a CPU).
test_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline,
        indices=100,
    ),
)
# mmdet's CocoMetric scores every image of ann_file, so a val subset (indices=100 above, the
# demo's --val-images) would count the images it skipped as misses; SubsetCocoMetric scores the
# evaluated images only (identical to CocoMetric on the whole split).
val_evaluator = dict(
    type='mmdopq.SubsetCocoMetric', ann_file=data_root + 'annotations/instances_val.json'
)
test_evaluator = val_evaluator

max_iters = 2500
warmup_iters = 150
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=500)
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
optim_wrapper = dict(optimizer=dict(lr=4e-4))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
