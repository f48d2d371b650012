# Calibration on 32 COCO train2017 images drawn with a fixed seed (mmdopq default).
# Owns the top-level key `custom_hooks`.
calib_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'),
    ),
]
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
                data_root='data/coco/',
                ann_file='annotations/instances_train2017.json',
                data_prefix=dict(img='train2017/'),
                test_mode=True,
                pipeline=calib_pipeline,
                backend_args=None,
            ),
        ),
    )
]
