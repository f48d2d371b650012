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


def test_flag_switches_on_the_configs_own_settings():
    """A config keeps reconstruction settings switched off (the reference detectors' batch of
    4 images); ``--reconstruct ITERS`` switches them on, ``--reconstruct`` alone with the
    config's iterations, ``--reconstruct 0`` drops them, and a switched-off stage is the same
    recipe as none."""
    from mmengine import Config

    from mmdopq.recipe import QuantRecipe
    from mmdopq.utils.errors import ConfigError

    base = dict(recipe='dopq', reconstruct=dict(enabled=False, batch_size=4, num_images=256))
    assert QuantRecipe.from_cfg(base).reconstruct == {}
    assert (
        QuantRecipe.from_cfg(base).to_dict() == QuantRecipe.from_cfg(dict(recipe='dopq')).to_dict()
    )
    assert QuantRecipe.from_cfg(base).reconstruct_settings is None

    def apply(*flags):
        cfg = Config(dict(model=dict(quant=json.loads(json.dumps(base)))))
        args = quantize.parse_args(['c.py', 'x.pth', *flags])
        quantize.apply_recipe_args(cfg, args)
        return QuantRecipe.from_cfg(cfg.model.quant)

    on = apply('--reconstruct', '50').reconstruct_settings
    assert (on.enabled, on.iters, on.batch_size, on.num_images) == (True, 50, 4, 256)
    assert apply('--reconstruct', '0').reconstruct == {}
    assert apply().reconstruct_settings is None
    # without ITERS: the config's settings (here no iters: the default) switched on
    bare = apply('--reconstruct').reconstruct_settings
    assert (bare.enabled, bare.iters, bare.batch_size) == (True, 300, 4)
    base['reconstruct']['iters'] = 1000
    assert apply('--reconstruct').reconstruct_settings.iters == 1000
    assert apply('--reconstruct', '50').reconstruct_settings.iters == 50
    with pytest.raises(ConfigError, match=r'--reconstruct -2: give iterations >= 0'):
        apply('--reconstruct', '-2')
