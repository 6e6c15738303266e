"""The neutral answers commands return; each surface renders them in its own idiom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..errors import UserError


@dataclass(frozen=True)
class Reading:
    """A reading of one account or the pool (a ``QuotaReport`` or ``PoolReport``)."""

    outcome: Any
    public: bool = False


@dataclass(frozen=True)
class HistoryAnswer:
    """The history of the last ``days`` days (``bot.history.HistoryData``) and its chart (PNG bytes)."""

    data: Any
    png: bytes
    days: int
    public: bool = False


@dataclass(frozen=True)
class Notice:
    """A confirmation or a plain sentence (``ok`` False: a refusal, shown as such)."""

    text: str
    ok: bool = True


@dataclass(frozen=True)
class ScheduleAdded:
    view: Any  # bot.schedules.ScheduleView


@dataclass(frozen=True)
class ScheduleList:
    views: list[Any]


@dataclass(frozen=True)
class AlertAdded:
    view: Any  # bot.alerts.AlertView


@dataclass(frozen=True)
class AlertList:
    views: list[Any]


@dataclass(frozen=True)
class Removed:
    """``what`` (schedule or alert) ``id`` removed, or there was none (``ok`` False)."""

    what: str
    id: int
    ok: bool

    def text(self) -> str:
        if self.ok:
            return f"Removed {self.what} #{self.id}."
        return f"There is no {self.what} #{self.id}; see `/quota-{self.what} list`."


@dataclass(frozen=True)
class ModeList:
    """Each account's speed mode (``bot.modes.AccountMode``s)."""

    modes: list[Any]


@dataclass(frozen=True)
class ModeSwitched:
    """A switch Midjourney confirmed (``bot.modes.Switched``). The answer goes to whoever asked;
    ``announcement`` is the one public line for the channel (each surface says who in its own way)."""

    switched: Any

    def announcement(self, who: str) -> str:
        """``<who> switched studio from Fast to Relax.`` (``who`` as the surface names the person)."""
        from ..modes import mode_name

        s = self.switched
        account = f"{s.account} " if s.account else "the Midjourney account "
        before = f"from {mode_name(s.from_mode)} " if s.from_mode else ""
        return f"{who} switched {account}{before}to {mode_name(s.to_mode)}."


@dataclass(frozen=True)
class ModeLog:
    """The last switches, newest first (``bot.stores.common.ModeSwitchRow``s)."""

    rows: list[Any]


@dataclass(frozen=True)
class Help:
    """The usage of a command family (``quota``, ``schedule``, ``alert``) or of all of them."""

    family: str | None
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Failure:
    """The command failed: ``error`` is the ``UserError`` whose sentence the user reads (an unexpected
    failure is wrapped in one whose sentence says it was logged)."""

    error: UserError
    public: bool = False


Answer = Union[Reading, HistoryAnswer, Notice, ScheduleAdded, ScheduleList, AlertAdded, AlertList, Removed, Help,
               ModeList, ModeSwitched, ModeLog, Failure]
