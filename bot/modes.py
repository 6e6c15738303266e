"""Speed modes (Fast, Relax, Turbo): what each account is in, switching it, and the log of switches.

``ModeSwitcher`` is what the `mode` command and the alerts that act use: ``show()`` reads each
account's mode from its reading, ``switch()`` asks the account's provider to switch (one switch of an
account at a time), forgets the account's cached reading, stores the switch with who or which alert
asked and what came of it, and counts it in ``quota_bot_mode_switches_total``; ``log()`` lists the
last switches. A provider that cannot switch says so in a sentence (``CannotSwitch``); nothing is
stored then, since nothing was tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import metrics
from .errors import (
    CannotSwitch,
    ModeRefused,
    QuotaError,
    SwitchFailed,
    UsageError,
    UserError,
    user_sentence,
)
from .report import MODE_NAMES, MODES, PoolReport, QuotaReport, normalise_mode
from .stores.common import ModeSwitchRow

log = logging.getLogger(__name__)

LOG_LENGTH = 10  # `mode log` lists this many switches
# Failures that are Midjourney (or the account) saying no, rather than the switch not getting through.
REFUSED_CODES = frozenset({"mode_refused", "moderation_blocked", "no_subscription", "moderated", "account"})


@dataclass(frozen=True)
class AccountMode:
    """One account's speed mode as its reading shows it. ``name`` is None for the one account of a bot
    without an accounts file; ``mode`` is fast, relax or turbo (None: not reported), ``shown`` the
    provider's own word; ``error`` the sentence of a reading that failed."""

    name: str | None
    provider: str
    mode: str | None
    shown: str | None
    can_switch: bool
    error: str | None = None


@dataclass(frozen=True)
class Switched:
    """A switch Midjourney confirmed: ``account`` (None: the one account) from ``from_mode`` (None:
    unknown) to ``to_mode``, asked by ``who`` on ``platform`` (a user id, or ``alert #N``); ``said`` is
    Midjourney's own sentence, ``record`` the stored row (None when the store could not keep it)."""

    account: str | None
    from_mode: str | None
    to_mode: str
    said: str
    who: str
    platform: str
    cause: str
    record: ModeSwitchRow | None = None


def mode_name(mode: str | None) -> str:
    """``relax`` → ``Relax``; None → ``unknown``."""
    return MODE_NAMES.get(mode or "", mode or "unknown")


