"""Slack benchmark: bursts of concurrent `/quota` commands, in HTTP mode (signed requests) and in
Socket Mode (envelopes), against the fake Slack on 127.0.0.1 with the upstream answering in 2 s.
Prints p50/p99 to the ack and to the response_url answer, upstream asks per burst, and the bot's CPU
time per ack in HTTP mode (from the first request in to the last ack out: steadier than wall-clock
percentiles on a shared 2-core machine).

Rows: HTTP with a new connection per request, sent by a lean sender (bare asyncio streams, so the 200
connections arrive within a few ms: the harshest burst) and by an aiohttp ClientSession (heavier, so the
burst arrives more spread out); HTTP over 32 kept-alive connections; Socket Mode envelopes; and the same
new-connection loads against a handler that does nothing, the floor this machine puts under any bot.

Each mode runs `--rounds` bursts (a new bot and fake each); the target is judged on the median round,
and every round's ack p99 is printed beside it.

    python -m bench.bench_slack [--n 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from adapters.app import LISTEN_BACKLOG
from adapters.slack.app import SlackAdapter
from bench.common import Remote, pct, recv
from bot.providers.nextleg import NextLegProvider
from bot.service import QuotaService
from bot.settings import load_settings
from bot.simulator import UpstreamSimulator
from tests.fakes.slack import FakeSlack, form, sign

BOT = "xoxb-bench-0000-token"
APP = "xapp-bench-0000-token"
SECRET = "bench-signing-secret"



async def fake_slack_child(conn, mode: str, n: int) -> None:
    """The child process: the fake Slack (Web API, Socket Mode, response_url sink) and the load."""
    fake = await FakeSlack(BOT, APP).start()
    conn.send(fake.api_url)
    url = await recv(conn)
    prepared = []  # the burst: (response id, signed body, headers)
    for _ in range(n if mode != "socket" else 0):
        payload, rid = fake.command_payload("/quota", "")
        body = form(payload)
        prepared.append((rid, body, sign(SECRET, body)))
    if mode in ("http", "floor"):
        # every request on a new connection, sent by the lean sender (below)
        acks = await asyncio.gather(*(lean_post(fake, url, *p) for p in prepared))
        rids = [p[0] for p in prepared]
    elif mode in ("http-aiohttp", "floor-aiohttp", "http-kept"):
        # "http-aiohttp": every request on a new connection, sent with an aiohttp ClientSession (a heavier
        # sender: more of the time measured is the sender's own); "http-kept": the sender keeps 32
        # connections open (warmed by a round of `/quota help`) and sends the burst over them
        pool = 32 if mode == "http-kept" else 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool, keepalive_timeout=60)) as http:
            if pool:
                warm = [fake.command_payload("/quota", "help")[0] for _ in range(pool)]

                async def hello(payload: dict) -> None:
                    body = form(payload)
                    async with http.post(url, data=body, headers=sign(SECRET, body)) as resp:
                        await resp.read()

                await asyncio.gather(*(hello(p) for p in warm))
            acks: list[float] = []

            async def one(rid: str, body: str, headers: dict) -> None:
                fake.sent_at[rid] = started = time.monotonic()
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                acks.append((time.monotonic() - started) * 1000)

            await asyncio.gather(*(one(*p) for p in prepared))
            rids = [p[0] for p in prepared]
    else:
        await asyncio.wait_for(fake.connected.wait(), 30)
        sent = [await fake.envelope() for _ in range(n)]
        acked = await asyncio.gather(*(fake.wait_ack(e, 60) for e, _ in sent))
        acks = [(a - fake.sent_at[e]) * 1000 for a, (e, _) in zip(acked, sent)]
        rids = [r for _, r in sent]
    if mode.startswith("floor"):
        conn.send((acks, []))
        await recv(conn)
        await fake.stop()
        return
    answers = await asyncio.gather(*(fake.wait_response(r, 60) for r in rids))
    final = [(a.at - fake.sent_at[r]) * 1000 for a, r in zip(answers, rids)]
    conn.send((acks, final))
    await recv(conn)
    await fake.stop()


async def lean_post(fake: FakeSlack, url: str, rid: str, body: str, headers: dict[str, str]) -> float:
    """One signed request on a new connection, as Slack sends it, timed from the connect to the whole
    answer. A bare asyncio stream (HTTP/1.1 with `Connection: close`, answer read to the close) costs the
    sender far less than an aiohttp ClientSession does, so more of what is timed is the bot's own."""
    parts = urlsplit(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}Content-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n{body}").encode()
    fake.sent_at[rid] = started = time.monotonic()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(request)
    answer = await reader.read()
    elapsed = (time.monotonic() - started) * 1000
    writer.close()
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else answer[:40]
    assert status == b"200", status
    return elapsed


class AckWindow:
    """Wraps an aiohttp handler: the bot's CPU time from the first request entering it to the n-th
    leaving it, per request. Steadier than wall-clock percentiles on a shared 2-core machine, and it
    counts everything the bot's process does meanwhile (accepting, parsing, bolt, writing the ack)."""

    def __init__(self, n: int, skip: int = 0) -> None:  # skip: warm-up requests before the burst
        self.n, self.skip, self.seen, self.started, self.per_ack = n, skip, 0, 0.0, float("nan")

    def wrap(self, handler):
        async def timed(request: web.Request) -> web.Response:
            if self.seen == self.skip:
                self.started = time.process_time()
            try:
                return await handler(request)
            finally:
                self.seen += 1
                if self.seen == self.skip + self.n:
                    self.per_ack = (time.process_time() - self.started) * 1000 / self.n
        return timed


