"""Pure forecast maths: how fast the fast time goes, and whether it lasts to the renewal.

No I/O here. ``forecast`` turns the stored readings of one account into a ``Forecast``; ``combine``
pools the forecasts of several accounts; ``pace_line`` says a forecast in one line. How a forecast is
made (cleaning, cycles, the endpoint pace, the projection): docs/architecture.md, "Forecast".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Sequence

DAY = 86400.0
HOUR = 3600.0
CLOCK_SKEW = 300.0          # readings this far after `now` are still accepted (seconds)
REFILL_RISE = 0.05          # a rise in remaining above this (hours) is a refill
RENEWAL_MOVE = DAY          # an announced renewal moving forward more than this starts a new cycle
MIN_SPAN = HOUR             # the readings of a cycle must span at least this (seconds)
NOT_ENOUGH_REASON = "not enough history yet: needs 2 readings at least 1 h apart in this cycle"
NO_ACCOUNT_REASON = "not enough history yet: no account has 2 readings at least 1 h apart in this cycle"
OUT_OF_RANGE_REASON = "readings out of range: cannot compute a pace"


@dataclass(frozen=True)
class Sample:
    at: float                       # Unix seconds the provider read Midjourney
    remaining: float                # hours left
    total: float | None = None      # hours in the plan (None when unknown)
    renewal: float | None = None    # Unix seconds of the next renewal as that reading said (None when unknown)


@dataclass(frozen=True)
class Forecast:
    enough: bool                   # False: not enough history (then the numbers below are None)
    reason: str | None             # why not enough (or, from `combine`, a note on left-out accounts)
    pace_per_day: float | None     # hours spent per day (>= 0) over the window
    window_days: float | None      # the span the pace was measured over
    remaining: float | None        # hours left at the latest reading
    runs_out_at: float | None      # Unix seconds; None when pace is 0 (never at this pace) or unknown
    renewal: float | None          # the next renewal (from the latest reading that gave one), or None
    lasts_to_renewal: bool | None  # None when renewal or runs_out_at unknown; True when pace is 0
    spare_at_renewal: float | None # hours left at the renewal at this pace (when it lasts)
    short_by_days: float | None    # days between running out and the renewal (when it does not last)
    cycle_start: float | None      # Unix seconds the current cycle (since the last renewal or refill) began


def _not_enough(reason: str = NOT_ENOUGH_REASON) -> Forecast:
    return Forecast(False, reason, None, None, None, None, None, None, None, None, None)


def _number(value: object) -> float | None:
    """A finite, non-negative float, or None (for garbage)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)  # type: ignore[arg-type]  # anything: what float() refuses is caught below
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) and x >= 0 else None


def _clean(samples: Sequence[Sample], now: float) -> list[Sample]:
    try:
        limit = float(now) + CLOCK_SKEW
    except (TypeError, ValueError, OverflowError):
        limit = math.nan
    by_time: dict[float, Sample] = {}
    for s in samples:
        at = _number(getattr(s, "at", None))
        remaining = _number(getattr(s, "remaining", None))
        if at is None or remaining is None:
            continue
        if not math.isnan(limit) and at > limit:
            continue
        total = _number(getattr(s, "total", None))
        renewal = _number(getattr(s, "renewal", None))
        by_time.pop(at, None)  # identical times: the last one given wins
        by_time[at] = Sample(at, remaining, total, renewal)
    return sorted(by_time.values(), key=lambda s: s.at)


def _current_cycle(ordered: list[Sample]) -> tuple[list[Sample], float | None]:
    """The readings since the last renewal or refill, and when that cycle began."""
    start = 0
    cycle_start = ordered[0].at if ordered else None
    announced: float | None = None
    for i, s in enumerate(ordered):
        own = s.renewal if s.renewal is not None and s.renewal > s.at else None
        passed = False
        if i > 0:
            prev = ordered[i - 1]
            passed = announced is not None and s.at >= announced
            moved = announced is not None and own is not None and own > announced + RENEWAL_MOVE
            refill = s.remaining > prev.remaining + REFILL_RISE
            if passed or moved or refill:
                start = i
                cycle_start = max(announced, prev.at) if passed and announced is not None else s.at
        if own is not None:
            announced = own
        elif passed:
            announced = None  # that renewal is behind us; the next one is not known yet
    return ordered[start:], cycle_start


