"""Low-quota alerts: a post into a channel when the fast time crosses a threshold, or when the forecast says
it will not last to the renewal; once per crossing, never a flood, across restarts and replicas.

Every fresh reading is checked in memory, in the background; state lives in the store (armed → pending
→ fired); posts go through the adapters' ``post``. The rules: docs/architecture.md, "Alerts".
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import functools
import json
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

from . import metrics
from .errors import UserError, shown, user_sentence
from .scheduler import Clock, Poster, PostPolicy, SystemClock, deliver, persist
from .schedules import CHAT_PLATFORMS, PLATFORMS
from .store import AlertRow
from .tasks import stop_tasks

if TYPE_CHECKING:
    from .accounts import QuotaPool
    from .forecast import Forecast
    from .history import History
    from .modes import ModeSwitcher
    from .replicas import Lease
    from .stores.alerts import AlertStore
    from .stores.coordination import ReplicaStore
    from .stores.modes import ModeStore


    class AlertsStore(AlertStore, ReplicaStore, ModeStore, Protocol):
        """The store's parts the alerts use: the alerts, the replicas' lock of their checker, and the log
        of speed-mode switches (whether an alert's switch to Relax is still the last one)."""

log = logging.getLogger(__name__)

MARGIN_PERCENT = 5.0  # re-arm above the threshold plus this share of the total
RUNOUT_DAYS = 1.0  # `runout`: the forecast runs out at least this long before the renewal
RETRY_CHECK = 5.0  # a check that failed (the database away) runs again after this many seconds
LOOK_BACK = 50  # an alert that acts switches back only if its switch is the last of this many that went through
OWNER_LOCK = "alerts-owner:{}"
LEGACY_OWNER = "claimed-before-owners"  # the lock of the claims an older version made (no owner named)
EXAMPLES = "e.g. 20%, 5h, 90m or runout"
ACTIONS = ("relax",)  # what an alert may do when it fires: switch its account to Relax (bot.modes)
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?)\s*(%|h|hr|hrs|hours?|m|min|mins|minutes?)$")


