"""Discord benchmark: bursts of concurrent `/quota` interactions through the fake gateway.

The bot's real discord.py client runs against tests/fakes/discord.py on 127.0.0.1, the fake in a child
process (it dispatches the burst and timestamps what comes back), the upstream (bot.simulator)
answering in 2 s. Each round is one burst; the service keeps no cache between rounds, so every burst
shares exactly one upstream ask. Prints p50/p99 from dispatch to the deferral callback and to the
final edit per round, and the bot's own CPU per deferral (the figure that does not depend on what
else the machine is doing: the bench needs a core for the bot and one for the fake).

    python -m bench.bench_discord [--n 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

from adapters.discord.bot import DiscordAdapter
from bot.service import QuotaService
from bot.settings import load_settings
from bot.simulator import UpstreamSimulator
from bot.providers.nextleg import NextLegProvider
from bench.common import Remote, pct, recv
from tests.fakes.discord import FakeDiscord

TOKEN = "bench-discord-token-0123456789"
UPSTREAM_SECONDS = 2.0


def _is_reading(body) -> bool:
    """The final edit holds a reading (not an error embed)."""
    title = ((body or {}).get("embeds") or [{}])[0].get("title", "")
    return title.startswith("Midjourney fast time:") and title.endswith("left")


async def fake_discord_child(conn) -> None:
    """The child process: the fake Discord, and the bursts it dispatches and times."""
    fake = await FakeDiscord(TOKEN).start()
    conn.send((fake.api_url, fake.gateway_url))
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
            await fake.changes.wait(lambda: True if all(i in fake.callbacks for i, _ in sent) else None, 60)
            conn.send([(fake.callbacks[i].at - fake.dispatched_at[i]) * 1000 for i, _ in sent])
        elif message[0] == "edits":  # then once every interaction has its final edit
            await fake.changes.wait(lambda: True if all(fake.edits.get(t) for _, t in sent) else None, 60)
            edits = [fake.edits[t][-1] for _, t in sent]
            final = [(e.at - fake.dispatched_at[i]) * 1000 for e, (i, _) in zip(edits, sent)]
            conn.send((final, sum(1 for e in edits if _is_reading(e.body))))
    await fake.stop()


async def main(n: int, rounds: int) -> int:
    logging.basicConfig(level=logging.ERROR)
    remote = Remote(fake_discord_child)
    api_url, gateway_url = await remote.receive()
    upstream = UpstreamSimulator(complete_after=UPSTREAM_SECONDS)
    await upstream.start()
    service = QuotaService(NextLegProvider(base_url=upstream.base_url, token="bench"), cache_seconds=0)
    settings = load_settings(None, discord_bot_token=TOKEN, discord_api_base_url=api_url, discord_gateway_url=gateway_url)
    adapter = DiscordAdapter(settings, service)
    await adapter.start()
    results = []
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
    finally:
        await adapter.stop()
        await service.close()
        await upstream.stop()
        remote.close()

    print(f"{n} concurrent /quota interactions per round through the fake gateway (a separate process); "
          f"upstream answers in {UPSTREAM_SECONDS:g} s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| round | deferral p50 | deferral p99 | final edit p50 | final edit p99 | bot CPU / deferral | answered | asks |")
    print("|-------|--------------|--------------|----------------|----------------|--------------------|----------|------|")
    for number, (defer, final, answered, asks, cpu) in enumerate(results, 1):
        print(f"| {number:5d} | {pct(defer, .5):9.1f} ms | {pct(defer, .99):9.1f} ms | {pct(final, .5):11.0f} ms "
              f"| {pct(final, .99):11.0f} ms | {cpu:15.2f} ms | {answered:4d}/{n:<3d} | {asks:4d} |")
    p99 = sorted(pct(defer, .99) for defer, *_ in results)[len(results) // 2]  # the median round
    met = p99 < 100 and all(asks == 1 and answered == n for _, _, answered, asks, _ in results)
    print("\nRound 1 opens the connections it needs (at most 32, kept alive for 60 s); later rounds reuse them.")
    print(f"median round's deferral p99 {p99:.1f} ms; "
          + ("targets met (deferral p99 < 100 ms, one ask per burst)" if met else "TARGETS NOT MET"))
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.n, args.rounds)))
