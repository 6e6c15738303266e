"""`/quota-alert` from both chats, end to end: the real adapters against the fake Discord and Slack, the
real Alerts on a real Store, a real pool reading the fake upstream; with and without permission, and an
alert that fires on a low reading posting into the fake chat's channel."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from adapters.discord import render as discord_render
from adapters.slack import render as slack_render
from bot.accounts import QuotaPool
from bot.alerts import Alerts, AlertView
from bot.simulator import default_content
from bot.store import Store
from tests.fakes.discord import CHANNEL_ID
from tests.fakes.slack import ADMIN_ID, USER_ID
from tests.e2e.test_discord_e2e import start_discord  # noqa: F401  (fixtures)
from tests.e2e.test_slack_e2e import slack_http  # noqa: F401  (fixtures)

MANAGE_GUILD = str(1 << 5)
RED = 0xE74C3C
LOW = {**default_content(0), "Fast Time Remaining": "1.00/15.0 hours (6.67%)"}
BAD_CONDITION = "'every tuesday' is not a condition: write a percentage, an amount or runout, e.g. 20%, 5h, 90m or runout."


@pytest.fixture
async def alerting(tmp_path, make_service):
    """``make(pooled=False)`` → (pool, alerts, posters): the real Alerts on a real Store, started; one
    account (``pooled=False``) or two (``studio`` and ``lab``) against the same fake upstream."""
    made: list[tuple[Alerts, Store]] = []

    async def make(pooled: bool = False) -> tuple[QuotaPool, Alerts, dict]:
        store = await Store.open(str(tmp_path / f"alerts{len(made)}.sqlite3"))
        services = ({"studio": make_service(cache_seconds=0), "lab": make_service(cache_seconds=0)} if pooled
                    else {"default": make_service(cache_seconds=0)})
        pool = QuotaPool(services, pooled=pooled)
        posters: dict = {}
        alerts = Alerts(store, pool, posters)
        await alerts.start()
        made.append((alerts, store))
        return pool, alerts, posters

    yield make
    for alerts, store in made:
        await alerts.stop()
        await store.close()


# --- Discord ------------------------------------------------------------------------------------

def _embed(call) -> dict:
    [embed] = call.body["embeds"]
    return embed


async def _discord(fake, name: str, options=None, *, subcommand: str, permissions: str = MANAGE_GUILD) -> dict:
    iid, token = await fake.slash(name, options, subcommand=subcommand, permissions=permissions)
    assert (await fake.wait_callback(iid)).body["data"]["flags"] & 64  # answered only to the caller
    return _embed(await fake.wait_edit(token))


def _condition(value: str, account: str | None = None) -> list[dict]:
    options = [{"type": 3, "name": "condition", "value": value}]
    return options + ([{"type": 3, "name": "account", "value": account}] if account else [])


async def test_discord_registers_the_group_and_the_account_option_only_with_names(discord_fake, start_discord, alerting):  # noqa: F811
    pool, alerts, _ = await alerting()
    await start_discord(pool, alerts=alerts)
    group = next(c for c in discord_fake.command_puts[-1].body if c["name"] == "quota-alert")
    assert group["default_member_permissions"] in (str(1 << 5), 1 << 5)
    assert group.get("dm_permission") is False or group.get("contexts") == [0]
    assert [o["name"] for o in group["options"]] == ["add", "list", "remove"]
    add = {o["name"]: o for o in group["options"][0]["options"]}
    assert set(add) == {"condition", "channel"} and add["condition"]["required"] and add["condition"]["type"] == 3
    assert add["channel"]["type"] == 7 and not add["channel"]["required"] and 4 not in add["channel"]["channel_types"]
    remove = group["options"][2]["options"]
    assert [(o["name"], o["type"], o["required"]) for o in remove] == [("id", 4, True)]


async def test_discord_account_option_is_autocompleted_and_an_unknown_one_gets_the_list(discord_fake, start_discord, alerting):  # noqa: F811
    pool, alerts, posters = await alerting(pooled=True)
    posters["discord"] = await start_discord(pool, alerts=alerts)
    group = next(c for c in discord_fake.command_puts[-1].body if c["name"] == "quota-alert")
    account = next(o for o in group["options"][0]["options"] if o["name"] == "account")
    assert account["autocomplete"] is True and not account["required"]
    iid = await discord_fake.autocomplete("quota-alert", [{"type": 1, "name": "add", "options": [
        {"type": 3, "name": "condition", "value": "20%"}, {"type": 3, "name": "account", "value": "st", "focused": True}]}])
    assert (await discord_fake.wait_callback(iid)).body["data"]["choices"] == [{"name": "studio", "value": "studio"}]

    embed = await _discord(discord_fake, "quota-alert", _condition("20%", "nope"), subcommand="add")
    assert embed["description"] == "There is no account `nope`. Accounts: studio, lab." and embed["color"] == RED
    embed = await _discord(discord_fake, "quota-alert", _condition("5h", "Lab"), subcommand="add")
    assert embed["description"] == f"Alert **#1** added: below `5h` for account **lab**, posted in <#{CHANNEL_ID}>."
    assert [(v.account, v.condition) for v in await alerts.list("discord")] == [("lab", "5h")]


async def test_discord_add_list_remove_with_manage_server(discord_fake, start_discord, alerting):  # noqa: F811
    pool, alerts, posters = await alerting()
    posters["discord"] = await start_discord(pool, alerts=alerts)
    embed = await _discord(discord_fake, "quota-alert", _condition("20%"), subcommand="add")
    assert embed["description"] == f"Alert **#1** added: below `20%` for all accounts, posted in <#{CHANNEL_ID}>."
    listed = (await _discord(discord_fake, "quota-alert", subcommand="list"))["description"]
    assert listed == f"**#1** below `20%` for all accounts in <#{CHANNEL_ID}> (from chat), armed"
    embed = await _discord(discord_fake, "quota-alert", [{"type": 4, "name": "id", "value": 1}], subcommand="remove")
    assert embed["description"] == "Removed alert #1."
    embed = await _discord(discord_fake, "quota-alert", [{"type": 4, "name": "id", "value": 1}], subcommand="remove")
    assert embed["description"] == "There is no alert #1; see `/quota-alert list`." and embed["color"] == RED
    assert await alerts.list("discord") == []
    listed = (await _discord(discord_fake, "quota-alert", subcommand="list"))["description"]
    assert listed == "No quota alerts yet. Add one with `/quota-alert add`."


async def test_discord_without_manage_server_is_refused_and_a_bad_condition_gets_an_example(discord_fake, start_discord, alerting):  # noqa: F811
    pool, alerts, posters = await alerting()
    posters["discord"] = await start_discord(pool, alerts=alerts)
    for subcommand, options in (("add", _condition("20%")), ("list", None),
                                ("remove", [{"type": 4, "name": "id", "value": 1}])):
        embed = await _discord(discord_fake, "quota-alert", options, subcommand=subcommand, permissions="0")
        assert embed["description"] == "Only members with the Manage Server permission can manage quota alerts."
    embed = await _discord(discord_fake, "quota-alert", _condition("every tuesday"), subcommand="add")
    assert embed["description"] == BAD_CONDITION.replace("'every tuesday'", "`every tuesday`") and embed["color"] == RED
    assert await alerts.list("discord") == []


async def test_discord_already_below_fires_with_the_next_reading_and_list_says_fired(discord_fake, start_discord, alerting, upstream):  # noqa: F811
    pool, alerts, posters = await alerting()
    posters["discord"] = await start_discord(pool, alerts=alerts)
    upstream.content = LOW
    await pool.get_report()  # a reading with 1 h of 15 h left
    embed = await _discord(discord_fake, "quota-alert", _condition("20%"), subcommand="add")
    assert embed["description"] == (f"Alert **#1** added: below `20%` for all accounts, posted in <#{CHANNEL_ID}>.\n"
                                    "The fast time is already below it: the alert fires with the next reading.")
    assert discord_fake.channel_posts == []
    await pool.get_report()  # the next reading fires it
    post = await discord_fake.changes.wait(lambda: next(iter(discord_fake.channel_posts), None), 10)
    assert post.path == f"/channels/{CHANNEL_ID}/messages"
    assert _embed(post)["title"] == "⚠️ Fast time below 20 %: 1 h of 15 h left"
    for _ in range(100):  # the post is recorded as fired right after the fake answered
        if (await alerts.list("discord"))[0].state == "fired":
            break
        await asyncio.sleep(0.02)
    text = (await _discord(discord_fake, "quota-alert", subcommand="list"))["description"]
    assert text.startswith(f"**#1** below `20%` for all accounts in <#{CHANNEL_ID}> (from chat), fired at 20")
    assert text.endswith(" UTC") and "failing" not in text


async def test_discord_without_alerts_says_so(discord_fake, start_discord, make_service):  # noqa: F811
    await start_discord(QuotaPool({"default": make_service()}, pooled=False))  # no alerts on this bot
    embed = await _discord(discord_fake, "quota-alert", subcommand="list")
    assert embed["description"] == "Alerts are not available on this bot." and embed["color"] == RED


# --- Slack --------------------------------------------------------------------------------------

async def _ask(bot, text: str, user: str = ADMIN_ID) -> dict:
    resp, answer, rid, took = await bot.command(text, command="/quota-alert", user_id=user)
    assert resp.status == 200 and answer == "" and took < 3  # acked first; the answer goes to the response_url
    body = (await bot.fake.wait_response(rid)).body
    assert body["response_type"] == "ephemeral"
    return body


@pytest.mark.parametrize("user, admins, allowed", [
    (ADMIN_ID, "", True),  # a workspace admin (users.info)
    (USER_ID, USER_ID, True),  # listed in SLACK_ADMIN_USER_IDS
    (USER_ID, "", False),  # everyone else
])
async def test_slack_permission(slack_http, alerting, user, admins, allowed):  # noqa: F811
    pool, alerts, posters = await alerting()
    bot = await slack_http(pool, alerts=alerts, admins=admins)
    posters["slack"] = bot.adapter
    for text in ("add 20%", "list", "remove 1"):
        answer = (await _ask(bot, text, user))["text"]
        if allowed:
            assert not answer.startswith("Only workspace admins")
        else:
            assert answer == ("Only workspace admins and owners, or the users in SLACK_ADMIN_USER_IDS, "
                              "can manage quota alerts.")
    assert await alerts.list("slack") == []  # added, then removed; or refused


async def test_slack_add_list_remove_bad_input_and_usage(slack_http, alerting):  # noqa: F811
    pool, alerts, posters = await alerting()
    bot = await slack_http(pool, alerts=alerts)
    posters["slack"] = bot.adapter
    assert (await _ask(bot, "add 90 m"))["text"] == "Alert *#1* added: below `90m` for all accounts, posted in <#C0FAKE01>."
    assert (await _ask(bot, "add run out"))["text"].startswith("Alert *#2* added: below `runout`")
    assert (await _ask(bot, "list"))["text"] == ("*#1* below `90m` for all accounts in <#C0FAKE01> (from chat), armed\n"
                                                 "*#2* below `runout` for all accounts in <#C0FAKE01> (from chat), armed")
    assert (await _ask(bot, "add every tuesday"))["text"] == f":x: {BAD_CONDITION}"
    assert (await _ask(bot, "add 20% studio"))["text"] == (
        ":x: There is no account 'studio'. Accounts: none: this bot reads one account.")
    assert (await _ask(bot, "add"))["text"].startswith("Say below what, e.g. `/quota-alert add 20%`")
    assert (await _ask(bot, "remove two"))["text"].startswith("Say which one, e.g. `/quota-alert remove 3`")
    assert (await _ask(bot, "remove 1"))["text"] == "Removed alert #1."
    assert (await _ask(bot, "remove #1"))["text"] == "There is no alert #1; see `/quota-alert list`."
    usage = await _ask(bot, "dance")
    assert usage["text"].startswith("I did not understand `dance`. *Usage:* `/quota-alert add &lt;condition&gt;`")
    assert (await _ask(bot, "help"))["text"].startswith("*Usage:*")
    assert [v.condition for v in await alerts.list("slack")] == ["runout"]


async def test_slack_account_is_the_last_word(slack_http, alerting):  # noqa: F811
    pool, alerts, posters = await alerting(pooled=True)
    bot = await slack_http(pool, alerts=alerts)
    posters["slack"] = bot.adapter
    assert (await _ask(bot, "add 5h studio"))["text"] == (
        "Alert *#1* added: below `5h` for account *studio*, posted in <#C0FAKE01>.")
    assert (await _ask(bot, "add 20% nope"))["text"] == ":x: There is no account 'nope'. Accounts: studio, lab."
    assert [(v.account, v.condition) for v in await alerts.list("slack")] == [("studio", "5h")]


async def test_slack_already_below_fires_with_the_next_reading_and_list_says_fired(slack_http, alerting, upstream):  # noqa: F811
    pool, alerts, posters = await alerting()
    bot = await slack_http(pool, alerts=alerts)
    posters["slack"] = bot.adapter
    upstream.content = LOW
    await pool.get_report()
    assert (await _ask(bot, "add 20%"))["text"] == (
        "Alert *#1* added: below `20%` for all accounts, posted in <#C0FAKE01>.\n"
        "The fast time is already below it: the alert fires with the next reading.")
    assert bot.fake.posts == []
    await pool.get_report()
    post = await bot.fake.wait(lambda: next(iter(bot.fake.posts), None))
    assert post.body["channel"] == "C0FAKE01" and post.body["text"] == "Fast time below 20 %: 1 h of 15 h left"
    for _ in range(100):
        if (await alerts.list("slack"))[0].state == "fired":
            break
        await asyncio.sleep(0.02)
    text = (await _ask(bot, "list"))["text"]
    assert text.startswith("*#1* below `20%` for all accounts in <#C0FAKE01> (from chat), fired at 20")
    assert text.endswith(" UTC")


async def test_slack_without_alerts_says_so(slack_http, make_service):  # noqa: F811
    bot = await slack_http(make_service())  # a bare service: no `alerts` attribute at all
    assert (await _ask(bot, "list"))["text"] == "Alerts are not available on this bot."


# --- the texts ----------------------------------------------------------------------------------

def _view(n: int, **changes) -> AlertView:
    fields = dict(id=n, platform="slack", channel="C0FAKE01", account="", condition="20%", source="chat",
                  state="armed", fired_at=None, failing=None)
    return AlertView(**{**fields, **changes})


def test_list_texts_show_source_state_and_failing_and_fit_their_limits():
    fired = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
    views = [_view(1, source="config", account="studio"),
             _view(2, state="fired", fired_at=fired, failing="Slack not_in_channel")]
    assert slack_render.alert_list_text(views) == (
        "*#1* below `20%` for account *studio* in <#C0FAKE01> (from QUOTA_ALERTS), armed\n"
        "*#2* below `20%` for all accounts in <#C0FAKE01> (from chat), fired at 2026-03-02 09:30 UTC"
        " :warning: failing: Slack not_in_channel")
    assert discord_render.alert_list_text(views).endswith("fired at 2026-03-02 09:30 UTC ⚠️ failing: Slack not_in_channel")
    many = [_view(n) for n in range(1, 200)]
    text = slack_render.alert_list_text(many)
    assert len(text) <= slack_render.SECTION_TEXT_MAX and text.endswith(" more.")
    assert all(line.startswith(("*#", "…and")) for line in text.split("\n"))
    text = discord_render.alert_list_text([_view(n, channel="1300000000000000001") for n in range(1, 200)])
    assert len(text) <= discord_render.DESCRIPTION_MAX and text.endswith(" more.")
