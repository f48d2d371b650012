"""Plot where the post-Softmax quantizers put their levels on an attention map.

Calibrates the three per-tensor quantizers mmdopq offers for post-Softmax activations on one
tensor of attention probabilities and draws, on a linear and on a logarithmic value axis,

* the histogram of the values (log-scale counts) with every quantizer's levels overlaid, and
* one row of levels per quantizer below it, so that the level placement stays readable,

with each quantizer's mean squared error in the legend:

* ``UniformQuantizer(bits, method='percentile')``: the RepQ-ViT activation initialisation;
* ``LogSqrt2Quantizer(bits)``: the RepQ-ViT post-Softmax baseline;
* ``TanQuantizer(bits)``: mmdopq's reconstruction of DopQ-ViT's TanQ (see docs/method.md).

The input is either a saved tensor (``torch.save`` of a post-Softmax tensor, values in
``[0, 1]``) or a seeded synthetic sample: the softmax over the last axis of Student-t
(df=3, scale 1.5) or Gaussian (scale 2) logits of shape ``heads x tokens x tokens``.

Example::

    python tools/analysis/plot_quantizers.py --synthetic t --tokens 49 --bits 4 --out fig.png
    python tools/analysis/plot_quantizers.py --input attn.pt --bits 3 --out attn_w3.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from mmdopq.quantizers import (
    BaseQuantizer,
    LogSqrt2Quantizer,
    TanQuantizer,
    UniformQuantizer,
    check_bits,
)
from mmdopq.utils.fileio import write_atomic

#: Synthetic logit distributions: name -> description used in titles.
SYNTHETIC_KINDS = {
    't': 'softmax of Student-t logits (df=3, scale 1.5)',
    'gauss': 'softmax of Gaussian logits (scale 2)',
}
#: Bit widths the plot supports (a 16-bit quantizer has too many levels to draw).
PLOT_BITS = (2, 3, 4, 5, 6, 7, 8)
#: Smallest value shown on the logarithmic axis; smaller positive values go to its first bin.
LOG_AXIS_FLOOR = 1e-12
#: Colour and line style of each quantizer, in plotting order.
STYLES = {
    'UniformQuantizer': ('tab:blue', '-'),
    'LogSqrt2Quantizer': ('tab:orange', '--'),
    'TanQuantizer': ('tab:green', ':'),
}


def check_softmax_tensor(x: object, what: str) -> Tensor:
    """Check that ``x`` is a non-empty, finite, floating-point tensor with values in ``[0, 1]``.

    Args:
        x: The object to check.
        what: What ``x`` is (e.g. the file it was loaded from), used in error messages.

    Returns:
        ``x`` detached, on the CPU, as float32.

    Raises:
        ValueError: If ``x`` is not such a tensor; the message names ``what``.
    """
    if not isinstance(x, Tensor):
        raise ValueError(
            f'{what}: expected a torch.Tensor of post-Softmax values, got {type(x).__name__}'
        )
    if not x.is_floating_point():
        raise ValueError(
            f'{what}: expected a floating-point tensor of post-Softmax values, got dtype {x.dtype}'
        )
    if x.numel() == 0:
        raise ValueError(f'{what}: the tensor is empty (shape {tuple(x.shape)})')
    x = x.detach().cpu().float()
    finite = torch.isfinite(x)
    if not finite.all():
        raise ValueError(
            f'{what}: the tensor holds {int(torch.isnan(x).sum())} NaN and '
            f'{int(torch.isinf(x).sum())} Inf values (shape {tuple(x.shape)})'
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        n_out = int(((x < 0) | (x > 1)).sum())
        raise ValueError(
            f'{what}: post-Softmax values must lie in [0, 1], but {n_out} of '
            f'{x.numel()} values are outside (min {lo:.6g}, max {hi:.6g})'
        )
    return x


def load_tensor(path: str) -> Tensor:
    """Load and validate a saved post-Softmax tensor.

    Args:
        path: File written by ``torch.save(tensor, path)``.

    Returns:
        The tensor as float32 on the CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file cannot be read as a tensor, or the tensor is empty, not finite or
            not within ``[0, 1]``; the message names the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'input tensor file {path!r} does not exist')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(
            f'{path!r}: cannot be read with torch.load(weights_only=True): {type(e).__name__}: {e}'
        ) from e
    return check_softmax_tensor(obj, repr(path))


def student_t(shape: Sequence[int], df: int, generator: torch.Generator) -> Tensor:
    """Draw Student-t samples with an integer number of degrees of freedom.

    ``torch.distributions.StudentT`` takes no generator, so the sample is built from normals:
    ``z / sqrt(chi2_df / df)`` with ``chi2_df`` a sum of ``df`` squared normals.

    Args:
        shape: Sample shape.
        df: Degrees of freedom (positive integer).
        generator: Random generator (makes the sample reproducible).

    Returns:
        A float32 tensor of the given shape.
    """
    z = torch.randn(tuple(shape), generator=generator)
    chi2 = torch.randn((df, *shape), generator=generator).pow(2).sum(0)
    return z / (chi2 / df).sqrt()


