"""Run ``tools/quantize.py`` over recipes x bits x seeds and summarise the results.

Shared by the demo (``tools/demo.py``) and the recipe benchmark
(``benchmarks/bench_recipes.py``). Every run is its own ``tools/quantize.py`` process, so each
gets a clean interpreter, its own peak RSS (``wait4``) and the exact command a user would type;
runs whose ``results.json`` already matches their command are reused, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from ..utils.fileio import dump_json_atomic, file_sha256, write_text_atomic
from .reference import REPO_ROOT, ReferenceModel

#: The dense TanQ grid of ``tanq_only-fine_grid``: 19 centres x 21 curvature fractions (the
#: default is 9 x 10) and a 9 x 9 refinement (default 5 x 5).
FINE_CENTRES = [f'{0.05 * i:.2f}' for i in range(1, 20)]
FINE_FRACTIONS = '0 .1 .2 .3 .4 .5 .6 .65 .7 .75 .8 .83 .86 .89 .91 .93 .95 .96 .97 .98 .99'.split()
#: Benchmark variants: name -> (``--recipe`` of tools/quantize.py, extra ``--cfg-options``).
#: The MOSF fold rules are the rows ``tanq_only`` (rule ``mean``: TanQ + RepQ-ViT's exact
#: fold), ``dopq-median`` (rule ``median``) and ``dopq`` (rule ``mad``, i.e. MOSF). The
#: ``*-qk_out`` rows add mmdopq's query-quantizer objective (error of ``q @ k^T``) to a recipe;
#: the ``*-act_minmax`` rows calibrate activations on their min/max range instead of RepQ-ViT's
#: percentile search, ``*-act_minmax_floor`` also floors their zero points (no level below the
#: range); ``*-seq`` calibrate in RepQ-ViT's order (``calib_mode='sequential'``: each layer on
#: what the quantized layers before it produce) instead of on float activations. The
#: ``tanq_only-*`` rows vary TanQ's calibration alone (objective, symmetric form, a denser search
#: grid) and the ``*-calib128`` rows calibrate on 128 images instead of 32.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    'float': ('float', ()),
    'repq': ('repq', ()),
    'dopq': ('dopq', ()),
    'tanq_only': ('tanq_only', ()),
    'mosf_only': ('mosf_only', ()),
    'dopq-median': ('dopq', ('model.quant.reparam_rule=median',)),
    'repq-qk_out': ('repq', ('model.quant.qk_objective=output',)),
    'dopq-qk_out': ('dopq', ('model.quant.qk_objective=output',)),
    'repq-act_minmax': ('repq', ('model.quant.act_method=minmax',)),
    'dopq-act_minmax': ('dopq', ('model.quant.act_method=minmax',)),
    'repq-act_minmax_floor': (
        'repq',
        ('model.quant.act_method=minmax', 'model.quant.act_zero_point=floor'),
    ),
    'dopq-act_minmax_floor': (
        'dopq',
        ('model.quant.act_method=minmax', 'model.quant.act_zero_point=floor'),
    ),
    'repq-seq': ('repq', ('model.quant.calib_mode=sequential',)),
    'dopq-seq': ('dopq', ('model.quant.calib_mode=sequential',)),
    'tanq_only-tensor_obj': ('tanq_only', ('model.quant.softmax_objective=tensor',)),
    'tanq_only-symmetric': ('tanq_only', ('model.quant.post_softmax=tan_symmetric',)),
    'tanq_only-fine_grid': (
        'tanq_only',
        (
            'model.quant.tanq_search.centres=[' + ','.join(FINE_CENTRES) + ']',
            'model.quant.tanq_search.alpha_fractions=[' + ','.join(FINE_FRACTIONS) + ']',
            'model.quant.tanq_search.refine_steps=9',
        ),
    ),
    'repq-calib128': ('repq', ('custom_hooks.0.num_images=128',)),
    'dopq-calib128': ('dopq', ('custom_hooks.0.num_images=128',)),
}
#: What each variant is, for tables.
VARIANT_NOTES = {
    'float': 'float model (no quantization)',
    'repq': 'RepQ-ViT recipe: log-sqrt2 post-Softmax + mean fold',
    'dopq': 'DopQ-ViT: TanQ + MOSF (fold rule mad)',
    'tanq_only': 'TanQ + mean fold (= DopQ with fold rule mean)',
    'mosf_only': 'log-sqrt2 + MOSF',
    'dopq-median': 'TanQ + median fold (DopQ with fold rule median)',
    'repq-qk_out': 'RepQ-ViT recipe, query quantizer calibrated on the q @ k^T error',
    'dopq-qk_out': 'DopQ-ViT, query quantizer calibrated on the q @ k^T error',
    'repq-act_minmax': 'RepQ-ViT recipe, activations calibrated on their min/max range',
    'dopq-act_minmax': 'DopQ-ViT, activations calibrated on their min/max range',
    'repq-act_minmax_floor': 'RepQ-ViT recipe, activations on min/max ranges, zero point floored',
    'dopq-act_minmax_floor': 'DopQ-ViT, activations on min/max ranges, zero point floored',
    'repq-seq': "RepQ-ViT recipe, calibrated in RepQ-ViT's order (on quantized inputs)",
    'dopq-seq': "DopQ-ViT, calibrated in RepQ-ViT's order (on quantized inputs)",
    'tanq_only-tensor_obj': 'TanQ calibrated on its own error (not the attn @ v error) + mean fold',
    'tanq_only-symmetric': 'TanQ with the centre fixed at 0.5 + mean fold',
    'tanq_only-fine_grid': 'TanQ searched on a 19 x 21 grid, 9 x 9 refinement + mean fold',
    'repq-calib128': 'RepQ-ViT recipe calibrated on 128 images',
    'dopq-calib128': 'DopQ-ViT calibrated on 128 images',
}
QUANTIZE_TOOL = osp.join(REPO_ROOT, 'tools', 'quantize.py')


def percent(name: str, value: float) -> float:
    """Metric in percent points (COCO APs come as fractions, accuracies as percent)."""
    return 100.0 * value if name.startswith('coco/') else float(value)


@dataclass
class RunSpec:
    """One ``tools/quantize.py`` run.

    Attributes:
        model: The reference model.
        variant: A key of :data:`VARIANTS`.
        bits: ``'w4a4'`` etc. (ignored for ``'float'``).
        seed: Calibration seed (image draw and quantizer subsampling).
        work_dir: Where the run writes its log and ``results.json``.
        checkpoint: Float checkpoint (default: the model's committed one).
        cfg_options: Extra ``--cfg-options`` (e.g. a val subset).
        save: Write ``quantized.pth``.
    """

    model: ReferenceModel
    variant: str
    bits: str
    seed: int
    work_dir: str
    checkpoint: Optional[str] = None
    cfg_options: Sequence[str] = field(default_factory=tuple)
    save: bool = False

    @property
    def label(self) -> str:
        if self.variant == 'float':
            return f'{self.model.name} float'
        return f'{self.model.name} {self.variant} {self.bits} seed {self.seed}'

    def command(self, python: str = sys.executable) -> list[str]:
        if self.variant not in VARIANTS:
            raise ValueError(f'unknown variant {self.variant!r}; choose from {sorted(VARIANTS)}')
        recipe, options = VARIANTS[self.variant]
        cmd = [python, QUANTIZE_TOOL, self.model.path('quant_config')]
        cmd += [self.checkpoint or self.model.path('checkpoint'), '--work-dir', self.work_dir]
        cmd += ['--recipe', recipe, '--seed', str(self.seed)]
        if self.variant != 'float':
            cmd += ['--bits', self.bits]
        if not self.save:
            cmd.append('--no-save')
        opts = [*options, *self.cfg_options]
        if opts:
            cmd += ['--cfg-options', *opts]
        return cmd


def _progress_line(log_path: str) -> str:
    """Last progress-looking line of a run's log (mmengine logger lines), shortened."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode('utf-8', 'replace')
    except OSError:
        return ''
    lines = [ln.strip() for ln in tail.replace('\r', '\n').splitlines() if ln.strip()]
    for ln in reversed(lines):
        if '(test)' in ln or 'mmdopq:' in ln:  # Epoch(test) or Iter(test)
            parts = ln.split(' - ', 3)  # 'date time - mmengine - LEVEL - message'
            return parts[-1][:110]
    return ''


def run_quantize(
    spec: RunSpec,
    threads: int = 2,
    cwd: Optional[str] = None,
    echo: Optional[Callable[[str], None]] = print,
    poll_s: float = 15.0,
    reuse: bool = True,
) -> dict:
    """Run one spec; returns its record (see :func:`run_record`).

    The child's output goes to ``work_dir/quantize.log``; every ``poll_s`` seconds the
    latest progress line is echoed. A failed run raises with the log's path and last lines.
    Sweeps running side by side may share runs (e.g. every sweep's float run): the run holds
    ``work_dir/.lock`` while it checks for a finished result and computes it, so a second sweep
    waits for the first one's run and then reuses it instead of overwriting it.
    """
    os.makedirs(spec.work_dir, exist_ok=True)
    with _run_lock(spec, echo):
        return _run_quantize_locked(spec, threads, cwd, echo, poll_s, reuse)


@contextlib.contextmanager
def _run_lock(spec: RunSpec, echo: Optional[Callable[[str], None]]):
    """Exclusive lock on ``spec.work_dir`` between processes; the OS drops it if one dies."""
    with open(osp.join(spec.work_dir, '.lock'), 'a') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if echo:
                echo(f'  {spec.label}: another sweep is running it; waiting for it to finish')
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_quantize_locked(
    spec: RunSpec,
    threads: int,
    cwd: Optional[str],
    echo: Optional[Callable[[str], None]],
    poll_s: float,
    reuse: bool,
) -> dict:
    cmd = spec.command()
    results_file = osp.join(spec.work_dir, 'results.json')
    run_file = osp.join(spec.work_dir, 'run.json')
    # a finished run is reused only for the same command on the same checkpoint bytes (a
    # retrained reference model keeps its path) with the same thread count (its times are
    # compared with the other runs')
    ckpt_sha256 = file_sha256(spec.checkpoint or spec.model.path('checkpoint'))
    if reuse and osp.isfile(results_file) and osp.isfile(run_file):
        with open(run_file) as f:
            previous = json.load(f)
        same_ckpt = previous.get('checkpoint_sha256') == ckpt_sha256
        same_threads = previous.get('threads') == threads
        if previous.get('command') == cmd[1:] and same_ckpt and same_threads:
            if echo:
                echo(f'  {spec.label}: reusing {results_file}')
            return run_record(spec, previous, results_file)
    log_path = osp.join(spec.work_dir, 'quantize.log')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO_ROOT, env.get('PYTHONPATH')]))
    t0 = time.perf_counter()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        last_echo = t0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.5)
            if echo and time.perf_counter() - last_echo >= poll_s:
                last_echo = time.perf_counter()
                echo(f'  {spec.label}: {last_echo - t0:5.0f}s  {_progress_line(log_path)}')
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(log_path, errors='replace') as f:
            tail = ''.join(f.readlines()[-15:])
        raise RuntimeError(
            f'{spec.label}: tools/quantize.py exited with {proc.returncode}; '
            f'log {log_path}:\n{tail}'
        )
    info = dict(
        command=cmd[1:],
        checkpoint_sha256=ckpt_sha256,
        wall_s=wall_s,
        peak_rss_mb=usage.ru_maxrss / 1024,
        threads=threads,
    )
    dump_json_atomic(info, run_file)
    return run_record(spec, info, results_file)


