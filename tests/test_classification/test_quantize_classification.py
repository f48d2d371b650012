"""The ImageNet track through tools/quantize.py: tiny timm ViT and Swin on a tiny image folder."""

import glob
import json
import os
import os.path as osp
import pickle
import shutil
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mmdopq.datasets import generate_shapes_classification

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools'))
import quantize  # noqa: E402

TINY = {
    'vit': dict(
        model_name='vit_tiny_patch16_224',
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
    ),
    'swin': dict(
        model_name='swin_tiny_patch4_window7_224',
        img_size=32,
        patch_size=4,
        window_size=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
    ),
}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cls_data'))
    meta = generate_shapes_classification(
        root, num_train_per_class=2, num_val_per_class=2, img_size=40, seed=0
    )
    return dict(root=root, num_classes=len(meta['classes']))


def tiny_config(arch: str, recipe: str, data: dict, out_dir, bits: int = 4, **over) -> str:
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'imagenet', f'{recipe}_w{bits}a{bits}_deit-small-p16_in1k.py')
    )
    a = cfg.model.architecture
    a.update(TINY[arch], num_classes=data['num_classes'])
    a.data_preprocessor.num_classes = data['num_classes']
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=36, edge='short', backend='pillow', interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=32),
        dict(type='PackInputs'),
    ]
    ds = cfg.test_dataloader.dataset
    ds.update(data_root=data['root'], pipeline=pipeline)
    cfg.test_dataloader.update(batch_size=8, num_workers=0)
    cfg.custom_hooks[0].dataloader.dataset.data_root = data['root']
    cfg.custom_hooks[0].num_images = 8
    cfg.model.quant.update(over)
    path = str(out_dir / f'{arch}_{recipe}_w{bits}a{bits}.py')
    cfg.dump(path)
    return path


def float_checkpoint(cfg_path: str, out_path: str) -> str:
    """A timm-key-named checkpoint of a randomly initialised tiny model."""
    cfg = Config.fromfile(cfg_path)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model.architecture)
    state = model.state_dict()
    assert any(k.startswith(('blocks.', 'layers.')) for k in state)  # timm key names
    torch.save(state, out_path)
    return out_path


@pytest.mark.parametrize('arch', ['vit', 'swin'])
@pytest.mark.parametrize('recipe', ['dopq', 'repq'])
def test_quantize_tool_classification(arch, recipe, folder, tmp_path):
    cfg = tiny_config(arch, recipe, folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'float.bin'))
    work = tmp_path / 'work'
    res = quantize.main([cfg, ckpt, '--work-dir', str(work), '--out', str(work / 'p.pkl')])
    saved = json.load(open(work / 'results.json'))
    for key in ('accuracy/top1', 'accuracy/top5'):
        assert 0.0 <= saved['metrics'][key] <= 100.0
    assert saved['recipe'] == recipe and saved['bits'] == 'w4a4'
    assert saved['calibration']['num_images'] == 8
    assert set(saved) >= {'calib_s', 'eval_s', 'versions', 'quant', 'scope', 'seed'}
    assert 'timm' in saved['versions']
    # the quantized checkpoint reproduces the metrics and predictions without calibrating
    res2 = quantize.main(
        [
            cfg,
            str(work / 'quantized.pth'),
            '--work-dir',
            str(tmp_path / 'w2'),
            '--out',
            str(tmp_path / 'w2' / 'p.pkl'),
        ]
    )
    assert res2['calibration']['from_checkpoint']
    assert res2['metrics'] == res['metrics']
    a = pickle.load(open(work / 'p.pkl', 'rb'))
    b = pickle.load(open(tmp_path / 'w2' / 'p.pkl', 'rb'))
    assert len(a) == len(b) == 2 * folder['num_classes']
    for x, y in zip(a, b):
        assert torch.equal(x['pred_score'], y['pred_score'])


