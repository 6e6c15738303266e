"""The SQLite backend (the embedded default), through aiosqlite: its connection, its schema version
(``PRAGMA user_version``) and its coordination, which is in-process (one process owns the file).

A file that cannot be used stops start-up with one line and is never recreated. The store's parts
(readings, schedules, alerts, …) are the same as PostgreSQL's: ``bot.stores.parts``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

import aiosqlite

from .common import Listener, LockHandle, StoreError, WriteHealth, check_notification, deliver
from .parts import StoreParts
from .schema import SCHEMA_VERSION, migrations
from .sql import Row

log = logging.getLogger("bot.store")

# how long one statement waits for another process's lock (SQLite's busy timeout), and how long opening the
# file keeps trying when SQLite gives up at once instead (two processes racing to switch a new file to WAL)
BUSY_TIMEOUT = 5.0
OPEN_LOCKED_FOR = 15.0
# SQLite has no row locks to skip (it has one writer at a time), and spells IS NOT DISTINCT FROM "IS"
# (the long form only from 3.39)
_DIALECT = ((" FOR UPDATE OF r SKIP LOCKED", ""), (" IS NOT DISTINCT FROM ", " IS "))

# in-process replica primitives, shared by the stores of one file: (real path, name) → …
_LOCKS: dict[tuple[str, str], LockHandle] = {}
_LISTENERS: dict[tuple[str, str], list[tuple[Listener, Callable[[str], Any]]]] = {}


def _sqlite(sql: str) -> str:
    for long, short in _DIALECT:
        sql = sql.replace(long, short)
    return sql


class _Rows:
    """``fetchrow`` and ``fetchval`` from ``fetch`` (SQLite's rows are in memory already)."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class _Executor(_Rows):
    """Statements on the one connection (inside a transaction: ``SQLiteDatabase.transaction``)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(_sqlite(sql), args) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._conn.execute(_sqlite(sql), args) as cursor:
            return max(cursor.rowcount, 0)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(_sqlite(sql), [tuple(row) for row in rows])


class SQLiteDatabase(_Rows):
    """The one connection, in autocommit mode: a single statement that writes, and every transaction, holds
    ``_write`` (one at a time) and runs in ``BEGIN IMMEDIATE`` (the file's write lock first, so another
    process waits rather than failing half-way); a read runs as it comes."""

    dialect = "sqlite"
    integrity_errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self._write = asyncio.Lock()
        self._tx = _Executor(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Executor]:
        async with self._write:
            try:
                await self._to_the_end("BEGIN IMMEDIATE")
                yield self._tx
                await self._to_the_end("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # also when COMMIT itself failed (a full disk), or was cancelled
                    try:
                        await self._to_the_end("ROLLBACK")
                    except Exception:  # the first failure (or the cancellation) is the one to raise
                        log.warning("database: a rollback failed", exc_info=True)
                raise

    async def _to_the_end(self, sql: str) -> None:
        """BEGIN, COMMIT and ROLLBACK run in the connection's thread whatever happens to the awaiting task: a
        cancelled caller waits for the statement (bounded by the statement), so ``in_transaction`` tells the
        truth, and is cancelled then. Without this a COMMIT cancelled in flight was followed by a ROLLBACK
        that failed ("no transaction is active") in place of the cancellation, and a cancelled BEGIN left a
        transaction open that the next one could not start within."""
        statement = asyncio.ensure_future(self.conn.execute(sql))
        try:
            await asyncio.shield(statement)
        except asyncio.CancelledError:
            if not statement.done():
                await asyncio.wait([statement])
            if not statement.cancelled():
                statement.exception()  # retrieved: the cancellation is what the caller gets
            raise

    def keys(self, keys: Sequence[tuple[int, float]]) -> tuple[str, list[Any]]:
        return (f"w (k_sid, k_due) AS (VALUES {', '.join(['(?, ?)'] * len(keys))})",
                [value for key in keys for value in key])

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        if sql.startswith("SELECT"):
            return await self._tx.fetch(sql, *args)
        async with self.transaction() as tx:  # INSERT … RETURNING and the like
            return await tx.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    assert row is not None  # the pragma always answers one row
    return int(row[0])


class LocalCoordination:
    """Locks and notifications between the stores of one process on one file (a SQLite file has one
    process: the replicas' primitives need not leave it)."""

    _key: str
    _closed: bool
    _locks: list[LockHandle]
    _listeners: list[Listener]

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


class SQLiteStore(LocalCoordination, StoreParts):
    """The SQLite store. ``await SQLiteStore.open(path)``, or ``bot.store.open_store("sqlite:///path")``."""

    db: SQLiteDatabase

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self.db = SQLiteDatabase(conn)
        self.path = path
        self._key = os.path.realpath(path)
        self._locks = []
        self._listeners = []
        self._closed = False
        self.writes = WriteHealth()

    @classmethod
    async def open(cls, path: str) -> "SQLiteStore":
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
            conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"DATABASE_URL: cannot open {shown}: {exc}") from None
        store = cls(conn, path)
        try:
            await store._prepare(shown)
        except BaseException:
            await conn.close()
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
        conn = self.db.conn
        try:
            async with conn.execute("PRAGMA quick_check") as cursor:
                check = await cursor.fetchone()
            if not check or check[0] != "ok":
                raise StoreError(f"DATABASE_URL: {shown} is damaged ({check[0] if check else 'no answer'}); "
                                 "it was left untouched")
            version = await _user_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(f"DATABASE_URL: {shown} was written by a newer quota-bot (schema {version}, "
                                 f"this one knows {SCHEMA_VERSION})")
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            steps = migrations("sqlite")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                # BEGIN IMMEDIATE: a second process opening the file at the same moment waits here, then
                # finds the step done (user_version is read again inside the transaction)
                async with self.db.transaction():
                    now = await _user_version(conn)
                    if now < number:
                        for statement in steps[number - 1]:
                            await conn.execute(statement)
                        await conn.execute(f"PRAGMA user_version = {number}")
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
        return f"<SQLiteStore {self.describe()}>"

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in list(self._locks):
            await handle.release()
        for listener in list(self._listeners):
            await listener.close()
        await self.db.conn.close()

    async def healthy(self) -> str | None:
        """None when the database answers; else one line why (for /healthz "degraded")."""
        shown = os.path.abspath(self.path)
        if self._closed:
            return f"the SQLite database {shown} is closed"
        if not os.path.exists(self.path):
            return f"the SQLite database {shown} was removed from the disk"
        try:
            await asyncio.wait_for(self.db.fetch("SELECT 1"), 5.0)
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return f"the SQLite database {shown} does not answer ({self._why(exc)})"
        return None


Store = SQLiteStore