def run_record(spec: RunSpec, info: dict, results_file: str) -> dict:
    """Flatten a run's ``results.json`` into a per-seed record."""
    with open(results_file) as f:
        res = json.load(f)
    metrics = {k: percent(k, v) for k, v in res['metrics'].items() if isinstance(v, (int, float))}
    if spec.model.metric_name not in metrics:
        raise KeyError(
            f'{results_file}: metric {spec.model.metric_name!r} missing; got {sorted(metrics)}'
        )
    calib = res.get('calibration', {})
    return dict(
        model=spec.model.name,
        recipe=spec.variant,
        bits='float' if spec.variant == 'float' else spec.bits,
        seed=spec.seed,
        metric_name=spec.model.metric_name,
        metric=metrics[spec.model.metric_name],
        metrics={k: metrics[k] for k in spec.model.metric_names if k in metrics},
        calib_s=res['calib_s'],
        eval_s=res['eval_s'],
        wall_s=info['wall_s'],
        peak_rss_mb=info['peak_rss_mb'],
        threads=info.get('threads'),
        calib_images=calib.get('num_images', 0),
        test_images=res.get('test_images'),
        calib_ids=calib.get('calib_ids', []),
        mosf=(calib.get('plan') or {}).get('mosf', {}),
        quant=res.get('quant'),
        versions=res.get('versions'),
        work_dir=spec.work_dir,
        checkpoint_sha256=info.get('checkpoint_sha256'),
        command=' '.join(info['command']),
    )


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float('nan')


