"""History and forecast: every reading stored, the forecast on each answer, background readings,
retention, the demo account's past, and the data behind the chart.

``History.annotate`` puts the forecast on a reading once per new reading; the sampler reads every
``QUOTA_SAMPLE_EVERY`` through the service; readings older than ``QUOTA_HISTORY_DAYS`` are pruned daily.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, cast

from .errors import QuotaError
from .forecast import Forecast, Sample, combine, forecast, pace_line
from .report import Answered, PoolReport, QuotaReport, forecast_json
from .simulator import demo_history
from .tasks import stop_tasks

if TYPE_CHECKING:
    from .accounts import QuotaPool
    from .scheduler import Clock
    from .service import QuotaService
    from .stores.alerts import AlertStore
    from .stores.readings import ReadingStore


    class HistoryStore(ReadingStore, AlertStore, Protocol):
        """The store's parts the history uses: the readings, and the alerts (their lines on the chart)."""

log = logging.getLogger(__name__)

WINDOW_DAYS = 7.0
CYCLE_LOOKBACK_DAYS = 45.0  # enough to find the current cycle's start (a cycle is about a month)
PRUNE_EVERY = 86400.0


@dataclass(frozen=True)
class HistoryData:
    """What a history answer shows: the series (per account, hours), the forecast and its line, figures,
    and the alert lines (label, hours) that apply to the plotted series."""

    days: int
    start: float
    now: float
    series: dict[str, list[tuple[float, float]]]  # account → (Unix s, hours left)
    renewals: list[float]
    forecast: Forecast
    pace: str
    simulated: bool  # a plotted series is simulated (or, with nothing plotted, every account is)
    thresholds: tuple[tuple[str, float], ...] = ()  # the alerts that apply, as (label, hours) lines
    simulated_accounts: tuple[str, ...] = ()  # the plotted accounts that are simulated

    @property
    def several(self) -> bool:
        """Every account and the pool (not one account)."""
        return len(self.series) >= 2

    @property
    def left_out(self) -> tuple[str, ...]:
        """The accounts with no reading in the window: not in the pool's line nor its figures."""
        return tuple(name for name, points in self.series.items() if not points) if self.several else ()

    @property
    def pooled(self) -> list[tuple[float, float]]:
        """The pool's sum over time, over the accounts that have readings: at each reading, the sum of
        each such account's latest value (once each of them has a value)."""
        if not self.several:
            return []
        counted = [name for name, points in self.series.items() if points]
        events = sorted((t, name, v) for name in counted for t, v in self.series[name])
        latest: dict[str, float] = {}
        out: list[tuple[float, float]] = []
        for i, (t, name, v) in enumerate(events):
            latest[name] = v
            if len(latest) == len(counted) and (i + 1 == len(events) or events[i + 1][0] != t):
                out.append((t, round(sum(latest.values()), 4)))  # once per moment, after all its readings
        return out

    def figures(self) -> dict[str, Any]:
        """min, max (of the pool when several accounts are shown), spend (the sum of the falls, refills and
        renewals not counted) over the days."""
        shown = [self.pooled] if self.several else list(self.series.values())
        values = [v for points in shown for _, v in points]
        spent = 0.0
        for points in self.series.values():
            spent += sum(max(0.0, a[1] - b[1]) for a, b in zip(points, points[1:]))
        return {"min": min(values) if values else None, "max": max(values) if values else None,
                "spent": round(spent, 2), "readings": sum(len(p) for p in self.series.values())}

    def to_json(self) -> dict[str, Any]:
        doc = {"days": self.days, "start": int(self.start), "now": int(self.now), "simulated": self.simulated,
               "pace": self.pace, **forecast_json(self.forecast, None), **{f"{k}": v for k, v in self.figures().items()},
               "series": {name: [[int(t), v] for t, v in points] for name, points in self.series.items()},
               "alerts": [{"label": label, "hours": hours} for label, hours in self.thresholds]}
        if self.several:
            doc["pool"] = [[int(t), v] for t, v in self.pooled]
            doc["left_out"] = list(self.left_out)
        return doc


