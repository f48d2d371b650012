"""The shipped configs: complete configs are consistent with their names and with the float
configs they quantize, the shared bases combine, and their values match their sources."""

import glob
import math
import os.path as osp

import pytest
from mmengine.config import Config

from mmdopq.recipe import QuantRecipe

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ALL = sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))
COMPLETE = [p for p in ALL if '_base_' not in p]
#: The quant bases users pick from: recipe x bits. Ablations (tanq_only, mosf_only, another
#: fold rule) are ``--recipe`` / ``--cfg-options model.quant.reparam_rule=...`` on top of them.
QUANT_BASE_RECIPES = ('dopq', 'repq')
QUANT_BITS = (3, 4, 6, 8)
QUANT_BASES = [
    osp.join(REPO, 'configs', '_base_', 'quant', f'{recipe}_w{bits}a{bits}.py')
    for recipe in QUANT_BASE_RECIPES
    for bits in QUANT_BITS
]
CALIB_BASES = sorted(glob.glob(osp.join(REPO, 'configs', '_base_', 'calib', '*.py')))
#: Every quant base spells out all of these keys (nothing left to the recipe defaults).
QUANT_BASE_KEYS = {
    'recipe',
    'wbits',
    'abits',
    'scope',
    'post_softmax',
    'softmax_objective',
    'reparam_rule',
    'weight_method',
    'act_method',
    'patch_embed_abits',
    'seed',
}


def rel(path):
    return osp.relpath(path, REPO)


