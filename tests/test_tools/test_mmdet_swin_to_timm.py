"""mmdet 3.x Swin -> timm Swin: key mapping, patch-merging order, table crops, the tool.

The mapping is checked by behaviour, not by its own tables: an mmdet ``SwinTransformer`` with
random weights and a timm ``SwinTransformer`` loaded with the converted weights must compute
the same features.
"""

import os.path as osp

import pytest
import timm
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.config import Config

from tests.tiny_models import REPO
from tools.model_converters import mmdet_swin_to_timm as tool
from tools.model_converters.swin_checkpoint import crop_relative_position_table, mmdet_swin_to_timm

DIMS = dict(embed=24, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8))
CLS_CONFIG = osp.join(REPO, 'configs', 'reference', 'swin-ref-p4-w7_synthetic-cls.py')


def random_mmdet_swin(seed=0):
    torch.manual_seed(seed)
    net = SwinTransformer(
        embed_dims=DIMS['embed'],
        depths=DIMS['depths'],
        num_heads=DIMS['heads'],
        window_size=7,
        out_indices=(0, 3),
    )
    with torch.no_grad():  # non-trivial norms, biases and relative position tables
        for name, p in net.named_parameters():
            if p.dim() < 2 or 'relative_position' in name:
                p.normal_(0.0, 0.3)
    net.eval()  # mmdet's Swin overrides train() and returns None
    return net.double()


def timm_swin(img_size, **kw):
    return timm.create_model(
        'swin_tiny_patch4_window7_224',
        pretrained=False,
        img_size=img_size,
        patch_size=4,
        embed_dim=DIMS['embed'],
        depths=DIMS['depths'],
        num_heads=DIMS['heads'],
        window_size=7,
        num_classes=0,
        **kw,
    ).eval()


def test_mmdet_and_timm_compute_the_same_features():
    det = random_mmdet_swin()
    state = mmdet_swin_to_timm({f'backbone.{k}': v for k, v in det.state_dict().items()}, 4)
    # 224 px: every stage resolution (56/28/14/7) is a multiple of the window; always_partition
    # keeps timm shifting the 7x7 last stage as mmdet does
    net = timm_swin(224, always_partition=True).double()
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and not missing
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        ref = det(x)[1]
        out = net.forward_features(x).permute(0, 3, 1, 2)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-10), float((out - ref).abs().max())
    # the patch-merging regrouping matters: without it the features differ
    broken = dict(state)
    key = 'layers.1.downsample.reduction.weight'
    broken[key] = det.state_dict()['stages.0.downsample.reduction.weight'].clone()
    net.load_state_dict(broken, strict=False)
    with torch.no_grad():
        assert not torch.allclose(net.forward_features(x).permute(0, 3, 1, 2), ref, atol=1e-3)


def test_crop_keeps_the_bias_of_every_kept_offset():
    big, small, heads = 7, 4, 3
    table = torch.randn((2 * big - 1) ** 2, heads)
    crop = crop_relative_position_table(table, small)
    assert crop.shape == ((2 * small - 1) ** 2, heads)
    for dy in range(-(small - 1), small):
        for dx in range(-(small - 1), small):
            row_big = (dy + big - 1) * (2 * big - 1) + (dx + big - 1)
            row_small = (dy + small - 1) * (2 * small - 1) + (dx + small - 1)
            assert torch.equal(crop[row_small], table[row_big])
    assert torch.equal(crop_relative_position_table(table, big), table)
    with pytest.raises(ValueError, match='window 8'):
        crop_relative_position_table(table, 8)
    with pytest.raises(ValueError, match='not \\(2W-1\\)\\^2'):
        crop_relative_position_table(torch.randn(50, 2), 2)


def test_first_stage_matches_at_classifier_resolution():
    """At 56 px timm shrinks the windows of stages 3-4 (cropped tables); stage 1 is unchanged."""
    det = random_mmdet_swin(1)
    net = timm_swin(56).double()
    state = tool.convert(
        {f'backbone.{k}': v for k, v in det.state_dict().items()}, net.state_dict(), 4
    )
    net.load_state_dict({k: v.double() for k, v in state.items()}, strict=False)
    assert state['layers.3.blocks.0.attn.relative_position_bias_table'].shape == (9, 8)
    x = torch.randn(2, 3, 56, 56, dtype=torch.float64)
    with torch.no_grad():
        ref = det(x)[0]  # norm0(stage 1)
        stage1 = net.layers[0](net.patch_embed(x))
        out = det.norm0(stage1).permute(0, 3, 1, 2)
    assert torch.allclose(out, ref, atol=1e-10)


def test_unknown_or_missing_keys_are_errors():
    det = random_mmdet_swin()
    state = {f'backbone.{k}': v for k, v in det.state_dict().items()}
    with pytest.raises(ValueError, match='backbone.stages.0.extra.weight'):
        mmdet_swin_to_timm({**state, 'backbone.stages.0.extra.weight': torch.zeros(1)}, 4)
    with pytest.raises(ValueError, match="no key starts with 'backbone.'"):
        mmdet_swin_to_timm({'neck.conv.weight': torch.zeros(1)}, 4)
    # a classifier with other widths: every mismatching key is named
    wide = timm.create_model(
        'swin_tiny_patch4_window7_224',
        pretrained=False,
        img_size=56,
        embed_dim=32,
        depths=DIMS['depths'],
        num_heads=DIMS['heads'],
        num_classes=5,
    )
    with pytest.raises(ValueError, match='patch_embed.proj.weight: converted'):
        tool.convert(state, wide.state_dict(), 4)


def test_tool_writes_a_checkpoint_the_classifier_loads(tmp_path):
    det = random_mmdet_swin()
    src = tmp_path / 'det.pth'
    state = {f'backbone.{k}': v.float() for k, v in det.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(4, 24, 1, 1)  # not the backbone
    torch.save(dict(state_dict=state), src)
    cfg = Config.fromfile(CLS_CONFIG)
    cfg.model.embed_dim = DIMS['embed']
    cfg.model.num_heads = DIMS['heads']
    config = tmp_path / 'cls.py'
    cfg.dump(str(config))
    dst = tmp_path / 'init.pth'
    info = tool.main([str(src), str(config), str(dst)])
    assert info['num_tensors'] == len(torch.load(dst)['state_dict'])
    classifier = tool.build_classifier(str(config))
    missing, unexpected = classifier.load_state_dict(torch.load(dst)['state_dict'], strict=False)
    assert sorted(missing) == ['head.fc.bias', 'head.fc.weight'] and not unexpected
    # the classifier in the reference config (embed 48) does not fit: error, no file
    bad = tmp_path / 'bad.pth'
    with pytest.raises(ValueError, match='does not fit the classifier'):
        tool.main([str(src), CLS_CONFIG, str(bad)])
    assert not bad.exists()
