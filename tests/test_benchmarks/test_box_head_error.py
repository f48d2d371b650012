"""benchmarks/bench_box_head_error.py: the split of a quantized box head's output error."""

import pytest
import torch

from benchmarks.bench_box_head_error import PARTS, BoxHeadError
from mmdopq.nn import set_quant_mode
from tests.test_models.test_quantized_model import batches, build_quantized, calibrate


def test_box_head_error_splits_every_output_once(tiny_cfg):
    model, cfg = build_quantized(tiny_cfg('dopq', 4))
    calibrate(model, cfg)
    data = batches(cfg)
    head = model.roi_head.bbox_head
    meter = BoxHeadError(head)
    inputs = []  # the detector's own calls of the head, not the meter's

    def record_input(module, args):
        if not meter.in_reference_call:
            inputs.append(args[0])

    handles = [
        head.register_forward_pre_hook(record_input),
        head.register_forward_hook(meter),
    ]
    with torch.no_grad():
        for b in data:
            model.test_step(b)
    for h in handles:
        h.remove()
    rec = meter.record()
    assert rec['regions'] == sum(len(x) for x in inputs) > 0
    assert sum(rec['error_share'].values()) == pytest.approx(1.0)
    assert all(meter.error[p] > 0 for p in PARTS)
    # every output is counted in exactly one part: the parts' signals add up to the energy
    # of the float head's outputs, and the own-class deltas are 4 per region
    with torch.no_grad():
        set_quant_mode(head, 'float')
        outs = [head(x) for x in inputs]
        set_quant_mode(head, 'quant')
    energy = sum(float((c**2).sum() + (r**2).sum()) for c, r in outs)
    assert sum(meter.signal.values()) == pytest.approx(energy, rel=1e-5)
    n_deltas = outs[0][1].shape[1]
    assert n_deltas > 4
    assert meter.signal['own_class_deltas'] <= sum(float((r**2).sum()) for _, r in outs)
    # a head left in float mode has nothing quantized to measure: refused, not a zero error
    set_quant_mode(head, 'float')
    handle = head.register_forward_hook(BoxHeadError(head))
    with pytest.raises(RuntimeError, match='not in quant mode'), torch.no_grad():
        model.test_step(data[0])
    handle.remove()