def test_quantize_tool_sequential_calibration(folder, tmp_path):
    """``quant.calib_mode=sequential`` (RepQ-ViT's order) through the tool: recorded,
    different quantization parameters from the float-observe default, reloadable."""
    cfg = tiny_config('vit', 'repq', folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'float.bin'))
    runs = {}
    for mode in ('float', 'sequential'):
        work = tmp_path / mode
        opts = ['--cfg-options', f'model.quant.calib_mode={mode}']
        runs[mode] = quantize.main([cfg, ckpt, '--work-dir', str(work), *opts])
        assert runs[mode]['quant']['calib_mode'] == mode
        assert runs[mode]['calibration']['calib_mode'] == mode
    seq, flt = runs['sequential']['calibration'], runs['float']['calibration']
    assert seq['calib_ids'] == flt['calib_ids']
    assert seq['qparams_digest'] != flt['qparams_digest']
    again = quantize.main(
        [cfg, str(tmp_path / 'sequential' / 'quantized.pth'), '--work-dir', str(tmp_path / 'w2')]
    )
    assert again['calibration']['from_checkpoint']
    assert again['metrics'] == runs['sequential']['metrics']


def test_safetensors_checkpoint(folder, tmp_path):
    from safetensors.torch import save_file

    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    state = torch.load(float_checkpoint(cfg, str(tmp_path / 'f.pth')), weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / 'f.safetensors'))
    res = quantize.main(
        [cfg, str(tmp_path / 'f.safetensors'), '--work-dir', str(tmp_path / 'w'), '--no-save']
    )
    assert 'accuracy/top1' in res['metrics']
    assert not osp.exists(tmp_path / 'w' / 'quantized.pth')


def nothing_written(work):
    return not any(osp.exists(osp.join(work, f)) for f in ('results.json', 'quantized.pth'))


def test_checkpoint_of_other_architecture(folder, tmp_path):
    vit_cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    swin_cfg = tiny_config('swin', 'dopq', folder, tmp_path)
    ckpt = float_checkpoint(swin_cfg, str(tmp_path / 'swin.pth'))
    with pytest.raises(RuntimeError, match=r'does not match.*missing keys.*blocks\.0'):
        quantize.main([vit_cfg, ckpt, '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')


def test_missing_dataset_folder(folder, tmp_path):
    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'f.pth'))
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        quantize.main(
            [
                cfg,
                ckpt,
                '--work-dir',
                str(tmp_path / 'w'),
                '--cfg-options',
                f'test_dataloader.dataset.data_root={tmp_path}/nowhere',
            ]
        )
    assert nothing_written(tmp_path / 'w')


def test_empty_class_folder(folder, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(folder['root'], root)
    victim = sorted(os.listdir(root / 'val'))[3]
    for f in glob.glob(str(root / 'val' / victim / '*')):
        os.unlink(f)
    cfg = tiny_config('vit', 'dopq', dict(folder, root=str(root)), tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'f.pth'))
    with pytest.raises(ValueError, match=f'empty class folders.*{victim}'):
        quantize.main([cfg, ckpt, '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')


def test_undecodable_image_is_named(folder, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(folder['root'], root)
    for f in glob.glob(str(root / 'train' / '*' / '*')):
        open(f, 'wb').write(b'garbage')
    cfg = tiny_config('vit', 'dopq', dict(folder, root=str(root)), tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'f.pth'))
    with pytest.raises(RuntimeError, match=r'calibration image .*train/.*could not be loaded'):
        quantize.main([cfg, ckpt, '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')


def test_bits_out_of_range(folder, tmp_path):
    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    with pytest.raises(ValueError, match='wbits'):
        quantize.main(
            [
                cfg,
                'unused.pth',
                '--work-dir',
                str(tmp_path / 'w'),
                '--cfg-options',
                'model.quant.wbits=12',
            ]
        )
    assert nothing_written(tmp_path / 'w')


def test_unreachable_hub_is_a_clear_error(folder, tmp_path, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError('network is unreachable')

    monkeypatch.setattr(socket, 'create_connection', refuse)
    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    with pytest.raises(RuntimeError, match='model hub .* not reachable'):
        quantize.main([cfg, 'timm://deit_small_patch16_224', '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')
