"""Learned post-Softmax quantizers (TanQ, log-sqrt2) during reconstruction."""

import pytest
import torch

from mmdopq.apis import quantize
from mmdopq.quantizers import LogSqrt2Quantizer, TanQuantizer
from mmdopq.reconstruct import reconstruct
from mmdopq.reconstruct.post_softmax import learned_post_softmax
from tests.test_reconstruct.test_reconstruct import FAST, build, loop_of, quant_cfg


def attention_like(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(2, 3, 17, 17, generator=gen) * 3, dim=-1)


@pytest.mark.parametrize('kind', ['tan', 'log_sqrt2'])
def test_learned_quantizer_starts_at_the_calibration_and_writes_back_exactly(kind):
    x = attention_like()
    q = TanQuantizer(3) if kind == 'tan' else LogSqrt2Quantizer(3)
    q.calibrate(x)
    learned = learned_post_softmax(q, drop_prob=0.5, generator=torch.Generator().manual_seed(0))
    learned.eval()
    # at its calibrated parameters it is the quantizer (up to float32 rounding of them)
    same = (learned(x) == q(x)).float().mean()
    assert float(same) > 0.999
    # the parameters learn from every element; the input gets a straight-through gradient
    xg = x.clone().requires_grad_(True)
    ((learned(xg) - 0.3) ** 2).sum().backward()
    grads = [p.grad for p in learned.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert torch.equal(xg.grad, 2 * (learned(x) - 0.3))
    # any learned state, written into the buffers, is reproduced by the plain quantizer
    with torch.no_grad():
        for p in learned.parameters():
            p.add_(0.3)
    out = learned(x)
    for k, v in learned.values().items():
        getattr(q, k).copy_(v)
    assert torch.equal(q(x), out)
    # QDrop: about half the elements pass in float while training
    learned.train()
    assert 0.35 < float((learned(x) == x).float().mean()) < 0.65


@pytest.mark.parametrize('recipe', ['dopq', 'repq'])
def test_reconstruction_learns_the_post_softmax_quantizers_on_ask(recipe):
    model = quantize(build('vit'), dict(quant_cfg(), recipe=recipe), loop_of('vit'))
    plan = model.quant_plan
    post = [plan.sites[n].quantizer_a for n in plan.post_softmax_sites]
    before = [{k: v.clone() for k, v in q.state_dict().items()} for q in post]
    settings = dict(FAST, iters=30, learn_post_softmax=True)
    rec = reconstruct(model, loop_of('vit'), settings)
    units = rec['units'].values()
    assert sum(u['post_softmax'] for u in units) == len(post) > 0
    assert all(u['loss_after'] <= u['loss_before'] for u in units)
    after = [q.state_dict() for q in post]
    changed = [any(not torch.equal(b[k], a[k]) for k in b) for b, a in zip(before, after)]
    assert any(changed)
    # off (the default): the post-Softmax quantizers keep their calibration
    model = quantize(build('vit'), dict(quant_cfg(), recipe=recipe), loop_of('vit'))
    post = [model.quant_plan.sites[n].quantizer_a for n in model.quant_plan.post_softmax_sites]
    before = [{k: v.clone() for k, v in q.state_dict().items()} for q in post]
    rec = reconstruct(model, loop_of('vit'), dict(FAST, iters=10))
    assert all(u['post_softmax'] == 0 for u in rec['units'].values())
    for b, q in zip(before, post):
        assert all(torch.equal(b[k], v) for k, v in q.state_dict().items())
