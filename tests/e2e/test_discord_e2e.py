"""The real discord.py client of the bot against a fake Discord (REST + gateway) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from adapters.discord.bot import DiscordAdapter
from bot.commands import Commands
from bot.errors import PostError, StartupError
from bot.settings import load_settings
from bot.simulator import Scripted
from tests.fakes.discord import APP_ID, GUILD_ID
from tests.ports import refusing_port
from tests.secrets import ALL_TEST_SECRETS

TOKEN = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
RED = 0xE74C3C


@pytest.fixture
async def start_discord(discord_fake, make_service):
    """Start the bot's real Discord adapter against the fake; stopped after the test."""
    adapters: list[DiscordAdapter] = []

    async def start(service=None, guilds: str = "", schedules=None, alerts=None, history=None) -> DiscordAdapter:
        settings = load_settings(None, discord_bot_token=TOKEN, discord_api_base_url=discord_fake.api_url,
                                 discord_gateway_url=discord_fake.gateway_url, discord_guild_ids=guilds)
        service = service or make_service()
        commands = Commands(service, schedules=schedules, alerts=alerts, history=history,
                            history_days=settings.quota_history_days)
        adapter = DiscordAdapter(settings, service, schedules, commands=commands)
        adapters.append(adapter)
        await adapter.start()
        await asyncio.wait_for(discord_fake.ready.wait(), 10)
        return adapter

    yield start
    for adapter in adapters:
        await adapter.stop()


def _embed(call) -> dict:
    embeds = call.body.get("embeds") or []
    assert len(embeds) == 1, call.body
    return embeds[0]


async def test_startup_reaches_ready_and_registers_exactly_our_commands(discord_fake, start_discord, caplog):
    await start_discord()
    assert len(discord_fake.command_puts) == 1
    put = discord_fake.command_puts[0]
    assert put.path == f"/applications/{APP_ID}/commands"
    by_name = {c["name"]: c for c in put.body}
    assert set(by_name) == {"quota", "quota-history", "quota-schedule", "quota-alert", "quota-mode"}
    assert by_name["quota"]["options"] == [{"type": 5, "name": "public", "required": False,
                                            "description": by_name["quota"]["options"][0]["description"]}]
    schedule = by_name["quota-schedule"]
    assert schedule["default_member_permissions"] == str(1 << 5) or schedule["default_member_permissions"] == 32
    assert {o["name"] for o in schedule["options"]} == {"add", "list", "remove"}
    add = next(o for o in schedule["options"] if o["name"] == "add")
    channel = next(o for o in add["options"] if o["name"] == "channel")
    assert channel["type"] == 7 and not channel["required"]
    assert 0 in channel["channel_types"] and 4 not in channel["channel_types"] and 15 not in channel["channel_types"]
    assert discord_fake.identifies == 1
    assert "scope=bot+applications.commands" in caplog.text and "permissions=" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a clean start logs no warning"


async def test_guild_ids_register_in_each_guild(discord_fake, start_discord):
    await start_discord(guilds=f"{GUILD_ID},1200000000000000002")
    assert [p.path for p in discord_fake.command_puts] == [
        f"/applications/{APP_ID}/guilds/{GUILD_ID}/commands", f"/applications/{APP_ID}/guilds/1200000000000000002/commands"]
    assert {c["name"] for c in discord_fake.command_puts[0].body} == {"quota", "quota-history", "quota-schedule", "quota-alert",
                                                                      "quota-mode"}


@pytest.mark.parametrize("public", [False, True])
async def test_quota_defers_at_once_then_edits_with_the_numbers(discord_fake, start_discord, upstream, public):
    upstream.complete_after = 1.5  # a slow upstream
    await start_discord()
    options = [{"type": 5, "name": "public", "value": True}] if public else None
    iid, token = await discord_fake.slash("quota", options)
    callback = await discord_fake.wait_callback(iid, timeout=3)
    assert callback.at - discord_fake.dispatched_at[iid] < 3
    assert callback.body["type"] == 5
    flags = (callback.body.get("data") or {}).get("flags", 0)
    assert (flags & 64) == (0 if public else 64)
    assert iid not in [c for c in discord_fake.edits]  # nothing edited before the reading
    edit = await discord_fake.wait_edit(token)
    assert edit.path == f"/webhooks/{APP_ID}/{token}/messages/@original"
    embed = _embed(edit)
    assert embed["title"] == "Midjourney fast time: 12.06 h of 15 h left"
    assert "80.40%" in embed["description"] and embed["color"] == 0x2ECC71
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Job mode"] == "Fast" and fields["Plan"] == "Standard (Active monthly)"
    assert fields["Renews"].startswith("<t:") and ":R>" in fields["Renews"]
    assert fields["Visibility Mode"] == "Public" and "timestamp" in embed


