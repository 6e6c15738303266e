"""The PostgreSQL store: the same interface and migrations (by number) as the SQLite store, through an
asyncpg pool, for hosts whose disk does not last (``DATABASE_URL=postgres://…``) and for replicas.

Migrations under an advisory lock, exact claims across replicas, session locks and LISTEN/NOTIFY on
connections of their own: docs/architecture.md, "The store".
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import Any, Callable, Iterable

import asyncpg

from ..report import QuotaReport
from .common import (KEEP_JOB_DURATIONS, MODE_SWITCH_COLUMNS, REPORT_COLUMNS, AlertRow, Listener, LockHandle,
                     ModeSwitchRow, ScheduleRow, StoreError, WriteHealth, check_notification, deliver, reading_values,
                     report_from_row, tracks_write)
from .sqlite import SCHEMA_VERSION
from .url import PostgresTarget, parse_postgres_url

log = logging.getLogger("bot.store")

POOL_MIN, POOL_MAX = 1, 5  # a bot's load: a few queries a minute, bursts when a schedule fires
COMMAND_TIMEOUT = 30.0  # seconds one statement may take before it fails (instead of hanging a handler)
HEALTH_TIMEOUT = 5.0
# the lock and LISTEN connections: the server probes an idle one after 8 s, every 4 s, gives up after 3
# misses (20 s), so a vanished replica's advisory locks are free again within 20 s (see _connect)
LOCK_KEEPALIVES = (("tcp_keepalives_idle", 8), ("tcp_keepalives_interval", 4), ("tcp_keepalives_count", 3))
MIGRATE_LOCK = 0x71756F7461  # "quota": above int4, so never equal to a try_lock's hashtext(name)
VERSION_TABLE = "quota_bot_schema"

MIGRATIONS: list[str] = [
    # 1: schedules, runs (claims), readings
    """
    CREATE TABLE schedules (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        when_text TEXT NOT NULL,
        timezone TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('config', 'chat')),
        anchor DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        failing TEXT
    );
    CREATE INDEX schedules_platform ON schedules (platform);
    CREATE TABLE runs (
        schedule_id BIGINT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        due DOUBLE PRECISION NOT NULL,
        claimed_at DOUBLE PRECISION NOT NULL,
        posted_at DOUBLE PRECISION,
        result TEXT,
        PRIMARY KEY (schedule_id, due)
    );
    CREATE TABLE readings (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        read_at DOUBLE PRECISION NOT NULL,
        remaining DOUBLE PRECISION,
        total DOUBLE PRECISION,
        percent DOUBLE PRECISION,
        unit TEXT,
        job_mode TEXT,
        plan TEXT,
        renewal DOUBLE PRECISION,
        simulated BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX readings_read_at ON readings (read_at);
    """,
    # 2: readings carry the account they are of
    """
    ALTER TABLE readings ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX readings_account_read_at ON readings (account, read_at);
    """,
    # 3: low-quota alerts
    """
    CREATE TABLE alerts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        condition TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('config', 'chat')),
        created_by TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL DEFAULT 'armed' CHECK (state IN ('armed', 'pending', 'fired')),
        fired_at DOUBLE PRECISION,
        fired_renewal DOUBLE PRECISION,
        message TEXT,
        failing TEXT
    );
    """,
    # 4: readings keep the whole report (fields: a JSON array of [name, value], in upstream order)
    """
    ALTER TABLE readings
        ADD COLUMN fields JSONB,
        ADD COLUMN plan_status TEXT,
        ADD COLUMN message_id TEXT,
        ADD COLUMN responded_at DOUBLE PRECISION,
        ADD COLUMN total_derived BOOLEAN NOT NULL DEFAULT FALSE;
    """,
    # 5: counters; 'revision' is bumped with every schedule or alert added or removed
    """
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('revision', 0) ON CONFLICT DO NOTHING;
    """,
    # 6: how long each provider's readings took, per account (learned timing)
    """
    CREATE TABLE job_durations (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account TEXT NOT NULL,
        provider TEXT NOT NULL,
        seconds DOUBLE PRECISION NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX job_durations_account_provider ON job_durations (account, provider, id);
    """,
    # 7: a claimed run names its owner; result 'posting' while its post is being sent; a QUOTA_SCHEDULES
    # item is stored once (duplicates an older version let in are dropped, the oldest kept)
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
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
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
assert len(MIGRATIONS) == SCHEMA_VERSION, "every SQLite migration has its PostgreSQL twin, by number"
PG_MIGRATIONS = MIGRATIONS

_LOGIN_REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError,
                  asyncpg.InvalidCatalogNameError, asyncpg.InsufficientPrivilegeError)
_BUMP = "UPDATE counters SET value = value + 1 WHERE name = 'revision'"


class PostgresStore:
    """The PostgreSQL store. ``await PostgresStore.open(url)``, or ``bot.store.open_store(url)``."""

    def __init__(self, pool: asyncpg.Pool, target: PostgresTarget) -> None:
        self._pool = pool
        self._target = target
        self._closed = False
        self._locks: list[LockHandle] = []
        self._listeners: dict[str, list[tuple[Listener, Callable[[str], Any]]]] = {}
        self._listen_conn: asyncpg.Connection | None = None
        self._listening: set[str] = set()
        self._listen_guard = asyncio.Lock()
        self._relisten: asyncio.Future[None] | None = None
        self.writes = WriteHealth()

    @classmethod
    async def open(cls, url: str) -> "PostgresStore":
        try:
            target = parse_postgres_url(url)
        except ValueError as exc:
            raise StoreError(f"DATABASE_URL: {exc}") from None
        for name in target.dropped:
            log.info("DATABASE_URL: option %s is not used with asyncpg; ignored", name)
        try:
            pool = await asyncpg.create_pool(min_size=POOL_MIN, max_size=POOL_MAX, command_timeout=COMMAND_TIMEOUT,
                                             **target.connect_kwargs())
        except Exception as exc:  # noqa: BLE001 - every way of failing becomes one line
            raise connect_error(exc, target) from None
        store = cls(pool, target)
        try:
            await store._migrate()
        except BaseException:
            await store._close_pool()
            raise
        return store

    # --- schema -----------------------------------------------------------------------------------
    async def _migrate(self) -> None:
        shown = f"the PostgreSQL database {self._target.where}/{self._target.database}"
        try:
            async with self._pool.acquire() as conn:
                version = await _version(conn)
                if version == SCHEMA_VERSION:
                    return
                self._check_not_newer(version, shown)
                async with conn.transaction():
                    # replicas starting together: one migrates, the others wait here, then find it done
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
                    if not await _has_version_table(conn):
                        await conn.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY,"
                                           " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
                    version = await _version(conn)
                    self._check_not_newer(version, shown)
                    for number in range(version + 1, SCHEMA_VERSION + 1):
                        await conn.execute(MIGRATIONS[number - 1])
                        await conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)", number)
                        log.info("database %s migrated to schema %d", self.describe(), number)
        except StoreError:
            raise
        except asyncpg.PostgresError as exc:
            raise StoreError(f"DATABASE_URL: cannot prepare {shown} ({_reason(exc, self._target)})") from None
        except Exception as exc:  # noqa: BLE001 - the connection went away meanwhile
            raise connect_error(exc, self._target) from None

    @staticmethod
    def _check_not_newer(version: int, shown: str) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(f"DATABASE_URL: {shown} was written by a newer quota-bot (schema {version}, "
                             f"this one knows {SCHEMA_VERSION})")

    # --- the store itself -------------------------------------------------------------------------
    def describe(self) -> str:
        """``PostgreSQL host:port/dbname``, for `quota-bot check` and /healthz (no user, no password)."""
        return self._target.describe()

    def __repr__(self) -> str:
        return f"<PostgresStore {self.describe()}>"

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in list(self._locks):
            await handle.release()
        if self._relisten is not None:
            self._relisten.cancel()
        if self._listen_conn is not None:
            await _close(self._listen_conn)
            self._listen_conn = None
        self._listeners.clear()
        await self._close_pool()

    async def _close_pool(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), 10.0)
        except Exception:  # noqa: BLE001 - a connection that hangs is cut
            self._pool.terminate()

    async def healthy(self) -> str | None:
        """None when the server answers ``SELECT 1`` within 5 s; else one line why."""
        if self._closed:
            return f"the store {self.describe()} is closed"
        try:
            await asyncio.wait_for(self._pool.fetchval("SELECT 1"), HEALTH_TIMEOUT)
        except asyncio.TimeoutError:
            return f"the PostgreSQL server at {self._target.where} does not answer within {HEALTH_TIMEOUT:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return f"the PostgreSQL server at {self._target.where} cannot be used ({_reason(exc, self._target)})"
        return None

    async def can_write(self) -> str | None:
        """None when this login may write the bot's tables (a change made and rolled back); else one line
        why (a read-only login or a read replica, say)."""
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("UPDATE counters SET value = value WHERE name = 'revision'")
                    raise _RolledBack()
        except _RolledBack:
            return None
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return f"cannot write to {self.describe()}: {_reason(exc, self._target)}"

    def write_problem(self) -> str | None:
        """One line while the latest write failed (e.g. the login's write permission was revoked), else None."""
        return self.writes.problem

    async def revision(self) -> int:
        """A counter bumped with every schedule or alert added or removed (in the same transaction)."""
        return int(await self._pool.fetchval("SELECT value FROM counters WHERE name = 'revision'") or 0)

    # --- readings ---------------------------------------------------------------------------------
    @tracks_write
    async def record_reading(self, report: QuotaReport, account: str = "default") -> None:
        values = reading_values(report)
        marks = ", ".join(f"${n}" for n in range(1, len(values) + 2))
        await self._pool.execute(f"INSERT INTO readings ({REPORT_COLUMNS}, account) VALUES ({marks})",
                                 *values.values(), account)

    async def readings(self, limit: int = 100, account: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE account = $1", (account,)) if account is not None else ("", ())
        rows = await self._pool.fetch(
            "SELECT read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated::int AS simulated,"
            f" account FROM readings {where} ORDER BY read_at DESC, id DESC LIMIT ${len(args) + 1}", *args, limit)
        return [dict(row.items()) for row in rows]

    async def latest_report(self, account: str, simulated: bool, max_age: float) -> QuotaReport | None:
        """The newest whole reading of ``account`` read less than ``max_age`` seconds ago, as the report
        it was (readings stored before schema 4, and the demo's past, have no fields: never returned)."""
        row = await self._pool.fetchrow(
            f"SELECT {REPORT_COLUMNS} FROM readings WHERE account = $1"
            " AND simulated = $2 AND read_at > $3 AND fields IS NOT NULL ORDER BY read_at DESC, id DESC LIMIT 1",
            account, bool(simulated), time.time() - max_age)
        return None if row is None else report_from_row(row)

    async def history(self, account: str, since: float, simulated: bool) -> list[tuple[float, float, float | None, float | None]]:
        """(read_at, remaining hours, total hours, renewal) of one account since ``since``, oldest first;
        simulated readings and real ones never mix. Minutes are converted to hours."""
        rows = await self._pool.fetch(
            "SELECT read_at, remaining, total, unit, renewal FROM readings WHERE account = $1 AND simulated = $2"
            " AND read_at >= $3 AND remaining IS NOT NULL ORDER BY read_at, id", account, bool(simulated), since)
        out = []
        for read_at, remaining, total, unit, renewal in rows:
            scale = 1 / 60 if unit == "minutes" else 1.0
            out.append((read_at, remaining * scale, None if total is None else total * scale, renewal))
        return out

    async def latest_reading_at(self, account: str, simulated: bool | None = None) -> float | None:
        """When the newest reading of ``account`` was taken (only simulated ones, or only real ones, when
        ``simulated`` is given); None when there is none."""
        at: float | None
        if simulated is None:
            at = await self._pool.fetchval("SELECT MAX(read_at) FROM readings WHERE account = $1", account)
        else:
            at = await self._pool.fetchval("SELECT MAX(read_at) FROM readings WHERE account = $1 AND simulated = $2",
                                           account, bool(simulated))
        return at

    async def has_readings(self, account: str, simulated: bool) -> bool:
        return bool(await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM readings WHERE account = $1 AND simulated = $2)", account, bool(simulated)))

    @tracks_write
    async def record_history(self, account: str, rows: Iterable[tuple[float, float, float, float | None]],
                             simulated: bool) -> None:
        """Many (read_at, remaining h, total h, renewal) readings at once (the demo's past)."""
        await self._pool.executemany(
            "INSERT INTO readings (read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated, account)"
            " VALUES ($1, $2, $3, $4, 'hours', 'Fast', 'Standard', $5, $6, $7)",
            [(at, rem, tot, round(rem / tot * 100, 2) if tot else None, ren, bool(simulated), account)
             for at, rem, tot, ren in rows])

    @tracks_write
    async def prune_readings(self, before: float) -> int:
        return _count(await self._pool.execute("DELETE FROM readings WHERE read_at < $1", before))

    @tracks_write
    async def record_job_duration(self, account: str, provider: str, seconds: float) -> None:
        """How long one reading of ``account`` through ``provider`` took (the newest 500 are kept)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO job_durations (account, provider, seconds, recorded_at)"
                               " VALUES ($1, $2, $3, $4)", account, provider, float(seconds), time.time())
            await conn.execute(
                "DELETE FROM job_durations WHERE account = $1 AND provider = $2 AND id <= (SELECT id FROM job_durations"
                " WHERE account = $1 AND provider = $2 ORDER BY id DESC LIMIT 1 OFFSET $3)",
                account, provider, KEEP_JOB_DURATIONS)

    async def job_durations(self, account: str, provider: str, limit: int = 200) -> list[float]:
        """The seconds of the newest ``limit`` readings of ``account`` through ``provider``, newest first."""
        rows = await self._pool.fetch("SELECT seconds FROM job_durations WHERE account = $1 AND provider = $2"
                                      " ORDER BY id DESC LIMIT $3", account, provider, limit)
        return [row[0] for row in rows]

    # --- speed-mode switches -------------------------------------------------------------------------
    @tracks_write
    async def record_mode_switch(self, at: float, account: str, platform: str, channel: str, who: str, cause: str,
                                 from_mode: str | None, to_mode: str, outcome: str, detail: str) -> ModeSwitchRow:
        ident = await self._pool.fetchval(
            "INSERT INTO mode_switches (at, account, platform, channel, who, cause, from_mode, to_mode, outcome, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            at, account, platform, channel, who, cause, from_mode, to_mode, outcome, detail)
        return ModeSwitchRow(int(ident), at, account, platform, channel, who, cause, from_mode, to_mode, outcome, detail)

    async def mode_switches(self, limit: int = 10, account: str | None = None) -> list[ModeSwitchRow]:
        """The newest ``limit`` switches (of ``account``, or of every account), newest first."""
        if account is None:
            rows = await self._pool.fetch(f"SELECT {MODE_SWITCH_COLUMNS} FROM mode_switches"
                                          " ORDER BY at DESC, id DESC LIMIT $1", limit)
        else:
            rows = await self._pool.fetch(f"SELECT {MODE_SWITCH_COLUMNS} FROM mode_switches WHERE account = $1"
                                          " ORDER BY at DESC, id DESC LIMIT $2", account, limit)
        return [ModeSwitchRow(*row) for row in rows]

    # --- alerts -----------------------------------------------------------------------------------
    _ALERT_COLUMNS = ("id, platform, channel, account, condition, source, created_by, created_at, state, fired_at,"
                      " fired_renewal, message, failing")

    async def alerts(self, platform: str | None = None) -> list[AlertRow]:
        args: tuple[Any, ...]
        query, args = f"SELECT {self._ALERT_COLUMNS} FROM alerts", ()
        if platform is not None:
            query, args = query + " WHERE platform = $1", (platform,)
        return [AlertRow(*row) for row in await self._pool.fetch(query + " ORDER BY id", *args)]

    @tracks_write
    async def add_alerts(self, rows: list[tuple[str, str, str, str, str, str]]) -> list[AlertRow]:
        """(platform, channel, account, condition, source, created_by) each; returns the stored rows."""
        now = time.time()
        added: list[AlertRow] = []
        if not rows:
            return added
        async with self._pool.acquire() as conn, conn.transaction():
            for platform, channel, account, condition, source, created_by in rows:
                new_id = await conn.fetchval(
                    "INSERT INTO alerts (platform, channel, account, condition, source, created_by, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    platform, channel, account, condition, source, created_by, now)
                added.append(AlertRow(new_id, platform, channel, account, condition, source, created_by, now, "armed",
                                      None, None, None, None))
            await conn.execute(_BUMP)
        return added

    @tracks_write
    async def remove_alert(self, alert_id: int, platform: str | None = None) -> bool:
        args: tuple[Any, ...]
        query, args = "DELETE FROM alerts WHERE id = $1", (alert_id,)
        if platform is not None:
            query, args = query + " AND platform = $2", (alert_id, platform)
        return await self._delete(query, args)

    @tracks_write
    async def claim_alerts(self, claims: list[tuple[int, float, float | None, str]]) -> set[int]:
        """(id, fired_at, renewal, message): armed → pending in one transaction; returns the ids this call
        claimed (another replica, or an earlier run, may have claimed one first)."""
        claimed: set[int] = set()
        if not claims:
            return claimed
        async with self._pool.acquire() as conn, conn.transaction():
            for alert_id, at, renewal, message in claims:
                won = await conn.fetchval(
                    "UPDATE alerts SET state = 'pending', fired_at = $1, fired_renewal = $2, message = $3"
                    " WHERE id = $4 AND state = 'armed' RETURNING id", at, renewal, message, alert_id)
                if won is not None:
                    claimed.add(alert_id)
        return claimed

    @tracks_write
    async def alerts_posted(self, results: list[tuple[int, str | None]]) -> None:
        """(id, failing reason or None): pending → fired, with the reason a post did not go out."""
        if results:
            await self._pool.executemany(
                "UPDATE alerts SET state = 'fired', failing = $1 WHERE id = $2 AND state = 'pending'",
                [(reason, alert_id) for alert_id, reason in results])

    @tracks_write
    async def rearm_alerts(self, ids: list[int]) -> set[int]:
        """fired → armed; returns the ids this call re-armed (a concurrent update of a row waits and then
        finds it armed): the claim of an alert's switch back (bot.alerts)."""
        if not ids:
            return set()
        rows = await self._pool.fetch(
            "UPDATE alerts SET state = 'armed', message = NULL WHERE id = ANY($1::bigint[]) AND state = 'fired'"
            " RETURNING id", list(ids))
        return {int(row["id"]) for row in rows}

    @tracks_write
    async def alert_message(self, alert_id: int, message: str) -> bool:
        """The stored message of a pending alert, rewritten (what its action did); False when it is no
        longer pending."""
        won = await self._pool.fetchval("UPDATE alerts SET message = $1 WHERE id = $2 AND state = 'pending' RETURNING id",
                                        message, alert_id)
        return won is not None

    # --- schedules --------------------------------------------------------------------------------
    @tracks_write
    async def add_schedule(self, platform: str, channel: str, when_text: str, timezone: str, source: str,
                           anchor: float, created_by: str = "") -> ScheduleRow:
        now = time.time()
        async with self._pool.acquire() as conn, conn.transaction():
            new_id = await conn.fetchval(
                "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_by, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                platform, channel, when_text, timezone, source, anchor, created_by, now)
            await conn.execute(_BUMP)
        return ScheduleRow(new_id, platform, channel, when_text, timezone, source, anchor, created_by, now, None)

    @tracks_write
    async def add_schedules(self, rows: list[tuple[str, str, str, str, str, float]]) -> None:
        """Many (platform, channel, when_text, timezone, source, anchor) at once, in one transaction."""
        if not rows:
            return
        now = time.time()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (platform, channel, when_text)"
                " WHERE source = 'config' DO NOTHING", [(*row, now) for row in rows])
            await conn.execute(_BUMP)

    async def schedules(self, platform: str | None = None) -> list[ScheduleRow]:
        query = ("SELECT id, platform, channel, when_text, timezone, source, anchor, created_by, created_at, failing"
                 " FROM schedules")
        args: tuple[Any, ...] = ()
        if platform is not None:
            query, args = query + " WHERE platform = $1", (platform,)
        return [ScheduleRow(*row) for row in await self._pool.fetch(query + " ORDER BY id", *args)]

    @tracks_write
    async def remove_schedule(self, schedule_id: int, platform: str | None = None) -> bool:
        args: tuple[Any, ...]
        query, args = "DELETE FROM schedules WHERE id = $1", (schedule_id,)
        if platform is not None:
            query, args = query + " AND platform = $2", (schedule_id, platform)
        return await self._delete(query, args)

    @tracks_write
    async def set_timezone(self, schedule_id: int, timezone: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            changed = _count(await conn.execute(
                "UPDATE schedules SET timezone = $1 WHERE id = $2 AND timezone <> $1", timezone, schedule_id))
            if changed:  # the schedule's times move: other replicas re-arm it
                await conn.execute(_BUMP)

    @tracks_write
    async def set_failing(self, schedule_id: int, reason: str | None) -> None:
        await self._pool.execute("UPDATE schedules SET failing = $1 WHERE id = $2", reason, schedule_id)

    async def _delete(self, query: str, args: tuple[Any, ...]) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            removed = _count(await conn.execute(query, *args))
            if removed:
                await conn.execute(_BUMP)
        return removed > 0

    # --- runs: claimed before they are posted -----------------------------------------------------
    @tracks_write
    async def claim(self, runs: Iterable[tuple[int, float]], owner: str | None = None) -> set[tuple[int, float]]:
        """Claim (schedule id, due) runs in one statement for ``owner``; returns those this call claimed. A
        run claimed before, by this replica or another, is never claimed again; a removed schedule's runs
        are not."""
        wanted = list(dict.fromkeys((int(sid), float(due)) for sid, due in runs))
        if not wanted:
            return set()
        query = ("INSERT INTO runs (schedule_id, due, claimed_at, result, owner)"
                 " SELECT w.sid, w.due, $3, 'claimed', $4 FROM unnest($1::bigint[], $2::float8[]) AS w (sid, due)"
                 " WHERE EXISTS (SELECT 1 FROM schedules s WHERE s.id = w.sid)"
                 " ON CONFLICT (schedule_id, due) DO NOTHING RETURNING schedule_id, due")
        args = ([sid for sid, _ in wanted], [due for _, due in wanted], time.time(), owner)
        try:
            rows = await self._pool.fetch(query, *args)
        except asyncpg.ForeignKeyViolationError:  # a schedule removed meanwhile: once more, without it
            rows = await self._pool.fetch(query, *args)
        return {(row[0], row[1]) for row in rows}

    async def unfinished_runs(self) -> list[tuple[int, float, str | None, str]]:
        """(schedule id, due, owner, 'claimed' or 'posting') of the runs claimed and not finished."""
        rows = await self._pool.fetch("SELECT schedule_id, due, owner, result FROM runs"
                                      " WHERE result IN ('claimed', 'posting') ORDER BY schedule_id, due")
        return [tuple(row) for row in rows]

    @tracks_write
    async def take_runs(self, runs: Iterable[tuple[int, float]], owner: str | None, to: str) -> set[tuple[int, float]]:
        """Unfinished runs of ``owner`` (None: released, or claimed by an older version) become ``to``'s;
        returns those this call took (another replica may have taken one first)."""
        wanted = list(dict.fromkeys((int(sid), float(due)) for sid, due in runs))
        if not wanted:
            return set()
        rows = await self._pool.fetch(
            "UPDATE runs r SET owner = $4 FROM unnest($1::bigint[], $2::float8[]) AS w (sid, due)"
            " WHERE r.schedule_id = w.sid AND r.due = w.due AND r.owner IS NOT DISTINCT FROM $3"
            " AND r.result IN ('claimed', 'posting') RETURNING r.schedule_id, r.due",
            [sid for sid, _ in wanted], [due for _, due in wanted], owner, to)
        return {(row[0], row[1]) for row in rows}

    @tracks_write
    async def posting(self, runs: Iterable[tuple[int, float]], owner: str) -> set[tuple[int, float]]:
        """Claimed → posting, for the runs ``owner`` still holds (after a crash a run in this state may
        have gone out: it is never sent again); returns those."""
        wanted = list(runs)
        if not wanted:
            return set()
        rows = await self._pool.fetch(
            "UPDATE runs r SET result = 'posting' FROM unnest($1::bigint[], $2::float8[]) AS w (sid, due)"
            " WHERE r.schedule_id = w.sid AND r.due = w.due AND r.owner IS NOT DISTINCT FROM $3"
            " AND r.result = 'claimed' RETURNING r.schedule_id, r.due",
            [int(sid) for sid, _ in wanted], [float(d) for _, d in wanted], owner)
        return {(row[0], row[1]) for row in rows}

    @tracks_write
    async def release_runs(self, runs: Iterable[tuple[int, float]], owner: str) -> None:
        """Claimed runs of ``owner`` that it will not post (it stops) are left for the next one to take."""
        wanted = list(runs)
        if wanted:
            await self._pool.execute(
                "UPDATE runs r SET owner = NULL FROM unnest($1::bigint[], $2::float8[]) AS w (sid, due)"
                " WHERE r.schedule_id = w.sid AND r.due = w.due AND r.owner IS NOT DISTINCT FROM $3"
                " AND r.result = 'claimed'", [int(sid) for sid, _ in wanted], [float(d) for _, d in wanted], owner)

    @tracks_write
    async def finish(self, results: Iterable[tuple[int, float, str]]) -> None:
        rows = [(time.time(), result, sid, due) for sid, due, result in results]
        if rows:
            await self._pool.executemany(
                "UPDATE runs SET posted_at = $1, result = $2 WHERE schedule_id = $3 AND due = $4", rows)

    async def last_claimed(self) -> dict[int, float]:
        rows = await self._pool.fetch("SELECT schedule_id, MAX(due) FROM runs GROUP BY schedule_id")
        return {row[0]: row[1] for row in rows}

    async def runs(self, schedule_id: int) -> list[tuple[float, float | None, str | None]]:
        rows = await self._pool.fetch("SELECT due, posted_at, result FROM runs WHERE schedule_id = $1 ORDER BY due",
                                      schedule_id)
        return [tuple(row) for row in rows]

    # --- replicas ---------------------------------------------------------------------------------
    async def _connect(self) -> asyncpg.Connection:
        """A connection of its own, outside the pool (locks and LISTEN live as long as it does). The
        server is asked to probe it with TCP keepalives (``LOCK_KEEPALIVES``): when this replica's host
        vanishes without closing it, the server drops it, and the locks it held, within ~20 s rather than
        the system's default of two hours, so another replica can take the role over within 30 s."""
        try:
            conn = await asyncpg.connect(**self._target.connect_kwargs())
        except Exception as exc:  # noqa: BLE001
            raise connect_error(exc, self._target) from None
        try:
            await conn.execute("; ".join(f"SET {name} = {value}" for name, value in LOCK_KEEPALIVES))
        except Exception as exc:  # noqa: BLE001 - a pooler or a server that refuses: the defaults stay
            log.info("TCP keepalives could not be set on a lock connection to %s (%s); a vanished replica's "
                     "roles are taken over only when the server notices", self._target.where, type(exc).__name__)
        return conn

    async def try_lock(self, name: str) -> LockHandle | None:
        """The session advisory lock ``hashtext(name)`` on a connection of its own, or None when another
        session (another replica) holds it. Held until ``release()``, until this store closes, or until
        the process dies (its connection closes and the server lets go)."""
        if self._closed:
            return None
        conn = await self._connect()
        try:
            won = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name)
        except BaseException:
            conn.terminate()
            raise
        if not won:
            await _close(conn)
            return None

        async def release() -> None:
            if handle in self._locks:
                self._locks.remove(handle)
            if not conn.is_closed():
                try:  # unlock first: closing alone lets go only when the server notices
                    await asyncio.wait_for(conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name), 5.0)
                except Exception:  # noqa: BLE001 - the connection is gone, and the lock with it
                    pass
                await _close(conn)

        handle = LockHandle(name, release, alive=lambda: not conn.is_closed())
        self._locks.append(handle)
        return handle

    async def notify(self, channel: str, payload: str = "") -> None:
        """NOTIFY ``channel`` with ``payload`` (every replica's ``listen`` callbacks, this one's too)."""
        check_notification(channel, payload)
        await self._pool.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def listen(self, channel: str, callback: Callable[[str], Any]) -> Listener:
        """``callback(payload)`` for every notification on ``channel`` until the returned listener (or this
        store) is closed. A coroutine function may be given; its coroutine runs as a task."""
        check_notification(channel, "")
        if self._closed:
            raise StoreError(f"the store {self.describe()} is closed")
        async with self._listen_guard:
            conn = await self._listen_connection()
            if channel not in self._listening:
                await conn.add_listener(channel, self._on_notification)
                self._listening.add(channel)

            async def close() -> None:
                entries = [e for e in self._listeners.get(channel, []) if e[0] is not listener]
                if entries:
                    self._listeners[channel] = entries
                    return
                self._listeners.pop(channel, None)
                async with self._listen_guard:
                    if channel in self._listening and channel not in self._listeners:
                        self._listening.discard(channel)
                        if self._listen_conn is not None and not self._listen_conn.is_closed():
                            try:
                                await self._listen_conn.remove_listener(channel, self._on_notification)
                            except Exception:  # noqa: BLE001 - gone with its connection
                                pass

            listener = Listener(channel, close)
            self._listeners.setdefault(channel, []).append((listener, callback))
        return listener

    async def _listen_connection(self) -> asyncpg.Connection:
        if self._listen_conn is None or self._listen_conn.is_closed():
            conn = await self._connect()
            conn.add_termination_listener(self._on_listen_lost)
            self._listen_conn = conn
            self._listening.clear()
        return self._listen_conn

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for _, callback in list(self._listeners.get(channel, ())):
            deliver(callback, channel, payload)

    def _on_listen_lost(self, conn: Any) -> None:
        if self._closed or conn is not self._listen_conn:
            return
        log.warning("the LISTEN connection to %s was lost; re-opening it (notifications meanwhile are missed)",
                    self._target.where)
        if self._relisten is None or self._relisten.done():
            self._relisten = asyncio.ensure_future(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.2
        while not self._closed:
            try:
                async with self._listen_guard:
                    conn = await self._listen_connection()
                    for channel in list(self._listeners):
                        if channel not in self._listening:
                            await conn.add_listener(channel, self._on_notification)
                            self._listening.add(channel)
                log.info("listening on %s again", self._target.where)
                return
            except Exception as exc:  # noqa: BLE001 - the server is still away: try again later
                log.debug("re-opening the LISTEN connection failed (%s); next try in %.1f s",
                          _reason(exc, self._target), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class _RolledBack(Exception):
    """Ends can_write's transaction with a rollback."""


async def _has_version_table(conn: asyncpg.Connection) -> bool:
    # pg_class read with this statement's snapshot: to_regclass() or CREATE TABLE IF NOT EXISTS would ask
    # the catalog cache, which still misses a table another replica created while this one waited for
    # the advisory lock (an advisory lock does not refresh the cache; opening a table does)
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = $1 AND n.nspname = current_schema())", VERSION_TABLE))


async def _version(conn: asyncpg.Connection) -> int:
    if not await _has_version_table(conn):
        return 0
    return int(await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"))


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5.0)
    except Exception:  # noqa: BLE001
        conn.terminate()


def _count(status: str) -> int:
    """``DELETE 3`` / ``UPDATE 1`` → 3 / 1."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


def connect_error(exc: BaseException, target: PostgresTarget) -> StoreError:
    """One line for a connection that could not be made: refused login, or server out of reach."""
    reason = _reason(exc, target)
    if isinstance(exc, _LOGIN_REFUSED):
        return StoreError(f"DATABASE_URL: the server refused the login ({reason})")
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, (asyncpg.CannotConnectNowError,
                                                                      asyncpg.PostgresConnectionError)):
        return StoreError(f"DATABASE_URL: the PostgreSQL server at {target.where} refused the connection ({reason})")
    return StoreError(f"DATABASE_URL: cannot reach the PostgreSQL server at {target.where} ({reason})")


def _reason(exc: BaseException, target: PostgresTarget) -> str:
    """Why, in a few words, on one line, without the password."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        text = f"no answer within {target.timeout:g} s"
    elif isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text or "Errno 111" in text:
        text = "connection refused"
    elif isinstance(exc, socket.gaierror):
        text = f"unknown host {target.host}"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS failed: {exc.reason or text}"
    elif isinstance(exc, asyncpg.PostgresError):
        text = text or type(exc).__name__
    elif not text:
        text = type(exc).__name__
    if target.password:
        text = text.replace(target.password, "***")
    return text[:300]