def synthetic_attention(kind: str, heads: int, tokens: int, seed: int = 0) -> Tensor:
    """Synthetic attention maps: softmax over the last axis of random logits.

    Args:
        kind: ``'t'`` (Student-t logits, df=3, scale 1.5) or ``'gauss'`` (Gaussian, scale 2).
        heads: Number of heads (leading axis).
        tokens: Number of tokens (the map is ``tokens x tokens`` per head).
        seed: Seed of the logits.

    Returns:
        A ``[heads, tokens, tokens]`` float32 tensor whose rows sum to 1.

    Raises:
        ValueError: Unknown ``kind`` or non-positive sizes.
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f'unknown synthetic kind {kind!r}; choose from {tuple(SYNTHETIC_KINDS)}')
    if heads < 1 or tokens < 1:
        raise ValueError(f'heads={heads} and tokens={tokens} must be positive')
    gen = torch.Generator().manual_seed(seed)
    shape = (heads, tokens, tokens)
    if kind == 't':
        logits = 1.5 * student_t(shape, 3, gen)
    else:
        logits = 2.0 * torch.randn(shape, generator=gen)
    return logits.softmax(dim=-1)


def build_quantizers(bits: int) -> list[BaseQuantizer]:
    """The three post-Softmax quantizers compared by the plot, uncalibrated."""
    return [
        UniformQuantizer(bits, method='percentile'),
        LogSqrt2Quantizer(bits),
        TanQuantizer(bits),
    ]


def describe(q: BaseQuantizer) -> str:
    """Short description of a calibrated quantizer's parameters for the legend."""
    if isinstance(q, UniformQuantizer):
        return f's={float(q.scale):.3g}, z={int(q.zero_point)}'
    if isinstance(q, LogSqrt2Quantizer):
        return f'delta={float(q.delta):.4g}'
    if isinstance(q, TanQuantizer):
        return f'alpha={float(q.alpha):.3f}, c={float(q.centre):.3f}'
    return ''


def _atomic_savefig(fig: Figure, out: str) -> None:
    """Write ``fig`` as a PNG to ``out`` through a temporary file in the same directory."""
    write_atomic(out, lambda tmp: fig.savefig(tmp, format='png', dpi=120))