class ModeSwitcher:
    """The speed modes of the pool's accounts (``bot.accounts.QuotaPool``); ``store`` keeps the switches
    (None: they are only logged, and ``log()`` says the log is not available)."""

    def __init__(self, pool: Any, store: Any = None, *, clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.store = store
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    # --- what each account is in ------------------------------------------------------------------
    def _label(self, name: str) -> str:
        from .providers import LABELS

        kind = str(self.pool.providers.get(name, "?"))
        return LABELS.get(kind, kind)

    def can_switch(self, name: str) -> bool:
        service = self.pool.services.get(name)
        provider = getattr(service, "provider", None)
        return bool(getattr(provider, "switches_mode", False)) and not getattr(provider, "simulated", False)

    def cannot_switch(self, name: str, shown: str | None = None) -> CannotSwitch | None:
        """Why the account ``name`` cannot be switched (its provider has no call for it; the simulator),
        or None when it can. ``shown``: the account as the sentence names it."""
        if self.can_switch(name):
            return None
        provider = getattr(self.pool.services.get(name), "provider", None)
        return CannotSwitch("the built-in simulator" if getattr(provider, "simulated", False) else self._label(name),
                            shown)

    async def show(self, account: str | None = None) -> list[AccountMode]:
        """Each account's mode from its reading (cached readings serve); a failed reading of one
        account is its sentence, never the others' loss."""
        outcome = await self.pool.get_report(account)
        if isinstance(outcome, PoolReport):
            return [AccountMode(a.name, self._label(a.name), a.report.mode if a.report else None,
                                a.report.job_mode if a.report else None, self.can_switch(a.name),
                                None if a.report is not None else user_sentence(a.error or Exception()))
                    for a in outcome.accounts]
        name = self._name(account)
        assert isinstance(outcome, QuotaReport)
        return [AccountMode(account, self._label(name), outcome.mode, outcome.job_mode, self.can_switch(name))]

    def _name(self, account: str | None) -> str:
        """The service name of ``account`` (the one account's when there is no accounts file)."""
        if account is None or not self.pool.names:
            return str(next(iter(self.pool.services)))
        return account

    # --- switching --------------------------------------------------------------------------------
    def _resolve(self, account: str | None) -> tuple[str, str | None]:
        """(service name, the name answers show: None for the one account). Several accounts and none
        named: a usage answer that lists them."""
        names = self.pool.names
        if not names:
            if account is not None:
                from .errors import UnknownAccount

                raise UnknownAccount(account, ())
            return next(iter(self.pool.services)), None
        if account is None:
            if len(names) == 1:
                return names[0], names[0]
            raise UsageError("Say which account to switch, e.g. `/quota-mode relax " + names[0] + "`. Accounts: "
                             + ", ".join(names) + ".")
        if account not in self.pool.services:
            from .errors import UnknownAccount

            raise UnknownAccount(account, names)
        return account, account

    async def switch(self, account: str | None, mode: str, *, who: str, platform: str = "", channel: str = "",
                     cause: str = "person") -> Switched:
        """Switch ``account`` (None: the only one) to ``mode`` (fast, relax, turbo) and wait until
        Midjourney confirms it. ``who``: the user's id on ``platform``, or ``alert #N`` with ``cause``
        ``alert``. Every try that reaches the provider is stored and counted, whatever its outcome;
        a refusal or failure raises ``SwitchFailed`` (its sentence says why; ``refused``: Midjourney
        or the account said no)."""
        wanted = normalise_mode(mode)
        if wanted is None:
            raise UsageError(f"There is no speed mode '{mode[:20]}': say fast, relax or turbo.", echo=mode[:20])
        name, shown = self._resolve(account)
        service = self.pool.services[name]
        provider = service.provider
        if not self.can_switch(name):
            label = self._label(name)
            raise CannotSwitch("the built-in simulator" if getattr(provider, "simulated", False) else label,
                               shown)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # one switch of an account at a time: the log's "from" stays true
            last = service.last_report
            before = last.mode if last is not None else None
            at = self._clock()
            try:
                done = await provider.switch_mode(wanted)
            except CannotSwitch:
                raise
            except UserError as exc:
                outcome = "refused" if exc.code in REFUSED_CODES or isinstance(exc, ModeRefused) else "failed"
                detail = getattr(exc, "detail", "")
                log.warning("account %s: switching to %s %s (%s, asked by %s): %s", name, wanted, outcome, exc.code,
                            who, detail or exc.user_message)
                await self._record(at, name, platform, channel, who, cause, before, wanted, outcome, exc.user_message)
                raise SwitchFailed(exc, refused=outcome == "refused") from None
            except Exception:
                log.exception("account %s: switching to %s failed unexpectedly", name, wanted)
                await self._record(at, name, platform, channel, who, cause, before, wanted, "failed",
                                   user_sentence(Exception()))
                raise
            service.invalidate()  # the next answer reads the account anew
            now = done.mode or wanted
            log.info("account %s: switched from %s to %s (asked by %s on %s); Midjourney said %r", name,
                     before or "unknown", now, who, platform or "-", done.said)
            row = await self._record(at, name, platform, channel, who, cause, before, now, "ok", done.said)
        return Switched(shown, before, now, done.said, who, platform, cause, row)

    async def _record(self, at: float, account: str, platform: str, channel: str, who: str, cause: str,
                      from_mode: str | None, to_mode: str, outcome: str, detail: str) -> ModeSwitchRow | None:
        metrics.MODE_SWITCHES.labels(account, to_mode, "alert" if cause == "alert" else "person", outcome).inc()
        if self.store is None:
            return None
        try:
            row: ModeSwitchRow = await self.store.record_mode_switch(at, account, platform, channel, who,
                                                                     "alert" if cause == "alert" else "person",
                                                                     from_mode, to_mode, outcome, detail[:500])
            return row
        except Exception as exc:  # noqa: BLE001 - the switch happened (or not) all the same: one log line is missed
            log.warning("account %s: the switch to %s was not stored (%s: %s)", account, to_mode, type(exc).__name__,
                        " ".join(str(exc).split())[:200])
            return None

    # --- the log ----------------------------------------------------------------------------------
    async def log(self, limit: int = LOG_LENGTH, account: str | None = None) -> list[ModeSwitchRow]:
        """The newest switches, newest first."""
        if self.store is None:
            raise QuotaError("no store", user_message="The log of switches is not available on this bot.")
        rows: list[ModeSwitchRow] = await self.store.mode_switches(limit, account)
        return rows


# --- what the answers say (each surface escapes, names people and writes times its own way) -----------

def _same(text: str) -> str:
    return text


SWITCH_HINT = "`/quota-mode relax`, `fast` or `turbo` switches (managers only); `/quota-mode log` lists the last switches."


def mode_lines(modes: list[AccountMode], esc: Callable[[str], str] = _same) -> list[str]:
    """One line per account: ``studio: Relax`` (``(LinkrAPI cannot switch it)`` where it cannot), or
    the sentence of its failed reading."""
    lines = []
    for m in modes:
        head = f"`{m.name}`: " if m.name else "Speed mode: "
        if m.error is not None:
            lines.append(head + esc(m.error))
            continue
        said = mode_name(m.mode) if m.mode else (esc(m.shown[:40]) if m.shown else "not reported by " + m.provider)
        lines.append(head + said + ("" if m.can_switch else f" ({m.provider} cannot switch it)"))
    return lines


def switched_text(switched: Switched, esc: Callable[[str], str] = _same) -> str:
    """The answer to whoever switched: ``Switched studio from Fast to Relax. Midjourney: “…”``."""
    account = f"`{switched.account}` " if switched.account else "the account "
    before = f"from {mode_name(switched.from_mode)} " if switched.from_mode else ""
    text = f"Switched {account}{before}to {mode_name(switched.to_mode)}."
    if switched.said:
        text += f" Midjourney: “{esc(switched.said[:300])}”"
    return text


OUTCOMES = {"ok": "done", "refused": "refused", "failed": "failed"}


def log_line(row: ModeSwitchRow, who: str, when: str, esc: Callable[[str], str] = _same) -> str:
    """``<when> · <who>: studio Fast → Relax, done`` (a refusal or failure with its sentence)."""
    before = mode_name(row.from_mode) if row.from_mode else "?"
    text = f"{when} · {who}: `{row.account}` {before} → {mode_name(row.to_mode)}, {OUTCOMES.get(row.outcome, row.outcome)}"
    if row.outcome != "ok" and row.detail:
        text += f" ({esc(row.detail[:160])})"
    return text


NO_SWITCHES = "No speed-mode switches yet."


__all__ = ["LOG_LENGTH", "MODES", "NO_SWITCHES", "SWITCH_HINT", "AccountMode", "ModeSwitcher", "Switched", "log_line",
           "mode_lines", "mode_name", "switched_text"]
