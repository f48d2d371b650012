"""Where a quantized box head's output error sits: class scores, or the box deltas detection reads.

Block reconstruction trains an RoI box head on the mean squared error of all its outputs. This
measures how that error splits, on the regions a quantized mmdet detector proposes: the
quantized box head and the same head in float are run on the same pooled features (the local
target of ``quant.reconstruct.roi_target='local'``). Per region the outputs are the class
scores, the 4 deltas of the class the float head predicts (what detection reads) and the
deltas of the other classes::

    python -m benchmarks.bench_box_head_error CONFIG QUANTIZED_CKPT --recipe dopq --bits w3a3 \\
        --batches 50 --out benchmarks/sensitivity/<model>/<name>.json \\
        --cfg-options test_dataloader.dataset.data_root=data/reference_coco_tune/ ...

Writes a JSON record (shares of the squared error, error relative to each part's signal,
region count, checkpoint and settings).
"""

from __future__ import annotations

import sys

import torch

from mmdopq.apis import analysis
from mmdopq.nn import quant_layers, set_quant_mode
from mmdopq.utils.fileio import dump_json_atomic

PARTS = ('class_scores', 'own_class_deltas', 'other_class_deltas')


class BoxHeadError:
    """Sums the squared error and the squared signal of each output part, call by call."""

    def __init__(self, head: torch.nn.Module) -> None:
        self.head = head
        self.error = dict.fromkeys(PARTS, 0.0)
        self.signal = dict.fromkeys(PARTS, 0.0)
        self.regions = 0
        #: True while the hook runs the float reference (its own call of the head)
        self.in_reference_call = False

    def __call__(self, module, args, out) -> None:
        if self.in_reference_call:  # the float call below
            return
        if any(m.quant_mode != 'quant' for _, m in quant_layers(self.head)):
            raise RuntimeError('the box head is not in quant mode: nothing quantized to measure')
        q_cls, q_reg = out  # the quantized head's output on these regions
        self.in_reference_call = True
        try:
            with torch.no_grad():
                set_quant_mode(self.head, 'float')
                ref_cls, ref_reg = self.head(args[0])
        finally:
            set_quant_mode(self.head, 'quant')
            self.in_reference_call = False
        if ref_reg.shape[1] == 4:
            raise ValueError('the box head regresses class-agnostic deltas: nothing to split')
        cls = ref_cls[:, :-1].argmax(1)  # the last score is the background
        cols = cls[:, None] * 4 + torch.arange(4, device=cls.device)[None]
        own = torch.zeros_like(ref_reg, dtype=torch.bool).scatter_(1, cols, True)
        reg_err = (q_reg - ref_reg) ** 2
        for part, err, sig in (
            ('class_scores', (q_cls - ref_cls) ** 2, ref_cls**2),
            ('own_class_deltas', reg_err[own], ref_reg[own] ** 2),
            ('other_class_deltas', reg_err[~own], ref_reg[~own] ** 2),
        ):
            self.error[part] += float(err.sum())
            self.signal[part] += float(sig.sum())
        self.regions += len(ref_cls)

    def record(self) -> dict:
        total = sum(self.error.values())
        return dict(
            regions=self.regions,
            error_share={p: self.error[p] / total for p in PARTS},
            relative_error={p: self.error[p] / self.signal[p] for p in PARTS},
            squared_error=self.error,
            squared_signal=self.signal,
        )


def main(argv=None) -> dict:
    parser = analysis.analysis_parser('Split of a quantized box head output error', 'logs')
    parser.add_argument('--batches', type=int, default=50, help='test batches to run')
    parser.add_argument('--out', required=True, help='JSON file to write')
    args = parser.parse_args(argv)
    _, recipe, runner, model, loaded, _ = analysis.build_analysis_runner(args, 'box_head_error')
    head = model.roi_head.bbox_head
    meter = BoxHeadError(head)
    handle = head.register_forward_hook(meter)
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(runner.test_dataloader):
                if i == args.batches:
                    break
                model.test_step(batch)
    finally:
        handle.remove()
    record = dict(
        **analysis.analysis_record(args.config, args.checkpoint, recipe, loaded, argv),
        batches=args.batches,
        **meter.record(),
    )
    dump_json_atomic(record, args.out)
    for p in PARTS:
        print(
            f'{p}: {record["error_share"][p]:.3f} of the squared error, '
            f'relative error {record["relative_error"][p]:.4f}'
        )
    return record


if __name__ == '__main__':
    main(sys.argv[1:])
