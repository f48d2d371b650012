"""The fold's zero point (issue 25 §5): exact ``round`` (default) vs the official ``fractional``."""

import copy

import pytest
import torch
from torch import nn

from mmdopq.quantizers import UniformQuantizer
from mmdopq.recipe import QuantRecipe
from mmdopq.reparam import reparameterize_layernorm

C, BITS = 12, 4


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    norm, lin = nn.LayerNorm(C), nn.Linear(C, 7)
    norm.weight.data = torch.rand(C) * 2 + 0.1
    norm.bias.data = torch.randn(C)
    x = torch.randn(64, C) * 3
    q = UniformQuantizer(BITS, per_channel=True, ch_axis=-1, method='minmax')
    q.calibrate(norm(x).detach())
    return norm, lin, x, q.scale.clone(), q.zero_point.clone()


def _official_fold(norm, lin, delta, zero_point):
    """zkkli/RepQ-ViT classification/test_quant.py, the scale reparameterization."""
    act_min = -zero_point * delta
    target_delta, target_zero_point = torch.mean(delta), torch.mean(zero_point)
    target_min = -target_zero_point * target_delta
    r = delta / target_delta
    b = act_min / r - target_min
    norm.weight.data = norm.weight.data / r
    norm.bias.data = norm.bias.data / r - b
    lin.weight.data = lin.weight.data * r
    lin.bias.data = lin.bias.data + torch.mm(lin.weight.data, b.reshape(-1, 1)).reshape(-1)
    return target_delta, target_zero_point


def _official_fake_quant(x, delta, zero_point, bits):
    """zkkli/RepQ-ViT UniformQuantizer.forward."""
    x_int = torch.round(x / delta) + zero_point
    return (torch.clamp(x_int, 0, 2**bits - 1) - zero_point) * delta


def test_fractional_fold_matches_the_official_formula():
    norm, lin, x, s, z = _pair()
    ref_norm, ref_lin = copy.deepcopy(norm), copy.deepcopy(lin)
    d_t, z_t = _official_fold(ref_norm, ref_lin, s, z)
    res = reparameterize_layernorm(norm, [lin], s, z, rule='mean', zero_point_rule='fractional')
    assert float(res.zero_point) == float(z_t) and float(res.scale) == float(d_t)
    assert float(z_t) != round(float(z_t))  # the case that matters: a fractional mean
    for a, b in (
        (norm.weight, ref_norm.weight),
        (norm.bias, ref_norm.bias),
        (lin.weight, ref_lin.weight),
        (lin.bias, ref_lin.bias),
    ):
        torch.testing.assert_close(a.data, b.data, rtol=1e-5, atol=1e-5)
    # the per-tensor quantizer keeps the fractional zero point and computes the official fake-quant
    q = UniformQuantizer(BITS)
    q.set_params(res.scale, res.zero_point, round_zero_point=False)
    y = norm(x).detach()
    assert float(q.zero_point) == float(z_t)
    torch.testing.assert_close(q(y), _official_fake_quant(y, d_t, z_t, BITS), rtol=0, atol=1e-6)


def test_round_fold_is_the_default_and_exact():
    norm, lin, x, s, z = _pair()
    res = reparameterize_layernorm(copy.deepcopy(norm), [copy.deepcopy(lin)], s, z, rule='mean')
    assert float(res.zero_point) == round(float(z.mean()))
    with pytest.raises(ValueError, match='zero_point_rule'):
        reparameterize_layernorm(norm, [lin], s, z, rule='mean', zero_point_rule='floor')


def test_recipe_key_reaches_the_folded_quantizers():
    """quant.fold_zero_point='fractional' leaves the post-LN quantizers' zero points fractional."""
    import timm

    from mmdopq.apis import quantize

    kw = dict(
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=10,
    )
    calib = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    zps = {}
    for rule in ('round', 'fractional'):
        torch.manual_seed(0)
        model = timm.create_model('vit_tiny_patch16_224', **kw).eval()
        quantize(model, dict(recipe='repq', fold_zero_point=rule), lambda m: m(calib))
        plan = model.quant_plan
        zps[rule] = [float(q.zero_point) for q in plan.components()['post_layernorm']]
        assert QuantRecipe.from_cfg(dict(fold_zero_point=rule)).fold_zero_point == rule
    assert all(z == round(z) for z in zps['round'])
    assert any(z != round(z) for z in zps['fractional'])