def plot_quantizers(x: Tensor, bits: int, out: str, title: str = '') -> dict[str, float]:
    """Calibrate the post-Softmax quantizers on ``x``, plot their levels and write a PNG.

    Each quantizer is calibrated on the whole of ``x`` with its default objective (the error of
    the quantized tensor itself) and evaluated on ``x``.

    Args:
        x: Post-Softmax values in ``[0, 1]`` (any shape).
        bits: Bit width, 2..8.
        out: Path of the PNG to write (written atomically; parent directories are created).
        title: Figure title; default ``'<bits>-bit post-Softmax quantizers'``.

    Returns:
        The mean squared error of each quantizer on ``x``, keyed by class name
        (``'UniformQuantizer'``, ``'LogSqrt2Quantizer'``, ``'TanQuantizer'``).

    Raises:
        ValueError: If ``bits`` is not in 2..8 or ``x`` is not a finite tensor in ``[0, 1]``.
    """
    check_bits(bits)
    if bits not in PLOT_BITS:
        raise ValueError(f'bits={bits} cannot be plotted: use 2..8')
    x = check_softmax_tensor(x, 'input tensor')
    errors: dict[str, float] = {}
    levels: dict[str, np.ndarray] = {}
    labels: dict[str, str] = {}
    with torch.no_grad():
        for q in build_quantizers(bits):
            q.calibrate(x)
            x_hat = q(x)
            err = float((x_hat - x).pow(2).mean())
            to_zero = float(((x_hat == 0) & (x > 0)).float().mean())
            errors[q.name] = err
            levels[q.name] = q.levels().detach().cpu().double().numpy()
            labels[q.name] = (
                f'{q.name} ({describe(q)}): MSE {err:.3g}, {to_zero:.1%} of values -> 0'
            )

    values = x.reshape(-1).double().numpy()
    n_zero = int((values == 0).sum())
    positive = values[values > 0]

    fig = Figure(figsize=(13, 8), layout='constrained')
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=(3.0, 1.2))
    ax_lin = fig.add_subplot(grid[0, 0])
    ax_log = fig.add_subplot(grid[0, 1])
    rug_lin = fig.add_subplot(grid[1, 0], sharex=ax_lin)
    rug_log = fig.add_subplot(grid[1, 1], sharex=ax_log)

    # Histograms: linear bins on [0, 1]; log bins on [floor, 1] for the positive values.
    counts, edges = np.histogram(values, bins=200, range=(0.0, 1.0))
    ax_lin.stairs(counts, edges, fill=True, color='0.75', label=f'values (n={values.size})')
    # Log axis: down to the 0.1th percentile of the positive values or a decade below the
    # smallest non-zero level, whichever is lower (but not below LOG_AXIS_FLOOR).
    nonzero_levels = np.concatenate([lv[lv > 0] for lv in levels.values()])
    floor = float(nonzero_levels.min()) / 10 if nonzero_levels.size else 0.5
    if positive.size:
        floor = min(floor, float(np.quantile(positive, 0.001)))
    floor = min(max(floor, LOG_AXIS_FLOOR), 0.5)
    if positive.size:
        log_edges = np.geomspace(floor, 1.0, 161)
        log_counts, _ = np.histogram(np.clip(positive, floor, 1.0), bins=log_edges)
        ax_log.stairs(log_counts, log_edges, fill=True, color='0.75')
    for ax in (ax_lin, ax_log):
        ax.set_yscale('log')
        ax.set_ylabel('count')
        ax.tick_params(labelbottom=False)
    ax_lin.set_title('linear value axis')
    zero_note = f'; {n_zero} exact zeros not shown' if n_zero else ''
    below = int((positive < floor).sum()) if positive.size else 0
    below_note = f'; {below} values < {floor:.0e} in first bin' if below else ''
    ax_log.set_title(f'log value axis{zero_note}{below_note}', fontsize='medium')
    ax_log.set_xscale('log')
    ax_log.set_xlim(floor, 1.25)
    ax_lin.set_xlim(-0.01, 1.01)

    # Levels: vertical lines across the histograms, and one row per quantizer below.
    names = list(levels)
    for row, name in enumerate(names):
        colour, style = STYLES.get(name, ('k', '-'))
        lv = levels[name]
        for ax in (ax_lin, ax_log):
            shown = lv if ax is ax_lin else lv[lv >= floor]
            ax.vlines(
                shown,
                0.0,
                1.0,
                transform=ax.get_xaxis_transform(),
                colors=colour,
                linestyles=style,
                linewidth=0.9,
                alpha=0.8,
                label=labels[name] if ax is ax_lin else None,
            )
        y = len(names) - 1 - row
        for rug in (rug_lin, rug_log):
            shown = lv if rug is rug_lin else lv[lv >= floor]
            rug.eventplot([shown], lineoffsets=y, linelengths=0.7, colors=colour, linewidths=1.2)
    for rug in (rug_lin, rug_log):
        rug.set_yticks(range(len(names)))
        rug.set_yticklabels(
            [f'{n}\n({len(levels[n])} levels)' for n in reversed(names)], fontsize='small'
        )
        rug.set_ylim(-0.6, len(names) - 0.4)
        rug.set_xlabel('value')
        rug.grid(axis='x', alpha=0.3)
    fig.legend(loc='outside lower center', ncols=2, fontsize='small')

    heading = title or f'{bits}-bit post-Softmax quantizers'
    fig.suptitle(
        f'{heading}\nshape {tuple(x.shape)}, {values.size} values, '
        f'{positive.size} positive, max {values.max():.4g}'
    )
    _atomic_savefig(fig, out)
    return errors


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""

    def positive_int(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f'{text} is not a positive integer')
        return value

    parser = argparse.ArgumentParser(
        description='Histogram of post-Softmax values with the levels of the uniform, '
        'log-sqrt2 and Tan quantizers overlaid (and their MSE).'
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--input', help='torch.save of a post-Softmax tensor, values in [0, 1]')
    source.add_argument(
        '--synthetic',
        choices=tuple(SYNTHETIC_KINDS),
        help='synthetic attention maps (default: t when --input is not given)',
    )
    parser.add_argument(
        '--tokens',
        type=positive_int,
        default=49,
        help='synthetic: tokens per map (default 49, a Swin window)',
    )
    parser.add_argument(
        '--heads', type=positive_int, default=12, help='synthetic: number of heads (default 12)'
    )
    parser.add_argument(
        '--bits', type=int, choices=PLOT_BITS, default=4, help='bit width (default 4)'
    )
    parser.add_argument('--seed', type=int, default=0, help='synthetic: seed (default 0)')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--title', help='title prefix (default: the input file or distribution)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success. Invalid input exits with status 2 and a message naming the problem
        (``argparse`` style); no PNG is written then.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.input is not None:
            x = load_tensor(args.input)
            source = os.path.basename(args.input)
        else:
            kind = args.synthetic or 't'
            x = synthetic_attention(kind, args.heads, args.tokens, args.seed)
            source = f'synthetic: {SYNTHETIC_KINDS[kind]}, seed {args.seed}'
        errors = plot_quantizers(
            x,
            args.bits,
            args.out,
            title=f'{args.bits}-bit post-Softmax quantizers on {args.title or source}',
        )
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    width = max(len(name) for name in errors)
    for name, err in errors.items():
        rel = err / max(float(x.pow(2).mean()), math.ulp(0.0))
        print(f'{name:<{width}}  MSE {err:.4e}  (relative {rel:.3e})')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
