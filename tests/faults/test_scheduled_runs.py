"""Issue 20, faults 3 and 9: a scheduled run is neither lost nor posted twice when the process stops between
claiming and posting it (SIGKILL, SIGTERM during a reading), nor when replicas start together.

Every test runs real `quota-bot run` processes (``python -m bot run``, the helpers of tests/e2e/test_replicas.py)
against the fake Slack and the fake upstream of this test's event loop; the runs are read back from the
database the processes wrote.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from bot.simulator import UpstreamSimulator
from bot.store import open_store
from tests.conftest import TEST_TOKEN
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.secrets import ALL_TEST_SECRETS
from tests.e2e.test_replicas import DISCORD_TOKEN, SLACK_APP, SLACK_BOT, Cluster

SCHEDULED = "C0SCHED01"
GRID = 5.0


@pytest.fixture
async def rig(tmp_path):
    """A Cluster (tests/e2e/test_replicas.py) whose database is ``rig.url`` (SQLite unless a test sets it)."""
    upstream = UpstreamSimulator(complete_after=0.2, require_token=TEST_TOKEN)
    await upstream.start()
    slack = await FakeSlack(SLACK_BOT, SLACK_APP).start()
    discord = await FakeDiscord(DISCORD_TOKEN).start()
    cluster = Cluster(tmp_path, f"sqlite:///{tmp_path}/q.sqlite3", upstream, slack, discord)
    try:
        yield cluster
    finally:
        await cluster.close()
        logs = cluster.logs(tail=10**8)
        print(cluster.logs())
        await discord.stop()
        await slack.stop()
        await upstream.stop()
    leaked = [name for name, value in ALL_TEST_SECRETS.items() if value in logs]
    assert not leaked, f"secret(s) {leaked} appeared in a log"


def slack_only(**extra: str) -> dict[str, str]:
    """Settings of a Slack-only bot (no Discord gateway: quicker to start and to kill)."""
    return {"DISCORD_BOT_TOKEN": "", "QUOTA_CACHE_SECONDS": "0", "QUOTA_SCHEDULE_MIN_EVERY": "1s", **extra}


async def schedule_runs(url: str, channel: str = SCHEDULED) -> tuple[float, list[tuple[float, float | None, str | None]]]:
    """(the schedule's anchor, its runs as (due, posted_at, result))."""
    store = await open_store(url)
    try:
        [row] = [s for s in await store.schedules() if s.channel == channel]
        return row.anchor, await store.runs(row.id)
    finally:
        await store.close()


async def wait_for_run(url: str, state: str, timeout: float = 20.0) -> float:
    """The due time of the first run in ``state`` ('claimed', …) of the schedule, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, runs = await schedule_runs(url)
            for due, _, result in runs:
                if result == state:
                    return due
        except (ValueError, Exception):  # noqa: BLE001 - the schedule is not stored yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"no run became {state} within {timeout} s")


# --- SIGKILL at random moments ---------------------------------------------------------------------------

@pytest.mark.timeout(400)  # 20 kills and restarts: ~80 s alone, several times that on a loaded machine
async def test_twenty_kills_at_random_moments_lose_no_run_and_post_none_twice(rig):
    """`every 5s`, 20 SIGKILLs at random moments (readings take ~1.5 s, so many land between a claim and
    its post): every slot is posted exactly once, or recorded as skipped by the documented rule (a run
    being posted when the process died, which may have gone out), or was missed while no process ran and
    a later slot of the same outage was caught up (QUOTA_SCHEDULE_GRACE)."""
    rig.upstream.complete_after = 1.5
    settings = slack_only(QUOTA_SCHEDULES=f"slack:{SCHEDULED}=every 5s")
    rnd = random.Random(20)
    outages: list[tuple[float, float]] = []  # (killed at, the next process ready at), Unix time
    began = time.time()
    kills = 0
    while kills < 20:
        [proc] = await rig.start(1, **settings)
        if kills:
            outages[-1] = (outages[-1][0], time.time())
        await asyncio.sleep(rnd.uniform(0.2, 3.2))
        proc.proc.kill()
        await proc.proc.wait()
        outages.append((time.time(), float("inf")))
        kills += 1
    [last] = await rig.start(1, **settings)
    outages[-1] = (outages[-1][0], time.time())
    await asyncio.sleep(2 * GRID + 2)  # whatever was taken over is posted, and a few runs more
    await rig.terminate(last)
    ended = time.time()
    took = ended - began

    anchor, runs = await schedule_runs(rig.url)
    result = {due: outcome for due, _, outcome in runs}
    posts = sorted(rig.posts(SCHEDULED))
    slots = [anchor + GRID * k for k in range(1, int((ended - 3 - anchor) / GRID) + 1)]
    posted = [due for due in slots if result.get(due) == "posted"]
    maybe = [due for due in slots if (result.get(due) or "").startswith("skipped: its process stopped while posting")]
    unfinished = [(due, outcome) for due, outcome in result.items() if outcome in ("claimed", "posting")]
    lost = []
    for due in slots:
        if due in result:
            continue
        # missed while no process ran: allowed when a later slot of that outage was posted (caught up)
        outage = next(((k, r) for k, r in outages if k - 0.05 <= due <= r), None)
        if outage is None or not any(outage[0] <= other <= outage[1] and other in result for other in slots
                                     if other > due):
            lost.append(due)
    lost += [due for due, _ in unfinished]
    # every post is one run's (the slots above end 3 s before the stop: count the runs after them too)
    all_posted = [due for due, outcome in result.items() if outcome == "posted"]
    all_maybe = [due for due, outcome in result.items()
                 if (outcome or "").startswith("skipped: its process stopped while posting")]
    doubled = max(0, len(posts) - len(all_posted) - len(all_maybe))
    print(f"20 kills in {took:.0f} s: {len(slots)} slots, {len(posted)} posted, {len(maybe)} recorded as skipped "
          f"while posting, {len(lost)} lost, {doubled} doubled; {len(posts)} posts")
    assert unfinished == [], f"runs left claimed and never posted: {unfinished}"
    assert lost == [], f"slots lost: {[round(d - anchor, 1) for d in lost]}"
    assert doubled == 0, f"{len(posts)} posts for {len(all_posted)} posted runs (+{len(all_maybe)} that may have gone out)"
    assert len(posted) >= len(slots) // 2, (len(posted), len(slots))
    logs = "\n".join(r.text() for r in rig.replicas)
    assert "claimed but not posted before a stop to post now" in logs
    assert "was claimed by a process that stopped before posting it; posting it now" in logs


# --- SIGTERM during a reading --------------------------------------------------------------------------

async def test_a_run_claimed_when_sigterm_arrives_during_a_slow_reading_is_posted_after_the_restart(rig):
    """A deploy lands while the reading of a run takes longer than the stop budget: the process stops
    within 10 s, releasing the run, and the next start posts it (once)."""
    # every 12s: the restart comes before the next run, which would otherwise be the one caught up
    settings = slack_only(QUOTA_SCHEDULES=f"slack:{SCHEDULED}=every 12s")
    [first] = await rig.start(1, **settings)
    await asyncio.sleep(1.0)  # the background reading taken at start is done
    rig.upstream.complete_after = 12.0  # a slow provider (useapi's readings take 15–60 s)
    due = await wait_for_run(rig.url, "claimed")
    await asyncio.sleep(0.5)  # the reading is under way
    stopping = time.monotonic()
    first.proc.terminate()
    await asyncio.wait_for(first.proc.wait(), 15)
    assert time.monotonic() - stopping < 10.0, "the stop took longer than its 10 s budget"
    assert rig.posts(SCHEDULED) == []
    _, runs = await schedule_runs(rig.url)
    assert [r for r in runs if r[0] == due][0][2] == "claimed"  # released, not finished

    rig.upstream.complete_after = 0.2
    [second] = await rig.start(1, **settings)
    await rig.slack.wait(lambda: True if rig.posts(SCHEDULED) else None, timeout=15)
    await asyncio.sleep(1.0)
    await rig.terminate(second)
    _, runs = await schedule_runs(rig.url)
    outcome = {d: r for d, _, r in runs}
    assert outcome[due] == "posted", runs
    posted = [d for d, r in outcome.items() if r == "posted"]
    assert len(rig.posts(SCHEDULED)) == len(posted), (rig.posts(SCHEDULED), runs)
    assert "claimed scheduled run(s) not posted yet are left for the next start" in first.text()


async def test_sigterm_while_a_run_waits_on_a_short_reading_posts_it_before_exiting(rig):
    """The post in flight is finished within the stop budget rather than dropped."""
    [proc] = await rig.start(1, **slack_only(QUOTA_SCHEDULES=f"slack:{SCHEDULED}=every 5s"))
    await asyncio.sleep(1.0)  # the background reading taken at start is done
    rig.upstream.complete_after = 2.0
    due = await wait_for_run(rig.url, "claimed")
    proc.proc.terminate()
    stopping = time.monotonic()
    await asyncio.wait_for(proc.proc.wait(), 15)
    assert time.monotonic() - stopping < 10.0
    assert len(rig.posts(SCHEDULED)) == 1
    _, runs = await schedule_runs(rig.url)
    assert {d: r for d, _, r in runs}[due] == "posted"


# --- replicas started together -----------------------------------------------------------------------

async def test_three_replicas_started_together_post_each_run_of_thirty_schedules_once(rig, pg_url):
    """The usual deploy: three replicas, one PostgreSQL database, the same 30 `every 5s` schedules. Every
    channel gets one post per run, the first run included; the same again after a restart of all three."""
    rig.url = pg_url
    channels = [f"C0R{i:05d}" for i in range(30)]
    settings = slack_only(QUOTA_SCHEDULES=";".join(f"slack:{c}=every 5s" for c in channels), QUOTA_CACHE_SECONDS="60")

    async def one_deploy(seconds: float) -> None:
        replicas = await rig.start(3, **settings)
        await asyncio.sleep(seconds)
        await asyncio.gather(*(rig.terminate(r) for r in replicas))

    await one_deploy(12.0)
    await one_deploy(12.0)  # a redeploy on the stored schedules
    store = await open_store(pg_url)
    try:
        rows = [s for s in await store.schedules() if s.channel in channels]
        assert sorted(s.channel for s in rows) == channels, "a configured schedule was stored twice"
        counts = {}
        for row in rows:
            runs = await store.runs(row.id)
            posts = sorted(rig.posts(row.channel))
            posted = [due for due, _, result in runs if result == "posted"]
            gaps = [round(b - a, 2) for a, b in zip(posts, posts[1:])]
            counts[row.channel] = len(posts)
            assert len(posts) == len(posted), f"{row.channel}: {len(posts)} posts for {len(posted)} runs ({gaps})"
            # one grid for all: each due time is the anchor plus a whole number of periods
            assert all(abs((due - row.anchor) / 5.0 - round((due - row.anchor) / 5.0)) < 1e-6 for due in posted)
            assert len(set(posted)) == len(posted)
    finally:
        await store.close()
    print(f"posts per channel over two deploys: {sorted(set(counts.values()))} (channels: {len(counts)})")
    assert min(counts.values()) >= 3


async def test_a_configured_schedule_is_stored_once_even_when_replicas_sync_without_the_lock(open_stores):
    """Two replicas that sync QUOTA_SCHEDULES at once without the start-up lock (it waits 15 s at most,
    and is skipped while the database cannot be asked) store each item once, with one anchor: two rows
    would be two grids, each run posted twice."""
    a, b = await open_stores(), await open_stores()
    items = [("slack", f"C0R{i:05d}", "every 5s", "UTC", "config", anchor) for i in range(30)
             for anchor in [time.time()]]
    await asyncio.gather(a.add_schedules(items), b.add_schedules([(*i[:5], i[5] + 0.96) for i in items]))
    rows = await a.schedules()
    assert len(rows) == 30 and len({r.anchor for r in rows if r.channel == "C0R00000"}) == 1
