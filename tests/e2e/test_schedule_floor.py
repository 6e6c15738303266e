"""QUOTA_SCHEDULE_MIN_EVERY (issue 21, item 3): a schedule may fire at most every 15 min by default.

A faster `every` or cron expression is refused with one line naming the minimum: in the setting
(QUOTA_SCHEDULES stops `run`, `check` and `quota`, as a user runs them) and in the chat commands (the
real Slack and Discord adapters against their fakes). A schedule stored before the minimum was raised is
reported by `check` and runs at the minimum (the real scheduler and store on a fake clock, two replicas
sharing the store: each run still posted once). A stored schedule whose platform is not configured is
logged once and paused: no claim, no reading, no post over many due times.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from bot.scheduler import Scheduler
from bot.schedules import ScheduleError, parse_config, parse_when, refuse_below
from bot.settings import SettingsError, load_settings
from bot.store import Store
from tests.fakes.cli import clean_env, run_cli
from tests.fakes.clock import FakeClock
from tests.fakes.posters import RecordingPoster, eventually
from tests.fakes.slack import ADMIN_ID
from tests.e2e.test_discord_e2e import start_discord  # noqa: F401  (fixtures)
from tests.e2e.test_slack_e2e import slack_http  # noqa: F401  (fixtures)

UTC = timezone.utc
START = datetime(2026, 3, 2, 8, 59, 0, tzinfo=UTC)
LINE = "Schedules may fire at most every 15 min (QUOTA_SCHEDULE_MIN_EVERY); 'every 1s' fires every 1 s."


# --- the setting -----------------------------------------------------------------------------------

def test_the_minimum_is_15_minutes_by_default_and_accepted_from_1s_to_1d():
    assert load_settings(None).quota_schedule_min_every == 900
    assert load_settings(None, quota_schedule_min_every="1s").quota_schedule_min_every == 1
    assert load_settings(None, quota_schedule_min_every="1h").quota_schedule_min_every == 3600
    assert load_settings(None, quota_schedule_min_every="1d").quota_schedule_min_every == 86400
    for bad in ("0.5s", "0", "2d", "soon", "-1m"):
        with pytest.raises(SettingsError, match=r"^QUOTA_SCHEDULE_MIN_EVERY: ") as caught:
            load_settings(None, quota_schedule_min_every=bad)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("when, gap", [
    ("every 1s", 1), ("every 1m", 60), ("* * * * *", 60), ("*/5 9 * * *", 300), ("every 14m", 840),
    ("*/10 * * * *", 600), ("0,50 * * * *", 600),  # :50 to the next hour's :00
    ("0,55 0,23 * * *", 300),  # 23:55 to the next day's 00:00
])
def test_faster_than_the_default_minimum_is_refused_with_one_line_naming_it(when, gap):
    with pytest.raises(ScheduleError) as caught:
        refuse_below(parse_when(when), 900)
    message = caught.value.user_message
    assert message.startswith("Schedules may fire at most every 15 min (QUOTA_SCHEDULE_MIN_EVERY); "), message
    assert f"'{when}'" in message and caught.value.echo == when and "\n" not in message
    assert parse_when(when).min_gap == gap


@pytest.mark.parametrize("when", ["every 15m", "every 6h", "0 9 * * *", "0 9 * * 1-5", "*/15 * * * *",
                                  "0 0,12 * * *", "0 0,23 31 * *"])
def test_as_slow_as_the_minimum_is_accepted(when):
    refuse_below(parse_when(when), 900)
    assert parse_config(f"slack:C01={when}", 900)[0].when.text == when


def test_the_shortest_gap_of_a_cron_expression_spans_midnight_and_the_days_it_runs():
    assert parse_when("0 0,23 * * *").min_gap == 3600  # 23:00 → 00:00
    assert parse_when("0 0,23 31 * *").min_gap == 23 * 3600  # the 31st never follows a 31st
    assert parse_when("0 0,23 28,29 2 *").min_gap == 3600  # in a leap year
    assert parse_when("0 9 * * 1-5").min_gap == 86400
    assert parse_when("30 2 * * 0").min_gap == 7 * 86400


def test_a_config_item_below_the_minimum_names_quota_schedules_and_the_minimum():
    with pytest.raises(ScheduleError) as caught:
        parse_config("slack:C01=every 1h;slack:C02=* * * * *", 900)
    assert caught.value.user_message == (
        "QUOTA_SCHEDULES: item 'slack:C02=* * * * *': schedules may fire at most every 15 min "
        "(QUOTA_SCHEDULE_MIN_EVERY); '* * * * *' fires as often as every 1 min.")
    assert parse_config("slack:C02=* * * * *", 60)[0].when.cron == "* * * * *"  # a lowered minimum


@pytest.mark.parametrize("command", ["run", "check", "quota"])
async def test_every_command_stops_on_a_config_item_below_the_minimum(tmp_path, command):
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3", HOST="127.0.0.1", PORT="0",
                    SLACK_BOT_TOKEN="xoxb-floor-test", SLACK_SIGNING_SECRET="floor-secret",
                    QUOTA_SCHEDULES="slack:C0123=every 1m")
    code, out, err = await run_cli(command, env=env, cwd=tmp_path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, out, err)
    assert lines[0] == ("quota-bot: QUOTA_SCHEDULES: item 'slack:C0123=every 1m': schedules may fire at most every "
                        "15 min (QUOTA_SCHEDULE_MIN_EVERY); 'every 1m' fires every 1 min.")
    assert "Traceback" not in out + err and "floor-secret" not in out + err
    env["QUOTA_SCHEDULE_MIN_EVERY"] = "1m"  # lowered: the same item is accepted
    code, out, err = await run_cli("quota", env=env, cwd=tmp_path)
    assert code == 0, out + err


# --- the chat commands ----------------------------------------------------------------------------

@pytest.fixture
async def floored(tmp_path, service):
    store = await Store.open(str(tmp_path / "chat.sqlite3"))
    posters: dict = {}
    scheduler = Scheduler(store, service, posters, timezone="UTC")  # the default minimum: 15 min
    await scheduler.start()
    yield scheduler, posters
    await scheduler.stop()
    await store.close()


async def test_slack_add_below_the_minimum_is_refused_with_one_line(slack_http, floored, service):  # noqa: F811
    scheduler, posters = floored
    bot = await slack_http(service, schedules=scheduler)
    posters["slack"] = bot.adapter
    resp, _, rid, took = await bot.command("add every 1s", command="/quota-schedule", user_id=ADMIN_ID)
    assert resp.status == 200 and took < 3
    text = (await bot.fake.wait_response(rid)).body["text"]
    assert text == f":x: {LINE}", text
    assert await scheduler.list("slack") == [] and await scheduler.store.schedules() == []
    _, _, rid, _ = await bot.command("add */5 * * * *", command="/quota-schedule", user_id=ADMIN_ID)
    assert "fires as often as every 5 min" in (await bot.fake.wait_response(rid)).body["text"]
    _, _, rid, _ = await bot.command("add every 15m", command="/quota-schedule", user_id=ADMIN_ID)
    assert (await bot.fake.wait_response(rid)).body["text"].startswith("Schedule *#1* added: `every 15m`")


async def test_discord_add_below_the_minimum_is_refused_with_one_line(discord_fake, start_discord, floored,  # noqa: F811
                                                                        service):
    scheduler, posters = floored
    posters["discord"] = await start_discord(service, schedules=scheduler)
    _, token = await discord_fake.slash("quota-schedule", [{"type": 3, "name": "when", "value": "* * * * *"}],
                                        subcommand="add", permissions=str(1 << 5))
    text = (await discord_fake.wait_edit(token)).body["embeds"][0]["description"]
    assert text == ("Schedules may fire at most every 15 min (QUOTA_SCHEDULE_MIN_EVERY); `* * * * *` fires as often "
                    "as every 1 min."), text
    assert await scheduler.store.schedules() == []


# --- a stored schedule below a raised minimum ---------------------------------------------------------

async def test_check_reports_a_stored_schedule_below_the_minimum(tmp_path):
    store = await Store.open(str(tmp_path / "q.sqlite3"))
    fast = await store.add_schedule("slack", "C0FAST01", "every 1m", "UTC", "chat", 0.0, "U1")
    cron = await store.add_schedule("slack", "C0FAST02", "*/5 9 * * *", "UTC", "chat", 0.0, "U1")
    slow = await store.add_schedule("slack", "C0SLOW01", "every 6h", "UTC", "chat", 0.0, "U1")
    await store.close()
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3", HOST="127.0.0.1", PORT="0")
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    warned = [line for line in out.splitlines() if line.startswith("[warn] ")]
    assert any(f"schedule #{fast.id} " in line and "every 1m" in line and "QUOTA_SCHEDULE_MIN_EVERY (15 min)" in line
               and "runs at most every 15 min" in line for line in warned), out
    assert any(f"schedule #{cron.id} " in line and "as often as every 5 min" in line for line in warned), out
    assert not any(f"schedule #{slow.id} " in line for line in warned), out
    env["QUOTA_SCHEDULE_MIN_EVERY"] = "1m"
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    assert [line for line in out.splitlines() if line.startswith("[warn] ")] == [
        line for line in out.splitlines() if line.startswith("[warn] ") and f"#{cron.id} " in line] and \
        not any(f"schedule #{fast.id} " in line for line in out.splitlines() if line.startswith("[warn] ")), out


async def _scheduler(path: str, service, clock, posters, minimum: float) -> Scheduler:
    scheduler = Scheduler(await Store.open(path), service, posters, timezone="UTC", clock=clock, min_every=minimum)
    await scheduler.start()
    return scheduler


@pytest.mark.parametrize("when, first", [
    ("every 1m", START + timedelta(minutes=15)),  # from its anchor (START), every 15 min
    ("* * * * *", START + timedelta(minutes=1)),  # on the minimum's grid of the clock: 09:00, 09:15, …
])
async def test_a_stored_schedule_below_a_raised_minimum_runs_at_the_minimum_once_across_replicas(
        tmp_path, make_service, upstream, caplog, when, first):
    upstream.complete_after = 0.05
    path = str(tmp_path / "q.sqlite3")
    store = await Store.open(path)
    row = await store.add_schedule("slack", "C0FAST01", when, "UTC", "chat", START.timestamp(), "U1")
    await store.close()
    clock, poster = FakeClock(START), RecordingPoster()
    service = make_service(cache_seconds=0)
    caplog.set_level(logging.WARNING, logger="bot.scheduler")
    replicas = [await _scheduler(path, service, clock, {"slack": poster}, 900) for _ in range(2)]
    try:
        assert sum("more often than QUOTA_SCHEDULE_MIN_EVERY allows: it runs at most every 15 min" in r.getMessage()
                   for r in caplog.records) == 2  # once per replica, when armed
        view, = await replicas[0].list("slack")
        assert [run.astimezone(UTC) for run in view.next_runs] == [first + timedelta(minutes=15 * i) for i in range(3)]
        for _ in range(6):  # one hour and a half, in 15-minute steps
            await clock.advance(15 * 60)
            await eventually(lambda: all(not r._running for r in replicas), message="runs in progress")
        await eventually(lambda: len(poster.posts) == 6, message=f"6 posts (got {len(poster.posts)})")
        runs = await replicas[0].store.runs(row.id)
        dues = [datetime.fromtimestamp(due, UTC) for due, *_ in runs]
        assert dues == [first + timedelta(minutes=15 * i) for i in range(6)], dues
        assert [result for *_, result in runs] == ["posted"] * 6
    finally:
        for scheduler in replicas:
            await scheduler.stop()
            await scheduler.store.close()


# --- a stored schedule whose platform is not configured -------------------------------------------------

async def test_a_schedule_of_a_platform_not_configured_is_logged_once_and_paused(tmp_path, make_service, upstream,
                                                                                  caplog):
    upstream.complete_after = 0.05
    path = str(tmp_path / "q.sqlite3")
    store = await Store.open(path)
    lost = await store.add_schedule("slack", "C0LOST01", "every 1s", "UTC", "chat", START.timestamp(), "U1")
    kept = await store.add_schedule("discord", "123", "every 1s", "UTC", "chat", START.timestamp(), "U1")
    await store.close()
    clock, discord = FakeClock(START), RecordingPoster()
    caplog.set_level(logging.INFO, logger="bot.scheduler")
    scheduler = await _scheduler(path, make_service(cache_seconds=60), clock, {"discord": discord}, 1)
    try:
        for _ in range(5):
            await clock.advance(1.0)
            await eventually(lambda: not scheduler._running, message="runs in progress")
            await scheduler.reload()  # as another replica's change would make it
        assert len(discord.posts) == 5 and len(await scheduler.store.runs(kept.id)) == 5
        assert await scheduler.store.runs(lost.id) == []  # never claimed, so never read nor posted
        paused = [r.getMessage() for r in caplog.records if f"schedule #{lost.id} " in r.getMessage()]
        assert paused == [f"schedule #{lost.id} (slack:C0LOST01=every 1s) is paused: slack is not configured here "
                          f"(set SLACK_BOT_TOKEN, or remove it with /quota-schedule remove {lost.id})"], paused
        assert (await scheduler.store.schedules("slack"))[0].failing is None  # not marked failing run after run
    finally:
        await scheduler.stop()
        await scheduler.store.close()


async def test_check_goes_on_past_a_schedule_and_an_alert_of_the_console(tmp_path):
    """A console schedule or alert (the console chat posts them) made `check` stop half-way on a KeyError."""
    store = await Store.open(str(tmp_path / "q.sqlite3"))
    await store.add_schedule("console", "console", "every 6h", "UTC", "chat", 0.0, "")
    await store.add_alerts([("console", "console", "", "20%", "chat", "")])
    await store.close()
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3", HOST="127.0.0.1", PORT="0", LOG_LEVEL="DEBUG")
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    assert code == 0 and "all checks passed" in out and "Traceback" not in err, out + err