def _std(values: Sequence[float]) -> float:
    return float(statistics.stdev(values)) if len(values) > 1 else 0.0


def summarize(runs: Sequence[dict], val_images: Optional[dict] = None) -> list[dict]:
    """One record per (model, recipe, bits): mean and spread over seeds, vs float.

    Args:
        runs: Per-seed records from :func:`run_quantize`; each model needs a float run.
        val_images: Number of evaluated images per model (for the calibration ratio).

    Returns:
        list[dict]: Records with ``model``, ``recipe``, ``bits``, ``metric_name``, ``metric``
        (mean over seeds, percent), ``metric_std`` / ``metric_min`` / ``metric_max``,
        ``metric_seeds``, ``float_metric``, ``drop``, ``metrics`` (every reported metric's
        mean) and ``metrics_std``, ``calib_s``, ``eval_s``, ``float_eval_s``,
        ``eval_vs_float``, ``calib_vs_float_pass`` (calibration time over the time of one
        float pass over the calibration images, estimated per image from the float
        evaluation), ``peak_rss_mb`` (max over seeds) and ``seeds``.
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
    lines.append(
        '- metric: mean over calibration seeds, +- sample standard deviation (n = seeds); '
        'drop = mean - float; times in seconds (calibration, then evaluation of the val '
        'images; x float = eval time over float eval time, measured in the same run)'
    )
    lines.append('')
    by_model: dict[str, list[dict]] = {}
    for r in records:
        by_model.setdefault(r['model'], []).append(r)
    for model, rs in by_model.items():
        first = rs[0]
        names = list(first['metrics'])
        n_val = first.get('val_images')
        lines.append(f'## {model}' + (f' ({n_val} val images)' if n_val else ''))
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
        head += ['calib s', 'eval s', 'x float', 'calib / float pass', 'peak RSS MB', 'seeds']
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
                _fmt(r['peak_rss_mb'], '.0f'),
                str(len(r['seeds'])),
            ]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    comparisons = compare_recipes(records)
    if comparisons:
        lines.append('## DopQ vs the RepQ-ViT recipe')
        lines.append('')
        lines.append(
            'diff = dopq - repq (primary metric, percent); a difference is real only when it '
            'exceeds the spread, sqrt(std_dopq^2 + std_repq^2) over calibration seeds.'
        )
        lines.append('')
        lines.append('| model | bits | dopq | repq | diff | spread | seeds | verdict |')
        lines.append('|---|---|---|---|---|---|---|---|')
        for c in comparisons:
            cells = [c['model'], c['bits'], f'{c["metric_a"]:.2f}', f'{c["metric_b"]:.2f}']
            cells += [f'{c["diff"]:+.2f}', _fmt(c['spread'], '.2f'), str(c['seeds'])]
            cells.append(c['verdict'])
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    used = {r['recipe'] for r in records}
    notes = [f'`{k}` = {v}' for k, v in VARIANT_NOTES.items() if k in used]
    lines.append('Recipes: ' + '; '.join(notes))
    lines.append('')
    return '\n'.join(lines)


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
    data = dict(**header, records=list(records), comparisons=compare_recipes(records))
    dump_json_atomic(dict(**data, runs=slim_runs), json_path)
    write_text_atomic(md_path, render_markdown(records, header, title))
    return json_path, md_path


def build_specs(
    models: Sequence[ReferenceModel],
    variants: Sequence[str],
    bits: Sequence[str],
    seeds: Union[Sequence[int], Mapping[str, Sequence[int]]],
    work_dir: str,
    cfg_options: Optional[dict] = None,
    save: bool = False,
    options_subdir: bool = True,
) -> list[RunSpec]:
    """All runs of a sweep: per model one float run, then variant x bits x seed.

    ``seeds`` is one list for every bit width, or a ``{bits: seeds}`` mapping (fewer seeds at a
    width where the spread matters less, e.g. the W6A6 rows of a slow model).

    With ``options_subdir`` (the default), runs of a model with extra ``cfg_options`` (a val
    subset, a tuning split) go to ``work_dir/<model>/opts-<digest>/``, the digest naming the
    options, so that sweeps of the same model with different options (the benchmark and its
    ablations on a val subset) keep their finished runs apart instead of overwriting each
    other's. The demo, one option set per work dir, keeps ``work_dir/<model>/<run>/``.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f'unknown recipes {unknown}; choose from {sorted(VARIANTS)}')
    if isinstance(seeds, Mapping):
        missing = [b for b in bits if not seeds.get(b)]
        if missing:
            raise ValueError(f'no calibration seeds for bits {missing}')
        by_bits = {b: list(seeds[b]) for b in bits}
    else:
        by_bits = {b: list(seeds) for b in bits}
    specs = []
    for m in models:
        opts = tuple((cfg_options or {}).get(m.name, ()))
        sub = [options_dir(opts)] if opts and options_subdir else []
        root = osp.join(work_dir, m.name, *sub)
        # seed 0 whatever the sweep's seeds: nothing in a float run is random, and one seed lets
        # sweeps over different seeds share (reuse) it
        specs.append(RunSpec(m, 'float', 'float', 0, osp.join(root, 'float'), None, opts))
        for v in variants:
            if v == 'float':
                continue
            for b in bits:
                for s in by_bits[b]:
                    wd = osp.join(root, f'{v}_{b}_seed{s}')
                    specs.append(RunSpec(m, v, b, s, wd, None, opts, save))
    return specs


