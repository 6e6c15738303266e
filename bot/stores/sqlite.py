"""The SQLite store (the embedded default): schedules, claimed runs, readings and alerts, through aiosqlite.

The schema is versioned with ``PRAGMA user_version`` and migrated step by step; a file that cannot be
used stops start-up with one line and is never recreated. One process owns the file, so locks and
notifications are in-process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

import aiosqlite

from ..report import QuotaReport
from .common import (KEEP_JOB_DURATIONS, MODE_SWITCH_COLUMNS, REPORT_COLUMNS, AlertRow, Listener, LockHandle,
                     ModeSwitchRow, ScheduleRow, StoreError, WriteHealth, check_notification, deliver, reading_values,
                     report_from_row, tracks_write)

log = logging.getLogger("bot.store")

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
    # 4: readings keep the whole report (the /info fields as a JSON list of [name, value] in upstream
    # order, and what parse_result adds), so latest_report() rebuilds what another replica read;
    # rows written before have no fields and are never rebuilt
    """
    ALTER TABLE readings ADD COLUMN fields TEXT;
    ALTER TABLE readings ADD COLUMN plan_status TEXT;
    ALTER TABLE readings ADD COLUMN message_id TEXT;
    ALTER TABLE readings ADD COLUMN responded_at REAL;
    ALTER TABLE readings ADD COLUMN total_derived INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: counters; 'revision' is bumped with every schedule or alert added or removed
    """
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('revision', 0);
    """,
    # 6: how long each provider's readings took, per account (learned timing)
    """
    CREATE TABLE job_durations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        provider TEXT NOT NULL,
        seconds REAL NOT NULL,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX job_durations_account_provider ON job_durations (account, provider, id);
    """,
    # 7: a claimed run names its owner (the scheduler that claimed it: a run whose owner stopped before
    # posting it is delivered by another, bot.scheduler); result 'posting' while its post is being sent;
    # a QUOTA_SCHEDULES item is stored once, whatever the replicas starting together do (duplicates that
    # an older version let in are dropped, the oldest kept)
    """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    CREATE INDEX runs_unfinished ON runs (result) WHERE result IN ('claimed', 'posting');
    DELETE FROM schedules WHERE source = 'config' AND id NOT IN
        (SELECT MIN(id) FROM schedules WHERE source = 'config' GROUP BY platform, channel, when_text);
    CREATE UNIQUE INDEX schedules_config_item ON schedules (platform, channel, when_text) WHERE source = 'config';
    """,
    # 8: every switch of an account's speed mode (from chat or by an alert), whatever came of it
    """
    CREATE TABLE mode_switches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        account TEXT NOT NULL,
        platform TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL DEFAULT '',
        who TEXT NOT NULL DEFAULT '',
        cause TEXT NOT NULL CHECK (cause IN ('person', 'alert')),
        from_mode TEXT,
        to_mode TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX mode_switches_account_at ON mode_switches (account, at);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# how long one statement waits for another process's lock (SQLite's busy timeout), and how long opening the
# file keeps trying when SQLite gives up at once instead (two processes racing to switch a new file to WAL)
BUSY_TIMEOUT = 5.0
OPEN_LOCKED_FOR = 15.0

# in-process replica primitives, shared by the stores of one file: (real path, name) → …
_LOCKS: dict[tuple[str, str], LockHandle] = {}
_LISTENERS: dict[tuple[str, str], list[tuple[Listener, Callable[[str], Any]]]] = {}


async def _user_version(db: aiosqlite.Connection) -> int:
    row = await (await db.execute("PRAGMA user_version")).fetchone()
    assert row is not None  # the pragma always answers one row
    return int(row[0])


class Store:
    """The SQLite store. ``Store.open(path)``, or ``bot.store.open_store("sqlite:///path")``."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path
        self._key = os.path.realpath(path)
        self._write = asyncio.Lock()  # one transaction at a time on the one connection
        self._locks: list[LockHandle] = []
        self._listeners: list[Listener] = []
        self._closed = False
        self.writes = WriteHealth()

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
            db = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT)
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
        # Two processes opening a new file at the same moment race to switch it to WAL, and SQLite answers
        # the loser "database is locked" at once, without waiting out its busy timeout (it would deadlock
        # otherwise). Every step below is safe to repeat, so a lock met while opening is waited out here.
        deadline = time.monotonic() + OPEN_LOCKED_FOR
        while True:
            try:
                return await self._prepare_once(shown)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise StoreError(f"DATABASE_URL: {shown} cannot be used ({exc}); it was left untouched") \
                        from None
                log.debug("database %s is locked by another process while opening; trying again", shown)
                await asyncio.sleep(random.uniform(0.01, 0.1))

    async def _prepare_once(self, shown: str) -> None:
        try:
            check = await (await self._db.execute("PRAGMA quick_check")).fetchone()
            if not check or check[0] != "ok":
                raise StoreError(f"DATABASE_URL: {shown} is damaged ({check[0] if check else 'no answer'}); "
                                 "it was left untouched")
            version = await _user_version(self._db)
            if version > SCHEMA_VERSION:
                raise StoreError(f"DATABASE_URL: {shown} was written by a newer quota-bot (schema {version}, "
                                 f"this one knows {SCHEMA_VERSION})")
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                # BEGIN IMMEDIATE: a second process opening the file at the same moment waits here, then
                # finds the step done (user_version is read again inside the transaction)
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    now = await _user_version(self._db)
                    if now < number:
                        for statement in _statements(MIGRATIONS[number - 1]):
                            await self._db.execute(statement)
                        await self._db.execute(f"PRAGMA user_version = {number}")
                    await self._db.commit()
                except BaseException:
                    await self._db.rollback()
                    raise
                if now < number:
                    log.info("database %s migrated to schema %d", shown, number)
        except sqlite3.OperationalError:
            raise  # _prepare waits out a lock, and words the others
        except sqlite3.DatabaseError as exc:
            reason = "not a database" if "not a database" in str(exc) else str(exc)
            raise StoreError(f"DATABASE_URL: {shown} cannot be used ({reason}); it was left untouched") from None

    def describe(self) -> str:
        """Which store and where, for `quota-bot check` and /healthz (never a password)."""
        return f"SQLite {os.path.abspath(self.path)}"

    def __repr__(self) -> str:
        return f"<Store {self.describe()}>"

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in list(self._locks):
            await handle.release()
        for listener in list(self._listeners):
            await listener.close()
        await self._db.close()

    async def healthy(self) -> str | None:
        """None when the database answers; else one line why (for /healthz "degraded")."""
        shown = os.path.abspath(self.path)
        if self._closed:
            return f"the SQLite database {shown} is closed"
        if not os.path.exists(self.path):
            return f"the SQLite database {shown} was removed from the disk"
        try:
            await asyncio.wait_for(self._db.execute("SELECT 1"), 5.0)
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return f"the SQLite database {shown} does not answer ({_one_line(exc)})"
        return None

    async def can_write(self) -> str | None:
        """None when the file can be written (a change made and rolled back); else one line why."""
        async with self._write:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                await self._db.execute("UPDATE counters SET value = value WHERE name = 'revision'")
            except Exception as exc:  # noqa: BLE001 - any failure is the answer
                return f"cannot write to the SQLite database {os.path.abspath(self.path)}: {_one_line(exc)}"
            finally:
                if self._db.in_transaction:
                    await self._db.rollback()
        return None

    def write_problem(self) -> str | None:
        """One line while the latest write failed (a read-only or full disk), else None."""
        return self.writes.problem

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (sqlite3 opens it at the first write; commit ends it)."""
        async with self._write:
            try:
                yield self._db
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise

    async def _bump(self) -> None:
        await self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'revision'")

    async def revision(self) -> int:
        """A counter bumped with every schedule or alert added or removed (in the same transaction)."""
        row = await (await self._db.execute("SELECT value FROM counters WHERE name = 'revision'")).fetchone()
        return int(row[0]) if row else 0

    # --- readings -------------------------------------------------------------------------------
    @tracks_write
    async def record_reading(self, report: QuotaReport, account: str = "default") -> None:
        values = reading_values(report)
        values["simulated"], values["total_derived"] = int(values["simulated"]), int(values["total_derived"])
        async with self._tx() as db:
            await db.execute(f"INSERT INTO readings ({REPORT_COLUMNS}, account) VALUES ({', '.join('?' * 15)})",
                             (*values.values(), account))

    async def readings(self, limit: int = 100, account: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE account = ?", (account,)) if account is not None else ("", ())
        cursor = await self._db.execute(
            "SELECT read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated, account FROM readings "
            f"{where} ORDER BY read_at DESC, id DESC LIMIT ?", (*args, limit))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in await cursor.fetchall()]

    async def latest_report(self, account: str, simulated: bool, max_age: float) -> QuotaReport | None:
        """The newest whole reading of ``account`` read less than ``max_age`` seconds ago, as the report
        it was (readings stored before schema 4, and the demo's past, have no fields: never returned)."""
        cursor = await self._db.execute(
            f"SELECT {REPORT_COLUMNS} FROM readings WHERE account = ? AND simulated = ? AND read_at > ?"
            " AND fields IS NOT NULL ORDER BY read_at DESC, id DESC LIMIT 1",
            (account, int(simulated), time.time() - max_age))
        row = await cursor.fetchone()
        return None if row is None else report_from_row(row)

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

    async def latest_reading_at(self, account: str, simulated: bool | None = None) -> float | None:
        """When the newest reading of ``account`` was taken (only simulated ones, or only real ones, when
        ``simulated`` is given); None when there is none."""
        if simulated is None:
            cursor = await self._db.execute("SELECT MAX(read_at) FROM readings WHERE account = ?", (account,))
        else:
            cursor = await self._db.execute("SELECT MAX(read_at) FROM readings WHERE account = ? AND simulated = ?",
                                            (account, int(simulated)))
        row = await cursor.fetchone()
        return row[0] if row else None

    async def has_readings(self, account: str, simulated: bool) -> bool:
        cursor = await self._db.execute("SELECT 1 FROM readings WHERE account = ? AND simulated = ? LIMIT 1",
                                        (account, int(simulated)))
        return await cursor.fetchone() is not None

    @tracks_write
    async def record_history(self, account: str, rows: Iterable[tuple[float, float, float, float | None]],
                             simulated: bool) -> None:
        """Many (read_at, remaining h, total h, renewal) readings at once (the demo's past)."""
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO readings (read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated,"
                " account) VALUES (?, ?, ?, ?, 'hours', 'Fast', 'Standard', ?, ?, ?)",
                [(at, rem, tot, round(rem / tot * 100, 2) if tot else None, ren, int(simulated), account)
                 for at, rem, tot, ren in rows])

    @tracks_write
    async def prune_readings(self, before: float) -> int:
        async with self._tx() as db:
            cursor = await db.execute("DELETE FROM readings WHERE read_at < ?", (before,))
        return cursor.rowcount

    @tracks_write
    async def record_job_duration(self, account: str, provider: str, seconds: float) -> None:
        """How long one reading of ``account`` through ``provider`` took (the newest 500 are kept)."""
        async with self._tx() as db:
            await db.execute("INSERT INTO job_durations (account, provider, seconds, recorded_at) VALUES (?, ?, ?, ?)",
                             (account, provider, float(seconds), time.time()))
            await db.execute(
                "DELETE FROM job_durations WHERE account = ? AND provider = ? AND id <= (SELECT id FROM job_durations"
                " WHERE account = ? AND provider = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (account, provider, account, provider, KEEP_JOB_DURATIONS))

    async def job_durations(self, account: str, provider: str, limit: int = 200) -> list[float]:
        """The seconds of the newest ``limit`` readings of ``account`` through ``provider``, newest first."""
        cursor = await self._db.execute(
            "SELECT seconds FROM job_durations WHERE account = ? AND provider = ? ORDER BY id DESC LIMIT ?",
            (account, provider, limit))
        return [row[0] for row in await cursor.fetchall()]

    # --- speed-mode switches ---------------------------------------------------------------------
    @tracks_write
    async def record_mode_switch(self, at: float, account: str, platform: str, channel: str, who: str, cause: str,
                                 from_mode: str | None, to_mode: str, outcome: str, detail: str) -> ModeSwitchRow:
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO mode_switches (at, account, platform, channel, who, cause, from_mode, to_mode, outcome,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (at, account, platform, channel, who, cause, from_mode, to_mode, outcome, detail))
        return ModeSwitchRow(int(cursor.lastrowid or 0), at, account, platform, channel, who, cause, from_mode, to_mode,
                             outcome, detail)

    async def mode_switches(self, limit: int = 10, account: str | None = None) -> list[ModeSwitchRow]:
        """The newest ``limit`` switches (of ``account``, or of every account), newest first."""
        where, args = ("WHERE account = ?", (account,)) if account is not None else ("", ())
        cursor = await self._db.execute(f"SELECT {MODE_SWITCH_COLUMNS} FROM mode_switches {where}"
                                        " ORDER BY at DESC, id DESC LIMIT ?", (*args, limit))
        return [ModeSwitchRow(*row) for row in await cursor.fetchall()]

    # --- alerts ---------------------------------------------------------------------------------
    _ALERT_COLUMNS = ("id, platform, channel, account, condition, source, created_by, created_at, state, fired_at,"
                      " fired_renewal, message, failing")

    async def alerts(self, platform: str | None = None) -> list[AlertRow]:
        args: tuple[Any, ...]
        query, args = f"SELECT {self._ALERT_COLUMNS} FROM alerts", ()
        if platform is not None:
            query, args = query + " WHERE platform = ?", (platform,)
        cursor = await self._db.execute(query + " ORDER BY id", args)
        return [AlertRow(*row) for row in await cursor.fetchall()]

    @tracks_write
    async def add_alerts(self, rows: list[tuple[str, str, str, str, str, str]]) -> list[AlertRow]:
        """(platform, channel, account, condition, source, created_by) each; returns the stored rows."""
        now = time.time()
        added: list[AlertRow] = []
        if not rows:
            return added
        async with self._tx() as db:
            for platform, channel, account, condition, source, created_by in rows:
                cursor = await db.execute(
                    "INSERT INTO alerts (platform, channel, account, condition, source, created_by, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", (platform, channel, account, condition, source, created_by, now))
                added.append(AlertRow(cursor.lastrowid or 0, platform, channel, account, condition, source, created_by,
                                      now, "armed", None, None, None, None))
            await self._bump()
        return added

    @tracks_write
    async def remove_alert(self, alert_id: int, platform: str | None = None) -> bool:
        args: tuple[Any, ...]
        query, args = "DELETE FROM alerts WHERE id = ?", (alert_id,)
        if platform is not None:
            query, args = query + " AND platform = ?", (alert_id, platform)
        async with self._tx() as db:
            cursor = await db.execute(query, args)
            if cursor.rowcount > 0:
                await self._bump()
        return cursor.rowcount > 0

    @tracks_write
    async def claim_alerts(self, claims: list[tuple[int, float, float | None, str]]) -> set[int]:
        """(id, fired_at, renewal, message): armed → pending in one transaction; returns the ids this call
        claimed (another process, or an earlier run, may have claimed one first)."""
        if not claims:
            return set()
        async with self._tx() as db:  # a few round trips to the database thread, whatever the number
            await db.execute("BEGIN IMMEDIATE")  # the write lock before the read: another process waits
            marks = ",".join("?" * len(claims))
            cursor = await db.execute(f"SELECT id FROM alerts WHERE state = 'armed' AND id IN ({marks})",
                                      [c[0] for c in claims])
            claimed = {row[0] for row in await cursor.fetchall()}
            await db.executemany(
                "UPDATE alerts SET state = 'pending', fired_at = ?, fired_renewal = ?, message = ?"
                " WHERE id = ? AND state = 'armed'",
                [(at, renewal, message, alert_id) for alert_id, at, renewal, message in claims if alert_id in claimed])
        return claimed

    @tracks_write
    async def alerts_posted(self, results: list[tuple[int, str | None]]) -> None:
        """(id, failing reason or None): pending → fired, with the reason a post did not go out."""
        async with self._tx() as db:
            await db.executemany("UPDATE alerts SET state = 'fired', failing = ? WHERE id = ? AND state = 'pending'",
                                 [(reason, alert_id) for alert_id, reason in results])

    @tracks_write
    async def rearm_alerts(self, ids: list[int]) -> set[int]:
        """fired → armed; returns the ids this call re-armed (another process may have been first): the
        claim of an alert's switch back (bot.alerts)."""
        if not ids:
            return set()
        async with self._tx() as db:
            await db.execute("BEGIN IMMEDIATE")  # the write lock before the read: another process waits
            marks = ",".join("?" * len(ids))
            cursor = await db.execute(f"SELECT id FROM alerts WHERE state = 'fired' AND id IN ({marks})", list(ids))
            rearmed = {row[0] for row in await cursor.fetchall()}
            await db.executemany("UPDATE alerts SET state = 'armed', message = NULL WHERE id = ? AND state = 'fired'",
                                 [(i,) for i in rearmed])
        return rearmed

    @tracks_write
    async def alert_message(self, alert_id: int, message: str) -> bool:
        """The stored message of a pending alert, rewritten (what its action did); False when it is no
        longer pending."""
        async with self._tx() as db:
            cursor = await db.execute("UPDATE alerts SET message = ? WHERE id = ? AND state = 'pending'",
                                      (message, alert_id))
        return cursor.rowcount > 0

    # --- schedules ------------------------------------------------------------------------------
    @tracks_write
    async def add_schedule(self, platform: str, channel: str, when_text: str, timezone: str, source: str,
                           anchor: float, created_by: str = "") -> ScheduleRow:
        now = time.time()
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (platform, channel, when_text, timezone, source, anchor, created_by, now))
            await self._bump()
        return ScheduleRow(cursor.lastrowid or 0, platform, channel, when_text, timezone, source, anchor, created_by, now, None)

    @tracks_write
    async def add_schedules(self, rows: list[tuple[str, str, str, str, str, float]]) -> None:
        """Many (platform, channel, when_text, timezone, source, anchor) at once, in one transaction."""
        if not rows:
            return
        now = time.time()
        async with self._tx() as db:
            # a QUOTA_SCHEDULES item already stored (another replica's) is kept as it is, with its anchor
            await db.executemany(
                "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (platform, channel, when_text) WHERE source = 'config'"
                " DO NOTHING", [(*row, now) for row in rows])
            await self._bump()

    async def schedules(self, platform: str | None = None) -> list[ScheduleRow]:
        query = "SELECT id, platform, channel, when_text, timezone, source, anchor, created_by, created_at, failing FROM schedules"
        args: tuple[Any, ...] = ()
        if platform is not None:
            query, args = query + " WHERE platform = ?", (platform,)
        cursor = await self._db.execute(query + " ORDER BY id", args)
        return [ScheduleRow(*row) for row in await cursor.fetchall()]

    @tracks_write
    async def remove_schedule(self, schedule_id: int, platform: str | None = None) -> bool:
        args: tuple[Any, ...]
        query, args = "DELETE FROM schedules WHERE id = ?", (schedule_id,)
        if platform is not None:
            query, args = query + " AND platform = ?", (schedule_id, platform)
        async with self._tx() as db:
            cursor = await db.execute(query, args)
            if cursor.rowcount > 0:
                await self._bump()
        return cursor.rowcount > 0

    @tracks_write
    async def set_timezone(self, schedule_id: int, timezone: str) -> None:
        async with self._tx() as db:
            cursor = await db.execute("UPDATE schedules SET timezone = ? WHERE id = ? AND timezone <> ?",
                                      (timezone, schedule_id, timezone))
            if cursor.rowcount > 0:  # the schedule's times move: other replicas re-arm it
                await self._bump()

    @tracks_write
    async def set_failing(self, schedule_id: int, reason: str | None) -> None:
        async with self._tx() as db:
            await db.execute("UPDATE schedules SET failing = ? WHERE id = ?", (reason, schedule_id))

    # --- runs: claimed before they are posted ---------------------------------------------------
    @tracks_write
    async def claim(self, runs: Iterable[tuple[int, float]], owner: str | None = None) -> set[tuple[int, float]]:
        """Claim (schedule id, due) runs in one transaction for ``owner``; returns those this call claimed (a
        run claimed before, by this process or another, is never claimed again)."""
        wanted = list(runs)
        if not wanted:
            return set()
        token = f"claim-{time.time_ns()}-{id(wanted)}"
        async with self._tx() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO runs (schedule_id, due, claimed_at, result, owner) SELECT ?, ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM schedules WHERE id = ?)",
                [(sid, due, time.time(), token, owner, sid) for sid, due in wanted])
            cursor = await db.execute("SELECT schedule_id, due FROM runs WHERE result = ?", (token,))
            claimed = {(sid, due) for sid, due in await cursor.fetchall()}
            await db.execute("UPDATE runs SET result = 'claimed' WHERE result = ?", (token,))
        return claimed

    async def unfinished_runs(self) -> list[tuple[int, float, str | None, str]]:
        """(schedule id, due, owner, 'claimed' or 'posting') of the runs claimed and not finished."""
        cursor = await self._db.execute("SELECT schedule_id, due, owner, result FROM runs"
                                        " WHERE result IN ('claimed', 'posting') ORDER BY schedule_id, due")
        return [tuple(row) for row in await cursor.fetchall()]

    @tracks_write
    async def take_runs(self, runs: Iterable[tuple[int, float]], owner: str | None, to: str) -> set[tuple[int, float]]:
        """Unfinished runs of ``owner`` (None: released, or claimed by an older version) become ``to``'s;
        returns those this call took (another process may have taken one first)."""
        wanted = list(runs)
        taken: set[tuple[int, float]] = set()
        if not wanted:
            return taken
        async with self._tx() as db:
            await db.execute("BEGIN IMMEDIATE")
            for sid, due in wanted:
                cursor = await db.execute(
                    "UPDATE runs SET owner = ? WHERE schedule_id = ? AND due = ? AND owner IS ?"
                    " AND result IN ('claimed', 'posting')", (to, sid, due, owner))
                if cursor.rowcount > 0:
                    taken.add((sid, due))
        return taken

    @tracks_write
    async def posting(self, runs: Iterable[tuple[int, float]], owner: str) -> set[tuple[int, float]]:
        """Claimed → posting, for the runs ``owner`` still holds (after a crash a run in this state may
        have gone out: it is never sent again); returns those."""
        marked: set[tuple[int, float]] = set()
        async with self._tx() as db:
            for sid, due in runs:
                cursor = await db.execute("UPDATE runs SET result = 'posting' WHERE schedule_id = ? AND due = ?"
                                          " AND owner IS ? AND result = 'claimed'", (sid, due, owner))
                if cursor.rowcount > 0:
                    marked.add((sid, due))
        return marked

    @tracks_write
    async def release_runs(self, runs: Iterable[tuple[int, float]], owner: str) -> None:
        """Claimed runs of ``owner`` that it will not post (it stops) are left for the next one to take."""
        async with self._tx() as db:
            await db.executemany("UPDATE runs SET owner = NULL WHERE schedule_id = ? AND due = ? AND owner IS ?"
                                 " AND result = 'claimed'", [(sid, due, owner) for sid, due in runs])

    @tracks_write
    async def finish(self, results: Iterable[tuple[int, float, str]]) -> None:
        async with self._tx() as db:
            await db.executemany("UPDATE runs SET posted_at = ?, result = ? WHERE schedule_id = ? AND due = ?",
                                 [(time.time(), result, sid, due) for sid, due, result in results])

    async def last_claimed(self) -> dict[int, float]:
        cursor = await self._db.execute("SELECT schedule_id, MAX(due) FROM runs GROUP BY schedule_id")
        return {sid: due for sid, due in await cursor.fetchall()}

    async def runs(self, schedule_id: int) -> list[tuple[float, float | None, str | None]]:
        cursor = await self._db.execute("SELECT due, posted_at, result FROM runs WHERE schedule_id = ? ORDER BY due",
                                        (schedule_id,))
        return [tuple(row) for row in await cursor.fetchall()]

    # --- replicas: in-process here (one process owns a SQLite file) -------------------------------
    async def try_lock(self, name: str) -> LockHandle | None:
        """The lock ``name``, or None when another store of this process on this file holds it. Held
        until ``release()`` or until this store closes."""
        key = (self._key, name)
        if self._closed or (key in _LOCKS and _LOCKS[key].held):
            return None

        async def release() -> None:
            if _LOCKS.get(key) is handle:
                del _LOCKS[key]
            if handle in self._locks:
                self._locks.remove(handle)

        handle = LockHandle(name, release)
        _LOCKS[key] = handle
        self._locks.append(handle)
        return handle

    async def notify(self, channel: str, payload: str = "") -> None:
        """Call every ``listen(channel, …)`` callback of this process on this file with ``payload`` (soon,
        from the event loop, as PostgreSQL delivers its notifications)."""
        check_notification(channel, payload)
        loop = asyncio.get_running_loop()
        for _, callback in list(_LISTENERS.get((self._key, channel), ())):
            loop.call_soon(deliver, callback, channel, payload)

    async def listen(self, channel: str, callback: Callable[[str], Any]) -> Listener:
        """``callback(payload)`` for every ``notify(channel, payload)`` until the returned listener (or
        this store) is closed. A coroutine function may be given; its coroutine runs as a task."""
        check_notification(channel, "")
        key = (self._key, channel)

        async def close() -> None:
            entries = [e for e in _LISTENERS.get(key, []) if e[0] is not listener]
            if entries:
                _LISTENERS[key] = entries
            else:
                _LISTENERS.pop(key, None)
            if listener in self._listeners:
                self._listeners.remove(listener)

        listener = Listener(channel, close)
        _LISTENERS.setdefault(key, []).append((listener, callback))
        self._listeners.append(listener)
        return listener


SQLiteStore = Store


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _statements(script: str) -> list[str]:
    """A migration's statements, one by one (no migration has a ';' inside a statement)."""
    return [part.strip() for part in script.split(";") if part.strip()]