class AlertError(UserError):
    """A bad alert item or condition; ``user_message`` is one line with an example. ``echo``: what the
    user typed, as the sentence quotes it (``'echo'``), for adapters to show safely (``bot.errors.echo_parts``)."""

    code = "alert"

    def __init__(self, user_message: str, *, echo: str | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.echo = echo


@dataclass(frozen=True)
class Condition:
    kind: str  # percent | hours | runout
    value: float = 0.0  # the percentage, or hours
    text: str = ""  # as stored and listed: ``2h``, ``20%``, ``runout``, with its action ``2h:relax``
    action: str = ""  # "" or "relax": switch the account to Relax when it fires, back when it re-arms

    def threshold(self, total: float | None) -> float | None:
        """The line in hours; None when it cannot be known (a percentage without a total, or runout)."""
        if self.kind == "hours":
            return self.value
        if self.kind == "percent" and total:
            return total * self.value / 100
        return None

    @property
    def label(self) -> str:
        if self.kind == "percent":
            return f"{_num(self.value)} %"
        if self.kind == "hours":
            return f"{_num(self.value)} h" if self.value >= 1 or self.value == 0 else f"{_num(self.value * 60)} min"
        return "a run-out before the renewal"

    @property
    def keeps(self) -> str:
        """What switching to Relax keeps: ``the last 2 h``, ``the last 20 %``, ``the fast time to the renewal``."""
        return f"the last {self.label}" if self.kind != "runout" else "the fast time to the renewal"


@functools.lru_cache(maxsize=1024)
def parse_condition(text: str) -> Condition:
    """A condition (``20%``, ``5h``, ``90m``, ``runout``), with an action after it (``2h:relax`` or
    ``2h relax``); ``AlertError`` with one line naming the mistake."""
    raw = " ".join(str(text).split()).lower()
    action = ""
    for sep in (":", " "):
        head, found, tail = raw.rpartition(sep)
        if found and tail.strip() in ACTIONS:
            raw, action = head.strip(), tail.strip()
            break
    condition = _parse_amount(raw, text)
    if action:
        return Condition(condition.kind, condition.value, f"{condition.text}:{action}", action)
    return condition


def _parse_amount(raw: str, text: str) -> Condition:
    if raw in ("runout", "run-out", "run out"):
        return Condition("runout", 0.0, "runout")
    match = _AMOUNT.match(raw)
    echo = shown(text)
    if not match:
        hint = "; the one action is relax, after a colon (e.g. 2h:relax)" if ":" in raw or "relax" in raw else ""
        raise AlertError(f"'{echo}' is not a condition: write a percentage, an amount or runout, {EXAMPLES}{hint}.",
                         echo=echo)
    value, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        if not 0 < value < 100:
            raise AlertError(f"'{echo}': a percentage must be between 0 and 100, {EXAMPLES}.", echo=echo)
        return Condition("percent", value, f"{_num(value)}%")
    hours = value / 60 if unit.startswith("m") else value
    if hours <= 0 or hours > 10_000:
        raise AlertError(f"'{echo}': the amount must be more than 0, {EXAMPLES}.", echo=echo)
    return Condition("hours", hours, f"{_num(value)}{'m' if unit.startswith('m') else 'h'}")


@dataclass(frozen=True)
class AlertItem:
    platform: str
    channel: str
    account: str  # '' = the pool
    conditions: tuple[Condition, ...]


def parse_config(value: str, accounts: Iterable[str] = ()) -> list[AlertItem]:
    """``QUOTA_ALERTS``: ``platform:channel[@account]=condition[,condition…]`` items separated by ``;``."""
    names = set(accounts)
    items = []
    for raw in (value or "").split(";"):
        item = raw.strip()
        if not item:
            continue

        def bad(reason: str) -> AlertError:
            return AlertError(f"QUOTA_ALERTS: item '{item}': {reason}")  # noqa: B023 - used in this iteration only

        target, sep, conditions = item.partition("=")
        platform, colon, where = target.partition(":")
        channel, at, account = where.partition("@")
        platform, channel, account = platform.strip().lower(), channel.strip(), account.strip().lower()
        if not sep or not colon:
            raise bad("write it as platform:channel=condition, e.g. slack:C0123ABC=20%,10%")
        if platform not in PLATFORMS:
            raise bad(f"platform must be discord or slack, not '{platform}'")
        if not channel or any(ch.isspace() for ch in channel):
            raise bad("the channel id is missing or has spaces")
        if platform == "discord" and not channel.isdigit():
            raise bad("a Discord channel id is a number, e.g. discord:123456789012345678=5h")
        if at and account not in names:
            known = ", ".join(sorted(names)) if names else "none: without QUOTA_ACCOUNTS_FILE the pool is watched"
            raise bad(f"there is no account '{account}' (accounts: {known})")
        parsed = []
        for text in conditions.split(","):
            if not text.strip():
                raise bad(f"a condition is missing, {EXAMPLES}")
            try:
                parsed.append(parse_condition(text))
            except AlertError as exc:
                raise bad(exc.user_message) from None
            if parsed[-1].action and not account and len(names) > 1:
                raise bad(f"'{parsed[-1].text}': an alert on the pool cannot switch (which account would it "
                          f"switch?); name the account, e.g. {platform}:{channel}@{sorted(names)[0]}={parsed[-1].text}")
        items.append(AlertItem(platform, channel, account, tuple(parsed)))
    return items


@dataclass(frozen=True)
class AlertView:
    """What ``/quota-alert list`` shows of one alert."""

    id: int
    platform: str
    channel: str
    account: str
    condition: str
    source: str
    state: str  # armed | pending | fired
    fired_at: datetime | None
    failing: str | None
    note: str = ""  # on add: that it is already below and fires with the next reading

    @property
    def state_text(self) -> str:
        if self.state == "armed":
            return "armed"
        if self.state == "pending" or self.fired_at is None:
            return "firing"  # claimed, not posted yet (a rate-limit wait, or a restart in between)
        return f"fired at {self.fired_at.strftime('%Y-%m-%d %H:%M UTC')}"


@dataclass(frozen=True)
class AlertNotice:
    """An alert's post, platform-neutral: each renderer turns it into its own form."""

    alert_id: int
    headline: str  # "Fast time below 10 %: 1.4 h of 15 h left"
    pace: str | None
    renewal: datetime | None
    account: str  # '' = the pool
    condition: str
    mention: str | None = None  # a role (Discord) or user group (Slack) id to mention, from QUOTA_ALERT_MENTION
    simulated: bool = False
    # an alert that acts (``2h:relax``): ``kind`` "alert" (it fired: ``acted`` is what its switch to Relax
    # came to, None before it was tried) or "back" (it re-armed: the switch back to ``mode``)
    action: str = ""
    kind: str = "alert"
    acted: str | None = None  # ok | already (it was in Relax) | failed | unknown (back: the mode before is not known)
    mode: str | None = None  # kind alert: the mode it was in before (None: not known); kind back: the mode switched back to
    reason: str | None = None  # why a switch failed, the sentence the user reads

    def to_json(self, **extra: Any) -> str:
        return json.dumps({"alert_id": self.alert_id, "headline": self.headline, "pace": self.pace,
                           "renewal": self.renewal.timestamp() if self.renewal else None, "account": self.account,
                           "condition": self.condition, "mention": self.mention, "simulated": self.simulated,
                           "action": self.action, "kind": self.kind, "acted": self.acted, "mode": self.mode,
                           "reason": self.reason, **extra})

    @classmethod
    def from_json(cls, text: str) -> "AlertNotice":
        data = json.loads(text)
        renewal = data.get("renewal")
        return cls(int(data["alert_id"]), str(data["headline"]), data.get("pace"),
                   datetime.fromtimestamp(renewal, timezone.utc) if renewal else None, str(data.get("account", "")),
                   str(data.get("condition", "")), data.get("mention"), bool(data.get("simulated")),
                   str(data.get("action") or ""), str(data.get("kind") or "alert"), data.get("acted"), data.get("mode"),
                   data.get("reason"))

    def action_line(self, esc: Callable[[str], str] = lambda text: text) -> str | None:
        """What the alert did, one sentence (None: it does not act): ``Switched `studio` to Relax to keep
        the last 2 h; `/quota-mode fast` switches back.`` Each renderer escapes the reason its own way."""
        if not self.action:
            return None
        from .modes import mode_name

        who = f"`{self.account}`" if self.account else "the account"
        reason = esc((self.reason or "")[:300]).strip()
        if self.kind == "back":
            back = mode_name(self.mode or "fast")
            if self.acted == "ok":
                return f"Switched {who} back to {back}, the mode alert #{self.alert_id} had switched it away from."
            if self.acted == "failed":
                return f"Could not switch {who} back to {back}: {reason} `/quota-mode {self.mode or 'fast'}` switches it."
            return f"{who[0].upper()}{who[1:]} stays in Relax: the mode before is not known; `/quota-mode fast` switches it."
        if self.acted == "ok":
            try:
                keeps = parse_condition(self.condition).keeps
            except AlertError:
                keeps = "the fast time that is left"
            return f"Switched {who} to Relax to keep {keeps}; `/quota-mode {self.mode or 'fast'}` switches back."
        if self.acted == "already":
            return f"{who[0].upper()}{who[1:]} is already in Relax: nothing to switch."
        if self.acted == "failed":
            return f"Could not switch {who} to Relax: {reason} It is tried again at the next crossing."
        return f"Switching {who} to Relax was not confirmed; `/quota-mode log` shows the switches."


@dataclass
class _Scope:
    """The figures one evaluation looks at for an account, or the pool."""

    remaining: float | None
    total: float | None
    renewal: float | None
    forecast: Forecast | None
    simulated: bool
    mode: str | None = None  # one account's: its speed mode (fast, relax, turbo; None: not reported)


class AlertManager(Protocol):
    """Alerts as the commands see them (``Alerts``)."""

    async def add(self, platform: str, channel: str, condition: str, *, account: str | None = None,
                  created_by: str = "") -> AlertView: ...

    async def list(self, platform: str) -> list[AlertView]: ...

    async def remove(self, platform: str, alert_id: int) -> bool: ...


class Alerts:
    def __init__(self, store: AlertsStore, pool: QuotaPool, posters: Mapping[str, Poster], *,
                 history: History | None = None,
                 mentions: Mapping[str, str] | None = None, clock: Clock | None = None,
                 policy: PostPolicy = PostPolicy(), modes: ModeSwitcher | None = None) -> None:
        self.store = store
        self.pool = pool
        self.modes = modes  # switches the account of an alert that acts (None: such an alert cannot act)
        self.posters = posters
        self.history = history
        self.mentions = dict(mentions or {})
        self.clock = clock or SystemClock()
        self.policy = policy
        self._rows: dict[int, AlertRow] = {}
        self._kick = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self.evaluations = 0
        self.last_evaluation_ms = 0.0
        self.owner = uuid.uuid4().hex[:16]  # written into each claim, see the module's doc
        self._owner_lease: Lease | None = None
        self._retry: asyncio.Task[None] | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the alerts, post what a previous run claimed but did not post, start the checker."""
        from .replicas import Lease

        self._owner_lease = Lease(self.store, OWNER_LOCK.format(self.owner))
        await self._owner_lease.take()  # a fresh name: free (unless the database is away: taken later)
        self._keeper = asyncio.get_running_loop().create_task(self._owner_lease.keep(), name="alerts-owner")
        self._rows = {row.id: row for row in await self.store.alerts()}
        await self._recover(legacy=True)
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="alert-checker")
        self.pool.subscribe(lambda account, report: self.kick())
        log.info("alerts started: %d alert(s)", len(self._rows))

    async def stop(self) -> None:
        await stop_tasks([self._worker, self._retry, self._recovering, self._keeper])
        self._worker = self._retry = self._recovering = self._keeper = None
        await stop_tasks(list(self._deliveries))
        if self._owner_lease is not None:
            await self._owner_lease.release()

    async def reload(self) -> None:
        """Re-read the alerts (another replica added or removed one, or changed a state): the rows in
        memory become the stored ones; pending alerts whose owner stopped are posted."""
        rows = {row.id: row for row in await self.store.alerts()}
        added = set(rows) - set(self._rows)
        removed = set(self._rows) - set(rows)
        self._rows = rows
        for alert_id in sorted(added):
            row = rows[alert_id]
            log.info("alert #%d (%s:%s%s=%s) added on another replica", alert_id, row.platform, row.channel,
                     f"@{row.account}" if row.account else "", row.condition)
        for alert_id in sorted(removed):
            log.info("alert #%d removed on another replica", alert_id)
        if rows and self.history is not None:
            self.history.ensure_sampling(3600.0)  # alerts need readings even when nobody types /quota
        if self._recovering is None or self._recovering.done():
            if any(row.state == "pending" for row in rows.values()):
                self._recovering = asyncio.get_running_loop().create_task(self._recover(), name="alert-recovery")

    async def _recover(self, legacy: bool = False) -> None:
        """Post the pending alerts whose owner stopped before posting them (its lock is free); with
        ``legacy`` (at start) also those claimed before claims named their owner."""
        groups: dict[str | None, list[AlertRow]] = {}
        for row in self._rows.values():
            if row.state == "pending" and row.message:
                owner = _owner(row.message)
                if owner != self.owner and (owner is not None or legacy):
                    groups.setdefault(owner, []).append(row)
        for owner, rows in groups.items():
            # an owner's lock is free once it stopped; the unnamed owner's (claims of an older version)
            # is held by the replica posting them, so replicas starting together post them once
            try:
                lock = await self.store.try_lock(OWNER_LOCK.format(owner or LEGACY_OWNER))
            except Exception as exc:  # noqa: BLE001 - logged; looked at again at the next recovery
                log.info("alerts: cannot tell whether the replica that claimed %d alert(s) still runs (%s)",
                         len(rows), exc)
                continue
            if lock is None:
                continue  # its owner runs (or another replica posts the older claims): it posts them
            try:
                # the state may have moved while the lock was taken
                fresh = {row.id: row for row in await self.store.alerts()}
                rows = [fresh[row.id] for row in rows if row.id in fresh and fresh[row.id].state == "pending"
                        and fresh[row.id].message and _owner(fresh[row.id].message or "") == owner]
                if rows:
                    log.info("%d alert(s) were claimed but not posted before %s stopped: posting them now", len(rows),
                             "the last stop" if owner is None else "the replica that claimed them")
                    await self._deliver([(row, AlertNotice.from_json(row.message or "{}")) for row in rows])
            finally:
                await lock.release()

    @property
    def count(self) -> int:
        return len(self._rows)

    def kick(self) -> None:
        """A fresh reading arrived: check the alerts soon (a burst of readings is checked once)."""
        self._kick.set()

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self.evaluate()
            except Exception as exc:
                log.warning("checking the alerts failed (%s: %s); trying again in %g s", type(exc).__name__,
                            " ".join(str(exc).split())[:200], RETRY_CHECK)
                log.debug("checking the alerts failed", exc_info=True)
                if self._retry is None or self._retry.done():
                    self._retry = asyncio.get_running_loop().create_task(self._kick_later(), name="alert-retry")

    async def _kick_later(self) -> None:
        await self.clock.sleep(RETRY_CHECK)
        self.kick()

    # --- configuration and chat -----------------------------------------------------------------
    async def sync_config(self, items: Iterable[AlertItem]) -> None:
        """Keep the configured alerts in step with QUOTA_ALERTS (their state kept while unchanged).
        Replicas starting together take turns (``bot.replicas.exclusive``), so an item is added once."""
        from .replicas import exclusive

        async with exclusive(self.store, "config:alerts"):
            await self._sync_config(items)

    async def _sync_config(self, items: Iterable[AlertItem]) -> None:
        wanted = {(i.platform, i.channel, i.account, c.text): i for i in items for c in i.conditions}
        for row in await self.store.alerts():
            if row.source != "config":
                continue
            key = (row.platform, row.channel, row.account, row.condition)
            if key in wanted:
                wanted.pop(key)
            else:
                await self.store.remove_alert(row.id)
                self._rows.pop(row.id, None)
                log.info("alert #%d (%s:%s=%s) removed: no longer in QUOTA_ALERTS", row.id, row.platform,
                         row.channel, row.condition)
        added = await self.store.add_alerts([(p, ch, acc, cond, "config", "") for p, ch, acc, cond in wanted])
        for row in added:
            self._rows[row.id] = row
            log.info("alert #%d added from QUOTA_ALERTS: %s:%s%s=%s", row.id, row.platform, row.channel,
                     f"@{row.account}" if row.account else "", row.condition)

    async def add(self, platform: str, channel: str, condition: str, *, account: str | None = None,
                  created_by: str = "") -> AlertView:
        if platform not in CHAT_PLATFORMS or platform not in self.posters:
            raise AlertError(f"This bot cannot post to {platform}: it is not configured.")
        parsed = parse_condition(condition)
        account = (account or "").strip().lower()
        names = tuple(getattr(self.pool, "names", ()))
        if account and account not in names:
            listed = ", ".join(names) if names else "none: this bot reads one account"
            echo = shown(account, 40)
            raise AlertError(f"There is no account '{echo}'. Accounts: {listed}.", echo=echo)
        if parsed.action and account == "" and len(names) > 1:
            raise AlertError(f"An alert on every account cannot switch (which account would it switch?): name the "
                             f"account, e.g. `/quota-alert add {parsed.text.replace(':', ' ')} {names[0]}`.")
        [row] = await self.store.add_alerts([(platform, channel, account, parsed.text, "chat", created_by)])
        self._rows[row.id] = row
        if self.history is not None:
            self.history.ensure_sampling(3600.0)  # alerts need readings even when nobody types /quota
        log.info("alert #%d added from chat: %s:%s%s=%s", row.id, platform, channel, f"@{account}" if account else "",
                 parsed.text)
        note = ""
        scope = await self._scope(account)
        if scope is not None and self._below(parsed, scope):
            note = "The fast time is already below it: the alert fires with the next reading."
        if parsed.action:
            note = (note + " " if note else "") + self._acting_note(account)
        return self._view(row, note)

    def _acting_note(self, account: str) -> str:
        """What an alert that acts will do, or (added all the same, like a QUOTA_ALERTS item) why it
        cannot: the provider has no call for it, the simulator, or a bot without the switcher."""
        whom = f"`{account}`" if account else "the account"
        cannot = (self.modes.cannot_switch(self._service_name(account), account or None) if self.modes is not None
                  else None)
        if self.modes is None or cannot is not None:
            why = cannot.user_message.rstrip(".") if cannot is not None else "This bot cannot switch speed modes"
            return f"{why}: when it fires it posts that instead of switching {whom} to Relax."
        return (f"When it fires it switches {whom} to Relax first; when it re-arms, back to the mode before, unless "
                "someone switched it since.")

    def _service_name(self, account: str) -> str:
        """The service an alert of ``account`` watches ('' without an accounts file: the one account's)."""
        return account or str(next(iter(getattr(self.pool, "services", {})), ""))

    async def list(self, platform: str) -> list[AlertView]:
        return [self._view(row) for row in sorted(self._rows.values(), key=lambda r: r.id) if row.platform == platform]

    async def remove(self, platform: str, alert_id: int) -> bool:
        removed = await self.store.remove_alert(alert_id, platform)
        if removed:
            self._rows.pop(alert_id, None)
            log.info("alert #%d removed", alert_id)
        return removed

    def _view(self, row: AlertRow, note: str = "") -> AlertView:
        fired = datetime.fromtimestamp(row.fired_at, timezone.utc) if row.fired_at and row.state == "fired" else None
        return AlertView(row.id, row.platform, row.channel, row.account, row.condition, row.source, row.state, fired,
                         row.failing, note)

    # --- evaluation -----------------------------------------------------------------------------
    async def _scope(self, account: str) -> _Scope | None:
        """The latest figures of an account ('' = the pool: the sum of the accounts that have a reading)."""
        services = getattr(self.pool, "services", {})
        names = [account] if account else list(services)
        if not account and any(services[n].last_report is None and services[n].last_error is None for n in names):
            return None  # the pool is judged once every account has answered (a reading or an error)
        reports = [services[n].last_report for n in names if n in services and services[n].last_report is not None]
        counted = [r for r in reports if r.remaining is not None]
        if not counted:
            return None
        remaining = sum(r.remaining.hours for r in counted)
        total = None if any(r.total is None for r in counted) else sum(r.total.hours for r in counted)
        renewals = [r.renewal.timestamp() for r in counted if r.renewal is not None]
        forecast = None
        if self.history is not None:
            try:
                forecast = await (self.history.forecast(names[0]) if len(names) == 1
                                  else self.history.pooled_forecast([n for n in names if services[n].last_report]))
            except Exception:
                log.exception("the forecast for the alerts could not be computed")
        return _Scope(remaining, total, min(renewals) if renewals else None, forecast,
                      all(r.simulated for r in counted), counted[0].mode if len(names) == 1 else None)

    @staticmethod
    def _below(condition: Condition, scope: _Scope) -> bool:
        if condition.kind == "runout":
            f = scope.forecast
            return bool(f is not None and getattr(f, "enough", False) and f.lasts_to_renewal is False
                        and (f.short_by_days or 0) >= RUNOUT_DAYS)
        line = condition.threshold(scope.total)
        return line is not None and scope.remaining is not None and scope.remaining < line

    @staticmethod
    def _back_above(condition: Condition, scope: _Scope) -> bool:
        if condition.kind == "runout":
            f = scope.forecast
            return bool(f is not None and getattr(f, "enough", False) and f.lasts_to_renewal is not False)
        line = condition.threshold(scope.total)
        if line is None or scope.remaining is None:
            return False
        # 5 % of the total; without a total (a plan that gives none), 5 % of the line itself, at least 6 min
        margin = scope.total * MARGIN_PERCENT / 100 if scope.total else max(line * MARGIN_PERCENT / 100, 0.1)
        return scope.remaining >= line + margin

    async def evaluate(self) -> int:
        """Check every alert against the latest readings; post the crossed ones. Returns how many fired."""
        started = time.perf_counter()
        now = self.clock.now().timestamp()
        scopes: dict[str, _Scope | None] = {}
        for account in {row.account for row in self._rows.values()}:
            scopes[account] = await self._scope(account)
        fire: list[tuple[AlertRow, AlertNotice]] = []
        rearm: list[int] = []
        acting: dict[int, tuple[Condition, _Scope, bool]] = {}  # re-armed alerts that act: why, and the figures
        for row in self._rows.values():
            scope = scopes.get(row.account)
            if scope is None:
                continue
            condition = parse_condition(row.condition)
            if row.state == "armed" and self._below(condition, scope):
                fire.append((row, self._notice(row, condition, scope)))
            elif row.state == "fired":
                renewed = row.fired_renewal is not None and now >= row.fired_renewal
                if renewed or self._back_above(condition, scope):
                    rearm.append(row.id)
                    if condition.action:
                        acting[row.id] = (condition, scope, renewed)
        self.evaluations += 1
        self.last_evaluation_ms = (time.perf_counter() - started) * 1000
        if rearm:
            # the ids this call re-armed are its claim on their switch back: one replica switches back
            rearmed = await self.store.rearm_alerts(rearm) or set()
            backs = [(self._rows[i], *acting[i]) for i in sorted(rearmed) if i in acting]
            for alert_id in rearm:
                row = self._rows[alert_id]
                self._rows[alert_id] = _replace(row, state="armed", message=None)
                log.info("alert #%d re-armed", alert_id)
            if backs:
                back = asyncio.get_running_loop().create_task(self._switch_back(backs), name="alert-switch-back")
                self._deliveries.add(back)
                back.add_done_callback(self._deliveries.discard)
        if not fire:
            return 0
        def rearm_at(account: str) -> float | None:  # the renewal re-arms only if it is still ahead
            renewal = scopes[account].renewal  # type: ignore[union-attr]  # an account that fired has its scope
            return renewal if renewal is not None and renewal > now else None

        claims = [(row.id, now, rearm_at(row.account), self._message(notice)) for row, notice in fire]
        claimed = await self.store.claim_alerts(claims)
        runs = []
        for (row, notice), (_, _, renewal, message) in zip(fire, claims):
            if row.id in claimed:
                row = _replace(row, state="pending", fired_at=now, fired_renewal=renewal, message=message)
                self._rows[row.id] = row
                runs.append((row, notice))
        if len(runs) < len(fire):  # another replica claimed some first: take the stored states
            try:
                stored = {row.id: row for row in await self.store.alerts()}
                for row, _ in fire:
                    if row.id not in claimed and row.id in stored:
                        self._rows[row.id] = stored[row.id]
                    elif row.id not in stored:
                        self._rows.pop(row.id, None)
            except Exception as exc:  # noqa: BLE001 - the next reload reads them
                log.debug("alerts: re-reading the states failed (%s)", exc)
        if runs:
            task = asyncio.get_running_loop().create_task(self._deliver(runs))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return len(runs)

    def _message(self, notice: AlertNotice) -> str:
        """The stored message of a claim: the notice, and the owner that posts it."""
        return notice.to_json(owner=self.owner)

    def _notice(self, row: AlertRow, condition: Condition, scope: _Scope) -> AlertNotice:
        left = _hours(scope.remaining)
        of = f" of {_hours(scope.total)}" if scope.total else ""
        who = f" ({row.account})" if row.account else (" (all accounts)" if len(getattr(self.pool, "names", ())) > 1 else "")
        if condition.kind == "runout":
            f = scope.forecast
            assert f is not None  # a run-out is only found on a forecast
            headline = (f"Fast time{who} will run out about {_days(f.short_by_days)} before the renewal: "
                        f"{left}{of} left")
        else:
            headline = f"Fast time{who} below {condition.label}: {left}{of} left"
        pace = None
        if scope.forecast is not None and self.history is not None:
            from .forecast import pace_line

            pace = pace_line(scope.forecast, getattr(self.history, "tz", timezone.utc))
        renewal = datetime.fromtimestamp(scope.renewal, timezone.utc) if scope.renewal else None
        return AlertNotice(row.id, headline, pace, renewal, row.account, row.condition, self.mentions.get(row.platform),
                           scope.simulated, action=condition.action, mode=scope.mode if condition.action else None)

    # --- alerts that act (``2h:relax``) ------------------------------------------------------------
    async def _act(self, row: AlertRow, notice: AlertNotice) -> AlertNotice:
        """Switch the account of an alert that acts to Relax: in the replica that claimed the crossing (or
        recovers the claim), before the post. What came of it is stored with the claim, so a recovery
        posts it without switching again; a failure is posted once and tried at the next crossing."""
        if not notice.action or notice.acted is not None:
            return notice
        if notice.mode == "relax":
            acted = dataclasses.replace(notice, acted="already")
        elif self.modes is None:
            acted = dataclasses.replace(notice, acted="failed", reason="This bot cannot switch speed modes.")
        else:
            try:
                switched = await self.modes.switch(row.account or None, "relax", who=f"alert #{row.id}", cause="alert",
                                                   platform=row.platform, channel=row.channel)
                acted = dataclasses.replace(notice, acted="ok", mode=switched.from_mode or notice.mode)
            except UserError as exc:  # refused, cannot switch, not reached: the switcher logged and stored it
                acted = dataclasses.replace(notice, acted="failed", reason=exc.user_message)
            except Exception as exc:  # noqa: BLE001 - logged by the switcher; the alert is posted all the same
                acted = dataclasses.replace(notice, acted="failed", reason=user_sentence(exc))
        log.info("alert #%d: switching %s to Relax: %s%s", row.id, self._service_name(row.account), acted.acted,
                 f" ({acted.reason})" if acted.reason else "")
        try:
            await self.store.alert_message(row.id, self._message(acted))
        except Exception as exc:  # noqa: BLE001 - the post says what was done; only a recovery would not know
            log.warning("alert #%d: what its switch came to was not stored (%s)", row.id, type(exc).__name__)
        return acted

    async def _switch_back(self, backs: builtins.list[tuple[AlertRow, Condition, _Scope, bool]]) -> None:
        """The alerts that act and re-armed in this replica: each account back to the mode its alert
        switched it away from, and one post that says so."""
        for row, condition, scope, renewed in backs:
            try:
                notice = await self._back(row, condition, scope, renewed)
            except Exception:
                log.exception("alert #%d: switching back failed unexpectedly", row.id)
                continue
            if notice is None:
                continue
            poster = self.posters.get(row.platform)
            if poster is None:
                log.warning("alert #%d: %s is not configured, the switch back is not posted", row.id, row.platform)
                continue
            failure = await deliver(poster, row.channel, notice, self.policy, self.clock, f"alert #{row.id} (back)")
            if failure is not None:
                log.warning("alert #%d: the switch back was not posted to %s:%s: %s", row.id, row.platform,
                            row.channel, failure)

    async def _back(self, row: AlertRow, condition: Condition, scope: _Scope, renewed: bool) -> AlertNotice | None:
        """The switch back of one re-armed alert, or None when it has nothing to switch back: its switch
        to Relax is not the last one that went through (it did not switch, or a person switched since),
        or the account is no longer in Relax."""
        if self.modes is None:
            return None
        name, who = self._service_name(row.account), f"alert #{row.id}"
        try:
            switches = await self.store.mode_switches(LOOK_BACK, name)
        except Exception as exc:  # noqa: BLE001 - never overrule what cannot be checked
            log.warning("alert #%d re-armed, but the log of switches cannot be read (%s): %s is left as it is", row.id,
                        type(exc).__name__, name)
            return None
        last = next((r for r in switches if r.outcome == "ok"), None)
        if last is None or last.who != who or last.to_mode != "relax":
            if last is not None and last.who != who and any(r.who == who and r.outcome == "ok" for r in switches):
                log.info("alert #%d re-armed; %s was switched since (by %s): left as it is", row.id, name, last.who)
            return None
        if scope.mode is not None and scope.mode != "relax":
            log.info("alert #%d re-armed; %s is in %s now, not the Relax it set: left as it is", row.id, name, scope.mode)
            return None
        whose = f" ({row.account})" if row.account else ""
        if renewed:
            headline = f"The plan{whose} renewed: {_hours(scope.remaining)} of fast time left"
        elif condition.kind == "runout":
            headline = f"Fast time{whose} lasts to the renewal again"
        else:
            headline = f"Fast time{whose} back above {condition.label}: {_hours(scope.remaining)} left"
        notice = AlertNotice(row.id, headline, None, None, row.account, row.condition, None, scope.simulated,
                             action=condition.action, kind="back", mode=last.from_mode)
        if last.from_mode in (None, "relax"):
            return dataclasses.replace(notice, acted="unknown", mode=None)
        try:
            await self.modes.switch(row.account or None, last.from_mode, who=who, cause="alert", platform=row.platform,
                                    channel=row.channel)
            notice = dataclasses.replace(notice, acted="ok")
        except UserError as exc:
            notice = dataclasses.replace(notice, acted="failed", reason=exc.user_message)
        except Exception as exc:  # noqa: BLE001 - logged by the switcher; the post says it failed
            notice = dataclasses.replace(notice, acted="failed", reason=user_sentence(exc))
        log.info("alert #%d re-armed: switching %s back to %s: %s", row.id, name, last.from_mode, notice.acted)
        return notice

    async def _deliver(self, runs: builtins.list[tuple[AlertRow, AlertNotice]]) -> None:
        gate = asyncio.Semaphore(self.policy.concurrency)

        async def one(row: AlertRow, notice: AlertNotice) -> tuple[int, str | None]:
            async with gate:
                poster = self.posters.get(row.platform)
                if poster is None:
                    return row.id, f"{row.platform} is not configured"
                notice = await self._act(row, notice)  # an alert that acts switches first, then says so
                failure = await deliver(poster, row.channel, notice, self.policy, self.clock, f"alert #{row.id}")
                metrics.ALERTS.labels(row.platform, "failed" if failure is not None else "posted").inc()
                if failure is not None:
                    log.warning("alert #%d (%s:%s) is failing: %s", row.id, row.platform, row.channel, failure)
                elif row.failing is not None:
                    log.info("alert #%d recovered: posted to %s:%s", row.id, row.platform, row.channel)
                else:
                    log.info("alert #%d posted to %s:%s: %s", row.id, row.platform, row.channel, notice.headline)
                return row.id, failure

        results = await asyncio.gather(*(one(row, notice) for row, notice in runs))
        # a post that went out must be recorded (pending would be posted again by the next start): the
        # database away, it is tried again for a while
        if not await persist(lambda: self.store.alerts_posted(results), f"{len(results)} alert post(s)", self.clock,
                             patience=600.0):
            return
        for alert_id, failure in results:
            if alert_id in self._rows:
                self._rows[alert_id] = _replace(self._rows[alert_id], state="fired", failing=failure)


def _owner(message: str) -> str | None:
    """The owner named in a claim's stored message (None: claimed before claims named one)."""
    try:
        owner = json.loads(message).get("owner")
    except (ValueError, AttributeError):
        return None
    return str(owner) if owner else None


def _replace(row: AlertRow, **changes: Any) -> AlertRow:
    return AlertRow(**{**row.__dict__, **changes})


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _hours(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{_num(value)} h" if value >= 1 or value == 0 else f"{_num(value * 60)} min"


def _days(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "some days"
    days = round(value)
    return f"{days} day" if days == 1 else f"{days} days"


def parse_mentions(value: str) -> dict[str, str]:
    """``QUOTA_ALERT_MENTION``: ``discord:<role id>`` and/or ``slack:<user group id>``, comma-separated."""
    mentions: dict[str, str] = {}
    for raw in (value or "").split(","):
        item = raw.strip()
        if not item:
            continue
        platform, colon, ident = item.partition(":")
        platform, ident = platform.strip().lower(), ident.strip()
        if not colon or platform not in PLATFORMS:
            raise AlertError(f"QUOTA_ALERT_MENTION: '{item}': write discord:<role id> or slack:<user group id>")
        if platform == "discord" and not ident.isdigit():
            raise AlertError(f"QUOTA_ALERT_MENTION: '{item}': a Discord role id is a number")
        if platform == "slack" and not re.fullmatch(r"S[A-Z0-9]{2,}", ident):
            raise AlertError(f"QUOTA_ALERT_MENTION: '{item}': a Slack user group id starts with S, e.g. S0123ABC")
        mentions[platform] = ident
    return mentions
