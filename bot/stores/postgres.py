"""The PostgreSQL backend (``DATABASE_URL=postgres://…``), for hosts whose disk does not last and for
replicas, through an asyncpg pool: its connection, its schema version (the table ``quota_bot_schema``,
migrated under an advisory lock) and its coordination (session advisory locks and LISTEN/NOTIFY on
connections of their own). The store's parts are the same as SQLite's: ``bot.stores.parts``;
docs/architecture.md, "The store".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import ssl
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

import asyncpg

from .common import Listener, LockHandle, StoreError, WriteHealth, deliver, check_notification
from .dsn import PostgresTarget, parse_postgres_url
from .parts import StoreParts
from .schema import SCHEMA_VERSION, migrations
from .sql import Row

log = logging.getLogger("bot.store")

POOL_MIN, POOL_MAX = 1, 5  # a bot's load: a few queries a minute, bursts when a schedule fires
COMMAND_TIMEOUT = 30.0  # seconds one statement may take before it fails (instead of hanging a handler)
HEALTH_TIMEOUT = 5.0
# the lock and LISTEN connections: the server probes an idle one after 8 s, every 4 s, gives up after 3
# misses (20 s), so a vanished replica's advisory locks are free again within 20 s (see _connect)
LOCK_KEEPALIVES = (("tcp_keepalives_idle", 8), ("tcp_keepalives_interval", 4), ("tcp_keepalives_count", 3))
MIGRATE_LOCK = 0x71756F7461  # "quota": above int4, so never equal to a try_lock's hashtext(name)
VERSION_TABLE = "quota_bot_schema"

_LOGIN_REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError,
                  asyncpg.InvalidCatalogNameError, asyncpg.InsufficientPrivilegeError)
_MARK = re.compile(r"\?")


@functools.lru_cache(maxsize=256)  # bounded: a few statements are built per count of values (IN lists, claims)
def _postgres(sql: str) -> str:
    """The parts' ``?`` placeholders as asyncpg's ``$1, $2, …`` (no statement has a ``?`` in a literal)."""
    numbers = iter(range(1, 10**6))
    return _MARK.sub(lambda _: f"${next(numbers)}", sql)


def _count(status: str) -> int:
    """``DELETE 3`` / ``UPDATE 1`` → 3 / 1."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


class _Executor:
    """Statements on a pool (each on any connection) or on one connection (a transaction's)."""

    def __init__(self, on: Any) -> None:
        self._on = on

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._on.fetch(_postgres(sql), *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._on.fetchrow(_postgres(sql), *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._on.fetchval(_postgres(sql), *args)

    async def execute(self, sql: str, *args: Any) -> int:
        return _count(await self._on.execute(_postgres(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(row) for row in rows]
        if rows:
            await self._on.executemany(_postgres(sql), rows)


class PostgresDatabase(_Executor):
    """The pool: single statements on any connection; ``transaction()`` on one."""

    dialect = "postgresql"
    integrity_errors: tuple[type[BaseException], ...] = (asyncpg.IntegrityConstraintViolationError,)

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Executor]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield _Executor(conn)

    def keys(self, keys: Sequence[tuple[int, float]]) -> tuple[str, list[Any]]:
        return ("w (k_sid, k_due) AS (SELECT * FROM unnest(CAST(? AS BIGINT[]), CAST(? AS DOUBLE PRECISION[])))",
                [[int(sid) for sid, _ in keys], [float(due) for _, due in keys]])


class PostgresCoordination:
    """Locks and notifications between replicas: session advisory locks, LISTEN/NOTIFY, each on a connection
    of its own outside the pool (they live as long as it does)."""

    _pool: asyncpg.Pool
    _target: PostgresTarget
    _closed: bool
    _locks: list[LockHandle]
    _listeners: dict[str, list[tuple[Listener, Callable[[str], Any]]]]
    _listen_conn: asyncpg.Connection | None
    _listening: set[str]
    _listen_guard: asyncio.Lock
    _relisten: asyncio.Future[None] | None

    def describe(self) -> str:
        raise NotImplementedError

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




class PostgresStore(PostgresCoordination, StoreParts):
    """The PostgreSQL store. ``await PostgresStore.open(url)``, or ``bot.store.open_store(url)``."""

    def __init__(self, pool: asyncpg.Pool, target: PostgresTarget) -> None:
        self.db = PostgresDatabase(pool)
        self._pool = pool
        self._target = target
        self._closed = False
        self._locks = []
        self._listeners = {}
        self._listen_conn = None
        self._listening = set()
        self._listen_guard = asyncio.Lock()
        self._relisten = None
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
                    steps = migrations("postgresql")
                    for number in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in steps[number - 1]:
                            await conn.execute(statement)
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

    def _why(self, exc: BaseException) -> str:
        return _reason(exc, self._target)

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
