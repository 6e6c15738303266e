"""Schedules: what adapters see of them (``ScheduleView``, ``ScheduleManager``) and their errors.

The dispatcher and the store that implement ``ScheduleManager`` live in ``bot.scheduler`` and
``bot.store``; adapters depend only on this module's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ScheduleError(Exception):
    """A bad ``when`` or schedule item; ``user_message`` is one line with an example."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


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
