"""tools/quantize.py end to end on tiny COCO data with a small Swin Mask R-CNN."""

import json
import os
import os.path as osp
import pickle

import pytest
import torch

from mmdopq.apis import quantize_cli as quantize

METRIC_KEYS = ('coco/bbox_mAP', 'coco/segm_mAP')
SEQUENTIAL = 'model.quant.calib_mode=sequential'


def run(cfg, ckpt, work_dir, *extra):
    return quantize.run([cfg, ckpt, '--work-dir', str(work_dir), *extra])


@pytest.fixture(scope='module')
def dopq_run(tiny_cfg, float_ckpt, tmp_path_factory):
    work = tmp_path_factory.mktemp('dopq_w4a4')
    res = run(tiny_cfg('dopq', 4), float_ckpt, work, '--out', str(work / 'preds.pkl'))
    return work, res


@pytest.mark.parametrize('recipe', ['repq'])
def test_end_to_end_other_recipe(recipe, tiny_cfg, float_ckpt, tmp_path):
    res = run(tiny_cfg(recipe, 4), float_ckpt, tmp_path)
    for k in METRIC_KEYS:
        assert k in res['metrics']
    saved = json.load(open(tmp_path / 'results.json'))
    assert saved['recipe'] == recipe and saved['quant']['reparam_rule'] == 'mean'
    assert saved['quant']['post_softmax'] == 'log_sqrt2'


def test_end_to_end_dopq(dopq_run):
    work, res = dopq_run
    saved = json.load(open(work / 'results.json'))
    for k in METRIC_KEYS:
        assert k in saved['metrics'] and 0.0 <= saved['metrics'][k] <= 1.0
    assert saved['recipe'] == 'dopq' and saved['bits'] == 'w4a4' and saved['scope'] == 'whole'
    cal = saved['calibration']
    assert cal['num_images'] == 2 and len(cal['calib_ids']) == 2 and cal['seed'] == 0
    assert not cal['from_checkpoint']
    assert cal['plan']['norm_pairs'] == 2 * 8 + 3  # norm1/norm2 per block, 3 patch mergings
    assert saved['calib_s'] > 0 and saved['eval_s'] > 0
    for pkg in ('torch', 'mmcv', 'mmdet', 'mmengine', 'mmdopq'):
        assert pkg in saved['versions']
    assert osp.isfile(work / 'quantized.pth') and osp.isfile(work / 'calib_ids.json')
    assert not [f for f in os.listdir(work) if f.endswith('.tmp')]
    ids = json.load(open(work / 'calib_ids.json'))['calib_ids']
    assert ids == cal['calib_ids']


def test_sequential_calibration_detector(dopq_run, tiny_cfg, float_ckpt, tmp_path):
    """RepQ-ViT's order on a whole detector: the calibration images form one batch, heads
    shared over the pyramid levels (RPN) calibrate at their first call, every site is set."""
    res = run(tiny_cfg('dopq', 4), float_ckpt, tmp_path, '--cfg-options', SEQUENTIAL)
    for k in METRIC_KEYS:
        assert 0.0 <= res['metrics'][k] <= 1.0
    cal = res['calibration']
    assert res['quant']['calib_mode'] == cal['calib_mode'] == 'sequential'
    float_cal = dopq_run[1]['calibration']
    assert cal['calib_ids'] == float_cal['calib_ids']
    assert cal['qparams_digest'] != float_cal['qparams_digest']
    assert cal['plan']['sites'] == float_cal['plan']['sites']


def test_reload_quantized_reproduces(dopq_run, tiny_cfg, tmp_path):
    work, res = dopq_run
    res2 = run(
        tiny_cfg('dopq', 4),
        str(work / 'quantized.pth'),
        tmp_path,
        '--out',
        str(tmp_path / 'preds.pkl'),
    )
    assert res2['calibration']['from_checkpoint'] and res2['input_checkpoint_quantized']
    assert res2['metrics'] == res['metrics']
    a = pickle.load(open(work / 'preds.pkl', 'rb'))
    b = pickle.load(open(tmp_path / 'preds.pkl', 'rb'))
    assert len(a) == len(b) > 0
    for pa, pb in zip(a, b):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(
                torch.as_tensor(pa['pred_instances'][key]),
                torch.as_tensor(pb['pred_instances'][key]),
            )


def test_quantized_checkpoint_refused_by_other_recipe(dopq_run, tiny_cfg, tmp_path):
    work, _ = dopq_run
    with pytest.raises(RuntimeError, match='another recipe'):
        run(tiny_cfg('repq', 4), str(work / 'quantized.pth'), tmp_path)
    assert not osp.exists(tmp_path / 'results.json')


# -- bad input: a clear error and nothing written -------------------------------------


def assert_nothing_written(work):
    for name in ('results.json', 'quantized.pth', 'calib_ids.json'):
        assert not osp.exists(osp.join(work, name)), name