async def floor(n: int, mode: str = "floor") -> tuple[list[float], float]:
    """The same HTTP load against a handler that does nothing: what the load itself costs here."""
    remote = Remote(fake_slack_child, mode, n)
    await remote.receive()

    async def nothing(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    window = AckWindow(n)
    app = web.Application()
    app.router.add_post("/slack/events", window.wrap(nothing))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
    await site.start()
    try:
        acks, _ = await remote.ask(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events")
        return acks, window.per_ack
    finally:
        remote.close()
        await runner.cleanup()


async def burst(mode: str, n: int) -> tuple[list[float], list[float], int, float, float]:
    remote = Remote(fake_slack_child, mode, n)
    api_url = await remote.receive()
    upstream = UpstreamSimulator(complete_after=2.0)
    await upstream.start()
    service = QuotaService(NextLegProvider(base_url=upstream.base_url, token="bench"))
    extra = {"slack_app_token": APP} if mode == "socket" else {"slack_signing_secret": SECRET}
    adapter = SlackAdapter(load_settings(None, slack_bot_token=BOT, slack_api_url=api_url, **extra), service)
    runner = None
    url = ""
    window = AckWindow(n, skip=32 if mode == "http-kept" else 0)
    if mode.startswith("http"):
        adapter._http = window.wrap(adapter._http)  # type: ignore[method-assign]
        app = web.Application()
        adapter.mount(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)  # as `quota-bot run` listens
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events"
    await adapter.start()
    try:
        cpu = time.process_time()
        acks, final = await remote.ask(url)
        # everything the bot did for the burst, from the first request to the last answer (the bolt
        # work that HTTP mode does after the acks included), per command
        per_command = (time.process_time() - cpu) * 1000 / n
        return acks, final, len(upstream.asks), window.per_ack, per_command
    finally:
        remote.close()
        await adapter.stop()
        if runner is not None:
            await runner.cleanup()
        await service.close()
        await upstream.stop()


def _cpu(ms: float) -> str:
    return f"{'-':>7}" if ms != ms else f"{ms:5.2f}ms"  # NaN: not measured (Socket Mode)


def _median_round(results: list[tuple]) -> tuple:
    """The round whose ack p99 is the median of the rounds' (the figure a target is judged on: one
    round on a shared 2-core VM can be twice another)."""
    return sorted(results, key=lambda r: pct(r[0], .99))[len(results) // 2]


async def main(n: int, rounds: int) -> int:
    logging.basicConfig(level=logging.ERROR)
    modes = {"HTTP, a new connection each": "http", "HTTP, new connections, aiohttp sender": "http-aiohttp",
             "HTTP, 32 kept-alive connections": "http-kept", "Socket Mode (envelopes)": "socket"}
    rows = {name: [await burst(mode, n) for _ in range(rounds)] for name, mode in modes.items()}
    floors = {name: [await floor(n, mode) for _ in range(rounds)]
              for name, mode in (("do-nothing handler, lean sender", "floor"),
                                 ("do-nothing handler, aiohttp sender", "floor-aiohttp"))}
    print(f"{n} concurrent /quota per round, {rounds} rounds per mode, sent and timed by a fake Slack in a "
          f"separate process; upstream answers in 2 s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print("p50/p99 and the CPU figures are the median round's (by ack p99); every round's ack p99 beside them.\n")
    print(f"| {'mode':<39} | ack p50 | ack p99 | ack p99, every round | answer p50 | answer p99 | asks/round "
          "| bot CPU / ack | bot CPU / command |")
    print(f"|{'-' * 41}|---------|---------|----------------------|------------|------------|------------"
          "|---------------|-------------------|")
    missed = []
    for name, results in rows.items():
        acks, final, asks, cpu, per_command = _median_round(results)
        every = ", ".join(f"{pct(r[0], .99):.0f}" for r in results)
        all_asks = sorted({r[2] for r in results})
        print(f"| {name:<39} | {pct(acks, .5):5.1f}ms | {pct(acks, .99):5.1f}ms | {every + ' ms':>20} |"
              f" {pct(final, .5):8.0f}ms | {pct(final, .99):8.0f}ms | {'/'.join(map(str, all_asks)):>10} |"
              f"       {_cpu(cpu)} |           {_cpu(per_command)} |")
        if pct(acks, .99) >= 100 or all_asks != [1]:
            missed.append(f"{name} (ack p99 {pct(acks, .99):.0f} ms, asks per round {all_asks})")
    for name, results in floors.items():
        base, cpu = _median_round(results)
        every = ", ".join(f"{pct(r[0], .99):.0f}" for r in results)
        print(f"| {name:<39} | {pct(base, .5):5.1f}ms | {pct(base, .99):5.1f}ms | {every + ' ms':>20} |"
              f"          - |          - |          - |       {_cpu(cpu)} |                 - |")
    met = not missed
    print("\ntargets met (median round's ack p99 < 100 ms, one ask per burst)" if met
          else "\nTARGETS NOT MET (median round's ack p99 < 100 ms, one ask per burst) by: " + "; ".join(missed))
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.n, args.rounds)))
