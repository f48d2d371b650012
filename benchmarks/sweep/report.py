"""Summaries of a sweep's runs: mean and spread over seeds, DopQ vs RepQ, tables, results files."""

from __future__ import annotations

import json
import math
import os
import os.path as osp
import platform
import statistics
from collections.abc import Sequence
from typing import Optional

from mmdopq.utils.fileio import dump_json_atomic, write_text_atomic

from .variants import VARIANT_NOTES, VARIANTS


def percent(name: str, value: float) -> float:
    """Metric in percent points (COCO APs come as fractions, accuracies as percent)."""
    return 100.0 * value if name.startswith('coco/') else float(value)


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float('nan')


def _std(values: Sequence[float]) -> float:
    return float(statistics.stdev(values)) if len(values) > 1 else 0.0


def summarize(runs: Sequence[dict], val_images: Optional[dict] = None) -> list[dict]:
    """One record per (model, recipe, bits): mean and spread over seeds, vs float.

    Args:
        runs: Per-seed records of :func:`.runner.run_quantize`; each model needs a float run.
        val_images: Number of evaluated images per model (for the calibration ratio).

    Returns:
        list[dict]: Records with ``model``, ``recipe``, ``bits``, ``metric_name``, ``metric``
        (mean over seeds, percent), ``metric_std`` / ``metric_min`` / ``metric_max``,
        ``metric_seeds``, ``float_metric``, ``drop``, ``metrics`` (every reported metric's
        mean) and ``metrics_std``, ``calib_s``, ``eval_s``, ``float_eval_s``,
        ``eval_vs_float``, ``calib_vs_float_pass`` (calibration time over the time of one
        float pass over the calibration images, estimated per image from the float
        evaluation), ``recon_s`` (block reconstruction's part of ``calib_s``, ``None``
        without it) and ``recon_vs_float_eval`` (over the float evaluation of the same
        sweep), ``peak_rss_mb`` (max over seeds) and ``seeds``.
    """
    floats = {r['model']: r for r in runs if r['recipe'] == 'float'}
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r['model'], r['recipe'], r['bits']), []).append(r)
    out = []
    for (model, recipe, bits), rs in groups.items():
        if model not in floats:
            raise ValueError(f'{model}: no float run to compare {recipe} {bits} against')
        fl = floats[model]
        vals = [r['metric'] for r in rs]
        names = list(rs[0]['metrics'])
        n_val = (val_images or {}).get(model)
        calib_s = _mean([r['calib_s'] for r in rs])
        recon = [r['recon_s'] for r in rs if r.get('recon_s') is not None]
        float_pass = None
        if n_val and rs[0]['calib_images']:
            float_pass = fl['eval_s'] / n_val * rs[0]['calib_images']
        out.append(
            dict(
                model=model,
                recipe=recipe,
                bits=bits,
                metric_name=rs[0]['metric_name'],
                metric=_mean(vals),
                metric_std=_std(vals),
                metric_min=min(vals),
                metric_max=max(vals),
                metric_seeds=vals,
                float_metric=fl['metric'],
                drop=_mean(vals) - fl['metric'],
                metrics={k: _mean([r['metrics'][k] for r in rs]) for k in names},
                metrics_std={k: _std([r['metrics'][k] for r in rs]) for k in names},
                float_metrics=fl['metrics'],
                calib_s=calib_s,
                recon_s=_mean(recon) if recon else None,
                recon_vs_float_eval=_mean(recon) / fl['eval_s'] if recon else None,
                eval_s=_mean([r['eval_s'] for r in rs]),
                float_eval_s=fl['eval_s'],
                eval_vs_float=_mean([r['eval_s'] for r in rs]) / fl['eval_s'],
                calib_vs_float_pass=(calib_s / float_pass) if float_pass else None,
                peak_rss_mb=max(r['peak_rss_mb'] for r in rs),
                calib_images=rs[0]['calib_images'],
                val_images=n_val,
                seeds=[r['seed'] for r in rs],
                threads=sorted({r['threads'] for r in rs if r.get('threads') is not None}),
                float_threads=fl.get('threads'),
                checkpoint_sha256=fl.get('checkpoint_sha256'),
                quant=rs[0]['quant'],
            )
        )
    order = {v: i for i, v in enumerate(VARIANTS)}
    out.sort(key=lambda r: (r['model'], r['bits'] != 'float', r['bits'], order.get(r['recipe'])))
    return out


