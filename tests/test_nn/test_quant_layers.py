"""Quantized layers: float mode bit-exact, calibration, fake-quant."""

import copy

import pytest
import torch
from torch import nn

from mmdopq.nn import QuantConv2d, QuantLinear, QuantMatMul, quant_layers, set_quant_mode
from mmdopq.quantizers import LogSqrt2Quantizer, TanQuantizer, UniformQuantizer


def wq(bits=4):
    return UniformQuantizer(bits, per_channel=True, ch_axis=0, method='minmax')


def aq(bits=4):
    return UniformQuantizer(bits, method='percentile')


def test_linear_float_mode_bit_exact_and_keys():
    torch.manual_seed(0)
    lin = nn.Linear(24, 12)
    x = torch.randn(5, 7, 24)
    ref = lin(x)
    q = QuantLinear.from_float(lin, wq(), aq())
    assert isinstance(q, nn.Linear)
    assert q.weight is lin.weight and q.bias is lin.bias
    assert torch.equal(q(x), ref)
    keys = set(q.state_dict())
    assert {'weight', 'bias'} <= keys
    # a float checkpoint loads into the quantized layer (quantizer buffers are extra keys)
    missing, unexpected = q.load_state_dict(lin.state_dict(), strict=False)
    assert not unexpected and all('quantizer' in k for k in missing)


def test_conv_float_mode_bit_exact():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, groups=1)
    x = torch.randn(2, 3, 17, 19)
    ref = conv(x)
    q = QuantConv2d.from_float(conv, wq(), UniformQuantizer(8))
    assert isinstance(q, nn.Conv2d)
    assert torch.equal(q(x), ref)


def test_matmul_float_mode_bit_exact():
    a, b = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 4, 6)
    m = QuantMatMul(aq(), aq())
    assert torch.equal(m(a, b), a @ b)


def _calibrated(layer, x):
    layer.set_quant_mode('calib')
    out = layer(x)
    layer.calibrate()
    layer.set_quant_mode('quant')
    return out


def test_linear_calib_then_quant():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    x = torch.randn(64, 32)
    q = QuantLinear.from_float(copy.deepcopy(lin), wq(8), aq(8))
    assert torch.equal(_calibrated(q, x), lin(x))  # calib mode returns float output
    assert q.is_calibrated
    y8 = q(x)
    q4 = QuantLinear.from_float(copy.deepcopy(lin), wq(4), aq(4))
    _calibrated(q4, x)
    e8, e4 = (y8 - lin(x)).pow(2).mean(), (q4(x) - lin(x)).pow(2).mean()
    assert 0 < e8 < e4
    # the fake-quant output is exactly the float op on fake-quantized operands
    expect = nn.functional.linear(q4.input_quantizer(x), q4.weight_quantizer(q4.weight), q4.bias)
    assert torch.equal(q4(x), expect)


def test_uncalibrated_layer_raises():
    q = QuantLinear.from_float(nn.Linear(4, 4), wq(), aq())
    q.set_quant_mode('quant')
    with pytest.raises(RuntimeError, match='not calibrated'):
        q(torch.randn(2, 4))
    with pytest.raises(ValueError, match='unknown quant mode'):
        q.set_quant_mode('fast')


@pytest.mark.parametrize('objective', ['tensor', 'output'])
def test_matmul_post_softmax_calibration(objective):
    torch.manual_seed(0)
    attn = (torch.randn(8, 3, 49, 49) * 2).softmax(-1)
    v = torch.randn(8, 3, 49, 16)
    m = QuantMatMul(
        TanQuantizer(4), UniformQuantizer(4, method='percentile'), a_objective=objective
    )
    m.set_quant_mode('calib')
    assert torch.equal(m(attn, v), attn @ v)
    m.calibrate()
    m.set_quant_mode('quant')
    assert m.is_calibrated
    out = m(attn, v)
    assert out.shape == (8, 3, 49, 16)
    rel = (out - attn @ v).pow(2).mean() / (attn @ v).pow(2).mean()
    assert rel < 0.05


