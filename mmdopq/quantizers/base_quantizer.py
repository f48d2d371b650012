"""Common contract of every mmdopq quantizer.

A quantizer is an ``nn.Module`` whose whole state (quantization parameters and
the ``calibrated`` flag) lives in registered buffers, so it survives
``state_dict`` / ``load_state_dict``, ``.to()`` and DDP broadcasts.

Life cycle::

    q = SomeQuantizer(bits=4)
    q.observe(x)        # optional, any number of times: stream calibration data
    q.calibrate()       # or q.calibrate(x) with an explicit sample
    y = q(x)            # fake-quantized tensor, same shape and dtype as x
    q.enabled = False   # switch quantization off: q(x) is x

Calling a quantizer that is enabled but not calibrated raises; so does a
calibration sample that holds NaN or Inf.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .sample_collector import SampleCollector

#: Bit widths a quantizer accepts; 16 means "keep (almost) high precision".
VALID_BITS = (2, 3, 4, 5, 6, 7, 8, 16)

#: Element budget that never subsamples (``max_samples=None``).
UNBOUNDED = 1 << 62

#: Signature of a calibration objective: ``objective(x_hat, x) -> scalar error``.
Objective = Callable[[Tensor, Tensor], Tensor]


def check_bits(bits: int) -> int:
    """Validate a bit width.

    Args:
        bits: Requested bit width.

    Returns:
        ``bits`` as an ``int``.

    Raises:
        ValueError: If ``bits`` is not one of 2..8 or 16.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in VALID_BITS:
        raise ValueError(
            f'bits={bits!r} is not supported: use an integer in 2..8, or 16 to keep high precision'
        )
    return bits


