"""Properties of the pure-torch quantizers."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdopq.quantizers import LogSqrt2Quantizer, SampleCollector, TanQuantizer, UniformQuantizer

BITS = [2, 3, 4, 6, 8]


def softmax_sample(tokens: int, heavy: bool = True, heads: int = 24, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    if heavy:
        # Student-t logits (df=3): a power-law post-Softmax distribution.
        z = torch.randn(heads, tokens, tokens, generator=gen)
        chi2 = torch.randn(3, heads, tokens, tokens, generator=gen).pow(2).sum(0)
        logits = 1.5 * z / (chi2 / 3).sqrt()
    else:
        logits = 2.0 * torch.randn(heads, tokens, tokens, generator=gen)
    return logits.softmax(-1)


def make(kind: str, bits: int):
    if kind == 'uniform':
        return UniformQuantizer(bits, method='percentile')
    if kind == 'uniform_sym':
        return UniformQuantizer(bits, symmetric=True, method='mse')
    if kind == 'uniform_pc':
        return UniformQuantizer(bits, per_channel=True, ch_axis=1, method='minmax')
    if kind == 'log':
        return LogSqrt2Quantizer(bits)
    return TanQuantizer(bits)


KINDS = ['uniform', 'uniform_sym', 'uniform_pc', 'log', 'tan']


def sample_for(kind: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    if kind in ('log', 'tan'):
        return softmax_sample(16, seed=seed, heads=4)
    return torch.randn(8, 6, 10, generator=gen) * torch.linspace(0.1, 3, 6)[None, :, None] + 0.3


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('bits', BITS)
def test_levels_idempotent_monotone(kind, bits):
    x = sample_for(kind)
    q = make(kind, bits)
    q.calibrate(x)
    y = q(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    # Distinct outputs: at most 2^b (per channel); log-sqrt2 has 2^b non-zero codes
    # plus the exact zero of out-of-range values, as in RepQ-ViT (see its docstring).
    budget = (1 << bits) + (1 if kind == 'log' else 0)
    if kind == 'uniform_pc':
        for c in range(x.shape[1]):
            assert y[:, c].unique().numel() <= budget
    else:
        assert y.unique().numel() <= budget
    # Idempotent.
    assert torch.equal(q(y), y)
    # Monotone (non-decreasing) along sorted inputs.
    if kind == 'uniform_pc':
        xs = x[:, 2].flatten().sort().values
        ys = q(xs.reshape(-1, 1, 1).expand(-1, 6, 1).contiguous())[:, 2, 0]
    else:
        xs = x.flatten().sort().values
        ys = q(xs)
    assert (ys[1:] >= ys[:-1]).all()


@pytest.mark.parametrize('kind', KINDS)
def test_state_dict_round_trip(kind):
    x = sample_for(kind, seed=1)
    q = make(kind, 4)
    q.calibrate(x)
    q2 = make(kind, 4)
    q2.load_state_dict(q.state_dict())
    assert bool(q2.calibrated)
    assert torch.equal(q2(x), q(x))


def test_per_channel_has_one_parameter_set_per_channel():
    x = torch.randn(16, 5, 7) * torch.tensor([0.1, 1, 10, 100, 0.01])[None, :, None]
    q = UniformQuantizer(4, per_channel=True, ch_axis=1)
    q.calibrate(x)
    assert q.scale.shape == (5,) and q.zero_point.shape == (5,)
    ranges = x.amax(dim=(0, 2)) - x.amin(dim=(0, 2))
    torch.testing.assert_close(q.scale, ranges / 15)
    # each channel is quantized with its own step: relative error is comparable
    err = (q(x) - x).abs().amax(dim=(0, 2)) / q.scale
    assert (err <= 0.5 + 1e-4).all()


@pytest.mark.parametrize('ch_axis', [0, 1, -1])
def test_per_channel_observe_matches_direct(ch_axis):
    x = torch.randn(4, 6, 8) * 3
    a = UniformQuantizer(4, per_channel=True, ch_axis=ch_axis, method='percentile')
    b = UniformQuantizer(4, per_channel=True, ch_axis=ch_axis, method='percentile')
    a.calibrate(x)
    # split the batch along an axis that is not the channel axis
    first, second = (x[:2], x[2:]) if ch_axis == -1 else (x[..., :4], x[..., 4:])
    b.observe(first)
    b.observe(second)
    b.calibrate()
    torch.testing.assert_close(a.scale, b.scale)
    torch.testing.assert_close(a.zero_point, b.zero_point)


@pytest.mark.parametrize('bad', [1, 9, 0, 32, 4.0, '4', True])
def test_bits_out_of_range(bad):
    for cls in (UniformQuantizer, LogSqrt2Quantizer, TanQuantizer):
        with pytest.raises(ValueError, match=f'bits={bad!r}'):
            cls(bad)


def test_sixteen_bits_is_near_lossless():
    x = torch.randn(1000)
    q = UniformQuantizer(16)
    q.calibrate(x)
    assert (q(x) - x).abs().max() < 1e-4


@pytest.mark.parametrize('kind', KINDS)
def test_uncalibrated_and_disabled(kind):
    q = make(kind, 4)
    x = sample_for(kind)
    with pytest.raises(RuntimeError, match='not calibrated'):
        q(x)
    q.enabled = False
    assert q(x) is x


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_nan_inf_calibration_sample(kind, bad):
    x = sample_for(kind).clone()
    x.view(-1)[3] = bad
    with pytest.raises(ValueError, match='NaN'):
        make(kind, 4).calibrate(x)
    with pytest.raises(ValueError, match='NaN'):
        make(kind, 4).observe(x)


def test_calibrate_without_sample():
    with pytest.raises(ValueError, match='nothing was observed'):
        UniformQuantizer(4).calibrate()


def test_percentile_search_picks_least_l2():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100000, generator=gen)
    x[:5] = 40.0  # a few outliers: clipping them wins
    q = UniformQuantizer(4, method='percentile')
    q.calibrate(x)
    errs = {}
    for p in (0.999, 0.9999, 0.99999):
        c = UniformQuantizer(4, method='percentile', percentiles=(p,))
        c.calibrate(x)
        errs[p] = float((c(x) - x).pow(2).sum())
    assert float((q(x) - x).pow(2).sum()) == pytest.approx(min(errs.values()))
    mm = UniformQuantizer(4, method='minmax')
    mm.calibrate(x)
    assert float((q(x) - x).pow(2).sum()) < float((mm(x) - x).pow(2).sum())


def test_mse_weight_search_beats_minmax_per_channel():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=gen) * 0.02
    w[:, 0] = 0.3  # heavy column
    mm = UniformQuantizer(4, per_channel=True, method='minmax')
    ms = UniformQuantizer(4, per_channel=True, method='mse')
    mm.calibrate(w)
    ms.calibrate(w)
    assert (ms(w) - w).pow(2).sum(1).le((mm(w) - w).pow(2).sum(1) + 1e-12).all()


def test_log_sqrt2_matches_definition():
    q = LogSqrt2Quantizer(3)
    q.calibrate(torch.tensor([0.01, 0.5, 1.0]))
    d = float(q.delta)
    x = torch.tensor([d, d / 2**0.5, d / 2, d * 2**-3.5, d * 2**-8, 0.0])
    expect = torch.tensor([d, d * 2**-0.5, d / 2, d * 2**-3.5, 0.0, 0.0])
    torch.testing.assert_close(q(x), expect)
    lv = q.levels()
    assert lv.numel() == 9 and lv[0] == 0

    # a non-contiguous (transposed) input gives the transposed output of the contiguous one
    a = softmax_sample(49, heads=3)
    assert torch.equal(q(a.transpose(-1, -2)), q(a).transpose(-1, -2))


# -- TanQ -------------------------------------------------------------------


def test_tan_zero_and_one_exact():
    q = TanQuantizer(3)
    q.calibrate(softmax_sample(49))
    assert float(q.alpha) > 0
    x = torch.tensor([0.0, 1.0])
    assert torch.equal(q(x), x)
    lv = q.levels()
    assert lv[0] == 0 and lv[-1] == 1 and lv.numel() == 8


def _fixed_tan(bits, alpha_fraction, centre):
    q = TanQuantizer(bits)
    q.alpha.fill_(alpha_fraction * math.pi / (2 * max(centre, 1 - centre)))
    q.centre.fill_(centre)
    q.calibrated.fill_(True)
    return q


@pytest.mark.parametrize('centre', [0.3, 0.5, 0.7])
def test_tan_levels_dense_at_both_ends(centre):
    # The map's slope du/dx (level density) is larger at both ends than at the centre.
    alpha = 0.9 * math.pi / (2 * max(centre, 1 - centre))

    def slope(x):
        return alpha / math.cos(alpha * (x - centre)) ** 2

    assert slope(0.0) > slope(centre) and slope(1.0) > slope(centre)
    # Discrete levels (symmetric centre): end gaps smaller than the central gap.
    if centre == 0.5:
        gaps = _fixed_tan(4, 0.9, centre).levels().diff()
        assert gaps[0] < gaps[len(gaps) // 2] and gaps[-1] < gaps[len(gaps) // 2]
    # Asymmetric: the far end is the densest, and levels are sparsest in between.
    gaps = _fixed_tan(4, 0.9, centre).levels().diff()
    assert min(gaps[0], gaps[-1]) < gaps.max()


@pytest.mark.parametrize('bits', [3, 4, 6])
def test_tan_fake_quant_is_the_rounded_level_of_every_element(bits):
    # The fast path (int32 codes, index_select) against the definition, in float64:
    # level round(u(x) * (2^b - 1)) of the table, for contiguous and transposed inputs.
    q = _fixed_tan(bits, 0.8, 0.35)
    alpha, c, top = float(q.alpha), float(q.centre), q.n_levels - 1
    x = softmax_sample(49, heads=3)
    lo, hi = math.tan(-alpha * c), math.tan(alpha * (1 - c))
    u = (torch.tan(alpha * (x.double() - c)) - lo) / (hi - lo)
    code = (u * top).round().clamp(0, top).long()
    for inp, ref_code in ((x, code), (x.transpose(-1, -2), code.transpose(-1, -2))):
        assert not inp.is_contiguous() or inp is x
        out = q(inp)
        assert out.shape == inp.shape
        # float32 and float64 maps may round differently within an ulp of a threshold
        assert (out != q.levels()[ref_code]).float().mean() < 1e-4


def test_tan_alpha_to_zero_is_uniform():
    uniform_levels = torch.linspace(0, 1, 16)
    dists = []
    for alpha_fraction in (0.5, 0.05, 5e-3, 5e-4):
        q = _fixed_tan(4, alpha_fraction, 0.6)
        dists.append(float((q.levels() - uniform_levels).abs().max()))
    assert all(b < a for a, b in zip(dists, dists[1:]))
    assert dists[-1] < 1e-4
    x = torch.rand(5000)
    q = _fixed_tan(4, 5e-4, 0.6)
    mismatch = (q(x) - torch.round(x * 15) / 15).abs().gt(1e-3).float().mean()
    assert mismatch < 1e-3


def test_tan_symmetric_fixes_centre():
    q = TanQuantizer(4, symmetric=True)
    q.calibrate(softmax_sample(49))
    assert float(q.centre) == 0.5


def test_tan_custom_objective_is_used():
    x = softmax_sample(49, heads=4)
    v = torch.randn(4, 49, 16)
    calls = []

    def product_error(x_hat, ref):
        calls.append(1)
        return ((x_hat - ref) @ v).pow(2).mean()

    q = TanQuantizer(3)
    q.calibrate(x, objective=product_error)
    assert len(calls) > 10
    # the chosen point is the best of the grid for that objective
    err = float(product_error(q(x), x))
    for c in (0.3, 0.5, 0.7):
        for f in (0.0, 0.5, 0.9):
            other = TanQuantizer(3)
            other.alpha.fill_(f * math.pi / (2 * max(c, 1 - c)))
            other.centre.fill_(c)
            other.calibrated.fill_(True)
            assert err <= float(product_error(other(x), x)) + 1e-12


@pytest.mark.parametrize('tokens', [49, 197])
@pytest.mark.parametrize('bits', [3, 4])
def test_tan_beats_log_and_uniform_on_power_law(tokens, bits):
    x = softmax_sample(tokens, heavy=True, heads=24 if tokens == 49 else 6)
    errs = {}
    for name, q in (
        ('uniform', UniformQuantizer(bits, method='percentile')),
        ('log_sqrt2', LogSqrt2Quantizer(bits)),
        ('tan', TanQuantizer(bits)),
    ):
        q.calibrate(x)
        errs[name] = float((q(x) - x).pow(2).mean())
    assert errs['tan'] < errs['log_sqrt2'], errs
    assert errs['tan'] < errs['uniform'], errs


# -- sample collector ---------------------------------------------------------


def test_collector_bounded_uniform_and_seeded():
    a, b = SampleCollector(1000, seed=3, min_rows=1), SampleCollector(1000, seed=3, min_rows=1)
    for i in range(20):
        chunk = torch.full((500, 1), float(i))
        a.add(chunk)
        b.add(chunk)
    sa = a.take()
    assert sa.shape == (1000, 1) and torch.equal(sa, b.take())
    assert a.empty
    # every batch is represented about equally (uniform over the stream)
    counts = torch.bincount(sa.flatten().long(), minlength=20).float()
    assert counts.min() > 20 and counts.max() < 90


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.floats(0.01, 100), st.floats(-50, 50), st.booleans())
def test_uniform_error_bounded_by_half_step(bits, spread, offset, symmetric):
    x = torch.linspace(-1, 1, 257) * spread + offset
    q = UniformQuantizer(bits, symmetric=symmetric)
    q.calibrate(x)
    y = q(x)
    # half a step, plus float32 rounding of x / s for large |x| / s
    fp_slack = 8 * torch.finfo(torch.float32).eps * float(x.abs().max())
    assert (y - x).abs().max() <= 0.5 * float(q.scale) * (1 + 1e-4) + fp_slack + 1e-6
    assert torch.equal(q(y), y)


def test_floor_zero_point_puts_no_level_below_the_range():
    # GELU-like range: the round rule's zero point (-lo / s = 0.68 -> 1) puts its lowest level
    # at -s = -0.25, below the data's minimum -0.17; floor (-> 0) starts the grid at 0.
    x = torch.linspace(-0.17, 3.58, 1001)
    rounded = UniformQuantizer(4, method='minmax')
    floored = UniformQuantizer(4, method='minmax', zero_point_rule='floor')
    for q in (rounded, floored):
        q.calibrate(x)
        assert math.isclose(float(q.scale), 0.25, rel_tol=1e-5)
    assert float(rounded.zero_point) == 1 and float(rounded.levels().min()) < -0.17
    assert float(floored.zero_point) == 0 and float(floored.levels().min()) == 0.0
    assert float(floored.levels().max()) >= 3.58
    assert torch.equal(floored(x[x < 0]), torch.zeros(int((x < 0).sum())))
    assert 'zero_point=floor' in repr(floored) and 'zero_point' not in repr(rounded)
    with pytest.raises(ValueError, match="zero_point_rule 'ceil'"):
        UniformQuantizer(4, zero_point_rule='ceil')


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.floats(0.01, 100), st.floats(-50, 50))
def test_floor_zero_point_levels_stay_in_range_and_error_within_a_step(bits, spread, offset):
    x = torch.linspace(-1, 1, 257) * spread + offset
    q = UniformQuantizer(bits, zero_point_rule='floor')
    q.calibrate(x)
    s, levels = float(q.scale), q.levels()
    slack = 8 * torch.finfo(torch.float32).eps * float(x.abs().max()) + 1e-6
    assert float(levels.min()) >= float(x.min()) - 1e-4 * s - slack  # nothing below the range
    assert float(levels.max()) >= float(x.max()) - 1e-4 * s - slack  # the top is covered
    assert (q(x) - x).abs().max() <= s * (1 + 1e-4) + slack  # clamping costs under a step


def test_quantizers_off_switches_the_enabled_ones_back_on_even_after_an_error():
    from mmdopq.quantizers import quantizers_off

    x = torch.linspace(-1, 1, 101)
    on, off = UniformQuantizer(4), UniformQuantizer(4)
    for q in (on, off):
        q.calibrate(x)
    off.enabled = False
    with quantizers_off([on, off]):
        assert not on.enabled and not off.enabled
        assert torch.equal(on(x), x)
    assert on.enabled and not off.enabled  # only what it switched off comes back
    with pytest.raises(RuntimeError, match='boom'):
        with quantizers_off(iter([on])):  # any iterable, consumed once
            raise RuntimeError('boom')
    assert on.enabled and not torch.equal(on(x), x)
