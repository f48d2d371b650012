"""Run ``tools/quantize.py`` over recipes x bits x seeds: the runs of a sweep.

Shared by the demo (``python -m benchmarks.demo``) and the recipe benchmark
(``python -m benchmarks.bench_recipes``). Every run is its own ``tools/quantize.py`` process, so
each gets a clean interpreter, its own peak RSS (``wait4``) and the exact command a user would
type; runs whose ``results.json`` already matches their command are reused, so an interrupted
sweep resumes where it stopped. :mod:`.report` summarises the runs, :mod:`.plots` draws them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import os.path as osp
import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Callable, Optional, Union

from mmdopq.utils.fileio import dump_json_atomic, file_sha256

from ..reference.models import REPO_ROOT, ReferenceModel
from .plots import make_plots
from .report import machine_info, merge_earlier, percent, summarize, write_results
from .spec import RunSpec
from .variants import VARIANTS


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
    recorded: Sequence[dict] = (),
) -> dict:
    """Run one spec; returns its record (see :func:`run_record`).

    The child's output goes to ``work_dir/quantize.log``; every ``poll_s`` seconds the
    latest progress line is echoed. A failed run raises with the log's path and last lines.
    Sweeps running side by side may share runs (e.g. every sweep's float run): the run holds
    ``work_dir/.lock`` while it checks for a finished result and computes it, so a second sweep
    waits for the first one's run and then reuses it instead of overwriting it.

    ``recorded`` holds per-seed records of earlier sweeps (:func:`load_recorded_runs`); when
    the work dir has no finished run, one of them made by the same command (its
    ``--work-dir`` aside) on the same checkpoint bytes with the same thread count is returned
    instead of running again.
    """
    os.makedirs(spec.work_dir, exist_ok=True)
    with _run_lock(spec, echo):
        return _run_quantize_locked(spec, threads, cwd, echo, poll_s, reuse, recorded)


def run_cpus(runs: Sequence[dict]) -> dict:
    """How many of ``runs`` ran on each CPU (``'not recorded'`` for runs older than the field)."""
    return dict(Counter(r.get('cpu') or 'not recorded' for r in runs))


def load_recorded_runs(paths: Sequence[str]) -> list[dict]:
    """Per-seed records of earlier sweeps, each tagged with the ``results.json`` it came from.

    Lets a sweep take seeds that an earlier sweep (another session, whose work dirs are gone)
    already ran and committed, instead of running them again.

    Raises:
        ValueError: A file is not a sweep's ``results.json`` (no ``runs`` list).
    """
    out = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get('runs'), list):
            raise ValueError(f'{path}: not a recipe-sweep results.json (no runs list)')
        # results.json keeps the versions once, in its header, not per run, and leaves out the
        # per-LayerNorm MOSF scales (the plots take those from runs with a work dir)
        versions = data.get('versions') or {}
        # runs recorded before runs kept their CPU ran on the machine of their file's header
        cpu = (data.get('machine') or {}).get('cpu')
        out += [
            dict(r, recorded_in=path, versions=versions, mosf={}, cpu=r.get('cpu') or cpu)
            for r in data['runs']
        ]
    return out


def _without_work_dir(cmd: str) -> list[str]:
    """A run's command without its ``--work-dir`` (where it writes, not what it computes)."""
    words = cmd.split(' ')
    if '--work-dir' in words:
        i = words.index('--work-dir')
        del words[i : i + 2]
    return words


def _find_recorded(recorded: Sequence[dict], cmd: str, ckpt_sha256: str, threads: int):
    # another sweep's runs have their work dirs under its --work-dir: compare the rest
    want = _without_work_dir(cmd)
    for r in recorded:
        same = _without_work_dir(r.get('command') or '') == want
        same = same and r.get('checkpoint_sha256') == ckpt_sha256
        if same and r.get('threads') == threads:
            return r
    return None


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
    recorded: Sequence[dict],
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
    earlier = _find_recorded(recorded, ' '.join(cmd[1:]), ckpt_sha256, threads)
    if earlier is not None:
        if echo:
            echo(f'  {spec.label}: taken from {earlier["recorded_in"]}')
        return dict(earlier, work_dir=spec.work_dir)
    log_path = osp.join(spec.work_dir, 'quantize.log')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # the child's sys.path[0] is tools/: without the checkout first on its path, it would import
    # whichever mmdopq is installed, not necessarily this checkout's (the parent's)
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
        # a sweep may gather runs made on other machines (--runs-from, a copied work dir):
        # each run keeps the CPU it ran on
        cpu=machine_info()['cpu'],
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
        # block reconstruction's share of calib_s (None: the run did not reconstruct)
        recon_s=(calib.get('reconstruct') or {}).get('total_s'),
        eval_s=res['eval_s'],
        wall_s=info['wall_s'],
        peak_rss_mb=info['peak_rss_mb'],
        threads=info.get('threads'),
        cpu=info.get('cpu'),
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
    runs_from: Sequence[str] = (),
) -> dict:
    """Run every spec (reusing finished runs), then write results and plots to ``out_dir``.

    With ``merge``, the rows of other models already in ``out_dir/results.json`` are kept
    (see :func:`merge_earlier`); without it the file holds this sweep only. Runs recorded in
    the ``runs_from`` files (other sweeps' ``results.json``) are taken from there when their
    command, checkpoint and thread count match (:func:`run_quantize`); the header names those
    files and each taken run keeps ``recorded_in``.

    Returns:
        dict: ``records`` (the summary), ``runs`` (per seed), ``json``, ``md``, ``plots``.
    """
    recorded = load_recorded_runs(runs_from)
    runs = []
    t0 = time.perf_counter()
    for i, spec in enumerate(specs):
        if echo:
            echo(f'[{i + 1}/{len(specs)}] {spec.label}  ({time.perf_counter() - t0:.0f}s elapsed)')
        r = run_quantize(spec, threads=threads, cwd=cwd, echo=echo, recorded=recorded)
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
        versions=next((r['versions'] for r in runs if r.get('versions')), {}),
        threads=threads,
        wall_s=time.perf_counter() - t0,
    )
    taken = [p for p in runs_from if any(r.get('recorded_in') == p for r in runs)]
    if taken:
        header['runs_from'] = taken
    cpus = run_cpus(runs)
    if set(cpus) != {header['machine']['cpu']}:
        header['run_cpus'] = cpus
    earlier_path = osp.join(out_dir, 'results.json')
    if merge and osp.exists(earlier_path):
        records, runs, header = merge_earlier(records, runs, header, earlier_path)
    json_path, md_path = write_results(records, runs, out_dir, header, title)
    made = make_plots(specs, runs, records, out_dir, plot_bits, cwd, echo) if plots else {}
    return dict(records=records, runs=runs, json=json_path, md=md_path, plots=made)
