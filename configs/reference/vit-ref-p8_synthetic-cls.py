# Reference DeiT-style ViT (timm VisionTransformer with a class token: patch 8 on 64 px = 64
# tokens + cls, embed 128, 6 blocks, 4 heads of dim 32, MLP ratio 4) trained from scratch on
# the generated 12-class set. Model card: configs/reference/README.md.
_base_ = ['./_base_/synthetic_cls_runtime.py']

architecture = dict(
    type='TimmClassifier',
    model_name='deit_tiny_patch16_224',
    pretrained=False,
    img_size=64,
    patch_size=8,
    embed_dim=128,
    depth=6,
    num_heads=4,
    num_classes=_base_.num_classes,
    drop_path_rate=0.1,
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    data_preprocessor=_base_.data_preprocessor,
)
model = architecture
