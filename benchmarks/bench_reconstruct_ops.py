"""Speed of reconstruction's element-wise hot path: QDrop masks, and eager vs torch.compile.

One reconstruction iteration of a block runs every uniform activation quantizer of the block
as an LSQ fake quantization with a QDrop mask, forward and backward. This times that chain on
one activation tensor, the variants interleaved in one process (the machine is shared, so
only ratios measured side by side mean anything):

* ``rand+where``: a ``torch.rand`` mask mixed with ``torch.where`` (the first implementation);
* ``packed+lerp``: :func:`mmdopq.reconstruct.lsq.keep_mask` (four 16-bit uniforms per 64-bit
  draw) mixed with ``torch.lerp`` inside the autograd function (what mmdopq runs);
* ``compiled``: the same chain written in plain ops and compiled with ``torch.compile``
  (the mask drawn outside); its one-off compile time is reported separately.

    python -m benchmarks.bench_reconstruct_ops [--shape 32 65 1536] [--repeats 20]
        [--threads 1] [--no-compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mmdopq.reconstruct.lsq import _LSQFakeQuant, keep_mask


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shape', type=int, nargs='+', default=[32, 65, 1536])
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--drop-prob', type=float, default=0.5)
    parser.add_argument('--no-compile', action='store_true')
    parser.add_argument('--json', help='write the figures here')
    return parser.parse_args(argv)


def _plain_chain(x, s, z, keep, qmin: float, qmax: float):
    u = x / s
    r = u + (torch.round(u) - u).detach()  # straight-through rounding
    q = (torch.clamp(r + z, qmin, qmax) - z) * s
    return torch.lerp(x, q, keep)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_(True)
    s = torch.tensor(0.05, requires_grad=True)
    z = torch.tensor(8.0)
    p = args.drop_prob

    def rand_where():
        keep = torch.rand(shape, generator=gen) >= p
        q = _LSQFakeQuant.apply(x, s, z, 0.0, 15.0, None)
        torch.where(keep, q, x).sum().backward()

    def packed_lerp():
        keep = keep_mask(shape, p, gen, 'cpu')
        _LSQFakeQuant.apply(x, s, z, 0.0, 15.0, keep).sum().backward()

    variants = {'rand+where': rand_where, 'packed+lerp': packed_lerp}
    compile_s = None
    if not args.no_compile:
        chain = torch.compile(_plain_chain, dynamic=False)

        def compiled():
            keep = keep_mask(shape, p, gen, 'cpu')
            chain(x, s, z, keep, 0.0, 15.0).sum().backward()

        t0 = time.perf_counter()
        compiled()
        compile_s = time.perf_counter() - t0
        variants['compiled'] = compiled
    for f in variants.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):  # interleaved: each round runs every variant once
        for name, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    base = ms['rand+where']
    out = dict(
        shape=list(shape),
        threads=args.threads,
        repeats=args.repeats,
        drop_prob=p,
        torch=torch.__version__,
        median_ms=ms,
        vs_rand_where={k: v / base for k, v in ms.items()},
        compile_s=compile_s,
    )
    for k, v in ms.items():
        print(f'{k:12s} {v:8.2f} ms  ({v / base:.2f} x rand+where)')
    if compile_s is not None:
        print(f'torch.compile: {compile_s:.1f} s for its first call (one shape)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == '__main__':
    main()
