"""The history chart (a PNG for Discord and Slack) and a text sparkline (for the console).

``render_png(spec)`` draws a ``ChartSpec`` to a 1200×600 PNG (matplotlib's object API, no pyplot);
``render_png_async`` draws it off the event loop; ``sparkline`` turns figures into ``▁▂▃▄▅▆▇█``.
The theme and why: docs/architecture.md, "The chart".
"""

from __future__ import annotations

import asyncio
import io
import math
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any, Sequence

__all__ = ["ChartSeries", "ChartSpec", "figure", "render_png", "render_png_async", "sparkline",
           "WIDTH_PX", "HEIGHT_PX"]

WIDTH_PX = 1200
HEIGHT_PX = 600
_DPI = 100

# Theme (see the module docstring).
BACKGROUND = "#2B2D31"
PLOT_BACKGROUND = "#313338"
TEXT = "#DBDEE1"
MUTED = "#949BA4"
GRID = "#4E5058"
POOL_COLOUR = "#F2F3F5"
THRESHOLD_COLOUR = "#F28B82"
SIMULATED_COLOUR = "#F0B232"
# Okabe–Ito, without its black and its dark blue (too dark on the card).
PALETTE = ("#56B4E9", "#E69F00", "#009E73", "#F0E442", "#CC79A7", "#D55E00", "#7FD4C1", "#B7A4F2")

_NOTE_NO_HISTORY = "not enough history"
_MAX_LEGEND_NAME = 22


@dataclass(frozen=True)
class ChartSeries:
    name: str                              # account name ("" for a single account)
    points: Sequence[tuple[float, float]]  # (Unix seconds, hours left), sorted
    pool: bool = False                     # the pool's sum: drawn as a thicker line


@dataclass(frozen=True)
class ChartSpec:
    series: Sequence[ChartSeries]
    start: float                 # Unix seconds: left edge (now - days)
    now: float                   # right edge of the history (the projection may go further)
    renewals: Sequence[float] = ()          # Unix seconds: vertical markers (past resets and the next renewal)
    projection: tuple[tuple[float, float], tuple[float, float]] | None = None  # ((t0, h0), (t1, h1)): dashed
    thresholds: Sequence[tuple[str, float]] = ()   # (label, hours): faint horizontal lines (alerts)
    title: str = "Midjourney fast time left"
    simulated: bool = False     # label the chart "simulated"
    tz: tzinfo = timezone.utc    # axis dates in this zone
    simulated_names: Sequence[str] = ()  # when only some series are simulated: which (named on the badge)
    note: str = ""               # one line after the subtitle, e.g. which accounts the pool leaves out


# ---------------------------------------------------------------------------------------------------
# matplotlib, loaded on first use

_mpl: dict[str, Any] = {}
_load_lock = threading.Lock()
_render_lock = threading.Lock()


def _matplotlib() -> dict[str, Any]:
    """Import the parts of matplotlib the chart uses (once; thread-safe)."""
    if _mpl:
        return _mpl
    with _load_lock:
        if not _mpl:
            import matplotlib.dates as mdates
            import numpy as np  # both are dependencies of matplotlib
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from PIL import Image

            unix0 = datetime(1970, 1, 1, tzinfo=timezone.utc)
            loaded = {
                "Figure": Figure, "Canvas": FigureCanvasAgg, "mdates": mdates,
                "np": np, "Image": Image,
                # Unix seconds -> matplotlib date numbers (days since rcParams["date.epoch"]).
                "epoch": float(mdates.date2num(unix0)),  # type: ignore[no-untyped-call]  # unannotated in matplotlib
            }
            _mpl.update(loaded)
    return _mpl


# ---------------------------------------------------------------------------------------------------
# rendering

def render_png(spec: ChartSpec) -> bytes:
    """The chart as PNG bytes (1200×600). Synchronous and CPU-bound: from async code use
    ``render_png_async``."""
    mpl = _matplotlib()
    with _render_lock:
        return _encode(_draw(spec, mpl), mpl)


def figure(spec: ChartSpec) -> Any:
    """The chart as a matplotlib ``Figure``, not yet encoded: what ``render_png`` draws, for a caller
    (a test) that inspects its artists (texts, lines, legend) rather than pixels."""
    mpl = _matplotlib()
    with _render_lock:
        return _draw(spec, mpl)


_executor: ProcessPoolExecutor | None = None
_executor_lock = threading.Lock()


