"""Plots of a sweep (matplotlib, imported when a plot is drawn; no display needed).

Metric vs bits per recipe, MOSF's chosen scales per LayerNorm, and a real attention map's
quantizer levels (drawn by ``tools/analysis/dump_attention.py`` and ``plot_quantizers.py``).
"""

from __future__ import annotations

import math
import os
import os.path as osp
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Optional

from mmdopq.utils.fileio import write_atomic

from ..reference.models import REPO_ROOT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .spec import RunSpec

_BITS_ORDER = ('w2a2', 'w3a3', 'w4a4', 'w5a5', 'w6a6', 'w8a8')


def _save(fig: Figure, out: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return write_atomic(out, lambda tmp: fig.savefig(tmp, format='png', dpi=110))


def plot_metric_vs_bits(records: Sequence[dict], out: str) -> str:
    """One panel per model: metric (mean +- std over seeds) vs bit width, a line per recipe.

    Args:
        records: Summary records of :func:`benchmarks.sweep.report.summarize`.
        out: PNG path (written atomically).

    Returns:
        str: ``out``.
    """
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r['model'] for r in records))
    if not models:
        raise ValueError('plot_metric_vs_bits: no records')
    fig = Figure(figsize=(5.2 * len(models), 4.0))
    for i, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        rs = [r for r in records if r['model'] == model]
        bits = sorted({r['bits'] for r in rs if r['bits'] != 'float'}, key=_BITS_ORDER.index)
        x = {b: j for j, b in enumerate(bits)}
        for recipe in dict.fromkeys(r['recipe'] for r in rs if r['recipe'] != 'float'):
            pts = sorted(
                (x[r['bits']], r['metric'], r['metric_std'])
                for r in rs
                if r['recipe'] == recipe and r['bits'] in x
            )
            ax.errorbar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                yerr=[p[2] for p in pts],
                marker='o',
                capsize=3,
                label=recipe,
            )
        fl = next((r['float_metric'] for r in rs), None)
        if fl is not None:
            ax.axhline(fl, color='k', ls='--', lw=1, label=f'float {fl:.1f}')
        ax.set_xticks(range(len(bits)))
        ax.set_xticklabels(bits)
        ax.set_xlabel('bits (weights / activations)')
        ax.set_ylabel(f'{rs[0]["metric_name"]} (%)')
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def plot_mosf_scales(mosf: dict, out: str, title: str = '') -> str:
    """Per LayerNorm: the folded per-tensor scale MOSF chose vs mean and median channel scale.

    Args:
        mosf: ``calibration.plan.mosf`` of a ``results.json`` (per LayerNorm: ``scale``,
            ``k``, ``n_capped``, ``channel_scale_mean``, ``channel_scale_median``).
        out: PNG path (written atomically).
        title: Figure title.

    Returns:
        str: ``out``.
    """
    from matplotlib.figure import Figure

    names = [n for n, v in mosf.items() if 'channel_scale_mean' in v]
    if not names:
        raise ValueError('plot_mosf_scales: no LayerNorm with recorded channel scales')
    fig = Figure(figsize=(max(6.0, 0.32 * len(names) + 2), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(names))
    series = (
        ('channel_scale_mean', 'mean of channel scales (RepQ-ViT fold)', 's', 'tab:blue'),
        ('channel_scale_median', 'median of channel scales', '^', 'tab:green'),
        ('scale', 'MOSF chosen scale', 'o', 'tab:red'),
    )
    for key, label, marker, colour in series:
        ax.plot(xs, [mosf[n][key] for n in names], marker, color=colour, label=label, ms=5)
    for j, n in enumerate(names):
        k = mosf[n].get('k')
        if k is not None and not (isinstance(k, float) and math.isinf(k)) and k != 'inf':
            ax.annotate(
                f'k={float(k):g}\n{mosf[n].get("n_capped", 0)} capped',
                (j, mosf[n]['scale']),
                fontsize=6,
                xytext=(0, 6),
                textcoords='offset points',
                ha='center',
            )
    ax.set_yscale('log')
    ax.set_xticks(list(xs))
    ax.set_xticklabels([n.replace('backbone.', '') for n in names], rotation=75, fontsize=6)
    ax.set_ylabel('activation scale after the fold')
    ax.set_title(title or 'MOSF: chosen scale per LayerNorm')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


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
