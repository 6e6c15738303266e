"""Discord benchmark: bursts of concurrent `/quota` interactions, through the fake gateway and, in the
same run, POSTed signed to the HTTP mode's endpoint (DISCORD_PUBLIC_KEY).

The bot's real discord.py client runs against tests/fakes/discord.py on 127.0.0.1, the fake in a child
process (it dispatches the burst and timestamps what comes back), the upstream (bot.simulator)
answering in 2 s. Each round is one burst; the service keeps no cache between rounds, so every burst
shares exactly one upstream ask. Prints p50/p99 from dispatch to the deferral callback and to the
final edit per round, and the bot's own CPU per deferral (the figure that does not depend on what
else the machine is doing: the bench needs a core for the bot and one for the fake).

HTTP mode: the fake signs each interaction (its own Ed25519 key pair) and POSTs the burst at once; the
ack is the HTTP response (a deferral, or the answer itself when it is ready at once). Its floor is a
do-nothing aiohttp handler in the bot's process that only verifies the signature and answers type 5.

Same conditions for every HTTP row: the same client; the rows' order rotates from round to round; each
measured burst is preceded by a burst of signed PINGs, so it runs on n open connections whatever the
server's idle timeout (plain aiohttp keeps idle connections for an hour, the bot's server for 5 s, and
the rows of one round are ~5 s apart); and a full garbage collection before each burst, so no row pays
for a collection of the garbage the previous row left.

    python -m bench.bench_discord [--n 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import json
import time

import aiohttp
from aiohttp import web
from nacl.signing import VerifyKey

from adapters.discord.bot import DiscordAdapter
from adapters.server import HttpServer
from bench.common import Remote, pct, recv
from bot.providers.nextleg import NextLegProvider
from bot.service import QuotaService
from bot.settings import load_settings
from bot.simulator import UpstreamSimulator
from tests.fakes.discord import FakeDiscord, start_http_mode

TOKEN = "bench-discord-token-0123456789"
UPSTREAM_SECONDS = 2.0


def _is_reading(body) -> bool:
    """The final edit holds a reading (not an error embed)."""
    title = ((body or {}).get("embeds") or [{}])[0].get("title", "")
    return title.startswith("Midjourney fast time:") and title.endswith("left")


async def fake_discord_child(conn) -> None:
    """The child process: the fake Discord, and the bursts it dispatches and times."""
    fake = await FakeDiscord(TOKEN).start()
    conn.send((fake.api_url, fake.gateway_url, fake.public_key))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # every POST of a burst at once
    sent: list[tuple[str, str]] = []
    while True:
        message = await recv(conn)
        if message[0] == "stop":
            break
        if message[0] == "ready":
            await asyncio.wait_for(fake.ready.wait(), 30)
            conn.send("ready")
        elif message[0] == "burst":  # answers once every interaction has its deferral callback
            sent = await fake.slash_burst("quota", message[1])
            await fake.changes.wait(lambda: True if all(i in fake.callbacks for i, _ in sent) else None, 60)  # noqa: B023 - awaited here
            conn.send([(fake.callbacks[i].at - fake.dispatched_at[i]) * 1000 for i, _ in sent])
        elif message[0] == "edits":  # then once every interaction has its final edit
            await fake.changes.wait(lambda: True if all(fake.edits.get(t) for _, t in sent) else None, 60)  # noqa: B023 - awaited here
            edits = [fake.edits[t][-1] for _, t in sent]
            final = [(e.at - fake.dispatched_at[i]) * 1000 for e, (i, _) in zip(edits, sent)]
            conn.send((final, sum(1 for e in edits if _is_reading(e.body))))
        elif message[0] == "post":  # a burst of signed POSTs to a URL: ack times, then the final answers
            url, n = message[1], message[2]
            pings = []  # warm-up: every row's burst runs on n open connections (see "same conditions" below)
            for _ in range(n):
                body = json.dumps({"type": 1, "id": "1", "application_id": "1", "token": "warm-up"}).encode()
                pings.append((body, fake.sign(body)))
            await asyncio.gather(*(_post(http, url, body, headers) for body, headers in pings))
            signed = []
            for _ in range(n):  # signed first, then sent in one go
                iid, token, payload = fake.command_payload("quota")
                body = json.dumps(payload).encode()
                signed.append((token, body, fake.sign(body)))
            acks = await asyncio.gather(*(_post(http, url, body, headers) for _, body, headers in signed))
            deferred = [t for (t, _, _), (_, kind, _, _) in zip(signed, acks) if kind == 5]
            inline = {t: (ms, body) for (t, _, _), (ms, kind, body, at) in zip(signed, acks) if kind == 4}
            if message[3]:  # wait for the edits of the deferred ones
                await fake.changes.wait(lambda: True if all(fake.edits.get(t) for t in deferred) else None, 60)  # noqa: B023 - awaited here
            sent_at = {t: at for (t, _, _), (_, _, _, at) in zip(signed, acks)}
            final = [(fake.edits[t][-1].at - sent_at[t]) * 1000 for t in deferred if message[3]]
            final += [ms for ms, _ in inline.values()]
            answered = sum(1 for t in deferred if message[3] and _is_reading(fake.edits[t][-1].body)) + \
                sum(1 for _, body in inline.values() if _is_reading(body.get("data")))
            conn.send(([ms for ms, *_ in acks], len(inline), final, answered,
                       sum(1 for _, kind, _, _ in acks if kind not in (4, 5))))
    await http.close()
    await fake.stop()


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[float, int, dict, float]:
    """(ms to the response, the response type or the HTTP status, the body, when the POST started)."""
    started = time.monotonic()
    async with http.post(url, data=body, headers=headers) as resp:
        data = await resp.json(content_type=None) if resp.status == 200 else {}
    return (time.monotonic() - started) * 1000, data.get("type", resp.status), data, started


def floor_handler(public_key: str):
    """The floor: a do-nothing aiohttp handler that verifies the signature and answers type 5."""
    key = VerifyKey(bytes.fromhex(public_key))

    async def handler(request: web.Request) -> web.Response:
        raw = await request.read()
        key.verify(request.headers["X-Signature-Timestamp"].encode() + raw,
                   bytes.fromhex(request.headers["X-Signature-Ed25519"]))
        return web.json_response({"type": 5, "data": {"flags": 64}})

    return handler


async def floor_server(public_key: str) -> tuple[web.AppRunner, str]:
    """The floor handler on plain aiohttp (AppRunner + TCPSite)."""
    app = web.Application()
    app.router.add_post("/discord/interactions", floor_handler(public_key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/discord/interactions"


async def main(n: int, rounds: int) -> int:
    logging.basicConfig(level=logging.ERROR)
    remote = Remote(fake_discord_child)
    api_url, gateway_url, public_key = await remote.receive()
    upstream = UpstreamSimulator(complete_after=UPSTREAM_SECONDS)
    await upstream.start()
    service = QuotaService(NextLegProvider(base_url=upstream.base_url, token="bench"), cache_seconds=0)
    settings = load_settings(None, discord_bot_token=TOKEN, discord_api_base_url=api_url, discord_gateway_url=gateway_url)
    adapter = DiscordAdapter(settings, service)
    await adapter.start()
    results = []
    http_rows: list[tuple[str, list[float], list[float], int, int, int, int]] = []
    try:
        await remote.ask(("ready",))
        for _ in range(rounds):
            asks_before = len(upstream.asks)
            cpu = time.process_time()
            defer = await remote.ask(("burst", n))
            cpu_ms = (time.process_time() - cpu) * 1000  # the bot's CPU from dispatch to the last deferral
            final, answered = await remote.ask(("edits",))
            results.append((defer, final, answered, len(upstream.asks) - asks_before, cpu_ms / n))
            await asyncio.sleep(0.5)
        await adapter.stop()

        # HTTP mode, in the same run: the same service (no cache: each burst is deferred and shares one
        # ask), then a cached reading (each answer is the response itself), and the floor between them
        cached = QuotaService(NextLegProvider(base_url=upstream.base_url, token="bench"), cache_seconds=3600)
        await cached.get_report()
        floor, floor_url = await floor_server(public_key)
        servers = []
        urls = {}
        floor_app = web.Application()  # the same handler on the bot's own server (adapters/server.py)
        floor_app.router.add_post("/discord/interactions", floor_handler(public_key))
        floor_on_ours = HttpServer(floor_app, "127.0.0.1", 0)
        urls["floor, bot's server"] = f"http://127.0.0.1:{await floor_on_ours.start()}/discord/interactions"
        for name, svc in (("http, deferred", service), ("http, cached", cached)):
            http_adapter, server, urls[name] = await start_http_mode(svc, api_url=api_url, public_key=public_key,
                                                                     token=TOKEN)
            servers.append((http_adapter, server))
        rows = (("floor", floor_url, False), ("floor, bot's server", urls["floor, bot's server"], False),
                ("http, deferred", urls["http, deferred"], True), ("http, cached", urls["http, cached"], False))
        try:
            for number in range(rounds):
                for name, url, edits in rows[number % len(rows):] + rows[:number % len(rows)]:  # the order rotates
                    gc.collect()
                    asks_before = len(upstream.asks)
                    acks, inline, final, answered, refused = await remote.ask(("post", url, n, edits))
                    http_rows.append((name, acks, final, inline, answered, len(upstream.asks) - asks_before, refused))
                    await asyncio.sleep(0.5)
        finally:
            for http_adapter, server in servers:
                await http_adapter.stop()
                await server.stop()
            await floor.cleanup()
            await floor_on_ours.stop()
            await cached.close()
    finally:
        await adapter.stop()
        await service.close()
        await upstream.stop()
        remote.close()

    print(f"{n} concurrent /quota interactions per round, the fake Discord in a separate process; "
          f"upstream answers in {UPSTREAM_SECONDS:g} s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("Gateway mode (INTERACTION_CREATE over the fake gateway; the ack is the deferral callback):\n")
    print("| round | deferral p50 | deferral p99 | final edit p50 | final edit p99 | bot CPU / deferral | answered | asks |")
    print("|-------|--------------|--------------|----------------|----------------|--------------------|----------|------|")
    for number, (defer, final, answered, asks, cpu) in enumerate(results, 1):
        print(f"| {number:5d} | {pct(defer, .5):9.1f} ms | {pct(defer, .99):9.1f} ms | {pct(final, .5):11.0f} ms "
              f"| {pct(final, .99):11.0f} ms | {cpu:15.2f} ms | {answered:4d}/{n:<3d} | {asks:4d} |")
    p99 = sorted(pct(defer, .99) for defer, *_ in results)[len(results) // 2]  # the median round
    print("\nHTTP mode (signed POSTs to /discord/interactions; the ack is the HTTP response: type 5, or type 4 "
          "with the answer):\n")
    print("| mode                | ack p50  | ack p99  | answered in the response | final p50 | final p99 | answered | asks |")
    print("|---------------------|----------|----------|--------------------------|-----------|-----------|----------|------|")
    for name, acks, final, inline, answered, asks, refused in http_rows:
        answers = f"{answered:4d}/{n:<3d}" if not name.startswith("floor") else "   —    "
        finals = f"{pct(final, .5):6.0f} ms | {pct(final, .99):6.0f} ms" if final else "     —    |     —    "
        print(f"| {name:19s} | {pct(acks, .5):5.1f} ms | {pct(acks, .99):5.1f} ms | {inline:24d} | {finals} | "
              f"{answers} | {asks:4d} |" + (f" {refused} refused" if refused else ""))

    def median_p99(name: str) -> float:
        values = sorted(pct(acks, .99) for row, acks, *_ in http_rows if row == name)
        return values[len(values) // 2]

    floor_p99, deferred_p99, cached_p99 = median_p99("floor"), median_p99("http, deferred"), median_p99("http, cached")
    http_p99 = max(deferred_p99, cached_p99)
    ours_p99 = median_p99("floor, bot's server")
    gateway_met = p99 < 100 and all(asks == 1 and answered == n for _, _, answered, asks, _ in results)
    http_met = (http_p99 <= 1.5 * floor_p99 and http_p99 < p99
                and all(answered == n and not refused for name, _, _, _, answered, _, refused in http_rows if not name.startswith("floor"))
                and all(asks == 1 for name, *_, asks, _ in http_rows if name == "http, deferred"))
    print("\nRound 1 opens the connections it needs (at most 32, kept alive for 60 s); later rounds reuse them.")
    print(f"median round's deferral p99: gateway {p99:.1f} ms; HTTP deferred {deferred_p99:.1f} ms, cached "
          f"{cached_p99:.1f} ms, floor {floor_p99:.1f} ms (HTTP / floor = {http_p99 / floor_p99:.2f}), the floor's "
          f"handler on the bot's own server {ours_p99:.1f} ms")
    print("gateway: " + ("targets met (deferral p99 < 100 ms, one ask per burst)" if gateway_met else "TARGETS NOT MET"))
    print("HTTP: " + ("targets met (ack p99 <= 1.5x the floor and below the gateway's, every answer, one ask per burst)"
                      if http_met else "TARGETS NOT MET"))
    return 0 if gateway_met and http_met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.n, args.rounds)))
