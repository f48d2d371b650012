"""timm adapters (ViT / DeiT / Swin): float exactness, keys, sites, post-Softmax, padding."""

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from mmdopq.adapters import ADAPTERS, adapt_timm_classifier, get_adapter
from mmdopq.adapters.timm_swin import (
    QuantSwinTransformerBlock,
    QuantWindowAttention,
    adapt_timm_swin,
)
from mmdopq.adapters.timm_vit import QuantAttention, adapt_timm_vit
from mmdopq.nn import QuantConv2d, QuantLinear, QuantMatMul, set_quant_mode
from mmdopq.plan import COMPONENTS, QuantizerFactory
from mmdopq.quantizers import LogSqrt2Quantizer, TanQuantizer, UniformQuantizer
from mmdopq.quantizers.tan_quantizer import alpha_bound
from mmdopq.recipe import QuantRecipe

VIT_KW = dict(
    pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
)
#: 60 / patch 4 = 15x15 tokens, window 4: stage 0 pads every window row/column to 16.
SWIN_IMG = 60
SWIN_WINDOW = 4
ARCHS = ('vit', 'deit_distilled', 'vit_norms', 'swin')


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial LayerNorm affines with a few outlier channels (so folds really move)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                c = m.weight.numel()
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight[:2] *= 8.0
                m.bias.copy_(torch.randn(c, generator=gen) * 0.5)
    return model


def build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == 'vit':
        model = timm.create_model('vit_tiny_patch16_224', **VIT_KW)
    elif arch == 'deit_distilled':
        model = timm.create_model('deit_tiny_distilled_patch16_224', **VIT_KW)
        assert isinstance(model, VisionTransformerDistilled)
    elif arch == 'vit_norms':
        # qk_norm + scale norms in attention and MLP, avg pooling with fc_norm
        model = timm.create_model(
            'vit_tiny_patch16_224',
            qk_norm=True,
            scale_attn_norm=True,
            scale_mlp_norm=True,
            global_pool='avg',
            **VIT_KW,
        )
    else:
        model = SwinTransformer(
            img_size=SWIN_IMG,
            patch_size=4,
            window_size=SWIN_WINDOW,
            embed_dim=16,
            depths=(2, 2),
            num_heads=(1, 2),
            num_classes=10,
        )
    return randomize_norms(model).eval()


def inputs(arch: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    size = SWIN_IMG if arch == 'swin' else VIT_KW['img_size']
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def with_fused(model: nn.Module, fused: bool) -> nn.Module:
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, 'fused_attn'):
            m.fused_attn = fused
    return ref


def recipe(name: str = 'dopq', **kw) -> QuantRecipe:
    return QuantRecipe.from_cfg(dict(recipe=name, wbits=4, abits=4, **kw))


def adapt(model: nn.Module, rcp: QuantRecipe):
    return get_adapter('auto', model)(model, QuantizerFactory(rcp))


def calibrate(model, plan, arch, n_batches=2):
    plan.start_calibration(model)
    with torch.no_grad():
        for i in range(n_batches):
            model(inputs(arch, n=2, seed=100 + i))
    plan.calibrate_sites()
    plan.reparameterize()
    plan.recalibrate(model)


def all_quantizers(plan):
    for layer in plan.sites.values():
        for _, q in layer.quantizers():
            yield q


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


# -- float mode -----------------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_float_mode_equals_timm(arch):
    model = build(arch)
    unfused, fused = with_fused(model, False), with_fused(model, True)
    plan = adapt(model, recipe())
    set_quant_mode(model, 'float')
    x = inputs(arch)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, unfused(x))
        torch.testing.assert_close(out, fused(x), rtol=1e-5, atol=1e-5)
    assert plan.sites and all(layer.quant_mode == 'float' for layer in plan.sites.values())