def compare_recipes(records: Sequence[dict], a: str = 'dopq', b: str = 'repq') -> list[dict]:
    """Recipe ``a`` against recipe ``b`` per (model, bits), with a verdict.

    A difference is called ``'real'`` only when it exceeds the spread: the root sum of squares
    of the two recipes' standard deviations over calibration seeds (so both need two seeds or
    more; with fewer the verdict is ``'one seed'``).

    Returns:
        list[dict]: ``model``, ``bits``, ``metric_name``, ``a`` / ``b`` (names), ``metric_a`` /
        ``metric_b`` (means), ``diff`` (a - b), ``spread``, ``seeds`` and ``verdict``
        (``'real'``, ``'within spread'`` or ``'one seed'``).
    """
    by_key = {(r['model'], r['recipe'], r['bits']): r for r in records}
    out = []
    for (model, recipe, bits), ra in by_key.items():
        rb = by_key.get((model, b, bits))
        if recipe != a or rb is None:
            continue
        diff = ra['metric'] - rb['metric']
        if min(len(ra['seeds']), len(rb['seeds'])) < 2:
            spread, verdict = None, 'one seed'
        else:
            spread = math.hypot(ra['metric_std'], rb['metric_std'])
            verdict = 'real' if abs(diff) > spread else 'within spread'
        out.append(
            dict(
                model=model,
                bits=bits,
                metric_name=ra['metric_name'],
                a=a,
                b=b,
                metric_a=ra['metric'],
                metric_b=rb['metric'],
                diff=diff,
                spread=spread,
                seeds=min(len(ra['seeds']), len(rb['seeds'])),
                verdict=verdict,
            )
        )
    return out


def compare_reconstruction(records: Sequence[dict], suffix: str = '-recon') -> list[dict]:
    """Each ``<recipe><suffix>`` row against its calibration-only ``<recipe>`` row.

    Returns:
        list[dict]: ``model``, ``bits``, ``recipe`` (the calibration-only one),
        ``metric_name``, ``float_metric``, ``calib_only`` / ``recon`` (means) and their
        ``*_std``, ``gain`` (recon - calib_only), ``recovered`` (the share of the
        calibration-only loss to float that reconstruction wins back; ``None`` when there
        was no loss), ``to_float`` (recon - float), ``recon_s``, ``float_eval_s`` and
        ``seeds`` (of the reconstructed row).
    """
    by_key = {(r['model'], r['recipe'], r['bits']): r for r in records}
    out = []
    for (model, recipe, bits), rr in by_key.items():
        if not recipe.endswith(suffix):
            continue
        rc = by_key.get((model, recipe[: -len(suffix)], bits))
        if rc is None:
            continue
        loss = rr['float_metric'] - rc['metric']
        out.append(
            dict(
                model=model,
                bits=bits,
                recipe=rc['recipe'],
                metric_name=rr['metric_name'],
                float_metric=rr['float_metric'],
                calib_only=rc['metric'],
                calib_only_std=rc['metric_std'],
                recon=rr['metric'],
                recon_std=rr['metric_std'],
                gain=rr['metric'] - rc['metric'],
                recovered=(rr['metric'] - rc['metric']) / loss if loss > 0 else None,
                to_float=rr['metric'] - rr['float_metric'],
                recon_s=rr.get('recon_s'),
                float_eval_s=rr['float_eval_s'],
                seeds=len(rr['seeds']),
            )
        )
    return out


