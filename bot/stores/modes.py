"""The store's log of speed-mode switches (``bot.modes``): every switch asked from chat or by an alert,
whatever came of it. Written once for both databases."""

from __future__ import annotations

from typing import Protocol

from .common import ModeSwitchRow, WriteHealth, tracks_write
from .sql import Database

MODE_SWITCH_COLUMNS = "id, at, account, platform, channel, who, cause, from_mode, to_mode, outcome, detail"


class ModeStore(Protocol):
    """The store's log of speed-mode switches (``bot.modes``)."""

    async def record_mode_switch(self, at: float, account: str, platform: str, channel: str, who: str, cause: str,
                                 from_mode: str | None, to_mode: str, outcome: str, detail: str) -> ModeSwitchRow: ...
    async def mode_switches(self, limit: int = 10, account: str | None = None) -> list[ModeSwitchRow]: ...


class ModeSwitches:
    db: Database
    writes: WriteHealth

    @tracks_write
    async def record_mode_switch(self, at: float, account: str, platform: str, channel: str, who: str, cause: str,
                                 from_mode: str | None, to_mode: str, outcome: str, detail: str) -> ModeSwitchRow:
        ident = await self.db.fetchval(
            "INSERT INTO mode_switches (at, account, platform, channel, who, cause, from_mode, to_mode, outcome,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            at, account, platform, channel, who, cause, from_mode, to_mode, outcome, detail)
        return ModeSwitchRow(int(ident), at, account, platform, channel, who, cause, from_mode, to_mode, outcome, detail)

    async def mode_switches(self, limit: int = 10, account: str | None = None) -> list[ModeSwitchRow]:
        """The newest ``limit`` switches (of ``account``, or of every account), newest first."""
        where, args = ("WHERE account = ?", (account,)) if account is not None else ("", ())
        rows = await self.db.fetch(f"SELECT {MODE_SWITCH_COLUMNS} FROM mode_switches {where}"
                                   " ORDER BY at DESC, id DESC LIMIT ?", *args, limit)
        return [ModeSwitchRow(*row) for row in rows]
