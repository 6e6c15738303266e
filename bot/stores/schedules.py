"""The store's schedules and their runs (``bot.scheduler``). A run is claimed before it is posted, once,
never twice, across restarts and replicas: docs/architecture.md, "Scheduled runs". Written once for both
databases (``sql``).

A run's row: ``result`` 'claimed' (``owner`` None: offered to any replica, or released), 'posting' (its
post is being sent; after a crash it may have gone out: never sent again), then the outcome ('posted',
'failed: …', 'skipped: …').
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Protocol

from .common import ScheduleRow, WriteHealth, tracks_write
from .coordination import BUMP_REVISION, delete_bumping
from .sql import Database, chunks, unique_keys

SCHEDULE_COLUMNS = "id, platform, channel, when_text, timezone, source, anchor, created_by, created_at, failing"
Key = tuple[int, float]


class ScheduleStore(Protocol):
    """The store's schedules and their claimed runs (``bot.scheduler``)."""

    async def add_schedule(self, platform: str, channel: str, when_text: str, timezone: str, source: str,
                           anchor: float, created_by: str = "") -> ScheduleRow: ...
    async def add_schedules(self, rows: list[tuple[str, str, str, str, str, float]]) -> None: ...
    async def schedules(self, platform: str | None = None) -> list[ScheduleRow]: ...
    async def remove_schedule(self, schedule_id: int, platform: str | None = None) -> bool: ...
    async def set_timezone(self, schedule_id: int, timezone: str) -> None: ...
    async def set_failing(self, schedule_id: int, reason: str | None) -> None: ...
    async def claim(self, runs: Iterable[tuple[int, float]], owner: str | None = None) -> set[tuple[int, float]]: ...
    async def offer(self, runs: Iterable[tuple[int, float]]) -> None: ...
    async def take(self, runs: Iterable[tuple[int, float]], owner: str) -> set[tuple[int, float]]: ...
    async def finish(self, results: Iterable[tuple[int, float, str]]) -> None: ...
    async def last_claimed(self) -> dict[int, float]: ...
    async def unfinished_runs(self) -> list[tuple[int, float, str | None, str]]: ...
    async def take_runs(self, runs: Iterable[tuple[int, float]], owner: str | None, to: str) -> set[tuple[int, float]]: ...
    async def posting(self, runs: Iterable[tuple[int, float]], owner: str) -> set[tuple[int, float]]: ...
    async def release_runs(self, runs: Iterable[tuple[int, float]], owner: str) -> None: ...
    async def runs(self, schedule_id: int) -> list[tuple[float, float | None, str | None]]: ...


