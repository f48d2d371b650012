"""Micro-benchmark of the mmdopq quantizers: calibration time, fake-quant time and error.

Not a test: it measures, on tensors with realistic shapes, how long each quantizer takes to
calibrate (a fresh quantizer per repeat) and to fake-quantize (``q(x)``), relative to a plain
elementwise pass over the same tensor (``x * 1.0``, which reads and writes it once), and the
error of the quantized tensor. Cases:

* Swin-T window attention maps, ``64 windows x 3 heads x 49 x 49`` (post-Softmax);
* ViT-B attention maps, ``B x 12 x 197 x 197`` for batch 1 and 8 (post-Softmax);
  for the attention maps: ``UniformQuantizer(method='percentile')``, ``LogSqrt2Quantizer`` and
  ``TanQuantizer``, all per tensor;
* a post-LayerNorm activation of Swin-T stage 1, ``8 x 3136 x 96`` with channel-dependent
  scale and offset: ``UniformQuantizer(method='percentile')`` per channel (``ch_axis=-1``) and
  per tensor;
* a ``3072 x 768`` Linear weight (ViT-B fc1): ``UniformQuantizer`` per output channel with
  ``method='minmax'`` and ``method='mse'``.

Attention maps are the softmax of Student-t logits (df=3, scale 1.5). All data is seeded.
Times are medians over ``--repeats`` runs after one warm-up (calibration: ``--calib-repeats``
runs), wall-clock by default, with torch's default number of threads (unless ``--threads``).
On a machine shared with other jobs, ``--threads 1 --clock cpu`` gives steadier numbers. Example::

    python -m benchmarks.bench_quantizers --bits 4 --json work_dirs/bench_quantizers.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from mmdopq.quantizers import (
    VALID_BITS,
    BaseQuantizer,
    LogSqrt2Quantizer,
    TanQuantizer,
    UniformQuantizer,
)

QuantizerFactory = Callable[[int], BaseQuantizer]


@dataclass
class Row:
    """One line of the result table.

    Attributes:
        case: Tensor the row is measured on.
        shape: Shape of that tensor.
        quantizer: Quantizer description, or ``'baseline x*1.0'``.
        calib_ms: Median calibration time in milliseconds (``None`` for the baseline).
        fwd_ms: Median fake-quant (or baseline pass) time in milliseconds.
        fwd_ratio: ``fwd_ms`` divided by the baseline pass of the same tensor.
        mse: Mean squared error of the fake-quantized tensor (``None`` for the baseline).
        sqnr_db: Signal-to-quantization-noise ratio ``10 log10(E[x^2] / MSE)`` in dB.
    """

    case: str
    shape: tuple
    quantizer: str
    calib_ms: Optional[float]
    fwd_ms: float
    fwd_ratio: float
    mse: Optional[float]
    sqnr_db: Optional[float]


def student_t(shape: Sequence[int], df: int, gen: torch.Generator) -> Tensor:
    """Student-t samples with integer ``df`` from a seeded generator (``z / sqrt(chi2/df)``)."""
    z = torch.randn(tuple(shape), generator=gen)
    chi2 = torch.randn((df, *shape), generator=gen).pow(2).sum(0)
    return z / (chi2 / df).sqrt()


def attention_maps(shape: Sequence[int], gen: torch.Generator) -> Tensor:
    """Post-Softmax maps: softmax over the last axis of Student-t logits (df=3, scale 1.5)."""
    return (1.5 * student_t(shape, 3, gen)).softmax(dim=-1)


def post_layernorm(shape: Sequence[int], gen: torch.Generator) -> Tensor:
    """A post-LayerNorm activation with strong inter-channel variation.

    Normalised Gaussian rows times a log-normal per-channel scale (``gamma``) plus a per-channel
    offset (``beta``), with a few outlier channels of large ``gamma`` and ``beta``, the pattern
    RepQ-ViT and DopQ-ViT describe for the inputs of qkv and fc1.
    """
    channels = shape[-1]
    x = torch.randn(tuple(shape), generator=gen)
    x = torch.nn.functional.layer_norm(x, (channels,))
    gamma = torch.exp(0.5 * torch.randn(channels, generator=gen))
    beta = 0.3 * torch.randn(channels, generator=gen)
    outliers = torch.randperm(channels, generator=gen)[: max(1, channels // 32)]
    gamma[outliers] *= 8.0
    beta[outliers] += 4.0
    return x * gamma + beta


def linear_weight(out_features: int, in_features: int, gen: torch.Generator) -> Tensor:
    """A trained-looking Linear weight: heavy-tailed (Student-t, df=5), std about 0.02."""
    return 0.02 * student_t((out_features, in_features), 5, gen) / math.sqrt(5 / 3)


#: Clocks the timings can use: wall time (default), or CPU time of this process, which is less
#: disturbed by other processes on a busy machine (use it with ``--threads 1``).
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def median_ms(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup`` runs.

    Args:
        fn: The function to time.
        repeats: Timed runs.
        warmup: Untimed runs first.
        clock: Time source (:data:`CLOCKS`).

    Returns:
        The median in milliseconds.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return 1e3 * statistics.median(times)


def bench_case(
    case: str,
    x: Tensor,
    quantizers: Sequence[tuple[str, QuantizerFactory]],
    bits: int,
    repeats: int,
    calib_repeats: int,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Row]:
    """Benchmark a list of quantizers on one tensor.

    Args:
        case: Name of the tensor.
        x: The tensor (float32).
        quantizers: ``(description, factory)`` pairs; ``factory(bits)`` builds a fresh quantizer.
        bits: Bit width.
        repeats: Repeats of the forward timing.
        calib_repeats: Repeats of the calibration timing (a fresh quantizer each time).
        log: Progress printer.
        clock: Time source (:data:`CLOCKS`).

    Returns:
        The baseline row followed by one row per quantizer.
    """
    shape = tuple(x.shape)
    signal = float(x.pow(2).mean())
    base_ms = median_ms(lambda: x * 1.0, repeats, clock=clock)
    rows = [Row(case, shape, 'baseline x*1.0', None, base_ms, 1.0, None, None)]
    for desc, factory in quantizers:
        log(f'  {case}: {desc} ...')
        calibrated: list[BaseQuantizer] = []

        def calibrate(factory: QuantizerFactory = factory, calibrated: list = calibrated) -> None:
            q = factory(bits)
            q.calibrate(x)
            calibrated.append(q)

        calib_ms = median_ms(calibrate, calib_repeats, warmup=0, clock=clock)
        q = calibrated[-1]
        fwd_ms = median_ms(lambda q=q: q(x), repeats, clock=clock)
        err = float((q(x) - x).pow(2).mean())
        sqnr = 10.0 * math.log10(signal / err) if err > 0 else math.inf
        rows.append(Row(case, shape, desc, calib_ms, fwd_ms, fwd_ms / base_ms, err, sqnr))
    return rows


def run(
    bits: int = 4,
    repeats: int = 5,
    calib_repeats: int = 3,
    seed: int = 0,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Row]:
    """Run every case of the benchmark.

    Args:
        bits: Bit width of every quantizer.
        repeats: Repeats of each forward timing.
        calib_repeats: Repeats of each calibration timing.
        seed: Seed of the data.
        log: Progress printer.
        clock: Time source (:data:`CLOCKS`).

    Returns:
        All result rows.
    """
    gen = torch.Generator().manual_seed(seed)
    softmax_qs = [
        ('Uniform per-tensor percentile', lambda b: UniformQuantizer(b, method='percentile')),
        ('LogSqrt2', lambda b: LogSqrt2Quantizer(b)),
        ('TanQ', lambda b: TanQuantizer(b)),
    ]
    ln_qs = [
        (
            'Uniform per-channel(-1) percentile',
            lambda b: UniformQuantizer(b, per_channel=True, ch_axis=-1, method='percentile'),
        ),
        ('Uniform per-tensor percentile', lambda b: UniformQuantizer(b, method='percentile')),
    ]
    weight_qs = [
        (
            'Uniform per-channel(0) minmax',
            lambda b: UniformQuantizer(b, per_channel=True, ch_axis=0, method='minmax'),
        ),
        (
            'Uniform per-channel(0) mse',
            lambda b: UniformQuantizer(b, per_channel=True, ch_axis=0, method='mse'),
        ),
    ]
    cases = [
        ('Swin-T attn', attention_maps((64, 3, 49, 49), gen), softmax_qs),
        ('ViT-B attn b1', attention_maps((1, 12, 197, 197), gen), softmax_qs),
        ('ViT-B attn b8', attention_maps((8, 12, 197, 197), gen), softmax_qs),
        ('Swin-T post-LN', post_layernorm((8, 3136, 96), gen), ln_qs),
        ('ViT-B fc1 weight', linear_weight(3072, 768, gen), weight_qs),
    ]
    rows: list[Row] = []
    with torch.no_grad():
        for case, x, qs in cases:
            log(f'{case} {tuple(x.shape)}')
            rows.extend(bench_case(case, x, qs, bits, repeats, calib_repeats, log, clock))
    return rows


def environment() -> dict:
    """Machine facts that matter for reading the timings."""
    env = {
        'torch': torch.__version__,
        'python': platform.python_version(),
        'machine': platform.machine(),
        'cpu_count': os.cpu_count(),
        'torch_threads': torch.get_num_threads(),
    }
    if hasattr(os, 'getloadavg'):
        env['loadavg_1min'] = round(os.getloadavg()[0], 2)
    return env


def markdown_table(rows: Sequence[Row], bits: int) -> str:
    """Render the rows as a markdown table."""

    def fmt(v: Optional[float], spec: str) -> str:
        return '' if v is None else format(v, spec)

    lines = [
        f'| case | shape | quantizer (W/A {bits}-bit) | calib ms | fwd ms | fwd / baseline '
        '| MSE | SQNR dB |',
        '|---|---|---|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        shape = 'x'.join(str(s) for s in r.shape)
        lines.append(
            f'| {r.case} | {shape} | {r.quantizer} | {fmt(r.calib_ms, ".1f")} '
            f'| {r.fwd_ms:.2f} | {r.fwd_ratio:.1f} | {fmt(r.mse, ".3e")} '
            f'| {fmt(r.sqnr_db, ".1f")} |'
        )
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        Exit status 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--bits', type=int, choices=VALID_BITS, default=4, help='bit width (default 4)'
    )
    parser.add_argument('--repeats', type=int, default=5, help='forward repeats (default 5)')
    parser.add_argument(
        '--calib-repeats', type=int, default=3, help='calibration repeats (default 3)'
    )
    parser.add_argument('--seed', type=int, default=0, help='data seed (default 0)')
    parser.add_argument(
        '--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)'
    )
    parser.add_argument(
        '--clock',
        choices=tuple(CLOCKS),
        default='wall',
        help='wall time (default) or CPU time of this process (steadier on a busy machine)',
    )
    parser.add_argument('--json', dest='json_out', default=None, help='also write results here')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.calib_repeats < 1:
        parser.error('--repeats and --calib-repeats must be positive')
    if args.threads is not None:
        if args.threads < 1:
            parser.error('--threads must be positive')
        torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    env = environment()
    rows = run(args.bits, args.repeats, args.calib_repeats, args.seed, log, CLOCKS[args.clock])
    env_text = ', '.join(f'{k} {v}' for k, v in env.items())
    print(
        f'{env_text}; {args.clock} clock, median of {args.repeats} forward / '
        f'{args.calib_repeats} calibration runs\n'
    )
    print(markdown_table(rows, args.bits))
    if args.json_out:
        out_dir = os.path.dirname(os.path.abspath(args.json_out))
        os.makedirs(out_dir, exist_ok=True)
        with open(args.json_out, 'w') as fh:
            json.dump(
                {
                    'environment': env,
                    'bits': args.bits,
                    'repeats': args.repeats,
                    'calib_repeats': args.calib_repeats,
                    'seed': args.seed,
                    'clock': args.clock,
                    'rows': [asdict(r) for r in rows],
                },
                fh,
                indent=2,
            )
        log(f'wrote {args.json_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
