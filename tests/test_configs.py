"""Every config in configs/ loads; complete configs are consistent."""

import glob
import math
import os.path as osp

import pytest
from mmengine.config import Config

from mmdopq.adapters import QuantRecipe

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ALL = sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))
COMPLETE = [p for p in ALL if '_base_' not in p]
QUANT_BASES = sorted(glob.glob(osp.join(REPO, 'configs', '_base_', 'quant', '*.py')))


def rel(path):
    return osp.relpath(path, REPO)


def test_there_are_configs():
    assert len(COMPLETE) >= 8 + 48
    assert len(QUANT_BASES) >= 8


@pytest.mark.parametrize('path', ALL, ids=rel)
def test_config_loads(path):
    cfg = Config.fromfile(path)
    assert len(cfg.keys()) > 0


@pytest.mark.parametrize('path', COMPLETE, ids=rel)
def test_complete_config(path):
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'mmdopq.QuantizedModel'
    recipe = QuantRecipe.from_cfg(cfg.model.quant)
    name = osp.basename(path)
    assert name.startswith(f'{recipe.recipe}_{recipe.bits_tag}_'), name
    hooks = [h for h in cfg.custom_hooks if h.type == 'mmdopq.QuantCalibrationHook']
    assert len(hooks) == 1
    assert cfg.test_dataloader.dataset.get('pipeline'), 'test pipeline needed (calibration too)'
    if '/dopq/' in path:
        assert cfg.model.architecture.backbone.type == 'SwinTransformer'
        assert hooks[0].num_images == 32 and hooks[0].selection == 'random'
        assert 'train2017' in hooks[0].dataloader.dataset.ann_file
    else:
        assert cfg.model.scope == 'mmpretrain'
        assert cfg.test_evaluator.topk == (1, 5)


@pytest.mark.parametrize('path', QUANT_BASES, ids=rel)
def test_quant_bases_match_their_names(path):
    quant = Config.fromfile(path).quant
    recipe = QuantRecipe.from_cfg(quant)
    assert osp.basename(path) == f'{recipe.recipe}_{recipe.bits_tag}.py'
    defaults = {'dopq': ('tan', 'mad'), 'repq': ('log_sqrt2', 'mean')}
    if recipe.recipe in defaults:
        assert (recipe.post_softmax, recipe.reparam_rule) == defaults[recipe.recipe]


def test_repq_protocol_calib_config():
    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/calib/repq_protocol_val1.py'))
    hook = cfg.custom_hooks[0]
    assert hook.num_images == 1 and hook.selection == 'first'
    assert 'val2017' in hook.dataloader.dataset.ann_file


@pytest.mark.parametrize(
    'path',
    sorted(glob.glob(osp.join(REPO, 'configs', 'imagenet', '_base_', 'models', '*.py'))),
    ids=rel,
)
def test_imagenet_preprocessing_is_timms(path):
    """Resize / crop / mean / std of every ImageNet model config equal timm's eval config."""
    import timm

    cfg = Config.fromfile(path)
    pcfg = timm.create_model(cfg.architecture.model_name, pretrained=False).pretrained_cfg
    size = pcfg['input_size'][-1]
    resize = next(t for t in cfg.test_pipeline if t.type == 'ResizeEdge')
    crop = next(t for t in cfg.test_pipeline if t.type == 'CenterCrop')
    assert resize.scale == math.floor(size / pcfg['crop_pct'])
    assert resize.interpolation == pcfg['interpolation'] and crop.crop_size == size
    dp = cfg.architecture.data_preprocessor
    assert dp.mean == pytest.approx([255 * m for m in pcfg['mean']], abs=1e-2)
    assert dp.std == pytest.approx([255 * s for s in pcfg['std']], abs=1e-2)


def test_full_size_models_build():
    """One detection and one ImageNet config build at full size with every site declared."""
    from mmengine.registry import MODELS, DefaultScope
    from torch import nn

    for path, scope in (
        ('configs/dopq/dopq_w4a4_mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', 'mmdet'),
        ('configs/imagenet/dopq_w4a4_deit-small-p16_in1k.py', 'mmpretrain'),
    ):
        cfg = Config.fromfile(osp.join(REPO, path))
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(cfg.model)
        layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
        assert layers == {n for n in model.quant_plan.sites if n in layers}
        assert len(model.quant_plan.post_softmax_sites) == 12  # Swin-T 2+2+6+2, DeiT-S 12
