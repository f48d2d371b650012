"""Tiny COCO data, tiny Swin Mask R-CNN configs and float checkpoints for detection tests."""

import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdopq.datasets.synthetic_shapes import generate_coco_shapes

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SWIN_T_3X = 'swin-t-p4-w7_fpn_ms-crop-3x_coco'
IMG_SCALE = (160, 128)  # small, and not a multiple of 4 * 7: Swin pads windows


def config_path(recipe: str, bits: int, arch: str = SWIN_T_3X, detector: str = 'mask-rcnn') -> str:
    name = f'{recipe}_w{bits}a{bits}_{detector}_{arch}.py'
    return osp.join(REPO, 'configs', 'dopq', name)


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('tiny_coco'))
    summary = generate_coco_shapes(
        root, num_train=6, num_val=3, img_size=96, seed=0, difficulty='easy'
    )
    return dict(root=root, classes=tuple(summary['classes']))


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


@pytest.fixture(scope='session')
def tiny_cfg(tiny_coco, tmp_path_factory):
    """``tiny_cfg(recipe, bits, **quant_overrides) -> path of a dumped config``."""
    out = tmp_path_factory.mktemp('configs')

    def make(recipe: str = 'dopq', bits: int = 4, num_calib: int = 2, **quant) -> str:
        cfg = shrink(Config.fromfile(config_path(recipe, bits)), tiny_coco, num_calib)
        cfg.model.quant.update(quant)
        tag = '_'.join(f'{k}-{v}' for k, v in sorted(quant.items()))
        path = str(out / f'{recipe}_w{bits}a{bits}_{num_calib}{tag}.py')
        cfg.dump(path)
        return path

    return make


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


@pytest.fixture(scope='session')
def float_ckpt(tiny_cfg, tmp_path_factory):
    from mmengine.runner import save_checkpoint

    path = str(tmp_path_factory.mktemp('ckpt') / 'float.pth')
    model = build_float_detector(tiny_cfg('dopq', 4))
    save_checkpoint(dict(meta=dict(note='tiny float'), state_dict=model.state_dict()), path)
    return path
