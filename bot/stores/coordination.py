"""The replicas' primitives (``bot.replicas``, the scheduler's and the alerts' claims of a role): named
locks, notifications, and the revision of the configuration.

The revision is a row of the schema (``counters``), bumped in the same transaction as every schedule or
alert added or removed, so it is written once here. Locks and notifications are what each database offers
and live with their backend: in-process for SQLite (one process owns the file,
``bot.stores.sqlite.LocalCoordination``), advisory locks and LISTEN/NOTIFY for PostgreSQL
(``bot.stores.postgres.PostgresCoordination``). Their interface: ``bot.stores.common.ReplicaStore``.
"""

from __future__ import annotations

from .sql import Database

BUMP_REVISION = "UPDATE counters SET value = value + 1 WHERE name = 'revision'"


class Revision:
    db: Database

    async def revision(self) -> int:
        """A counter bumped with every schedule or alert added or removed (in the same transaction)."""
        return int(await self.db.fetchval("SELECT value FROM counters WHERE name = 'revision'") or 0)
