"""Chart benchmark: rendering the history PNG (bot.chart) — latency, first-chart cost, memory.

A realistic chart: 3 accounts + the pool (thick) + projection + 2 renewals + 2 thresholds, readings
every 2 h over 30 and 90 days. Measures, in this order:

* render_png p50/p99 (warm, synchronous) for 30 and 90 days (targets: p50 < 250 ms, p99 < 500 ms);
* the first chart in a fresh interpreter (3 subprocesses, median): importing bot.chart, importing
  matplotlib, the first render, and VmRSS before and after it;
* render_png_async on its one-thread executor: latency and the event loop's longest gap between
  10 ms ticks while charts render, against a one-process ProcessPoolExecutor doing the same (what a
  process would buy, and cost in memory);
* `/quota` ack p50/p99 while a chart renders: bench/bench_slack.py's HTTP burst (``--ack-n`` signed
  `/quota` requests, each on a new connection, sent and timed by a fake Slack in a child process) against
  the bot's Slack adapter in this process, with 90-day charts rendered back to back by
  render_png_async in this same process, and without them; ``--ack-rounds`` bursts each, judged on the
  median round (as bench_slack does) against its 100 ms ack p99 target.

Prints the tables and exits 0 when the latency targets, the 200 KB size limit and the ack target hold,
else 1. Not a test; runs in ~30 s, plus ~25 s for the ack bursts.

    python -m bench.bench_chart [--renders 60] [--ack-n 200] [--ack-rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Awaitable, Callable
from zoneinfo import ZoneInfo

from bench.common import pct
from bot.chart import ChartSeries, ChartSpec, render_png, render_png_async

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_760_000_000.0
DAY = 86400.0
STEP = 2 * 3600.0
P50_TARGET_MS = 250.0
P99_TARGET_MS = 500.0
MAX_BYTES = 200 * 1024
ACK_P99_TARGET_MS = 100.0  # bench/bench_slack.py's target for the ack p99 of a /quota burst


def make_spec(days: int) -> ChartSpec:
    """3 accounts (monthly resets, wobbly use), their pool, the projection to zero, renewals, alerts."""
    start = NOW - days * DAY
    reset0 = NOW - 12 * DAY
    accounts = [("studio-main", 30.0, 0.035), ("alice@example.com", 15.0, 0.02), ("bob", 15.0, 0.012)]
    n = int(days * DAY // STEP) + 1
    series = []
    for k, (name, total, rate) in enumerate(accounts):
        points = []
        for i in range(n):
            t = start + i * STEP
            since = (t - reset0) % (30 * DAY)
            hours = total - rate * since / 3600 + 0.3 * math.sin(i / 3 + k)
            points.append((t, max(0.0, min(total, hours))))
        series.append(ChartSeries(name, points))
    pool = ChartSeries("pool", [(p[0][0], sum(h for _, h in p)) for p in zip(*(s.points for s in series))],
                       pool=True)
    t0, h0 = pool.points[-1]
    renewals = [r for r in (reset0 - 60 * DAY, reset0 - 30 * DAY, reset0, reset0 + 30 * DAY) if r >= start]
    return ChartSpec([*series, pool], start=start, now=NOW, renewals=renewals,
                     projection=((t0, h0), (min(reset0 + 30 * DAY, t0 + h0 / 0.067 * 3600), 0.0)),
                     thresholds=[("low", 12.0), ("critical", 4.5)], tz=ZoneInfo("Europe/Paris"))


def vm_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


_FIRST_CHART = """
import json, resource, sys, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
t = time.perf_counter(); import bot.chart as chart; module = time.perf_counter() - t
assert 'matplotlib' not in sys.modules
from bench.bench_chart import make_spec
spec = make_spec(30)
before = rss()
t = time.perf_counter(); chart._matplotlib(); mpl = time.perf_counter() - t
t = time.perf_counter(); chart.render_png(spec); render = time.perf_counter() - t
after = rss()
t = time.perf_counter(); chart.render_png(spec); second = time.perf_counter() - t
print(json.dumps({"module": module, "mpl": mpl, "render": render, "second": second, "before": before,
                  "after": after, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def first_chart(runs: int) -> dict[str, float]:
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _FIRST_CHART], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def sync_latencies(spec: ChartSpec, renders: int) -> tuple[list[float], int]:
    size = len(render_png(spec))  # warm
    times = []
    for _ in range(renders):
        started = time.perf_counter()
        data = render_png(spec)
        times.append((time.perf_counter() - started) * 1000)
        size = max(size, len(data))
    return times, size


async def off_loop(render: Callable[[ChartSpec], Awaitable[bytes]], spec: ChartSpec, renders: int
                   ) -> tuple[float, float, int]:
    """(median render ms, longest loop gap ms, ticks) for ``renders`` charts in a row on ``render``."""
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append((now - last) * 1000)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    times = []
    for _ in range(renders):
        started = time.perf_counter()
        await render(spec)
        times.append((time.perf_counter() - started) * 1000)
    stop = True
    await task
    return statistics.median(times), max(gaps), len(gaps)


def _child_rss() -> float:
    return vm_rss_mb()


async def ack_while_rendering(n: int, rounds: int) -> tuple[list[tuple], list[tuple], list[int], int]:
    """bench_slack's HTTP burst of ``n`` /quota, ``rounds`` times without charts and ``rounds`` times while a
    loop renders 90-day charts back to back (render_png_async) in this process, where the bot runs.
    Returns (rounds without, rounds with, charts finished during each busy round, the renderer's errors)."""
    from bench.bench_slack import burst

    logging.getLogger().setLevel(logging.ERROR)  # as bench_slack: the bot's info lines are not the figures
    spec = make_spec(90)
    await render_png_async(spec)  # warm: matplotlib loaded, the chart thread started
    quiet = [await burst("http", n) for _ in range(rounds)]
    busy: list[tuple] = []
    rendered: list[int] = []
    errors = 0
    for _ in range(rounds):
        stop = asyncio.Event()
        finished: list[float] = []

        async def renderer() -> None:
            nonlocal errors
            while not stop.is_set():  # noqa: B023 - awaited within this iteration; the next chart starts as soon as the last one is done
                try:
                    await render_png_async(spec)
                except Exception:  # noqa: BLE001 - counted: the bench reports failed charts
                    errors += 1
                finished.append(time.perf_counter())  # noqa: B023 - awaited within this iteration

        task = asyncio.create_task(renderer())
        await asyncio.sleep(0.3)  # a chart is already being drawn when the fake Slack starts
        started = time.perf_counter()
        busy.append(await burst("http", n))
        ended = time.perf_counter()
        stop.set()
        await task
        rendered.append(sum(started <= t <= ended for t in finished))
    return quiet, busy, rendered, errors


def print_ack(n: int, quiet: list[tuple], busy: list[tuple], rendered: list[int], errors: int) -> bool:
    from bench.bench_slack import _median_round

    print(f"\n/quota ack while a chart renders: {n} signed /quota per round over HTTP, each on a new connection, "
          f"sent and timed by a fake Slack in a child process (bench.bench_slack); upstream answers in 2 s; "
          f"90-day charts rendered back to back with render_png_async in the bot's process during the busy "
          f"rounds; {len(quiet)} rounds each, the median round (by ack p99) shown\n")
    print(f"| {'rounds':<32} | ack p50 | ack p99 | ack p99, every round | answer p99 | asks/round | charts/round |")
    print(f"|{'-' * 34}|---------|---------|----------------------|------------|------------|--------------|")
    for name, results, charts in (("no chart rendering", quiet, None), ("90-day charts rendering", busy, rendered)):
        acks, final, _, _, _ = _median_round(results)
        every = ", ".join(f"{pct(r[0], .99):.0f}" for r in results)
        asks = "/".join(map(str, sorted({r[2] for r in results})))
        shown = "-" if charts is None else "/".join(map(str, charts))
        print(f"| {name:<32} | {pct(acks, .5):5.1f}ms | {pct(acks, .99):5.1f}ms | {every + ' ms':>20} |"
              f" {pct(final, .99):8.0f}ms | {asks:>10} | {shown:>12} |")
    acks = _median_round(busy)[0]
    ok = pct(acks, .99) <= ACK_P99_TARGET_MS and all(charts > 0 for charts in rendered) and not errors
    print(f"\ntarget /quota ack p99 <= {ACK_P99_TARGET_MS:.0f} ms while charts render (median round): "
          f"{'met' if ok else 'MISSED'} ({pct(acks, .99):.1f} ms"
          + (f"; {errors} chart(s) failed" if errors else "")
          + ("; a round rendered no chart" if not all(rendered) else "") + ")")
    return ok


async def main(renders: int, ack_n: int = 200, ack_rounds: int = 3) -> int:
    began = time.perf_counter()
    cold = first_chart(3)

    rss_start = vm_rss_mb()
    spec30, spec90 = make_spec(30), make_spec(90)
    t30, size30 = sync_latencies(spec30, renders)
    t90, size90 = sync_latencies(spec90, renders)
    rss_warm = vm_rss_mb()

    thread_ms, thread_gap, _ = await off_loop(render_png_async, spec90, 10)

    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        started = time.perf_counter()
        await loop.run_in_executor(pool, render_png, spec90)  # start the worker, import matplotlib there
        process_cold = (time.perf_counter() - started) * 1000

        async def in_process(spec: ChartSpec) -> bytes:
            return await loop.run_in_executor(pool, render_png, spec)

        process_ms, process_gap, _ = await off_loop(in_process, spec90, 10)
        child_rss = await loop.run_in_executor(pool, _child_rss)

    points = sum(len(s.points) for s in spec90.series)
    print(f"bot.chart: 1200×600 PNG; 3 accounts + pool + projection + renewals + thresholds; readings every 2 h "
          f"({len(spec30.series[0].points)} / {len(spec90.series[0].points)} per series, {points} points at 90 days)\n")
    rows = [
        ("render_png 30 days p50 / p99", f"{pct(t30, .5):.0f} / {pct(t30, .99):.0f} ms"),
        ("render_png 90 days p50 / p99", f"{pct(t90, .5):.0f} / {pct(t90, .99):.0f} ms"),
        ("PNG size 30 / 90 days", f"{size30 / 1024:.0f} / {size90 / 1024:.0f} KB"),
        ("fresh process: import bot.chart", f"{cold['module'] * 1000:.0f} ms"),
        ("fresh process: import matplotlib", f"{cold['mpl'] * 1000:.0f} ms"),
        ("fresh process: first render", f"{cold['render'] * 1000:.0f} ms"),
        ("fresh process: first chart total", f"{(cold['mpl'] + cold['render']) * 1000:.0f} ms"),
        ("fresh process: second render", f"{cold['second'] * 1000:.0f} ms"),
        ("fresh process: RSS before 1st chart", f"{cold['before']:.0f} MB"),
        ("fresh process: RSS after 1st chart", f"{cold['after']:.0f} MB (+{cold['after'] - cold['before']:.0f})"),
        ("fresh process: peak RSS (ru_maxrss)", f"{cold['peak']:.0f} MB"),
        ("this process RSS: start / after bench", f"{rss_start:.0f} / {rss_warm:.0f} MB"),
        ("async, thread: render p50", f"{thread_ms:.0f} ms"),
        ("async, thread: max loop gap", f"{thread_gap:.0f} ms"),
        ("async, process: first (spawn+import)", f"{process_cold:.0f} ms"),
        ("async, process: render p50", f"{process_ms:.0f} ms"),
        ("async, process: max loop gap", f"{process_gap:.0f} ms"),
        ("async, process: worker RSS", f"{child_rss:.0f} MB"),
    ]
    print(f"| {'measure':<38} | {'value':>20} |")
    print(f"|{'-' * 40}|{'-' * 22}|")
    for name, value in rows:
        print(f"| {name:<38} | {value:>20} |")
    ok = (all(pct(t, .5) < P50_TARGET_MS and pct(t, .99) < P99_TARGET_MS for t in (t30, t90))
          and max(size30, size90) < MAX_BYTES)
    print(f"\ntargets p50 < {P50_TARGET_MS:.0f} ms, p99 < {P99_TARGET_MS:.0f} ms, PNG < 200 KB: "
          f"{'met' if ok else 'MISSED'}  ({len(t30)} renders each; bench ran {time.perf_counter() - began:.0f} s)")

    if ack_rounds > 0:
        ack_began = time.perf_counter()
        quiet, busy, rendered, errors = await ack_while_rendering(ack_n, ack_rounds)
        ack_ok = print_ack(ack_n, quiet, busy, rendered, errors)
        print(f"(the ack bursts ran {time.perf_counter() - ack_began:.0f} s)")
        ok = ok and ack_ok
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=60)
    parser.add_argument("--ack-n", type=int, default=200, help="/quota requests per burst (default 200)")
    parser.add_argument("--ack-rounds", type=int, default=3,
                        help="bursts with and without charts rendering (default 3; 0 skips the ack figure)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.renders, args.ack_n, args.ack_rounds)))
