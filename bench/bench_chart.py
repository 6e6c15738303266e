"""Chart benchmark: rendering the history PNG (bot.chart) — latency, first-chart cost, memory.

A realistic chart: 3 accounts + the pool (thick) + projection + 2 renewals + 2 thresholds, readings
every 2 h over 30 and 90 days. Measures, in this order:

* render_png p50/p99 (warm, synchronous) for 30 and 90 days (targets: p50 < 250 ms, p99 < 500 ms);
* the first chart in a fresh interpreter (3 subprocesses, median): importing bot.chart, importing
  matplotlib, the first render, and VmRSS before and after it;
* render_png_async on its one-thread executor: latency and the event loop's longest gap between
  10 ms ticks while charts render, against a one-process ProcessPoolExecutor doing the same (what a
  process would buy, and cost in memory).

Prints a table and exits 0 when the latency targets and the 200 KB size limit hold, else 1. Not a
test; runs in ~30 s.

    python -m bench.bench_chart [--renders 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def main(renders: int) -> int:
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
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=60)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.renders)))
