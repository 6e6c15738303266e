"""`quota-bot run` wired together in-process: fake upstream, fake Slack (Socket Mode) and fake Discord,
the real adapters, store and scheduler, real time."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from adapters.app import StartupError, serve
from bot.settings import load_settings
from tests.conftest import TEST_TOKEN
from tests.fakes.discord import FakeDiscord
from tests.secrets import ALL_TEST_SECRETS


async def _run(settings):
    stop = asyncio.Event()
    started: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(serve(settings, stop, started=started))
    done, _ = await asyncio.wait({task, started}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    return stop, task, started.result()


def _settings(tmp_path, upstream, slack_fake, **extra):
    return load_settings(
        None, nextleg_api_token=TEST_TOKEN, nextleg_base_url=upstream.base_url, host="127.0.0.1", port=0,
        database_url=f"sqlite:///{tmp_path}/q.sqlite3", slack_bot_token=ALL_TEST_SECRETS["SLACK_BOT_TOKEN"],
        slack_app_token=ALL_TEST_SECRETS["SLACK_APP_TOKEN"], slack_api_url=slack_fake.api_url,
        quota_schedule_min_every="1s", **extra)  # `every 3s` is allowed here


async def test_every_3s_posts_every_3s_and_a_restart_keeps_the_rhythm(tmp_path, upstream, slack_fake):
    upstream.complete_after = 0.1
    settings = _settings(tmp_path, upstream, slack_fake, quota_schedules="slack:C0123=every 3s", quota_cache_seconds=0)
    stop, task, info = await _run(settings)
    await slack_fake.wait(lambda: True if len(slack_fake.posts) >= 2 else None, timeout=10)
    stop.set()
    await asyncio.wait_for(task, 10)
    first = [p.at for p in slack_fake.posts]
    assert all(p.body["channel"] == "C0123" and " h of 15 h left" in p.body["text"] for p in slack_fake.posts)
    assert 2.4 < first[1] - first[0] < 4.0

    await asyncio.sleep(1.0)  # down for a moment, then the same settings again
    stop, task, _ = await _run(settings)
    await slack_fake.wait(lambda: True if len(slack_fake.posts) >= len(first) + 2 else None, timeout=10)
    stop.set()
    await asyncio.wait_for(task, 10)
    times = [p.at for p in slack_fake.posts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) > 1.0, f"a burst after the restart: {gaps}"  # never two posts for one run
    # the rhythm is anchored in the store: every post lands on the same 3 s grid
    phases = [(t - times[0]) % 3 for t in times]
    assert all(min(p, 3 - p) < 0.9 for p in phases), phases


async def test_healthz_and_slack_and_discord_together(tmp_path, upstream, slack_fake):
    discord_token = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
    discord = await FakeDiscord(discord_token).start()
    try:
        settings = _settings(tmp_path, upstream, slack_fake, discord_bot_token=discord_token,
                             discord_api_base_url=discord.api_url, discord_gateway_url=discord.gateway_url)
        stop, task, info = await _run(settings)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{info['port']}/healthz") as resp:
                health = await resp.json()
        assert health["status"] == "ok" and health["upstream"] == "nextleg"
        assert sorted(health["adapters"]) == ["discord", "slack"]
        await asyncio.wait_for(discord.ready.wait(), 10)
        _, token = await discord.slash("quota")
        assert "12.06 h of 15 h left" in str((await discord.wait_edit(token)).body)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 10
    finally:
        await discord.stop()


async def test_schedule_for_an_unconfigured_platform_stops_startup(tmp_path, upstream, slack_fake):
    settings = _settings(tmp_path, upstream, slack_fake, quota_schedules="discord:123=every 1h")
    with pytest.raises(StartupError, match=r"^QUOTA_SCHEDULES: item 'discord:123' needs DISCORD_BOT_TOKEN to be set$"):
        await _run(settings)


async def test_bad_schedule_item_stops_startup(tmp_path, upstream, slack_fake):
    settings = _settings(tmp_path, upstream, slack_fake, quota_schedules="slack:C01=every 0h")
    with pytest.raises(StartupError, match=r"^QUOTA_SCHEDULES: item 'slack:C01=every 0h'"):
        await _run(settings)


async def test_corrupt_database_stops_startup_and_is_left_alone(tmp_path, upstream, slack_fake):
    (tmp_path / "q.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StartupError, match=r"^DATABASE_URL: .*q.sqlite3 is not a SQLite database"):
        await _run(_settings(tmp_path, upstream, slack_fake))
    assert (tmp_path / "q.sqlite3").read_bytes() == b"not a database" * 100


async def test_slack_http_mode_is_served_beside_healthz(tmp_path, upstream, slack_fake):
    from tests.fakes.slack import form, sign

    secret = ALL_TEST_SECRETS["SLACK_SIGNING_SECRET"]
    settings = load_settings(
        None, nextleg_api_token=TEST_TOKEN, nextleg_base_url=upstream.base_url, host="127.0.0.1", port=0,
        database_url=f"sqlite:///{tmp_path}/q.sqlite3", slack_bot_token=ALL_TEST_SECRETS["SLACK_BOT_TOKEN"],
        slack_signing_secret=secret, slack_api_url=slack_fake.api_url)
    stop, task, info = await _run(settings)
    try:
        payload, rid = slack_fake.command_payload("/quota", "public")
        body = form(payload)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{info['port']}/slack/events", data=body,
                                 headers=sign(secret, body)) as resp:
                assert resp.status == 200
            async with http.post(f"http://127.0.0.1:{info['port']}/slack/events", data=body,
                                 headers=sign("wrong-secret", body)) as resp:
                assert resp.status == 401
        answer = (await slack_fake.wait_response(rid)).body
        assert answer["response_type"] == "in_channel" and "12.06 h of 15 h left" in answer["text"]
        assert len(upstream.asks) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