def test_output_objective_reduces_product_error():
    torch.manual_seed(1)
    attn = (torch.randn(16, 3, 49, 49) * 2.5).softmax(-1)
    v = torch.randn(16, 3, 49, 32)
    errs = {}
    for objective in ('tensor', 'output'):
        m = QuantMatMul(TanQuantizer(3), UniformQuantizer(8), a_objective=objective)
        m.quantizer_b.enabled = False
        m.set_quant_mode('calib')
        m(attn, v)
        m.calibrate()
        m.set_quant_mode('quant')
        errs[objective] = float((m(attn, v) - attn @ v).pow(2).mean())
    assert errs['output'] <= errs['tensor'] * (1 + 1e-6)


def test_query_output_objective_reduces_logit_error():
    # q @ k^T where one channel is large in both q and k (as in trained ViTs): the query's
    # own L2 error clips that channel; the logit error (qk_objective='output') keeps it.
    torch.manual_seed(0)
    q = torch.randn(16, 4, 49, 32) * 0.1
    k = torch.randn(16, 4, 49, 32)
    q[..., 0] *= 10.0
    k[..., 0] *= 20.0
    kt = k.transpose(-2, -1)
    errs, scales = {}, {}
    for objective in ('tensor', 'output'):
        qa = UniformQuantizer(4, method='percentile', percentiles=(0.999, 1.0))
        m = QuantMatMul(qa, UniformQuantizer(8), a_objective=objective)
        m.quantizer_b.enabled = False
        m.set_quant_mode('calib')
        m(q, kt)
        m.calibrate()
        m.set_quant_mode('quant')
        errs[objective] = float((m(q, kt) - q @ kt).pow(2).mean())
        scales[objective] = float(qa.scale)
    assert scales['output'] > scales['tensor']  # the wider range
    assert errs['output'] < errs['tensor'] * 0.98


def test_set_quant_mode_and_listing():
    model = nn.Sequential(
        QuantLinear.from_float(nn.Linear(4, 4), wq(), aq()),
        nn.ReLU(),
        QuantLinear.from_float(nn.Linear(4, 2), wq(), aq()),
    )
    set_quant_mode(model, 'calib')
    assert [n for n, _ in quant_layers(model)] == ['0', '2']
    assert all(m.quant_mode == 'calib' for _, m in quant_layers(model))


def test_quantized_layer_state_dict_round_trip():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    x = torch.randn(32, 16)
    q = QuantLinear.from_float(lin, wq(), UniformQuantizer(4, per_channel=True, ch_axis=-1))
    _calibrated(q, x)
    q2 = QuantLinear.from_float(
        nn.Linear(16, 8), wq(), UniformQuantizer(4, per_channel=True, ch_axis=-1)
    )
    q2.load_state_dict(q.state_dict())
    q2.set_quant_mode('quant')
    assert torch.equal(q2(x), q(x))


def test_log_sqrt2_matmul_site():
    attn = (torch.randn(4, 2, 16, 16)).softmax(-1)
    v = torch.randn(4, 2, 16, 8)
    m = QuantMatMul(LogSqrt2Quantizer(4), UniformQuantizer(4))
    m.set_quant_mode('calib')
    m(attn, v)
    m.calibrate()
    m.set_quant_mode('quant')
    assert torch.isfinite(m(attn, v)).all()


def test_weight_cache_follows_weight_and_quantizer_changes():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    x = torch.randn(32, 16)
    q = QuantLinear.from_float(lin, wq(), aq())
    _calibrated(q, x)
    with torch.no_grad():
        first = q(x)
        assert torch.equal(q(x), first)  # cached path, same result
        q.weight.mul_(2)  # in place: the cache must not serve the old weight
        doubled = q(x)
        q.weight.div_(2)
        assert not torch.equal(doubled, first)
        q.weight_quantizer.calibrate(q.weight.detach())
        assert torch.equal(q(x), first)
        state = {k: v.clone() for k, v in q.state_dict().items()}
        state['weight'] = state['weight'] * 3
        q.load_state_dict(state)  # copies in place
        expect = nn.functional.linear(q.input_quantizer(x), q.weight_quantizer(q.weight), q.bias)
        assert torch.equal(q(x), expect)
