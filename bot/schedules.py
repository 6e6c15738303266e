"""Schedules: what adapters see of them (``ScheduleView``, ``ScheduleManager``) and their errors.

The dispatcher and the store that implement ``ScheduleManager`` live in ``bot.scheduler`` and
``bot.store``; adapters depend only on this module's shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta, timezone as _utc_tz
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

    def next_after(self, after: datetime, tz: ZoneInfo, anchor: datetime) -> datetime:
        """The first run strictly after ``after`` (aware, UTC). ``every`` counts from ``anchor``, so due
        times are the same across restarts; cron follows the wall clock of ``tz`` across DST changes."""
        if self.every is not None:
            elapsed = (after - anchor).total_seconds()
            steps = math.floor(elapsed / self.every) + 1 if elapsed >= 0 else 0
            due = anchor + timedelta(seconds=steps * self.every)
            if due <= after:  # float rounding at an exact boundary
                due += timedelta(seconds=self.every)
            return due.astimezone(UTC)
        assert self.cron is not None
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
            steps = math.floor((moment - anchor).total_seconds() / self.every)
            due = (anchor + timedelta(seconds=steps * self.every)).astimezone(UTC)
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


def parse_config(value: str) -> list[ConfigItem]:
    """``QUOTA_SCHEDULES``: ``platform:channel=when`` items separated by ``;``."""
    items: list[ConfigItem] = []
    for raw in (value or "").split(";"):
        item = raw.strip()
        if not item:
            continue

        def bad(reason: str) -> ScheduleError:
            return ScheduleError(f"QUOTA_SCHEDULES: item '{item}': {reason}")

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
        except ScheduleError as exc:
            raise bad(exc.user_message) from None
        items.append(ConfigItem(platform, channel, parsed))
    return items
