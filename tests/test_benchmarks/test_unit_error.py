"""benchmarks/bench_unit_error.py: a unit's output error split into its own and its input's."""

import copy

import pytest
import torch

from benchmarks.bench_unit_error import PARTS, unit_errors
from mmdopq.nn import set_quant_mode
from tests.test_models.test_quantized_model import batches, build_quantized, calibrate


def calibrated_pair(tiny_cfg):
    """A calibrated tiny detector, its float twin and test batches."""
    model, cfg = build_quantized(tiny_cfg('dopq', 4))
    calibrate(model, cfg)
    # a calibrated model in float mode is its float model (the LayerNorm fold is exact)
    float_model = copy.deepcopy(model)
    set_quant_mode(float_model, 'float')
    return model, float_model, batches(cfg, split='test')


def test_unit_errors_split_own_and_inherited(tiny_cfg):
    model, float_model, data = calibrated_pair(tiny_cfg)
    kinds = model.quant_plan.unit_kinds
    names = [n for n, _ in model.quant_plan.units if kinds.get(n) != 'roi']
    assert len(names) >= 3

    def drive(m):
        for b in data:
            m.test_step(b)

    units = unit_errors(model, float_model, names, drive)
    assert list(units) == names
    first, *later = names
    # the first unit sees the same input in both models: nothing inherited, all its own
    assert units[first]['inherited'] == 0.0
    assert units[first]['total'] == pytest.approx(units[first]['own'], rel=1e-6)
    for name in names:
        assert set(units[name]) == set(PARTS)
        assert units[name]['total'] > 0 and units[name]['own'] > 0
    # the error of the units before reaches the later ones' inputs
    assert all(units[n]['inherited'] > 0 for n in later)
    # against itself, a model has no error anywhere
    same = unit_errors(float_model, copy.deepcopy(float_model), names, drive)
    assert all(v < 1e-10 for parts in same.values() for v in parts.values())


def test_unit_errors_refuse_calls_that_do_not_match(tiny_cfg):
    model, float_model, data = calibrated_pair(tiny_cfg)
    name = model.quant_plan.units[0][0]

    def drive(m):  # the float model sees one image less
        for b in data if m is model else data[:-1]:
            m.test_step(b)

    with pytest.raises(RuntimeError, match='quantized calls'), torch.no_grad():
        unit_errors(model, float_model, [name], drive)
