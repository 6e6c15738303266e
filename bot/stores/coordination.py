"""The replicas' primitives (``bot.replicas``, the scheduler's and the alerts' claims of a role): named
locks, notifications, and the revision of the configuration.

The revision is a row of the schema (``counters``), bumped in the same transaction as every schedule or
alert added or removed, so it is written once here. Locks and notifications are what each database offers
and live with their backend: in-process for SQLite (one process owns the file,
``bot.stores.sqlite.LocalCoordination``), advisory locks and LISTEN/NOTIFY for PostgreSQL
(``bot.stores.postgres.PostgresCoordination``). Their interface: ``ReplicaStore``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from .common import Listener, LockHandle
from .sql import Database

BUMP_REVISION = "UPDATE counters SET value = value + 1 WHERE name = 'revision'"


async def delete_bumping(db: Database, query: str, *args: Any) -> bool:
    """Run the ``DELETE`` ``query``; when it removed a row, bump the revision in the same transaction (the
    other replicas re-read the configuration). Returns whether it removed one."""
    async with db.transaction() as tx:
        removed = await tx.execute(query, *args)
        if removed:
            await tx.execute(BUMP_REVISION)
    return removed > 0


class ReplicaStore(Protocol):
    """The store's coordination part, the replicas' primitives (``bot.replicas``): locks, notifications, the
    revision of the configuration (``bot.stores.coordination``)."""

    async def revision(self) -> int: ...
    async def try_lock(self, name: str) -> LockHandle | None: ...
    async def notify(self, channel: str, payload: str = "") -> None: ...
    async def listen(self, channel: str, callback: Callable[[str], Any]) -> Listener: ...


class Revision:
    db: Database

    async def revision(self) -> int:
        """A counter bumped with every schedule or alert added or removed (in the same transaction)."""
        return int(await self.db.fetchval("SELECT value FROM counters WHERE name = 'revision'") or 0)
