"""Block reconstruction on the tiny mmdet Swin Mask R-CNN: units, neck option, the hook's loop."""

import pytest
import torch

from mmdopq.apis import calibrate
from mmdopq.nn import QuantConv2d, QuantLinear
from mmdopq.reconstruct import ReconstructSettings, reconstruct
from mmdopq.reconstruct.stage import select_units
from tests.test_models.test_quantized_model import batches, build_quantized
from tests.tiny_models import build_float_detector

FAST = dict(iters=8, batch_size=1, num_images=2, eval_every=4, progress=False)


@pytest.fixture(scope='module')
def float_model(tiny_cfg):
    return build_float_detector(tiny_cfg('dopq', 4))


def test_units_cover_the_backbone_sites_once_and_the_neck_is_optional(tiny_cfg):
    model, _ = build_quantized(tiny_cfg('dopq', 4))
    plan = model.quant_plan
    names = [n for n, _ in plan.units]
    assert names[0] == 'backbone.patch_embed' and names[-1] == 'neck'
    assert plan.unit_kinds['neck'] == 'neck'
    assert all(plan.unit_kinds[n] == 'block' for n in names[:-1])
    assert 'backbone.stages.0.downsample' in names
    assert names.index('backbone.stages.0.blocks.1') < names.index('backbone.stages.0.downsample')
    owner = {}
    for uname, unit in plan.units:
        for m in unit.modules():
            owner.setdefault(id(m), []).append(uname)
    for site_name, site in plan.sites.items():
        units = owner.get(id(site), [])
        if site_name.startswith(('backbone.', 'neck.')):
            assert len(units) == 1, site_name
        else:
            assert not units, site_name  # heads stay calibrated only


def test_detector_reconstruction_with_the_neck(tiny_cfg, float_model):
    model, cfg = build_quantized(tiny_cfg('dopq', 4), float_model)
    data = batches(cfg, 'calib', 2)

    def loop(m):
        for b in data:
            m.test_step(b)

    calibrate(model, loop)
    rec = reconstruct(model, loop, dict(FAST, neck=True))
    assert list(rec['units'])[-1] == 'neck'
    n_units = len(model.quant_plan.units)
    assert len(rec['units']) == n_units
    for name, r in rec['units'].items():
        assert r['loss_after'] <= r['loss_before'], name
        assert r['samples'] == 2
    changed = [u for n, u in model.quant_plan.units if rec['units'][n]['changed']]
    assert changed
    for unit in changed:  # the reconstructed weights lie on their quantizer's grid
        for layer in unit.modules():
            if isinstance(layer, (QuantLinear, QuantConv2d)):
                w = layer.weight.detach()
                assert torch.equal(layer.weight_quantizer(w), w)
    out = model.test_step(data[0])[0].pred_instances
    assert torch.isfinite(out.bboxes).all()
    # without neck=True the neck is left as calibrated
    units = select_units(model.quant_plan, ReconstructSettings())
    assert [n for n, _ in units] == list(rec['units'])[:-1]
