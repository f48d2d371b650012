"""QuantizedModel + Swin adapter: keys, float equivalence, sites, reparameterization."""

import copy
import dataclasses

import pytest
import torch
from mmdet.models.backbones.swin import WindowMSA
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, MODELS, DefaultScope
from torch import nn

from mmdopq.models import QuantizedModel
from mmdopq.nn import QuantConv2d, QuantLinear, QuantMatMul, set_quant_mode
from mmdopq.quantizers import LogSqrt2Quantizer, TanQuantizer
from tests.tiny_models import build_float_detector


def build_quantized(cfg_path, float_model=None, **quant):
    cfg = Config.fromfile(cfg_path)
    cfg.model.quant.update(quant)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    if float_model is not None:
        model.load_state_dict(float_model.state_dict(), strict=False)
    return model.eval(), cfg


def batches(cfg, split='calib', n=2):
    ds_cfg = (
        cfg.custom_hooks[0].dataloader.dataset if split == 'calib' else cfg.test_dataloader.dataset
    )
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = DATASETS.build(ds_cfg)
    return [pseudo_collate([ds[i]]) for i in range(n)]


def calibrate(model, cfg):
    plan = model.quant_plan
    plan.start_calibration(model)
    with torch.no_grad():
        for b in batches(cfg):
            model.test_step(b)
    plan.calibrate_sites()
    plan.reparameterize()
    plan.recalibrate(model)
    return plan


def features(model, batch):
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        return model.extract_feat(data['inputs'])


@pytest.fixture(scope='module')
def float_model(tiny_cfg):
    return build_float_detector(tiny_cfg('dopq', 4))


def test_keys_and_classes(tiny_cfg, float_model):
    model, _ = build_quantized(tiny_cfg('dopq', 4))
    assert isinstance(model, QuantizedModel) and isinstance(model, type(float_model))
    own, flt = set(model.state_dict()), set(float_model.state_dict())
    assert flt <= own
    assert own - flt == model.quant_state_keys
    # quantizer state, Swin's folded-zero padding offsets, and the zero biases added to
    # bias-free LayerNorm consumers (patch-merging reductions) so the fold has a bias
    added_bias = {f'backbone.stages.{i}.downsample.reduction.bias' for i in range(3)}
    assert {
        k for k in model.quant_state_keys if 'quantizer' not in k and not k.endswith('input_offset')
    } == added_bias
    missing, unexpected = model.load_state_dict(float_model.state_dict(), strict=False)
    assert not unexpected and set(missing) == model.quant_state_keys


def test_declared_sites_cover_protocol(tiny_cfg):
    model, _ = build_quantized(tiny_cfg('dopq', 4))
    plan = model.quant_plan
    bb = model.backbone
    n_blocks = sum(len(s.blocks) for s in bb.stages)
    assert len(plan.post_softmax_sites) == n_blocks
    # every Conv2d / Linear of the detector is a site except the mask upsampling
    float_layers = {
        n
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, QuantMatMul)
    }
    assert float_layers == {
        n for n, m in plan.sites.items() if isinstance(m, (QuantConv2d, QuantLinear))
    }
    assert isinstance(model.roi_head.mask_head.upsample, nn.ConvTranspose2d)
    for name in plan.post_softmax_sites:
        assert isinstance(plan.sites[name].quantizer_a, TanQuantizer)
    # recipe components: TanQ's attention maps, the folded post-LN inputs, the rest
    comps = plan.components()
    assert all(isinstance(q, TanQuantizer) for q in comps['post_softmax'])
    assert len(comps['post_softmax']) == n_blocks
    assert len(comps['post_layernorm']) == sum(len(p.consumers) for p in plan.norm_pairs) > 0
    n_quantizers = sum(1 for layer in plan.sites.values() for _ in layer.quantizers())
    assert sum(len(v) for v in comps.values()) == n_quantizers
    for m in bb.modules():
        if isinstance(m, WindowMSA):
            assert isinstance(m.qk_matmul, QuantMatMul) and isinstance(m.av_matmul, QuantMatMul)
    assert model.backbone.patch_embed.projection.input_quantizer.bits == 8
    repq, _ = build_quantized(tiny_cfg('repq', 4))
    for name in repq.quant_plan.post_softmax_sites:
        assert isinstance(repq.quant_plan.sites[name].quantizer_a, LogSqrt2Quantizer)
    bb_only, _ = build_quantized(tiny_cfg('dopq', 4), scope='backbone')
    assert all(n.startswith('backbone.') for n in bb_only.quant_plan.sites)
    assert bb_only.quant_plan.units[-1][0] != 'neck'
    # backbone and neck quantized, heads float; the neck stays a (neck) reconstruction unit
    bb_neck, _ = build_quantized(tiny_cfg('dopq', 4), scope='backbone_neck')
    sites = set(bb_neck.quant_plan.sites)
    neck = {n for n in sites if n.startswith('neck.')}
    assert neck and sites == set(bb_only.quant_plan.sites) | neck
    assert neck == {n for n in plan.sites if n.startswith('neck.')}
    assert type(bb_neck.rpn_head.rpn_conv) is nn.Conv2d
    assert bb_neck.quant_plan.units[-1][0] == 'neck'
    assert bb_neck.quant_plan.unit_kinds['neck'] == 'neck'