def test_vit_attn_mask_float_exact():
    model = build('vit')
    ref = with_fused(model, False)
    adapt(model, recipe())
    x = inputs('vit')
    n_tok = 1 + (VIT_KW['img_size'] // VIT_KW['patch_size']) ** 2
    mask = torch.rand(n_tok, n_tok, generator=torch.Generator().manual_seed(1)) > 0.3
    mask |= torch.eye(n_tok, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(x, attn_mask=mask), ref(x, attn_mask=mask))
        assert torch.equal(model(x, is_causal=True), ref(x, is_causal=True))


def test_classes_swapped():
    vit, swin = build('vit'), build('swin')
    adapt(vit, recipe())
    adapt(swin, recipe())
    assert all(type(b.attn) is QuantAttention for b in vit.blocks)
    for stage in swin.layers:
        for b in stage.blocks:
            assert type(b) is QuantSwinTransformerBlock and type(b.attn) is QuantWindowAttention


# -- state dict -----------------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_state_dict_keys(arch):
    model = build(arch)
    float_sd = copy.deepcopy(model.state_dict())
    plan = adapt(model, recipe())
    own = set(model.state_dict())
    assert set(float_sd) <= own
    extra = own - set(float_sd)
    # QuantPlan.add_pair gives a bias-less LN consumer (Swin's PatchMerging.reduction) a zero
    # bias, which the fold needs; everything else added is quantizer state or input_offset.
    added_bias = {f'{c}.bias' for p in plan.norm_pairs for c in p.consumers} - set(float_sd)
    assert added_bias == ({'layers.1.downsample.reduction.bias'} if arch == 'swin' else set())
    assert extra and all(
        'quantizer' in k or k.endswith('.input_offset') or k in added_bias for k in extra
    )
    if arch == 'swin':
        assert any(k.endswith('attn.input_offset') for k in extra)
    missing, unexpected = model.load_state_dict(float_sd, strict=False)
    assert not unexpected and set(missing) == extra


# -- post-Softmax quantizer -----------------------------------------------------------
@pytest.mark.parametrize('arch', ('vit', 'swin'))
@pytest.mark.parametrize('name,cls', [('dopq', TanQuantizer), ('repq', LogSqrt2Quantizer)])
def test_post_softmax_quantizer_runs(arch, name, cls):
    model = build(arch)
    plan = adapt(model, recipe(name))
    n_blocks = len(model.blocks) if arch == 'vit' else sum(len(s.blocks) for s in model.layers)
    assert len(plan.post_softmax_sites) == n_blocks
    calls = {}
    for site in plan.post_softmax_sites:
        mm = plan.sites[site]
        assert isinstance(mm, QuantMatMul) and isinstance(mm.quantizer_a, cls)
        q = mm.quantizer_a
        for meth in ('observe', 'forward'):
            orig = getattr(q, meth)

            def counted(x, _orig=orig, _key=(site, meth)):
                calls[_key] = calls.get(_key, 0) + 1
                return _orig(x)

            setattr(q, meth, counted)
    calibrate(model, plan, arch)
    for site in plan.post_softmax_sites:
        q = plan.sites[site].quantizer_a
        assert calls.get((site, 'observe'), 0) >= 2, site
        assert bool(q.calibrated), site
    assert not any(meth == 'forward' for _, meth in calls)
    with torch.no_grad():
        model(inputs(arch))
    for site in plan.post_softmax_sites:
        assert calls.get((site, 'forward'), 0) == 1, site


# -- full calibration -----------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('name', ('dopq', 'repq'))
def test_full_calibration(arch, name):
    model = build(arch)
    ref = copy.deepcopy(model)
    plan = adapt(model, recipe(name))
    calibrate(model, plan, arch)
    assert plan.uncalibrated_sites() == [] and plan.is_calibrated
    assert len(plan.fold_results) == len(plan.norm_pairs)
    for pair in plan.norm_pairs:  # folded: every post-LN input quantizer is per tensor now
        for c in pair.consumers:
            q = plan.sites[c].input_quantizer
            assert isinstance(q, UniformQuantizer) and q.scale.dim() == 0
    x = inputs(arch, seed=7)
    with torch.no_grad():
        out, out_ref = model(x), ref(x)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, out_ref)


