"""Scheduler benchmark: 10,000 schedules due in the same minute across 1,000 channels.

Real store (SQLite in a temp folder), real service against the fake upstream, the real Slack adapter
posting with chat.postMessage to the fake Slack on 127.0.0.1, which runs in a child process (so the
figures are the bot's, not the fake's; the times are on the system-wide monotonic clock). The clock is the system clock shifted
so the minute starts a few seconds after arming. Prints due→posted p50/p99, upstream asks, and the
dispatcher's idle CPU and memory with the 10,000 schedules armed.

    python -m bench.bench_scheduler [--schedules 10000] [--channels 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import tempfile
import time
from datetime import datetime, timedelta, timezone

from adapters.slack.app import SlackAdapter
from bench.common import Remote, pct, recv
from bot.providers.nextleg import NextLegProvider
from bot.scheduler import Scheduler, SystemClock
from bot.service import QuotaService
from bot.settings import load_settings
from bot.simulator import UpstreamSimulator
from bot.store import Store
from tests.fakes.slack import FakeSlack

BOT = "xoxb-bench-0000-token"


class ShiftedClock(SystemClock):
    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20



async def fake_slack_child(conn) -> None:
    """The child process: the fake Slack. Told when the minute is due (monotonic) and how many posts to
    expect, it answers with each post's delay after due, in ms."""
    fake = await FakeSlack(BOT).start()
    conn.send(fake.api_url)
    due_mono, expected = await recv(conn)
    await fake.wait(lambda: True if len(fake.posts) >= expected else None, timeout=300)
    conn.send([(p.at - due_mono) * 1000 for p in fake.posts])
    await recv(conn)
    await fake.stop()


async def main(schedules: int, channels: int) -> int:
    logging.basicConfig(level=logging.ERROR)
    upstream = UpstreamSimulator(complete_after=1.0)
    await upstream.start()
    remote = Remote(fake_slack_child)
    api_url = await remote.receive()
    service = QuotaService(NextLegProvider(base_url=upstream.base_url, token="bench"))
    adapter = SlackAdapter(load_settings(None, slack_bot_token=BOT, slack_signing_secret="bench-secret",
                                         slack_api_url=api_url), service)
    # the minute under test starts 8 s from now
    real = datetime.now(timezone.utc)
    minute = (real + timedelta(minutes=2)).replace(second=0, microsecond=0)
    clock = ShiftedClock(minute - real - timedelta(seconds=8))
    cron = f"{minute.minute} {minute.hour} * * *"
    with tempfile.TemporaryDirectory() as folder:
        store = await Store.open(os.path.join(folder, "bench.sqlite3"))
        scheduler = Scheduler(store, service, {"slack": adapter}, clock=clock)
        started = time.perf_counter()
        anchor = clock.now().timestamp()
        # as if added from chat: ten schedules per channel, all at the same minute
        await store.add_schedules([("slack", f"C{i % channels:05d}", cron, "UTC", "chat", anchor)
                                   for i in range(schedules)])
        await scheduler.start()
        arm_seconds = time.perf_counter() - started
        due_mono = time.monotonic() + (minute - clock.now()).total_seconds()
        latencies = await remote.ask((due_mono, schedules), timeout=300)
        # idle: everything armed again for tomorrow; measure the dispatcher doing nothing
        await asyncio.sleep(1)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(5)
        idle_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0) * 100
        memory = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        await scheduler.stop()
        await store.close()
    await adapter.stop()
    await service.close()
    remote.close()
    await upstream.stop()
    print(f"{schedules:,} schedules due at the same minute across {channels:,} channels; upstream answers in 1 s\n")
    rows = [
        (f"arm {schedules:,} stored schedules", f"{arm_seconds:.2f} s"),
        ("due → posted p50", f"{pct(latencies, .5) / 1000:.2f} s"),
        ("due → posted p99", f"{pct(latencies, .99) / 1000:.2f} s"),
        ("first post after due", f"{min(latencies) / 1000:.2f} s"),
        ("posts delivered", f"{len(latencies):,}"),
        ("upstream asks", f"{len(upstream.asks)}"),
        (f"idle CPU with {schedules:,} armed", f"{idle_cpu:.2f} %"),
        (f"RSS with {schedules:,} armed (peak)", f"{memory:.0f} MB ({peak:.0f} MB)"),
    ]
    print(f"| {'measure':<34} | {'value':>16} |")
    print(f"|{'-' * 36}|{'-' * 18}|")
    for name, value in rows:
        print(f"| {name:<34} | {value:>16} |")
    return 0 if len(upstream.asks) == 1 and len(latencies) == schedules else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=1_000)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.schedules, args.channels)))
