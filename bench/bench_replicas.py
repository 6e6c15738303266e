"""Replicas benchmark: 10,000 schedules due in the same minute, run by 3 replicas on one PostgreSQL
database, by 1 replica on PostgreSQL (each twice, in the order 3 1 1 3), and by one process on SQLite.

Each replica is a child process built like ``quota-bot run`` builds one (bot.store, a QuotaService whose
readings are shared through the store by bot.replicas.SharedReadings, the Slack adapter posting with
chat.postMessage, the Scheduler with its claims in the database), on the system clock shifted so the
minute starts a few seconds after every replica has armed. The fake Slack runs in its own child process
and counts every post (per channel, so a double post shows); the fake upstream runs here and counts the
asks. PostgreSQL is a throwaway server started from the machine's binaries (tests/pg.py).

Prints due→posted p50/p99, posts (exactly 10,000, none twice), upstream asks (exactly 1), and how the
posts spread over the replicas. Targets (#26): with 3 replicas each posts 20–47 % of the runs, and the
p99 is no worse than one PostgreSQL replica's.

    python -m bench.bench_replicas [--schedules 10000] [--channels 1000] [--replicas 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from bench.common import Remote, pct, recv
from tests.fakes.slack import FakeSlack

BOT = "xoxb-bench-0000-token"
ARMED_BY = 25.0  # seconds after the replicas start at which the minute falls due (they must all be armed)


async def fake_slack_child(conn) -> None:
    """The fake Slack: told when the minute is due (monotonic) and how many posts to expect, it waits
    for them, then 3 s more (a late double post would show), and answers each post's channel and delay."""
    fake = await FakeSlack(BOT).start()
    conn.send(fake.api_url)
    due_mono, expected = await recv(conn)
    await fake.wait(lambda: True if len(fake.posts) >= expected else None, timeout=300)
    await asyncio.sleep(3)
    conn.send([(p.body.get("channel"), (p.at - due_mono) * 1000) for p in fake.posts])
    await recv(conn)
    await fake.stop()


async def replica_child(conn, store_url: str, upstream_url: str, api_url: str, offset: float) -> None:
    """One replica: the store, the shared readings, the Slack poster and the scheduler, as in serve()."""
    logging.basicConfig(level=getattr(logging, os.environ.get("BENCH_LOG", "ERROR")))
    from adapters.app import reading_recorder
    from adapters.slack.app import SlackAdapter
    from bot import metrics
    from bot.accounts import QuotaPool
    from bot.providers.nextleg import NextLegProvider
    from bot.replicas import SharedReadings
    from bot.scheduler import Scheduler
    from bot.service import QuotaService
    from bot.settings import load_settings
    from bot.store import open_store

    clock = _shifted(offset)
    store = await open_store(store_url)
    shared = SharedReadings(store)
    await shared.start()
    service = QuotaService(NextLegProvider(base_url=upstream_url, token="bench"), shared=shared)
    # every reading stored, as serve() does (the other replicas find it there)
    pool = QuotaPool({"default": service}, pooled=False, listeners=[reading_recorder(store)])
    adapter = SlackAdapter(load_settings(None, slack_bot_token=BOT, slack_signing_secret="bench-secret",
                                         slack_api_url=api_url), service)
    scheduler = Scheduler(store, pool, {"slack": adapter}, clock=clock)
    started = time.perf_counter()
    await scheduler.start()
    conn.send(time.perf_counter() - started)
    await recv(conn)  # "report": the fake Slack has everything
    posted = metrics.SCHEDULED_POSTS.labels("slack", "posted")._value.get()
    skipped = metrics.SCHEDULED_POSTS.labels("slack", "skipped")._value.get()
    with open("/proc/self/statm") as handle:
        rss = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    conn.send({"posted": int(posted), "skipped": int(skipped), "rss": rss})
    await recv(conn)  # stop
    await scheduler.stop()
    await adapter.stop()
    await shared.stop()
    await service.close()
    await store.close()


def _shifted(offset: float) -> Any:
    from bot.scheduler import SystemClock

    class ShiftedClock(SystemClock):
        def now(self) -> datetime:
            return super().now() + timedelta(seconds=offset)

    return ShiftedClock()


