"""A plain-text progress line (no mm* import): one per reconstruction unit."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class ProgressLine:
    """``name [#####.....] it/total loss=... s`` redrawn in place on a terminal.

    Off a terminal (log files) it prints nothing until :meth:`close`, which writes the
    final state once, so logs get one line per unit.

    Args:
        name: What is progressing (the unit).
        total: Number of steps.
        stream: Where to write (default ``sys.stderr``).
        enabled: ``False``: print nothing at all.
        min_interval: Seconds between redraws.
    """

    def __init__(
        self,
        name: str,
        total: int,
        stream: Optional[TextIO] = None,
        enabled: bool = True,
        min_interval: float = 0.2,
    ) -> None:
        self.name = name
        self.total = max(1, int(total))
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and getattr(self.stream, 'isatty', lambda: False)()
        self.min_interval = min_interval
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.text = ''

    def _render(self, step: int, loss: Optional[float]) -> str:
        width = 20
        done = int(width * min(step, self.total) / self.total)
        bar = '#' * done + '.' * (width - done)
        loss_s = '' if loss is None else f' loss={loss:.4g}'
        return (
            f'{self.name} [{bar}] {step}/{self.total}{loss_s} {time.perf_counter() - self.t0:.1f}s'
        )

    def update(self, step: int, loss: Optional[float] = None) -> None:
        """Redraw (throttled) at ``step`` with the current ``loss``."""
        self.text = self._render(step, loss)
        now = time.perf_counter()
        if self.tty and now - self._last >= self.min_interval:
            self._last = now
            self.stream.write('\r' + self.text)
            self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if not self.enabled or not self.text:
            return
        self.stream.write(('\r' if self.tty else '') + self.text + '\n')
        self.stream.flush()