# -- reparameterization is exact in float (Swin: with window padding) ---------------
@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('rule', ('mad', 'mean'))
def test_reparam_float_equivalence(arch, rule):
    model = build(arch)
    ref = copy.deepcopy(model)
    plan = adapt(model, recipe('dopq', reparam_rule=rule))
    calibrate(model, plan, arch)
    for q in all_quantizers(plan):
        q.enabled = False
    x = inputs(arch, seed=3)
    with torch.no_grad():
        out, out_ref = model(x), ref(x)
    assert rel_err(out, out_ref) < 1e-4
    if arch == 'swin':
        # the configuration really pads after the (folded) norm1 ...
        blk = model.layers[0].blocks[0]
        h, w = blk.input_resolution
        assert h % blk.window_size[0] and w % blk.window_size[1]
        offsets = [
            plan.fold_results[p.name].zero_image
            for p in plan.norm_pairs
            if p.zero_image_owner is not None
        ]
        assert len(offsets) == 4 and all(o.abs().max() > 1e-3 for o in offsets)
        # ... the attention branch of a padded block matches, and padding with a plain zero
        # would be visibly wrong there (the residual stream hides it in the logits)
        assert rel_err(first_attn_branch(model, x), first_attn_branch(ref, x)) < 1e-5
        orig = QuantSwinTransformerBlock._pad
        QuantSwinTransformerBlock._pad = lambda self, t, ph, pw: F.pad(t, (0, 0, 0, pw, 0, ph))
        try:
            naive = first_attn_branch(model, x)
        finally:
            QuantSwinTransformerBlock._pad = orig
        assert rel_err(naive, first_attn_branch(ref, x)) > 1e-2


def first_attn_branch(model, x):
    """Attention branch of the first Swin block (padded windows), before the residual."""
    with torch.no_grad():
        block = model.layers[0].blocks[0]
        return block._attn(block.norm1(model.patch_embed(x)))


def test_mosf_caps_outlier_channels():
    model = build('vit')
    plan = adapt(model, recipe('dopq'))
    calibrate(model, plan, 'vit')
    assert any(r.k is not None for r in plan.fold_results.values())


# -- declared sites ---------------------------------------------------------------------
def linear_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def head_names(arch):
    return {
        'vit': ['head'],
        'vit_norms': ['head'],
        'deit_distilled': ['head', 'head_dist'],
        'swin': ['head.fc'],
    }[arch]


@pytest.mark.parametrize('arch', ARCHS)
def test_every_layer_is_a_site(arch):
    model = build(arch)
    plan = adapt(model, recipe(scope='whole'))
    layers = linear_layers(model)
    assert set(layers) == {n for n, s in plan.sites.items() if not isinstance(s, QuantMatMul)}
    assert all(isinstance(m, (QuantLinear, QuantConv2d)) for m in layers.values())
    assert all(plan.sites[n] is m for n, m in layers.items())
    pe = plan.sites['patch_embed.proj']
    assert isinstance(pe, QuantConv2d) and pe.input_quantizer.bits == 8
    matmuls = {n for n, s in plan.sites.items() if isinstance(s, QuantMatMul)}
    assert {n for n in matmuls if n.endswith('av_matmul')} == set(plan.post_softmax_sites)
    assert len(matmuls) == 2 * len(plan.post_softmax_sites)
    assert all(dict(model.named_modules())[n] is plan.sites[n] for n in matmuls)
    pairs = {p.name: p.consumers for p in plan.norm_pairs}
    if arch == 'swin':
        assert pairs['layers.1.downsample.norm'] == ['layers.1.downsample.reduction']
        assert pairs['layers.0.blocks.1.norm1'] == ['layers.0.blocks.1.attn.qkv']
    else:
        assert pairs['blocks.0.norm1'] == ['blocks.0.attn.qkv']
        assert pairs['blocks.1.norm2'] == ['blocks.1.mlp.fc1']
        if arch == 'vit_norms':
            assert pairs['blocks.0.attn.norm'] == ['blocks.0.attn.proj']
            assert pairs['blocks.0.mlp.norm'] == ['blocks.0.mlp.fc2']


