"""The ImageNet track through the quantize tool: tiny timm ViT and Swin on a tiny image folder."""

import glob
import json
import os
import os.path as osp
import pickle
import shutil

import pytest
import torch

from mmdopq.apis import quantize_cli as quantize
from tests.tiny_models import float_checkpoint, tiny_config


@pytest.mark.parametrize('arch', ['vit', 'swin'])
@pytest.mark.parametrize('recipe', ['dopq', 'repq'])
def test_quantize_tool_classification(arch, recipe, folder, tmp_path):
    cfg = tiny_config(arch, recipe, folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'float.bin'))
    work = tmp_path / 'work'
    res = quantize.run([cfg, ckpt, '--work-dir', str(work), '--out', str(work / 'p.pkl')])
    saved = json.load(open(work / 'results.json'))
    for key in ('accuracy/top1', 'accuracy/top5'):
        assert 0.0 <= saved['metrics'][key] <= 100.0
    assert saved['recipe'] == recipe and saved['bits'] == 'w4a4'
    assert saved['calibration']['num_images'] == 8
    assert set(saved) >= {'calib_s', 'eval_s', 'versions', 'quant', 'scope', 'seed'}
    assert 'timm' in saved['versions']
    # the quantized checkpoint reproduces the metrics and predictions without calibrating
    res2 = quantize.run(
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
        runs[mode] = quantize.run([cfg, ckpt, '--work-dir', str(work), *opts])
        assert runs[mode]['quant']['calib_mode'] == mode
        assert runs[mode]['calibration']['calib_mode'] == mode
    seq, flt = runs['sequential']['calibration'], runs['float']['calibration']
    assert seq['calib_ids'] == flt['calib_ids']
    assert seq['qparams_digest'] != flt['qparams_digest']
    again = quantize.run(
        [cfg, str(tmp_path / 'sequential' / 'quantized.pth'), '--work-dir', str(tmp_path / 'w2')]
    )
    assert again['calibration']['from_checkpoint']
    assert again['metrics'] == runs['sequential']['metrics']


def test_safetensors_checkpoint(folder, tmp_path):
    from safetensors.torch import save_file

    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    state = torch.load(float_checkpoint(cfg, str(tmp_path / 'f.pth')), weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / 'f.safetensors'))
    res = quantize.run(
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
        quantize.run([vit_cfg, ckpt, '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')


def test_missing_dataset_folder(folder, tmp_path):
    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'f.pth'))
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        quantize.run(
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
        quantize.run([cfg, ckpt, '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')


def test_undecodable_image_is_named(folder, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(folder['root'], root)
    for f in glob.glob(str(root / 'train' / '*' / '*')):
        open(f, 'wb').write(b'garbage')
    cfg = tiny_config('vit', 'dopq', dict(folder, root=str(root)), tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'f.pth'))
    with pytest.raises(RuntimeError, match=r'calibration image .*train/.*could not be loaded'):
        quantize.run([cfg, ckpt, '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')


def test_bits_out_of_range(folder, tmp_path):
    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    with pytest.raises(ValueError, match='wbits'):
        quantize.run(
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
        quantize.run([cfg, 'timm://deit_small_patch16_224', '--work-dir', str(tmp_path / 'w')])
    assert nothing_written(tmp_path / 'w')