def test_float_mode_identical_to_plain_detector(tiny_cfg, float_model):
    model, cfg = build_quantized(tiny_cfg('dopq', 4), float_model)
    for batch in batches(cfg, 'test', 2):
        a = float_model.test_step(batch)[0].pred_instances
        b = model.test_step(batch)[0].pred_instances
        for key in ('bboxes', 'scores', 'labels', 'masks'):
            assert torch.equal(a[key], b[key]), key
        # loss works too (same data preprocessor and heads)
    model.train()
    losses = model.loss(*_train_inputs(model, cfg))
    assert all(
        torch.isfinite(v).all()
        for k, v in losses.items()
        if 'loss' in k and isinstance(v, torch.Tensor)
    )


def _train_inputs(model, cfg):
    batch = batches(cfg, 'test', 1)[0]
    data = model.data_preprocessor(batch, True)
    return data['inputs'], data['data_samples']


@pytest.mark.parametrize('recipe', ['dopq', 'repq'])
def test_every_declared_site_calibrated(recipe, tiny_cfg, float_model):
    model, cfg = build_quantized(tiny_cfg(recipe, 4), float_model)
    assert not model.quant_plan.is_calibrated
    plan = calibrate(model, cfg)
    assert plan.uncalibrated_sites() == []
    for name, layer in plan.sites.items():
        for qname, q in layer.quantizers():
            assert bool(q.calibrated), f'{name}.{qname}'
    assert all(m.quant_mode == 'quant' for m in plan.sites.values())
    # post-LN consumers are per-tensor after the fold
    for pair in plan.norm_pairs:
        for c in pair.consumers:
            assert plan.sites[c].input_quantizer.scale.dim() == 0
    out = model.test_step(batches(cfg, 'test', 1)[0])[0]
    assert torch.isfinite(out.pred_instances.bboxes).all()


def test_site_without_data_is_an_error(tiny_cfg, float_model):
    model, _ = build_quantized(tiny_cfg('dopq', 4), float_model)
    model.quant_plan.start_calibration(model)
    with pytest.raises(ValueError, match='saw no calibration data'):
        model.quant_plan.calibrate_sites()


@pytest.mark.parametrize('rule', ['mean', 'median', 'mad'])
def test_reparameterized_model_equals_float_with_quant_off(rule, tiny_cfg, float_model):
    """All quantizers off: the folded model (any rule) computes the float model."""
    model, cfg = build_quantized(tiny_cfg('dopq', 4), float_model, reparam_rule=rule)
    plan = calibrate(model, cfg)
    assert len(plan.fold_results) == len(plan.norm_pairs)
    if rule == 'mad':
        assert any(
            bool(o.input_offset.any())
            for o in (p.zero_image_owner for p in plan.norm_pairs)
            if o is not None
        )
    for layer in plan.sites.values():
        for _, q in layer.quantizers():
            q.enabled = False
    for batch in batches(cfg, 'test', 2):
        for fa, fb in zip(features(float_model, batch), features(model, batch)):
            torch.testing.assert_close(fb, fa, rtol=1e-3, atol=1e-3)


def test_exact_fold_matches_per_channel_model_with_weight_quant_off(tiny_cfg, float_model):
    """Weights in float, activations quantized: per-tensor after the RepQ fold equals
    per-channel before it (the exactness of the fold), including padded windows."""
    per_channel, cfg = build_quantized(tiny_cfg('repq', 4), float_model, reparam_rule='none')
    folded = copy.deepcopy(per_channel)
    plan_pc = calibrate(per_channel, cfg)
    plan_f = folded.quant_plan
    # same calibration statistics, then fold the copy
    folded.load_state_dict(per_channel.state_dict())
    # the recipe is immutable: give the copy's plan a mean-rule one
    mean = dataclasses.replace(folded.quant_recipe, reparam_rule='mean')
    folded.quant_recipe = plan_f.factory.recipe = mean
    plan_f.reparameterize()
    plan_f.recalibrate(folded)
    for plan in (plan_pc, plan_f):
        for layer in plan.sites.values():
            if hasattr(layer, 'weight_quantizer'):
                layer.weight_quantizer.enabled = False
    set_quant_mode(folded, 'quant')
    for batch in batches(cfg, 'test', 2):
        for fa, fb in zip(features(per_channel, batch), features(folded, batch)):
            rel = (fa - fb).norm() / fa.norm()
            assert rel < 2e-3, float(rel)
