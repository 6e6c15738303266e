"""Discord benchmark: a burst of concurrent `/quota` interactions through the fake gateway.

The bot's real discord.py client runs against tests/fakes/discord.py on 127.0.0.1, the upstream
(bot.simulator) answers in 2 s. Prints p50/p99 from dispatch to the deferral callback and to the
final edit, and the upstream asks for the whole burst.

    python -m bench.bench_discord [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from adapters.discord.bot import DiscordAdapter
from bot.service import QuotaService
from bot.settings import load_settings
from bot.simulator import UpstreamSimulator
from bot.upstream import NextLegProvider
from bench.common import Remote, pct, recv
from tests.fakes.discord import FakeDiscord

TOKEN = "bench-discord-token-0123456789"



async def fake_discord_child(conn) -> None:
    """The child process: the fake Discord, and the burst it dispatches and times."""
    fake = await FakeDiscord(TOKEN).start()
    conn.send((fake.api_url, fake.gateway_url))
    while True:
        message = await recv(conn)
        if message[0] == "stop":
            break
        if message[0] == "ready":
            await asyncio.wait_for(fake.ready.wait(), 30)
            conn.send("ready")
        elif message[0] == "burst":
            n = message[1]
            sent = await fake.slash_burst("quota", n)
            callbacks = await asyncio.gather(*(fake.wait_callback(i, 60) for i, _ in sent))
            edits = await asyncio.gather(*(fake.wait_edit(t, 60) for _, t in sent))
            defer = [(c.at - fake.dispatched_at[i]) * 1000 for c, (i, _) in zip(callbacks, sent)]
            final = [(e.at - fake.dispatched_at[i]) * 1000 for e, (i, _) in zip(edits, sent)]
            answered = sum(1 for e in edits if "12.06" in str(e.body))
            conn.send((defer, final, answered))
    await fake.stop()


async def main(n: int) -> int:
    logging.basicConfig(level=logging.ERROR)
    remote = Remote(fake_discord_child)
    api_url, gateway_url = await remote.receive()
    upstream = UpstreamSimulator(complete_after=2.0)
    await upstream.start()
    service = QuotaService(NextLegProvider(base_url=upstream.base_url, token="bench"))
    settings = load_settings(None, discord_bot_token=TOKEN, discord_api_base_url=api_url, discord_gateway_url=gateway_url)
    adapter = DiscordAdapter(settings, service)
    await adapter.start()
    try:
        await remote.ask(("ready",))
        defer, final, answered = await remote.ask(("burst", n))
    finally:
        await adapter.stop()
        await service.close()
        await upstream.stop()
        remote.close()
    print(f"{n} concurrent /quota interactions through the fake gateway (a separate process); "
          "upstream answers in 2 s\n")
    print("| measure                       |      p50 |      p99 |")
    print("|-------------------------------|----------|----------|")
    print(f"| dispatch → deferral callback  | {pct(defer, .5):6.1f}ms | {pct(defer, .99):6.1f}ms |")
    print(f"| dispatch → final edit         | {pct(final, .5):6.0f}ms | {pct(final, .99):6.0f}ms |")
    print(f"\nanswered with the numbers: {answered}/{n}; upstream asks for the burst: {len(upstream.asks)}")
    met = pct(defer, .99) < 100 and len(upstream.asks) == 1 and answered == n
    print("targets met (deferral p99 < 100 ms, one ask)" if met else "TARGETS NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    raise SystemExit(asyncio.run(main(parser.parse_args().n)))
