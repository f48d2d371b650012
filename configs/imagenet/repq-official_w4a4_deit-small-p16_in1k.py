# Parity with the official RepQ-ViT code: its recipe choices and its DeiT preprocessing
# (crop 0.875: resize 256, centre crop 224). Calibration: 32 seeded-random train images, as
# the official code (one batch of its shuffled train loader).
_base_ = [
    './_base_/models/deit-small-p16.py',
    './_base_/deit_official_crop.py',
    './_base_/imagenet_runtime.py',
    '../_base_/quant/repq-official_w4a4.py',
    '../_base_/calib/in1k_train_calib32.py',
]
model = dict(
    type='mmdopq.QuantizedModel',
    scope='mmpretrain',
    architecture=_base_.architecture,
    quant=_base_.quant,
)
test_dataloader = dict(dataset=dict(pipeline=_base_.official_test_pipeline))
