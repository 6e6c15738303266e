"""The dispatcher with a fake clock, the real store and the real service against the fake upstream."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from bot.errors import AccountProblem, PostError
from bot.scheduler import PostPolicy, Scheduler
from bot.schedules import ScheduleError, parse_config
from bot.simulator import default_content
from bot.store import Store
from tests.fakes.clock import FakeClock
from tests.fakes.posters import RecordingPoster, eventually

UTC = timezone.utc
START = datetime(2026, 3, 2, 8, 59, 0, tzinfo=UTC)


@pytest.fixture
async def env(tmp_path, make_service, upstream):
    upstream.complete_after = 0.05
    made: list = []

    class Env:
        path = str(tmp_path / "q.sqlite3")
        clock = FakeClock(START)
        slack = RecordingPoster()
        discord = RecordingPoster()
        service = make_service(cache_seconds=0)

        async def scheduler(self, config: str = "", grace: float = 600) -> Scheduler:
            store = await Store.open(self.path)
            scheduler = Scheduler(store, self.service, {"slack": self.slack, "discord": self.discord},
                                  timezone="UTC", grace=grace, clock=self.clock,
                                  policy=PostPolicy(backoff=1.0), min_every=1)  # `every 3s` is allowed here
            await scheduler.sync_config(parse_config(config))
            await scheduler.start()
            made.append((scheduler, store))
            return scheduler

        async def restart(self, scheduler: Scheduler) -> None:
            await scheduler.stop()
            await scheduler.store.close()
            made.remove((scheduler, scheduler.store))

    yield Env()
    for scheduler, store in made:
        await scheduler.stop()
        await store.close()


async def test_every_schedule_posts_on_time_without_polling(env, upstream):
    await env.scheduler("slack:C01=every 3s")
    await env.clock.advance(2.9)
    assert env.slack.posts == []
    await env.clock.advance(0.2)
    await eventually(lambda: len(env.slack.posts) == 1)
    channel, outcome, _ = env.slack.posts[0]
    assert channel == "C01" and outcome.remaining.value == 12.06
    await env.clock.advance(3)
    await eventually(lambda: len(env.slack.posts) == 2)


async def test_several_schedules_due_at_once_share_one_reading(env, upstream):
    await env.scheduler(";".join(f"slack:C{i:02d}=0 9 * * *" for i in range(10)) + ";discord:123=0 9 * * *")
    await env.clock.advance(60)
    await eventually(lambda: len(env.slack.posts) == 10 and len(env.discord.posts) == 1)
    assert len(upstream.asks) == 1
    assert len({id(p[1]) for p in env.slack.posts + env.discord.posts}) == 1


async def test_within_cache_seconds_no_ask_at_all(env, upstream, make_service):
    env.service = make_service(cache_seconds=600)
    await env.service.get_report()
    await env.scheduler("slack:C01=0 9 * * *")
    await env.clock.advance(60)
    await eventually(lambda: len(env.slack.posts) == 1)
    assert len(upstream.asks) == 1  # only the reading taken before


async def test_add_list_remove_and_the_dispatcher_wakes_for_a_sooner_schedule(env):
    scheduler = await env.scheduler("slack:C01=0 9 * * 1")  # next Monday: far away
    view = await scheduler.add("slack", "C02", "every 10s", created_by="U1")
    assert view.source == "chat" and view.timezone == "UTC" and len(view.next_runs) == 3
    assert [r.isoformat() for r in view.next_runs] == ["2026-03-02T08:59:10+00:00", "2026-03-02T08:59:20+00:00",
                                                       "2026-03-02T08:59:30+00:00"]
    await env.clock.advance(10)
    await eventually(lambda: [p[0] for p in env.slack.posts] == ["C02"])
    listed = await scheduler.list("slack")
    assert [(v.channel, v.when, v.source) for v in listed] == [("C01", "0 9 * * 1", "config"), ("C02", "every 10s", "chat")]
    assert await scheduler.remove("slack", view.id) is True
    assert await scheduler.remove("slack", view.id) is False
    assert await scheduler.remove("discord", listed[0].id) is False  # ids are per platform
    await env.clock.advance(30)
    assert len(env.slack.posts) == 1
    with pytest.raises(ScheduleError, match=r"e\.g\."):
        await scheduler.add("slack", "C03", "every now and then")


async def test_config_kept_in_step_on_each_start(env):
    first = await env.scheduler("slack:C01=every 1h;slack:C02=every 2h")
    ids = {v.channel: v.id for v in await first.list("slack")}
    await first.add("slack", "C09", "every 5h")
    await env.restart(first)
    second = await env.scheduler("slack:C02=every 2h;slack:C03=every 3h")
    listed = {v.channel: v for v in await second.list("slack")}
    assert set(listed) == {"C02", "C03", "C09"}  # C01 left the variable; chat schedules stay
    assert listed["C02"].id == ids["C02"]


async def test_restart_inside_grace_posts_the_missed_run_once(env):
    first = await env.scheduler("slack:C01=0 9 * * *", grace=600)
    await env.restart(first)  # down before 09:00
    await env.clock.advance(5 * 60)  # 09:04: the 09:00 run was missed, 4 min ago
    await env.scheduler("slack:C01=0 9 * * *", grace=600)
    await eventually(lambda: len(env.slack.posts) == 1)
    await env.clock.advance(60)
    assert len(env.slack.posts) == 1


async def test_restart_outside_grace_skips_with_a_log_line(env, caplog):
    first = await env.scheduler("slack:C01=0 9 * * *", grace=600)
    await env.restart(first)
    await env.clock.advance(30 * 60)  # 09:29: missed by 29 min > 10 min grace
    await env.scheduler("slack:C01=0 9 * * *", grace=600)
    await env.clock.advance(1)
    assert env.slack.posts == [] and "more than QUOTA_SCHEDULE_GRACE); skipped" in caplog.text


async def test_frequent_schedule_restart_never_bursts(env):
    first = await env.scheduler("slack:C01=every 3s", grace=600)
    await env.restart(first)
    await env.clock.advance(60)  # 20 runs missed
    await env.scheduler("slack:C01=every 3s", grace=600)
    await eventually(lambda: len(env.slack.posts) == 1)
    await env.clock.advance(1)
    assert len(env.slack.posts) == 1  # one catch-up post, not twenty


async def test_long_outage_posts_only_the_last_run_inside_grace(env, caplog, upstream):
    config = ";".join(f"slack:C{i:02d}=* * * * *" for i in range(20))
    first = await env.scheduler(config, grace=600)
    await env.restart(first)
    await env.clock.advance(30 * 86400 + 30)  # a month down: 43,200 runs missed each, the last 30 s ago
    loop = asyncio.get_running_loop()
    began = loop.time()
    await env.scheduler(config, grace=600)
    # start-up walks only the grace window, not the outage (walking a week of minutes: ~0.2 s a schedule)
    assert loop.time() - began < 2.0
    await eventually(lambda: len(env.slack.posts) == 20)
    await env.clock.advance(1)
    assert sorted(p[0] for p in env.slack.posts) == [f"C{i:02d}" for i in range(20)] and len(upstream.asks) == 1
    assert "more than QUOTA_SCHEDULE_GRACE); skipped" in caplog.text and "posting it once now" in caplog.text


async def test_crash_between_claim_and_post_does_not_post_twice(env):
    first = await env.scheduler("slack:C01=0 9 * * *")
    schedule_id = (await first.list("slack"))[0].id
    await env.restart(first)
    # the process claimed the 09:00 run and died before posting it
    store = await Store.open(env.path)
    due = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    assert await store.claim([(schedule_id, due)]) == {(schedule_id, due)}
    await store.close()
    await env.clock.advance(120)
    await env.scheduler("slack:C01=0 9 * * *")
    await env.clock.advance(1)
    assert env.slack.posts == []


async def test_429_then_success(env):
    env.slack.script.append(PostError("rate_limited", "Slack rate limit", retry_after=2))
    await env.scheduler("slack:C01=0 9 * * *")
    await env.clock.advance(60)
    await eventually(lambda: env.slack.attempts == 1)
    await env.clock.advance(1.5)
    assert env.slack.posts == []  # still waiting out Retry-After
    await env.clock.advance(0.5)
    await eventually(lambda: len(env.slack.posts) == 1)


async def test_transient_errors_retry_a_bounded_number_of_times(env):
    env.slack.script.extend([PostError("transient", "Slack 503")] * 5)
    scheduler = await env.scheduler("slack:C01=0 9 * * *")
    await env.clock.advance(60)
    await eventually(lambda: env.slack.attempts == 1)
    await env.clock.advance(1)  # backoff 1 s, then 2 s
    await eventually(lambda: env.slack.attempts == 2)
    await env.clock.advance(2)
    await eventually(lambda: env.slack.attempts == 3)
    await env.clock.advance(10)
    assert env.slack.attempts == 3  # bounded
    views = await scheduler.list("slack")
    assert views[0].failing == "Slack 503" and env.slack.posts == []


async def test_channel_gone_marks_failing_then_recovers(env):
    env.slack.script.append(PostError("gone", "Slack not_in_channel"))
    scheduler = await env.scheduler("slack:C01=every 1m")
    await env.clock.advance(60)
    await eventually(lambda: env.slack.attempts == 1)
    await asyncio.sleep(0.1)
    assert (await scheduler.list("slack"))[0].failing == "Slack not_in_channel"
    await env.clock.advance(60)
    await eventually(lambda: len(env.slack.posts) == 1)
    await asyncio.sleep(0.1)
    assert (await scheduler.list("slack"))[0].failing is None


async def test_upstream_failure_posts_the_reason(env, upstream):
    upstream.content = "NO_FAST_HOURS"
    await env.scheduler("discord:123=0 9 * * *")
    await env.clock.advance(60)
    await eventually(lambda: len(env.discord.posts) == 1)
    outcome = env.discord.posts[0][1]
    assert isinstance(outcome, AccountProblem) and outcome.user_message == "This Midjourney account has no fast time left."


async def test_readings_are_recorded_by_the_service_listener(env, upstream):
    scheduler = await env.scheduler("slack:C01=0 9 * * *")
    env.service.subscribe(scheduler.store.record_reading)
    await env.clock.advance(60)
    await eventually(lambda: len(env.slack.posts) == 1)
    assert [r["remaining"] for r in await scheduler.store.readings()] == [12.06]


async def test_a_slow_reading_posts_once_and_skips_the_runs_due_while_it_waits(env, upstream, caplog):
    # the reading takes 1 s of real time; meanwhile the fake clock passes four 3 s intervals
    upstream.complete_after = 1.0
    scheduler = await env.scheduler("slack:C01=every 3s;discord:123=every 10s")
    slack_id = (await scheduler.list("slack"))[0].id
    discord_id = (await scheduler.list("discord"))[0].id
    began = asyncio.get_running_loop().time()
    for _ in range(4):  # 08:59:03 dispatched; :06, :09, :12 fall due while it waits; discord joins at :10
        await env.clock.advance(3)
    assert asyncio.get_running_loop().time() - began < 0.8, "the reading must still be pending here"
    assert env.slack.posts == [] and env.discord.posts == []
    await eventually(lambda: len(env.slack.posts) >= 1 and len(env.discord.posts) == 1)
    await asyncio.sleep(0.1)
    assert [p[0] for p in env.slack.posts] == ["C01"]  # one post, not four
    assert env.slack.posts[0][1] is env.discord.posts[0][1] and len(upstream.asks) == 1  # still one shared reading
    base = START.timestamp()
    skipped = "skipped: the previous run still waits on a reading"
    assert [(due - base, result) for due, _, result in await scheduler.store.runs(slack_id)] == [
        (3, "posted"), (6, skipped), (9, skipped), (12, skipped)]
    assert [(due - base, result) for due, _, result in await scheduler.store.runs(discord_id)] == [(10, "posted")]
    assert caplog.text.count("still waits on a reading") == 3
    assert f"schedule #{slack_id} (slack:C01): the run due at 2026-03-02T08:59:06+00:00 is skipped" in caplog.text
    # the reading is in: the next run posts as usual
    upstream.complete_after = 0.05
    await env.clock.advance(3)  # 08:59:15
    await eventually(lambda: len(env.slack.posts) == 2)
    await asyncio.sleep(0.05)
    assert (await scheduler.store.runs(slack_id))[-1][0] - base == 15
    assert (await scheduler.store.runs(slack_id))[-1][2] == "posted"


async def test_a_run_due_while_the_previous_one_still_posts_is_skipped(env):
    # Slack asks to wait 5 s: the 08:59:06 run falls due while the 08:59:03 one still waits to post
    env.slack.script.append(PostError("rate_limited", "Slack rate limit", retry_after=5))
    scheduler = await env.scheduler("slack:C01=every 3s")
    schedule_id = (await scheduler.list("slack"))[0].id
    await env.clock.advance(3)
    await eventually(lambda: env.slack.attempts == 1)
    await env.clock.advance(3)  # 08:59:06: skipped
    await asyncio.sleep(0.05)
    assert env.slack.posts == []
    await env.clock.advance(2)  # 08:59:08: Retry-After is over; the 08:59:03 run posts
    await eventually(lambda: len(env.slack.posts) == 1)
    await env.clock.advance(1)  # 08:59:09: posts normally
    await eventually(lambda: len(env.slack.posts) == 2)
    await asyncio.sleep(0.05)
    base = START.timestamp()
    assert [(due - base, result) for due, _, result in await scheduler.store.runs(schedule_id)] == [
        (3, "posted"), (6, "skipped: the previous run is still posting"), (9, "posted")]


async def test_a_failed_or_cancelled_run_never_leaves_its_schedule_busy(env, upstream):
    upstream.content = "NO_FAST_HOURS"
    scheduler = await env.scheduler("slack:C01=every 3s")
    await env.clock.advance(3)
    await eventually(lambda: len(env.slack.posts) == 1)  # the reason is posted
    upstream.content = default_content
    upstream.complete_after = 0.05
    await env.clock.advance(3)
    await eventually(lambda: len(env.slack.posts) == 2)  # not skipped: the failed reading freed it
    # stopped while a run waits on a reading: the run is cancelled and the schedule freed
    upstream.complete_after = 5.0
    await env.clock.advance(3)
    await asyncio.sleep(0.1)
    schedule_id = (await scheduler.list("slack"))[0].id
    assert scheduler._running[schedule_id].reading  # busy: its run waits on the reading
    await scheduler.stop()
    assert scheduler._running == {}


async def test_runs_offered_and_waiting_for_their_window_are_not_taken_over_by_a_recovery(env):
    # 40 runs due at once are taken 10 at a time (two windows in flight); while the first two windows
    # post (slowly), the other two wait in the store, offered to every replica and owned by nobody, as
    # released runs are. A recovery running meanwhile (every few seconds in `run`) must leave them to
    # the windows: taking them over here would record them as skipped ("another run in progress").
    class GatedPoster(RecordingPoster):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def post(self, channel, outcome) -> None:
            self.attempts += 1
            await self.gate.wait()
            await super().post(channel, outcome)

    env.slack = GatedPoster()
    scheduler = await env.scheduler(";".join(f"slack:C{i:02d}=0 9 * * *" for i in range(40)))
    await env.clock.advance(60)
    await eventually(lambda: env.slack.attempts == 20)
    waiting = [row for row in await scheduler.store.unfinished_runs() if row[2] is None]
    assert len(waiting) == 20, "two windows wait in the store, owned by nobody"
    assert await scheduler.recover() == 0
    env.slack.gate.set()
    await eventually(lambda: len(env.slack.posts) == 40)
    results = [result for row in await scheduler.store.schedules()
               for _, _, result in await scheduler.store.runs(row.id)]
    assert results == ["posted"] * 40 and sorted(c for c, _, _ in env.slack.posts) == [f"C{i:02d}" for i in range(40)]
