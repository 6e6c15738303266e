"""Faults from the provider (issue 20, items 1, 2, 5, 6): a Retry-After that asks for no pause, replies
too large to read, JSON nested too deep, a login in a provider's URL. Against the fakes of every
protocol, and against the real CLI process where memory is the question."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import time

import pytest
from aiohttp import web

from bot.errors import BadResponse, QuotaError, RateLimited, UpstreamUnavailable
from bot.providers import ProviderConfig, create_provider
from bot.providers.base import MAX_REPLY_BYTES, AskLimiter, PollPolicy
from bot.providers.mjproxy import MjproxyProvider
from bot.providers.nextleg import NextLegProvider
from bot.providers.useapi import UseapiProvider
from bot.simulator import Scripted, UpstreamSimulator
from tests.fakes.cli import clean_env, run_cli
from tests.fakes.providers import MjproxyFake, UseapiFake, useapi_error

TOKEN = "nl-fault-token-0123456789"
FAST = PollPolicy(initial=0.05, factor=1.5, cap=0.2, jitter=0.1)
PAST = "Wed, 01 Jan 2025 00:00:00 GMT"  # a date in the past, the same on every xdist worker (test ids)
DEADLINE = 3.0


def _upstream_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.upstream" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("retry_after", ["0", "-5", PAST])
@pytest.mark.parametrize("status", [429, 503])
async def test_a_poll_told_to_retry_at_once_waits_the_floor_nextleg(retry_after, status, caplog):
    caplog.set_level(logging.DEBUG)
    async with UpstreamSimulator(complete_after=0.1, require_token=TOKEN) as sim:
        sim.poll_script.extend(Scripted(status, {"success": False}, headers={"Retry-After": retry_after})
                               for _ in range(100_000))
        provider = NextLegProvider(base_url=sim.base_url, token=TOKEN, poll=FAST, limiter=AskLimiter(0.05),
                                   poll_timeout=DEADLINE)
        started = time.monotonic()
        with pytest.raises(QuotaError) as caught:
            await provider.fetch()
        await provider.close()
        requests = len(sim.asks) + len(sim.polls)
    assert isinstance(caught.value, (RateLimited, UpstreamUnavailable))
    assert time.monotonic() - started < DEADLINE + 1.5
    # the goal: at most one request per second of the deadline (today: thousands)
    assert 2 <= requests <= DEADLINE / 1.0 + 1, requests
    assert len(_upstream_warnings(caplog)) == 1  # said once per reading, not once per retry


async def test_a_poll_told_to_retry_at_once_waits_the_floor_useapi(caplog):
    caplog.set_level(logging.INFO)
    fake = UseapiFake(require_token=TOKEN, complete_after=0.2)
    await fake.start()
    try:
        fake.poll_script.extend(useapi_error(429, retry_after=0) for _ in range(100_000))
        provider = UseapiProvider(base_url=fake.base_url, token=TOKEN, poll=FAST, limiter=AskLimiter(0.02),
                                  poll_timeout=DEADLINE, stream=False)  # polls (a streamed reading has none)
        with pytest.raises(RateLimited):
            await provider.fetch()
        await provider.close()
        requests = len(fake.asks) + len(fake.polls)
    finally:
        await fake.stop()
    assert 2 <= requests <= DEADLINE / 1.0 + 1, requests
    assert len(_upstream_warnings(caplog)) == 1


async def test_a_read_told_to_retry_at_once_waits_the_floor_mjproxy(caplog):
    caplog.set_level(logging.INFO)
    fake = MjproxyFake(sync_delay=0.05)
    await fake.start()
    try:
        fake.poll_script.extend(Scripted(503, "busy", headers={"Retry-After": "0"}) for _ in range(100_000))
        provider = MjproxyProvider(base_url=fake.base_url, token=None, account_id=fake.account_id,
                                   poll=FAST, limiter=AskLimiter(0.01), poll_timeout=DEADLINE)
        with pytest.raises(QuotaError):
            await provider.fetch()
        await provider.close()
        requests = fake.request_count
    finally:
        await fake.stop()
    assert 2 <= requests <= DEADLINE / 1.0 + 1, requests


async def test_the_providers_pause_holds_the_next_reading_too():
    """Polls and asks share one pacing per account: a 429 on a poll holds the next reading's ask."""
    async with UpstreamSimulator(complete_after=0.1, require_token=TOKEN) as sim:
        sim.poll_script.append(Scripted(429, {"success": False}, headers={"Retry-After": "2"}))
        provider = NextLegProvider(base_url=sim.base_url, token=TOKEN, poll=FAST, limiter=AskLimiter(0.05),
                                   poll_timeout=1.0)  # the reading gives up before the pause ends
        with pytest.raises(RateLimited):
            await provider.fetch()
        refused_at = sim.polls[-1].at
        provider.poll_timeout = 10.0
        await provider.fetch()  # the next reading's ask waits out the pause the provider asked for
        await provider.close()
        assert sim.asks[-1].at - refused_at >= 1.9


