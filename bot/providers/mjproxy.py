"""midjourney-proxy, trueai-org fork (self-hosted): trigger a sync
(``POST {base}/mj/admin/account-sync/{accountId}``), then read the account
(``GET {base}/mj/admin/account/{accountId}``), keeping the proxy's own sync throttle
(shared/providers.md, "midjourney-proxy"; docs/architecture.md, "Providers").
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote

from ..errors import BadResponse, BadToken, QuotaError, UpstreamUnavailable
from ..report import QuotaReport, parse_info, parse_timestamp
from .base import HttpProvider, _DeadlineReached, _path, _Retryable

log = logging.getLogger("bot.upstream")

# The sync blocks while the proxy runs /info and /settings in Discord (tens of seconds when Discord is
# slow); the transport cuts every request at the reading's deadline anyway, so the deadline decides.
DEFAULT_REQUEST_TIMEOUT = 120.0
DEFAULT_MIN_SYNC_INTERVAL = 300.0
# The proxy's throttle (providers.md) in units of the 5-minute window: (window ×, syncs allowed in it).
SYNC_SCHEDULE = ((1, 1), (2, 2), (6, 3), (12, 5))
_NOT_FOUND = ("not found", "not exist", "no such account", "unknown account", "不存在")
_OLDEST_SANE = datetime(2000, 1, 1, tzinfo=timezone.utc)  # C#'s DateTime.MinValue & co: never read


class UnknownProxyAccount(QuotaError):
    """The proxy holds no account with the configured id."""

    code = "unknown_proxy_account"


class NoReading(UpstreamUnavailable):
    """The proxy has never read this account's /info, and could not read it now."""

    code = "no_reading"


