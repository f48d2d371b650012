"""Cascade Mask R-CNN Swin: quantization sites, the 2.x checkpoint converter, end to end.

The converter test never reuses the converter's tables: the mmdet 2.x
(Swin-Transformer-Object-Detection) layout is produced here from a real mmdet 3.x model by an
inverse written independently (explicit renames, and the patch-merging channel order measured
on a 2.x-style slicing and on mmdet's own ``nn.Unfold``), then converted back.
"""

import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmdet.models.layers.transformer.utils import PatchMerging
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import CheckpointLoader
from torch import nn

from mmdopq.apis import quantize_cli as quantize
from mmdopq.nn import QuantConv2d, QuantLinear, QuantModuleMixin
from tests.tiny_models import REPO, build_float_detector, config_path, shrink
from tools.model_converters import swin_od_to_mmdet

CASCADE = ('cascade-mask-rcnn', 'swin-t-p4-w7_fpn_4conv1fc-giou_ms-crop-3x_coco')
MASK_RCNN = ('mask-rcnn', 'swin-t-p4-w7_fpn_ms-crop-3x_coco')
CONVERTER = 'tools.model_converters.swin_od_to_mmdet'  # run as a module from the repository root


@pytest.fixture(scope='module')
def tiny_det_cfg(tiny_coco, tmp_path_factory):
    """``tiny_det_cfg(recipe, detector, num_calib) -> path``: a shrunken W4A4 config, dumped."""
    out = tmp_path_factory.mktemp('cascade_configs')
    cache = {}

    def make(recipe='dopq', detector=CASCADE, num_calib=2):
        key = (recipe, detector, num_calib)
        if key not in cache:
            det, arch = detector
            cfg = shrink(Config.fromfile(config_path(recipe, 4, arch, det)), tiny_coco, num_calib)
            cache[key] = str(out / f'{recipe}_{det}_{num_calib}.py')
            cfg.dump(cache[key])
        return cache[key]

    return make


@pytest.fixture(scope='module')
def cascade_float(tiny_det_cfg):
    return build_float_detector(tiny_det_cfg('dopq'))


def test_every_cascade_stage_layer_is_a_site(tiny_det_cfg):
    cfg = Config.fromfile(tiny_det_cfg('dopq'))
    assert cfg.model.architecture.type == 'CascadeRCNN'
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    sites = set(model.quant_plan.sites)
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert layers <= sites  # every Conv2d / Linear of the detector, heads included
    for stage in range(3):
        box = f'roi_head.bbox_head.{stage}'
        mask = f'roi_head.mask_head.{stage}'
        expected = {f'{box}.shared_convs.{i}.conv' for i in range(4)}
        expected |= {f'{box}.shared_fcs.0', f'{box}.fc_cls', f'{box}.fc_reg'}
        expected |= {f'{mask}.convs.{i}.conv' for i in range(4)} | {f'{mask}.conv_logits'}
        assert {s for s in sites if s.startswith((box + '.', mask + '.'))} == expected
        for name in expected:
            assert isinstance(model.get_submodule(name), (QuantConv2d, QuantLinear)), name
        # BatchNorm of the 4conv1fc head and the mask upsampling stay float
        for i in range(4):
            assert type(model.get_submodule(f'{box}.shared_convs.{i}.bn')) is nn.BatchNorm2d
        upsample = model.get_submodule(f'{mask}.upsample')
        assert isinstance(upsample, nn.ConvTranspose2d)
        assert not isinstance(upsample, QuantModuleMixin)
    assert len([s for s in sites if s.startswith('roi_head.')]) == 3 * (7 + 5)
    # reconstruction units (on ask): the RPN head, then the box stages, then the mask stages
    # (the order of the cascade's predict)
    units = [n for n, _ in model.quant_plan.units]
    boxes = [f'roi_head.bbox_head.{i}' for i in range(3)]
    masks = [f'roi_head.mask_head.{i}' for i in range(3)]
    assert units[-8:] == ['neck', 'rpn_head', *boxes, *masks]
    assert {model.quant_plan.unit_kinds[n] for n in boxes + masks} == {'roi'}


# -- the mmdet 2.x layout, written independently of the converter --------------------------

_S3 = r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.'  # mmdet 3.x block
_L2 = r'backbone.layers.\1.blocks.\2.'  # 2.x block
#: mmdet 3.x -> Swin-Transformer-Object-Detection (2.x) renames; the first match applies.
TO_SWIN_OD = [
    (r'^backbone\.patch_embed\.projection\.', 'backbone.patch_embed.proj.'),
    (_S3 + r'attn\.w_msa\.', _L2 + 'attn.'),
    (_S3 + r'ffn\.layers\.0\.0\.', _L2 + 'mlp.fc1.'),
    (_S3 + r'ffn\.layers\.1\.', _L2 + 'mlp.fc2.'),
    (r'^backbone\.stages\.', 'backbone.layers.'),  # norm1/norm2, downsample
]