def _lower_priority() -> None:
    """In the chart worker: yield the CPU to the bot (acks first, charts when there is room), and leave
    Ctrl-C to the bot (the worker is in the terminal's process group: it would print KeyboardInterrupt)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(10)
    except OSError:
        pass


def _chart_executor() -> ProcessPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_lower_priority)
        return _executor


async def render_png_async(spec: ChartSpec) -> bytes:
    """``render_png`` in a worker process started on the first chart, at a lower CPU priority.

    Not a thread: drawing a chart is ~0.1–0.2 s of Python under the GIL, and while charts render back
    to back a thread took the bot's event loop often enough to push the /quota ack p99 from ~55 ms to
    ~135 ms on a 2-core host (bench/bench_chart.py). In its own niced process the bot's loop keeps its
    turns. The worker (and matplotlib, ~80 MB) exists only once a chart was asked for: the bot's idle
    memory and its commands are unchanged until then. A worker that died is replaced on the next chart."""
    global _executor
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_chart_executor(), render_png, spec)
    except BrokenProcessPool:
        with _executor_lock:
            _executor = None
        return await loop.run_in_executor(_chart_executor(), render_png, spec)


def shutdown() -> None:
    """Stop the chart worker (at the bot's exit)."""
    global _executor
    with _executor_lock:
        if _executor is not None:
            _executor.shutdown(wait=False, cancel_futures=True)
            _executor = None


def _clean(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(float(t), float(h)) for t, h in points
            if math.isfinite(float(t)) and math.isfinite(float(h))]


def _short(name: str) -> str:
    return name if len(name) <= _MAX_LEGEND_NAME else name[: _MAX_LEGEND_NAME - 1] + "…"


def _tz_name(tz: tzinfo, at: float) -> str:
    key = getattr(tz, "key", None)
    if key:
        return str(key)
    return datetime.fromtimestamp(at, tz).tzname() or str(tz)


def _draw(spec: ChartSpec, mpl: dict[str, Any]) -> Any:
    mdates = mpl["mdates"]
    epoch: float = mpl["epoch"]

    def x(t: float) -> float:
        return epoch + t / 86400.0

    series = [(s, _clean(s.points)) for s in spec.series]
    left = float(spec.start)
    now = float(spec.now)
    right = now
    projection = spec.projection
    if projection is not None:
        right = max(right, float(projection[0][0]), float(projection[1][0]))
    renewals = sorted(float(r) for r in spec.renewals if math.isfinite(float(r)) and float(r) >= left)
    upcoming = [r for r in renewals if r > now]
    if upcoming:
        right = max(right, upcoming[0])  # the next renewal; later ones would only squash the history
    renewals = [r for r in renewals if r <= right]
    if right <= left:
        right = left + 3600.0
    pad = (right - left) * 0.01

    fig = mpl["Figure"](figsize=(WIDTH_PX / _DPI, HEIGHT_PX / _DPI), dpi=_DPI, facecolor=BACKGROUND)
    mpl["Canvas"](fig)
    ax = fig.add_axes((0.065, 0.10, 0.745, 0.78), facecolor=PLOT_BACKGROUND)

    # Axes, ticks, grid.
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(GRID)
    ax.tick_params(colors=MUTED, labelcolor=TEXT, labelsize=10)
    ax.grid(True, color=GRID, linewidth=0.6, alpha=0.6)
    ax.set_axisbelow(True)
    ax.set_ylabel("hours left", color=TEXT, fontsize=11)

    handles: list[Any] = []
    labels: list[str] = []
    top = 0.0
    enough = False
    colours = iter(PALETTE * (len(series) // len(PALETTE) + 1))
    line_colour = POOL_COLOUR
    single = sum(1 for s, _ in series if not s.pool) <= 1 and not any(s.pool for s, _ in series)

    for s, pts in series:
        colour = POOL_COLOUR if s.pool else next(colours)
        if s.pool or single:
            line_colour = colour
        if len(pts) >= 2:
            enough = True
        if pts:
            top = max(top, max(h for _, h in pts))
        xs = [x(t) for t, _ in pts]
        ys = [h for _, h in pts]
        (line,) = ax.plot(xs, ys, color=colour, linewidth=3.2 if s.pool else 1.6,
                          marker="o" if len(pts) == 1 else None, markersize=6,
                          solid_joinstyle="round", zorder=4 if s.pool else 3)
        name = s.name or ("pool" if s.pool else "")
        if name:
            handles.append(line)
            labels.append(_short(name))

    if projection is not None:
        (t0, h0), (t1, h1) = projection
        top = max(top, float(h0), float(h1))
        (line,) = ax.plot([x(float(t0)), x(float(t1))], [float(h0), float(h1)], color=line_colour,
                          linewidth=2.0, linestyle=(0, (6, 4)), alpha=0.9, zorder=5)
        handles.append(line)
        labels.append("projection")

    for n, r in enumerate(renewals):
        line = ax.axvline(x(r), color=MUTED, linewidth=1.2, linestyle=(0, (4, 4)), zorder=2)
        if n == 0:
            handles.append(line)
            labels.append("renewal")
    if right > now + pad:  # the history ends here; the rest is the future
        ax.axvline(x(now), color=MUTED, linewidth=0.8, alpha=0.5, zorder=2)
        ax.axvspan(x(now), x(right + pad), color=BACKGROUND, alpha=0.35, zorder=1, linewidth=0)

    thresholds = [(str(label), float(h)) for label, h in spec.thresholds if math.isfinite(float(h))]
    for _, h in thresholds:
        top = max(top, h)
    ymax = top * 1.12 if top > 0 else 1.0
    label_at = ax.get_yaxis_transform()
    column, above = 0, math.inf
    for label, h in sorted(thresholds, key=lambda item: -item[1]):
        if h < 0:
            continue
        ax.axhline(h, color=THRESHOLD_COLOUR, linewidth=1.0, alpha=0.45, zorder=2)
        # a label closer than its height to the one above goes beside it, not over it
        column = (column + 1) % 4 if above - h < ymax * 0.045 else 0
        above = h
        ax.text(0.006 + column * 0.24, h + ymax * 0.012, f"{label} · {h:g} h", transform=label_at, color=THRESHOLD_COLOUR,
                fontsize=9, va="bottom", ha="left", zorder=6,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": PLOT_BACKGROUND, "edgecolor": "none",
                      "alpha": 0.85})

    ax.set_xlim(x(left), x(right + pad))
    ax.set_ylim(0.0, ymax)

    span_days = (right - left) / 86400.0
    interval = max(1, round(span_days / 9))
    ax.xaxis.set_major_locator(mdates.DayLocator(interval=interval, tz=spec.tz))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d", tz=spec.tz))

    if not enough:
        ax.text(0.5, 0.5, _NOTE_NO_HISTORY, transform=ax.transAxes, ha="center", va="center",
                color=MUTED, fontsize=16, style="italic", zorder=7)

    # Title, subtitle, the "simulated" badge, the legend (to the right of the plot).
    fig.text(0.065, 0.955, spec.title, color=TEXT, fontsize=16, weight="bold", ha="left", va="center")
    days = (now - left) / 86400.0
    subtitle = f"last {days:.0f} days · dates in {_tz_name(spec.tz, now)}"
    if spec.note:
        subtitle += f" · {spec.note}"
    fig.text(0.065, 0.912, subtitle, color=MUTED, fontsize=10, ha="left", va="center")
    if spec.simulated:
        badge = "SIMULATED"
        if spec.simulated_names:
            badge += ": " + _short(", ".join(str(n) for n in spec.simulated_names))
        fig.text(0.965 if not handles else 0.81, 0.955, badge, color=BACKGROUND, fontsize=11, weight="bold", ha="right",
                 va="center", bbox={"boxstyle": "round,pad=0.35", "facecolor": SIMULATED_COLOUR,
                                    "edgecolor": "none"})
    if not handles:  # no legend: give its room to the plot
        ax.set_position((0.065, 0.10, 0.9, 0.78))
    else:
        legend = ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.015, 1.0),
                           frameon=False, fontsize=10, handlelength=2.4, borderaxespad=0.0)
        for text in legend.get_texts():
            text.set_color(TEXT)

    return fig


