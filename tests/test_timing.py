"""The learned poll plan (bot.providers.timing): within the poll budget of a fixed-interval poller, never
worse than it on the recorded jobs, and far better for jobs of a steady length."""

from __future__ import annotations

import math
import random
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.providers.timing import LearnedTiming, best_plan, evaluate

durations = st.lists(st.floats(min_value=0.2, max_value=300, allow_nan=False), min_size=1, max_size=200)


def polls(plan: list[float], jobs: list[float]) -> float:
    """Mean polls per job: every poll up to the first one at or after the job's end."""
    return statistics.mean(next(i for i, p in enumerate(plan, 1) if p >= d) for d in jobs)


def mean_wait(plan: list[float], jobs: list[float]) -> float:
    return statistics.mean(next(p for p in plan if p >= d) - d for d in jobs)


def fixed(every: float, jobs: list[float]) -> tuple[float, float]:
    """A poller every ``every`` seconds: mean wait and mean polls on these jobs."""
    return (statistics.mean(math.ceil(d / every) * every - d for d in jobs),
            statistics.mean(math.ceil(d / every) for d in jobs))


@settings(max_examples=150, deadline=None)
@given(durations, st.sampled_from([2.0, 5.0, 10.0]))
def test_the_plan_covers_every_job_within_the_budget_and_is_never_worse_than_the_fixed_poller(jobs, every):
    plan = best_plan(jobs, every)
    assert plan and all(b > a for a, b in zip(plan, plan[1:]))
    assert plan[-1] >= max(jobs)  # the last planned poll comes after every recorded job
    wait, count = fixed(every, jobs)
    assert polls(plan, jobs) <= count + 1e-9
    assert mean_wait(plan, jobs) <= wait + 1e-9


@settings(max_examples=100, deadline=None)
@given(durations, st.floats(min_value=0.25, max_value=15), st.floats(min_value=0, max_value=20))
def test_a_floor_between_polls_and_an_earliest_first_poll_are_kept(jobs, gap, first):
    plan = best_plan(jobs, 10.0, gap=gap, first=first)
    assert plan[0] >= first - 1e-9
    assert all(b - a >= gap - 1e-9 for a, b in zip(plan, plan[1:]))
    assert plan[-1] >= max(jobs)


def test_jobs_of_a_steady_length_wait_under_a_third_of_a_5s_pollers_wait_with_no_more_polls():
    rng = random.Random(3)
    learned = [rng.uniform(4, 6) for _ in range(60)]
    plan = best_plan(learned, 5.0)
    later = [rng.uniform(4, 6) for _ in range(4000)]  # jobs it has not seen
    wait, count = fixed(5.0, later)
    assert mean_wait(plan, later) <= wait / 3, (plan, mean_wait(plan, later), wait)
    assert polls(plan, later) <= count + 0.05  # within sampling noise of the budget
    assert 4.0 <= plan[0] <= 6.2


def test_a_plan_is_worked_out_once_per_new_sample(monkeypatch):
    from bot.providers import timing as module

    calls = []
    real = module.best_plan
    monkeypatch.setattr(module, "best_plan", lambda *a, **k: calls.append(a) or real(*a, **k))
    timing = LearnedTiming()
    rng = random.Random(5)
    timing.load([rng.uniform(1, 60) for _ in range(200)])
    first = timing.plan()
    assert first is not None and timing.plan() == first and timing.plan(5.0) == first
    assert len(calls) == 1
    timing.add(30.0)
    assert timing.plan() is not None and len(calls) == 2
    assert timing.plan(10.0, gap=10.0, first=10.0) is not None and len(calls) == 3  # another budget
    assert timing.count == 200  # the oldest sample made room