@pytest.mark.parametrize('arch', ARCHS)
def test_components_partition_the_quantizers(arch):
    plan = adapt(build(arch), recipe(scope='whole'))
    comps = plan.components()
    assert tuple(comps) == COMPONENTS
    ids = [id(q) for members in comps.values() for q in members]
    assert sorted(ids) == sorted(id(q) for q in all_quantizers(plan))  # each exactly once
    assert [id(q) for q in comps['post_softmax']] == [
        id(plan.sites[s].quantizer_a) for s in plan.post_softmax_sites
    ]
    assert {id(q) for q in comps['post_layernorm']} == {
        id(plan.sites[c].input_quantizer) for p in plan.norm_pairs for c in p.consumers
    }
    assert all(q.name.endswith('weight_quantizer') for q in comps['weight'])
    assert len(comps['weight']) == sum(1 for s in plan.sites.values() if hasattr(s, 'weight'))
    # the attention maps' partners (q, k, v) are "other" activations
    assert id(plan.sites[plan.post_softmax_sites[0]].quantizer_b) in {
        id(q) for q in comps['other_act']
    }
    plan.post_softmax_sites.append('patch_embed.proj')
    with pytest.raises(ValueError, match="'patch_embed.proj' is not a declared QuantMatMul"):
        plan.components()


@pytest.mark.parametrize('arch', ARCHS)
def test_backbone_scope_keeps_head_float(arch):
    whole = adapt(build(arch), recipe('repq', scope='whole'))
    model = build(arch)
    plan = adapt(model, recipe('repq', scope='backbone'))
    heads = head_names(arch)
    modules = dict(model.named_modules())
    for h in heads:
        assert type(modules[h]) is nn.Linear and h not in plan.sites
    assert set(plan.sites) == set(whole.sites) - set(heads)
    calibrate(model, plan, arch)
    assert plan.uncalibrated_sites() == []
    with pytest.raises(ValueError, match="scope='backbone_neck' is for detectors"):
        adapt(build(arch), recipe('repq', scope='backbone_neck'))


# -- dispatch, wrappers, rejection ----------------------------------------------------
class Wrapper(nn.Module):
    def __init__(self, timm_model):
        super().__init__()
        self.timm_model = timm_model

    def forward(self, x):
        return self.timm_model(x)


@pytest.mark.parametrize('arch', ('vit', 'swin'))
def test_wrapper_prefix_and_auto(arch):
    wrapper = Wrapper(build(arch))
    plan = adapt(wrapper, recipe('dopq' if arch == 'swin' else 'repq'))
    assert all(n.startswith('timm_model.') for n in plan.sites)
    modules = dict(wrapper.named_modules())
    assert all(modules[n] is s for n, s in plan.sites.items())
    assert all(p.name in modules and modules[p.name] is p.norm for p in plan.norm_pairs)
    calibrate(wrapper, plan, arch)
    assert plan.uncalibrated_sites() == []


def test_named_adapters_check_architecture():
    for name in ('timm', 'timm_vit', 'timm_swin'):
        assert name in ADAPTERS
    vit, swin = build('vit'), build('swin')
    with pytest.raises(TypeError, match='SwinTransformer'):
        ADAPTERS['timm_swin']()(vit, QuantizerFactory(recipe()))
    with pytest.raises(TypeError, match='VisionTransformer'):
        ADAPTERS['timm_vit']()(swin, QuantizerFactory(recipe()))
    assert len(ADAPTERS['timm_vit']()(vit, QuantizerFactory(recipe())).post_softmax_sites) == 2
    assert adapt_timm_classifier(swin, QuantizerFactory(recipe())).sites


def test_rejects_unsupported():
    rcp = QuantizerFactory(recipe())
    with pytest.raises(TypeError, match='attn_pool'):
        adapt_timm_vit(timm.create_model('vit_tiny_patch16_224', global_pool='map', **VIT_KW), rcp)
    with pytest.raises(TypeError, match=r'blocks\.0\.attn'):
        adapt_timm_vit(timm.create_model('vit_tiny_patch16_224', attn_layer='diff', **VIT_KW), rcp)
    with pytest.raises(TypeError, match='SwinTransformer'):
        adapt_timm_swin(build('vit'), rcp)
    vit = build('vit')
    adapt_timm_vit(vit, rcp)
    with pytest.raises(TypeError, match='already adapted'):
        adapt_timm_vit(vit, rcp)
    with pytest.raises(ValueError, match='no adapter'):
        get_adapter('auto', nn.Linear(2, 2))


