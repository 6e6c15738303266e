"""Discord over HTTP (DISCORD_PUBLIC_KEY): the fake Discord holds its own Ed25519 key pair (made per
test) and POSTs each interaction signed to the bot's `/discord/interactions`, as Discord does once an
Interactions Endpoint URL is set. `quota-bot run` in-process (the composition root, the real store,
scheduler and alerts) answers every command of the command layer as the HTTP response: a type 4 message
when the answer is ready at once, else a deferral and the edit of @original."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from adapters.app import serve
from adapters.discord.bot import DiscordAdapter
from adapters.server import HttpServer
from bot.accounts import QuotaPool
from bot.settings import load_settings
from tests.conftest import TEST_TOKEN
from tests.fakes.discord import APP_ID, CHANNEL_ID, USER_ID, FakeDiscord, start_http_mode
from tests.secrets import ALL_TEST_SECRETS

TOKEN = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
TITLE = "Midjourney fast time: 12.06 h of 15 h left"
NAMES = ("studio", "lab")


@pytest.fixture
async def run_bot(discord_fake, upstream, tmp_path):
    """`quota-bot run` in HTTP mode (in-process), its endpoint given to the fake; stopped after the test."""
    running: list[tuple[asyncio.Event, asyncio.Task]] = []

    async def start(**extra: Any) -> dict[str, Any]:
        settings = load_settings(
            None, host="127.0.0.1", port=0, database_url=f"sqlite:///{tmp_path}/q.sqlite3", nextleg_api_token=TEST_TOKEN,
            nextleg_base_url=upstream.base_url, discord_bot_token=TOKEN, discord_public_key=discord_fake.public_key,
            discord_api_base_url=discord_fake.api_url, discord_gateway_url=discord_fake.gateway_url,
            quota_sample_every="off", **extra)
        stop = asyncio.Event()
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(serve(settings, stop, started=started))
        running.append((stop, task))
        done, _ = await asyncio.wait({task, started}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        info = started.result()
        discord_fake.endpoints = [f"http://127.0.0.1:{info['port']}/discord/interactions"]
        return info

    yield start
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 15)


async def answer(fake: FakeDiscord, token: str, answered) -> tuple[int, dict[str, Any]]:
    """(the response type, the message): the response's own (type 4) or, after a deferral, the edit's."""
    assert answered.status == 200, answered.body
    kind = answered.body["type"]
    assert kind in (4, 5), answered.body
    if kind == 4:
        assert token not in fake.edits
        return kind, answered.body["data"]
    edit = await fake.wait_edit(token, 20)
    assert edit.method == "PATCH" and edit.path == f"/webhooks/{APP_ID}/{token}/messages/@original"
    return kind, edit.body


def embed_of(message: dict[str, Any]) -> dict[str, Any]:
    embeds = message.get("embeds") or []
    assert len(embeds) == 1, message
    return embeds[0]


async def test_a_ping_is_answered_and_no_gateway_is_opened(run_bot, discord_fake):
    info = await run_bot()
    ping = await discord_fake.http_ping()
    assert (ping.status, ping.body) == (200, {"type": 1})
    # commands registered over REST at start; no gateway connection, no lease
    assert len(discord_fake.command_puts) == 1
    assert {c["name"] for c in discord_fake.command_puts[0].body} == {"quota", "quota-history", "quota-schedule", "quota-alert",
                                                                      "quota-mode"}
    assert discord_fake.identifies == 0 and not discord_fake.sockets
    health = info["runtime"].health()
    assert "discord_gateway" not in health and health["adapters"] == ["discord"]
    async with aiohttp.ClientSession() as http:  # the probe `quota-bot check` uses: no signature needed
        async with http.get(discord_fake.endpoints[0]) as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True


@pytest.mark.parametrize("public", [False, True])
async def test_quota_defers_then_edits_and_a_cached_reading_is_the_response_itself(run_bot, discord_fake, upstream,
                                                                                  public):
    upstream.complete_after = 1.0  # a slow reading: deferred
    await run_bot()
    options = [{"type": 5, "name": "public", "value": True}] if public else None
    iid, token, first = await discord_fake.http_slash("quota", options)
    assert first.status == 200 and first.body["type"] == 5 and first.seconds < 3
    assert (first.body["data"]["flags"] & 64) == (0 if public else 64)
    kind, message = await answer(discord_fake, token, first)
    assert kind == 5 and embed_of(message)["title"] == TITLE
    assert message["allowed_mentions"] == {"parse": []}

    _, token2, second = await discord_fake.http_slash("quota", options)  # the cached reading: answered at once
    kind, message = await answer(discord_fake, token2, second)
    assert kind == 4 and embed_of(message)["title"] == TITLE
    assert (message.get("flags", 0) & 64) == (0 if public else 64)
    assert message["allowed_mentions"] == {"parse": []}
    assert len(upstream.asks) == 1


async def test_history_edits_original_with_the_chart_as_a_multipart_attachment(run_bot, discord_fake, upstream):
    upstream.complete_after = 0.05
    await run_bot(quota_cache_seconds="0")
    for _ in range(2):  # two readings in the store
        _, token, answered = await discord_fake.http_slash("quota")
        await answer(discord_fake, token, answered)
        await asyncio.sleep(1.1)
    _, token, answered = await discord_fake.http_slash("quota-history", [{"type": 4, "name": "days", "value": 7}])
    kind, message = await answer(discord_fake, token, answered)
    assert kind == 5  # the chart is drawn in another process: deferred
    embed = embed_of(message)
    assert embed["title"] == "Midjourney fast time, last 7 days"
    assert embed["image"]["url"] == "attachment://quota-history.png"
    files = message["_files"]
    assert list(files) == ["quota-history.png"] and files["quota-history.png"].startswith(b"\x89PNG")


async def test_schedules_and_alerts_are_managed_with_manage_server_only(run_bot, discord_fake):
    await run_bot()

    async def run(name: str, sub: str, options=None, permissions: str = str(1 << 5)) -> str:
        _, token, answered = await discord_fake.http_slash(name, options, subcommand=sub, permissions=permissions)
        _, message = await answer(discord_fake, token, answered)
        if answered.body["type"] == 5:
            assert answered.body["data"]["flags"] == 64  # manage commands answer privately
        else:
            assert message["flags"] & 64
        return embed_of(message).get("description", "")

    refused = await run("quota-schedule", "list", permissions="0")
    assert "Only members with the Manage Server permission can manage quota schedules." in refused
    added = await run("quota-schedule", "add", [{"type": 3, "name": "when", "value": "every 6h"}])
    assert "#1" in added and f"<#{CHANNEL_ID}>" in added
    listed = await run("quota-schedule", "list")
    assert "#1" in listed and "every 6h" in listed
    assert "#1" in await run("quota-schedule", "remove", [{"type": 4, "name": "id", "value": 1}])
    assert "#1" not in await run("quota-schedule", "list")

    other = "1300000000000000009"
    added = await run("quota-alert", "add", [{"type": 3, "name": "condition", "value": "20%"},
                                             {"type": 7, "name": "channel", "value": other}])
    assert "20%" in added and f"<#{other}>" in added
    assert "20%" in await run("quota-alert", "list")
    assert "#1" in await run("quota-alert", "remove", [{"type": 4, "name": "id", "value": 1}])
    assert "Only members" in await run("quota-alert", "add", [{"type": 3, "name": "condition", "value": "5h"}],
                                       permissions="0")


async def test_a_command_this_bot_does_not_serve_and_options_that_do_not_fit_get_one_line(run_bot, discord_fake,
                                                                                          upstream):
    await run_bot()
    _, token, answered = await discord_fake.http_slash("quota-mystery")
    kind, message = await answer(discord_fake, token, answered)
    assert kind == 4 and "not served by this bot" in embed_of(message)["description"]
    _, token, answered = await discord_fake.http_slash("quota-history", [{"type": 4, "name": "days", "value": 10**6}])
    kind, message = await answer(discord_fake, token, answered)
    assert kind == 4 and "Usage:" in embed_of(message)["description"]
    assert len(upstream.asks) == 0


# --- one adapter on its own server (accounts, autocomplete) ---------------------------------------------

@pytest.fixture
async def endpoint(discord_fake, make_service):
    """The Discord adapter in HTTP mode over a pool of accounts, on the bot's HTTP server."""
    started: list[tuple[DiscordAdapter, HttpServer]] = []

    async def start(names: tuple[str, ...] = NAMES) -> DiscordAdapter:
        service = QuotaPool({n: make_service() for n in names}) if names else make_service()
        adapter, http, url = await start_http_mode(service, api_url=discord_fake.api_url,
                                                   public_key=discord_fake.public_key, token=TOKEN)
        started.append((adapter, http))
        discord_fake.endpoints = [url]
        return adapter

    yield start
    for adapter, http in started:
        await adapter.stop()
        await http.stop()


