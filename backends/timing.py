"""Stage timings of one operator run, read off one clock, shown in the metrics panel.

Operators time their stages through this alone (never ``time.perf_counter`` by hand), so every
metrics panel names its timings the same way: ``"<stage> ms"``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class StageTimer:
    """Milliseconds per named stage, in the order they ran.

    ``with timer("encode"): ...`` times a block; ``timer.lap("encode")`` records the time since
    the timer started or since the last lap, for straight-line code."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._last = time.perf_counter()
            self.ms[stage] = self.ms.get(stage, 0.0) + (self._last - t0) * 1e3

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._last) * 1e3
        self._last = now
        return self.ms[stage]

    @property
    def total_ms(self) -> float:
        return (time.perf_counter() - self._start) * 1e3

    def metrics(self, digits: int = 2) -> dict[str, float]:
        """Rows for a :class:`~backends.layers.MetricsLayer`: ``{"<stage> ms": value}``."""
        return {f"{stage} ms": round(ms, digits) for stage, ms in self.ms.items()}


def elapsed_ms(t0: float) -> float:
    """Milliseconds since ``t0`` from :func:`now`: for loops that report a step's time."""
    return (time.perf_counter() - t0) * 1e3


def now() -> float:
    return time.perf_counter()
