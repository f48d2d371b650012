"""Percentile modes of the quantizers (issue 25 §5: parity with the official RepQ-ViT code).

``percentile_mode='linear'`` reproduces the official ``torch.quantile`` (linear interpolation over
the whole tensor, no subsample); the default ``'nearest'`` must stay bit-identical to the
nearest-rank search on the subsample, checked against values saved from the code before the
option existed (``parity_nearest_expected.json``).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdopq.quantizers import LogSqrt2Quantizer, UniformQuantizer

EXPECTED = Path(__file__).with_name('parity_nearest_expected.json')


def _inputs() -> dict:
    """The deterministic calibration inputs of the saved expectation."""
    g = torch.Generator().manual_seed(25)
    acts = [torch.randn(3, 50, 24, generator=g) * (1 + torch.arange(24.0)) for _ in range(4)]
    acts[1][0, 0, 5] = 40.0  # an outlier
    weight = torch.randn(16, 40, generator=g) * torch.linspace(0.1, 2.0, 40)
    logits = torch.randn(4, 2, 30, 30, generator=g) * 3
    return dict(acts=acts, weight=weight, attn=[logits.softmax(-1), (logits * 0.5).softmax(-1)])


def _nearest_state() -> dict:
    """Calibrate the default (nearest-rank) quantizers on :func:`_inputs`."""
    x = _inputs()
    out = {}
    for name, per_channel, max_samples in (
        ('act_tensor_sub', False, 1024),
        ('act_tensor_all', False, 1 << 20),
        ('act_channel_sub', True, 1200),
    ):
        for bits in (3, 4):
            q = UniformQuantizer(
                bits,
                per_channel=per_channel,
                ch_axis=-1,
                method='percentile',
                max_samples=max_samples,
                seed=7,
            )
            for a in x['acts']:
                q.observe(a)
            q.calibrate()
            out[f'{name}_{bits}'] = [
                q.scale.reshape(-1).tolist(),
                q.zero_point.reshape(-1).tolist(),
            ]
    for bits in (3, 4):
        q = UniformQuantizer(bits, per_channel=True, ch_axis=0, method='percentile')
        q.calibrate(x['weight'])
        out[f'weight_{bits}'] = [q.scale.tolist(), q.zero_point.tolist()]
        q = LogSqrt2Quantizer(bits, max_samples=2048, seed=3)
        for a in x['attn']:
            q.observe(a)
        q.calibrate()
        out[f'log_sqrt2_{bits}'] = [[float(q.delta)], []]
    return out


def _official_uniform(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official RepQ-ViT per-tensor initialisation (quantizer.py, channel_wise=False)."""
    best, delta, zero = 1e10, None, None
    for pct in (0.999, 0.9999, 0.99999):
        new_max = torch.quantile(x.reshape(-1), pct)
        new_min = torch.quantile(x.reshape(-1), 1.0 - pct)
        d = (new_max - new_min) / (2**bits - 1)
        z = (-new_min / d).round()
        x_q = (torch.clamp(torch.round(x / d) + z, 0, 2**bits - 1) - z) * d
        score = (x - x_q).abs().pow(2).mean()
        if score < best:
            best, delta, zero = score, d, z
    return delta, zero