def test_missing_checkpoint(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        run(tiny_cfg(), str(tmp_path / 'nope.pth'), tmp_path / 'w')
    assert_nothing_written(tmp_path / 'w')


def test_corrupt_checkpoint(tiny_cfg, tmp_path):
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(b'\x80\x04 this is not a checkpoint' * 10)
    with pytest.raises(RuntimeError, match='corrupt.pth'):
        run(tiny_cfg(), str(bad), tmp_path / 'w')
    assert_nothing_written(tmp_path / 'w')


def test_mismatched_checkpoint(tiny_cfg, float_ckpt, tmp_path):
    from mmengine.runner import CheckpointLoader, save_checkpoint

    ckpt = CheckpointLoader.load_checkpoint(float_ckpt, map_location='cpu')
    state = dict(ckpt['state_dict'])
    state.pop('backbone.stages.0.blocks.0.attn.w_msa.qkv.weight')
    state['backbone.extra_thing'] = torch.zeros(3)
    path = str(tmp_path / 'mismatch.pth')
    save_checkpoint(dict(state_dict=state), path)
    with pytest.raises(RuntimeError, match=r'does not match.*qkv\.weight.*extra_thing'):
        run(tiny_cfg(), path, tmp_path / 'w')
    assert_nothing_written(tmp_path / 'w')


@pytest.mark.parametrize(
    'override,match',
    [
        ('model.quant.wbits=9', 'wbits'),
        ('model.quant.abits=1', 'abits'),
        ('model.quant.recipe=fancy', 'recipe'),
    ],
)
def test_bad_quant_config(override, match, tiny_cfg, float_ckpt, tmp_path):
    with pytest.raises(ValueError, match=match):
        run(tiny_cfg(), float_ckpt, tmp_path / 'w', '--cfg-options', override)
    assert_nothing_written(tmp_path / 'w')


def test_too_few_calibration_images(tiny_cfg, float_ckpt, tmp_path):
    with pytest.raises(ValueError, match='needs 50 images but .* only 6'):
        run(tiny_cfg(num_calib=50), float_ckpt, tmp_path / 'w')
    assert_nothing_written(tmp_path / 'w')


def test_empty_calibration_set(tiny_cfg, float_ckpt, tiny_coco, tmp_path):
    ann = json.load(open(osp.join(tiny_coco['root'], 'annotations/instances_train.json')))
    ann['images'], ann['annotations'] = [], []
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match='calibration dataset .*empty'):
        run(
            tiny_cfg(),
            float_ckpt,
            tmp_path / 'w',
            '--cfg-options',
            f'custom_hooks.0.dataloader.dataset.ann_file={empty}',
        )
    assert_nothing_written(tmp_path / 'w')


def test_missing_annotation_file(tiny_cfg, float_ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such.json'):
        run(
            tiny_cfg(),
            float_ckpt,
            tmp_path / 'w',
            '--cfg-options',
            f'custom_hooks.0.dataloader.dataset.ann_file={tmp_path}/no_such.json',
        )
    assert_nothing_written(tmp_path / 'w')


def test_unreadable_calibration_image(tiny_cfg, float_ckpt, tiny_coco, tmp_path):
    import shutil

    root = tmp_path / 'data'
    shutil.copytree(tiny_coco['root'], root)
    for f in os.listdir(root / 'train'):
        (root / 'train' / f).write_bytes(b'not a png')
    with pytest.raises(RuntimeError, match=r'calibration image .*train/.*could not be loaded'):
        run(
            tiny_cfg(),
            float_ckpt,
            tmp_path / 'w',
            '--cfg-options',
            f'custom_hooks.0.dataloader.dataset.data_root={root}/',
        )
    assert_nothing_written(tmp_path / 'w')


def test_nan_weights_are_named_from_the_checkpoint(tiny_cfg, float_ckpt, tmp_path):
    """A NaN in the float weights stops every recipe, float included, naming the tensor (not a
    layer downstream where it first shows up, and never a run that reports AP 0)."""
    from mmengine.runner import CheckpointLoader, save_checkpoint

    ckpt = CheckpointLoader.load_checkpoint(float_ckpt, map_location='cpu')
    state = dict(ckpt['state_dict'])
    w = state['backbone.stages.1.blocks.0.ffn.layers.1.weight'].clone()
    w[0, 0] = float('nan')
    state['backbone.stages.1.blocks.0.ffn.layers.1.weight'] = w
    path = str(tmp_path / 'nan.pth')
    save_checkpoint(dict(state_dict=state), path)
    for recipe in ('dopq', 'float'):
        work = tmp_path / recipe
        with pytest.raises(RuntimeError, match=r"NaN/Inf .*'backbone\.stages\.1\.blocks\.0\.ffn"):
            run(tiny_cfg(), path, work, '--recipe', recipe)
        assert_nothing_written(work)
