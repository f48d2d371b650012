"""Which quantizers cost the accuracy? Evaluate a quantized model with groups of them switched off.

Loads a quantized checkpoint written by ``tools/quantize.py`` (no re-calibration: the
parameters under study are exactly the saved ones), evaluates it as is, then once per group
of quantizers with that group switched off (its tensors pass through in float), and once
with every quantizer off (which must give the float model's metric back: the LayerNorm fold
is exact). The recovery of a group (its metric minus the fully quantized metric) is how much
of the loss it causes::

    python tools/analysis/quant_sensitivity.py CONFIG QUANTIZED_CKPT [--work-dir DIR]
        [--recipe NAME] [--bits wXaY] [--kind act|weight|all]
        [--by role|component|part] [--depth N] [--expand REGEX ...] [--select REGEX]
        [--cfg-options k=v ...]

Quantizers are grouped by role: the qualified name with every layer index replaced by ``*``
(``blocks.*.mlp.fc2.input_quantizer`` is one group across all blocks). ``--expand REGEX``
splits the roles it matches back into single quantizers, to find the layer inside a role.
``--by component`` groups them instead by the part of the recipe that sets them (see
:meth:`mmdopq.adapters.QuantPlan.components`): the attention maps (what TanQ replaces), the
LayerNorm consumers' inputs (what the fold rule, e.g. MOSF, sets), the other activations and
the weights. What switching a component off recovers is about the most that a better
quantizer of that component alone could gain. ``--by part`` groups them by where they sit: the
first ``--depth`` parts of the name (depth 2 on a detector: ``backbone.stages``,
``neck.fpn_convs``, ``rpn_head.rpn_conv``, ``roi_head.bbox_head``, ...), to find which part of
a model holds the loss in a few evaluations; ``--select REGEX`` then studies only the
quantizers whose names match (``--select roi_head.bbox_head``: the roles inside that part).
Writes ``sensitivity.json`` and ``sensitivity.md`` into the work dir (atomically). Evaluate
on a held-out split (e.g. ``--cfg-options test_dataloader.dataset.data_root=...``), never on
the split you report.
"""

from __future__ import annotations

import os.path as osp
import re
import time
from typing import Optional

from mmdopq.apis import analysis
from mmdopq.utils.fileio import dump_json_atomic, write_text_atomic

KINDS = ('act', 'weight', 'all')
GROUPINGS = ('role', 'component', 'part')


def parse_args(argv=None):
    parser = analysis.analysis_parser(
        'mmdopq: per-group quantization sensitivity of a quantized model',
        'sensitivity.{json,md}',
    )
    parser.add_argument(
        '--kind',
        choices=KINDS,
        default='all',
        help='which quantizers to study: activation (inputs, matmul operands, attention '
        'maps), weight, or all',
    )
    parser.add_argument(
        '--by',
        choices=GROUPINGS,
        default='role',
        help='group quantizers by role across blocks, by recipe component, or by the part '
        'of the model they sit in (see --depth)',
    )
    parser.add_argument(
        '--depth',
        type=int,
        default=2,
        help='with --by part: how many leading parts of a quantizer name name its group',
    )
    parser.add_argument(
        '--expand',
        nargs='+',
        default=[],
        metavar='REGEX',
        help='split the roles matching REGEX into single quantizers',
    )
    parser.add_argument(
        '--select',
        metavar='REGEX',
        help='study only the quantizers whose qualified name matches REGEX (the fully '
        'quantized and every-quantizer-off evaluations still cover all of them)',
    )
    parser.add_argument('--metric', help='metric key to report (default: the first one)')
    return parser.parse_args(argv)


def role_of(name: str) -> str:
    """``blocks.3.attn.qkv.input_quantizer`` -> ``blocks.*.attn.qkv.input_quantizer``."""
    return re.sub(r'(?<=\.)\d+(?=\.)|^\d+(?=\.)', '*', name)


