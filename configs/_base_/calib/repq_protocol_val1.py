# The RepQ-ViT detection protocol: calibrate on the first val2017 image (evaluation data).
# Use it only to compare with published RepQ-ViT / DopQ-ViT numbers like for like.
_base_ = ['./coco_train_calib32.py']
custom_hooks = [
    dict(
        type='mmdopq.QuantCalibrationHook',
        num_images=1,
        selection='first',
        seed=0,
        dataloader=dict(
            batch_size=1,
            dataset=dict(
                type='CocoDataset',
                data_root='data/coco/',
                ann_file='annotations/instances_val2017.json',
                data_prefix=dict(img='val2017/'),
                test_mode=True,
                pipeline=_base_.calib_pipeline,
                backend_args=None,
            ),
        ),
    )
]
