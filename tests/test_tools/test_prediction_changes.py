"""tools/analysis/prediction_changes.py: float vs quantized predictions, image by image."""

import json
import math
import os.path as osp

import pytest
import torch

from mmdopq.apis import quantize_cli as quantize
from tests.tiny_models import float_checkpoint, tiny_config
from tools.analysis import prediction_changes


def test_compare_predictions_counts_each_kind_of_change():
    # 4 images, 3 classes; labels 0, 1, 2, 0
    pf = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4], [0.45, 0.4, 0.15]])
    pq = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.3, 0.1, 0.6], [0.2, 0.3, 0.5]])
    labels = torch.tensor([0, 1, 2, 0])
    r = prediction_changes.compare_predictions(pf, pq, labels, margins=[0.08, 0.6])
    assert r['images'] == 4
    assert r['float_top1'] == 75.0 and r['quant_top1'] == 50.0
    # image 1 right -> wrong, image 2 wrong -> right, image 3 right -> wrong (other class)
    assert r['changed'] == 75.0 and r['right_to_wrong'] == 50.0 and r['wrong_to_right'] == 25.0
    assert r['float_top1'] - r['quant_top1'] == r['right_to_wrong'] - r['wrong_to_right']
    # float margins 0.5, 0.7, 0.1, 0.05
    assert r['margin_below'] == {'0.08': 25.0, '0.6': 75.0}
    lf = pf.log() - pf.log().mean(1, keepdim=True)
    lq = pq.log() - pq.log().mean(1, keepdim=True)
    sqnr = 10 * math.log10(lf.pow(2).sum() / (lq - lf).pow(2).sum())
    assert r['logit_sqnr_db'] == pytest.approx(sqnr)
    same = prediction_changes.compare_predictions(pf, pf, labels)
    assert same['changed'] == 0.0 and same['logit_sqnr_db'] == math.inf
    # a constant added to every log probability is no change
    shifted = prediction_changes.compare_predictions(pf, pf * 2.0, labels)
    assert shifted['changed'] == 0.0 and shifted['logit_sqnr_db'] > 200  # rounding only


def test_compare_predictions_rejects_bad_input():
    p = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r'one shape, got \(2, 3\) and \(2, 4\)'):
        prediction_changes.compare_predictions(p, torch.full((2, 4), 0.25), torch.zeros(2))
    with pytest.raises(ValueError, match='2 labels'):
        prediction_changes.compare_predictions(p, p, torch.zeros(3))
    with pytest.raises(ValueError, match=r'\(0, 1\], got \[1.5\]'):
        prediction_changes.compare_predictions(p, p, torch.zeros(2), margins=[0.1, 1.5])


def test_prediction_changes_tool(folder, tmp_path):
    cfg = tiny_config('vit', 'repq', folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'float.pth'))
    fl = quantize.run([cfg, ckpt, '--recipe', 'float', '--work-dir', str(tmp_path / 'f')])
    qu = quantize.run([cfg, ckpt, '--bits', 'w3a3', '--work-dir', str(tmp_path / 'q')])
    qckpt = str(tmp_path / 'q' / 'quantized.pth')
    with pytest.raises(ValueError, match='float checkpoint.*quantize it first'):
        prediction_changes.main([cfg, ckpt, '--work-dir', str(tmp_path / 'bad')])
    assert not osp.exists(tmp_path / 'bad' / 'prediction_changes.json')

    work = tmp_path / 'p'
    rec = prediction_changes.main([cfg, qckpt, '--bits', 'w3a3', '--work-dir', str(work)])
    r = rec['result']
    # the quantized pass is the saved model; with every quantizer off it is the float model
    assert r['quant_top1'] == pytest.approx(qu['metrics']['accuracy/top1'])
    assert r['float_top1'] == pytest.approx(fl['metrics']['accuracy/top1'])
    assert r['images'] == qu['test_images']
    assert r['float_top1'] - r['quant_top1'] == pytest.approx(
        r['right_to_wrong'] - r['wrong_to_right']
    )
    assert r['changed'] >= r['right_to_wrong'] + r['wrong_to_right']
    assert math.isfinite(r['logit_sqnr_db'])
    saved = json.load(open(work / 'prediction_changes.json'))
    assert saved['result']['changed'] == r['changed'] and saved['bits'] == 'w3a3'
    assert (work / 'prediction_changes.md').read_text().startswith('# Prediction changes')
