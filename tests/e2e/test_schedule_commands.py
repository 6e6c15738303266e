"""`/quota-schedule` from both chats, end to end: the real adapters against the fake Discord and
Slack, the real Scheduler and Store, with and without permission."""

from __future__ import annotations

import pytest

from bot.scheduler import Scheduler
from bot.store import Store
from tests.fakes.slack import ADMIN_ID, USER_ID
from tests.e2e.test_discord_e2e import start_discord  # noqa: F401  (fixtures)
from tests.e2e.test_slack_e2e import slack_http  # noqa: F401  (fixtures)

MANAGE_GUILD = str(1 << 5)


@pytest.fixture
async def scheduler(tmp_path, service):
    store = await Store.open(str(tmp_path / "q.sqlite3"))
    posters: dict = {}
    # min_every=1: the long cron expressions of tests/e2e/test_echo_escaping.py fire every minute
    scheduler = Scheduler(store, service, posters, timezone="Europe/Berlin", min_every=1)
    scheduler.posters_ref = posters  # type: ignore[attr-defined]
    await scheduler.start()
    yield scheduler
    await scheduler.stop()
    await store.close()


def _desc(call) -> str:
    return call.body["embeds"][0]["description"]


async def test_discord_add_list_remove_with_manage_server(discord_fake, start_discord, scheduler, service):  # noqa: F811
    adapter = await start_discord(service, schedules=scheduler)
    scheduler.posters_ref["discord"] = adapter
    _, token = await discord_fake.slash("quota-schedule", [{"type": 3, "name": "when", "value": "0 9 * * 1-5"}],
                                        subcommand="add", permissions=MANAGE_GUILD)
    added = _desc(await discord_fake.wait_edit(token))
    assert added.startswith("Schedule **#1** added: `0 9 * * 1-5` (Europe/Berlin) in <#1300000000000000001>.")
    assert added.count("• <t:") == 3
    _, token = await discord_fake.slash("quota-schedule", subcommand="list", permissions=MANAGE_GUILD)
    assert "**#1** `0 9 * * 1-5` (Europe/Berlin)" in _desc(await discord_fake.wait_edit(token))
    _, token = await discord_fake.slash("quota-schedule", [{"type": 4, "name": "id", "value": 1}],
                                        subcommand="remove", permissions=MANAGE_GUILD)
    assert _desc(await discord_fake.wait_edit(token)) == "Removed schedule #1."
    assert await scheduler.list("discord") == []


async def test_discord_bad_when_gets_a_reason_with_an_example(discord_fake, start_discord, scheduler, service):  # noqa: F811
    adapter = await start_discord(service, schedules=scheduler)
    scheduler.posters_ref["discord"] = adapter
    iid, token = await discord_fake.slash("quota-schedule", [{"type": 3, "name": "when", "value": "every tuesday"}],
                                          subcommand="add", permissions=MANAGE_GUILD)
    callback = await discord_fake.wait_callback(iid)
    assert callback.body["data"]["flags"] & 64  # ephemeral
    text = _desc(await discord_fake.wait_edit(token))
    assert text.startswith("`every tuesday` is not understood") and "e.g. 0 9 * * 1-5" in text


async def test_discord_without_manage_server_is_refused(discord_fake, start_discord, scheduler, service):  # noqa: F811
    adapter = await start_discord(service, schedules=scheduler)
    scheduler.posters_ref["discord"] = adapter
    _, token = await discord_fake.slash("quota-schedule", [{"type": 3, "name": "when", "value": "every 6h"}],
                                        subcommand="add", permissions="0")
    assert _desc(await discord_fake.wait_edit(token)) == "Only members with the Manage Server permission can manage quota schedules."
    assert await scheduler.list("discord") == []


@pytest.mark.parametrize("user, admins, allowed", [
    (ADMIN_ID, "", True),  # a workspace admin (users.info)
    (USER_ID, USER_ID, True),  # listed in SLACK_ADMIN_USER_IDS
    (USER_ID, "", False),  # everyone else
])
async def test_slack_permission(slack_http, scheduler, service, user, admins, allowed):  # noqa: F811
    bot = await slack_http(service, schedules=scheduler, admins=admins)
    scheduler.posters_ref["slack"] = bot.adapter
    resp, _, rid, took = await bot.command("add every 6h", command="/quota-schedule", user_id=user)
    assert resp.status == 200 and took < 3
    text = (await bot.fake.wait_response(rid)).body["text"]
    if allowed:
        assert text.startswith("Schedule *#1* added: `every 6h` (Europe/Berlin) in <#C0FAKE01>.")
        assert text.count("• <!date^") == 3
        assert [v.channel for v in await scheduler.list("slack")] == ["C0FAKE01"]
    else:
        assert text.startswith("Only workspace admins and owners") and await scheduler.list("slack") == []


async def test_slack_list_remove_and_usage(slack_http, scheduler, service):  # noqa: F811
    bot = await slack_http(service, schedules=scheduler)
    scheduler.posters_ref["slack"] = bot.adapter
    _, _, rid, _ = await bot.command("add 0 9 * * 1-5", command="/quota-schedule", user_id=ADMIN_ID)
    await bot.fake.wait_response(rid)
    _, _, rid, _ = await bot.command("list", command="/quota-schedule", user_id=ADMIN_ID)
    assert "*#1* `0 9 * * 1-5` (Europe/Berlin) in <#C0FAKE01>, next <!date^" in (await bot.fake.wait_response(rid)).body["text"]
    _, _, rid, _ = await bot.command("add every fortnight", command="/quota-schedule", user_id=ADMIN_ID)
    assert (await bot.fake.wait_response(rid)).body["text"].startswith(":x: 'every fortnight' is not understood")
    _, _, rid, _ = await bot.command("remove 1", command="/quota-schedule", user_id=ADMIN_ID)
    assert (await bot.fake.wait_response(rid)).body["text"] == "Removed schedule #1."
    _, _, rid, _ = await bot.command("dance", command="/quota-schedule", user_id=ADMIN_ID)
    usage = (await bot.fake.wait_response(rid)).body
    assert usage["text"].startswith("I did not understand `dance`. *Usage:* `/quota-schedule add &lt;when&gt;`")
    assert usage["response_type"] == "ephemeral"
