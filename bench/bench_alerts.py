"""Alerts benchmark: 1,000 alerts over 100 channels checked against one reading.

The alerts (percentages, amounts in h and min, runout; on the pool of three accounts and on each account) come
from QUOTA_ALERTS-style items, stored in a real SQLite file in a temp folder; the three accounts are read by the
real service and pool from three fake upstreams on 127.0.0.1, every reading is stored and the runout alerts use
the real forecast over three days of seeded readings. Each check follows a fresh reading, as in the bot (so the
forecasts are computed again each time). Measured: ``Alerts.last_evaluation_ms`` (the check in memory) and the
wall time of ``evaluate()`` (with the claim in the database when something crossed), p50/p99 over 20 readings
that cross nothing, and one reading that crosses a known set; the posts go to a counting poster and must be
exactly the crossed alerts, once each. Exits 1 when a target is missed.

    python -m bench.bench_alerts [--channels 100] [--per-channel 10] [--readings 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections import Counter
from typing import Any

from bench.common import pct
from bot.accounts import QuotaPool
from bot.alerts import Alerts, parse_condition, parse_config
from bot.history import History
from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.nextleg import NextLegProvider
from bot.service import QuotaService
from bot.simulator import UpstreamSimulator
from bot.store import Store

TARGET_MS = 20.0
TOTAL = 15.0
ACCOUNTS = ("studio", "lab", "team-b")
FAST = PollPolicy(initial=0.01, factor=1.0, cap=0.01, jitter=0.0, use_progress=False)


class Feed:
    def __init__(self, renews: float) -> None:
        self.remaining = 14.0
        self.renews = renews

    def __call__(self, reading: int) -> dict[str, Any]:
        return {"Subscription": f"Standard (Active monthly, renews next on <t:{int(self.renews)}>)",
                "Job Mode": "Fast",
                "Fast Time Remaining": f"{self.remaining:.2f}/{TOTAL:.1f} hours ({self.remaining / TOTAL * 100:.2f}%)"}


class CountingPoster:
    def __init__(self) -> None:
        self.posts: Counter[int] = Counter()
        self.channels: Counter[str] = Counter()

    async def post(self, channel: str, outcome: Any) -> None:
        self.posts[outcome.alert_id] += 1
        self.channels[channel] += 1


def alert_config(channels: int, per_channel: int) -> str:
    """``channels`` items of ``per_channel`` conditions: 80 % Slack, 20 % Discord; a quarter on the pool, the
    rest spread over the accounts; percentages, h, min and runout mixed, different in each channel."""
    items = []
    for i in range(channels):
        where = f"discord:{100000000000000000 + i}" if i % 5 == 4 else f"slack:C{i:04d}"
        account = "" if i % 4 == 0 else f"@{ACCOUNTS[i % 4 - 1]}"
        conditions = ["runout"]
        conditions += [f"{30 + (i % 4) * 15}m"]
        conditions += [f"{1 + (i % 3) * 0.5 + k:g}h" for k in range(3)]
        k = 0
        while len(conditions) < per_channel:
            conditions.append(f"{5 + i % 5 + 6 * k}%")
            k += 1
        items.append(f"{where}{account}={','.join(conditions[:per_channel])}")
    return ";".join(items)


async def main(channels: int, per_channel: int, readings: int) -> int:
    logging.basicConfig(level=logging.ERROR)
    now = time.time()
    renews = now + 11 * 86400
    feeds = {name: Feed(renews) for name in ACCOUNTS}
    upstreams = {name: UpstreamSimulator(complete_after=0.0, content=feeds[name]) for name in ACCOUNTS}
    for sim in upstreams.values():
        await sim.start()
    services = {name: QuotaService(NextLegProvider(base_url=upstreams[name].base_url, token="bench", poll=FAST,
                                                   limiter=AskLimiter(0.0), poll_timeout=10), cache_seconds=0)
                for name in ACCOUNTS}
    pool = QuotaPool(services, pooled=True)
    slack, discord = CountingPoster(), CountingPoster()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        store = await Store.open(os.path.join(folder, "bench.sqlite3"))
        pool.subscribe(lambda account, report: store.record_reading(report, account=account))
        history = History(store, pool)
        # three days of slow use (0.1 h a day): every account lasts to the renewal
        for name in ACCOUNTS:
            await store.record_history(name, [(now - (72 - h) * 3600, 14.3 - 0.1 * h / 24, TOTAL, renews)
                                              for h in range(0, 72, 2)], simulated=False)
        alerts = Alerts(store, pool, {"slack": slack, "discord": discord}, history=history)
        started = time.perf_counter()
        await alerts.sync_config(parse_config(alert_config(channels, per_channel), pool.names))
        await alerts.start()
        await alerts.stop()  # the checker task: this benchmark calls evaluate() itself, after each reading
        load_ms = (time.perf_counter() - started) * 1000
        rows = {row.id: row for row in await store.alerts()}

        async def one_reading() -> tuple[float, float, int]:
            await pool.get_report()
            began = time.perf_counter()
            fired = await alerts.evaluate()
            return alerts.last_evaluation_ms, (time.perf_counter() - began) * 1000, fired

        quiet_eval, quiet_wall = [], []
        for k in range(readings):  # nothing crosses: every account just below 14 h of 15
            for feed in feeds.values():
                feed.remaining = 14.0 - 0.001 * k
            evaluation, wall, fired = await one_reading()
            quiet_eval.append(evaluation)
            quiet_wall.append(wall)
            if fired:
                failures.append(f"a reading above every line fired {fired} alert(s)")

        # one reading that crosses: studio 1.9 h (12.7 %), lab 4.4 h (29.3 %), team-b unchanged
        feeds["studio"].remaining, feeds["lab"].remaining = 1.9, 4.4
        cross_eval, cross_wall, fired = await one_reading()
        await asyncio.gather(*list(alerts._deliveries))
        expected = await expected_crossings(rows, services, history)
        posted = slack.posts + discord.posts
        if set(posted) != expected:
            failures.append(f"posted {len(posted)} alert(s), expected {len(expected)}: "
                            f"{len(set(posted) - expected)} extra, {len(expected - set(posted))} missing")
        if any(count != 1 for count in posted.values()):
            failures.append("an alert was posted more than once")
        if fired != len(expected):
            failures.append(f"evaluate() said {fired} fired, expected {len(expected)}")
        kinds = Counter(parse_condition(rows[i].condition).kind for i in expected)

        # the same figures again: fired alerts stay fired, nothing new
        feeds["studio"].remaining, feeds["lab"].remaining = 1.85, 4.35
        again_eval, again_wall, again = await one_reading()
        await asyncio.gather(*list(alerts._deliveries))
        if again or sum((slack.posts + discord.posts).values()) != len(expected):
            failures.append(f"the reading after the crossing fired {again} more")
        await store.close()
    await pool.close()
    for sim in upstreams.values():
        await sim.stop()

    print(f"{len(rows):,} alerts over {channels} channels ({per_channel} each; pool + {len(ACCOUNTS)} accounts; "
          f"%, h, min and runout), checked after each fresh reading\n")
    table = [
        ("load + sync 1,000 alerts, start", f"{load_ms:.1f} ms"),
        (f"no crossing: evaluation p50 / p99 ({readings})", f"{pct(quiet_eval, .5):.2f} / {pct(quiet_eval, .99):.2f} ms"),
        ("no crossing: evaluate() wall p50 / p99", f"{pct(quiet_wall, .5):.2f} / {pct(quiet_wall, .99):.2f} ms"),
        ("crossing: evaluation", f"{cross_eval:.2f} ms"),
        ("crossing: evaluate() wall (with claim)", f"{cross_wall:.2f} ms"),
        (f"  of which the claim of {len(expected)} in SQLite", f"{cross_wall - cross_eval:.2f} ms"),
        ("after the crossing: evaluation / wall", f"{again_eval:.2f} / {again_wall:.2f} ms"),
        ("alerts crossed (percent, hours, runout)",
         f"{len(expected)} ({kinds['percent']}, {kinds['hours']}, {kinds['runout']})"),
        ("posts (slack + discord), each once", f"{sum(slack.posts.values())} + {sum(discord.posts.values())}"),
    ]
    print(f"| {'measure':<44} | {'value':>18} |")
    print(f"|{'-' * 46}|{'-' * 20}|")
    for name, value in table:
        print(f"| {name:<44} | {value:>18} |")
    for name, value in (("no-crossing evaluation p99", pct(quiet_eval, .99)),
                        ("no-crossing evaluate() wall p99", pct(quiet_wall, .99)),
                        ("crossing evaluation", cross_eval), ("crossing evaluate() wall", cross_wall)):
        if value >= TARGET_MS:
            failures.append(f"{name} {value:.2f} ms >= target {TARGET_MS:g} ms")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures else 0


async def expected_crossings(rows: dict[int, Any], services: dict[str, QuotaService], history: History) -> set[int]:
    """The alerts the crossing reading should fire, worked out here from the figures (runout: from the
    forecast, short by a day or more)."""
    reports = {name: s.last_report for name, s in services.items()}
    figures = {name: (r.remaining.hours, r.total.hours) for name, r in reports.items()}
    figures[""] = (sum(v[0] for v in figures.values()), sum(v[1] for v in figures.values()))
    forecasts = {name: await history.forecast(name) for name in services}
    forecasts[""] = await history.pooled_forecast(list(services))
    out = set()
    for row in rows.values():
        remaining, total = figures[row.account]
        condition = parse_condition(row.condition)
        if condition.kind == "percent":
            below = remaining < total * condition.value / 100
        elif condition.kind == "hours":
            below = remaining < condition.value
        else:
            f = forecasts[row.account]
            below = bool(f.enough and f.lasts_to_renewal is False and (f.short_by_days or 0) >= 1)
        if below:
            out.add(row.id)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--per-channel", type=int, default=10)
    parser.add_argument("--readings", type=int, default=20)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.channels, args.per_channel, args.readings)))