class MjproxyProvider(HttpProvider):
    """trueai-org midjourney-proxy: sync the account (when the throttle allows), then read it."""

    name = "mjproxy"
    label = "midjourney-proxy"
    # The limiter spaces every reading, sync or not. Syncs keep the proxy's own throttle through
    # min_sync_interval (see _sync_wait), and a read is a lookup in the proxy's database, so 1 s only
    # keeps a burst of readings from hammering it; 300 s here would hold back every cheap read.
    default_interval = 1.0

    def __init__(self, *, base_url: str, token: str | None, account_id: str,
                 min_sync_interval: float = DEFAULT_MIN_SYNC_INTERVAL,
                 account_setting: str = "MJPROXY_ACCOUNT_ID",
                 clock: Callable[[], float] = time.monotonic, **options: Any) -> None:
        options.setdefault("request_timeout", DEFAULT_REQUEST_TIMEOUT)
        options.setdefault("token_setting", "MJPROXY_API_SECRET")
        super().__init__(base_url=base_url, token=token or "", **options)
        self.account_id = str(account_id or "").strip()
        if not self.account_id:
            raise ValueError(f"midjourney-proxy needs an account id ({account_setting})")
        self.account_setting = account_setting
        self.min_sync_interval = float(min_sync_interval)
        self._clock = clock
        self._syncs: deque[float] = deque()  # clock times of syncs the proxy accepted (or may still run)
        self._sync_lock = asyncio.Lock()
        account = quote(self.account_id, safe="")
        self._sync_url = f"{self._base}/mj/admin/account-sync/{account}"
        self._account_url = f"{self._base}/mj/admin/account/{account}"

    def __repr__(self) -> str:  # never the secret
        return (f"MjproxyProvider(base={self._base!r}, account={self.account_id!r}, "
                f"simulated={self.simulated})")

    def auth_headers(self) -> dict[str, str]:
        return {"Mj-Api-Secret": self._token} if self._token else {}

    def bad_token(self, where: str) -> BadToken:
        if not self._token:
            return BadToken(where, user_message=f"midjourney-proxy asks for its admin secret; ask the operator "
                                                f"to set {self.token_setting}.")
        return BadToken(where, user_message=f"midjourney-proxy rejected the admin secret ({self.token_setting}); "
                                            "ask the operator to check it.")

    # --- one reading ------------------------------------------------------------------------------
    async def _read(self, deadline: float) -> QuotaReport:
        outcome, refusal = await self._sync(deadline)
        account = await self._call("GET", self._account_url, deadline)
        self._polls += 1  # the read is this reading's one poll (the sync is its ask)
        return self._report(account, outcome, refusal)

    async def _sync(self, deadline: float) -> tuple[str, str]:
        """Sync unless the proxy would refuse it: ("synced" | "skipped" | "refused", the proxy's message)."""
        try:  # one sync at a time: a second would be refused as concurrent
            await asyncio.wait_for(self._sync_lock.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise _DeadlineReached("waiting for this provider's running sync") from None
        try:
            wait = self._sync_wait()
            if wait > 0:
                log.info("mjproxy: account %s synced %.0fs ago; reading without a sync (the proxy allows the "
                         "next in %.0fs)", self.account_id, self._clock() - self._syncs[-1], wait)
                return "skipped", ""
            started = time.monotonic()
            try:
                answer = await self._call("POST", self._sync_url, deadline, ask=True)
            except _DeadlineReached:
                # The proxy is still running it and counts it against its throttle: so do we.
                self._syncs.append(self._clock())
                log.warning("mjproxy: sync of account %s still running at the deadline", self.account_id)
                raise _DeadlineReached("the account sync did not finish") from None
            if not isinstance(answer, dict):
                raise BadResponse(f"POST {_path(self._sync_url)}: not an object: {str(answer)[:200]}")
            if _accepted(answer):
                self._syncs.append(self._clock())
                log.info("mjproxy: synced account %s in %.1fs", self.account_id, time.monotonic() - started)
                return "synced", ""
            message = self._message(answer) or "no reason given"
            log.warning("mjproxy: sync of account %s refused: %r; reading the stored account", self.account_id,
                        message)
            return "refused", message
        finally:
            self._sync_lock.release()

    def _sync_wait(self) -> float:
        """Seconds until the proxy's throttle would accept a sync (0: now), from the syncs we made."""
        if self.min_sync_interval <= 0:
            return 0.0
        now = self._clock()
        horizon = max(scale for scale, _ in SYNC_SCHEDULE) * self.min_sync_interval
        while self._syncs and now - self._syncs[0] >= horizon:
            self._syncs.popleft()
        wait = 0.0
        for scale, most in SYNC_SCHEDULE:
            window = scale * self.min_sync_interval
            inside = [t for t in self._syncs if now - t < window]
            if len(inside) >= most:  # free again when the oldest that fills the window leaves it
                wait = max(wait, inside[-most] + window - now)
        return wait

    def _report(self, account: Any, outcome: str, refusal: str) -> QuotaReport:
        where = f"GET {_path(self._account_url)}"
        if not isinstance(account, dict):
            raise BadResponse(f"{where}: not an account object: {str(account)[:200]}")
        if account.get("success") is False:  # an error body where the account should be
            message = self._message(account)
            raise UpstreamUnavailable(f"{where}: success=false message={message!r}",
                                      user_message=f"midjourney-proxy refused to show the account: "
                                                   f"{message or 'no reason given'}")
        now = datetime.now(timezone.utc)
        info_at = _info_time(account.get("infoUpdated"))
        if info_at is None and not _has_fast_time(account):
            if outcome == "refused":
                raise NoReading(f"{where}: never read; sync refused: {refusal!r}",
                                user_message=f"midjourney-proxy has not read this account's /info yet and "
                                             f"refused to sync it now: {refusal}")
            raise NoReading(f"{where}: no reading after outcome={outcome}",
                            user_message="midjourney-proxy holds no /info reading of this account yet; "
                                         "try again in a few minutes.")
        report = parse_info(account, read_at=info_at or now, simulated=self.simulated)
        report = replace(report, read_at=info_at or now)  # epoch-number forms too, which parse_info skips
        if info_at is None:
            log.warning("mjproxy: account %s has no usable infoUpdated (%r): the reading's age is unknown",
                        self.account_id, str(account.get("infoUpdated"))[:40])
            return report
        age = max(0.0, (now - info_at).total_seconds())
        if outcome == "synced":
            log.info("mjproxy: account %s read; the reading is %.0f s old", self.account_id, age)
            if age > 120:
                log.warning("mjproxy: the sync succeeded but the proxy's reading is %.0f s old", age)
        else:
            log.info("mjproxy: account %s %s; the stored reading is %.0f s old (read at %s)", self.account_id,
                     "not synced (throttle)" if outcome == "skipped" else "sync refused", age,
                     info_at.isoformat(timespec="seconds"))
        return report

    # --- the proxy's error bodies --------------------------------------------------------------------
    def error_for(self, status: int, data: Any, where: str, headers: Any) -> QuotaError | _Retryable | None:
        message = self._message(data)
        detail = f"{where}: message={message!r}" if message else where
        refused = isinstance(data, dict) and data.get("success") is False
        if status == 404 or ((refused or status >= 400) and _not_found(message)):
            sentence = (f"midjourney-proxy has no account {self.account_id!r}; ask the operator to check "
                        f"{self.account_setting} (and the proxy's URL).")
            return UnknownProxyAccount(detail, user_message=sentence)
        if status in (401, 403):
            return self.bad_token(where)
        if 400 <= status < 500 and status != 429 and message:
            return UpstreamUnavailable(detail, user_message=f"midjourney-proxy refused the request: {message}")
        return None

    def _message(self, data: Any) -> str:
        """The proxy's message, one line, clipped, never carrying the secret."""
        if not isinstance(data, dict):
            return ""
        raw = next((data[k] for k in ("message", "description", "msg", "error") if isinstance(data.get(k), str)), "")
        text = " ".join(raw.split())
        if self._token:
            text = text.replace(self._token, "***")
        return text[:160]


def _accepted(answer: dict[str, Any]) -> bool:
    """``success: true`` (or "true"); without ``success``, the proxy's success code 1."""
    success = answer.get("success")
    if isinstance(success, bool):
        return success
    if isinstance(success, str):
        return success.strip().lower() == "true"
    return success is None and answer.get("code") in (1, 200, "1", "200")


def _not_found(message: str) -> bool:
    text = message.lower()
    return any(words in text for words in _NOT_FOUND)


def _has_fast_time(account: dict[str, Any]) -> bool:
    props = account.get("properties")
    values = [account.get("fastTimeRemaining")]
    if isinstance(props, dict):
        values += [v for k, v in props.items() if "".join(c for c in str(k).lower() if c.isalnum())
                   == "fasttimeremaining"]
    return any(v not in (None, "", [], {}) for v in values)


def _info_time(value: Any) -> datetime | None:
    """``infoUpdated`` in UTC: ISO (``…Z``, ``+08:00``, 7 fraction digits) or epoch seconds/milliseconds;
    None when absent, unreadable or a placeholder before 2000 (never read)."""
    when: datetime | None = None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            return None
        try:
            when = datetime.fromtimestamp(value / 1000 if value > 1e11 else value, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        when = parse_timestamp(value)
    if when is None:
        return None
    try:
        when = when.astimezone(timezone.utc)
        when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return when if when >= _OLDEST_SANE else None