def forecast(samples: Sequence[Sample], now: float, *, window_days: float = 7.0) -> Forecast:
    """The forecast of one account from its readings (any order); see the module docstring."""
    if not (isinstance(window_days, (int, float)) and math.isfinite(window_days) and window_days > 0):
        raise ValueError(f"window_days must be a positive number, not {window_days!r}")
    ordered = _clean(samples, now)
    if not ordered:
        return _not_enough()
    cycle, cycle_start = _current_cycle(ordered)
    latest = cycle[-1]
    if len(cycle) < 2 or latest.at - cycle[0].at < MIN_SPAN:
        return _not_enough()

    window_from = latest.at - window_days * DAY
    first_index = next(i for i, s in enumerate(cycle) if s.at >= window_from)
    if latest.at - cycle[first_index].at < MIN_SPAN:
        # A gap: nothing in the window is 1 h before the latest. Use the newest reading before it.
        first_index = max(i for i, s in enumerate(cycle) if latest.at - s.at >= MIN_SPAN)
    first = cycle[first_index]
    span_days = (latest.at - first.at) / DAY
    pace = max(0.0, (first.remaining - latest.remaining) / span_days)
    if not (math.isfinite(pace) and math.isfinite(span_days)):
        return _not_enough(OUT_OF_RANGE_REASON)

    renewal = next((s.renewal for s in reversed(ordered) if s.renewal is not None), None)
    if renewal is not None and renewal <= latest.at:
        renewal = None  # already behind the latest reading: the next one is not known
    runs_out_at, lasts, spare, short = _project(latest.at, latest.remaining, pace, renewal)
    return Forecast(
        enough=True, reason=None, pace_per_day=pace, window_days=span_days,
        remaining=latest.remaining, runs_out_at=runs_out_at, renewal=renewal,
        lasts_to_renewal=lasts, spare_at_renewal=spare, short_by_days=short, cycle_start=cycle_start)


def _project(at: float, remaining: float, pace: float, renewal: float | None
             ) -> tuple[float | None, bool | None, float | None, float | None]:
    """runs_out_at, lasts_to_renewal, spare_at_renewal, short_by_days from `at` on."""
    runs_out_at: float | None = None
    if pace > 0:
        runs_out_at = at + remaining / pace * DAY
        if not math.isfinite(runs_out_at):
            runs_out_at = None  # beyond any representable time: never, in practice
    if renewal is None:
        return runs_out_at, None, None, None
    if runs_out_at is None:
        return None, True, remaining, None
    if runs_out_at >= renewal:
        days_to_renewal = max(0.0, renewal - at) / DAY
        return runs_out_at, True, max(0.0, remaining - pace * days_to_renewal), None
    return runs_out_at, False, None, (renewal - runs_out_at) / DAY


def combine(forecasts: Sequence[Forecast], now: float) -> Forecast:
    """The pool of several accounts, projected from `now` (all accounts are read together).

    Only accounts with enough history take part: one without cannot say its pace, and its
    remaining is unknown too, so it is left out entirely (neither its hours nor its use are
    counted) and ``reason`` notes how many were left out. The pool is enough when at least one
    account is. pace = sum of paces; remaining = sum; renewal = the earliest known renewal;
    window_days = the shortest window; cycle_start = the latest cycle start (the span over which
    every pooled account's cycle is running). runs_out/lasts/spare/short as in ``forecast``.
    """
    usable = [f for f in forecasts if f.enough and f.pace_per_day is not None and f.remaining is not None]
    if not usable:
        return _not_enough(NO_ACCOUNT_REASON)
    left_out = len(forecasts) - len(usable)
    reason = None
    if left_out:
        reason = f"{left_out} account{'s' if left_out != 1 else ''} without enough history left out"
    pace = sum(f.pace_per_day for f in usable if f.pace_per_day is not None)  # all of them: see ``usable``
    remaining = sum(f.remaining for f in usable if f.remaining is not None)
    if not (math.isfinite(pace) and math.isfinite(remaining)):
        return _not_enough(OUT_OF_RANGE_REASON)
    renewals = [f.renewal for f in usable if f.renewal is not None]
    renewal = min(renewals) if renewals else None
    windows = [f.window_days for f in usable if f.window_days is not None]
    starts = [f.cycle_start for f in usable if f.cycle_start is not None]
    try:
        at = float(now)
    except (TypeError, ValueError, OverflowError):
        at = math.nan
    runs_out_at: float | None
    lasts: bool | None
    spare: float | None
    short: float | None
    if not math.isfinite(at):
        runs_out_at, lasts, spare, short = None, None, None, None
        if pace == 0:
            lasts = True if renewal is not None else None
            spare = remaining if renewal is not None else None
    else:
        runs_out_at, lasts, spare, short = _project(at, remaining, pace, renewal)
    return Forecast(
        enough=True, reason=reason, pace_per_day=pace, window_days=min(windows) if windows else None,
        remaining=remaining, runs_out_at=runs_out_at, renewal=renewal, lasts_to_renewal=lasts,
        spare_at_renewal=spare, short_by_days=short, cycle_start=max(starts) if starts else None)


