# Reference Swin classifier (timm SwinTransformer, Swin-T proportions: patch 4, window 7, head
# dim 16; embed 48, depths 2/2/2/2, heads 3/6/12/24 -- the backbone of the reference Mask
# R-CNN) on a 56 px crop of the 64 px images: 14x14 tokens, stages of 14/7/4/2 (timm shrinks the
# window of the last two stages to their resolution), on the 'faint' preset of the generated
# 12-class set (faint target textures beside strong edges; see `synthetic_data`).
# Trained in three stages: its backbone starts from the reference Mask R-CNN's (trained on the
# generated detection set; the classification analogue of an ImageNet-pretrained backbone),
# stages 1 and 2 (swin-ref-p4-w7_synthetic-cls_stage{1,2}.py) train it on the 'easy' preset,
# and this config, stage 3, fine-tunes stage 2's published weights on the 'faint' preset.
# Model card (commands, times, metrics): configs/reference/README.md.
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
# The 'faint' preset: the easy layout with one or two solid distractors and lines and a faint
# target texture (its colours 12-40 apart instead of 110-160). The easy preset's model reaches
# 92 % top-1 and loses about 1 at W4A4 with the RepQ-ViT recipe, too little to tell recipes
# apart; on this task W4A4 costs it about 7 points (model card).
data_root = 'data/reference_cls_faint/'
synthetic_data = dict(_base_.synthetic_data, out_dir=data_root, difficulty='faint')
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# stage 3: from stage 2's published (fp16) weights, 16 epochs
load_from = 'work_dirs/ref_swin_ft_s2/stage2_fp16.pth'
max_epochs = 16
warmup_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
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
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=4))
randomness = dict(seed=8)