def test_recipe_bits_reach_sites():
    plan = adapt(build('swin'), recipe(name='repq'))
    sites = plan.sites
    assert sites['layers.0.blocks.0.attn.qkv'].input_quantizer.per_channel
    assert not sites['layers.0.blocks.0.attn.proj'].input_quantizer.per_channel
    assert sites['layers.0.blocks.0.attn.av_matmul'].a_objective == 'tensor'
    assert sites['layers.0.blocks.0.attn.qk_matmul'].a_objective == 'tensor'
    assert all(
        q.bits == 4 for n, s in sites.items() if n != 'patch_embed.proj' for _, q in s.quantizers()
    )
    assert math.isclose(sites['layers.0.blocks.0.attn.qk_matmul'].quantizer_a.n_levels, 16)


@pytest.mark.parametrize('arch', ('vit', 'swin'))
def test_qk_objective_reaches_query_quantizers(arch):
    plan = adapt(build(arch), QuantRecipe.from_cfg(dict(recipe='repq', qk_objective='output')))
    qk = [s for n, s in plan.sites.items() if n.endswith('qk_matmul')]
    assert qk and all(s.a_objective == 'output' for s in qk)
    with pytest.raises(ValueError, match='qk_objective'):
        QuantRecipe.from_cfg(dict(qk_objective='logits'))


def test_act_zero_point_reaches_activation_quantizers_only():
    plan = adapt(build('vit'), QuantRecipe.from_cfg(dict(recipe='repq', act_zero_point='floor')))
    acts = [q for s in plan.sites.values() for n, q in s.quantizers() if n != 'weight_quantizer']
    uniform = [q for q in acts if isinstance(q, UniformQuantizer)]
    assert uniform and all(q.zero_point_rule == 'floor' for q in uniform)
    weights = [s.weight_quantizer for s in plan.sites.values() if hasattr(s, 'weight_quantizer')]
    assert weights and all(q.zero_point_rule == 'round' for q in weights)
    assert QuantRecipe.from_cfg(dict(recipe='repq')).act_zero_point == 'round'
    with pytest.raises(ValueError, match="quant.act_zero_point='ceil'"):
        QuantRecipe.from_cfg(dict(act_zero_point='ceil'))


@pytest.mark.parametrize('post_softmax', ('tan', 'tan_symmetric'))
def test_tanq_search_reaches_post_softmax_quantizers(post_softmax):
    grid = dict(centres=[0.25, 0.75], alpha_fractions=[0, 0.5, 0.9], refine_steps=3)
    rcp = QuantRecipe.from_cfg(
        dict(recipe='tanq_only', post_softmax=post_softmax, tanq_search=grid)
    )
    assert rcp.tanq_search == dict(
        centres=(0.25, 0.75), alpha_fractions=(0.0, 0.5, 0.9), refine_steps=3
    )
    assert rcp.to_dict()['tanq_search'] == rcp.tanq_search  # recorded with the results
    plan = adapt(build('vit'), rcp)
    tanqs = [q for q in all_quantizers(plan) if isinstance(q, TanQuantizer)]
    assert len(tanqs) == len(plan.post_softmax_sites) > 0
    for q in tanqs:
        assert q.centres == ((0.5,) if post_softmax == 'tan_symmetric' else (0.25, 0.75))
        assert q.alpha_fractions == (0.0, 0.5, 0.9) and q.refine_steps == 3
    # calibration searches that grid only: one point and no refinement leave no choice
    one = dict(centres=[0.3], alpha_fractions=[0.5], refine_steps=0)
    model = build('vit')
    plan = adapt(model, recipe('tanq_only', tanq_search=one))
    calibrate(model, plan, 'vit', n_batches=1)
    tanqs = [q for q in all_quantizers(plan) if isinstance(q, TanQuantizer)]
    assert tanqs and all(float(q.centre) == pytest.approx(0.3) for q in tanqs)
    assert all(float(q.alpha) == pytest.approx(0.5 * alpha_bound(0.3)) for q in tanqs)
    assert QuantRecipe.from_cfg(dict(recipe='dopq')).tanq_search == {}


