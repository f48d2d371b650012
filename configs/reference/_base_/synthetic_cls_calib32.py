# Calibration of the reference classifiers: 32 seeded-random images of the generated train
# split (never the val split that is reported), through the model's test pipeline. The data
# root is the shared runtime's ('easy') set; a model on other data points it at its own
# (dopq_w4a4_swin-ref-p4-w7_synthetic-cls.py). Owns the top-level key `custom_hooks`.
custom_hooks = [
    dict(
        type='mmdopq.QuantCalibrationHook',
        num_images=32,
        selection='random',
        seed=0,
        dataloader=dict(
            batch_size=8,
            dataset=dict(
                type='CustomDataset',
                data_root='data/reference_cls/',
                data_prefix='train',
                with_label=True,
            ),
        ),
    )
]
