"""Block reconstruction on the tiny mmdet Swin Mask R-CNN: units, neck and heads options."""

import pytest
import torch

from mmdopq.apis import calibrate
from mmdopq.nn import QuantConv2d, QuantLinear, set_quant_mode
from mmdopq.reconstruct import ReconstructSettings, reconstruct
from mmdopq.reconstruct.cache import UnitCache
from mmdopq.reconstruct.stage import _modes, _roi_source, _RoiRegions, _run_pass, select_units
from mmdopq.utils.errors import ConfigError
from tests.test_models.test_quantized_model import batches, build_quantized
from tests.tiny_models import build_float_detector

FAST = dict(iters=8, batch_size=1, num_images=2, eval_every=4, progress=False)


@pytest.fixture(scope='module')
def float_model(tiny_cfg):
    return build_float_detector(tiny_cfg('dopq', 4))


HEADS = ['rpn_head', 'roi_head.bbox_head', 'roi_head.mask_head']


def calibrated(tiny_cfg, float_model, n):
    """The tiny DopQ W4A4 detector calibrated on ``n`` batches, the batches and their loop."""
    model, cfg = build_quantized(tiny_cfg('dopq', 4), float_model)
    data = batches(cfg, 'calib', n)

    def loop(m):
        for b in data:
            m.test_step(b)

    calibrate(model, loop)
    return model, data, loop


def test_units_cover_every_site_once_and_the_neck_and_heads_are_optional(tiny_cfg):
    model, _ = build_quantized(tiny_cfg('dopq', 4))
    plan = model.quant_plan
    names = [n for n, _ in plan.units]
    assert names[0] == 'backbone.patch_embed' and names[-4:] == ['neck', *HEADS]
    assert plan.unit_kinds['neck'] == 'neck' and plan.unit_kinds['rpn_head'] == 'head'
    assert plan.unit_kinds['roi_head.bbox_head'] == plan.unit_kinds['roi_head.mask_head'] == 'roi'
    assert all(plan.unit_kinds[n] == 'block' for n in names[:-4])
    assert 'backbone.stages.0.downsample' in names
    assert names.index('backbone.stages.0.blocks.1') < names.index('backbone.stages.0.downsample')
    owner = {}
    for uname, unit in plan.units:
        for m in unit.modules():
            owner.setdefault(id(m), []).append(uname)
    for site_name, site in plan.sites.items():
        assert len(owner.get(id(site), [])) == 1, site_name
    picked = {
        key: [n for n, _ in select_units(plan, ReconstructSettings(**{key: True}))]
        for key in ('enabled', 'neck', 'heads')
    }
    assert picked['enabled'] == names[:-4]
    assert picked['neck'] == names[:-3]
    assert picked['heads'] == names[:-4] + HEADS


@pytest.mark.parametrize('scope', ['backbone_neck', 'backbone'])
def test_asking_for_units_the_scope_does_not_quantize_is_an_error(tiny_cfg, scope):
    plan = build_quantized(tiny_cfg('dopq', 4), scope=scope)[0].quant_plan
    message = rf"reconstruct.heads=True, but quant.scope='{scope}' leaves its heads in float"
    with pytest.raises(ConfigError, match=message):
        select_units(plan, ReconstructSettings(heads=True))
    if scope == 'backbone_neck':
        assert [n for n, _ in select_units(plan, ReconstructSettings(neck=True))][-1] == 'neck'
    else:
        message = "reconstruct.neck=True, but quant.scope='backbone' leaves its neck in float"
        with pytest.raises(ConfigError, match=message):
            select_units(plan, ReconstructSettings(neck=True))


def test_roi_head_units_keep_some_regions_per_call_with_local_float_targets(tiny_cfg, float_model):
    model, data, loop = calibrated(tiny_cfg, float_model, 2)
    head = model.roi_head.bbox_head
    seen = []
    handle = head.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    with torch.no_grad():
        loop(model)
    handle.remove()
    assert len(seen) == 2 and min(seen) > 3  # one call per batch, more regions than kept
    cache = UnitCache(name='roi_head.bbox_head')
    _run_pass(model, loop, head, cache, 'inputs', rows=(3, torch.Generator().manual_seed(0)))
    cache.finish()
    assert cache.num_samples == 6
    (x,), _, (cls_score, bbox_pred) = cache.get(0, torch.arange(6))
    with torch.no_grad():  # the target: the float head on the quantized model's regions
        set_quant_mode(head, 'float')
        ref_cls, ref_bbox = head(x)
        set_quant_mode(head, 'quant')
        quant_cls, _ = head(x)
    # the target was computed on all of the call's regions, the reference on 6 of them: BLAS
    # may sum in another order for another row count (seen on AMD EPYC), so not bit-equal
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cls_score, ref_cls, **close)
    torch.testing.assert_close(bbox_pred, ref_bbox, **close)
    assert not torch.allclose(quant_cls, ref_cls, **close)


