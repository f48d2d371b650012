"""Tiny models and data for the tests: Swin (Cascade) Mask R-CNN on tiny COCO data, timm
classifiers on tiny image folders. The fixtures that use them are in ``tests/conftest.py``."""

import os
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SWIN_T_3X = 'swin-t-p4-w7_fpn_ms-crop-3x_coco'
IMG_SCALE = (160, 128)  # small, and not a multiple of 4 * 7: Swin pads windows


def config_path(recipe: str, bits: int, arch: str = SWIN_T_3X, detector: str = 'mask-rcnn') -> str:
    name = f'{recipe}_w{bits}a{bits}_{detector}_{arch}.py'
    return osp.join(REPO, 'configs', 'dopq', name)


def shrink(cfg: Config, data: dict, num_calib: int = 2) -> Config:
    """Small Swin (Cascade) Mask R-CNN on the tiny data, keeping the real config's structure."""
    arch = cfg.model.architecture
    dims = 16
    arch.backbone.update(
        embed_dims=dims,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 2, 4),
        drop_path_rate=0.0,
        init_cfg=None,
        with_cp=False,
    )
    chans = [dims * 2**i for i in range(4)]
    arch.neck.update(in_channels=chans, out_channels=16)
    arch.rpn_head.update(in_channels=16, feat_channels=16)
    rh = arch.roi_head
    num_classes = len(data['classes'])
    rh.bbox_roi_extractor.out_channels = 16
    # Cascade R-CNN: one box head per stage (4conv1fc heads: shrink the convs, BN not SyncBN)
    for head in rh.bbox_head if isinstance(rh.bbox_head, list) else [rh.bbox_head]:
        head.update(in_channels=16, fc_out_channels=32, num_classes=num_classes)
        if 'conv_out_channels' in head:
            head.conv_out_channels = 16
        if head.get('norm_cfg') is not None:
            head.norm_cfg = dict(type='BN', requires_grad=True)
    rh.mask_roi_extractor.out_channels = 16
    for head in rh.mask_head if isinstance(rh.mask_head, list) else [rh.mask_head]:
        head.update(in_channels=16, conv_out_channels=16, num_classes=num_classes)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=IMG_SCALE, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(
            type='PackDetInputs',
            meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'),
        ),
    ]
    meta = dict(classes=data['classes'])
    val = dict(
        type='CocoDataset',
        data_root=data['root'] + '/',
        metainfo=meta,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=pipeline,
    )
    cfg.test_dataloader = dict(
        batch_size=1,
        num_workers=0,
        persistent_workers=False,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=val,
    )
    cfg.test_evaluator = dict(
        type='CocoMetric',
        ann_file=osp.join(data['root'], 'annotations/instances_val.json'),
        metric=['bbox', 'segm'],
        format_only=False,
    )
    cfg.val_dataloader, cfg.val_evaluator = cfg.test_dataloader, cfg.test_evaluator
    calib = cfg.custom_hooks[0]
    calib.num_images = num_calib
    calib.dataloader.dataset = dict(
        val,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=pipeline[:2] + pipeline[3:],
    )
    cfg.default_hooks.pop('visualization', None)
    cfg.env_cfg = dict(
        cudnn_benchmark=False,
        dist_cfg=dict(backend='gloo'),
        mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    )
    return cfg


def build_float_detector(cfg_path: str, seed: int = 0):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(cfg_path)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model.architecture)
    model.init_weights()
    # Non-trivial norms (outlier channels) so that reparameterization has work to do.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.weight[:2] *= 8
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))
    return model.eval()


TINY = {
    'vit': dict(
        model_name='vit_tiny_patch16_224',
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
    ),
    'swin': dict(
        model_name='swin_tiny_patch4_window7_224',
        img_size=32,
        patch_size=4,
        window_size=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
    ),
}


def tiny_config(
    arch: str, recipe: str, data: dict, out_dir, bits: int = 4, resize: bool = True, **over
) -> str:
    """A tiny timm classifier config on ``data`` (images resized to 32, unless ``resize`` is
    False: then they go to the model as they are)."""
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'imagenet', f'{recipe}_w{bits}a{bits}_deit-small-p16_in1k.py')
    )
    a = cfg.model.architecture
    a.update(TINY[arch], num_classes=data['num_classes'])
    a.data_preprocessor.num_classes = data['num_classes']
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=36, edge='short', backend='pillow', interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=32),
        dict(type='PackInputs'),
    ]
    if not resize:
        pipeline = [pipeline[0], pipeline[-1]]
    ds = cfg.test_dataloader.dataset
    ds.update(data_root=data['root'], pipeline=pipeline)
    cfg.test_dataloader.update(batch_size=8, num_workers=0)
    cfg.custom_hooks[0].dataloader.dataset.data_root = data['root']
    cfg.custom_hooks[0].num_images = 8
    cfg.model.quant.update(over)
    os.makedirs(out_dir, exist_ok=True)
    path = str(out_dir / f'{arch}_{recipe}_w{bits}a{bits}.py')
    cfg.dump(path)
    return path


def float_checkpoint(cfg_path: str, out_path: str) -> str:
    """A timm-key-named checkpoint of a randomly initialised tiny model."""
    cfg = Config.fromfile(cfg_path)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model.architecture)
    state = model.state_dict()
    assert any(k.startswith(('blocks.', 'layers.')) for k in state)  # timm key names
    torch.save(state, out_path)
    return out_path
