# The official RepQ-ViT code's DeiT preprocessing: resize the short side to floor(224 / 0.875) =
# 256 (bicubic), centre crop 224 (mmdopq's DeiT configs use timm's crop_pct 0.9: 248 -> 224).
# Owns the top-level key `official_test_pipeline`; a config sets
#   test_dataloader = dict(dataset=dict(pipeline=_base_.official_test_pipeline))
# (calibration uses the test pipeline, as the official code uses one transform for both).
official_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
