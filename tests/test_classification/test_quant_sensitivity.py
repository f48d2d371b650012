"""tools/analysis/quant_sensitivity.py: per-group sensitivity of a quantized tiny ViT."""

import json
import os.path as osp
import sys

import pytest

from .test_quantize_classification import REPO, float_checkpoint, folder, quantize, tiny_config

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))
import quant_sensitivity  # noqa: E402

__all__ = ['folder']  # the shared data fixture


def test_roles_and_groups():
    names = [
        'model.blocks.0.attn.qkv.input_quantizer',
        'model.blocks.0.attn.qkv.weight_quantizer',
        'model.blocks.1.attn.qkv.input_quantizer',
        'model.blocks.1.attn.qk_matmul.quantizer_a',
        'model.head.input_quantizer',
    ]
    assert quant_sensitivity.role_of(names[2]) == 'model.blocks.*.attn.qkv.input_quantizer'
    assert quant_sensitivity.role_of('3.fc.input_quantizer') == '*.fc.input_quantizer'
    groups = quant_sensitivity.group_quantizers(names, 'act', [])
    assert groups == {
        'model.blocks.*.attn.qkv.input_quantizer': [names[0], names[2]],
        'model.blocks.*.attn.qk_matmul.quantizer_a': [names[3]],
        'model.head.input_quantizer': [names[4]],
    }
    assert list(quant_sensitivity.group_quantizers(names, 'weight', [])) == [
        'model.blocks.*.attn.qkv.weight_quantizer'
    ]
    expanded = quant_sensitivity.group_quantizers(names, 'all', [r'qkv\.input'])
    assert expanded[names[0]] == [names[0]] and expanded[names[2]] == [names[2]]
    assert len(expanded) == 5
    with pytest.raises(ValueError, match=r"\['fc9'\] matched no act quantizer role"):
        quant_sensitivity.group_quantizers(names, 'act', ['qkv', 'fc9'])
    with pytest.raises(ValueError, match='not a valid regex'):
        quant_sensitivity.group_quantizers(names, 'act', ['('])


def test_sensitivity_tool(folder, tmp_path):
    cfg = tiny_config('vit', 'repq', folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'float.pth'))
    fl = quantize.main([cfg, ckpt, '--recipe', 'float', '--work-dir', str(tmp_path / 'f')])
    qu = quantize.main([cfg, ckpt, '--work-dir', str(tmp_path / 'q')])
    qckpt = str(tmp_path / 'q' / 'quantized.pth')
    # a float checkpoint is refused: the tool studies saved parameters, it does not calibrate
    with pytest.raises(ValueError, match='float checkpoint.*quantize it first'):
        quant_sensitivity.main([cfg, ckpt, '--work-dir', str(tmp_path / 'bad')])
    assert not osp.exists(tmp_path / 'bad' / 'sensitivity.json')
    # and one quantized with another recipe
    with pytest.raises(RuntimeError, match='another recipe'):
        quant_sensitivity.main([cfg, qckpt, '--recipe', 'dopq', '--work-dir', str(tmp_path / 'b')])

    work = tmp_path / 's'
    rec = quant_sensitivity.main(
        [cfg, qckpt, '--kind', 'act', '--expand', 'qk_matmul', '--work-dir', str(work)]
    )
    saved = json.load(open(work / 'sensitivity.json'))
    assert saved['groups'] == json.loads(json.dumps(rec['groups']))
    assert saved['metric_name'] == 'accuracy/top1'
    # the saved parameters evaluate as they did when quantize.py made them
    assert saved['quantized'] == pytest.approx(qu['metrics']['accuracy/top1'])
    # every quantizer off is the float model (exact fold)
    assert saved['all_off'] == pytest.approx(fl['metrics']['accuracy/top1'])
    groups = {g['group']: g for g in saved['groups']}
    assert 'model.blocks.0.attn.qk_matmul.quantizer_a' in groups  # expanded
    assert 'model.blocks.*.attn.qkv.input_quantizer' in groups  # grouped by role
    assert groups['model.blocks.*.attn.qkv.input_quantizer']['num_quantizers'] == 2
    assert not any('weight_quantizer' in g for g in groups)
    for g in saved['groups']:
        assert g['recovered'] == pytest.approx(g['metric'] - saved['quantized'])
    assert [g['recovered'] for g in saved['groups']] == sorted(
        (g['recovered'] for g in saved['groups']), reverse=True
    )
    md = open(work / 'sensitivity.md').read()
    assert '| `model.blocks.0.attn.qk_matmul.quantizer_a` | 1 |' in md
