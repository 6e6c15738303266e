"""Schedules: what adapters see of them (``ScheduleView``, ``ScheduleManager``) and their errors.

The dispatcher and the store that implement ``ScheduleManager`` live in ``bot.scheduler`` and
``bot.store``; adapters depend only on this module's shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from datetime import timezone as _utc_tz
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from .errors import UserError, shown


class ScheduleError(UserError):
    """A bad ``when`` or schedule item; ``user_message`` is one line with an example. ``echo``: what
    the user typed, as the sentence quotes it (``'echo'``), for adapters to show safely (``bot.errors.echo_parts``)."""

    code = "schedule"

    def __init__(self, user_message: str, *, echo: str | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.echo = echo


@dataclass(frozen=True)
class ScheduleView:
    id: int
    platform: str  # "discord" | "slack"
    channel: str  # platform channel id
    when: str  # as given: "0 9 * * 1-5" or "every 6h"
    timezone: str  # IANA name the cron expression is read in
    source: str  # "config" (QUOTA_SCHEDULES) or "chat"
    next_runs: tuple[datetime, ...]  # the next three runs, aware, in the schedule's timezone
    failing: str | None = None  # reason of the last failed post; None when healthy


class ScheduleManager(Protocol):
    async def add(self, platform: str, channel: str, when: str, *, created_by: str = "") -> ScheduleView:
        """Store and arm a chat schedule; raises ``ScheduleError`` for a bad ``when``."""

    async def list(self, platform: str) -> list[ScheduleView]:
        """Every schedule of that platform, by id."""

    async def remove(self, platform: str, schedule_id: int) -> bool:
        """Remove a schedule of that platform; False when there is no such id there."""

# --- parsing and next-run maths -------------------------------------------------------------------


PLATFORMS = ("discord", "slack")  # where QUOTA_SCHEDULES and QUOTA_ALERTS items post
CHAT_PLATFORMS = PLATFORMS + ("console",)  # where chat commands add schedules and alerts (the console's post there)
EXAMPLE = "e.g. 0 9 * * 1-5 (weekdays at 9:00) or every 6h"
_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*([a-z]+)$")
_EVERY_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "mins": 60,
                "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
                "d": 86400, "day": 86400, "days": 86400}
UTC = _utc_tz.utc


@dataclass(frozen=True)
class When:
    """A parsed ``when``: a 5-field cron expression (read in the schedule's timezone) or ``every N``."""

    text: str
    cron: str | None = None
    every: float | None = None  # seconds
    # seconds: a stored schedule that fires more often than QUOTA_SCHEDULE_MIN_EVERY runs at most this
    # often (``at_least``); None: as written
    floor: float | None = None

    @property
    def min_gap(self) -> float:
        """The shortest time in seconds between two of its runs: ``every``'s N; for cron, the shortest
        gap between consecutive runs on the wall clock (``*/5 9 * * *``: 300)."""
        return self.every if self.every is not None else _cron_min_gap(self.cron or "")

    def at_least(self, minimum: float) -> "When":
        """This schedule, run at most every ``minimum`` seconds: itself when it never fires more often.
        ``every N`` below it becomes ``every minimum`` from the same anchor; a cron expression keeps the
        first of its runs in each ``minimum``-long slot of the epoch that is at least ``minimum`` after the
        previous slot's first run. Both depend only on the time (and the anchor), so every replica and
        every restart computes the same due times: each run is still claimed exactly once."""
        if self.min_gap >= minimum:
            return self if self.floor is None else replace(self, floor=None)
        return replace(self, floor=float(minimum))

    def next_after(self, after: datetime, tz: ZoneInfo, anchor: datetime) -> datetime:
        """The first run strictly after ``after`` (aware, UTC). ``every`` counts from ``anchor``, so due
        times are the same across restarts; cron follows the wall clock of ``tz`` across DST changes."""
        if self.every is not None:
            step = max(self.every, self.floor or 0.0)
            elapsed = (after - anchor).total_seconds()
            steps = math.floor(elapsed / step) + 1 if elapsed >= 0 else 0
            due = anchor + timedelta(seconds=steps * step)
            if due <= after:  # float rounding at an exact boundary
                due += timedelta(seconds=step)
            return due.astimezone(UTC)
        assert self.cron is not None
        if self.floor is not None:
            return _floored_cron_next(self.cron, tz, after.astimezone(UTC), self.floor)
        return _cron_next(self.cron, tz, after.astimezone(UTC))

    def next_runs(self, after: datetime, tz: ZoneInfo, anchor: datetime, count: int = 3) -> tuple[datetime, ...]:
        runs: list[datetime] = []
        moment = after
        for _ in range(count):
            moment = self.next_after(moment, tz, anchor)
            runs.append(moment.astimezone(tz))
        return tuple(runs)

    def last_at_or_before(self, moment: datetime, tz: ZoneInfo, anchor: datetime, since: datetime) -> datetime | None:
        """The latest run in (since, moment], or None: what a restart may have missed."""
        if self.every is not None:
            if moment < anchor:
                return None
            step = max(self.every, self.floor or 0.0)
            steps = math.floor((moment - anchor).total_seconds() / step)
            due = (anchor + timedelta(seconds=steps * step)).astimezone(UTC)
            return due if due > since else None
        latest = None
        probe = since
        for _ in range(100_000):  # bounded: at most that many runs between since and moment
            nxt = self.next_after(probe, tz, anchor)
            if nxt > moment:
                break
            latest = probe = nxt
        return latest


@lru_cache(maxsize=4096)
def _cron_next(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    """Cached: many schedules sharing an expression (e.g. "0 9 * * 1-5") are re-armed at the same moment."""
    return next(iter(CronSim(expr, after.astimezone(tz)))).astimezone(UTC)


_TICK = timedelta(microseconds=1)


def _floored_cron_next(expr: str, tz: ZoneInfo, after: datetime, floor: float) -> datetime:
    """The next run after ``after`` of ``expr`` run at most every ``floor`` seconds (``When.at_least``):
    the epoch is cut in ``floor``-long slots; a slot's first run is kept when the previous slot had none
    or its first run is at least ``floor`` earlier. So kept runs are at least ``floor`` apart (a kept
    run's predecessor is the previous slot's first run or earlier), and whether a run is kept depends
    on nothing but the time."""
    def first_in(slot: int) -> datetime:  # the first run at or after the slot's start
        return _cron_next(expr, tz, datetime.fromtimestamp(slot * floor, UTC) - _TICK)

    slot = math.floor(after.timestamp() / floor)
    candidate = first_in(slot)
    for _ in range(100_000):  # bounded; each turn moves on by at least one slot
        at = candidate.timestamp()
        if at >= (slot + 1) * floor:  # nothing in this slot: go to the slot of the next run
            slot = math.floor(at / floor)
            candidate = first_in(slot)
            continue
        if candidate > after:
            previous = first_in(slot - 1).timestamp()
            if previous >= slot * floor or at - previous >= floor:
                return candidate
        slot += 1
        candidate = first_in(slot)
    return candidate  # not reached for a cron expression: its runs repeat within a few years


@lru_cache(maxsize=1024)
def _cron_min_gap(expr: str) -> float:
    """The shortest gap in seconds between consecutive runs of a 5-field cron expression, on the wall
    clock (a DST change aside): the shortest gap between its times of day on one day, or across
    midnight when two consecutive days match (e.g. ``0 0,23 * * *``: 1 h). Bounded: one day of times
    (1440 at most) and the matching days of eight years (a leap day included), at most 3000 of them."""
    minute, hour, day, month, weekday = expr.split(" ")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    times: list[float] = []
    for moment in CronSim(f"{minute} {hour} * * *", start - _TICK):
        if moment >= start + timedelta(days=1):
            break
        times.append((moment - start).total_seconds())
    if not times:
        return math.inf
    gaps = [b - a for a, b in zip(times, times[1:])]
    days_apart = math.inf
    previous: datetime | None = None
    for count, moment in enumerate(CronSim(f"0 0 {day} {month} {weekday}", start - _TICK)):
        if previous is not None:
            days_apart = min(days_apart, (moment - previous).days)
        if days_apart <= 1 or count >= 3000 or moment >= start + timedelta(days=8 * 366):
            break
        previous = moment
    if days_apart != math.inf:  # the last run of a day to the first of the next matching day
        gaps.append(days_apart * 86400 - times[-1] + times[0])
    return min(gaps, default=math.inf)


def span(seconds: float) -> str:
    """A duration as sentences say it: ``15 min``, ``1 s``, ``6 h``, ``1 d``, ``90 s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


DEFAULT_MIN_EVERY = 900.0  # QUOTA_SCHEDULE_MIN_EVERY's default: 15 min


def refuse_below(when: When, minimum: float | None) -> None:
    """``ScheduleError`` (one line naming the minimum) when ``when`` fires more often than ``minimum``
    seconds (QUOTA_SCHEDULE_MIN_EVERY); None: no minimum."""
    if minimum is None:
        return
    gap = when.min_gap
    if gap < minimum:
        echo = shown(when.text)
        how = f"fires every {span(gap)}" if when.every is not None else f"fires as often as every {span(gap)}"
        raise ScheduleError(f"Schedules may fire at most every {span(minimum)} (QUOTA_SCHEDULE_MIN_EVERY); "
                            f"'{echo}' {how}.", echo=echo)


def parse_when(text: str) -> When:
    """``every 6h`` / ``every 30m`` / ``every 3s`` / ``every 1d``, or a 5-field cron expression."""
    raw = " ".join(str(text).split())
    if not raw:
        raise ScheduleError(f"Say when to post, {EXAMPLE}.")
    echo = shown(raw)
    lowered = raw.lower()
    if lowered.startswith("every"):
        match = _EVERY.match(lowered)
        if not match or match.group(2) not in _EVERY_UNITS:
            raise ScheduleError(f"'{echo}' is not understood: write every N with a unit s, m, h or d, {EXAMPLE}.",
                                echo=echo)
        seconds = float(match.group(1)) * _EVERY_UNITS[match.group(2)]
        if seconds < 1:
            raise ScheduleError(f"'{echo}': every needs a positive number of at least one second, e.g. every 6h.",
                                echo=echo)
        return When(raw, every=seconds)
    fields = raw.split(" ")
    if len(fields) != 5:
        raise ScheduleError(f"'{echo}' is not a 5-field cron expression (minute hour day month weekday), {EXAMPLE}.",
                            echo=echo)
    try:
        CronSim(raw, datetime.now(UTC))
    except CronSimError as exc:
        raise ScheduleError(f"'{echo}' is not a valid cron expression ({str(exc).lower()}), {EXAMPLE}.",
                            echo=echo) from None
    return When(raw, cron=raw)


@dataclass(frozen=True)
class ConfigItem:
    platform: str
    channel: str
    when: When


def parse_config(value: str, min_every: float | None = None) -> list[ConfigItem]:
    """``QUOTA_SCHEDULES``: ``platform:channel=when`` items separated by ``;``. With ``min_every``
    (QUOTA_SCHEDULE_MIN_EVERY, seconds) an item that fires more often is refused."""
    items: list[ConfigItem] = []
    for raw in (value or "").split(";"):
        item = raw.strip()
        if not item:
            continue

        def bad(reason: str) -> ScheduleError:
            return ScheduleError(f"QUOTA_SCHEDULES: item '{item}': {reason}")  # noqa: B023 - used in this iteration only

        target, sep, when = item.partition("=")
        platform, colon, channel = target.partition(":")
        platform, channel = platform.strip().lower(), channel.strip()
        if not sep or not colon:
            raise bad("write it as platform:channel=when, e.g. slack:C0123ABC=every 6h")
        if platform not in PLATFORMS:
            raise bad(f"platform must be discord or slack, not '{platform}'")
        if not channel or any(ch.isspace() for ch in channel):
            raise bad("the channel id is missing or has spaces")
        if platform == "discord" and not channel.isdigit():
            raise bad("a Discord channel id is a number, e.g. discord:123456789012345678=0 9 * * 1-5")
        try:
            parsed = parse_when(when)
            refuse_below(parsed, min_every)
        except ScheduleError as exc:
            raise bad(exc.user_message[:1].lower() + exc.user_message[1:] if exc.user_message.startswith("Schedules")
                      else exc.user_message) from None
        items.append(ConfigItem(platform, channel, parsed))
    return items
