"""The store's alerts (``bot.alerts``; ``bot.history`` draws their lines): armed → pending (claimed, its
message stored) → fired → armed again. Written once for both databases."""

from __future__ import annotations

import time
from typing import Any, Protocol

from .common import AlertRow, WriteHealth, tracks_write
from .coordination import BUMP_REVISION, delete_bumping
from .sql import Database, chunks, marks

ALERT_COLUMNS = ("id, platform, channel, account, condition, source, created_by, created_at, state, fired_at,"
                 " fired_renewal, message, failing")


class AlertStore(Protocol):
    """The store's alerts (``bot.alerts``; ``bot.history`` draws their lines)."""

    async def alerts(self, platform: str | None = None) -> list[AlertRow]: ...
    async def add_alerts(self, rows: list[tuple[str, str, str, str, str, str]]) -> list[AlertRow]: ...
    async def remove_alert(self, alert_id: int, platform: str | None = None) -> bool: ...
    async def claim_alerts(self, claims: list[tuple[int, float, float | None, str]]) -> set[int]: ...
    async def alerts_posted(self, results: list[tuple[int, str | None]]) -> None: ...
    async def rearm_alerts(self, ids: list[int]) -> set[int]: ...
    async def alert_message(self, alert_id: int, message: str) -> bool: ...


class Alerts:
    db: Database
    writes: WriteHealth

    async def alerts(self, platform: str | None = None) -> list[AlertRow]:
        where, args = (" WHERE platform = ?", (platform,)) if platform is not None else ("", ())
        rows = await self.db.fetch(f"SELECT {ALERT_COLUMNS} FROM alerts{where} ORDER BY id", *args)
        return [AlertRow(*row) for row in rows]

    @tracks_write
    async def add_alerts(self, rows: list[tuple[str, str, str, str, str, str]]) -> list[AlertRow]:
        """(platform, channel, account, condition, source, created_by) each; returns the stored rows."""
        now = time.time()
        added: list[AlertRow] = []
        if not rows:
            return added
        async with self.db.transaction() as tx:
            for platform, channel, account, condition, source, created_by in rows:
                new_id = await tx.fetchval(
                    "INSERT INTO alerts (platform, channel, account, condition, source, created_by, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    platform, channel, account, condition, source, created_by, now)
                added.append(AlertRow(int(new_id), platform, channel, account, condition, source, created_by, now,
                                      "armed", None, None, None, None))
            await tx.execute(BUMP_REVISION)
        return added

    @tracks_write
    async def remove_alert(self, alert_id: int, platform: str | None = None) -> bool:
        args: tuple[Any, ...]
        query, args = "DELETE FROM alerts WHERE id = ?", (alert_id,)
        if platform is not None:
            query, args = query + " AND platform = ?", (alert_id, platform)
        return await delete_bumping(self.db, query, *args)

    @tracks_write
    async def claim_alerts(self, claims: list[tuple[int, float, float | None, str]]) -> set[int]:
        """(id, fired_at, renewal, message): armed → pending in one transaction; returns the ids this call
        claimed (another replica, or an earlier run, may have claimed one first)."""
        if not claims:
            return set()
        claimed: set[int] = set()
        async with self.db.transaction() as tx:  # one statement a thousand claims, not one a claim
            for chunk in chunks(claims, 1000):
                rows = ", ".join(["(CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION),"
                                  " CAST(? AS TEXT))"] * len(chunk))
                won = await tx.fetch(
                    f"WITH c (c_id, c_at, c_renewal, c_message) AS (VALUES {rows}) UPDATE alerts SET"
                    " state = 'pending', fired_at = c.c_at, fired_renewal = c.c_renewal, message = c.c_message"
                    " FROM c WHERE alerts.id = c.c_id AND alerts.state = 'armed' RETURNING id",
                    *(value for claim in chunk for value in claim))
                claimed.update(int(row[0]) for row in won)
        return claimed

    @tracks_write
    async def alerts_posted(self, results: list[tuple[int, str | None]]) -> None:
        """(id, failing reason or None): pending → fired, with the reason a post did not go out."""
        if results:
            await self.db.executemany("UPDATE alerts SET state = 'fired', failing = ? WHERE id = ? AND state = 'pending'",
                                      [(reason, alert_id) for alert_id, reason in results])

    @tracks_write
    async def rearm_alerts(self, ids: list[int]) -> set[int]:
        """fired → armed; returns the ids this call re-armed (another replica may have been first): the
        claim of an alert's switch back (bot.alerts)."""
        if not ids:
            return set()
        rows = await self.db.fetch(f"UPDATE alerts SET state = 'armed', message = NULL WHERE id IN ({marks(len(ids))})"
                                   " AND state = 'fired' RETURNING id", *(int(i) for i in ids))
        return {int(row[0]) for row in rows}

    @tracks_write
    async def alert_message(self, alert_id: int, message: str) -> bool:
        """The stored message of a pending alert, rewritten (what its action did); False when it is no
        longer pending."""
        won = await self.db.fetchval("UPDATE alerts SET message = ? WHERE id = ? AND state = 'pending' RETURNING id",
                                     message, alert_id)
        return won is not None
