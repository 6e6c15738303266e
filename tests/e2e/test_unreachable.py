"""A provider that cannot be reached: the sentence names the host and the cause (refused, DNS, TLS,
a hang-up), not aiohttp's class name alone (issue 21, item 9)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from bot.errors import UpstreamUnavailable
from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.nextleg import NextLegProvider
from bot.providers.useapi import UseapiProvider
from tests.fakes.cli import clean_env, run_cli
from tests.ports import refusing_port

FAST = PollPolicy(initial=0.05, factor=1.5, cap=0.2, jitter=0.1)


async def _fail(base_url: str, cls=NextLegProvider) -> UpstreamUnavailable:
    provider = cls(base_url=base_url, token="t0ken-unreachable", poll=FAST, limiter=AskLimiter(0.01),
                   poll_timeout=1.5)
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await provider.fetch()
    finally:
        await provider.close()
    return caught.value


async def test_refused_names_the_host_and_says_refused():
    with refusing_port() as port:
        error = await _fail(f"http://127.0.0.1:{port}")
    assert "127.0.0.1" in error.user_message and "refused" in error.user_message
    assert "ClientConnectorError" not in error.user_message  # the class is detail, for the log


async def test_dns_failure_names_the_host_and_says_dns():
    error = await _fail("http://quota-bot-no-such-host.invalid", UseapiProvider)
    assert error.user_message.startswith("useapi.net (quota-bot-no-such-host.invalid) cannot be reached")
    assert "DNS" in error.user_message


async def test_tls_failure_says_tls():
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="plain http")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        error = await _fail(f"https://127.0.0.1:{port}")  # TLS spoken to a plain HTTP server
    finally:
        await runner.cleanup()
    assert "127.0.0.1" in error.user_message and "TLS" in error.user_message


async def test_a_server_that_hangs_up_says_so():
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await _fail(f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()
    assert "closed the connection" in error.user_message


async def test_the_cli_says_which_host_and_why(tmp_path):
    with refusing_port() as port:
        code, out, err = await run_cli("quota", env=clean_env(
            NEXTLEG_API_TOKEN="t0ken-unreachable", NEXTLEG_BASE_URL=f"http://127.0.0.1:{port}",
            QUOTA_READ_TIMEOUT="2", DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3"), cwd=tmp_path)
    assert code != 0
    first = err.strip().splitlines()[0]
    assert "(127.0.0.1) cannot be reached right now: the connection was refused" in first
    assert "t0ken-unreachable" not in out + err
