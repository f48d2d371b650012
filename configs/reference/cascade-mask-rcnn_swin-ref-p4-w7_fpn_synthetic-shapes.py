# Reference float Cascade Mask R-CNN: the reference Swin backbone and FPN (see
# mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py: patch 4, window 7, head dim 16, embed 48,
# depths 2/2/2/2, FPN 96) under a 3-stage cascade (IoU 0.5/0.6/0.7, class-agnostic box
# regression, a mask head per stage), on the 'faint' preset of the generated shapes data.
# Trained in two stages: stage 1 (..._stage1.py) warm-starts from the reference Mask R-CNN
# checkpoint (backbone, FPN and RPN load; the cascade heads are new), which is how a CPU gets it
# to a meaningful AP, and trains on the 'medium' preset; this config, stage 2, fine-tunes stage
# 1's published weights on the 'faint' preset. Model card: configs/reference/README.md.
_base_ = ['./mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py']

num_classes = len(_base_.classes)
channels = 96


def _bbox_head(stds):
    return dict(
        type='Shared2FCBBoxHead',
        in_channels=channels,
        fc_out_channels=256,
        roi_feat_size=7,
        num_classes=num_classes,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=stds
        ),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
    )


def _rcnn_stage(iou):
    return dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=iou,
            neg_iou_thr=iou,
            min_pos_iou=iou,
            match_low_quality=False,
            ignore_iof_thr=-1,
        ),
        sampler=dict(
            type='RandomSampler',
            num=128,
            pos_fraction=0.25,
            neg_pos_ub=-1,
            add_gt_as_proposals=True,
        ),
        mask_size=28,
        pos_weight=-1,
        debug=False,
    )


model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        _delete_=True,
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=channels,
            featmap_strides=[4, 8, 16, 32],
        ),
        bbox_head=[
            _bbox_head([0.1, 0.1, 0.2, 0.2]),
            _bbox_head([0.05, 0.05, 0.1, 0.1]),
            _bbox_head([0.033, 0.033, 0.067, 0.067]),
        ],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=channels,
            featmap_strides=[4, 8, 16, 32],
        ),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=channels,
            conv_out_channels=64,
            num_classes=num_classes,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0),
        ),
    ),
    train_cfg=dict(rcnn=[_rcnn_stage(0.5), _rcnn_stage(0.6), _rcnn_stage(0.7)]),
)
# The 'faint' preset: the medium preset with half of the shapes camouflaged (their colour within
# +-30 per channel of the local background). On the medium preset the RepQ-ViT recipe loses only
# 1.5 box AP at W4A4, too little to tell recipes apart (model card).
data_root = 'data/reference_coco_faint/'
synthetic_data = dict(_base_.synthetic_data, out_dir=data_root, difficulty='faint')
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# stage 2: from stage 1's published (fp16) weights, 1500 iterations; one validation, after the
# last one (the model card evaluates the published weights on the whole val split)
load_from = 'work_dirs/ref_cascade/stage1_fp16.pth'
max_iters = 1500
warmup_iters = 100
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters
)
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
default_hooks = dict(checkpoint=dict(interval=250, max_keep_ckpts=6))
randomness = dict(seed=10)
