"""The plain-PyTorch API (mmdopq.calibrate): quantize / prepare / calibrate on bare timm models."""

import copy

import pytest
import timm
import torch

from mmdopq.apis import calibrate, prepare, quantize
from mmdopq.nn import QuantModuleMixin
from mmdopq.recipe import QuantRecipe

VIT_KW = dict(
    pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
)


def float_vit(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model('vit_tiny_patch16_224', **VIT_KW).eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


CALIB = [images(4, seed) for seed in range(3)]
TEST = images(8, 100)


def forward_loop(model):
    for x in CALIB:
        model(x)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_readme_example_quantizes_a_bare_timm_model():
    """The README's bare-PyTorch example, line for line (a float model, a loop, one call)."""
    model = float_vit()
    with torch.no_grad():
        ref = model(TEST)
    qmodel = quantize(model, dict(recipe='dopq', wbits=4, abits=4), forward_loop)
    with torch.no_grad():
        out = qmodel(TEST)
    assert qmodel is model
    assert qmodel.quant_plan.is_calibrated
    modes = {m.quant_mode for m in qmodel.modules() if isinstance(m, QuantModuleMixin)}
    assert modes == {'quant'}
    assert qmodel.quant_calibration['plan']['norm_pairs'] == 4  # norm1/norm2 of 2 blocks
    assert qmodel.quant_calibration['plan']['post_softmax_sites'] == 2
    assert set(qmodel.quant_calibration['times']) >= {'forward_s', 'reparameterize_s', 'total_s'}
    err = rel_err(out, ref)
    assert 1e-3 < err < 1.0, err  # really quantized, still the same function


def test_more_bits_means_less_error_and_runs_are_reproducible():
    with torch.no_grad():
        ref = float_vit()(TEST)
    errs = {}
    for bits in (4, 8):
        outs = []
        for _ in range(2):
            model = quantize(float_vit(), dict(recipe='dopq', wbits=bits, abits=bits), forward_loop)
            with torch.no_grad():
                outs.append(model(TEST))
        assert torch.equal(outs[0], outs[1])  # same seed, same data: bit-identical
        errs[bits] = rel_err(outs[0], ref)
    assert errs[8] < 0.1 < errs[4], errs


def test_prepare_keeps_the_float_model_exact_until_calibrated():
    model = float_vit()
    ref_model = copy.deepcopy(model)
    prepare(model, QuantRecipe.from_cfg(dict(recipe='repq', wbits=4, abits=4)))
    assert model.quant_state_keys  # quantizer buffers were added
    assert set(ref_model.state_dict()) < set(model.state_dict())
    with torch.no_grad():
        # timm's fused attention and the explicit matmuls differ in the last bits only
        assert rel_err(model(TEST), ref_model(TEST)) < 1e-5
    assert not model.quant_plan.is_calibrated
    record = calibrate(model, forward_loop, log=(lines := []).append)
    assert model.quant_plan.is_calibrated and not record['skipped']
    assert any('reparameterize 4 LayerNorms (rule mean' in line for line in lines), lines


def test_sequential_calibration_from_a_one_batch_loop():
    model = prepare(float_vit(), dict(recipe='repq', wbits=4, abits=4, calib_mode='sequential'))
    calibrate(model, lambda m: m(torch.cat(CALIB)))
    assert model.quant_plan.is_calibrated


def test_float_recipe_changes_nothing():
    model = float_vit()
    with torch.no_grad():
        ref = model(TEST)
    quantize(model, dict(recipe='float'), forward_loop)
    assert model.quant_calibration == dict(skipped=True, float=True)
    with torch.no_grad():
        assert torch.equal(model(TEST), ref)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match='no quant_plan: call mmdopq.apis.prepare'):
        calibrate(float_vit(), forward_loop)
    model = prepare(float_vit(), dict(recipe='dopq'))
    with pytest.raises(ValueError, match='already prepared'):
        prepare(model, dict(recipe='dopq'))
    with pytest.raises(ValueError, match='saw no calibration data'):
        calibrate(model, lambda m: None)
    with pytest.raises(ValueError, match='no adapter matches Linear'):
        quantize(torch.nn.Linear(2, 2), dict(recipe='dopq'), forward_loop)
    with pytest.raises(ValueError, match=r'quant.wbits'):
        quantize(float_vit(), dict(recipe='dopq', wbits=1), forward_loop)


def test_recipe_is_immutable_and_shared_safely():
    recipe = QuantRecipe.from_cfg(dict(recipe='dopq', wbits=4, abits=4, tanq_search={}))
    with pytest.raises(AttributeError):
        recipe.wbits = 8
    with pytest.raises(TypeError):
        recipe.tanq_search['centres'] = (0.5,)
    a, b = float_vit(), float_vit()
    quantize(a, recipe, forward_loop)
    quantize(b, recipe, forward_loop)  # the second model gets the same per-site seeds
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
