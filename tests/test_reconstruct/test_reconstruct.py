"""Block reconstruction (mmdopq.reconstruct) on tiny timm ViT / Swin models."""

import copy

import pytest
import torch

from mmdopq.apis import quantize
from mmdopq.nn import QuantMatMul, WeightActQuantMixin
from mmdopq.quantizers import UniformQuantizer
from mmdopq.recipe import QuantRecipe
from mmdopq.reconstruct import (
    AdaRoundWeight,
    LSQActQuantizer,
    ReconstructSettings,
    SteWeight,
    UnitCache,
    reconstruct,
)
from mmdopq.reconstruct.stage import select_units
from mmdopq.utils.errors import ConfigError
from tests.test_adapters.test_timm_adapters import adapt, build, inputs, recipe

ARCHS = ('vit', 'deit_distilled', 'vit_norms', 'swin')
CALIB = {arch: [inputs(arch, n=8, seed=s) for s in range(6)] for arch in ('vit', 'swin')}
TEST = {arch: inputs(arch, n=16, seed=100) for arch in ('vit', 'swin')}
FAST = dict(iters=60, batch_size=16, num_images=48, eval_every=5, progress=False)


def loop_of(arch: str):
    def forward_loop(model):
        for x in CALIB[arch]:
            model(x)

    return forward_loop


def quant_cfg(rc=None, **kw) -> dict:
    cfg = dict(recipe='dopq', wbits=4, abits=4, **kw)
    if rc is not None:
        cfg['reconstruct'] = rc
    return cfg


def rel_mse(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).pow(2).mean() / ref.pow(2).mean())


# -- the learnable wrappers ------------------------------------------------------------
def weight_quantizer(w: torch.Tensor, bits: int = 4) -> UniformQuantizer:
    q = UniformQuantizer(bits, per_channel=True, ch_axis=0, method='minmax')
    q.calibrate(w)
    return q


def test_adaround_starts_at_the_float_weight_and_hardens_onto_the_grid():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, 3, 3, generator=gen)
    q = weight_quantizer(w)
    ada = AdaRoundWeight(w, q)
    s = q.scale.reshape(-1, 1, 1, 1)
    z = q.zero_point.reshape(-1, 1, 1, 1)
    inside = (w / s + z >= q.qmin) & (w / s + z <= q.qmax)  # the grid's ends clamp
    assert inside.float().mean() > 0.9
    # h(V) = the fractional part: the soft weight starts at the float weight
    torch.testing.assert_close(ada()[inside], w[inside], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ada.v.add_(torch.randn(ada.v.shape, generator=gen) * 3)  # any learned state
    h = ada.hard_h()
    assert set(h.unique().tolist()) <= {0.0, 1.0}
    hard = ada.hard_weight(h)
    ints = hard / s + z
    torch.testing.assert_close(ints, ints.round(), atol=1e-4, rtol=0)
    assert ints.round().min() >= q.qmin and ints.round().max() <= q.qmax
    nearest = torch.clamp(torch.round(w / s) + z, q.qmin, q.qmax)
    assert (ints.round() - nearest).abs().max() <= 1  # within one step of round-to-nearest
    # what is written into the layer is reproduced bit for bit by plain fake quantization
    assert torch.equal(q(hard), hard)
    assert 0 <= float(ada.regularizer(2.0)) <= 1


def test_ste_weight_starts_at_round_to_nearest_and_may_move_several_steps():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, 3, 3, generator=gen)
    q = weight_quantizer(w)
    ste = SteWeight(w, q)
    # at the start it is the calibrated quantizer's own fake quantization
    torch.testing.assert_close(ste(), q(w), atol=1e-6, rtol=0)
    # the gradient passes round-to-nearest (and is zero only where the grid clamps)
    ste().sum().backward()
    s = q.scale.reshape(-1, 1, 1, 1)
    z = q.zero_point.reshape(-1, 1, 1, 1)
    inside = (torch.round(w / s) + z > q.qmin) & (torch.round(w / s) + z < q.qmax)
    torch.testing.assert_close(ste.u.grad[inside], s.expand_as(w)[inside])
    with torch.no_grad():
        ste.u.add_(3.0)  # three steps up: beyond AdaRound's reach
    state = ste.hard_state()
    weight = ste.state_weight(state)
    ints = weight / s + z
    torch.testing.assert_close(ints, ints.round(), atol=1e-4, rtol=0)
    assert ints.round().min() >= q.qmin and ints.round().max() <= q.qmax
    nearest = torch.clamp(torch.round(w / s) + z, q.qmin, q.qmax)
    assert (ints.round() - nearest).abs().max() == 3
    assert torch.equal(q(weight), weight)
    assert float(ste.regularizer(2.0)) == 0


