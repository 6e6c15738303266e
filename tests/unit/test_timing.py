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
    grid = [every * k for k in range(1, len(plan) + 1)]
    # the fixed poller's own plan, or one with a margin under its polls (the next jobs are not these)
    assert plan == grid or polls(plan, jobs) <= max(1.0, 0.95 * count) + 1e-9  # a job takes one poll at least


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


def _later_wait_ratio(held_out: bool) -> float:
    """30 accounts of 20 recorded useapi jobs (15–60 s, 10 s floor): the plan's mean wait on 200 later
    jobs as a share of the 10 s poller's (after its last poll, the plan goes on every 10 s)."""
    waits = fixed_waits = 0.0
    for seed in range(30):
        rng = random.Random(seed)
        recorded = [rng.uniform(15, 60) for _ in range(20)]
        later = [rng.uniform(15, 60) for _ in range(200)]
        plan = best_plan(recorded, 10.0, gap=10.0, first=10.0, held_out=held_out)
        plan += [plan[-1] + 10.0 * k for k in range(1, 10)]
        waits += evaluate(plan, later)[0]
        fixed_waits += fixed(10.0, later)[0]
    return waits / fixed_waits


def test_a_plan_fitted_to_a_few_jobs_of_a_wide_spread_waits_no_longer_than_the_fixed_poller_on_later_jobs():
    # fitted to 20 jobs, the plan also fits their accidents (no poll where none of them happened to end);
    # tried on the half of the jobs it was not fitted to, the fixed poller wins, so it is kept
    assert _later_wait_ratio(held_out=False) > 1.1  # what the check is for
    assert _later_wait_ratio(held_out=True) <= 1.03


def test_the_held_out_check_keeps_the_learned_plan_where_it_pays():
    rng = random.Random(11)
    recorded = [rng.uniform(20, 25) for _ in range(30)]
    plan = best_plan(recorded, 10.0, gap=10.0, first=10.0)
    assert plan is not None and 20.0 <= plan[0] <= 25.2 and len(plan) <= 2  # not the 10, 20, 30 s grid


async def test_plan_async_works_the_plan_out_in_a_thread_once_per_new_sample(monkeypatch):
    import threading

    from bot.providers import timing as module

    threads = []
    real = module.best_plan
    monkeypatch.setattr(module, "best_plan",
                        lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k))
    timing = LearnedTiming()
    rng = random.Random(8)
    recorded = [rng.uniform(4, 6) for _ in range(19)]
    timing.load(reversed(recorded))  # the store gives them newest first
    assert await timing.plan_async() is None and not threads  # not enough samples yet
    timing.add(5.0)
    plan = await timing.plan_async()
    assert plan == real(recorded + [5.0], 5.0) and plan[0] >= 4.0
    assert await timing.plan_async() == plan and timing.plan() == plan
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


def test_the_plan_spends_most_of_its_margin_where_polls_buy_time():
    # a price per poll alone lands on a few plans only (for 4–6 s jobs often ~1.2 polls of the 1.43
    # allowed); the local search after it moves the first poll earlier while the budget allows
    for low, high in ((4, 6), (3, 9)):
        for seed in range(20):
            rng = random.Random(seed)
            jobs = [rng.uniform(low, high) for _ in range(30)]
            plan = best_plan(jobs, 5.0, held_out=False)
            share = polls(plan, jobs) / fixed(5.0, jobs)[1]
            assert 0.85 <= share <= 0.95 + 1e-9, (low, high, seed, plan, share)