class Schedules:
    db: Database
    writes: WriteHealth

    @tracks_write
    async def add_schedule(self, platform: str, channel: str, when_text: str, timezone: str, source: str,
                           anchor: float, created_by: str = "") -> ScheduleRow:
        now = time.time()
        async with self.db.transaction() as tx:
            new_id = await tx.fetchval(
                "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                platform, channel, when_text, timezone, source, anchor, created_by, now)
            await tx.execute(BUMP_REVISION)
        return ScheduleRow(int(new_id), platform, channel, when_text, timezone, source, anchor, created_by, now, None)

    @tracks_write
    async def add_schedules(self, rows: list[tuple[str, str, str, str, str, float]]) -> None:
        """Many (platform, channel, when_text, timezone, source, anchor) at once, in one transaction."""
        if not rows:
            return
        now = time.time()
        async with self.db.transaction() as tx:
            # a QUOTA_SCHEDULES item already stored (another replica's) is kept as it is, with its anchor
            await tx.executemany(
                "INSERT INTO schedules (platform, channel, when_text, timezone, source, anchor, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (platform, channel, when_text) WHERE source = 'config'"
                " DO NOTHING", [(*row, now) for row in rows])
            await tx.execute(BUMP_REVISION)

    async def schedules(self, platform: str | None = None) -> list[ScheduleRow]:
        where, args = (" WHERE platform = ?", (platform,)) if platform is not None else ("", ())
        rows = await self.db.fetch(f"SELECT {SCHEDULE_COLUMNS} FROM schedules{where} ORDER BY id", *args)
        return [ScheduleRow(*row) for row in rows]

    @tracks_write
    async def remove_schedule(self, schedule_id: int, platform: str | None = None) -> bool:
        args: tuple[Any, ...]
        query, args = "DELETE FROM schedules WHERE id = ?", (schedule_id,)
        if platform is not None:
            query, args = query + " AND platform = ?", (schedule_id, platform)
        return await delete_bumping(self.db, query, *args)

    @tracks_write
    async def set_timezone(self, schedule_id: int, timezone: str) -> None:
        async with self.db.transaction() as tx:
            changed = await tx.execute("UPDATE schedules SET timezone = ? WHERE id = ? AND timezone <> ?",
                                       timezone, schedule_id, timezone)
            if changed:  # the schedule's times move: other replicas re-arm it
                await tx.execute(BUMP_REVISION)

    @tracks_write
    async def set_failing(self, schedule_id: int, reason: str | None) -> None:
        await self.db.execute("UPDATE schedules SET failing = ? WHERE id = ?", reason, schedule_id)

    # --- runs: claimed before they are posted ---------------------------------------------------
    async def _insert_runs(self, runs: Iterable[Key], owner: str | None) -> set[Key]:
        """Rows for the runs not stored yet (of schedules that still exist), owned by ``owner``; returns
        those this call stored."""
        stored: set[Key] = set()
        for chunk in chunks(unique_keys(runs)):
            with_keys, args = self.db.keys(chunk)
            query = (f"WITH {with_keys} INSERT INTO runs (schedule_id, due, claimed_at, result, owner)"
                     " SELECT k_sid, k_due, ?, 'claimed', ? FROM w WHERE EXISTS (SELECT 1 FROM schedules s"
                     " WHERE s.id = w.k_sid) ON CONFLICT (schedule_id, due) DO NOTHING RETURNING schedule_id, due")
            try:
                rows = await self.db.fetch(query, *args, time.time(), owner)
            except self.db.integrity_errors:  # a schedule removed meanwhile: once more, without it
                rows = await self.db.fetch(query, *args, time.time(), owner)
            stored.update((int(sid), float(due)) for sid, due in rows)
        return stored

    @tracks_write
    async def claim(self, runs: Iterable[Key], owner: str | None = None) -> set[Key]:
        """Claim (schedule id, due) runs for ``owner``; returns those this call claimed. A run claimed or
        offered before, by this process or another, is never claimed here; a removed schedule's runs are not."""
        return await self._insert_runs(runs, owner)

    @tracks_write
    async def offer(self, runs: Iterable[Key]) -> None:
        """Store the due runs as claimed by nobody yet (every replica that finds them due offers the same
        keys; the first one stores them), for ``take`` to share out."""
        await self._insert_runs(runs, None)

    @tracks_write
    async def take(self, runs: Iterable[Key], owner: str) -> set[Key]:
        """Of the offered runs among ``runs``, those nobody owns become ``owner``'s; returns them. Rows
        another replica is taking at this moment are skipped, not waited for (``FOR UPDATE SKIP LOCKED``):
        whichever replica is free takes the next runs."""
        taken: set[Key] = set()
        for chunk in chunks(unique_keys(runs)):
            with_keys, args = self.db.keys(chunk)
            rows = await self.db.fetch(
                f"WITH {with_keys}, free AS (SELECT r.schedule_id AS f_sid, r.due AS f_due FROM runs r JOIN w"
                " ON r.schedule_id = w.k_sid AND r.due = w.k_due WHERE r.owner IS NULL AND r.result = 'claimed'"
                " FOR UPDATE OF r SKIP LOCKED)"
                " UPDATE runs SET owner = ?, claimed_at = ? FROM free WHERE runs.schedule_id = free.f_sid"
                " AND runs.due = free.f_due AND runs.owner IS NULL AND runs.result = 'claimed'"
                " RETURNING schedule_id, due", *args, owner, time.time())
            taken.update((int(sid), float(due)) for sid, due in rows)
        return taken

    async def unfinished_runs(self) -> list[tuple[int, float, str | None, str]]:
        """(schedule id, due, owner, 'claimed' or 'posting') of the runs claimed and not finished."""
        rows = await self.db.fetch("SELECT schedule_id, due, owner, result FROM runs"
                                   " WHERE result IN ('claimed', 'posting') ORDER BY schedule_id, due")
        return [(int(sid), float(due), owner, result) for sid, due, owner, result in rows]

    async def _move(self, runs: Iterable[Key], set_: str, where: str, *args: Any) -> set[Key]:
        """``UPDATE runs SET <set_>`` for the given runs that match ``where``; returns those it changed."""
        changed: set[Key] = set()
        for chunk in chunks(unique_keys(runs)):
            with_keys, key_args = self.db.keys(chunk)
            rows = await self.db.fetch(
                f"WITH {with_keys} UPDATE runs SET {set_} FROM w WHERE runs.schedule_id = w.k_sid"
                f" AND runs.due = w.k_due AND {where} RETURNING schedule_id, due", *key_args, *args)
            changed.update((int(sid), float(due)) for sid, due in rows)
        return changed

    @tracks_write
    async def take_runs(self, runs: Iterable[Key], owner: str | None, to: str) -> set[Key]:
        """Unfinished runs of ``owner`` (None: offered, released, or claimed by an older version) become
        ``to``'s; returns those this call took (another process may have taken one first)."""
        return await self._move(runs, "owner = ?", "runs.owner IS NOT DISTINCT FROM ?"
                                " AND runs.result IN ('claimed', 'posting')", to, owner)

    @tracks_write
    async def posting(self, runs: Iterable[Key], owner: str) -> set[Key]:
        """Claimed → posting, for the runs ``owner`` still holds (after a crash a run in this state may
        have gone out: it is never sent again); returns those."""
        return await self._move(runs, "result = 'posting'", "runs.owner IS NOT DISTINCT FROM ?"
                                " AND runs.result = 'claimed'", owner)

    @tracks_write
    async def release_runs(self, runs: Iterable[Key], owner: str) -> None:
        """Claimed runs of ``owner`` that it will not post (it stops) are left for the next one to take."""
        await self._move(runs, "owner = NULL", "runs.owner IS NOT DISTINCT FROM ? AND runs.result = 'claimed'", owner)

    @tracks_write
    async def finish(self, results: Iterable[tuple[int, float, str]]) -> None:
        rows = [(time.time(), result, int(sid), float(due)) for sid, due, result in results]
        if rows:
            await self.db.executemany("UPDATE runs SET posted_at = ?, result = ? WHERE schedule_id = ? AND due = ?",
                                      rows)

    async def last_claimed(self) -> dict[int, float]:
        rows = await self.db.fetch("SELECT schedule_id, MAX(due) FROM runs GROUP BY schedule_id")
        return {int(sid): float(due) for sid, due in rows}

    async def runs(self, schedule_id: int) -> list[tuple[float, float | None, str | None]]:
        rows = await self.db.fetch("SELECT due, posted_at, result FROM runs WHERE schedule_id = ? ORDER BY due",
                                   schedule_id)
        return [(float(due), posted_at, result) for due, posted_at, result in rows]