async def test_autocomplete_offers_the_matching_account_names(endpoint, discord_fake, upstream):
    await endpoint()
    answered = await discord_fake.http_autocomplete("quota", [{"type": 3, "name": "account", "value": "ST", "focused": True}])
    assert answered.status == 200 and answered.body == {"type": 8, "data": {"choices": [{"name": "studio", "value": "studio"}]}}
    answered = await discord_fake.http_autocomplete("quota-history", [
        {"type": 4, "name": "days", "value": 3}, {"type": 3, "name": "account", "value": "", "focused": True}])
    assert [c["value"] for c in answered.body["data"]["choices"]] == list(NAMES)
    assert len(upstream.asks) == 0


async def test_an_account_option_reads_that_account_only(endpoint, discord_fake, upstream):
    await endpoint()
    started = time.monotonic()
    _, token, answered = await discord_fake.http_slash("quota", [{"type": 3, "name": "account", "value": " Studio "}])
    _, message = await answer(discord_fake, token, answered)
    assert embed_of(message)["title"] == TITLE and time.monotonic() - started < 10
    assert len(upstream.asks) == 1  # the pooled reading would ask both accounts


async def test_check_says_http_mode_and_whether_the_public_url_reaches_the_endpoint(run_bot, discord_fake, upstream,
                                                                                   tmp_path, capsys):
    from adapters.cli.main import _check

    info = await run_bot()
    base = dict(nextleg_api_token=TEST_TOKEN, nextleg_base_url=upstream.base_url, discord_bot_token=TOKEN,
                discord_public_key=discord_fake.public_key, discord_api_base_url=discord_fake.api_url,
                database_url=f"sqlite:///{tmp_path}/check.sqlite3")
    await _check(load_settings(None, quota_public_url=f"http://127.0.0.1:{info['port']}", **base))
    out = capsys.readouterr().out
    assert "[ok  ] Discord: HTTP mode: DISCORD_PUBLIC_KEY is a well-formed Public Key" in out
    assert f"[ok  ] Discord: the Interactions Endpoint URL http://127.0.0.1:{info['port']}/discord/interactions " \
           "reaches the bot" in out

    from tests.ports import refusing_port

    with refusing_port() as port:
        await _check(load_settings(None, quota_public_url=f"http://127.0.0.1:{port}", **base))
    assert "/discord/interactions is not reachable from here" in capsys.readouterr().out
    await _check(load_settings(None, **base))
    assert "[warn] QUOTA_PUBLIC_URL is not set: cannot tell whether Discord reaches /discord/interactions" in \
        capsys.readouterr().out