def test_ste_weight_mode_reconstructs_onto_the_grid_and_improves_the_units():
    """``weight_mode='ste'``: every unit's loss falls; the weights stay on their grid."""
    fast = dict(FAST, iters=30, num_images=32, weight_mode='ste')
    ada = quantize(build('vit'), quant_cfg(dict(FAST, iters=30, num_images=32)), loop_of('vit'))
    model = quantize(build('vit'), quant_cfg(fast), loop_of('vit'))
    rec = model.quant_calibration['reconstruct']
    assert rec['settings']['weight_mode'] == 'ste'
    assert all(r['loss_after'] <= r['loss_before'] for r in rec['units'].values())
    assert sum(r['loss_after'] < r['loss_before'] for r in rec['units'].values()) >= 2
    moved = 0
    for name, unit in model.quant_plan.units:
        for layer in unit.modules():
            if isinstance(layer, WeightActQuantMixin):
                w = layer.weight.detach()
                assert torch.equal(layer.weight_quantizer(w), w), name
        for (_, a), (_, b) in zip(
            unit.named_parameters(), dict(ada.quant_plan.units)[name].named_parameters()
        ):
            moved += int(not torch.equal(a, b))
    assert moved > 0  # a different result from AdaRound's
    with pytest.raises(ValueError, match=r'quant\.reconstruct\.weight_mode'):
        QuantRecipe.from_cfg(quant_cfg(dict(weight_mode='free')))


def test_lsq_equals_the_quantizer_at_init_and_drops_with_qdrop():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 10, 32, generator=gen) * 2
    q = UniformQuantizer(4, method='minmax')
    q.calibrate(x)
    lsq = LSQActQuantizer(q, drop_prob=0.5, generator=torch.Generator().manual_seed(1))
    lsq.eval()
    torch.testing.assert_close(lsq(x), q(x), atol=1e-5, rtol=0)
    lsq.train()
    y = lsq(x)
    kept_float = (y == x).float().mean()
    assert 0.4 < float(kept_float) < 0.6
    xg = x.clone().requires_grad_(True)
    lsq(xg).sum().backward()
    assert lsq.step.grad is not None and xg.grad is not None
    lsq.write_back(torch.tensor(0.5))
    assert float(q.scale) == 0.5


def test_unit_cache_groups_samples_by_shape_and_matches_targets():
    cache = UnitCache(max_samples=5, name='u')
    for n, size in ((2, 4), (2, 6), (3, 4)):
        x = torch.randn(n, size)
        cache.add_input((x,), dict(hw=(size, 1)))
        cache.add_target(x * 2)
    assert cache.full('inputs') and cache.num_samples == 5
    cache.finish()
    assert [g.size for g in cache.inputs] == [3, 2]  # 2 + 1 of the third call, then 2
    args, kwargs, target = cache.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(target, args[0] * 2)
    assert kwargs['hw'][0] == args[0].shape[1]


# -- units ---------------------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_units_cover_every_weight_site_exactly_once(arch):
    model = build(arch)
    plan = adapt(model, recipe())
    names = [n for n, _ in plan.units]
    assert len(names) == len(set(names))
    modules = dict(model.named_modules())
    for name, unit in plan.units:
        assert modules[name] is unit
    owner = {}
    for uname, unit in plan.units:
        for m in unit.modules():
            owner.setdefault(id(m), []).append(uname)
    for site_name, site in plan.sites.items():
        assert len(owner.get(id(site), [])) == 1, site_name
    assert names[0].endswith('patch_embed')
    assert names[-1].startswith('head') or names[-1].endswith(('head', 'head_dist'))
    if arch == 'swin':
        assert 'layers.1.downsample' in names
        assert names.index('layers.1.downsample') < names.index('layers.1.blocks.0')


def test_backbone_scope_has_no_head_unit():
    plan = adapt(build('vit'), recipe(scope='backbone'))
    assert [n for n, _ in plan.units][-1] == 'blocks.1'


@pytest.mark.parametrize('key', ['neck', 'heads'])
def test_a_classifier_refuses_neck_and_heads_reconstruction(key):
    plan = adapt(build('vit'), recipe())
    message = rf'reconstruct.{key}=True, but the model has no {key} to reconstruct'
    with pytest.raises(ConfigError, match=message):
        select_units(plan, ReconstructSettings(**{key: True}))


