"""LayerNorm -> Linear reparameterization: exact folds, invariance, MOSF."""

import copy
import math

import pytest
import torch
from torch import nn

from mmdopq.quantizers import UniformQuantizer
from mmdopq.reparam import reparameterize_layernorm

C, N = 64, 2048


def make_block(seed=0, spikes=False, n_out=(96, 48), gamma_outliers=True):
    gen = torch.Generator().manual_seed(seed)
    norm = nn.LayerNorm(C)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(C, generator=gen) * 0.5 + 0.75)
        if gamma_outliers:
            norm.weight[:3] = torch.tensor([6.0, 9.0, 14.0])  # systematic outlier channels
        norm.bias.copy_(torch.randn(C, generator=gen) * 0.2)
    linears = []
    for o in n_out:
        lin = nn.Linear(C, o)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(o, C, generator=gen) / C**0.5)
            lin.bias.copy_(torch.randn(o, generator=gen) * 0.1)
        linears.append(lin)
    x = torch.randn(N, C, generator=gen) + torch.randn(C, generator=gen)
    if spikes:
        # rare large excursions on a few channels: big per-channel scales, little mass
        hit = torch.rand(N, 4, generator=gen) < 0.01
        x[:, :4] = torch.where(hit, torch.full_like(x[:, :4], 40.0), x[:, :4])
    return norm, linears, x


def per_channel_params(norm, x, bits):
    q = UniformQuantizer(bits, per_channel=True, ch_axis=-1, method='percentile')
    q.calibrate(norm(x).detach())
    return q


@torch.no_grad()
def quant_error(norm, linears, x, refs, scale, zero, bits, wbits=None):
    """W{wbits}A{bits} output error of the block with a per-tensor activation (scale, zero)."""
    y = norm(x)
    top = (1 << bits) - 1
    yq = (torch.clamp(torch.round(y / scale) + zero, 0, top) - zero) * scale
    err = 0.0
    for lin, ref in zip(linears, refs):
        w = lin.weight
        if wbits:
            q = UniformQuantizer(wbits, per_channel=True, method='minmax')
            q.calibrate(w.detach())
            w = q(w)
        err += float((nn.functional.linear(yq, w, lin.bias) - ref).pow(2).mean())
    return err


def fold(rule, seed=0, bits=4, spikes=False, gamma_outliers=True):
    norm, linears, x = make_block(seed, spikes, gamma_outliers=gamma_outliers)
    refs = [lin(norm(x)).detach() for lin in linears]
    q = per_channel_params(norm, x, bits)
    kw = dict(calib_input=x, wbits=bits, abits=bits) if rule == 'mad' else {}
    with torch.no_grad():
        res = reparameterize_layernorm(norm, linears, q.scale, q.zero_point, rule=rule, **kw)
    return norm, linears, x, refs, q, res


@pytest.mark.parametrize('rule', ['mean', 'median', 'mad'])
@pytest.mark.parametrize('spikes', [False, True])
def test_float_output_unchanged(rule, spikes):
    norm0, linears0, x = make_block(0, spikes)
    refs = [lin(norm0(x)) for lin in linears0]
    norm, linears, x, _, _, res = fold(rule, spikes=spikes)
    assert norm.weight.shape == (C,)
    assert res.scale.dim() == 0 and float(res.zero_point) == round(float(res.zero_point))
    for lin, ref in zip(linears, refs):
        torch.testing.assert_close(lin(norm(x)), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('rule', ['mean', 'median'])
def test_exact_fold_per_tensor_equals_per_channel(rule):
    norm0, _, x = make_block(0)
    y_old = norm0(x).detach()
    norm, _, x, _, q, res = fold(rule)
    y_new = norm(x).detach()
    top = 15
    codes_old = torch.clamp(torch.round(y_old / q.scale) + q.zero_point, 0, top)
    codes_new = torch.clamp(torch.round(y_new / res.scale) + res.zero_point, 0, top)
    mismatch = (codes_old != codes_new).float().mean()
    assert mismatch < 1e-3  # only float rounding at exact .5 ties may differ
    # the dequantized values map back onto each other through the fold
    deq_old = (codes_old - q.zero_point) * q.scale
    deq_new = (codes_new - res.zero_point) * res.scale
    same = codes_old == codes_new
    torch.testing.assert_close(
        (deq_new * res.ratio - res.shift)[same], deq_old[same], rtol=1e-4, atol=1e-4
    )


def test_mean_and_median_same_w4a4_error():
    errs = {}
    for rule in ('mean', 'median'):
        norm, linears, x, refs, _, res = fold(rule)
        errs[rule] = quant_error(norm, linears, x, refs, res.scale, res.zero_point, 4, wbits=4)
    assert errs['mean'] == pytest.approx(errs['median'], rel=1e-4)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('spikes', [False, True])
def test_mad_never_worse_than_mean(seed, spikes):
    errs = {}
    for rule in ('mean', 'mad'):
        norm, linears, x, refs, _, res = fold(rule, seed=seed, spikes=spikes)
        errs[rule] = quant_error(norm, linears, x, refs, res.scale, res.zero_point, 4, wbits=4)
    assert errs['mad'] <= errs['mean'] * (1 + 1e-4)


def test_mad_strictly_better_when_capping_pays():
    # Rare large excursions on a few channels inflate their per-channel scales: the
    # exact fold amplifies their weight columns for little activation mass, a cap pays.
    errs = {}
    for rule in ('mean', 'mad'):
        norm, linears, x, refs, _, res = fold(rule, spikes=True, gamma_outliers=False)
        errs[rule] = quant_error(norm, linears, x, refs, res.scale, res.zero_point, 4, wbits=4)
    assert res.n_capped > 0 and not math.isinf(res.k)
    assert errs['mad'] < 0.97 * errs['mean'], errs


def test_zero_image_is_image_of_zero():
    norm, linears, x, _, _, res = fold('mad', spikes=True)
    # the block applied to the zero-padded *old* activation equals the block on
    # the new activation padded with zero_image
    old_zero_out = [lin.bias.detach() + (lin.weight @ res.zero_image) for lin in linears]
    norm0, linears0, _ = make_block(0, True)
    for lin0, out in zip(linears0, old_zero_out):
        torch.testing.assert_close(out, lin0.bias.detach(), rtol=1e-4, atol=1e-4)


def test_bad_input():
    norm, linears, x = make_block()
    s, z = torch.ones(C), torch.zeros(C)
    with pytest.raises(ValueError, match='calib_input'):
        reparameterize_layernorm(norm, linears, s, z, rule='mad')
    with pytest.raises(ValueError, match='unknown reparameterization rule'):
        reparameterize_layernorm(norm, linears, s, z, rule='max')
    with pytest.raises(ValueError, match='scale has shape'):
        reparameterize_layernorm(norm, linears, torch.ones(C + 1), z, rule='mean')
    with pytest.raises(ValueError, match='does not read'):
        reparameterize_layernorm(norm, [nn.Linear(C + 1, 3)], s, z, rule='mean')
    with pytest.raises(TypeError, match='LayerNorm'):
        reparameterize_layernorm(nn.BatchNorm1d(C), linears, s, z, rule='mean')
    before = copy.deepcopy(norm.state_dict())
    with pytest.raises(ValueError):
        reparameterize_layernorm(norm, linears, s, z, rule='mad', calib_input=torch.randn(4, 3))
    for k, v in norm.state_dict().items():  # nothing rewritten on error
        assert torch.equal(v, before[k])