def _encode(fig: Any, mpl: dict[str, Any]) -> bytes:
    """The figure as an 8-bit palette PNG. The card is opaque, so RGBA is wasted; a 256-colour
    palette (octree) keeps the anti-aliasing visually intact at a third of the bytes of RGB and
    encodes in half the time (see bench/bench_chart.py)."""
    canvas = fig.canvas
    canvas.draw()
    image = mpl["Image"].fromarray(mpl["np"].asarray(canvas.buffer_rgba())).convert("RGB")
    image = image.quantize(256, method=mpl["Image"].Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# text

_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(points: Sequence[float], width: int = 40) -> str:
    """``points`` as exactly ``width`` block characters (``""`` when there is nothing to show).

    More points than ``width`` are averaged per column; fewer are stretched (linear interpolation).
    The scale starts at 0 (like the chart's y axis) unless a value is negative, so ``▁`` means
    "almost nothing left", not "the lowest of this window"."""
    values = [float(v) for v in points if v is not None and math.isfinite(float(v))]
    if not values or width <= 0:
        return ""
    n = len(values)
    if n == 1:
        columns = values * width
    elif n >= width:
        columns = []
        for i in range(width):
            a = i * n // width
            b = max(a + 1, (i + 1) * n // width)
            chunk = values[a:b]
            columns.append(sum(chunk) / len(chunk))
    else:
        columns = []
        for i in range(width):
            pos = i * (n - 1) / (width - 1) if width > 1 else 0.0
            k = min(int(pos), n - 2)
            frac = pos - k
            columns.append(values[k] + (values[k + 1] - values[k]) * frac)
    lo = min(0.0, min(columns))
    hi = max(columns)
    if hi <= lo:
        return _BLOCKS[0] * width
    steps = len(_BLOCKS) - 1
    return "".join(_BLOCKS[min(steps, max(0, round((v - lo) / (hi - lo) * steps)))] for v in columns)
