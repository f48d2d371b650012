# Calibration on 32 ImageNet train images drawn with a fixed seed (the RepQ-ViT protocol).
# Owns the top-level key `custom_hooks`. No pipeline: the hook uses the test pipeline, i.e.
# the model's own timm evaluation preprocessing.
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
                data_root='data/imagenet',
                data_prefix='train',
                with_label=True,
            ),
        ),
    )
]