@pytest.mark.parametrize("script, sentence", [
    ({"ask": Scripted(401)}, "The upstream rejected the API token"),
    ({"content": "NO_FAST_HOURS"}, "This Midjourney account has no fast time left."),
    ({"ask": Scripted(200, "<html>")}, "could not read"),
    ({"ask": Scripted(404, "gone")}, "The Midjourney API is unavailable right now; try again in a few minutes."),
    ({"never": True}, "Timed out: the Midjourney API gave no answer within 1 s."),
])
async def test_each_core_error_gives_a_red_embed(discord_fake, start_discord, upstream, make_service, script, sentence):
    if "ask" in script:
        upstream.ask_script.append(script["ask"])
    if "content" in script:
        upstream.content = script["content"]
    if "never" in script:
        upstream.complete_after = float("inf")
    await start_discord(make_service(poll_timeout=1.0))
    iid, token = await discord_fake.slash("quota")
    embed = _embed(await discord_fake.wait_edit(token))
    assert embed["color"] == RED and sentence in embed["description"]
    assert "Traceback" not in str(embed)


async def test_unexpected_exception_still_answers(discord_fake, start_discord, caplog):
    from bot.service import QuotaService

    class BrokenProvider:  # a provider with a bug: the adapter must still answer
        simulated = False

        async def fetch(self):
            raise RuntimeError("provider bug")

        async def close(self):
            pass

    await start_discord(QuotaService(BrokenProvider()))
    iid, token = await discord_fake.slash("quota")
    embed = _embed(await discord_fake.wait_edit(token))
    assert embed["description"] == "Something went wrong; it has been logged." and embed["color"] == RED
    assert "provider bug" in caplog.text  # the traceback goes to the log only


async def test_two_interactions_at_once_share_one_upstream_ask(discord_fake, start_discord, upstream):
    upstream.complete_after = 0.5
    await start_discord()
    (i1, t1), (i2, t2) = await asyncio.gather(discord_fake.slash("quota"), discord_fake.slash("quota"))
    e1, e2 = await asyncio.gather(discord_fake.wait_edit(t1), discord_fake.wait_edit(t2))
    assert _embed(e1)["title"] == _embed(e2)["title"] == "Midjourney fast time: 12.06 h of 15 h left"
    assert len(upstream.asks) == 1


async def test_gateway_drop_resumes_and_still_answers(discord_fake, start_discord):
    await start_discord()
    await discord_fake.drop(4000)
    await asyncio.wait_for(discord_fake.resumed.wait(), 15)
    assert discord_fake.resumes == 1 and discord_fake.identifies == 1
    iid, token = await discord_fake.slash("quota")
    assert _embed(await discord_fake.wait_edit(token))["title"].endswith("12.06 h of 15 h left")
    assert len(discord_fake.command_puts) == 1, "a reconnect must not register the commands again"


async def test_refused_resume_identifies_again_without_a_second_registration(discord_fake, start_discord):
    await start_discord()
    discord_fake.refuse_resume = True
    discord_fake.ready.clear()
    await discord_fake.drop(4000)
    await asyncio.wait_for(discord_fake.ready.wait(), 15)  # INVALID_SESSION → a fresh IDENTIFY → READY
    assert discord_fake.resumes == 1 and discord_fake.identifies == 2
    iid, token = await discord_fake.slash("quota")
    assert _embed(await discord_fake.wait_edit(token))["title"].endswith("12.06 h of 15 h left")
    assert len(discord_fake.command_puts) == 1, "a new session must not register the commands again"


async def test_scheduled_post_sends_the_embed_to_the_channel(discord_fake, start_discord, service):
    adapter = await start_discord(service)
    await adapter.post("1300000000000000099", await service.get_report())
    post = discord_fake.channel_posts[-1]
    assert post.path == "/channels/1300000000000000099/messages"
    assert _embed(post)["title"].endswith("12.06 h of 15 h left")