async def run(store_url: str, replicas: int, schedules: int, channels: int) -> dict[str, Any]:
    """One round: the schedules stored, ``replicas`` processes arm them, the minute falls due."""
    from bot.simulator import UpstreamSimulator
    from bot.store import open_store

    upstream = UpstreamSimulator(complete_after=1.0)
    await upstream.start()
    slack = Remote(fake_slack_child)
    api_url = await slack.receive()
    # the minute under test: the next whole minute at least ARMED_BY s from now, on the shifted clock
    real = datetime.now(timezone.utc)
    minute = (real + timedelta(minutes=2)).replace(second=0, microsecond=0)
    offset = (minute - real - timedelta(seconds=ARMED_BY)).total_seconds()
    due_mono = time.monotonic() + ARMED_BY
    cron = f"{minute.minute} {minute.hour} * * *"
    store = await open_store(store_url)
    anchor = (real + timedelta(seconds=offset)).timestamp()
    await store.add_schedules([("slack", f"C{i % channels:05d}", cron, "UTC", "chat", anchor)
                               for i in range(schedules)])
    await store.close()
    children = [Remote(replica_child, store_url, upstream.base_url, api_url, offset) for _ in range(replicas)]
    try:
        arm = [await child.receive(timeout=ARMED_BY) for child in children]
        if time.monotonic() > due_mono:
            raise RuntimeError(f"the replicas took longer than {ARMED_BY:g} s to arm; the minute passed")
        posts = await slack.ask((due_mono, schedules), timeout=300)
        reports = [await child.ask("report") for child in children]
    finally:
        for child in children:
            child.close()
        slack.close()
        await upstream.stop()
    per_channel = Counter(channel for channel, _ in posts)
    return {"arm": max(arm), "latencies": [ms for _, ms in posts], "asks": len(upstream.asks),
            "twice": sum(n - schedules // channels for n in per_channel.values() if n > schedules // channels),
            "posted": [r["posted"] for r in reports], "skipped": sum(r["skipped"] for r in reports),
            "rss": max(r["rss"] for r in reports)}


async def main(schedules: int, channels: int, replicas: int) -> int:
    logging.basicConfig(level=logging.ERROR)
    from tests.pg import PostgresNotFound, PostgresServer

    try:
        server = PostgresServer.start_new()
    except PostgresNotFound as exc:
        print(f"PostgreSQL round not run: {exc}")
        return 1
    # the two PostgreSQL set-ups twice each, in the order A B B A, so that a drift of the machine during the
    # run (2 cores shared by every process) weighs on both alike; they are compared on their mean p99
    many, single = f"PostgreSQL, {replicas} replicas", "PostgreSQL, 1 replica"
    rounds: dict[str, dict[str, Any]] = {}
    try:
        for name, n in ((many, replicas), (single, 1), (single, 1), (many, replicas)):
            label = f"{name} ({'2' if name + ' (1)' in rounds else '1'})"
            rounds[label] = await run(server.url(server.create_database()), n, schedules, channels)
    finally:
        server.destroy()
    with tempfile.TemporaryDirectory() as folder:
        rounds["SQLite, 1 process"] = await run(f"sqlite:///{folder}/bench.sqlite3", 1, schedules, channels)
    pg = [rounds[f"{many} (1)"], rounds[f"{many} (2)"]]
    one = [rounds[f"{single} (1)"], rounds[f"{single} (2)"]]

    print(f"{schedules:,} schedules due at the same minute across {channels:,} channels; upstream answers in 1 s\n")
    rows = [
        ("arm the stored schedules (slowest)", lambda r: f"{r['arm']:.2f} s"),
        ("due → posted p50", lambda r: f"{pct(r['latencies'], .5) / 1000:.2f} s"),
        ("due → posted p99", lambda r: f"{pct(r['latencies'], .99) / 1000:.2f} s"),
        ("first post after due", lambda r: f"{min(r['latencies']) / 1000:.2f} s"),
        ("posts delivered", lambda r: f"{len(r['latencies']):,}"),
        ("posted twice", lambda r: f"{r['twice']}"),
        ("posts per replica", lambda r: " / ".join(f"{n:,}" for n in r["posted"])),
        ("runs skipped", lambda r: f"{r['skipped']}"),
        ("upstream asks", lambda r: f"{r['asks']}"),
        ("RSS per process (largest)", lambda r: f"{r['rss']:.0f} MB"),
    ]
    print(f"| {'measure':<36} | " + " | ".join(f"{name:>28}" for name in rounds) + " |")
    print(f"|{'-' * 38}|" + "|".join("-" * 30 for _ in rounds) + "|")
    for name, value in rows:
        print(f"| {name:<36} | " + " | ".join(f"{value(r):>28}" for r in rounds.values()) + " |")
    ok = all(len(r["latencies"]) == schedules and r["twice"] == 0 and r["asks"] == 1 for r in rounds.values())
    print(f"\nexactly {schedules:,} posts, none twice, 1 upstream ask in every round → {'met' if ok else 'NOT MET'}")
    shares = [[n / schedules * 100 for n in r["posted"]] for r in pg]
    shared = replicas < 2 or all(20 <= share <= 47 for each in shares for share in each)
    print(f"posts shared: each of {replicas} replicas posted " + "; ".join(
        " / ".join(f"{share:.1f} %" for share in each) for each in shares)
          + f" (target 20–47 % each, in both rounds) → {'met' if shared else 'NOT MET'}")
    p99_many = sum(pct(r["latencies"], .99) for r in pg) / len(pg)
    p99_one = sum(pct(r["latencies"], .99) for r in one) / len(one)
    faster = p99_many <= p99_one
    print(f"due → posted p99 (mean of two rounds) with {replicas} replicas {p99_many / 1000:.2f} s vs 1 replica "
          f"{p99_one / 1000:.2f} s (target: no worse) → {'met' if faster else 'NOT MET'}")
    return 0 if ok and shared and faster else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.schedules, args.channels, args.replicas)))