def check_finite(x: Tensor, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` if ``x`` holds NaN or Inf."""
    # Fast path: one reduction, no boolean temporary; NaN/Inf propagate into the sum
    # (a finite overflow to Inf only triggers the exact check below).
    if x.numel() and torch.isfinite(x.sum()):
        return
    if not torch.isfinite(x).all():
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f'{what}: calibration sample holds {n_nan} NaN and {n_inf} Inf values '
            f'(shape {tuple(x.shape)})'
        )


def order_statistics(x2: Tensor, ranks: list[int]) -> Tensor:
    """Values of the given ascending ranks of every row of ``x2`` (``[C, N]`` -> ``[C, R]``).

    Equivalent to ``x2.sort(dim=1).values[:, ranks]`` but only selects the tails
    it needs (``topk`` from both ends), which is what percentile searches use.
    """
    n = x2.shape[1]
    low = [r for r in ranks if r < n // 2]
    high = [r for r in ranks if r >= n // 2]
    cols = {}
    if low:
        bot = x2.topk(max(low) + 1, dim=1, largest=False, sorted=True).values
        cols.update({r: bot[:, r] for r in low})
    if high:
        top = x2.topk(n - min(high), dim=1, largest=True, sorted=True).values
        cols.update({r: top[:, n - 1 - r] for r in high})
    return torch.stack([cols[r] for r in ranks], dim=1)


#: How a percentile search turns a probability into a value: ``'nearest'`` (mmdopq's default:
#: the order statistic of rank ``round(p * (n - 1))``) or ``'linear'`` (the official RepQ-ViT
#: code's ``torch.quantile``: linear interpolation between the two neighbouring ranks).
PERCENTILE_MODES = ('nearest', 'linear')
#: Largest input ``torch.quantile`` accepts (larger ones: the official code falls back to
#: ``np.percentile``, the same linear interpolation).
TORCH_QUANTILE_MAX = 1 << 24


def linear_quantiles(x2: Tensor, probs: list[float]) -> Tensor:
    """``torch.quantile(row, p)`` (linear interpolation) of every row of ``x2``: ``[C, R]``.

    Exactly ``torch.quantile`` while ``x2`` has at most 2^24 elements (its input limit); above
    it, the same interpolation from the two neighbouring order statistics of each row
    (selected with :func:`order_statistics`), computed in float64 as ``np.percentile``, the
    official code's fallback, does.
    """
    n = x2.shape[1]
    if x2.numel() <= TORCH_QUANTILE_MAX:
        q = torch.tensor(probs, dtype=x2.dtype, device=x2.device)
        return torch.quantile(x2, q, dim=1).T.contiguous()
    pos = [p * (n - 1) for p in probs]
    below = [min(n - 1, int(math.floor(r))) for r in pos]
    above = [min(n - 1, b + 1) for b in below]
    ranks = sorted(set(below + above))
    vals = order_statistics(x2, ranks).double()
    col = {r: vals[:, i] for i, r in enumerate(ranks)}
    out = [col[b] + (col[a] - col[b]) * (r - b) for r, b, a in zip(pos, below, above)]
    return torch.stack(out, dim=1).to(x2.dtype)


def percentile_values(x2: Tensor, probs: list[float], mode: str = 'nearest') -> Tensor:
    """The ``probs`` quantiles of every row of ``x2`` (``[C, N]`` -> ``[C, R]``).

    Args:
        x2: The sample, one row per channel.
        probs: Probabilities in ``[0, 1]``.
        mode: ``'nearest'``: the order statistic of rank ``round(p * (n - 1))``;
            ``'linear'``: ``torch.quantile``'s linear interpolation (see :func:`linear_quantiles`).
    """
    if mode == 'linear':
        return linear_quantiles(x2, probs)
    if mode != 'nearest':
        raise ValueError(f'unknown percentile mode {mode!r}; choose from {PERCENTILE_MODES}')
    n = x2.shape[1]
    ranks = [min(n - 1, max(0, int(round(p * (n - 1))))) for p in probs]
    return order_statistics(x2, ranks)


def check_percentile_mode(mode: str) -> str:
    if mode not in PERCENTILE_MODES:
        raise ValueError(f'unknown percentile_mode {mode!r}; choose from {PERCENTILE_MODES}')
    return mode


def lookup(table: Tensor, codes: Tensor) -> Tensor:
    """``table[codes]`` for float ``codes`` holding integral values in range.

    int32 codes and ``index_select`` on the flattened codes: several times faster on the
    CPU than advanced indexing with int64 codes, with the same result (the fake-quant hot
    path of the table-based quantizers).
    """
    return table.index_select(0, codes.int().reshape(-1)).view(codes.shape)


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Default objective: mean squared error."""
    return (x_hat - x).pow(2).mean()


class BaseQuantizer(nn.Module, metaclass=abc.ABCMeta):
    """Base class: bit width, ``calibrated`` buffer, on/off switch, sample stream.

    Args:
        bits: Bit width (2..8, or 16 for "keep high precision").
        max_samples: Upper bound on the number of elements kept by :meth:`observe`
            (a uniform random subsample of everything observed); ``None``: keep everything
            (the official RepQ-ViT code calibrates on the whole tensor).
        seed: Seed of the subsampling generator.
    """

    #: Dimension along which :meth:`observe` subsamples rows (``None``: elements).
    sample_dim: Optional[int] = None

    def __init__(self, bits: int, max_samples: Optional[int] = 1 << 20, seed: int = 0) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.enabled = True
        self.name = type(self).__name__
        self.register_buffer('calibrated', torch.tensor(False))
        self.collector = SampleCollector(UNBOUNDED if max_samples is None else max_samples, seed)

    @property
    def n_levels(self) -> int:
        """Number of quantization levels, ``2 ** bits``."""
        return 1 << self.bits

    def extra_repr(self) -> str:
        return f'bits={self.bits}, calibrated={bool(self.calibrated)}, enabled={self.enabled}'

    # -- calibration -------------------------------------------------------
    def observe(self, x: Tensor) -> None:
        """Add ``x`` to the calibration sample (bounded, uniformly subsampled)."""
        x = x.detach()
        check_finite(x, f'{self.name} (observe)')
        self.collector.add(self._rows(x))

    def _rows(self, x: Tensor) -> Tensor:
        """View ``x`` as the rows the collector subsamples.

        Per-tensor quantizers sample fixed-width chunks of the flattened tensor
        (a row shape independent of the input shape, which varies between
        detection images); per-channel ones override this.
        """
        flat = x.reshape(-1)
        if self.collector.max_elements >= UNBOUNDED:
            return flat.reshape(-1, 1)  # no subsample: keep every element, no chunk tail cut
        width = 64 if flat.numel() >= 64 else 1
        return flat[: flat.numel() // width * width].reshape(-1, width)

    def _unrows(self, rows: Tensor) -> Tensor:
        """Inverse of :meth:`_rows` for the collected sample."""
        return rows.reshape(-1)

    @torch.no_grad()
    def calibrate(self, x: Optional[Tensor] = None, objective: Optional[Objective] = None) -> None:
        """Set the quantization parameters from a sample.

        Args:
            x: Calibration sample. ``None`` uses (and then frees) what
                :meth:`observe` collected.
            objective: Optional ``objective(x_hat, x) -> error`` the search
                minimises; default: the error of the quantized tensor itself.

        Raises:
            ValueError: Empty sample, or NaN/Inf in the sample.
        """
        if x is None:
            if self.collector.empty:
                raise ValueError(
                    f'{self.name}: calibrate() called without a sample and nothing was observed'
                )
            x = self._unrows(self.collector.take())
        if x.numel() == 0:
            raise ValueError(f'{self.name}: empty calibration sample')
        check_finite(x, self.name)
        self._calibrate(x.float(), objective)
        self.calibrated.fill_(True)

    @abc.abstractmethod
    def _calibrate(self, x: Tensor, objective: Optional[Objective]) -> None:
        """Search the parameters on a finite float32 sample."""

    # -- forward -----------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        if not bool(self.calibrated):
            raise RuntimeError(
                f'{self.name}: quantizer is enabled but not calibrated; calibrate '
                'it first or set enabled=False'
            )
        return self.fake_quant(x.float()).to(x.dtype)

    @abc.abstractmethod
    def fake_quant(self, x: Tensor) -> Tensor:
        """Quantize and dequantize ``x`` with the current parameters."""

    @abc.abstractmethod
    def levels(self) -> Tensor:
        """The representable values (per-tensor quantizers), sorted ascending."""


@contextmanager
def quantizers_off(quantizers: Iterable[BaseQuantizer]) -> Iterator[None]:
    """Switch ``quantizers`` off (``q(x)`` is ``x``) inside the block, then back on.

    Only quantizers that were enabled are switched, and they are re-enabled even if the
    block raises (analysis tools evaluate a model with groups of quantizers off).
    """
    switched = [q for q in quantizers if q.enabled]
    for q in switched:
        q.enabled = False
    try:
        yield
    finally:
        for q in switched:
            q.enabled = True