def swin_od_merge(x):
    """Swin-Transformer-Object-Detection's patch-merging gather of a (B, H, W, C) map."""
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    return torch.cat(parts, -1).flatten(1, 2)


def unfold_position_of_swin_od_channel(c):
    """``pos[i]``: the mmdet 3.x (``nn.Unfold``) channel holding 2.x channel ``i``."""
    ids = torch.arange(4.0 * c).view(1, 2, 2, c)  # a unique id per (row, col, channel)
    swin_od = swin_od_merge(ids).flatten().long()
    unfold = PatchMerging(c, 2 * c).sampler(ids.permute(0, 3, 1, 2)).flatten().long()
    where = torch.empty_like(unfold)
    where[unfold] = torch.arange(unfold.numel())
    return where[swin_od]


def to_swin_od(state):
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in TO_SWIN_OD:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        if re.search(r'downsample\.reduction\.weight$', new):
            value = value[:, unfold_position_of_swin_od_channel(value.shape[1] // 4)]
        elif re.search(r'downsample\.norm\.(weight|bias)$', new):
            value = value[unfold_position_of_swin_od_channel(value.shape[0] // 4)]
        out[new] = value.clone()
    return out


def test_inverse_patch_merging_matches_the_2x_computation():
    """2.x merging with the 2.x weights == mmdet's PatchMerging with the 3.x weights."""
    torch.manual_seed(0)
    c = 6
    merge = PatchMerging(c, 2 * c).eval()
    with torch.no_grad():
        merge.norm.weight.normal_()
        merge.norm.bias.normal_()
    state2 = to_swin_od(
        {f'backbone.stages.0.downsample.{k}': v for k, v in merge.state_dict().items()}
    )
    x = torch.randn(2, 5, 7, c)  # odd sizes: both pad bottom / right
    with torch.no_grad():
        ours, _ = merge(x.flatten(1, 2), (5, 7))
        xp = nn.functional.pad(x, (0, 0, 0, 1, 0, 1))
        norm = nn.functional.layer_norm(
            swin_od_merge(xp),
            (4 * c,),
            state2['backbone.layers.0.downsample.norm.weight'],
            state2['backbone.layers.0.downsample.norm.bias'],
        )
        ref = norm @ state2['backbone.layers.0.downsample.reduction.weight'].t()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # and the converter maps the 2.x weights back to mmdet's
    converted, _ = swin_od_to_mmdet.convert_state_dict(state2)
    for k, v in merge.state_dict().items():
        assert torch.equal(converted[f'backbone.stages.0.downsample.{k}'], v)


def test_backbone_conversion_agrees_with_mmdet_swin_converter(cascade_float):
    """mmdet's converter for the classification Swin checkpoints is a second, outside oracle."""
    from mmdet.models.backbones.swin import swin_converter

    backbone = {k: v for k, v in to_swin_od(cascade_float.state_dict()).items() if 'backbone' in k}
    ours, counts = swin_od_to_mmdet.convert_state_dict(backbone)
    theirs = swin_converter({k.removeprefix('backbone.'): v for k, v in backbone.items()})
    assert set(ours) == set(theirs) and counts == {'backbone': len(backbone)}
    for k, v in theirs.items():
        assert torch.equal(ours[k], v), k


def write_swin_od_checkpoint(state, path):
    meta = dict(mmdet_version='2.11.0', CLASSES=('circle', 'square'), epoch=36)
    torch.save(dict(meta=meta, state_dict=state, optimizer={}), path)


def dumped_float_config(quant_cfg_path, path):
    """The float architecture of a shrunken mmdopq config, as a float config file."""
    cfg = Config.fromfile(quant_cfg_path)
    Config(dict(model=cfg.model.architecture)).dump(path)
    return path


@pytest.mark.parametrize('detector', [CASCADE, MASK_RCNN], ids=['cascade', 'mask-rcnn'])
def test_converter_round_trip(detector, tiny_det_cfg, tmp_path, capsys):
    cfg_path = tiny_det_cfg('dopq', detector)
    model = build_float_detector(cfg_path)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BN statistics, so they are checked too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.num_batches_tracked.fill_(123)
    original = model.state_dict()
    swin_od = to_swin_od(original)
    assert not [k for k in swin_od if re.search(r'stages|w_msa|ffn|projection', k)]
    src, dst = tmp_path / 'swin_od.pth', tmp_path / 'converted.pth'
    write_swin_od_checkpoint(swin_od, src)
    float_cfg = dumped_float_config(cfg_path, str(tmp_path / 'float_cfg.py'))
    for config in (cfg_path, float_cfg):  # an mmdopq config and a float config
        summary = swin_od_to_mmdet.main([str(src), str(dst), '--config', config])
        ckpt = CheckpointLoader.load_checkpoint(str(dst), map_location='cpu')
        assert set(ckpt['state_dict']) == set(original)
        for k, v in original.items():
            assert torch.equal(ckpt['state_dict'][k], v), k
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    meta = ckpt['meta']
    assert meta['converted_from'] == str(src) and meta['source_mmdet_version'] == '2.11.0'
    assert tuple(meta['dataset_meta']['classes']) == ('circle', 'square')
    counts = summary['counts']
    assert sum(counts.values()) == len(original) == summary['num_keys']
    n_backbone = len([k for k in original if k.startswith('backbone.')])
    assert counts['backbone'] == n_backbone and counts['neck'] == 16 and counts['rpn_head'] == 6
    if detector is CASCADE:
        per_stage = [
            len([k for k in original if re.match(rf'roi_head\.\w+\.{i}\.', k)]) for i in (0, 1, 2)
        ]
        assert [counts[f'roi_head stage {i}'] for i in (0, 1, 2)] == per_stage
        assert 'roi_head' not in counts
    else:
        assert counts['roi_head'] == len([k for k in original if k.startswith('roi_head.')])
    out = capsys.readouterr().out
    assert 'backbone: ' in out and 'no missing or unexpected keys' in out


@pytest.fixture(scope='module')
def converted_cascade_ckpt(cascade_float, tmp_path_factory):
    """The tiny float cascade, written in the 2.x layout and converted with the tool."""
    work = tmp_path_factory.mktemp('converted')
    src, dst = work / 'swin_od.pth', work / 'converted.pth'
    write_swin_od_checkpoint(to_swin_od(cascade_float.state_dict()), src)
    swin_od_to_mmdet.main([str(src), str(dst)])
    return str(dst)


def test_converter_refuses_unknown_keys(cascade_float, tmp_path):
    state = to_swin_od(cascade_float.state_dict())
    state['backbone.absolute_pos_embed'] = torch.zeros(1, 16, 4, 4)
    state['roi_head.semantic_head.conv_logits.weight'] = torch.zeros(3)
    src, dst = tmp_path / 'bad.pth', tmp_path / 'out.pth'
    write_swin_od_checkpoint(state, src)
    with pytest.raises(ValueError, match=r'2 unknown key.*absolute_pos_embed.*semantic_head'):
        swin_od_to_mmdet.main([str(src), str(dst)])
    assert not dst.exists()
    # the command line: exit status 1, the keys named on stderr
    proc = subprocess.run(
        [sys.executable, '-m', CONVERTER, str(src), str(dst)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'backbone.absolute_pos_embed' in proc.stderr and 'semantic_head' in proc.stderr
    assert not dst.exists() and not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_converter_config_check_reports_missing_keys(cascade_float, tiny_det_cfg, tmp_path):
    state = to_swin_od(cascade_float.state_dict())
    del state['roi_head.bbox_head.2.fc_reg.weight']
    src, dst = tmp_path / 'partial.pth', tmp_path / 'out.pth'
    write_swin_od_checkpoint(state, src)
    with pytest.raises(RuntimeError, match=r'1 missing: .*bbox_head\.2\.fc_reg\.weight'):
        swin_od_to_mmdet.main([str(src), str(dst), '--config', tiny_det_cfg('dopq')])
    assert not dst.exists()


@pytest.mark.parametrize('recipe', ['dopq', 'repq'])
def test_cascade_end_to_end(recipe, tiny_det_cfg, converted_cascade_ckpt, tmp_path):
    # one calibration image keeps it short (2-image calibration: test_quantize_tool.py)
    cfg = tiny_det_cfg(recipe, num_calib=1)
    res = quantize.run([cfg, converted_cascade_ckpt, '--work-dir', str(tmp_path)])
    saved = json.load(open(tmp_path / 'results.json'))
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert key in saved['metrics'] and 0.0 <= saved['metrics'][key] <= 1.0
    assert saved['metrics'] == res['metrics']
    assert saved['recipe'] == recipe and saved['bits'] == 'w4a4' and saved['scope'] == 'whole'
    assert saved['quant']['post_softmax'] == ('tan' if recipe == 'dopq' else 'log_sqrt2')
    plan = saved['calibration']['plan']
    # backbone 1 + 8 blocks x 6 + 3 mergings, FPN 8, RPN 3, RoI 3 stages x (7 box + 5 mask)
    assert plan['sites'] == 52 + 8 + 3 + 36
    assert plan['norm_pairs'] == 2 * 8 + 3
    assert osp.isfile(tmp_path / 'quantized.pth')