@pytest.mark.parametrize(
    'value, match',
    [
        (dict(centre=[0.5]), r"unknown keys \['centre'\]"),
        (dict(centres=[0.5, 1.2]), r'quant.tanq_search: centres=\(0.5, 1.2\) must lie in \(0, 1\)'),
        (dict(alpha_fractions=[]), r'quant.tanq_search.alpha_fractions=\[\] must be a non-empty'),
        (dict(refine_steps=-1), r'quant.tanq_search.refine_steps=-1 must be an integer'),
        (dict(refine_steps=2.5), r'quant.tanq_search.refine_steps=2.5 must be an integer'),
        ([0.5], r'quant.tanq_search=\[0.5\] must be a dict'),
    ],
)
def test_tanq_search_rejects_bad_values(value, match):
    with pytest.raises(ValueError, match=match):
        QuantRecipe.from_cfg(dict(recipe='dopq', tanq_search=value))


@pytest.mark.parametrize('arch', ('vit', 'swin'))
def test_rejected_model_is_left_untouched(arch):
    model = build(arch)
    last = model.blocks[-1] if arch == 'vit' else model.layers[-1].blocks[-1]
    last.mlp = nn.Sequential(nn.Linear(4, 4))  # not a timm Mlp
    before = copy.deepcopy(model.state_dict())
    bad = 'blocks.1.mlp' if arch == 'vit' else 'layers.1.blocks.1.mlp'
    with pytest.raises(TypeError, match=bad.replace('.', r'\.')):
        adapt(model, recipe())
    assert set(model.state_dict()) == set(before)
    assert not any(isinstance(m, (QuantLinear, QuantConv2d, QuantMatMul)) for m in model.modules())
    first = model.blocks[0] if arch == 'vit' else model.layers[0].blocks[0]
    assert type(first.attn).__name__ in ('Attention', 'WindowAttention')


def test_swin_dynamic_img_size_padding():
    """``strict_img_size=False``: masks built per input (``dynamic_mask``), any size pads."""
    torch.manual_seed(0)
    model = SwinTransformer(
        img_size=64,
        patch_size=4,
        window_size=SWIN_WINDOW,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
        num_classes=10,
        strict_img_size=False,
    )
    model = randomize_norms(model).eval()
    ref, unfused = copy.deepcopy(model), with_fused(model, False)
    plan = adapt(model, recipe('repq'))
    x = torch.randn(2, 3, 52, 44, generator=torch.Generator().manual_seed(5))  # 13x11 tokens
    with torch.no_grad():
        assert torch.equal(model(x), unfused(x))
    plan.start_calibration(model)
    with torch.no_grad():
        model(x)
    plan.calibrate_sites()
    plan.reparameterize()
    plan.recalibrate(model)
    for q in all_quantizers(plan):
        q.enabled = False
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-4
        assert rel_err(first_attn_branch(model, x), first_attn_branch(ref, x)) < 1e-5


# -- sequential calibration (RepQ-ViT's order) ------------------------------------------
def site_order(model, plan, x) -> list:
    """Names of the sites in the order a float forward pass first calls them."""
    order, handles = [], []
    for name, layer in plan.sites.items():
        handles.append(
            layer.register_forward_pre_hook(
                lambda mod, args, n=name: order.append(n) if n not in order else None
            )
        )
    set_quant_mode(model, 'float')
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return order


def qparams(plan) -> dict:
    return {
        f'{name}.{k}': v.clone()
        for name, layer in plan.sites.items()
        for k, v in layer.state_dict().items()
        if 'quantizer' in k or k.endswith(('delta', 'alpha', 'centre'))
    }