class History:
    def __init__(self, store: HistoryStore, accounts: QuotaPool | Mapping[str, QuotaService], *,
                 sample_every: float | None = None, keep_days: float = 400.0,
                 tz: tzinfo = timezone.utc, clock: Clock | None = None,
                 configured_alerts: Sequence[tuple[str, str]] | None = None) -> None:
        from .scheduler import SystemClock

        self.store = store
        # every account's service by name (a QuotaPool's ``services``, or the mapping itself): the history
        # is built before the pool, whose answers it annotates
        self.services = cast("Mapping[str, QuotaService]", getattr(accounts, "services", accounts))
        # QUOTA_ALERTS as (account, condition) pairs: with them, the chart's alert lines are these and the
        # alerts added from chat (stored configured rows may be stale); without, every stored alert
        self.configured_alerts = None if configured_alerts is None else tuple(configured_alerts)
        self.sample_every = sample_every
        self.keep_days = keep_days
        self.tz = tz
        self.clock = clock or SystemClock()
        self._memo: dict[str, tuple[float, bool, Forecast]] = {}
        self._annotated: dict[str, tuple[int, QuotaReport]] = {}
        self._computing: dict[str, asyncio.Future[Forecast]] = {}  # account → (id of the reading, annotated reading)
        self._tasks: list[asyncio.Task[None]] = []
        self.samples_taken = 0

    # --- forecasts -------------------------------------------------------------------------------
    def _simulated(self, account: str) -> bool:
        return bool(self.services[account].simulated)

    async def samples(self, account: str, since: float) -> list[Sample]:
        rows = await self.store.history(account, since, self._simulated(account))
        return [Sample(at, rem, tot, ren) for at, rem, tot, ren in rows]

    async def forecast(self, account: str) -> Forecast:
        """The account's forecast; a burst of callers for the same new reading shares one computation."""
        running = self._computing.get(account)
        if running is None:
            running = asyncio.ensure_future(self._forecast(account))
            self._computing[account] = running
            running.add_done_callback(lambda _: self._computing.pop(account, None))
        return await asyncio.shield(running)

    async def _forecast(self, account: str) -> Forecast:
        now = self.clock.now().timestamp()
        latest = await self.store.latest_reading_at(account) or 0.0
        memo = self._memo.get(account)
        simulated = self._simulated(account)
        if memo is not None and memo[0] == latest and memo[1] == simulated and now - latest < 3600:
            return memo[2]
        result = forecast(await self.samples(account, now - CYCLE_LOOKBACK_DAYS * 86400), now,
                          window_days=WINDOW_DAYS)
        self._memo[account] = (latest, simulated, result)
        return result

    async def pooled_forecast(self, accounts: list[str] | None = None) -> Forecast:
        names = accounts or list(self.services)
        parts = await asyncio.gather(*(self.forecast(n) for n in names))
        return parts[0] if len(parts) == 1 else combine(parts, self.clock.now().timestamp())

    async def annotate(self, outcome: Answered, account: str | None = None) -> Answered:
        """The reading with its forecast (``forecast``) and the pace line (``pace``); never fails."""
        try:
            if isinstance(outcome, PoolReport):
                names = [a.name for a in outcome.answered]
                if not names:
                    return outcome
                f = await self.pooled_forecast(names)
                return dataclasses.replace(outcome, forecast=f, pace=pace_line(f, self.tz))
            if isinstance(outcome, QuotaReport):
                name = account or next(iter(self.services))
                done = self._annotated.get(name)
                if done is not None and done[0] == id(outcome):  # the same cached reading: same answer
                    return done[1]
                f = await self.forecast(name)
                annotated = dataclasses.replace(outcome, forecast=f, pace=pace_line(f, self.tz))
                self._annotated[name] = (id(outcome), annotated)
                return annotated
        except Exception:
            log.exception("the forecast could not be computed; the reading is shown without it")
        return outcome

    async def data(self, days: int, account: str | None = None) -> HistoryData:
        """The series of the last ``days`` days (an account, or every account and the pool)."""
        now = self.clock.now().timestamp()
        start = now - days * 86400
        names = [account] if account else list(self.services)
        series: dict[str, list[tuple[float, float]]] = {}
        totals: dict[str, float | None] = {}
        renewals: set[float] = set()
        for name in names:
            samples = await self.samples(name, start)
            series[name] = [(s.at, s.remaining) for s in samples]
            totals[name] = samples[-1].total if samples else None
            renewals.update(s.renewal for s in samples if s.renewal is not None and start <= s.renewal <= now + 45 * 86400)
        f = await (self.forecast(names[0]) if len(names) == 1 else self.pooled_forecast(names))
        if f.renewal is not None:
            renewals.add(f.renewal)
        plotted = [n for n in names if series[n]]
        simulated_accounts = tuple(n for n in plotted if self._simulated(n))
        simulated = bool(simulated_accounts) if plotted else all(self._simulated(n) for n in names)
        lines = await self._alert_lines(series, totals, whole_pool=len(names) == len(self.services))
        return HistoryData(days, start, now, series, sorted(renewals), f, pace_line(f, self.tz), simulated, lines,
                           simulated_accounts)

    async def _alert_lines(self, series: dict[str, list[tuple[float, float]]], totals: dict[str, float | None],
                           whole_pool: bool) -> tuple[tuple[str, float], ...]:
        """The alerts that apply to the plotted series as (label, hours): an account's alerts when it is
        plotted (it has readings), the pool's ('' in QUOTA_ALERTS) when the pool is (or when the one account
        shown is the whole pool); a percentage is converted with the total of what it watches, ``runout``
        has no line. Never fails: without the alerts the chart is drawn without them."""
        from .alerts import AlertError, parse_condition

        try:
            stored = await self.store.alerts()
        except Exception:
            log.exception("the alerts could not be read; the chart is drawn without their lines")
            return ()
        if self.configured_alerts is None:
            pairs = [(row.account, row.condition) for row in stored]
        else:
            pairs = [*self.configured_alerts, *((row.account, row.condition) for row in stored if row.source != "config")]
        several = len(series) >= 2
        counted = [name for name, points in series.items() if points]
        lines: dict[tuple[str, float], str] = {}
        for account, text in dict.fromkeys(pairs):
            try:
                condition = parse_condition(text)
            except AlertError:
                continue
            if account:
                if account not in counted:
                    continue  # not shown (another account, or no readings)
                total, prefix = totals[account], f"{account} " if several else ""
            elif several:
                if not counted:
                    continue
                known = [totals[n] for n in counted]
                total = None if any(t is None for t in known) else sum(t for t in known if t is not None)
                prefix = "pool "
            elif whole_pool and counted:
                total, prefix = totals[counted[0]], ""
            else:
                continue  # one account of several is shown: the pool's alerts are about the others too
            hours = condition.threshold(total)
            if hours is None or not math.isfinite(hours):
                continue
            label = prefix + ("alert" if condition.kind == "hours" else f"alert {condition.label}")
            lines.setdefault((prefix, round(hours, 2)), label)  # one line where two alerts would draw the same
        return tuple(sorted(((label, hours) for (_, hours), label in lines.items()), key=lambda x: (-x[1], x[0])))

    # --- background work --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.seed_demo()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._prune_loop(), name="history-prune"))
        if self.sample_every:
            self._tasks.append(loop.create_task(self._sample_loop(), name="history-sampler"))
            log.info("background readings every %s", _span(self.sample_every))

    def ensure_sampling(self, every: float) -> None:
        """Alerts need readings: turn background readings on at ``every`` when they are off."""
        if self.sample_every:
            return
        self.sample_every = every
        self._tasks.append(asyncio.get_running_loop().create_task(self._sample_loop(), name="history-sampler"))
        log.info("alerts are set and QUOTA_SAMPLE_EVERY is off: background readings every %s", _span(every))

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks.clear()

    async def seed_demo(self) -> None:
        """A simulated account gets a plausible 30-day past, written once and labelled simulated."""
        now = time.time()
        for name, service in self.services.items():
            if service.simulated and not await self.store.has_readings(name, True):
                rows = demo_history(now)
                await self.store.record_history(name, rows, simulated=True)
                log.info("account %s: wrote %d simulated readings of the last 30 days (the demo's past)", name, len(rows))

    async def sample_once(self) -> float:
        """Read every account whose newest reading is older than the interval; returns the seconds until
        the next one is due."""
        assert self.sample_every
        now = self.clock.now().timestamp()
        due_in = self.sample_every
        for name, service in self.services.items():
            latest = await self.store.latest_reading_at(name, service.simulated)  # the demo's past does not count
            age = now - latest if latest is not None else float("inf")
            if age < self.sample_every:
                due_in = min(due_in, self.sample_every - age)
                continue
            try:
                await service.get_report()
                self.samples_taken += 1
                log.info("background reading of account %s taken", name)
            except Exception as exc:  # noqa: BLE001 - logged; the next one comes on the rhythm
                log.warning("background reading of account %s failed: %s", name, getattr(exc, "user_message", exc))
        return max(1.0, due_in)

    async def _sample_loop(self) -> None:
        while True:
            try:
                wait = await self.sample_once()
            except Exception:
                log.exception("background readings: unexpected error")
                wait = self.sample_every or 3600
            await self.clock.sleep(wait)

    async def _prune_loop(self) -> None:
        while True:
            try:
                removed = await self.store.prune_readings(time.time() - self.keep_days * 86400)
                if removed:
                    log.info("pruned %d reading(s) older than %g days (QUOTA_HISTORY_DAYS)", removed, self.keep_days)
            except Exception:
                log.exception("pruning old readings failed")
            await self.clock.sleep(PRUNE_EVERY)


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


