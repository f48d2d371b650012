"""The quantize tool's --recipe / --bits / --seed and the float recipe (no model runs here)."""

import os.path as osp

import pytest

from benchmarks.reference.data import ensure_data
from benchmarks.reference.models import REPO_ROOT
from mmdopq.apis import quantize_cli as quantize
from mmdopq.recipe import QuantRecipe

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
    from mmdopq.recipe import RECIPES, use_recipe

    quant = dict(recipe='dopq', post_softmax='uniform', reparam_rule='median', wbits=6, abits=6)
    use_recipe(quant, 'repq')
    assert quant == dict(recipe='repq', wbits=6, abits=6)
    recipe = QuantRecipe.from_cfg(quant)
    assert recipe.post_softmax == RECIPES['repq']['post_softmax']
    assert recipe.reparam_rule == RECIPES['repq']['reparam_rule']
    with pytest.raises(ValueError, match="unknown recipe 'repq-vit'"):
        use_recipe(quant, 'repq-vit')
    assert quant['recipe'] == 'repq'  # untouched by the rejected name
