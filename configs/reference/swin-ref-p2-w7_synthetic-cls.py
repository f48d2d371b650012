# Reference Swin classifier (timm SwinTransformer, window 7, head dim 16 as Swin-T; patch 2 on
# a 56 px crop of the 64 px images = 28x28 tokens, three stages of 28/14/7, embed 32, depths
# 2/2/2, heads 2/4/8) trained from scratch on the generated 12-class set.
# Model card: configs/reference/README.md.
_base_ = ['./_base_/synthetic_cls_runtime.py']

architecture = dict(
    type='TimmClassifier',
    model_name='swin_tiny_patch4_window7_224',
    pretrained=False,
    img_size=56,
    patch_size=2,
    embed_dim=32,
    depths=(2, 2, 2),
    num_heads=(2, 4, 8),
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
