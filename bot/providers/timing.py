"""Learned poll timing: how long this account's jobs take, and when to poll from it.

The provider records each job's duration (from the provider's own timestamps when it gives them, else
from the ask to the result seen); with enough samples, the first poll is timed near the median and the
next ones at the upper quantiles, so one poll usually lands just after the result is ready. Until then
(and after the planned polls) the provider's usual backoff applies; progress hints still win.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

MIN_SAMPLES = 8
QUANTILES = (0.6, 0.8, 0.92, 0.98)
MARGIN = 0.15  # seconds after the quantile: the result is ready just before, not just after


class LearnedTiming:
    def __init__(self, keep: int = 200, min_samples: int = MIN_SAMPLES,
                 on_sample: Callable[[float], object] | None = None) -> None:
        self._samples: deque[float] = deque(maxlen=keep)
        self.min_samples = min_samples
        self.on_sample = on_sample  # persistence (the store), called with each new duration

    def load(self, durations: Iterable[float]) -> None:
        """Durations read back from the store, newest first."""
        for value in reversed(list(durations)):
            if 0 < value < 3600:
                self._samples.append(float(value))

    def add(self, seconds: float) -> None:
        if not 0 < seconds < 3600:
            return
        self._samples.append(seconds)
        if self.on_sample is not None:
            self.on_sample(seconds)

    @property
    def count(self) -> int:
        return len(self._samples)

    def plan(self, floor: float = 0.0) -> list[float] | None:
        """Seconds after the ask at which to poll (increasing), or None without enough samples."""
        if len(self._samples) < self.min_samples:
            return None
        ordered = sorted(self._samples)
        points: list[float] = []
        for q in QUANTILES:
            value = ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] + MARGIN
            value = max(value, floor, points[-1] + 0.25 if points else 0.0)
            points.append(value)
        return points
