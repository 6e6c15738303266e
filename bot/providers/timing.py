"""Learned poll timing: how long this account's jobs take, and when to poll from it.

The provider records each job's duration from the provider's own timestamps (TheNextLeg's
``createdAt``/``responseAt``, useapi's ``created``/``updated``; without them nothing is learned: the time
to the poll that saw the result is the poll's, not the job's). With enough samples, ``plan()`` chooses
the poll times that make the wait after the result is ready as short as possible on average *while
spending no more polls than a fixed-interval poller would* on the same jobs (the budget: ``every``
seconds between polls). It optimises over the recorded durations (dynamic programming over candidate
poll times, one just after each recorded duration and a grid between them, with a price per poll found
by bisection), and keeps the fixed poller's own plan where that does better on them. So for jobs of a
steady length one poll usually lands just after the result, and for a wide spread the polls go where
the jobs end most often. Until there are enough samples (and after the planned polls) the provider's
usual backoff applies; progress hints still win.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Callable, Iterable

MIN_SAMPLES = 20  # fewer: a plan fitted to a handful of jobs overshoots the poll budget on the next ones
MARGIN = 0.1  # seconds after a recorded duration: the result is ready just before the poll, not just after
CANDIDATES = 32  # at most this many candidate poll times after recorded jobs (order statistics) ...
GRID = 16  # ... and this many more between them, so a plan costs a few ms
BISECTIONS = 20  # steps of the search for the price of a poll that meets the budget


class LearnedTiming:
    def __init__(self, keep: int = 200, min_samples: int = MIN_SAMPLES,
                 on_sample: Callable[[float], object] | None = None) -> None:
        self._samples: deque[float] = deque(maxlen=keep)
        self.min_samples = min_samples
        self.on_sample = on_sample  # persistence (the store), called with each new duration
        self._cached: tuple[tuple[int, float, float, float], list[float] | None] | None = None
        self._version = 0

    def load(self, durations: Iterable[float]) -> None:
        """Durations read back from the store, newest first."""
        for value in reversed(list(durations)):
            if 0 < value < 3600:
                self._samples.append(float(value))
        self._version += 1

    def add(self, seconds: float) -> None:
        if not 0 < seconds < 3600:
            return
        self._samples.append(seconds)
        self._version += 1
        if self.on_sample is not None:
            self.on_sample(seconds)

    @property
    def count(self) -> int:
        return len(self._samples)

    def plan(self, every: float = 5.0, *, gap: float = 0.25, first: float = 0.0) -> list[float] | None:
        """Seconds after the ask at which to poll (increasing, the last one after every recorded job),
        or None without enough samples. ``every``: the fixed-interval poller whose poll count on these
        jobs is the budget; ``gap``: the least time between two polls (a provider's floor); ``first``:
        the earliest first poll."""
        if len(self._samples) < self.min_samples:
            return None
        key = (self._version, every, gap, first)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, best_plan(list(self._samples), every, gap=gap, first=first))
        return list(self._cached[1]) if self._cached[1] is not None else None


def best_plan(durations: list[float], every: float, *, gap: float = 0.25, first: float = 0.0,
              margin: float = MARGIN) -> list[float] | None:
    """The poll times that minimise the mean wait after each of ``durations`` is done, among the plans
    whose mean poll count on them is at most a poller's with ``every`` seconds between polls."""
    if not durations or every <= 0:
        return None
    done = sorted(durations)
    n = len(done)
    budget = sum(math.ceil(d / every) for d in done) / n
    step = max(1, n // CANDIDATES)
    points = {max(done[i] + margin, first) for i in range(step - 1, n, step)}
    last = max(done[-1] + margin, first)
    points.add(last)
    # and a grid between them: with a floor between polls, the best plan may need a poll that is not
    # just after a recorded job (to leave room for the next one)
    earliest = max(done[0] + margin, first)
    spacing = max(gap / 4, (last - earliest) / GRID, 0.01)
    points.update(earliest + k * spacing for k in range(int((last - earliest) / spacing) + 1))
    cand = sorted(points)
    m = len(cand)
    before = [bisect.bisect_right(done, c) for c in cand]  # jobs done by each candidate
    prefix = [0.0]
    for d in done:
        prefix.append(prefix[-1] + d)

    def solve(price: float) -> tuple[list[float], float]:
        # cost[j]: the least (total wait + price × polls) of the jobs done by cand[j], with a poll there
        cost, back, polls = [0.0] * m, [-1] * m, [0.0] * m
        for j in range(m):
            k, c = before[j], cand[j]
            best, arg, used = k * c - prefix[k] + price * n, -1, float(n)
            for p in range(j):
                if c - cand[p] < gap:
                    break  # the candidates are increasing: the nearer ones are too close as well
                i = before[p]
                value = cost[p] + (k - i) * c - (prefix[k] - prefix[i]) + price * (n - i)
                if value < best:
                    best, arg, used = value, p, polls[p] + (n - i)
            cost[j], back[j], polls[j] = best, arg, used
        out, j = [], m - 1
        while j >= 0:
            out.append(cand[j])
            j = back[j]
        return out[::-1], polls[m - 1] / n

    # the least price of a poll whose best plan stays within the budget (more price: fewer polls)
    low, high = 0.0, 4.0 * (done[-1] + every)
    chosen = solve(high)
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        found = solve(middle)
        if found[1] <= budget + 1e-9:
            chosen, high = found, middle
        else:
            low = middle
    # a price per poll finds the best plans on the convex frontier only: where the fixed-interval
    # poller itself does better on these jobs (a spread as wide as its interval), poll like it
    start, stride = max(every, first), max(every, gap)
    fixed = [start + stride * k for k in range(max(0, math.ceil((done[-1] - start) / stride)) + 1)]
    fixed_wait, fixed_polls = evaluate(fixed, done)
    if fixed_polls <= budget + 1e-9 and fixed_wait < evaluate(chosen[0], done)[0]:
        return fixed
    return chosen[0]


def evaluate(plan: list[float], durations: list[float]) -> tuple[float, float]:
    """``plan`` on these jobs: the mean time from a job's end to the next poll, and the mean number of
    polls up to it (both inf if a job ends after the last poll)."""
    wait = polls = 0.0
    for d in durations:
        at = bisect.bisect_left(plan, d)
        if at == len(plan):
            return math.inf, math.inf
        wait += plan[at] - d
        polls += at + 1
    return wait / len(durations), polls / len(durations)