async def test_a_mode_switch_over_http_edits_the_answer_and_posts_one_public_line(run_bot, discord_fake):
    """`/quota-mode relax` in HTTP mode: deferred (a switch is a Midjourney job), the private answer as the
    edit of @original, then one public line in the channel that pings nobody (as in the gateway mode)."""
    from tests.fakes.providers import UseapiFake

    useapi_token = ALL_TEST_SECRETS["USEAPI_API_TOKEN"]
    fake = UseapiFake(require_token=useapi_token, complete_after=0.1, sse_interval=0.01)
    await fake.start()
    try:
        await run_bot(quota_provider="useapi", useapi_api_token=useapi_token, useapi_base_url=fake.base_url)
        _, token, first = await discord_fake.http_slash("quota-mode", [{"type": 3, "name": "mode", "value": "relax"}])
        assert first.status == 200 and first.body["type"] == 5 and first.body["data"]["flags"] & 64
        edit = await discord_fake.wait_edit(token, 20)
        assert embed_of(edit.body)["description"].startswith("Switched the account to Relax. Midjourney: “Done!")
        public = await discord_fake.changes.wait(
            lambda: next((c for c in discord_fake.edits[token] if c.method == "POST"), None), 10)
        assert public.path == f"/webhooks/{APP_ID}/{token}"
        assert public.body["content"] == f"<@{USER_ID}> switched the Midjourney account to Relax."
        assert public.body["allowed_mentions"] == {"parse": []} and not (public.body.get("flags") or 0) & 64
    finally:
        await fake.stop()
