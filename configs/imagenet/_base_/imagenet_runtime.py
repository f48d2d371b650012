# ImageNet-1k evaluation in folder layout (data/imagenet/{train,val}/<wnid>/*.JPEG) with
# mmpretrain's CustomDataset and top-1/top-5 Accuracy. The test pipeline comes from the
# model base (timm's evaluation preprocessing of each model).
_base_ = ['mmpretrain::_base_/default_runtime.py']

test_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CustomDataset',
        data_root='data/imagenet',
        data_prefix='val',
        with_label=True,
    ),
)
test_evaluator = dict(type='Accuracy', topk=(1, 5))
test_cfg = dict()
env_cfg = dict(dist_cfg=dict(backend='gloo'))