# -- the stage -----------------------------------------------------------------------
def test_recipes_without_reconstruct_are_unchanged():
    """No ``reconstruct`` key, or ``enabled=False``: the state of the old pipeline, bit for bit."""
    ref = build('vit')
    plan = adapt(ref, recipe())
    plan.start_calibration(ref)
    with torch.no_grad():
        loop_of('vit')(ref)
    plan.calibrate_sites()
    plan.reparameterize()
    plan.recalibrate(ref)
    expected = ref.state_dict()
    for cfg in (quant_cfg(), quant_cfg(dict(enabled=False, iters=5))):
        model = quantize(build('vit'), cfg, loop_of('vit'))
        state = model.state_dict()
        assert set(state) == set(expected)
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        assert 'reconstruct' not in model.quant_calibration
        assert 'reconstruct_s' not in model.quant_calibration['times']


@pytest.mark.parametrize('arch', ('vit', 'swin'))
def test_reconstruction_improves_the_output_and_never_a_unit_loss(arch):
    with torch.no_grad():
        ref = build(arch)(TEST[arch])
    base = quantize(build(arch), quant_cfg(), loop_of(arch))
    lines = []
    fast = FAST if arch == 'vit' else dict(FAST, iters=30, num_images=32)  # Swin: slower
    model = quantize(build(arch), quant_cfg(fast), loop_of(arch), log=lines.append)
    rec = model.quant_calibration['reconstruct']
    assert list(rec['units']) == [n for n, _ in model.quant_plan.units]
    for name, r in rec['units'].items():
        assert r['loss_after'] <= r['loss_before'], name
        assert r['samples'] == fast['num_images']
        assert 1 <= r['iters'] <= fast['iters']
    assert any(r['changed'] for r in rec['units'].values())
    assert model.quant_calibration['times']['reconstruct_s'] > 0
    assert sum('loss' in line and '->' in line for line in lines) == len(rec['units'])
    # The output error against float: on this random Swin it improves for every seed tried
    # (3 of 3, by 15-25 %, seen and held-out images). On the random ViT the block-output
    # MSE is a poor proxy (the head reads the class token only; the errors that matter are
    # tiny next to the rest of the residual stream): 3 of 4 seeds improve, so only the Swin
    # is asserted. (Trained reference ViT, W4A4: top-1 70.75 -> 77.6 after 100 iterations.)
    if arch == 'swin':
        seen = torch.cat(CALIB[arch])
        with torch.no_grad():
            ref_seen = build(arch)(seen)
            assert rel_mse(model(seen), ref_seen) < 0.9 * rel_mse(base(seen), ref_seen)
            assert rel_mse(model(TEST[arch]), ref) < 0.95 * rel_mse(base(TEST[arch]), ref)
    # the result is ordinary quantizer state: integer-grid weights, positive scales
    for name, unit in model.quant_plan.units:
        for layer in unit.modules():
            if isinstance(layer, WeightActQuantMixin) and rec['units'][name]['changed']:
                w = layer.weight.detach()
                assert torch.equal(layer.weight_quantizer(w), w)
    for layer in model.quant_plan.sites.values():
        for _, q in layer.quantizers():
            if isinstance(q, UniformQuantizer):
                assert (q.scale > 0).all()
    # post-Softmax quantizers keep their calibration
    for name in model.quant_plan.post_softmax_sites:
        site = model.quant_plan.sites[name]
        assert isinstance(site, QuantMatMul)
        torch.testing.assert_close(
            dict(site.quantizer_a.state_dict()),
            dict(base.quant_plan.sites[name].quantizer_a.state_dict()),
        )


def test_reconstruction_is_reproducible_and_state_dict_keys_are_kept():
    fast = dict(FAST, iters=10)
    a = quantize(build('vit'), quant_cfg(fast), loop_of('vit'))
    b = quantize(build('vit'), quant_cfg(fast), loop_of('vit'))
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(quantize(build('vit'), quant_cfg(), loop_of('vit')).state_dict())
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a fresh copy of the model loads the state and computes the same
    c = copy.deepcopy(b)
    c.load_state_dict(sa)
    with torch.no_grad():
        assert torch.equal(c(TEST['vit']), a(TEST['vit']))


def test_forward_loop_that_uses_the_output_still_works():
    """A loop that reads the model's output gets a full forward pass (no early stop)."""
    model = quantize(build('vit'), quant_cfg(), loop_of('vit'))

    def loop(m):
        for x in CALIB['vit']:
            m(x).argmax(-1)

    rec = reconstruct(model, loop, dict(FAST, iters=5))
    assert all(r['samples'] == FAST['num_images'] for r in rec['units'].values())