def _official_log_sqrt2(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The official RepQ-ViT LogSqrt2Quantizer initialisation of ``delta``."""
    best, delta = 1e10, None
    for pct in (0.999, 0.9999, 0.99999):
        d = torch.quantile(x.reshape(-1), pct)
        x_int = torch.round(-1 * (x / d).log2() * 2)
        mask = x_int >= 2**bits
        x_q = torch.clamp(x_int, 0, 2**bits - 1)
        x_fq = 2 ** (-1 * torch.ceil(x_q / 2)) * ((x_q % 2) * (2**0.5 - 1) + 1) * d
        x_fq[mask] = 0
        score = (x - x_fq).abs().pow(2).mean()
        if score < best:
            best, delta = score, d
    return delta


def test_nearest_default_is_unchanged():
    """The default percentile search is bit-identical to the code before percentile_mode."""
    saved = json.loads(EXPECTED.read_text())
    got = _nearest_state()
    assert set(got) == set(saved)
    for key, (scale, zero) in saved.items():
        assert got[key][0] == [float.fromhex(v) for v in scale], key
        assert got[key][1] == [float.fromhex(v) for v in zero], key


@pytest.mark.parametrize('bits', [3, 4])
def test_linear_per_tensor_matches_official(bits):
    x = _inputs()
    q = UniformQuantizer(bits, method='percentile', percentile_mode='linear', max_samples=None)
    for a in x['acts']:
        q.observe(a)
    q.calibrate()
    delta, zero = _official_uniform(torch.cat([a.reshape(-1) for a in x['acts']]), bits)
    assert float(q.scale) == float(delta) and float(q.zero_point) == float(zero)


@pytest.mark.parametrize('bits', [3, 4])
def test_linear_per_channel_matches_official(bits):
    """Weights (rows) and post-LN activations (last axis): each channel on its own values."""
    x = _inputs()
    qw = UniformQuantizer(
        bits, per_channel=True, ch_axis=0, method='percentile', percentile_mode='linear'
    )
    qw.calibrate(x['weight'])
    qa = UniformQuantizer(
        bits,
        per_channel=True,
        ch_axis=-1,
        method='percentile',
        percentile_mode='linear',
        max_samples=None,
    )
    for a in x['acts']:
        qa.observe(a)
    qa.calibrate()
    acts = torch.cat([a.reshape(-1, 24) for a in x['acts']])
    for q, rows in ((qw, x['weight']), (qa, acts.T)):
        ref = [_official_uniform(r, bits) for r in rows]
        assert q.scale.tolist() == [float(d) for d, _ in ref]
        assert q.zero_point.tolist() == [float(z) for _, z in ref]


@pytest.mark.parametrize('bits', [3, 4])
def test_linear_log_sqrt2_matches_official(bits):
    attn = torch.cat([a.reshape(-1) for a in _inputs()['attn']])
    q = LogSqrt2Quantizer(bits, percentile_mode='linear', max_samples=None)
    q.observe(attn)
    q.calibrate()
    assert float(q.delta) == float(_official_log_sqrt2(attn, bits))


def test_linear_keeps_the_whole_tensor():
    """max_samples=None never subsamples: the sample is everything observed."""
    q = UniformQuantizer(4, method='percentile', percentile_mode='linear', max_samples=None)
    xs = [torch.randn(300, 1000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    for x in xs:
        q.observe(x)
    assert q.collector._rows.numel() == 3 * 300 * 1000


def test_linear_quantiles_exact_above_torch_limit():
    """Above 2^24 elements (torch.quantile's input limit in the official code's torch; it then
    falls back to np.percentile) the interpolation stays exact."""
    from mmdopq.quantizers.base_quantizer import TORCH_QUANTILE_MAX, linear_quantiles

    g = torch.Generator().manual_seed(0)
    x = torch.randn(TORCH_QUANTILE_MAX + 4097, generator=g) * torch.rand(1, generator=g) * 3
    probs = [0.00001, 0.0001, 0.001, 0.999, 0.9999, 0.99999]
    got = linear_quantiles(x[None], probs)[0]
    want = np.percentile(x.numpy().astype(np.float64), [100 * p for p in probs])
    assert torch.equal(got, torch.from_numpy(want).float())


def test_linear_quantiles_large_path_equals_torch_quantile(monkeypatch):
    """The sort-free path above the limit and torch.quantile agree where both apply."""
    from mmdopq.quantizers import base_quantizer

    x = torch.randn(5, 3001, generator=torch.Generator().manual_seed(1))
    probs = [0.001, 0.5, 0.999, 0.99999]
    ref = base_quantizer.linear_quantiles(x, probs)
    assert torch.equal(ref, torch.quantile(x, torch.tensor(probs), dim=1).T)
    monkeypatch.setattr(base_quantizer, 'TORCH_QUANTILE_MAX', 100)
    # torch.quantile computes the rank p * (n - 1) in float32, the exact path in float64
    torch.testing.assert_close(base_quantizer.linear_quantiles(x, probs), ref, rtol=1e-4, atol=0)


def test_percentile_mode_is_validated():
    with pytest.raises(ValueError, match='percentile_mode'):
        UniformQuantizer(4, method='percentile', percentile_mode='lower')
    with pytest.raises(ValueError, match='percentile_mode'):
        LogSqrt2Quantizer(4, percentile_mode='midpoint')