@pytest.mark.parametrize('arch', ['vit', 'swin'])
@pytest.mark.parametrize('name', ['repq', 'dopq'])
def test_sequential_pass_calibrates_each_site_on_quantized_inputs(arch, name):
    """One pass in calib_seq mode == calibrating site by site, each on the output of the
    already-quantized sites before it (the definition of RepQ-ViT's lazy initialisation)."""
    x = inputs(arch, n=4, seed=7)
    rcp = recipe(name, max_samples=1 << 22)  # no subsampling: both ways see the same rows
    seq_model = build(arch)
    seq_plan = adapt(seq_model, rcp)
    seq_plan.start_calibration(seq_model, sequential=True)
    with torch.no_grad():
        seq_model(x)
    seq_plan.calibrate_sites()
    assert all(layer.quant_mode == 'quant' for layer in seq_plan.sites.values())
    assert seq_plan.is_calibrated

    ref_model = build(arch)
    ref_plan = adapt(ref_model, recipe(name, max_samples=1 << 22))
    order = site_order(ref_model, ref_plan, x)
    assert sorted(order) == sorted(ref_plan.sites)
    with torch.no_grad():
        for i, site in enumerate(order):
            for j, other in enumerate(order):
                mode = 'quant' if j < i else 'calib' if j == i else 'float'
                ref_plan.sites[other].set_quant_mode(mode)
            ref_model(x)
            ref_plan.sites[site].calibrate()
    seq, ref = qparams(seq_plan), qparams(ref_plan)
    assert seq.keys() == ref.keys() and seq
    for key in seq:
        assert torch.equal(seq[key], ref[key]), key

    # and it is not what one float observe pass gives
    float_model = build(arch)
    float_plan = adapt(float_model, recipe(name, max_samples=1 << 22))
    float_plan.start_calibration(float_model)
    with torch.no_grad():
        float_model(x)
    float_plan.calibrate_sites()
    flt = qparams(float_plan)
    changed = [k for k in seq if 'weight_quantizer' not in k and not torch.equal(seq[k], flt[k])]
    assert changed, 'sequential calibration changed no activation quantizer'
    first = order[0]  # the first site sees the model input either way
    assert all(torch.equal(seq[k], flt[k]) for k in seq if k.startswith(f'{first}.'))


def test_sequential_then_fold_and_quantized_forward():
    model = build('vit')
    plan = adapt(model, recipe('dopq'))
    x = inputs('vit', n=4, seed=3)
    plan.start_calibration(model, sequential=True)
    with torch.no_grad():
        out_cal = model(x)  # the pass itself returns the quantized (pre-fold) output
    plan.calibrate_sites()
    plan.reparameterize()
    plan.recalibrate(model)
    with torch.no_grad():
        out = model(x)
        set_quant_mode(model, 'float')
        ref = model(x)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert rel_err(out_cal, ref) < 1.0 and rel_err(out, ref) < 1.0


def test_sequential_pass_reports_unreached_sites():
    model = build('vit')
    plan = adapt(model, recipe('repq'))
    plan.start_calibration(model, sequential=True)
    with torch.no_grad():
        model(inputs('vit', n=2))
    missed = next(iter(plan.sites))
    plan.sites[missed].set_quant_mode('calib_seq')  # as if the pass had not reached it
    with pytest.raises(ValueError, match=f'1 quantization sites saw no calibration data.*{missed}'):
        plan.calibrate_sites()


def test_shared_site_calibrates_at_its_first_call_only():
    """A layer applied several times per pass (e.g. a head shared over pyramid levels)
    calibrates on its first call and quantizes the later ones with those parameters."""
    lin = nn.Linear(8, 8)
    rcp = recipe('repq')
    q = QuantLinear(lin, rcp.weight(), rcp.act())
    q.set_quant_mode('calib_seq')
    gen = torch.Generator().manual_seed(0)
    small, large = torch.rand(16, 8, generator=gen), 10 * torch.rand(16, 8, generator=gen)
    with torch.no_grad():
        y1 = q(small)
        assert q.quant_mode == 'quant' and q.is_calibrated
        scale = q.input_quantizer.scale.clone()
        y2 = q(large)
        unclipped = F.linear(large, lin.weight, lin.bias)
    assert torch.equal(q.input_quantizer.scale, scale)
    assert float(y2.max()) < float(unclipped.max())  # clipped to the first call's range
    ref = QuantLinear(nn.Linear(8, 8), rcp.weight(), rcp.act())
    ref.load_state_dict(q.state_dict())
    ref.set_quant_mode('quant')
    with torch.no_grad():
        assert torch.equal(y1, ref(small))


def test_calib_mode_option():
    assert QuantRecipe.from_cfg(dict(recipe='repq')).calib_mode == 'float'
    rcp = QuantRecipe.from_cfg(dict(recipe='dopq', calib_mode='sequential'))
    assert rcp.to_dict()['calib_mode'] == 'sequential'
    with pytest.raises(ValueError, match="quant.calib_mode='lazy'"):
        QuantRecipe.from_cfg(dict(calib_mode='lazy'))