@pytest.mark.parametrize("status", [403, 404])
async def test_scheduled_post_to_a_lost_channel_is_gone(discord_fake, start_discord, service, status):
    adapter = await start_discord(service)
    discord_fake.post_script.append((status, {"message": "Missing Access", "code": 50001}, {}))
    with pytest.raises(PostError) as caught:
        await adapter.post("1300000000000000099", await service.get_report())
    assert caught.value.kind == "gone" and str(status) in caught.value.reason


async def test_scheduled_post_429_is_retried_by_the_library(discord_fake, start_discord, service):
    adapter = await start_discord(service)
    discord_fake.post_script.append((429, {"message": "rate limited", "retry_after": 0.3, "global": False}, {"Via": "1.1 google"}))
    started = time.monotonic()
    await adapter.post("1300000000000000099", await service.get_report())
    assert len(discord_fake.channel_posts) == 2 and time.monotonic() - started >= 0.25


async def test_rejected_bot_token_is_one_clear_line(discord_fake, make_service):
    settings = load_settings(None, discord_bot_token="wrong-discord-token-1234", discord_api_base_url=discord_fake.api_url,
                             discord_gateway_url=discord_fake.gateway_url)
    adapter = DiscordAdapter(settings, make_service())
    with pytest.raises(StartupError) as caught:
        await adapter.start()
    assert str(caught.value).startswith("DISCORD_BOT_TOKEN: Discord rejected the token")
    assert "wrong-discord-token-1234" not in str(caught.value)


async def test_a_failed_command_registration_is_logged_and_start_up_goes_on(discord_fake, start_discord, caplog):
    discord_fake.put_script.append((403, {"message": "Missing Access", "code": 50001}, {}))
    await start_discord(guilds=f"{GUILD_ID},1200000000000000002")
    assert len(discord_fake.command_puts) == 2  # the second guild still gets its commands
    assert f"could not be registered in guild {GUILD_ID}: 403" in caplog.text
    assert "applications.commands" in caplog.text
    iid, token = await discord_fake.slash("quota")
    assert _embed(await discord_fake.wait_edit(token))["title"].endswith("12.06 h of 15 h left")


async def test_schedule_commands_without_a_scheduler_say_so(discord_fake, start_discord):
    await start_discord(schedules=None)
    iid, token = await discord_fake.slash("quota-schedule", subcommand="list")
    assert (await discord_fake.wait_callback(iid)).body["data"]["flags"] == 64  # answered only to the caller
    embed = _embed(await discord_fake.wait_edit(token))
    assert embed["description"] == "Schedules are not available on this bot." and embed["color"] == RED


async def test_scheduled_post_long_rate_limit_goes_back_to_the_scheduler(discord_fake, start_discord, service):
    adapter = await start_discord(service)
    discord_fake.post_script.append((429, {"message": "rate limited", "retry_after": 120.0, "global": False},
                                     {"Via": "1.1 google", "Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(PostError) as caught:
        await adapter.post("1300000000000000099", await service.get_report())
    assert caught.value.kind == "rate_limited" and caught.value.retry_after == pytest.approx(120, abs=1)
    assert time.monotonic() - started < 5 and len(discord_fake.channel_posts) == 1  # not slept through


async def test_scheduled_post_server_error_is_transient(discord_fake, start_discord, service):
    adapter = await start_discord(service)
    discord_fake.post_script.append((503, {"message": "upstream connect error", "code": 0}, {}))
    with pytest.raises(PostError) as caught:
        await adapter.post("1300000000000000099", await service.get_report())
    assert caught.value.kind == "transient" and "503" in caught.value.reason


async def test_scheduled_error_outcome_posts_its_sentence(discord_fake, start_discord, service):
    from bot.errors import AccountProblem

    adapter = await start_discord(service)
    await adapter.post("1300000000000000099", AccountProblem("NO_FAST_HOURS"))
    embed = _embed(discord_fake.channel_posts[-1])
    assert embed["description"] == "This Midjourney account has no fast time left." and embed["color"] == RED


async def test_unreachable_discord_api_is_one_clear_line(make_service):
    with refusing_port() as port:
        settings = load_settings(None, discord_bot_token=TOKEN, discord_api_base_url=f"http://127.0.0.1:{port}/api/v10")
        adapter = DiscordAdapter(settings, make_service())
        with pytest.raises(StartupError) as caught:
            await adapter.start()
    assert str(caught.value).startswith("DISCORD_API_BASE_URL: cannot reach the Discord API")
    assert TOKEN not in str(caught.value)
