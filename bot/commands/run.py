"""Runs a command for any surface: the permission check, the handler, the metrics and the error
mapping happen here, once, for Discord, Slack and the console alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from .. import metrics
from ..errors import UNEXPECTED, UserError
from ..history import NoHistory, history_chart
from ..modes import ModeSwitcher
from ..service import ReadingSource
from .answers import (AlertAdded, AlertList, Answer, Failure, Help, HistoryAnswer, ModeList, ModeLog, ModeSwitched,
                      Notice, Reading, Removed, ScheduleAdded, ScheduleList)
from .catalog import catalog
from .text import Call, usage

if TYPE_CHECKING:
    from ..alerts import AlertManager
    from ..history import History
    from ..schedules import ScheduleManager

log = logging.getLogger(__name__)


class Manager(Protocol):
    """Schedules (``bot.scheduler.Scheduler``) and alerts (``bot.alerts.Alerts``) as commands see them."""

    async def list(self, platform: str) -> list[Any]: ...

    async def remove(self, platform: str, item_id: int) -> bool: ...


@dataclass(frozen=True)
class Caller:
    """Who runs a command, where: ``platform`` (discord, slack, console), the ``channel`` a schedule or
    alert posts into by default, the ``user`` (recorded with what they add), and ``may_manage(what)``:
    True, or the one-line refusal of that platform (its own permission model)."""

    platform: str
    channel: str
    user: str = ""
    may_manage: Callable[[str], Awaitable[bool | str]] | None = None


class Unexpected(UserError):
    code = "unexpected"
    user_message = UNEXPECTED


class Commands:
    """The commands of one bot, over its parts (any may be None: that command then says it is not
    available on this bot)."""

    def __init__(self, readings: ReadingSource, *, schedules: ScheduleManager | None = None,
                 alerts: AlertManager | None = None, history: History | None = None,
                 history_days: float = 400, modes: ModeSwitcher | None = None) -> None:
        self.readings = readings
        self.schedules = schedules
        self.alerts = alerts
        # the speed modes (bot.modes); without one, a pool's modes are shown and switched, unlogged
        self.modes = modes if modes is not None or not hasattr(readings, "services") else ModeSwitcher(readings)
        self.history = history  # bot.history.History (None: no store, "history is not available")
        self.names: tuple[str, ...] = tuple(getattr(readings, "names", ()) or ())
        self.all = catalog(self.names, int(history_days))

    def usage(self, family: str) -> str:
        return usage(self.all, family, self.names)

    def ready(self, call: Call) -> bool:
        """Whether ``run(call)`` has its answer at hand (help, or a reading the services hold fresh): an
        adapter that can answer in its acknowledgement runs it first (Discord over HTTP); the others it
        acknowledges at once."""
        path = call.command.path
        if path == ("help",):
            return True
        return path == ("quota",) and self.readings.ready(call.get("account"))

    async def run(self, caller: Caller, call: Call) -> Answer:
        """The answer to ``call``; never raises (a failure is a ``Failure`` with its sentence)."""
        command = call.command
        try:
            what = command.manages(call.values)
            if what is not None:
                refusal = await self._refused(caller, what)
                if refusal is not None:
                    metrics.COMMANDS.labels(caller.platform, command.family, "refused").inc()
                    return refusal
            answer = await self._handle(caller, call)
        except UserError as exc:
            log.info("%s /%s answered with an error: %s", caller.platform, command.name, _detail(exc))
            metrics.COMMANDS.labels(caller.platform, command.family, "error").inc()
            return Failure(exc)
        except Exception:
            log.exception("%s /%s failed unexpectedly", caller.platform, command.name)
            metrics.COMMANDS.labels(caller.platform, command.family, "error").inc()
            return Failure(Unexpected())
        metrics.COMMANDS.labels(caller.platform, command.family, "ok").inc()
        return answer

    async def _refused(self, caller: Caller, what: str) -> Notice | None:
        manager = {"schedules": self.schedules, "alerts": self.alerts, "modes": self.modes}.get(what)
        if caller.may_manage is not None:
            allowed = await caller.may_manage(what)
            if allowed is not True:
                return Notice(allowed if isinstance(allowed, str) else f"You may not manage quota {what}.", ok=False)
        if manager is None:
            return Notice(f"{what.capitalize()} are not available on this bot.", ok=False)
        return None

    async def _handle(self, caller: Caller, call: Call) -> Answer:
        path = call.command.path
        if path == ("quota",):
            return Reading(await self.readings.get_report(call.get("account")), bool(call.get("public")))
        if path == ("history",):
            days = int(call.get("days"))
            data, png = await history_chart(self.history, self.names, days, call.get("account"))
            return HistoryAnswer(data, png, days, bool(call.get("public")))
        if path == ("help",):
            family = call.get("family")
            families = (family,) if family else ("quota", "schedule", "alert", "mode")
            return Help(family, tuple(self.usage(f) for f in families))
        if path == ("mode",):
            return await self._mode(caller, call)
        what, action = path
        manager: Manager | None = self.schedules if what == "schedule" else self.alerts
        assert manager is not None  # a bot without it refused the command (``_refused``)
        channel = str(call.get("channel") or caller.channel)
        if action == "list":
            views = await manager.list(caller.platform)
            return ScheduleList(views) if what == "schedule" else AlertList(views)
        if action == "remove":
            ident = int(call.get("id"))
            return Removed(what, ident, await manager.remove(caller.platform, ident))
        if what == "schedule":
            assert self.schedules is not None
            return ScheduleAdded(await self.schedules.add(caller.platform, channel, str(call.get("when")),
                                                          created_by=caller.user))
        assert self.alerts is not None
        return AlertAdded(await self.alerts.add(caller.platform, channel, str(call.get("condition")),
                                                account=call.get("account"), created_by=caller.user))


    async def _mode(self, caller: Caller, call: Call) -> Answer:
        """`mode`: show each account's mode; `relax`/`fast`/`turbo` [account] switch (the permission was
        checked in ``run``); `log` the last switches."""
        if self.modes is None:
            return Notice("Speed modes are not available on this bot.", ok=False)
        mode, account = call.get("mode"), call.get("account")
        if account is not None and self.names and account not in self.names:
            from ..errors import UnknownAccount

            raise UnknownAccount(account, self.names)
        if mode is None:
            return ModeList(await self.modes.show(account))
        if mode == "log":
            return ModeLog(await self.modes.log(account=account))
        return ModeSwitched(await self.modes.switch(account, str(mode), who=caller.user or caller.platform,
                                                   platform=caller.platform, channel=caller.channel))


def _detail(exc: UserError) -> str:
    detail = getattr(exc, "detail", "")
    return f"{exc.user_message} ({detail})" if detail else exc.user_message


__all__ = ["Caller", "Commands", "NoHistory", "ReadingSource"]
