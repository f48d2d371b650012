"""tools/analysis/quant_sensitivity.py: per-group sensitivity of a quantized tiny ViT."""

import json
import os.path as osp

import pytest

from mmdopq.apis import quantize_cli as quantize
from tests.tiny_models import float_checkpoint, tiny_config
from tools.analysis import quant_sensitivity


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


def test_part_groups_cut_names_at_the_depth():
    names = [
        'backbone.stages.0.blocks.0.attn.w_msa.qkv.input_quantizer',
        'backbone.stages.1.downsample.reduction.weight_quantizer',
        'neck.fpn_convs.0.conv.input_quantizer',
        'rpn_head.rpn_conv.weight_quantizer',
        'roi_head.bbox_head.fc_cls.input_quantizer',
        'roi_head.mask_head.conv_logits.weight_quantizer',
        'head.input_quantizer',
    ]
    assert quant_sensitivity.group_parts(names, 'all', 2) == {
        'backbone.stages': names[:2],
        'neck.fpn_convs': [names[2]],
        'rpn_head.rpn_conv': [names[3]],
        'roi_head.bbox_head': [names[4]],
        'roi_head.mask_head': [names[5]],
        'head': [names[6]],  # never the quantizer's own name
    }
    assert quant_sensitivity.group_parts(names, 'weight', 1) == {
        'backbone': [names[1]],
        'rpn_head': [names[3]],
        'roi_head': [names[5]],
    }
    with pytest.raises(ValueError, match='--depth 0'):
        quant_sensitivity.group_parts(names, 'all', 0)
    quantizers = dict.fromkeys(names)
    assert quant_sensitivity.select_quantizers(quantizers, None) is quantizers
    assert list(quant_sensitivity.select_quantizers(quantizers, r'^roi_head\.')) == names[4:6]
    with pytest.raises(ValueError, match=r"matches no enabled quantizer; parts: \['backbone"):
        quant_sensitivity.select_quantizers(quantizers, 'fc9')
    with pytest.raises(ValueError, match='not a valid regex'):
        quant_sensitivity.select_quantizers(quantizers, '(')


def test_component_groups_refuse_undeclared_quantizers():
    from torch import nn

    from mmdopq.plan import QuantizerFactory, QuantPlan
    from mmdopq.quantizers import UniformQuantizer
    from mmdopq.recipe import QuantRecipe

    with pytest.raises(ValueError, match='Linear has no quant_plan'):
        quant_sensitivity.group_components(nn.Linear(2, 2), {}, 'all')
    model = nn.Module()
    model.quant_plan = QuantPlan(QuantizerFactory(QuantRecipe()))
    assert quant_sensitivity.group_components(model, {}, 'all') == {}
    stray = {'extra.input_quantizer': UniformQuantizer(4)}
    with pytest.raises(ValueError, match=r"outside the quant plan: \['extra.input_quantizer'\]"):
        quant_sensitivity.group_components(model, stray, 'act')


def test_sensitivity_tool(folder, tmp_path):
    cfg = tiny_config('vit', 'repq', folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'float.pth'))
    fl = quantize.run([cfg, ckpt, '--recipe', 'float', '--work-dir', str(tmp_path / 'f')])
    qu = quantize.run([cfg, ckpt, '--work-dir', str(tmp_path / 'q')])
    qckpt = str(tmp_path / 'q' / 'quantized.pth')
    # a float checkpoint is refused: the tool studies saved parameters, it does not calibrate
    with pytest.raises(ValueError, match='float checkpoint.*quantize it first'):
        quant_sensitivity.main([cfg, ckpt, '--work-dir', str(tmp_path / 'bad')])
    assert not osp.exists(tmp_path / 'bad' / 'sensitivity.json')
    # and one quantized with another recipe
    with pytest.raises(RuntimeError, match='another recipe'):
        quant_sensitivity.main([cfg, qckpt, '--recipe', 'dopq', '--work-dir', str(tmp_path / 'b')])

    # the analysis runner hands out the quantized model, also to tools that run it directly
    from mmdopq.apis import analysis
    from mmdopq.nn import quant_layers

    args = quant_sensitivity.parse_args([cfg, qckpt, '--work-dir', str(tmp_path / 'm')])
    model = analysis.build_analysis_runner(args, 'sensitivity')[3]
    modes = {m.quant_mode for _, m in quant_layers(model)}
    assert modes == {'quant'}

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

    # grouped by recipe component: the four components partition the quantizers
    with pytest.raises(ValueError, match='--expand splits roles'):
        quant_sensitivity.main([cfg, qckpt, '--by', 'component', '--expand', 'qkv'])
    comp = quant_sensitivity.main(
        [cfg, qckpt, '--by', 'component', '--work-dir', str(tmp_path / 'c')]
    )
    by_name = {g['group']: g for g in comp['groups']}
    assert set(by_name) == {'post_softmax', 'post_layernorm', 'other_act', 'weight'}
    n_blocks = 2
    assert by_name['post_softmax']['quantizers'] == [
        f'model.blocks.{i}.attn.av_matmul.quantizer_a' for i in range(n_blocks)
    ]
    assert sorted(by_name['post_layernorm']['quantizers']) == sorted(
        f'model.blocks.{i}.{m}.input_quantizer'
        for i in range(n_blocks)
        for m in ('attn.qkv', 'mlp.fc1')
    )
    assert all(n.endswith('weight_quantizer') for n in by_name['weight']['quantizers'])
    members = [n for g in comp['groups'] for n in g['quantizers']]
    assert len(members) == len(set(members))
    # grouped by part: the same quantizers, one group per top-level module
    part = quant_sensitivity.main(
        [cfg, qckpt, '--by', 'part', '--depth', '1', '--work-dir', str(tmp_path / 'p')]
    )
    assert part['depth'] == 1
    assert sorted(n for g in part['groups'] for n in g['quantizers']) == sorted(members)
    assert {g['group'] for g in part['groups']} == {'model'}
    # --select studies a subset; the reference evaluations still cover every quantizer
    sel = quant_sensitivity.main(
        [cfg, qckpt, '--select', r'blocks\.1\.', '--work-dir', str(tmp_path / 'sel')]
    )
    assert sel['select'] == r'blocks\.1\.' and sel['all_off'] == saved['all_off']
    assert all('blocks.1.' in n for g in sel['groups'] for n in g['quantizers'])
    assert (
        'only quantizers matching `blocks\\.1\\.`'
        in open(tmp_path / 'sel' / 'sensitivity.md').read()
    )
    assert 'grouped by: part (depth 1)' in open(tmp_path / 'p' / 'sensitivity.md').read()
    assert set(members) == {
        n
        for g in json.load(open(tmp_path / 'c' / 'sensitivity.json'))['groups']
        for n in g['quantizers']
    }
    assert comp['quantized'] == pytest.approx(saved['quantized'])
    assert comp['all_off'] == pytest.approx(saved['all_off'])
    assert comp['by'] == 'component'
    assert comp['calibration_ids'] == qu['calibration']['calib_ids']  # provenance
    # every enabled quantizer of the model is in exactly one component
    roles_all = quant_sensitivity.main(
        [cfg, qckpt, '--kind', 'all', '--work-dir', str(tmp_path / 'r')]
    )
    assert sorted(members) == sorted(n for g in roles_all['groups'] for n in g['quantizers'])
    # --kind act leaves the weights out
    act = quant_sensitivity.main(
        [cfg, qckpt, '--by', 'component', '--kind', 'act', '--work-dir', str(tmp_path / 'a')]
    )
    assert [g['group'] for g in act['groups']] and 'weight' not in {
        g['group'] for g in act['groups']
    }