def machine_info() -> dict:
    """CPU, cores and OS of this machine (recorded once per results file)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        system=f'{platform.system()} {platform.release()}',
        python=platform.python_version(),
    )


def _fmt(value: Optional[float], spec: str = '.1f') -> str:
    return '-' if value is None else format(value, spec)


def render_markdown(records: Sequence[dict], header: dict, title: str) -> str:
    """Tables (one per model) of a summary, with the run's machine and versions."""
    lines = [f'# {title}', '']
    for key in ('command', 'date'):
        if header.get(key):
            lines.append(
                f'- {key}: `{header[key]}`' if key == 'command' else f'- {key}: {header[key]}'
            )
    m = header.get('machine', {})
    if m:
        lines.append(f'- machine: {m.get("cpu")}, {m.get("cores")} cores, {m.get("system")}')
    cpus = header.get('run_cpus')
    if cpus:  # some runs were made elsewhere: their CPU moves results within the seed spread
        counts = ', '.join(f'{cpu}: {n}' for cpu, n in cpus.items())
        lines.append(f'- runs by CPU (`cpu` of each run in results.json): {counts}')
    v = header.get('versions', {})
    if v:
        keys = ('torch', 'mmcv', 'mmengine', 'mmdet', 'timm', 'mmdopq')
        lines.append('- versions: ' + ', '.join(f'{k} {v[k]}' for k in keys if k in v))
    for e in header.get('earlier', []):
        em = e.get('machine') or {}
        lines.append(
            f'- rows of {", ".join(e["models"])}: kept from an earlier sweep ({e.get("date")}, '
            f'`{e.get("command")}`, {e.get("threads")} thread(s), {em.get("cpu")})'
        )
    for path in header.get('runs_from', []):
        lines.append(f'- runs marked in results.json as `recorded_in`: taken from `{path}`')
    lines.append(
        '- metric: mean over calibration seeds, +- sample standard deviation (n = seeds); '
        'drop = mean - float; times in seconds (calibration, then evaluation of the images '
        'counted beside the model; x float = eval time over float eval time, measured in the '
        'same run)'
    )
    lines.append('')
    by_model: dict[str, list[dict]] = {}
    for r in records:
        by_model.setdefault(r['model'], []).append(r)
    recon_cols = any(r.get('recon_s') is not None for r in records)
    for model, rs in by_model.items():
        first = rs[0]
        names = list(first['metrics'])
        n_val = first.get('val_images')
        lines.append(f'## {model}' + (f' ({n_val} images evaluated)' if n_val else ''))
        lines.append('')
        threads = {t for r in rs for t in r.get('threads', [])}
        threads |= {r['float_threads'] for r in rs if r.get('float_threads') is not None}
        if len(threads) > 1:
            lines.append(
                f'Runs of this model used {" and ".join(map(str, sorted(threads)))} torch '
                'threads (finished runs were reused across commands): its times and x-float '
                'ratios compare unlike runs.'
            )
            lines.append('')
        head = ['recipe', 'bits'] + [f'{n} (%)' for n in names] + ['drop']
        head += ['calib s', 'eval s', 'x float', 'calib / float pass']
        if recon_cols:
            head += ['recon s', 'recon / float eval']
        head += ['peak RSS MB', 'seeds']
        lines.append('| ' + ' | '.join(head) + ' |')
        lines.append('|' + '---|' * len(head))
        for r in rs:
            cells = [r['recipe'], r['bits']]
            for n in names:
                s = _fmt(r['metrics'][n], '.2f')
                if len(r['seeds']) > 1:
                    s += f' +- {r["metrics_std"][n]:.2f}'
                cells.append(s)
            cells.append('' if r['recipe'] == 'float' else f'{r["drop"]:+.2f}')
            cells += [
                _fmt(r['calib_s']) if r['recipe'] != 'float' else '',
                _fmt(r['eval_s']),
                _fmt(r['eval_vs_float'], '.2f'),
                _fmt(r['calib_vs_float_pass'], '.2f') if r['recipe'] != 'float' else '',
            ]
            if recon_cols:
                has = r.get('recon_s') is not None
                cells += [
                    _fmt(r['recon_s']) if has else '',
                    _fmt(r['recon_vs_float_eval'], '.2f') if has else '',
                ]
            cells += [
                _fmt(r['peak_rss_mb'], '.0f'),
                str(len(r['seeds'])),
            ]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    recon_rows = compare_reconstruction(records)
    if recon_rows:
        lines += _reconstruction_section(recon_rows)
    comparisons = compare_recipes(records)
    if recon_rows:
        comparisons += compare_recipes(records, 'dopq-recon', 'repq-recon')
    if comparisons:
        lines.append('## DopQ vs the RepQ-ViT recipe')
        lines.append('')
        lines.append(
            'diff = dopq - repq (primary metric, percent); a difference is real only when it '
            'exceeds the spread, sqrt(std_dopq^2 + std_repq^2) over calibration seeds.'
        )
        lines.append('')
        lines.append('| model | bits | recipes | DopQ | RepQ | diff | spread | seeds | verdict |')
        lines.append('|---|---|---|---|---|---|---|---|---|')
        for c in comparisons:
            cells = [c['model'], c['bits'], f'{c["a"]} vs {c["b"]}']
            cells += [f'{c["metric_a"]:.2f}', f'{c["metric_b"]:.2f}']
            cells += [f'{c["diff"]:+.2f}', _fmt(c['spread'], '.2f'), str(c['seeds'])]
            cells.append(c['verdict'])
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    used = {r['recipe'] for r in records}
    notes = [f'`{k}` = {v}' for k, v in VARIANT_NOTES.items() if k in used]
    lines.append('Recipes: ' + '; '.join(notes))
    lines.append('')
    return '\n'.join(lines)


