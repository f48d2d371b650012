# DopQ-ViT W4/A4 of the reference Swin Mask R-CNN, calibrated on 32 seeded-random images of the
# generated train split (never the val split that is reported). Other recipes and bit widths:
#   python tools/quantize.py THIS_CONFIG CKPT --recipe repq --bits w6a6 [--seed 1]
_base_ = [
    './mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py',
    '../_base_/quant/dopq_w4a4.py',
]
# Block reconstruction is off; `--reconstruct` switches it on with these settings: a
# detection image holds ~60x the tokens of a classification image, hence 4 images per step.
reconstruct = dict(enabled=False, iters=300, batch_size=4, num_images=256, eval_images=32)
model = dict(
    _delete_=True,
    type='mmdopq.QuantizedModel',
    architecture=_base_.model,
    quant=dict(_base_.quant, reconstruct=reconstruct),
)
custom_hooks = [
    dict(
        type='mmdopq.QuantCalibrationHook',
        num_images=32,
        selection='random',
        seed=0,
        dataloader=dict(
            batch_size=1,
            dataset=dict(
                type='CocoDataset',
                data_root=_base_.data_root,
                metainfo=_base_.metainfo,
                ann_file='annotations/instances_train.json',
                data_prefix=dict(img='train/'),
                test_mode=True,
            ),
        ),
    )
]