def test_roi_head_float_targets_pool_the_float_features_at_the_quantized_regions(
    tiny_cfg, float_model
):
    model, data, loop = calibrated(tiny_cfg, float_model, 2)
    plan = model.quant_plan
    head, pooler = model.roi_head.bbox_head, model.roi_head.bbox_roi_extractor
    source = _roi_source(plan, 'roi_head.bbox_head')
    assert source.features is model.neck and source.pooler is pooler
    assert plan.roi_sources['roi_head.mask_head'].pooler is model.roi_head.mask_roi_extractor
    # every region of each call of the quantized model, to check the filed ones against
    calls = []
    handle = pooler.register_forward_pre_hook(lambda m, a: calls.append(a[1].clone()))
    with torch.no_grad():
        loop(model)
    handle.remove()
    assert len(calls) == 2 and min(len(r) for r in calls) > 3
    cache = UnitCache(name='roi_head.bbox_head')
    regions = _RoiRegions('roi_head.bbox_head', head, source)
    _run_pass(model, loop, head, cache, 'inputs', (3, torch.Generator().manual_seed(0)), regions)
    with _modes(model, 'float'):
        regions.targets(model, loop, cache)
    cache.finish()
    assert cache.num_samples == 6 and sorted(regions.calls) == [0, 1]
    inputs, targets, local = [], [], []
    with torch.no_grad():
        for b, batch in enumerate(data):
            ((n, rois),) = regions.calls[b]
            # the filed regions are 3 distinct regions of that call of the quantized model
            assert n == pooler.num_inputs
            matches = (rois[:, None, :] == calls[b][None]).all(-1)
            assert rois.shape[0] == 3 and matches.any(1).all() and matches.sum().item() == 3
            x = model.data_preprocessor(batch, False)['inputs']
            quant_feats = model.extract_feat(x)
            set_quant_mode(model, 'float')
            float_feats = model.extract_feat(x)
            float_x = pooler(float_feats[:n], rois)
            targets.append(head(float_x))
            quant_x = pooler(quant_feats[:n], rois)
            local.append(head(quant_x))
            set_quant_mode(model, 'quant')
            inputs.append(quant_x)
    (x,), _, (cls_score, bbox_pred) = cache.get(0, torch.arange(6))
    close = dict(rtol=1e-5, atol=1e-6)
    # the input: the quantized model's pooled features; the target: the float head on the
    # float model's features pooled at the same regions, not on the quantized ones
    torch.testing.assert_close(x, torch.cat(inputs), **close)
    torch.testing.assert_close(cls_score, torch.cat([t[0] for t in targets]), **close)
    torch.testing.assert_close(bbox_pred, torch.cat([t[1] for t in targets]), **close)
    assert not torch.allclose(cls_score, torch.cat([t[0] for t in local]), **close)


def test_float_roi_targets_need_the_head_called_on_its_extractor(tiny_cfg, float_model):
    model, data, loop = calibrated(tiny_cfg, float_model, 1)
    plan = model.quant_plan
    source = plan.roi_sources.pop('roi_head.mask_head')
    settings = dict(FAST, heads=True, roi_target='float')
    with pytest.raises(
        ConfigError, match="declares no feature source for the RoI head 'roi_head.mask_head'"
    ):
        reconstruct(model, loop, settings)
    # a head that is not called on its extractor's output (here: the box head's extractor
    # declared for the mask head) is refused, not trained against the wrong regions
    plan.roi_sources['roi_head.mask_head'] = type(source)(
        model.neck, model.roi_head.bbox_roi_extractor
    )
    head = model.roi_head.mask_head
    regions = _RoiRegions('roi_head.mask_head', head, plan.roi_sources['roi_head.mask_head'])
    with pytest.raises(
        ConfigError, match="'roi_head.mask_head' is not called on the output of its RoI extractor"
    ):
        _run_pass(model, loop, head, UnitCache(), 'inputs', (3, torch.Generator()), regions)
    with pytest.raises(
        ValueError, match=r"roi_target='global' must be one of \('local', 'float'\)"
    ):
        ReconstructSettings.from_mapping(dict(roi_target='global'))


@pytest.mark.parametrize('roi_target', ['local', 'float'])
def test_detector_reconstruction_with_the_neck_and_heads(tiny_cfg, float_model, roi_target):
    model, data, loop = calibrated(tiny_cfg, float_model, 2)
    settings = dict(FAST, neck=True, heads=True, rois_per_call=5, roi_target=roi_target)
    rec = reconstruct(model, loop, settings)
    assert list(rec['units'])[-4:] == ['neck', *HEADS]
    assert len(rec['units']) == len(model.quant_plan.units)
    for name, r in rec['units'].items():
        assert r['loss_after'] <= r['loss_before'], name
        # RoI heads count regions: at most 5 of each of the 2 calls
        assert r['samples'] == 2 if not name.startswith('roi_head.') else 0 < r['samples'] <= 10
    changed = [u for n, u in model.quant_plan.units if rec['units'][n]['changed']]
    assert changed
    for unit in changed:  # the reconstructed weights lie on their quantizer's grid
        for layer in unit.modules():
            if isinstance(layer, (QuantLinear, QuantConv2d)):
                w = layer.weight.detach()
                assert torch.equal(layer.weight_quantizer(w), w)
    out = model.test_step(data[0])[0].pred_instances
    assert torch.isfinite(out.bboxes).all()
    assert any(rec['units'][n]['changed'] for n in HEADS)


@pytest.mark.parametrize('roi_target', ['local', 'float'])
def test_heads_with_a_loop_that_uses_the_output_keep_the_same_regions(
    tiny_cfg, float_model, roi_target
):
    """A loop that reads the detections gets full passes; the RoI heads keep the same rows."""
    model, data, loop = calibrated(tiny_cfg, float_model, 2)
    twin, _, _ = calibrated(tiny_cfg, float_model, 2)

    def reading_loop(m):
        for b in data:
            m.test_step(b)[0].pred_instances.bboxes.sum()

    settings = dict(FAST, neck=True, heads=True, rois_per_call=5, roi_target=roi_target)
    rec = reconstruct(model, reading_loop, settings)
    ref = reconstruct(twin, loop, settings)
    for name in HEADS:
        assert rec['units'][name]['samples'] == ref['units'][name]['samples'], name
        assert rec['units'][name]['loss_before'] == ref['units'][name]['loss_before'], name
    out = model.test_step(data[0])[0].pred_instances
    ref_out = twin.test_step(data[0])[0].pred_instances
    torch.testing.assert_close(out.bboxes, ref_out.bboxes)