def check_float_cascade_config(cfg, name):
    """configs/float: Swin-Transformer-Object-Detection's Cascade Mask R-CNN 3x, mmdet 3.x."""
    model = cfg.model
    assert model.type == 'CascadeRCNN'
    bb = model.backbone
    depths = {'swin-t': [2, 2, 6, 2], 'swin-s': [2, 2, 18, 2]}[name.split('_')[1][:6]]
    assert bb.type == 'SwinTransformer' and list(bb.depths) == depths
    assert bb.embed_dims == 96 and list(bb.num_heads) == [3, 6, 12, 24]
    assert bb.window_size == 7 and bb.drop_path_rate == 0.2 and bb.convert_weights
    rh = model.roi_head
    assert rh.type == 'CascadeRoIHead' and rh.num_stages == 3
    assert list(rh.stage_loss_weights) == [1, 0.5, 0.25]
    assert len(rh.bbox_head) == 3
    for head in rh.bbox_head:
        assert head.type == 'Shared4Conv1FCBBoxHead' and head.conv_out_channels == 256
        assert head.fc_out_channels == 1024 and head.norm_cfg.type == 'SyncBN'
        assert head.reg_decoded_bbox and not head.reg_class_agnostic
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
    assert [list(h.bbox_coder.target_stds) for h in rh.bbox_head] == [
        [0.1, 0.1, 0.2, 0.2],
        [0.05, 0.05, 0.1, 0.1],
        [0.033, 0.033, 0.067, 0.067],
    ]
    assert rh.mask_head.type == 'FCNMaskHead' and rh.mask_head.num_convs == 4
    ious = [(r.assigner.pos_iou_thr, r.assigner.neg_iou_thr) for r in model.train_cfg.rcnn]
    assert ious == [(0.5, 0.5), (0.6, 0.6), (0.7, 0.7)]
    assert cfg.train_cfg.max_epochs == 36  # 3x
    assert [m.milestones for m in cfg.param_scheduler if m.type == 'MultiStepLR'] == [[27, 33]]
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 1e-4
    # multi-scale 480-800 training with the DETR-style crop branch (mmdet's ms-crop pipeline)
    choice = next(t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomChoice')
    crop_branch = next(b for b in choice.transforms if len(b) == 3)
    assert [t.type for t in crop_branch] == [
        'RandomChoiceResize',
        'RandomCrop',
        'RandomChoiceResize',
    ]
    assert choice.transforms[0][0].scales[0] == (480, 1333)
    assert choice.transforms[0][0].scales[-1] == (800, 1333)


@pytest.mark.parametrize('path', COMPLETE, ids=rel)
def test_complete_config(path):
    cfg = Config.fromfile(path)
    name = osp.basename(path)
    if '/float/' in path:
        check_float_cascade_config(cfg, name)
        return
    if '/reference/' in path and not name.startswith('dopq_'):
        # float training configs of the reference models (their stages: tests below)
        if cfg.model.type != 'TimmClassifier':  # val subsets need the subset-aware COCO metric
            assert cfg.val_evaluator.type == cfg.test_evaluator.type == 'mmdopq.SubsetCocoMetric'
        return
    assert cfg.model.type == 'mmdopq.QuantizedModel'
    recipe = QuantRecipe.from_cfg(cfg.model.quant)
    # a recipe name's '_' is '-' in a file name (mmdet's rule: '_' separates the parts)
    assert name.startswith(f'{recipe.recipe.replace("_", "-")}_{recipe.bits_tag}_'), name
    hooks = [h for h in cfg.custom_hooks if h.type == 'mmdopq.QuantCalibrationHook']
    assert len(hooks) == 1
    assert cfg.test_dataloader.dataset.get('pipeline'), 'test pipeline needed (calibration too)'
    if '/reference/' in path:  # quantized reference models: calibrate on the train split
        float_cfg = Config.fromfile(osp.join(osp.dirname(path), name.split('_', 2)[2]))
        assert cfg.model.architecture.to_dict() == float_cfg.model.to_dict()
        assert hooks[0].num_images == 32 and hooks[0].selection == 'random'
        calib = hooks[0].dataloader.dataset
        assert 'train' in (calib.get('ann_file') or calib.get('data_prefix'))
        assert cfg.test_dataloader.dataset.to_dict() == float_cfg.test_dataloader.dataset.to_dict()
        assert cfg.get('load_from') is None
    elif '/dopq/' in path:
        assert cfg.model.architecture.backbone.type == 'SwinTransformer'
        detector = 'CascadeRCNN' if '_cascade-mask-rcnn_' in name else 'MaskRCNN'
        assert cfg.model.architecture.type == detector
        if detector == 'CascadeRCNN':  # the float config it quantizes, unchanged
            float_name = name.split('_', 2)[2]
            float_cfg = Config.fromfile(osp.join(REPO, 'configs', 'float', float_name))
            assert cfg.model.architecture.to_dict() == float_cfg.model.to_dict()
        if recipe.recipe == 'repq_official':  # the official protocol: first val2017 image
            assert hooks[0].num_images == 1 and hooks[0].selection == 'first'
            assert 'val2017' in hooks[0].dataloader.dataset.ann_file
        else:
            assert hooks[0].num_images == 32 and hooks[0].selection == 'random'
            assert 'train2017' in hooks[0].dataloader.dataset.ann_file
    else:
        assert cfg.model.scope == 'mmpretrain'
        assert cfg.test_evaluator.topk == (1, 5)


@pytest.mark.parametrize('path', QUANT_BASES, ids=rel)
def test_quant_base_is_its_recipe_at_its_bits(path):
    """``<recipe>_w<b>a<b>.py`` resolves to exactly the named recipe at b bits with mmdopq's
    defaults (its components, scope, calibration methods, seed), every key written out so that
    a user sees all of them."""
    quant = Config.fromfile(path).quant
    assert set(quant) == QUANT_BASE_KEYS
    recipe_name, bits = osp.basename(path)[: -len('.py')].split('_w')
    bits = int(bits.split('a')[0])
    assert QuantRecipe.from_cfg(quant) == QuantRecipe.from_cfg(
        dict(recipe=recipe_name, wbits=bits, abits=bits)
    )


@pytest.mark.parametrize('calib', CALIB_BASES, ids=rel)
def test_quant_and_calib_bases_combine(calib, tmp_path):
    """Each shared base owns its own top-level keys (mmengine refuses a key that two bases of
    one config both define), so any quant base goes with any calibration base."""
    calib_cfg = Config.fromfile(calib)
    for quant in QUANT_BASES:
        child = tmp_path / 'child.py'
        child.write_text(f'_base_ = [{quant!r}, {calib!r}]\n')
        cfg = Config.fromfile(str(child))
        assert cfg.quant == Config.fromfile(quant).quant
        assert cfg.custom_hooks == calib_cfg.custom_hooks
    (hook,) = calib_cfg.custom_hooks
    assert hook.type == 'mmdopq.QuantCalibrationHook'


def test_scope_switch(tmp_path):
    """The backbone-only scope is a one-line child of a complete config.

    mmengine refuses two bases that own the same top-level key, so a fragment with
    ``quant = dict(scope='backbone')`` cannot be listed next to a quant base: override
    ``model.quant.scope`` in a child config (or ``--cfg-options model.quant.scope=backbone``).
    """
    parent = osp.join(
        REPO,
        'configs',
        'dopq',
        'dopq_w4a4_cascade-mask-rcnn_swin-t-p4-w7_fpn_4conv1fc-giou_ms-crop-3x_coco.py',
    )
    child = tmp_path / 'dopq_w4a4_backbone-only.py'
    child.write_text(f"_base_ = ['{parent}']\nmodel = dict(quant=dict(scope='backbone'))\n")
    cfg, base = Config.fromfile(str(child)), Config.fromfile(parent)
    assert cfg.model.quant == dict(base.model.quant, scope='backbone')
    assert QuantRecipe.from_cfg(cfg.model.quant).scope == 'backbone'
    assert cfg.model.architecture == base.model.architecture
    # the sibling-base form is refused by mmengine (a duplicate key among bases)
    fragment = tmp_path / 'scope_backbone.py'
    fragment.write_text("quant = dict(scope='backbone')\n")
    sibling = tmp_path / 'sibling.py'
    sibling.write_text(
        f"_base_ = ['{osp.join(REPO, 'configs', '_base_', 'quant', 'dopq_w4a4.py')}', "
        f"'{fragment}']\n"
    )
    with pytest.raises(KeyError, match='Duplicate key'):
        Config.fromfile(str(sibling))


def test_repq_protocol_calib_config():
    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/calib/repq_protocol_val1.py'))
    hook = cfg.custom_hooks[0]
    assert hook.num_images == 1 and hook.selection == 'first'
    assert 'val2017' in hook.dataloader.dataset.ann_file


@pytest.mark.parametrize(
    'path',
    sorted(glob.glob(osp.join(REPO, 'configs', 'imagenet', '_base_', 'models', '*.py'))),
    ids=rel,
)
def test_imagenet_preprocessing_is_timms(path):
    """Resize / crop / mean / std of every ImageNet model config equal timm's eval config."""
    import timm

    cfg = Config.fromfile(path)
    pcfg = timm.create_model(cfg.architecture.model_name, pretrained=False).pretrained_cfg
    size = pcfg['input_size'][-1]
    resize = next(t for t in cfg.test_pipeline if t.type == 'ResizeEdge')
    crop = next(t for t in cfg.test_pipeline if t.type == 'CenterCrop')
    assert resize.scale == math.floor(size / pcfg['crop_pct'])
    assert resize.interpolation == pcfg['interpolation'] and crop.crop_size == size
    dp = cfg.architecture.data_preprocessor
    assert dp.mean == pytest.approx([255 * m for m in pcfg['mean']], abs=1e-2)
    assert dp.std == pytest.approx([255 * s for s in pcfg['std']], abs=1e-2)


def test_full_size_models_build():
    """Detection (Mask, Cascade) and ImageNet configs build at full size, every site declared."""
    from mmengine.registry import MODELS, DefaultScope
    from torch import nn

    cascade = 'cascade-mask-rcnn_swin-t-p4-w7_fpn_4conv1fc-giou_ms-crop-3x_coco'
    for path, scope in (
        ('configs/dopq/dopq_w4a4_mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', 'mmdet'),
        (f'configs/dopq/dopq_w4a4_{cascade}.py', 'mmdet'),  # SyncBN box heads build on CPU
        ('configs/imagenet/dopq_w4a4_deit-small-p16_in1k.py', 'mmpretrain'),
    ):
        cfg = Config.fromfile(osp.join(REPO, path))
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(cfg.model)
        layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
        assert layers == {n for n in model.quant_plan.sites if n in layers}
        assert len(model.quant_plan.post_softmax_sites) == 12  # Swin-T 2+2+6+2, DeiT-S 12


def test_reference_mask_rcnn_training_stages_chain():
    """Each training stage of the reference Mask R-CNN trains the same model on the same data,
    starting from the weights the previous stage leaves (the model card's commands)."""
    ref = osp.join(REPO, 'configs', 'reference', 'mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes')
    stages = [Config.fromfile(ref + suffix) for suffix in ('.py', '_stage2.py', '_stage3.py')]
    base = stages[0]
    for cfg in stages[1:]:
        assert cfg.model.to_dict() == base.model.to_dict()
        assert cfg.train_dataloader.to_dict() == base.train_dataloader.to_dict()
        assert cfg.test_dataloader.to_dict() == base.test_dataloader.to_dict()
        assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_iters
    assert base.get('load_from') is None  # stage 1 starts from scratch
    assert stages[1].load_from == 'work_dirs/ref_mask_rcnn/stage1_fp16.pth'
    assert (
        stages[2].load_from
        == f'work_dirs/ref_mask_rcnn_s2/iter_{stages[1].train_cfg.max_iters}.pth'
    )
    assert len({cfg.randomness.seed for cfg in stages}) == len(stages)


def test_reference_vit_stage2_trains_the_same_model_from_stage1():
    ref = osp.join(REPO, 'configs', 'reference', 'vit-ref-p8_synthetic-cls')
    base, stage2 = Config.fromfile(ref + '.py'), Config.fromfile(ref + '_stage2.py')
    assert stage2.model.to_dict() == base.model.to_dict()
    assert stage2.train_dataloader.to_dict() == base.train_dataloader.to_dict()
    assert stage2.load_from == 'work_dirs/ref_vit/stage1_fp16.pth' and base.get('load_from') is None
    assert stage2.param_scheduler[-1].end == stage2.train_cfg.max_epochs
    assert stage2.randomness.seed != base.randomness.seed


def test_reference_swin_classifier_stages_and_data():
    """Stages 1-2 train on the easy preset, stage 3 (the reference config) fine-tunes stage 2's
    published weights on the faint preset; the quantized config evaluates and calibrates on the
    faint data (the test split's own generator, its train split)."""
    ref = osp.join(REPO, 'configs', 'reference', 'swin-ref-p4-w7_synthetic-cls')
    stages = [Config.fromfile(ref + s) for s in ('_stage1.py', '_stage2.py', '.py')]
    quant = Config.fromfile(
        osp.join(REPO, 'configs', 'reference', 'dopq_w4a4_swin-ref-p4-w7_synthetic-cls.py')
    )
    for cfg in stages:
        assert cfg.model.to_dict() == stages[-1].model.to_dict()
        assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_epochs
        for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
            assert loader.dataset.data_root == cfg.synthetic_data.out_dir
    assert [cfg.synthetic_data.difficulty for cfg in stages] == ['easy', 'easy', 'faint']
    assert stages[0].load_from == 'work_dirs/ref_swin_ft/init.pth'
    assert (
        stages[1].load_from == f'work_dirs/ref_swin_ft/epoch_{stages[0].train_cfg.max_epochs}.pth'
    )
    assert stages[2].load_from == 'work_dirs/ref_swin_ft_s2/stage2_fp16.pth'
    assert len({cfg.randomness.seed for cfg in stages}) == 3
    root = stages[2].synthetic_data.out_dir
    assert quant.synthetic_data.to_dict() == stages[2].synthetic_data.to_dict()
    assert quant.test_dataloader.dataset.data_root == root
    calib = quant.custom_hooks[0]
    assert calib.type == 'mmdopq.QuantCalibrationHook' and calib.num_images == 32
    assert calib.dataloader.dataset.data_root == root
    assert calib.dataloader.dataset.data_prefix == 'train'


def test_reference_cascade_stages_and_data():
    """Stage 1 warm-starts from the reference Mask R-CNN on the medium preset, stage 2 (the
    reference config) fine-tunes stage 1's published weights on the faint preset; the quantized
    config evaluates and calibrates on the faint data (its train split)."""
    ref = osp.join(
        REPO, 'configs', 'reference', 'cascade-mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes'
    )
    stages = [Config.fromfile(ref + s) for s in ('_stage1.py', '.py')]
    quant = Config.fromfile(
        osp.join(
            REPO,
            'configs',
            'reference',
            'dopq_w4a4_cascade-mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.py',
        )
    )
    for cfg in stages:
        assert cfg.model.to_dict() == stages[-1].model.to_dict()
        assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_iters
        root = cfg.synthetic_data.out_dir
        for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
            assert loader.dataset.data_root == root
        assert cfg.test_evaluator.ann_file == root + 'annotations/instances_val.json'
    assert [cfg.synthetic_data.difficulty for cfg in stages] == ['medium', 'faint']
    assert stages[0].load_from == (
        'checkpoints/reference/mask-rcnn_swin-ref-p4-w7_fpn_synthetic-shapes.pth'
    )
    assert stages[1].load_from == 'work_dirs/ref_cascade/stage1_fp16.pth'
    assert stages[0].randomness.seed != stages[1].randomness.seed
    root = stages[1].synthetic_data.out_dir
    assert quant.synthetic_data.to_dict() == stages[1].synthetic_data.to_dict()
    assert quant.test_dataloader.dataset.data_root == root
    assert quant.test_evaluator.ann_file == root + 'annotations/instances_val.json'
    calib = quant.custom_hooks[0]
    assert calib.type == 'mmdopq.QuantCalibrationHook' and calib.num_images == 32
    assert calib.dataloader.dataset.data_root == root
    assert calib.dataloader.dataset.ann_file == 'annotations/instances_train.json'
