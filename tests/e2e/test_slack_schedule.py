"""`/quota-schedule` in Slack end to end: signed commands to the real bolt app, the real Scheduler and
Store on a fake clock, and the scheduled post arriving at the fake Slack's chat.postMessage."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from bot.scheduler import Scheduler
from bot.store import Store
from tests.fakes.clock import FakeClock
from tests.fakes.slack import ADMIN_ID, USER_ID
from tests.e2e.test_slack_e2e import slack_http  # noqa: F401  (fixtures)

START = datetime(2026, 3, 2, 8, 59, 0, tzinfo=timezone.utc)
OWNER_ID = "U0OWNER01"


@pytest.fixture
async def clocked(tmp_path, service):
    store = await Store.open(str(tmp_path / "slack.sqlite3"))
    clock = FakeClock(START)
    posters: dict = {}
    scheduler = Scheduler(store, service, posters, timezone="Europe/Berlin", clock=clock)
    await scheduler.start()
    yield scheduler, posters, clock
    await scheduler.stop()
    await store.close()


async def _ask(bot, text: str, user: str = ADMIN_ID) -> str:
    resp, _, rid, took = await bot.command(text, command="/quota-schedule", user_id=user)
    assert resp.status == 200 and took < 3
    return (await bot.fake.wait_response(rid)).body["text"]


async def test_add_answers_next_runs_and_the_schedule_posts_blocks_to_the_channel(slack_http, clocked, service):  # noqa: F811
    scheduler, posters, clock = clocked
    bot = await slack_http(service, schedules=scheduler)
    posters["slack"] = bot.adapter
    text = await _ask(bot, "add 0 9 * * 1-5")
    # Monday 2 March 2026, 08:59 UTC: the next weekday 09:00 in Berlin is 08:00 UTC on Tuesday
    assert text.startswith("Schedule *#1* added: `0 9 * * 1-5` (Europe/Berlin) in <#C0FAKE01>.\nNext runs:\n")
    assert "• <!date^1772524800^{date_short_pretty} {time}|2026-03-03 09:00 Europe/Berlin>" in text
    assert text.count("(2026-03-0") == 3
    await clock.advance(23 * 3600 + 60)
    for _ in range(200):
        if bot.fake.posts:
            break
        await asyncio.sleep(0.02)
    post = bot.fake.posts[-1].body
    assert post["channel"] == "C0FAKE01" and post["text"].startswith("Midjourney fast time: 12.06 h of 15 h left")
    assert post["blocks"][0]["type"] == "header"


async def test_workspace_owner_is_allowed_and_a_failed_lookup_is_a_refusal(slack_http, clocked, service, caplog):  # noqa: F811
    scheduler, posters, _ = clocked
    bot = await slack_http(service, schedules=scheduler)
    posters["slack"] = bot.adapter
    bot.fake.users[OWNER_ID] = {"id": OWNER_ID, "is_admin": False, "is_owner": True}
    assert (await _ask(bot, "add every 6h", OWNER_ID)).startswith("Schedule *#1* added: `every 6h`")
    refused = await _ask(bot, "add every 6h", "U0UNKNOWN")  # users.info says user_not_found
    assert refused.startswith("Only workspace admins and owners, or the users in SLACK_ADMIN_USER_IDS")
    assert "users.info: user_not_found for U0UNKNOWN; not an admin" in caplog.text
    assert len(await scheduler.list("slack")) == 1


async def test_a_failed_permission_check_says_so_instead_of_refusing(slack_http, clocked, service, caplog):  # noqa: F811
    scheduler, posters, _ = clocked
    bot = await slack_http(service, schedules=scheduler)
    posters["slack"] = bot.adapter
    bot.fake.users_info_error = "missing_scope"
    answer = await _ask(bot, "add every 6h")
    assert answer.startswith(":x: Could not check with Slack whether you are a workspace admin (missing_scope)")
    assert "users:read" in answer and "SLACK_ADMIN_USER_IDS" in answer and "\n" not in answer
    assert "users.info for the schedule permission check of U0ADMIN01 failed (missing_scope)" in caplog.text
    assert await scheduler.list("slack") == []


@pytest.mark.parametrize("text, answer", [
    ("add", "Say when, e.g. `/quota-schedule add 0 9 * * 1-5`"),
    ("add 61 25 * * *", ":x: '61 25 * * *' is not a valid cron expression"),
    ("add 9am", ":x: '9am' is not a 5-field cron expression"),
    ("remove", "Say which one, e.g. `/quota-schedule remove 3`"),
    ("remove seven", "Say which one, e.g. `/quota-schedule remove 3`"),
    ("remove 9", "There is no schedule #9; see `/quota-schedule list`."),
    ("list", "No quota schedules yet."),
])
async def test_bad_input_gets_one_line_with_an_example(slack_http, clocked, service, text, answer):  # noqa: F811
    scheduler, posters, _ = clocked
    bot = await slack_http(service, schedules=scheduler)
    posters["slack"] = bot.adapter
    reply = await _ask(bot, text)
    assert reply.startswith(answer) and "\n" not in reply
    assert await scheduler.list("slack") == []


async def test_a_member_is_refused_before_anything_is_stored(slack_http, clocked, service):  # noqa: F811
    scheduler, posters, _ = clocked
    bot = await slack_http(service, schedules=scheduler)
    posters["slack"] = bot.adapter
    for text in ("add every 6h", "list", "remove 1"):
        assert (await _ask(bot, text, USER_ID)).startswith("Only workspace admins and owners")
    assert await scheduler.list("slack") == []
