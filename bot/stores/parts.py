"""The store assembled from its parts: what every backend's store is, beyond its connection, its schema
version and its coordination."""

from __future__ import annotations

from typing import Protocol

from .alerts import Alerts, AlertStore
from .common import WriteHealth
from .coordination import ReplicaStore, Revision
from .modes import ModeStore, ModeSwitches
from .readings import Readings, ReadingStore
from .schedules import Schedules, ScheduleStore
from .sql import Database
from .timings import JobTimings, TimingStore


class StoreInterface(ReadingStore, TimingStore, AlertStore, ScheduleStore, ReplicaStore, ModeStore, Protocol):
    """What every store answers (the SQLite ``Store`` and ``PostgresStore``): its parts, and itself."""

    def describe(self) -> str: ...
    async def close(self) -> None: ...
    async def healthy(self) -> str | None: ...
    def write_problem(self) -> str | None: ...


class _RolledBack(Exception):
    """Ends can_write's transaction with a rollback."""


class StoreParts(Readings, JobTimings, Schedules, Alerts, ModeSwitches, Revision):
    """Readings and history, job timings, schedules and runs, alerts, mode switches and the revision, on
    ``self.db``; a backend adds opening, ``describe``, ``healthy``, ``close`` and its coordination."""

    db: Database
    writes: WriteHealth

    def describe(self) -> str:
        raise NotImplementedError

    def write_problem(self) -> str | None:
        """One line while the latest write failed (a read-only or full disk, a revoked permission), else None."""
        return self.writes.problem

    async def can_write(self) -> str | None:
        """None when this store may write its tables (a change made and rolled back); else one line why (a
        read-only file or login, a read replica)."""
        try:
            async with self.db.transaction() as tx:
                await tx.execute("UPDATE counters SET value = value WHERE name = 'revision'")
                raise _RolledBack()
        except _RolledBack:
            return None
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return f"cannot write to {self.describe()}: {self._why(exc)}"

    def _why(self, exc: BaseException) -> str:
        """Why, in a few words, on one line (never a password)."""
        return (" ".join(str(exc).split()) or type(exc).__name__)[:200]
