"""Where a quantized unit's output error comes from: its own quantizers, or its input.

Block reconstruction matches every unit's output to the float model's, starting from the
input the quantized units before it produce. This splits each unit's error against the float
output ``F(x_f)`` (``x_f``: the unit's input in the float model, ``x_q``: in the quantized
model; ``F``: the float unit, ``Q``: the quantized one), on the same test images:

* ``total``: ``Q(x_q)``, what the quantized model computes (a unit's reconstruction loss);
* ``inherited``: ``F(x_q)``, the float unit on the quantized input (upstream error alone);
* ``own``: ``Q(x_f)``, the quantized unit on the float input (its own quantizers alone);
* ``own_weights``: ``Q(x_f)`` with the unit's activation quantizers switched off.

Each is the squared error summed over the unit's output, divided by the float output's sum of
squares (the relative error reconstruction reports). The float reference is the float
checkpoint; the LayerNorm fold leaves every unit's output unchanged, so the quantized units
and the float ones take and give the same tensors::

    python -m benchmarks.bench_unit_error CONFIG QUANTIZED_CKPT FLOAT_CKPT --recipe dopq \\
        --bits w4a4 --batches 8 --out benchmarks/reconstruct/<name>/unit_error.json \\
        --cfg-options test_dataloader.dataset.data_root=data/<tune split>/ ...

With ``model.quant.reconstruct.*`` options the checkpoint may be a reconstructed one: its
hardened weights are then the "quantized weights" of ``own_weights``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map

from mmdopq.apis import analysis
from mmdopq.apis.quantize_cli import build_runner
from mmdopq.nn import quant_layers
from mmdopq.quantizers import quantizers_off
from mmdopq.reconstruct.unit import squared_error
from mmdopq.utils.fileio import dump_json_atomic

PARTS = ('total', 'inherited', 'own', 'own_weights')


def _detach(tree):
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def capture(model, names: list[str], drive: Callable[[Any], None]) -> dict[str, list]:
    """``[args, kwargs, output]`` of every call of each named unit while ``drive(model)`` runs."""
    seen: dict[str, list] = {n: [] for n in names}
    handles = []
    for name in names:
        unit = model.get_submodule(name)

        def pre(_, args, kwargs, name=name):
            seen[name].append([_detach(args), _detach(kwargs), None])

        def post(_, args, kwargs, out, name=name):
            seen[name][-1][2] = _detach(out)

        handles.append(unit.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(unit.register_forward_hook(post, with_kwargs=True))
    model.eval()
    try:
        with torch.no_grad():
            drive(model)
    finally:
        for h in handles:
            h.remove()
    return seen


def unit_errors(
    qmodel, fmodel, names: list[str], drive: Callable[[Any], None]
) -> dict[str, dict[str, float]]:
    """The parts of :data:`PARTS` for each named unit, on what ``drive`` runs through both.

    Args:
        qmodel: The quantized model, in ``quant`` mode.
        fmodel: The float model it came from (same unit names; a LayerNorm fold is fine).
        names: Units whose calls match one to one in the two models (not RoI heads).
        drive: Runs a model over the test data, the same data for both models.

    Returns:
        dict: unit name -> part -> relative error.
    """
    q_seen, f_seen = capture(qmodel, names, drive), capture(fmodel, names, drive)
    units = {}
    with torch.no_grad():
        for name in names:
            qu, fu = qmodel.get_submodule(name), fmodel.get_submodule(name)
            qs, fs = q_seen[name], f_seen[name]
            if len(qs) != len(fs):
                raise RuntimeError(f'{name}: {len(qs)} quantized calls, {len(fs)} float calls')
            if not all(_same_shapes(qo, fo) for (_, _, qo), (_, _, fo) in zip(qs, fs)):
                raise RuntimeError(f'{name}: the two models give outputs of other shapes')
            acts = [
                q
                for _, layer in quant_layers(qu)
                for qn, q in layer.quantizers()
                if qn != 'weight_quantizer'
            ]
            # the float output's energy once per unit; each part's error summed call by call
            err = dict.fromkeys(PARTS, 0.0)
            signal = 0.0
            for (qa, qk, qo), (fa, fk, fo) in zip(qs, fs):
                signal += sum(float(t.float().pow(2).sum()) for t in _leaves(fo))
                err['total'] += float(squared_error(qo, fo))
                err['inherited'] += float(squared_error(fu(*qa, **qk), fo))
                err['own'] += float(squared_error(qu(*fa, **fk), fo))
                with quantizers_off(acts):
                    err['own_weights'] += float(squared_error(qu(*fa, **fk), fo))
            units[name] = {p: e / max(signal, 1e-30) for p, e in err.items()}
    return units


def main(argv=None) -> dict:
    parser = analysis.analysis_parser('Own and inherited output error of each unit', 'logs')
    parser.add_argument('float_checkpoint', help='the float checkpoint the model came from')
    parser.add_argument('--batches', type=int, default=8, help='test batches to run')
    parser.add_argument('--out', required=True, help='JSON file to write')
    args = parser.parse_args(argv)
    _, recipe, runner, qmodel, loaded, _ = analysis.build_analysis_runner(args, 'unit_error')
    # RoI heads see other regions in the two models: their outputs do not match element-wise
    kinds = qmodel.quant_plan.unit_kinds
    names = [n for n, _ in qmodel.quant_plan.units if kinds.get(n) != 'roi']
    fargs = argparse.Namespace(
        config=args.config,
        checkpoint=args.float_checkpoint,
        recipe='float',
        bits=None,
        seed=None,
        cfg_options=args.cfg_options,
        launcher='none',
        work_dir=(args.work_dir or 'work_dirs/unit_error') + '_float',
        out=None,
    )
    _, _, frunner, fmodel, _, _ = build_runner(fargs)
    fmodel.eval()

    def drive(model) -> None:
        loader = (runner if model is qmodel else frunner).test_dataloader
        for i, batch in enumerate(loader):
            if i == args.batches:
                break
            model.test_step(batch)

    units = unit_errors(qmodel, fmodel, names, drive)
    for name, parts in units.items():
        print(name, ' '.join(f'{p} {parts[p]:.4f}' for p in PARTS))
    record = dict(
        **analysis.analysis_record(args.config, args.checkpoint, recipe, loaded, argv),
        float_checkpoint=args.float_checkpoint,
        batches=args.batches,
        units=units,
    )
    dump_json_atomic(record, args.out)
    return record


def _leaves(tree) -> list:
    """The floating-point tensors of an output (those :func:`squared_error` compares)."""
    return [
        t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()
    ]


def _same_shapes(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(x.shape == y.shape for x, y in zip(la, lb))


if __name__ == '__main__':
    main(sys.argv[1:])
