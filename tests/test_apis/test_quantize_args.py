"""tools/quantize.py --recipe / --bits / --seed and the float recipe (no model runs here)."""

import os.path as osp
import sys

import pytest

from mmdopq.adapters import QuantRecipe
from mmdopq.apis import ensure_data
from mmdopq.apis.reference import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
import quantize  # noqa: E402

sys.path.pop(0)
CONFIG = osp.join(
    REPO_ROOT, 'configs', 'reference', 'dopq_w4a4_mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py'
)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """A few images of the reference data (load_config checks that the data exists)."""
    root = tmp_path_factory.mktemp('ref_data')
    ensure_data(CONFIG, root=str(root), num_train=2, num_val=1)
    return root


@pytest.fixture(autouse=True)
def _in_data_dir(data_dir, monkeypatch):
    monkeypatch.chdir(data_dir)  # the configs' data paths are relative


def _cfg(*argv):
    args = quantize.parse_args([CONFIG, 'ckpt.pth', *argv])
    cfg, recipe = quantize.load_config(args)
    return cfg, recipe


def test_parse_bits():
    assert quantize.parse_bits('w6a6') == (6, 6)
    assert quantize.parse_bits('W4A8') == (4, 8)
    with pytest.raises(ValueError, match="--bits must look like w4a4.*'4bit'"):
        quantize.parse_bits('4bit')


def test_recipe_replaces_the_components_of_the_config():
    cfg, recipe = _cfg()
    assert (recipe.recipe, recipe.post_softmax, recipe.reparam_rule) == ('dopq', 'tan', 'mad')
    cfg, recipe = _cfg('--recipe', 'repq', '--bits', 'w6a6', '--seed', '3')
    assert (recipe.recipe, recipe.post_softmax, recipe.softmax_objective) == (
        'repq',
        'log_sqrt2',
        'tensor',
    )
    assert (recipe.reparam_rule, recipe.wbits, recipe.abits, recipe.seed) == ('mean', 6, 6, 3)
    assert cfg.custom_hooks[0].seed == 3
    # --cfg-options still win over --recipe
    cfg, recipe = _cfg('--recipe', 'dopq', '--cfg-options', 'model.quant.reparam_rule=median')
    assert (recipe.post_softmax, recipe.reparam_rule) == ('tan', 'median')
    with pytest.raises(ValueError, match='--bits must look like'):
        _cfg('--bits', 'eight')
    with pytest.raises(SystemExit):
        _cfg('--recipe', 'nope')


def test_float_recipe_builds_the_stock_model():
    from mmengine.registry import MODELS, init_default_scope

    cfg, recipe = _cfg('--recipe', 'float')
    assert recipe.is_float and recipe.bits_tag == 'float'
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert not model.quant_plan.sites and not model.quant_state_keys
    assert type(model).__name__ == 'QuantizedMaskRCNN'
    stock = type(model.backbone.stages[0].blocks[0].attn.w_msa).__name__
    assert stock == 'WindowMSA'  # not swapped for the quantized attention


def test_float_recipe_keeps_bits_of_quantized_recipes():
    assert QuantRecipe.from_cfg(dict(recipe='dopq', wbits=6, abits=6)).bits_tag == 'w6a6'


def test_use_recipe_drops_the_config_components_and_keeps_the_rest():
    from mmdopq.adapters import RECIPES, use_recipe

    quant = dict(recipe='dopq', post_softmax='uniform', reparam_rule='median', wbits=6, abits=6)
    use_recipe(quant, 'repq')
    assert quant == dict(recipe='repq', wbits=6, abits=6)
    recipe = QuantRecipe.from_cfg(quant)
    assert recipe.post_softmax == RECIPES['repq']['post_softmax']
    assert recipe.reparam_rule == RECIPES['repq']['reparam_rule']
    with pytest.raises(ValueError, match="unknown recipe 'repq-vit'"):
        use_recipe(quant, 'repq-vit')
    assert quant['recipe'] == 'repq'  # untouched by the rejected name


def test_every_benchmark_variant_resolves_through_the_tool():
    from mmdopq.apis import VARIANTS, get_reference_model
    from mmdopq.apis.recipe_sweep import RunSpec

    model = get_reference_model('mask-rcnn_swin-ref')
    resolved = {}
    for name in VARIANTS:
        argv = RunSpec(model, name, 'w4a4', 0, 'wd').command()[2:]  # after python, quantize.py
        cfg, recipe = quantize.load_config(quantize.parse_args(argv))
        resolved[name] = (recipe, cfg.custom_hooks[0].num_images)
    assert resolved['float'][0].bits_tag == 'float' and resolved['repq'][0].bits_tag == 'w4a4'
    fine = resolved['tanq_only-fine_grid'][0].tanq_search
    assert len(fine['centres']) == 19 and (fine['centres'][0], fine['centres'][-1]) == (0.05, 0.95)
    assert len(fine['alpha_fractions']) == 21 and fine['refine_steps'] == 9
    for name in ('tanq_only-tensor_obj', 'tanq_only-symmetric', 'tanq_only-fine_grid'):
        recipe = resolved[name][0]
        assert recipe.recipe == 'tanq_only' and recipe.reparam_rule == 'mean'
    assert resolved['tanq_only-tensor_obj'][0].softmax_objective == 'tensor'
    assert resolved['tanq_only-symmetric'][0].post_softmax == 'tan_symmetric'
    assert resolved['tanq_only'][0].tanq_search == {}
    assert resolved['repq-calib128'][1] == resolved['dopq-calib128'][1] == 128
    assert resolved['repq-calib128'][0].post_softmax == 'log_sqrt2'
    assert resolved['dopq'][1] == 32