def options_dir(cfg_options: Sequence[str]) -> str:
    """Directory name for runs with these ``--cfg-options`` (order-independent digest)."""
    digest = hashlib.sha256('\n'.join(sorted(cfg_options)).encode()).hexdigest()[:10]
    return f'opts-{digest}'


def run_sweep(
    specs: Sequence[RunSpec],
    out_dir: str,
    title: str,
    command: str = '',
    threads: int = 2,
    cwd: Optional[str] = None,
    echo: Optional[Callable[[str], None]] = print,
    plots: bool = True,
    plot_bits: int = 4,
    merge: bool = False,
) -> dict:
    """Run every spec (reusing finished runs), then write results and plots to ``out_dir``.

    With ``merge``, the rows of other models already in ``out_dir/results.json`` are kept
    (see :func:`merge_earlier`); without it the file holds this sweep only.

    Returns:
        dict: ``records`` (the summary), ``runs`` (per seed), ``json``, ``md``, ``plots``.
    """
    runs = []
    t0 = time.perf_counter()
    for i, spec in enumerate(specs):
        if echo:
            echo(f'[{i + 1}/{len(specs)}] {spec.label}  ({time.perf_counter() - t0:.0f}s elapsed)')
        r = run_quantize(spec, threads=threads, cwd=cwd, echo=echo)
        runs.append(r)
        if echo:
            extra = ', '.join(f'{k.split("/")[-1]} {v:.2f}' for k, v in r['metrics'].items())
            echo(
                f'[{i + 1}/{len(specs)}] {spec.label}: {extra}; calib {r["calib_s"]:.1f}s, '
                f'eval {r["eval_s"]:.1f}s, peak RSS {r["peak_rss_mb"]:.0f} MB'
            )
    val_images = {r['model']: r['test_images'] for r in runs if r.get('test_images')}
    records = summarize(runs, val_images)
    header = dict(
        title=title,
        date=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
        command=command,
        machine=machine_info(),
        versions=runs[0].get('versions') or {},
        threads=threads,
        wall_s=time.perf_counter() - t0,
    )
    earlier_path = osp.join(out_dir, 'results.json')
    if merge and osp.exists(earlier_path):
        records, runs, header = merge_earlier(records, runs, header, earlier_path)
    json_path, md_path = write_results(records, runs, out_dir, header, title)
    made = make_plots(specs, runs, records, out_dir, plot_bits, cwd, echo) if plots else {}
    return dict(records=records, runs=runs, json=json_path, md=md_path, plots=made)


