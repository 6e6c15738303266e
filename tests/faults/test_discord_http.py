"""Discord over HTTP under attack and on replicas: the endpoint verifies before anything else (a request
that is not Discord's is a 4xx, never a 5xx, a traceback or a provider ask), and three real `quota-bot
run` processes on one PostgreSQL database behind the fake's round robin answer every command with one
reading between them, also when one of them is SIGKILLed midway."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time


from bot.simulator import UpstreamSimulator
from tests.conftest import TEST_TOKEN
from tests.fakes.discord import FakeDiscord
from tests.fakes.process import BotProcess
from tests.secrets import ALL_TEST_SECRETS

TOKEN = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
TITLE = "Midjourney fast time: 12.06 h of 15 h left"


def _quota(fake: FakeDiscord) -> bytes:
    return json.dumps(fake.command_payload("quota")[2]).encode()


def _hostile(fake: FakeDiscord) -> dict[str, tuple[bytes, dict[str, str], int]]:
    """name → (body, headers, the status it must get)."""
    body = _quota(fake)
    good = fake.sign(body)
    other = FakeDiscord(TOKEN)  # another key pair: a well-formed signature by someone else
    not_json = b"{not json"
    big = b'{"type": 2, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    return {
        "no headers": (body, {"Content-Type": "application/json"}, 401),
        "no signature": (body, {k: v for k, v in good.items() if k != "X-Signature-Ed25519"}, 401),
        "bad signature": (body, other.sign(body), 401),
        "signature not hex": (body, dict(good, **{"X-Signature-Ed25519": "zz" * 64}), 401),
        "body changed after signing": (body.replace(b'"quota"', b'"quotb"'), good, 401),
        "old timestamp": (body, fake.sign(body, str(int(time.time()) - 301)), 401),
        "future timestamp": (body, fake.sign(body, str(int(time.time()) + 400)), 401),
        "timestamp not a number": (body, fake.sign(body, "soon"), 401),
        "not JSON, signed": (not_json, fake.sign(not_json), 400),
        "JSON but no interaction, signed": (b"[1, 2]", fake.sign(b"[1, 2]"), 400),
        "an unknown type, signed": (b'{"type": 99}', fake.sign(b'{"type": 99}'), 400),
        "nested too deep, signed": (b"[" * 100000 + b"]" * 100000, fake.sign(b"[" * 100000 + b"]" * 100000), 413),
        "2 MB body, signed": (big, fake.sign(big), 413),
        "2 MB body, unsigned": (big, {"X-Signature-Ed25519": "00" * 64, "X-Signature-Timestamp": str(int(time.time()))}, 413),
    }


async def test_every_request_that_is_not_discords_is_a_4xx_with_no_ask_and_no_traceback(
        discord_http_endpoint, discord_fake, upstream, caplog):
    for name, (body, headers, status) in _hostile(discord_fake).items():
        answered = await discord_fake.post_raw(body, headers)
        assert answered.status == status, (name, answered.status, answered.body)
    deep = b"[" * 20000 + b"]" * 20000  # under the cap: not readable as JSON (too deep) → 400
    answered = await discord_fake.post_raw(deep, discord_fake.sign(deep))
    assert answered.status == 400
    assert len(upstream.asks) == 0 and not discord_fake.edits
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # and the endpoint still answers Discord
    _, token, answered = await discord_fake.http_slash("quota")
    assert answered.status == 200 and answered.body["type"] in (4, 5)


async def test_a_replayed_body_with_a_fresh_timestamp_needs_a_fresh_signature(
        discord_http_endpoint, discord_fake, upstream):
    body = _quota(discord_fake)
    headers = discord_fake.sign(body, str(int(time.time()) - 10))
    headers["X-Signature-Timestamp"] = str(int(time.time()))  # the signature covers the timestamp
    assert (await discord_fake.post_raw(body, headers)).status == 401
    assert len(upstream.asks) == 0


# --- three replicas -----------------------------------------------------------------------------------

async def test_three_replicas_answer_60_commands_with_one_ask_and_none_lost_when_one_is_killed(tmp_path, pg_url,
                                                                                            discord_fake):
    upstream = UpstreamSimulator(complete_after=0.5, require_token=TEST_TOKEN)
    await upstream.start()
    env = dict(NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL=upstream.base_url, DATABASE_URL=pg_url,
               DISCORD_BOT_TOKEN=TOKEN, DISCORD_PUBLIC_KEY=discord_fake.public_key,
               DISCORD_API_BASE_URL=discord_fake.api_url, QUOTA_CACHE_SECONDS="300", QUOTA_SAMPLE_EVERY="off")
    replicas = [BotProcess(tmp_path, **env) for _ in range(3)]
    try:
        await asyncio.gather(*(r.start(40) for r in replicas))
        discord_fake.endpoints = [f"{r.url}/discord/interactions" for r in replicas]

        async def command() -> str:
            _, token, answered = await discord_fake.http_slash("quota")
            assert answered.status == 200, answered.body
            if answered.body["type"] == 4:
                return answered.body["data"]["embeds"][0]["title"]
            edit = await discord_fake.wait_edit(token, 30)
            return edit.body["embeds"][0]["title"]

        first = await asyncio.gather(*(command() for _ in range(30)))  # round robin: 10 each, at once
        replicas[1].proc.send_signal(signal.SIGKILL)  # midway: a replica dies
        await replicas[1].proc.wait()
        second = await asyncio.gather(*(command() for _ in range(30)))  # the fake skips the dead one
        assert first + second == [TITLE] * 60
        assert len(upstream.asks) == 1  # one reading shared through the database
        assert discord_fake.identifies == 0 and not discord_fake.sockets  # no gateway, no lease
        assert len(discord_fake.command_puts) == 3  # each replica registers at start (REST)
        logs = "\n".join(r.log() for r in replicas)
        assert "Traceback" not in logs and "held the gateway" not in logs
        assert not [name for name, value in ALL_TEST_SECRETS.items() if value in logs]
    finally:
        for replica in replicas:
            await replica.stop()
        await upstream.stop()