def local_date(moment: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(moment, tz).strftime("%b %-d")


def chart_spec(data: HistoryData, thresholds: Sequence[tuple[str, float]] | None = None, title: str | None = None,
               tz: tzinfo = timezone.utc) -> Any:
    """The chart of ``data``: a line per account with readings, the pool thicker (the sum of those), renewals,
    the projection dashed from the latest reading (the pool's when several accounts are shown) to zero or to
    the renewal (whichever comes first), the alert lines faint (``data.thresholds`` unless given)."""
    from .chart import ChartSeries, ChartSpec

    single = not data.several
    series = [ChartSeries("" if single else name, points) for name, points in data.series.items()
              if points or single]
    pooled = data.pooled
    if pooled:
        series.append(ChartSeries("pool", pooled, pool=True))
    projection = None
    f = data.forecast
    last = pooled if data.several else next(iter(data.series.values()), [])
    if f.enough and last and f.pace_per_day:
        t0, h0 = last[-1]
        end = f.runs_out_at if f.runs_out_at is not None else t0 + 30 * 86400
        if f.renewal is not None and f.renewal < end:
            end = f.renewal
        if end <= t0:  # the forecast's run-out is behind the pool's latest reading: a short stub, not backwards
            end = t0 + 3600
        projection = ((t0, h0), (end, max(0.0, h0 - f.pace_per_day * (end - t0) / 86400)))
    label = title or ("Midjourney fast time left" + ("" if single else " (all accounts)"))
    partly = data.simulated_accounts if 0 < len(data.simulated_accounts) < sum(1 for p in data.series.values() if p) else ()
    return ChartSpec(series=series, start=data.start, now=data.now, renewals=data.renewals, projection=projection,
                     thresholds=tuple(data.thresholds if thresholds is None else thresholds), title=label,
                     simulated=data.simulated, tz=tz, simulated_names=partly, note=left_out_note(data))


def left_out_note(data: HistoryData) -> str:
    """``pool without gamma (no readings in 30 days)``, or ``""``."""
    if not data.left_out or len(data.left_out) == len(data.series):
        return ""
    return f"pool without {', '.join(data.left_out)} (no readings in {data.days} days)"


def summary_line(data: HistoryData) -> str:
    """``Lowest 2.1 h, highest 15 h; 9.4 h spent in 30 days (360 readings)``, or why there is nothing; the
    accounts left out of the pool and, when only some are, the simulated ones are named."""
    figures = data.figures()
    if not figures["readings"]:
        return f"No readings in the last {data.days} days yet."
    line = (f"Lowest {_hours(figures['min'])}, highest {_hours(figures['max'])}; {_hours(figures['spent'])} spent "
            f"in {data.days} days ({figures['readings']} readings)")
    if data.left_out:
        line += (f"; {', '.join(data.left_out)} left out of the pool (no readings in {data.days} days)")
    plotted = sum(1 for points in data.series.values() if points)
    if 0 < len(data.simulated_accounts) < plotted:
        line += f"; simulated: {', '.join(data.simulated_accounts)}"
    return line


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} h".replace(".0 h", " h")


class NoHistory(QuotaError):
    code = "no_history"
    user_message = "History is not available on this bot (no database)."


async def history_chart(history: History | None, names: Sequence[str], days: int,
                        account: str | None) -> tuple[HistoryData, bytes]:
    """What every history command answers: the data and its chart (drawn off the loop). Raises the
    typed errors every chat turns into its one line: no history, or an unknown account. ``names``: the
    accounts a command may choose from (none without an accounts file)."""
    from .chart import render_png_async
    from .errors import UnknownAccount

    if history is None:
        raise NoHistory("no store")
    names = tuple(names)
    if account is not None and account not in names:
        raise UnknownAccount(account, names)
    data = await history.data(days, account)
    return data, await render_png_async(chart_spec(data, tz=history.tz))
