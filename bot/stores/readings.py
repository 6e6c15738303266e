"""The store's readings and history: every reading kept whole (so another replica can rebuild the report)
and the history the charts and forecasts are drawn from. Written once for both databases (``sql``)."""

from __future__ import annotations

import time
from typing import Any, Iterable, Protocol

from ..report import QuotaReport
from .common import REPORT_COLUMNS, WriteHealth, reading_values, report_from_row, tracks_write
from .sql import Database

READING_COLUMNS = ("read_at", "remaining", "total", "percent", "unit", "job_mode", "plan", "renewal", "simulated",
                   "account")


class ReadingStore(Protocol):
    """The store's readings (``bot.history``, ``bot.replicas.SharedReadings``)."""

    async def record_reading(self, report: QuotaReport, account: str = "default") -> None: ...
    async def readings(self, limit: int = 100, account: str | None = None) -> list[dict[str, Any]]: ...
    async def latest_report(self, account: str, simulated: bool, max_age: float) -> QuotaReport | None: ...
    async def history(self, account: str, since: float, simulated: bool) -> list[tuple[float, float, float | None, float | None]]: ...
    async def latest_reading_at(self, account: str, simulated: bool | None = None) -> float | None: ...
    async def has_readings(self, account: str, simulated: bool) -> bool: ...
    async def record_history(self, account: str, rows: Iterable[tuple[float, float, float, float | None]], simulated: bool) -> None: ...
    async def prune_readings(self, before: float) -> int: ...


class Readings:
    """``bot.history`` and ``bot.replicas.SharedReadings`` read and write through these."""

    db: Database
    writes: WriteHealth

    @tracks_write
    async def record_reading(self, report: QuotaReport, account: str = "default") -> None:
        values = reading_values(report)
        await self.db.execute(f"INSERT INTO readings ({REPORT_COLUMNS}, account) VALUES ({', '.join('?' * 15)})",
                              *values.values(), account)

    async def readings(self, limit: int = 100, account: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE account = ?", (account,)) if account is not None else ("", ())
        rows = await self.db.fetch(
            "SELECT read_at, remaining, total, percent, unit, job_mode, plan, renewal,"
            f" CAST(simulated AS INTEGER) AS simulated, account FROM readings {where}"
            " ORDER BY read_at DESC, id DESC LIMIT ?", *args, limit)
        return [dict(zip(READING_COLUMNS, row)) for row in rows]

    async def latest_report(self, account: str, simulated: bool, max_age: float) -> QuotaReport | None:
        """The newest whole reading of ``account`` read less than ``max_age`` seconds ago, as the report
        it was (readings stored before schema 4, and the demo's past, have no fields: never returned)."""
        row = await self.db.fetchrow(
            f"SELECT {REPORT_COLUMNS} FROM readings WHERE account = ? AND simulated = ? AND read_at > ?"
            " AND fields IS NOT NULL ORDER BY read_at DESC, id DESC LIMIT 1",
            account, bool(simulated), time.time() - max_age)
        return None if row is None else report_from_row(row)

    async def history(self, account: str, since: float, simulated: bool) -> list[tuple[float, float, float | None, float | None]]:
        """(read_at, remaining hours, total hours, renewal) of one account since ``since``, oldest first;
        simulated readings and real ones never mix. Minutes are converted to hours."""
        rows = await self.db.fetch(
            "SELECT read_at, remaining, total, unit, renewal FROM readings WHERE account = ? AND simulated = ?"
            " AND read_at >= ? AND remaining IS NOT NULL ORDER BY read_at, id", account, bool(simulated), since)
        out = []
        for read_at, remaining, total, unit, renewal in rows:
            scale = 1 / 60 if unit == "minutes" else 1.0
            out.append((read_at, remaining * scale, None if total is None else total * scale, renewal))
        return out

    async def latest_reading_at(self, account: str, simulated: bool | None = None) -> float | None:
        """When the newest reading of ``account`` was taken (only simulated ones, or only real ones, when
        ``simulated`` is given); None when there is none."""
        if simulated is None:
            at = await self.db.fetchval("SELECT MAX(read_at) FROM readings WHERE account = ?", account)
        else:
            at = await self.db.fetchval("SELECT MAX(read_at) FROM readings WHERE account = ? AND simulated = ?",
                                        account, bool(simulated))
        return None if at is None else float(at)

    async def has_readings(self, account: str, simulated: bool) -> bool:
        return await self.db.fetchrow("SELECT 1 FROM readings WHERE account = ? AND simulated = ? LIMIT 1",
                                      account, bool(simulated)) is not None

    @tracks_write
    async def record_history(self, account: str, rows: Iterable[tuple[float, float, float, float | None]],
                             simulated: bool) -> None:
        """Many (read_at, remaining h, total h, renewal) readings at once (the demo's past)."""
        await self.db.executemany(
            "INSERT INTO readings (read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated,"
            " account) VALUES (?, ?, ?, ?, 'hours', 'Fast', 'Standard', ?, ?, ?)",
            [(at, rem, tot, round(rem / tot * 100, 2) if tot else None, ren, bool(simulated), account)
             for at, rem, tot, ren in rows])

    @tracks_write
    async def prune_readings(self, before: float) -> int:
        return await self.db.execute("DELETE FROM readings WHERE read_at < ?", before)