def make_plots(
    specs: Sequence[RunSpec],
    runs: Sequence[dict],
    records: Sequence[dict],
    out_dir: str,
    bits: int = 4,
    cwd: Optional[str] = None,
    echo: Optional[Callable[[str], None]] = print,
) -> dict:
    """Metric vs bits, MOSF scales per LayerNorm, and a real attention map's quantizer levels."""
    from ..visualization import plot_metric_vs_bits, plot_mosf_scales

    plot_dir = osp.join(out_dir, 'plots')
    made = dict(
        metric_vs_bits=plot_metric_vs_bits(records, osp.join(plot_dir, 'metric_vs_bits.png'))
    )
    for model in dict.fromkeys(s.model for s in specs):
        mosf_runs = [r for r in runs if r['model'] == model.name and r['mosf']]
        mosf_runs = [r for r in mosf_runs if r['quant'].get('reparam_rule') == 'mad'] or mosf_runs
        if mosf_runs:
            r = mosf_runs[0]
            made[f'mosf_{model.name}'] = plot_mosf_scales(
                r['mosf'],
                osp.join(plot_dir, f'mosf_scales_{model.name}.png'),
                f'{model.name}: {r["recipe"]} {r["bits"]} seed {r["seed"]} '
                f'(fold rule {r["quant"].get("reparam_rule")})',
            )
        float_spec = next(s for s in specs if s.model is model)
        attn_pt = osp.join(float_spec.work_dir, 'attention_site0.pt')
        png = osp.join(plot_dir, f'attention_{model.name}_{bits}bit.png')
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO_ROOT, env.get('PYTHONPATH')]))
        tools = osp.join(REPO_ROOT, 'tools', 'analysis')
        cmds = [
            [sys.executable, osp.join(tools, 'dump_attention.py'), model.path('quant_config')]
            + [float_spec.checkpoint or model.path('checkpoint'), '--out', attn_pt],
            [sys.executable, osp.join(tools, 'plot_quantizers.py'), '--input', attn_pt]
            + [
                '--bits',
                str(bits),
                '--out',
                png,
                '--title',
                f'{model.name}: first attention block',
            ],
        ]
        for cmd in cmds:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(
                    f'{" ".join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}'
                )
        made[f'attention_{model.name}'] = png
    if echo:
        echo('plots: ' + ', '.join(sorted(made.values())))
    return made
