# timm `vit_base_patch16_224` (weights: a local timm checkpoint given to tools/quantize.py)
# and timm's evaluation preprocessing for it: resize the short side to floor(224 / crop_pct) = 248
# (bicubic), centre crop 224, mean/std of its pretrained config (crop_pct 0.9).
architecture = dict(
    type='TimmClassifier',
    model_name='vit_base_patch16_224',
    pretrained=False,
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        num_classes=1000,
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        to_rgb=True,
    ),
)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