def test_early_stop_ends_ste_units_but_never_cuts_adarounds_anneal():
    """A demanding early stop (a 50 % gain per scoring) ends STE units at once after the
    warm-up, while AdaRound units, whose hardened state improves only as the regulariser
    anneals, run every iteration and still keep their best state."""
    model = quantize(build('vit'), quant_cfg(), loop_of('vit'))
    stop = dict(
        FAST, iters=40, eval_every=2, warmup=0.25, early_stop=dict(patience=1, min_delta=0.5)
    )
    ste = reconstruct(copy.deepcopy(model), loop_of('vit'), dict(stop, weight_mode='ste'))
    assert all(r['iters'] < 40 for r in ste['units'].values())
    assert all(r['iters'] >= 10 for r in ste['units'].values())  # not during the warm-up
    ada = reconstruct(copy.deepcopy(model), loop_of('vit'), stop)
    assert all(r['iters'] == 40 for r in ada['units'].values())
    assert all(r['loss_after'] <= r['loss_before'] for r in ada['units'].values())


def test_settings_are_validated_with_their_names():
    with pytest.raises(ValueError, match=r'quant\.reconstruct\.drop_prob'):
        QuantRecipe.from_cfg(quant_cfg(dict(drop_prob=1.5)))
    with pytest.raises(ValueError, match=r'quant\.reconstruct\.cache_dtype'):
        QuantRecipe.from_cfg(quant_cfg(dict(cache_dtype='int8')))
    with pytest.raises(ValueError, match=r'quant\.reconstruct: unknown keys'):
        QuantRecipe.from_cfg(quant_cfg(dict(iterations=3)))
    with pytest.raises(ValueError, match=r'quant\.reconstruct\.early_stop\.patience'):
        QuantRecipe.from_cfg(quant_cfg(dict(early_stop=dict(patience=-1))))
    with pytest.raises(ValueError, match=r'quant\.reconstruct\.roi_batch_size=0 must be'):
        QuantRecipe.from_cfg(quant_cfg(dict(roi_batch_size=0)))
    with pytest.raises(ValueError, match=r'quant\.reconstruct\.heads=1 must be True or False'):
        QuantRecipe.from_cfg(quant_cfg(dict(heads=1)))
    rois = ReconstructSettings(batch_size=4, eval_images=32, roi_batch_size=16).for_rois()
    assert (rois.batch_size, rois.eval_images) == (16, 128)
    r = QuantRecipe.from_cfg(quant_cfg(dict(iters=7, anneal=[10, 2])))
    with pytest.raises(TypeError):
        r.reconstruct['iters'] = 3  # read-only
    assert r.reconstruct_settings == ReconstructSettings(iters=7, anneal=(10.0, 2.0))
    assert r.to_dict()['reconstruct'] == dict(iters=7, anneal=(10.0, 2.0))
    assert QuantRecipe.from_cfg(quant_cfg()).reconstruct_settings is None


def test_fp16_cache_and_no_drop():
    model = quantize(build('vit'), quant_cfg(), loop_of('vit'))
    settings = dict(FAST, iters=10, cache_dtype='float16', drop_prob=0)
    rec = reconstruct(model, loop_of('vit'), settings)
    for r in rec['units'].values():
        assert r['loss_after'] <= r['loss_before']


def test_cache_budget_error_names_the_remedies():
    cache = UnitCache(0, 'float32', 1, 'u')  # 1 MiB (0 would mean unlimited)
    with pytest.raises(MemoryError, match='cache_dtype.*cache="disk"'):
        cache.add_input((torch.zeros(300, 1024),), {})


def test_disk_cache_reconstructs_exactly_as_in_memory(tmp_path):
    """The on-disk cache changes where the unit tensors live, not a single result bit, and
    leaves no file behind."""
    states, records = [], []
    for cache in ('memory', 'disk'):
        model = quantize(build('vit'), quant_cfg(), loop_of('vit'))
        settings = dict(FAST, iters=10, cache=cache, cache_dir=str(tmp_path / 'cache'))
        rec = reconstruct(model, loop_of('vit'), settings)
        states.append(model.state_dict())
        records.append([(r['loss_before'], r['loss_after']) for r in rec['units'].values()])
    assert records[0] == records[1]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not list((tmp_path / 'cache').iterdir())  # every unit's directory removed


def test_disk_cache_out_of_space_names_the_directory(tmp_path, monkeypatch):
    import shutil as shutil_mod

    from mmdopq.reconstruct import cache as cache_mod

    usage = shutil_mod.disk_usage(tmp_path)
    monkeypatch.setattr(
        cache_mod.shutil, 'disk_usage', lambda p: usage._replace(free=UnitCache.DISK_MARGIN)
    )
    cache = UnitCache(0, 'float32', 0, 'u', disk=True, cache_dir=str(tmp_path))
    with pytest.raises(MemoryError, match=f'{tmp_path}.*cache_dir'):
        cache.add_input((torch.zeros(4, 16),), {})
    cache.close()
    assert not list(tmp_path.iterdir())