def _reconstruction_section(rows: Sequence[dict]) -> list[str]:
    lines = ['## Block reconstruction against calibration only', '']
    lines.append(
        'calib only / recon: mean +- std over seeds (percent); gain = recon - calib only; '
        'recovered = gain / (float - calib only); recon s = reconstruction time, beside the '
        'float evaluation of the same sweep.'
    )
    lines.append('')
    head = ['model', 'bits', 'recipe', 'float', 'calib only', 'recon', 'gain', 'recovered']
    head += ['recon - float', 'recon s', 'float eval s', 'seeds']
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for c in rows:
        cells = [c['model'], c['bits'], c['recipe'], f'{c["float_metric"]:.2f}']
        cells += [
            f'{c["calib_only"]:.2f} +- {c["calib_only_std"]:.2f}',
            f'{c["recon"]:.2f} +- {c["recon_std"]:.2f}',
            f'{c["gain"]:+.2f}',
            '-' if c['recovered'] is None else f'{100 * c["recovered"]:.0f} %',
            f'{c["to_float"]:+.2f}',
            _fmt(c['recon_s']),
            _fmt(c['float_eval_s']),
            str(c['seeds']),
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
    return lines


def merge_earlier(
    records: Sequence[dict], runs: Sequence[dict], header: dict, earlier_path: str
) -> tuple[list[dict], list[dict], dict]:
    """Keep the other models' rows of an earlier ``results.json``; this sweep replaces its own.

    Re-running one reference model (a new checkpoint, say) must not drop the other models'
    rows, which can take hours to reproduce. The kept rows keep their own per-seed runs and
    their sweep's date, command, machine, versions and thread count, under ``header['earlier']``
    (one entry per earlier sweep), so a merged file never presents them as part of this run.

    Args:
        records: This sweep's summary records.
        runs: This sweep's per-seed runs.
        header: This sweep's header (date, command, machine, versions, threads, title).
        earlier_path: The ``results.json`` to merge with.

    Returns:
        tuple: Records (the earlier file's model order, new models last), runs and the header.

    Raises:
        ValueError: The earlier file is not a sweep result, or was made for another title
            (e.g. the tuning split instead of val).
    """
    with open(earlier_path) as f:
        old = json.load(f)
    if not isinstance(old, dict) or not isinstance(old.get('records'), list):
        raise ValueError(f'{earlier_path}: not a recipe-sweep results.json (no records list)')
    if old.get('title') != header.get('title'):
        raise ValueError(
            f'{earlier_path}: made for {old.get("title")!r}, this sweep is '
            f'{header.get("title")!r}; refusing to merge their rows'
        )
    now = {r['model'] for r in records}
    kept = [r for r in old['records'] if r.get('model') not in now]
    kept_models = list(dict.fromkeys(r['model'] for r in kept))
    order = list(
        dict.fromkeys([r.get('model') for r in old['records']] + [r['model'] for r in records])
    )
    by_model: dict = {}
    for r in [*kept, *records]:
        by_model.setdefault(r['model'], []).append(r)
    merged = [r for m in order for r in by_model.get(m, [])]
    merged_runs = [r for r in old.get('runs', []) if r.get('model') in kept_models] + list(runs)
    earlier = []
    for entry in old.get('earlier', []):  # rows the earlier file itself had merged in
        models = [m for m in entry['models'] if m in kept_models]
        if models:
            earlier.append(dict(entry, models=models))
    own = [m for m in kept_models if not any(m in e['models'] for e in earlier)]
    if own:
        keys = ('date', 'command', 'machine', 'versions', 'threads')
        earlier.append(dict(models=own, **{k: old.get(k) for k in keys}))
    return merged, merged_runs, dict(header, earlier=earlier)


def write_results(
    records: Sequence[dict], runs: Sequence[dict], out_dir: str, header: dict, title: str
) -> tuple[str, str]:
    """Write ``results.json`` (header + records + per-seed runs) and ``results.md`` atomically."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = osp.join(out_dir, 'results.json')
    md_path = osp.join(out_dir, 'results.md')
    slim_runs = [{k: v for k, v in r.items() if k not in ('mosf', 'versions')} for r in runs]
    comparisons = compare_recipes(records) + compare_recipes(records, 'dopq-recon', 'repq-recon')
    data = dict(**header, records=list(records), comparisons=comparisons)
    recon = compare_reconstruction(records)
    if recon:
        data['reconstruction'] = recon
    dump_json_atomic(dict(**data, runs=slim_runs), json_path)
    write_text_atomic(md_path, render_markdown(records, header, title))
    return json_path, md_path
