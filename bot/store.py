"""The store: schedules, claimed runs and every reading, in SQLite through aiosqlite.

The schema is versioned with ``PRAGMA user_version`` and migrated step by step, so a file written by
an older quota-bot is upgraded in place. A file that is not a database, is damaged, was written by a
newer quota-bot or cannot be written stops start-up with one line naming it; it is never recreated.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Iterable

import aiosqlite

from .report import QuotaReport

log = logging.getLogger(__name__)

MIGRATIONS: list[str] = [
    # 1: schedules, runs (claims), readings
    """
    CREATE TABLE schedules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        when_text TEXT NOT NULL,
        timezone TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('config', 'chat')),
        anchor REAL NOT NULL,
        created_by TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        failing TEXT
    );
    CREATE INDEX schedules_platform ON schedules (platform);
    CREATE TABLE runs (
        schedule_id INTEGER NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        due REAL NOT NULL,
        claimed_at REAL NOT NULL,
        posted_at REAL,
        result TEXT,
        PRIMARY KEY (schedule_id, due)
    );
    CREATE TABLE readings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        read_at REAL NOT NULL,
        remaining REAL,
        total REAL,
        percent REAL,
        unit TEXT,
        job_mode TEXT,
        plan TEXT,
        renewal REAL,
        simulated INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX readings_read_at ON readings (read_at);
    """,
    # 2: readings carry the account they are of (QUOTA_ACCOUNTS_FILE); rows written before are the
    # single account's, which is called "default"
    """
    ALTER TABLE readings ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX readings_account_read_at ON readings (account, read_at);
    """,
    # 3: low-quota alerts; state armed → pending (claimed, its message stored) → fired → armed again
    """
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        condition TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('config', 'chat')),
        created_by TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'armed' CHECK (state IN ('armed', 'pending', 'fired')),
        fired_at REAL,
        fired_renewal REAL,
        message TEXT,
        failing TEXT
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The database cannot be used; ``str()`` is one line naming the file and why."""


@dataclass(frozen=True)
class ScheduleRow:
    id: int
    platform: str
    channel: str
    when_text: str
    timezone: str
    source: str
    anchor: float
    created_by: str
    created_at: float
    failing: str | None


@dataclass(frozen=True)
class AlertRow:
    id: int
    platform: str
    channel: str
    account: str  # '' = the pool of every account
    condition: str
    source: str
    created_by: str
    created_at: float
    state: str  # armed | pending | fired
    fired_at: float | None
    fired_renewal: float | None
    message: str | None
    failing: str | None


class Store:
    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: str) -> "Store":
        shown = os.path.abspath(path)
        if os.path.isdir(path):
            raise StoreError(f"DATABASE_URL: {shown} is a directory, not a database file")
        folder = os.path.dirname(shown)
        if not os.path.isdir(folder):
            raise StoreError(f"DATABASE_URL: the folder {folder} does not exist")
        exists = os.path.exists(path)
        if exists and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"DATABASE_URL: {shown} cannot be read and written by this user")
        if not exists and not os.access(folder, os.W_OK):
            raise StoreError(f"DATABASE_URL: cannot create {shown}: the folder is not writable")
        if exists and os.path.getsize(path) > 0:
            with open(path, "rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"DATABASE_URL: {shown} is not a SQLite database; it was left untouched "
                                     "(move it away or point DATABASE_URL elsewhere)")
        try:
            db = await aiosqlite.connect(path)
        except sqlite3.Error as exc:
            raise StoreError(f"DATABASE_URL: cannot open {shown}: {exc}") from None
        store = cls(db, path)
        try:
            await store._prepare(shown)
        except BaseException:
            await db.close()
            raise
        return store

    async def _prepare(self, shown: str) -> None:
        try:
            check = await (await self._db.execute("PRAGMA quick_check")).fetchone()
            if not check or check[0] != "ok":
                raise StoreError(f"DATABASE_URL: {shown} is damaged ({check[0] if check else 'no answer'}); "
                                 "it was left untouched")
            version = (await (await self._db.execute("PRAGMA user_version")).fetchone())[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"DATABASE_URL: {shown} was written by a newer quota-bot (schema {version}, "
                                 f"this one knows {SCHEMA_VERSION})")
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                await self._db.executescript(f"BEGIN; {MIGRATIONS[number - 1]} PRAGMA user_version = {number}; COMMIT;")
                log.info("database %s migrated to schema %d", shown, number)
        except sqlite3.DatabaseError as exc:
            reason = "not a database" if "not a database" in str(exc) else str(exc)
            raise StoreError(f"DATABASE_URL: {shown} cannot be used ({reason}); it was left untouched") from None

    def describe(self) -> str:
        """Which store and where, for `quota-bot check` and /healthz (never a password)."""
        return f"SQLite {os.path.abspath(self.path)}"

    async def close(self) -> None:
        await self._db.close()

    # --- readings -------------------------------------------------------------------------------
    async def record_reading(self, report: QuotaReport, account: str = "default") -> None:
        unit = (report.remaining or report.total).unit if (report.remaining or report.total) else None
        await self._db.execute(
            "INSERT INTO readings (read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated,"
            " account) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (report.read_at.timestamp(), report.remaining.value if report.remaining else None,
             report.total.value if report.total else None, report.percent, unit, report.job_mode, report.plan,
             report.renewal.timestamp() if report.renewal else None, int(report.simulated), account))
        await self._db.commit()

    async def readings(self, limit: int = 100, account: str | None = None) -> list[dict]:
        where, args = ("WHERE account = ?", (account,)) if account is not None else ("", ())
        cursor = await self._db.execute(
            "SELECT read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated, account FROM readings "
            f"{where} ORDER BY read_at DESC, id DESC LIMIT ?", (*args, limit))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in await cursor.fetchall()]

    async def history(self, account: str, since: float, simulated: bool) -> list[tuple[float, float, float | None, float | None]]:
        """(read_at, remaining hours, total hours, renewal) of one account since ``since``, oldest first;
        simulated readings and real ones never mix. Minutes are converted to hours."""
        cursor = await self._db.execute(
            "SELECT read_at, remaining, total, unit, renewal FROM readings WHERE account = ? AND simulated = ?"
            " AND read_at >= ? AND remaining IS NOT NULL ORDER BY read_at, id", (account, int(simulated), since))
        rows = []
        for read_at, remaining, total, unit, renewal in await cursor.fetchall():
            scale = 1 / 60 if unit == "minutes" else 1.0
            rows.append((read_at, remaining * scale, None if total is None else total * scale, renewal))
        return rows

    async def latest_reading_at(self, account: str) -> float | None:
        cursor = await self._db.execute("SELECT MAX(read_at) FROM readings WHERE account = ?", (account,))
        row = await cursor.fetchone()
        return row[0] if row else None

    async def has_readings(self, account: str, simulated: bool) -> bool:
        cursor = await self._db.execute("SELECT 1 FROM readings WHERE account = ? AND simulated = ? LIMIT 1",
                                        (account, int(simulated)))
        return await cursor.fetchone() is not None

    async def record_history(self, account: str, rows: Iterable[tuple[float, float, float, float | None]],
                             simulated: bool) -> None:
        """Many (read_at, remaining h, total h, renewal) readings at once (the demo's past)."""
        await self._db.executemany(
            "INSERT INTO readings (read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated, account)"
            " VALUES (?, ?, ?, ?, 'hours', 'Fast', 'Standard', ?, ?, ?)",
            [(at, rem, tot, round(rem / tot * 100, 2) if tot else None, ren, int(simulated), account)
             for at, rem, tot, ren in rows])
        await self._db.commit()

    async def prune_readings(self, before: float) -> int:
        cursor = await self._db.execute("DELETE FROM readings WHERE read_at < ?", (before,))
        await self._db.commit()
        return cursor.rowcount

    # --- alerts ---------------------------------------------------------------------------------
    _ALERT_COLUMNS = ("id, platform, channel, account, condition, source, created_by, created_at, state, fired_at,"
                      " fired_renewal, message, failing")

    async def alerts(self, platform: str | None = None) -> list[AlertRow]:
        query, args = f"SELECT {self._ALERT_COLUMNS} FROM alerts", ()
        if platform is not None:
            query, args = query + " WHERE platform = ?", (platform,)
        cursor = await self._db.execute(query + " ORDER BY id", args)
        return [AlertRow(*row) for row in await cursor.fetchall()]

    async def add_alerts(self, rows: list[tuple[str, str, str, str, str, str]]) -> list[AlertRow]:
        """(platform, channel, account, condition, source, created_by) each; returns the stored rows."""
        now, added = time.time(), []
        for platform, channel, account, condition, source, created_by in rows:
            cursor = await self._db.execute(
                "INSERT INTO alerts (platform, channel, account, condition, source, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", (platform, channel, account, condition, source, created_by, now))
            added.append(AlertRow(cursor.lastrowid or 0, platform, channel, account, condition, source, created_by,
                                  now, "armed", None, None, None, None))
        await self._db.commit()
        return added

    async def remove_alert(self, alert_id: int, platform: str | None = None) -> bool:
        query, args = "DELETE FROM alerts WHERE id = ?", (alert_id,)
        if platform is not None:
            query, args = query + " AND platform = ?", (alert_id, platform)
        cursor = await self._db.execute(query, args)
        await self._db.commit()
        return cursor.rowcount > 0

    async def claim_alerts(self, claims: list[tuple[int, float, float | None, str]]) -> set[int]:
        """(id, fired_at, renewal, message): armed → pending in one transaction; returns the ids this call
        claimed (another process, or an earlier run, may have claimed one first)."""
        claimed: set[int] = set()
        try:
            for alert_id, at, renewal, message in claims:
                cursor = await self._db.execute(
                    "UPDATE alerts SET state = 'pending', fired_at = ?, fired_renewal = ?, message = ?"
                    " WHERE id = ? AND state = 'armed'", (at, renewal, message, alert_id))
                if cursor.rowcount:
                    claimed.add(alert_id)
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise
        return claimed

    async def alerts_posted(self, results: list[tuple[int, str | None]]) -> None:
        """(id, failing reason or None): pending → fired, with the reason a post did not go out."""
        await self._db.executemany("UPDATE alerts SET state = 'fired', failing = ? WHERE id = ? AND state = 'pending'",
                                   [(reason, alert_id) for alert_id, reason in results])
        await self._db.commit()

    async def rearm_alerts(self, ids: list[int]) -> None:
        await self._db.executemany("UPDATE alerts SET state = 'armed', message = NULL WHERE id = ? AND state = 'fired'",
                                   [(i,) for i in ids])
        await self._db.commit()

    # --- schedules ------------------------------------------------------------------------------
    async def add_schedule(self, platform: str, channel: str, when_text: str, timezone: str, source: str,
                           anchor: float, created_by: str = "") -> ScheduleRow:
        now = time.time()
        cursor = await self._db.execute(
            "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (platform, channel, when_text, timezone, source, anchor, created_by, now))
        await self._db.commit()
        return ScheduleRow(cursor.lastrowid or 0, platform, channel, when_text, timezone, source, anchor, created_by, now, None)

    async def add_schedules(self, rows: list[tuple[str, str, str, str, str, float]]) -> None:
        """Many (platform, channel, when_text, timezone, source, anchor) at once, in one transaction."""
        now = time.time()
        await self._db.executemany(
            "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", [(*row, now) for row in rows])
        await self._db.commit()

    async def schedules(self, platform: str | None = None) -> list[ScheduleRow]:
        query = "SELECT id, platform, channel, when_text, timezone, source, anchor, created_by, created_at, failing FROM schedules"
        args: tuple = ()
        if platform is not None:
            query, args = query + " WHERE platform = ?", (platform,)
        cursor = await self._db.execute(query + " ORDER BY id", args)
        return [ScheduleRow(*row) for row in await cursor.fetchall()]

    async def remove_schedule(self, schedule_id: int, platform: str | None = None) -> bool:
        query, args = "DELETE FROM schedules WHERE id = ?", (schedule_id,)
        if platform is not None:
            query, args = query + " AND platform = ?", (schedule_id, platform)
        cursor = await self._db.execute(query, args)
        await self._db.commit()
        return cursor.rowcount > 0

    async def set_timezone(self, schedule_id: int, timezone: str) -> None:
        await self._db.execute("UPDATE schedules SET timezone = ? WHERE id = ?", (timezone, schedule_id))
        await self._db.commit()

    async def set_failing(self, schedule_id: int, reason: str | None) -> None:
        await self._db.execute("UPDATE schedules SET failing = ? WHERE id = ?", (reason, schedule_id))
        await self._db.commit()

    # --- runs: claimed before they are posted ---------------------------------------------------
    async def claim(self, runs: Iterable[tuple[int, float]]) -> set[tuple[int, float]]:
        """Claim (schedule id, due) runs in one transaction; returns those this call claimed (a run
        claimed before, e.g. by a process that then crashed, is never claimed again)."""
        wanted = list(runs)
        token = f"claim-{time.time_ns()}-{id(wanted)}"
        try:  # sqlite3 opens one transaction at the first INSERT; commit ends it
            await self._db.executemany(
                "INSERT OR IGNORE INTO runs (schedule_id, due, claimed_at, result) SELECT ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM schedules WHERE id = ?)",
                [(sid, due, time.time(), token, sid) for sid, due in wanted])
            cursor = await self._db.execute("SELECT schedule_id, due FROM runs WHERE result = ?", (token,))
            claimed = {(sid, due) for sid, due in await cursor.fetchall()}
            await self._db.execute("UPDATE runs SET result = 'claimed' WHERE result = ?", (token,))
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise
        return claimed

    async def finish(self, results: Iterable[tuple[int, float, str]]) -> None:
        await self._db.executemany("UPDATE runs SET posted_at = ?, result = ? WHERE schedule_id = ? AND due = ?",
                                   [(time.time(), result, sid, due) for sid, due, result in results])
        await self._db.commit()

    async def last_claimed(self) -> dict[int, float]:
        cursor = await self._db.execute("SELECT schedule_id, MAX(due) FROM runs GROUP BY schedule_id")
        return {sid: due for sid, due in await cursor.fetchall()}

    async def runs(self, schedule_id: int) -> list[tuple[float, float | None, str | None]]:
        cursor = await self._db.execute("SELECT due, posted_at, result FROM runs WHERE schedule_id = ? ORDER BY due",
                                        (schedule_id,))
        return list(await cursor.fetchall())


async def open_store(url: str) -> Store:
    """The store of ``DATABASE_URL``: ``sqlite:///path`` (the embedded default)."""
    if url.startswith("sqlite:///"):
        return await Store.open(url[len("sqlite:///"):])
    raise StoreError(f"DATABASE_URL: unsupported database URL scheme {url.split(':', 1)[0]!r}")
