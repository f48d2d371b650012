"""Block reconstruction through the quantize tool: flag, record, reload, mismatch refused."""

import json

import pytest

from mmdopq.apis import quantize_cli as quantize
from tests.tiny_models import float_checkpoint, tiny_config


def test_reconstruct_flag_records_and_reloads_exactly(folder, tmp_path):
    cfg = tiny_config('vit', 'dopq', folder, tmp_path)
    ckpt = float_checkpoint(cfg, str(tmp_path / 'float.pth'))
    opts = ['--cfg-options', 'model.quant.reconstruct.num_images=8']
    opts += ['model.quant.reconstruct.batch_size=4']
    plain = quantize.run([cfg, ckpt, '--work-dir', str(tmp_path / 'plain')])
    res = quantize.run([cfg, ckpt, '--work-dir', str(tmp_path / 'r'), '--reconstruct', '6', *opts])
    assert res['quant']['reconstruct']['iters'] == 6
    units = res['calibration']['reconstruct']
    assert units and len(res['calibration']['reconstruct_ids']) == 8
    assert res['calibration']['times']['reconstruct_s'] > 0
    assert res['calibration']['qparams_digest'] != plain['calibration']['qparams_digest']
    # the checkpoint holds the learned rounding and steps: re-evaluating it reproduces the metrics
    qckpt = res['quantized_checkpoint']
    again = quantize.run(
        [cfg, qckpt, '--work-dir', str(tmp_path / 'again'), '--reconstruct', '6', *opts]
    )
    assert again['calibration']['from_checkpoint'] and again['metrics'] == res['metrics']
    assert json.dumps(again['calibration']['reconstruct']) == json.dumps(units)  # kept
    # given back with other reconstruction settings (or none): refused, naming the setting
    with pytest.raises(RuntimeError, match=r'reconstruct: .*iters.* vs \{\}'):
        quantize.run([cfg, qckpt, '--work-dir', str(tmp_path / 'other')])