def check_kind(kind: str) -> None:
    """Raise a ``ValueError`` if ``kind`` is not one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f'kind={kind!r}; choose from {KINDS}')


def kind_selects(kind: str, is_weight: bool) -> bool:
    """Whether ``--kind`` studies a weight (``is_weight``) or activation quantizer."""
    return kind == 'all' or (kind == 'weight') == is_weight


def group_quantizers(names: list[str], kind: str, expand: list[str]) -> dict[str, list[str]]:
    """Groups (role, or single name for expanded roles) -> quantizer names, in model order.

    Args:
        names: Qualified names of the model's enabled quantizers.
        kind: ``'act'``, ``'weight'`` or ``'all'``.
        expand: Regexes; roles matching any of them become one group per quantizer.

    Raises:
        ValueError: An ``expand`` regex is invalid or matches no role.
    """
    check_kind(kind)
    selected = [n for n in names if kind_selects(kind, n.endswith('weight_quantizer'))]
    patterns = []
    for text in expand:
        try:
            patterns.append(re.compile(text))
        except re.error as e:
            raise ValueError(f'--expand {text!r} is not a valid regex: {e}') from None
    groups: dict[str, list[str]] = {}
    used = [False] * len(patterns)
    for name in selected:
        role = role_of(name)
        hits = [i for i, p in enumerate(patterns) if p.search(role)]
        for i in hits:
            used[i] = True
        groups.setdefault(name if hits else role, []).append(name)
    unused = [expand[i] for i, u in enumerate(used) if not u]
    if unused:
        raise ValueError(
            f'--expand {unused} matched no {kind} quantizer role; roles: '
            f'{sorted({role_of(n) for n in selected})}'
        )
    return groups


def select_quantizers(quantizers: dict, select: Optional[str]) -> dict:
    """The quantizers whose qualified names match ``select`` (all with ``None``).

    Raises:
        ValueError: ``select`` is not a valid regex or matches no quantizer.
    """
    if select is None:
        return quantizers
    try:
        pattern = re.compile(select)
    except re.error as e:
        raise ValueError(f'--select {select!r} is not a valid regex: {e}') from None
    chosen = {n: q for n, q in quantizers.items() if pattern.search(n)}
    if not chosen:
        parts = sorted(group_parts(list(quantizers), 'all', 2))
        raise ValueError(f'--select {select!r} matches no enabled quantizer; parts: {parts}')
    return chosen


def group_parts(names: list[str], kind: str, depth: int) -> dict[str, list[str]]:
    """Groups by the part of the model: the first ``depth`` parts of a name -> names.

    Raises:
        ValueError: ``depth`` is below 1.
    """
    check_kind(kind)
    if depth < 1:
        raise ValueError(f'--depth {depth}: give 1 or more')
    groups: dict[str, list[str]] = {}
    for name in names:
        if kind_selects(kind, name.endswith('weight_quantizer')):
            parts = name.split('.')[:-1]  # the quantizer's own name is never the part
            groups.setdefault('.'.join(parts[:depth]), []).append(name)
    return groups


def group_components(model, names: dict, kind: str) -> dict[str, list[str]]:
    """Groups by recipe component: component -> names of its enabled quantizers.

    Args:
        model: The quantized model (its ``quant_plan`` declares the components).
        names: Qualified name -> quantizer, of the enabled quantizers of ``model``.
        kind: ``'act'``, ``'weight'`` or ``'all'``.

    Raises:
        ValueError: ``model`` has no quant plan, or an enabled quantizer is not declared in it.
    """
    check_kind(kind)
    plan = getattr(model, 'quant_plan', None)
    if plan is None:
        raise ValueError(
            f'--by component needs a quantized model; {type(model).__name__} has no quant_plan'
        )
    name_of = {id(q): n for n, q in names.items()}
    groups: dict[str, list[str]] = {}
    seen = set()
    for comp, members in plan.components().items():
        seen.update(id(q) for q in members)
        if not kind_selects(kind, comp == 'weight'):
            continue
        found = [name_of[id(q)] for q in members if id(q) in name_of]
        if found:
            groups[comp] = found
    stray = [n for n, q in names.items() if id(q) not in seen]
    if stray:
        raise ValueError(f'quantizers outside the quant plan: {stray[:5]}')
    return groups


def markdown(record: dict) -> str:
    m = record['metric_name']
    lines = [
        f'# Quantization sensitivity: {osp.basename(record["config"])}',
        '',
        f'- checkpoint: `{record["checkpoint"]}` (recipe {record["recipe"]}, {record["bits"]})',
        f'- test images: {record["test_images"]}; kind: {record["kind"]}; '
        f'grouped by: {record["by"]}'
        + (f' (depth {record["depth"]})' if record.get('depth') else '')
        + (f'; only quantizers matching `{record["select"]}`' if record.get('select') else ''),
        f'- {m}: quantized {record["quantized"]:.4g}, every quantizer off {record["all_off"]:.4g}',
        '',
        '| group (switched off) | quantizers | ' + m + ' | recovered |',
        '|---|---|---|---|',
    ]
    for g in record['groups']:
        lines.append(
            f'| `{g["group"]}` | {g["num_quantizers"]} | {g["metric"]:.4g} | '
            f'{g["recovered"]:+.4g} |'
        )
    return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
    """Run the analysis; returns the record also written to ``sensitivity.json``."""
    args = parse_args(argv)
    from mmdopq.quantizers import BaseQuantizer, quantizers_off

    if args.expand and args.by != 'role':
        # refused before the model is built and the checkpoint loaded
        raise ValueError(f'--expand splits roles; it does not apply with --by {args.by}')
    cfg, recipe, runner, model, loaded, _ = analysis.build_analysis_runner(args, 'sensitivity')
    quantizers = {
        n: m for n, m in model.named_modules() if isinstance(m, BaseQuantizer) and m.enabled
    }
    studied = select_quantizers(quantizers, args.select)
    if args.by == 'component':
        groups = group_components(model, studied, args.kind)
    elif args.by == 'part':
        groups = group_parts(list(studied), args.kind, args.depth)
    else:
        groups = group_quantizers(list(studied), args.kind, args.expand)
    logger = runner.logger

    def evaluate(off: list[str]) -> dict:
        with quantizers_off(quantizers[n] for n in off):
            return runner.test()

    total = len(groups) + 2
    t = time.perf_counter()
    metrics = evaluate([])
    metric_name = args.metric or next(iter(metrics))
    if metric_name not in metrics:
        raise KeyError(f'--metric {metric_name!r} is not among the metrics {sorted(metrics)}')

    def log(label: str, value: float) -> None:
        logger.info(
            f'mmdopq sensitivity: {label}: {metric_name} {value:.4f} '
            f'({time.perf_counter() - t:.1f}s)'
        )

    quantized = float(metrics[metric_name])
    log(f'[1/{total}] fully quantized', quantized)
    t = time.perf_counter()
    all_off = float(evaluate(list(quantizers))[metric_name])
    log(f'[2/{total}] every quantizer off', all_off)
    rows = []
    for i, (group, members) in enumerate(groups.items()):
        t = time.perf_counter()
        value = float(evaluate(members)[metric_name])
        log(f'[{i + 3}/{total}] {group} off', value)
        rows.append(
            dict(
                group=group,
                num_quantizers=len(members),
                quantizers=members,
                metric=value,
                recovered=value - quantized,
            )
        )
    rows.sort(key=lambda r: -r['recovered'])
    record = dict(
        **analysis.analysis_record(args.config, args.checkpoint, recipe, loaded, argv),
        kind=args.kind,
        by=args.by,
        depth=args.depth if args.by == 'part' else None,
        select=args.select,
        expand=args.expand,
        test_images=len(runner.test_loop.dataloader.dataset),
        metric_name=metric_name,
        quantized=quantized,
        all_off=all_off,
        groups=rows,
    )
    dump_json_atomic(record, osp.join(cfg.work_dir, 'sensitivity.json'))
    write_text_atomic(osp.join(cfg.work_dir, 'sensitivity.md'), markdown(record))
    logger.info(f'mmdopq sensitivity: written to {osp.join(cfg.work_dir, "sensitivity.md")}')
    return record


if __name__ == '__main__':
    main()
