"""Learned poll timing: how long this account's jobs take, and when to poll from it.

Durations come from the provider's own timestamps; with enough samples ``plan()`` chooses poll times
that shorten the wait after a result is ready while spending fewer polls than the fixed poller would.
How: docs/architecture.md, "Providers".
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import deque
from typing import Callable, Iterable

MIN_SAMPLES = 20  # fewer: a plan fitted to a handful of jobs overshoots the poll budget on the next ones
MARGIN = 0.1  # seconds after a recorded duration: the result is ready just before the poll, not just after
CANDIDATES = 32  # at most this many candidate poll times after recorded jobs (order statistics) ...
GRID = 16  # ... and this many more between them, so a plan costs a few ms
BISECTIONS = 20  # steps of the search for the price of a poll that meets the budget
HALF_MIN = 10  # the held-out check (best_plan) needs this many jobs in each half
SHARE = 0.95  # of the fixed poller's polls on the recorded jobs: a plan that spends all of them there
# spends more on the next jobs about half the time (over 60 simulated accounts of 4–6 s jobs, 60 later
# readings each: 18 of 60 overspent at 1.0, 10 of 60 at 0.95 with the local search, for the same wait)
SWEEPS = 6  # local-search moves after the priced plan (best_plan)


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
        key = (self._version, every, gap, first)
        if len(self._samples) >= self.min_samples and not self._has(key):
            self._cached = (key, best_plan(list(self._samples), every, gap=gap, first=first))
        return self._planned(key)

    async def plan_async(self, every: float = 5.0, *, gap: float = 0.25, first: float = 0.0) -> list[float] | None:
        """``plan()`` for the event loop: a new plan (about 25 ms of Python for 200 samples, once per new
        sample) is worked out in a thread, so the loop gets its turns meanwhile (the GIL is handed over
        every few ms). The samples are copied here, on the loop, where ``add`` runs."""
        key = (self._version, every, gap, first)
        if len(self._samples) >= self.min_samples and not self._has(key):
            samples = list(self._samples)
            self._cached = (key, await asyncio.to_thread(best_plan, samples, every, gap=gap, first=first))
        return self._planned(key)

    def _has(self, key: tuple[int, float, float, float]) -> bool:
        return self._cached is not None and self._cached[0] == key

    def _planned(self, key: tuple[int, float, float, float]) -> list[float] | None:
        if len(self._samples) < self.min_samples or self._cached is None or self._cached[0] != key:
            return None
        return list(self._cached[1]) if self._cached[1] is not None else None


def best_plan(durations: list[float], every: float, *, gap: float = 0.25, first: float = 0.0,
              margin: float = MARGIN, share: float = SHARE, held_out: bool = True) -> list[float] | None:
    """The poll times that minimise the mean wait after each of ``durations`` is done, among the plans
    whose mean poll count on them is at most ``share`` of a poller's with ``every`` seconds between
    polls. The plan is never worse on them than that poller itself (which is returned when it is).

    ``held_out``: a plan fitted to a few dozen jobs also fits their accidents (a stretch where none of
    them happened to end gets no poll), and the next jobs pay for it. So the plan is also fitted to each
    half of ``durations`` (in the order given: oldest first) and tried on the other half; if the fixed
    poller waits less on the halves it was not fitted to, the fixed poller's plan is returned. Over 40
    simulated accounts of 30 jobs of 15–60 s under useapi's 10 s floor, this took the learned plan from
    1.19× to 1.01× the fixed poller's wait on later jobs; it changes nothing where learning pays."""
    if not durations or every <= 0:
        return None
    plan, fixed = _fit(durations, every, gap, first, margin, share)
    if not held_out or len(durations) < 2 * HALF_MIN or plan == fixed:
        return plan
    stride = max(every, gap)
    learned_wait = fixed_wait = 0.0
    for fitted, tried in ((durations[0::2], durations[1::2]), (durations[1::2], durations[0::2])):
        half, _ = _fit(fitted, every, gap, first, margin, share)
        learned_wait += evaluate(_extended(half, stride, max(tried)), tried)[0]
        fixed_wait += evaluate(_extended(fixed, stride, max(tried)), tried)[0]
    return plan if learned_wait <= fixed_wait else fixed


def _extended(plan: list[float], stride: float, until: float) -> list[float]:
    """``plan``, then a poll every ``stride`` seconds until one at or after ``until``."""
    out = list(plan)
    while out[-1] < until:
        out.append(out[-1] + stride)
    return out


def _fit(durations: list[float], every: float, gap: float, first: float, margin: float,
         share: float) -> tuple[list[float], list[float]]:
    """The best plan on exactly these jobs, and the fixed poller's plan (covering them all)."""
    done = sorted(durations)
    n = len(done)
    full = sum(math.ceil(d / every) for d in done) / n  # the fixed poller's polls
    budget = share * full
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
    # a price per poll finds the best plans on the convex frontier only, so the chosen one may leave
    # part of the budget unspent: move or add polls while that lowers the wait within the budget
    plan = _improve(chosen[0], cand, done, prefix, budget, gap)
    # where the fixed-interval poller itself does better on these jobs (a spread as wide as its
    # interval), poll like it
    start, stride = max(every, first), max(every, gap)
    fixed = [start + stride * k for k in range(max(0, math.ceil((done[-1] - start) / stride)) + 1)]
    fixed_wait, fixed_polls = evaluate(fixed, done)
    if fixed_polls <= full + 1e-9 and fixed_wait < evaluate(plan, done)[0]:
        return fixed, fixed
    return plan, fixed


def _improve(plan: list[float], cand: list[float], done: list[float], prefix: list[float], budget: float,
             gap: float) -> list[float]:
    """Local search from ``plan``: each sweep takes the one move (a poll to another candidate time, or
    one more poll) that lowers the mean wait on ``done`` (sorted; ``prefix`` its running sums) the most
    while the mean polls stay within ``budget``; until no move does, or SWEEPS."""
    n = len(done)

    def wait_and_polls(option: list[float]) -> tuple[float, float]:
        wait = polls = 0.0
        prev = 0
        for i, t in enumerate(option):
            k = bisect.bisect_right(done, t)
            wait += (k - prev) * t - (prefix[k] - prefix[prev])
            polls += (k - prev) * (i + 1)
            prev = k
        return (wait / n, polls / n) if prev == n else (math.inf, math.inf)

    best = wait_and_polls(plan)[0]
    for _ in range(SWEEPS):
        found = None
        for i in range(len(plan) + 1):
            low = plan[i - 1] + gap if i else -math.inf
            high = plan[i] - gap if i < len(plan) else math.inf
            moved_low = plan[i - 2] + gap if i >= 2 else -math.inf  # moving poll i-1 instead
            for c in cand:
                options = []
                if low - 1e-9 <= c <= high + 1e-9:
                    options.append(plan[:i] + [c] + plan[i:])  # one more poll
                if i and c != plan[i - 1] and moved_low - 1e-9 <= c <= high + 1e-9:
                    options.append(plan[:i - 1] + [c] + plan[i:])  # poll i-1 moved to c
                for option in options:
                    wait, polls = wait_and_polls(option)
                    if polls <= budget + 1e-9 and wait < best - 1e-12:
                        best, found = wait, option
        if found is None:
            break
        plan = found
    return plan


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
