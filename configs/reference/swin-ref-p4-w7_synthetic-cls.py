# Reference Swin classifier (timm SwinTransformer, Swin-T proportions: patch 4, window 7, head
# dim 16; embed 48, depths 2/2/2/2, heads 3/6/12/24 -- the backbone of the reference Mask
# R-CNN) on a 56 px crop of the 64 px images: 14x14 tokens, stages of 14/7/4/2 (timm shrinks the
# window of the last two stages to their resolution). Its backbone starts from the reference
# Mask R-CNN's (trained on the generated detection set), the classification analogue of an
# ImageNet-pretrained backbone:
#   python tools/model_converters/mmdet_swin_to_timm.py \
#       checkpoints/reference/mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.pth \
#       configs/reference/swin-ref-p4-w7_synthetic-cls.py work_dirs/ref_swin_ft/init.pth
# From scratch, the previous reference Swin classifier (patch 2, embed 32, 0.57 M parameters)
# reached 50.5 % top-1 after 60 epochs.
# Model card: configs/reference/README.md.
_base_ = ['./_base_/synthetic_cls_runtime.py']

architecture = dict(
    type='TimmClassifier',
    model_name='swin_tiny_patch4_window7_224',
    pretrained=False,
    img_size=56,
    patch_size=4,
    embed_dim=48,
    depths=(2, 2, 2, 2),
    num_heads=(3, 6, 12, 24),
    window_size=7,
    num_classes=_base_.num_classes,
    drop_path_rate=0.1,
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    data_preprocessor=_base_.data_preprocessor,
)
model = architecture
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=56, crop_ratio_range=(0.6, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=56, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

load_from = 'work_dirs/ref_swin_ft/init.pth'
max_epochs = 30
warmup_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=1e-5,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
