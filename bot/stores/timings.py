"""The store's job timings: how long each provider's readings of an account took (the learned timing of
``bot.timing``), the newest ``KEEP_JOB_DURATIONS`` per (account, provider). Written once for both databases."""

from __future__ import annotations

import time
from typing import Protocol

from .common import WriteHealth, tracks_write
from .sql import Database

# job_durations keeps this many of the newest per (account, provider); job_durations() reads at most it
KEEP_JOB_DURATIONS = 500


class TimingStore(Protocol):
    """The store's job timings (``bot.timing``'s learned timing)."""

    async def record_job_duration(self, account: str, provider: str, seconds: float) -> None: ...
    async def job_durations(self, account: str, provider: str, limit: int = 200) -> list[float]: ...


class JobTimings:
    db: Database
    writes: WriteHealth

    @tracks_write
    async def record_job_duration(self, account: str, provider: str, seconds: float) -> None:
        """How long one reading of ``account`` through ``provider`` took (the newest 500 are kept)."""
        async with self.db.transaction() as tx:
            await tx.execute("INSERT INTO job_durations (account, provider, seconds, recorded_at) VALUES (?, ?, ?, ?)",
                             account, provider, float(seconds), time.time())
            await tx.execute(
                "DELETE FROM job_durations WHERE account = ? AND provider = ? AND id <= (SELECT id FROM job_durations"
                " WHERE account = ? AND provider = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                account, provider, account, provider, KEEP_JOB_DURATIONS)

    async def job_durations(self, account: str, provider: str, limit: int = 200) -> list[float]:
        """The seconds of the newest ``limit`` readings of ``account`` through ``provider``, newest first."""
        rows = await self.db.fetch("SELECT seconds FROM job_durations WHERE account = ? AND provider = ?"
                                   " ORDER BY id DESC LIMIT ?", account, provider, limit)
        return [float(row[0]) for row in rows]