# ---- the line ---------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date(ts: float | None, tz: tzinfo) -> str | None:
    """"Dec 3" in `tz` (no locale), or None when it cannot be shown."""
    if ts is None:
        return None
    try:
        d = datetime.fromtimestamp(ts, tz)
    except (OverflowError, OSError, ValueError):
        return None
    return f"{_MONTHS[d.month - 1]} {d.day}"


def _round(x: float) -> int:
    """Half up (2.5 -> 3), not Python's half-to-even."""
    return math.floor(x + 0.5)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _span(days: float) -> str:
    """A duration: "6 days", "1 day", "5 hours" (under a day), "under an hour"."""
    if not math.isfinite(days):
        return "many days"
    if days >= 1:
        return _plural(max(1, _round(days)), "day")
    hours = _round(days * 24)
    return _plural(hours, "hour") if hours >= 1 else "under an hour"


def _pace(pace: float) -> str:
    if pace >= 0.095:
        return f"{pace:.1f}"
    if pace >= 0.005:
        return f"{pace:.2f}"
    return "under 0.01"


def _hours(value: float) -> str:
    if value >= 1:
        return f"{_round(value)}" if math.isfinite(value) else "many"
    return f"{value:.1f}"


def pace_line(f: Forecast, tz: tzinfo = timezone.utc) -> str:
    """One line saying the forecast, e.g.
    "Using 1.9 h/day (7 days) → runs out in about 6 days (Dec 3), 5 days before renewal"."""
    if not f.enough or f.pace_per_day is None or f.remaining is None:
        return "Not enough history yet for a forecast (needs 2 readings at least 1 h apart)"
    window = f" ({_span(f.window_days)})" if f.window_days is not None else ""
    renewal_date = _date(f.renewal, tz)
    on_renewal = f"the renewal on {renewal_date}" if renewal_date else "the renewal"

    if f.pace_per_day <= 0 or f.runs_out_at is None:
        head = ("Not using fast time lately" if f.pace_per_day <= 0
                else f"Using {_pace(f.pace_per_day)} h/day")
        if f.renewal is None:
            return f"{head}{window} → does not run out at this pace"
        tail = f"{head}{window} → lasts to {on_renewal}"
        if f.pace_per_day > 0 and f.spare_at_renewal is not None:
            tail += _spare(f.spare_at_renewal)
        return tail

    head = f"Using {_pace(f.pace_per_day)} h/day{window}"
    if f.lasts_to_renewal:
        return f"{head} → lasts to {on_renewal}{_spare(f.spare_at_renewal)}"

    days_left = f.remaining / f.pace_per_day
    if f.remaining <= 0:
        out = "already out of fast time"
    elif days_left < 1:
        hours = _round(days_left * 24)
        out = f"runs out in about {_plural(hours, 'hour')}" if hours >= 1 else "runs out within the hour"
    else:
        out = f"runs out in about {_span(days_left)}"
    out_date = _date(f.runs_out_at, tz)
    if out_date and f.remaining > 0:
        out += f" ({out_date})"
    if f.short_by_days is not None:
        out += f", {_span(f.short_by_days)} before renewal" if f.short_by_days * 24 >= 0.5 else ", just before renewal"
    return f"{head} → {out}"


def _spare(spare: float | None) -> str:
    if spare is None:
        return ""
    if spare < 0.05:
        return " with almost nothing to spare"
    return f" with about {_hours(spare)} h to spare"
