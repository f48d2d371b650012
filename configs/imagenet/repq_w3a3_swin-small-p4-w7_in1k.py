_base_ = [
    './_base_/models/swin-small-p4-w7.py',
    './_base_/imagenet_runtime.py',
    '../_base_/quant/repq_w3a3.py',
    '../_base_/calib/in1k_train_calib32.py',
]
model = dict(
    type='mmdopq.QuantizedModel',
    scope='mmpretrain',
    architecture=_base_.architecture,
    quant=_base_.quant,
)
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