# --- replies too large to read ------------------------------------------------------------------

BIG = 50 * 1024 * 1024


class HugeNextLeg:
    """TheNextLeg's routes, answering one of them with a 50 MB JSON body, with a Content-Length or
    chunked (no length: found only while reading)."""

    def __init__(self, where: str, chunked: bool) -> None:
        self.where, self.chunked = where, chunked
        self.requests = 0
        self.sent = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/v2/info", self._info)
        app.router.add_get("/v2/message/{id}", self._message)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def _info(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.where == "ask":
            return await self._huge(request)
        return web.json_response({"success": True, "messageId": "m-huge"})

    async def _message(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return await self._huge(request)

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        head = b'{"progress": 50, "response": {"pad": "'
        tail = b'"}}'
        pad = BIG - len(head) - len(tail)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if not self.chunked:
            resp.content_length = BIG
        await resp.prepare(request)
        chunk = b"x" * (1024 * 1024)
        try:
            await resp.write(head)
            for _ in range(pad // len(chunk)):
                await resp.write(chunk)
                self.sent += len(chunk)
            await resp.write(b"x" * (pad % len(chunk)) + tail)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError, RuntimeError):
            pass  # the bot stopped reading and closed the connection: as it should
        return resp


# the CLI, then its peak resident memory: VmHWM (ru_maxrss would keep the forking pytest's peak across exec)
PEAK = ("import sys\n"
        "from adapters.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "sys.stderr.write('PEAK_RSS_MB %.1f\\n' % (int(hwm) / 1024))\n"
        "sys.exit(code)\n")


async def _quota_with_peak(tmp_path, base_url: str) -> tuple[int, str, float]:
    env = clean_env(NEXTLEG_API_TOKEN=TOKEN, NEXTLEG_BASE_URL=base_url, QUOTA_READ_TIMEOUT="20",
                    DATABASE_URL=f"sqlite:///{tmp_path}/bot.sqlite3")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", PEAK, "quota", cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    peak = float(text.rsplit("PEAK_RSS_MB ", 1)[1].split()[0])
    return proc.returncode or 0, text.replace(f"PEAK_RSS_MB {peak:.1f}", ""), peak


@pytest.mark.parametrize("where", ["ask", "poll"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_50_mb_reply_ends_the_reading_in_bounded_memory(tmp_path, where, chunked):
    fake = HugeNextLeg(where, chunked)
    base = await fake.start()
    started = time.monotonic()
    try:
        code, text, peak = await _quota_with_peak(tmp_path, base)
    finally:
        await fake.stop()
    print(f"50 MB {where} reply ({'chunked' if chunked else 'with Content-Length'}): peak RSS {peak:.0f} MB, "
          f"{fake.requests} requests, {fake.sent / 2**20:.1f} MiB sent before the bot hung up")
    assert code != 0
    assert "The provider sent a reply too large to read" in text
    assert peak < 100, peak
    assert fake.requests <= 2  # the reading ends: the huge poll reply is not re-read as "pending"
    assert fake.sent <= 8 * MAX_REPLY_BYTES  # read up to the cap (plus what sat in socket buffers)
    assert time.monotonic() - started < 30
    assert "Traceback" not in text


# --- JSON nested too deep ---------------------------------------------------------------------

@pytest.mark.parametrize("depth", [900, 5000, 200_000])
@pytest.mark.parametrize("where", ["ask", "poll"])
async def test_deeply_nested_json_is_a_bad_response_not_a_crash(depth, where, caplog):
    body = ("[" * depth + "]" * depth).encode()
    if where == "poll":
        body = b'{"progress": 100, "response": {"content": ' + body + b"}}"
    async with UpstreamSimulator(complete_after=0.1, require_token=TOKEN) as sim:
        (sim.ask_script if where == "ask" else sim.poll_script).append(
            Scripted(200, body.decode()))
        provider = NextLegProvider(base_url=sim.base_url, token=TOKEN, poll=FAST, limiter=AskLimiter(0.05),
                                   poll_timeout=3.0)
        try:
            with pytest.raises(QuotaError) as caught:
                await provider.fetch()
        finally:
            await provider.close()
    assert isinstance(caught.value, BadResponse), caught.value
    assert not any(r.exc_info for r in caplog.records)


async def test_deeply_nested_json_at_the_webhook_is_400_not_500(caplog):
    import aiohttp

    from bot.webhook import WebhookHub

    hub = WebhookHub("https://bot.example")
    app = web.Application()
    hub.mount(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    secret_path = hub.url.removeprefix("https://bot.example")
    try:
        async with aiohttp.ClientSession() as http:
            # 100,000 levels are past any Python's JSON recursion limit (3.12+ parse 5,000, 3.11 does not:
            # then no ask in flight matches, 404); never a 500
            for depth, allowed in ((5000, (400, 404)), (100_000, (400,))):
                async with http.post(f"http://127.0.0.1:{port}{secret_path}", data="[" * depth + "]" * depth,
                                     headers={"Content-Type": "application/json"}) as resp:
                    assert resp.status in allowed, depth
                    assert "Traceback" not in await resp.text()
    finally:
        await runner.cleanup()
    assert not any(r.exc_info for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    assert all(secret_path.rsplit("/", 1)[1] not in r.getMessage() for r in caplog.records)


# --- a login in a provider's URL --------------------------------------------------------------

@pytest.mark.parametrize("setting, extra", [
    ("NEXTLEG_BASE_URL", {"NEXTLEG_API_TOKEN": TOKEN}),
    ("USEAPI_BASE_URL", {"USEAPI_API_TOKEN": "user:abc"}),
    ("LINKR_BASE_URL", {"LINKR_API_KEY": "lkr_abc"}),
])
@pytest.mark.parametrize("command", ["check", "quota"])
async def test_a_login_in_a_bearer_providers_url_stops_start_up_naming_the_setting(tmp_path, setting, extra, command):
    env = clean_env(**extra, **{setting: "http://someone:hunter2secret@127.0.0.1:9/api"})
    code, out, err = await run_cli(command, env=env, cwd=tmp_path)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].removeprefix("quota-bot: ").startswith(f"{setting}: must not carry a user name or password"), err
    assert "hunter2secret" not in out + err


async def test_a_login_in_the_mjproxy_url_is_basic_auth_and_never_shown(tmp_path):
    fake = MjproxyFake(sync_delay=0.05)
    base = await fake.start()
    try:
        login = base.replace("http://", "http://admin:hunter2secret@")
        env = clean_env(MJPROXY_BASE_URL=login, MJPROXY_ACCOUNT_ID=fake.account_id,
                        DATABASE_URL=f"sqlite:///{tmp_path}/bot.sqlite3", LOG_LEVEL="DEBUG")
        code, out, err = await run_cli("quota", env=env, cwd=tmp_path)
        assert code == 0, err
        sent = {r.headers.get("Authorization") for r in fake.requests}
        assert sent == {"Basic " + base64.b64encode(b"admin:hunter2secret").decode()}
        code, check_out, check_err = await run_cli("check", env=env, cwd=tmp_path)
        assert "hunter2secret" not in out + err + check_out + check_err
        assert base.removeprefix("http://") in check_out + check_err  # the host is shown, the login is not
    finally:
        await fake.stop()
    config = ProviderConfig("mjproxy", None, login, account_id="1")
    provider = create_provider(config)
    assert "hunter2secret" not in repr(provider) + config.describe() + repr(config)
    await provider.close()
