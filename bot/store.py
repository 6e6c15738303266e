"""The store: schedules, claimed runs, readings, alerts and the replicas' primitives, behind one interface.

``open_store(DATABASE_URL)`` gives the SQLite store (``sqlite:///path``, the embedded default; the class
``Store``) or the PostgreSQL store (``postgresql://…`` or ``postgres://…``; ``PostgresStore``). Both are
the same parts (``bot/stores/``: readings, timings, schedules, alerts, modes, coordination) on another
database, from one schema (``bot/stores/schema.py``), so the service, scheduler and adapters never ask
which one they have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .stores.common import AlertRow, Listener, LockHandle, ScheduleRow, StoreError
from .stores.parts import StoreInterface
from .stores.schema import MIGRATIONS, SCHEMA_VERSION, migrations
from .stores.sqlite import SQLiteStore, Store
from .stores.dsn import POSTGRES_SCHEMES, SQLITE_PREFIX

if TYPE_CHECKING:  # loaded on first use (``__getattr__``): asyncpg only when PostgreSQL is used
    from .stores.postgres import PostgresStore

__all__ = ["AlertRow", "Listener", "LockHandle", "MIGRATIONS", "PostgresStore", "SCHEMA_VERSION", "SQLiteStore",
           "ScheduleRow", "Store", "StoreError", "StoreInterface", "migrations", "open_store"]


def __getattr__(name: str) -> Any:
    """``PostgresStore`` loads asyncpg on first use only."""
    if name == "PostgresStore":
        from .stores import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def open_store(url: str) -> StoreInterface:
    """The store of ``DATABASE_URL``: ``sqlite:///path`` or ``postgresql://user:password@host:5432/dbname``
    (also ``postgres://``). Raises ``StoreError`` (one line, never the password) when it cannot be used."""
    if url.startswith(SQLITE_PREFIX):
        return await Store.open(url[len(SQLITE_PREFIX):])
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.split(":", 1)[0]
    if scheme in POSTGRES_SCHEMES:
        from .stores.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise StoreError(f"DATABASE_URL: unsupported database URL scheme {scheme!r}")
