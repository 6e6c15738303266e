"""Upstream providers: where readings come from.

``Provider`` is the small interface the service depends on; ``NextLegProvider`` speaks TheNextLeg
"info" protocol (ask, then poll the message until it is done) over aiohttp. A second provider only
has to implement ``fetch`` and ``close``; no adapter changes.

Manners (see shared/upstream.md): the token travels only in the Authorization header; every ask
carries our own ``ref``; asks go through a limiter (one per ``min_ask_interval``); polling starts
fast and backs off with jitter; 429/5xx/connection errors are retried within one deadline with
``Retry-After`` honoured; 401/403 are final; ``"incomplete"`` stops polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import aiohttp
import yarl
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from .errors import BadResponse, BadToken, Expired, QuotaError, RateLimited, TimedOut, UpstreamUnavailable
from .report import QuotaReport, parse_result

log = logging.getLogger(__name__)

DEFAULT_MIN_ASK_INTERVAL = 3.0  # the upstream allows one request per 3 s per account


class Provider(Protocol):
    """Where the service gets one reading of the account."""

    simulated: bool

    async def fetch(self) -> QuotaReport: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class PollPolicy:
    """When to poll next.

    Without progress information, polling starts fast and backs off: 1.5 s → ×1.5 → cap 3 s, ±jitter
    (an /info job takes Midjourney a second or more, so an earlier first poll is almost always wasted).
    When the upstream reports a progress 0 < p < 100, the job's finish is estimated from it
    (elapsed × 100 / p is an upper bound while progress grows evenly, as integer progress is rounded
    down) and the next poll waits until then, at most ``estimate_cap`` seconds: one poll lands just
    after the result is ready instead of many blind ones (see bench/bench_core.py).
    """

    initial: float = 1.5
    factor: float = 1.5
    cap: float = 3.0
    jitter: float = 0.1  # fraction of each delay, both ways
    use_progress: bool = True
    estimate_cap: float = 20.0
    estimate_margin: float = 0.05
    min_delay: float = 0.25

    def after_progress(self, progress: Any, elapsed: float, uncertainty: float = 0.0) -> float | None:
        """The wait the progress suggests, or None to fall back to the backoff. ``elapsed`` counts from
        when the upstream answered the ask; ``uncertainty`` is how much earlier it may have started the
        job (the ask's round trip), scaled up like the estimate itself so the poll lands after done."""
        if not self.use_progress or isinstance(progress, bool) or not isinstance(progress, (int, float)):
            return None
        if not 0 < progress < 100 or elapsed <= 0:
            return None
        scale = 100.0 / progress
        eta = elapsed * scale - elapsed + min(uncertainty, 1.0) * scale
        return min(self.estimate_cap, max(self.min_delay, eta + self.estimate_margin))

    def delays(self, rng: random.Random):
        delay = self.initial
        while True:
            yield max(0.0, delay * (1 + rng.uniform(-self.jitter, self.jitter)))
            delay = min(self.cap, delay * self.factor)


class AskLimiter:
    """Never lets two asks start less than ``interval`` seconds apart (shared by every caller).

    Callers queue in order, so an ask waits at most one interval for each ask queued before it, and
    then goes out. That wait is the bot's own doing, not the upstream's: the first ask of a reading
    waits here before its deadline starts (``wait()`` with no deadline); a retried ask inside a
    reading passes its deadline and gives up if its turn would come after it."""

    def __init__(self, interval: float = DEFAULT_MIN_ASK_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last: float | None = None

    async def wait(self, deadline: float | None = None) -> float:
        """Wait for this ask's turn; returns the seconds waited. Raises ``_DeadlineReached`` when a
        ``deadline`` is given and the turn would come after it."""
        began = self._clock()
        async with self._lock:
            if self._last is not None:
                pause = self._last + self.interval - self._clock()
                if pause > 0:
                    if deadline is not None and self._clock() + pause > deadline:
                        raise _DeadlineReached()
                    await asyncio.sleep(pause)
            self._last = self._clock()
        return self._clock() - began


class _DeadlineReached(Exception):
    pass


class _Retryable(Exception):
    """A failed request worth another try; ``error`` is what the user sees if time runs out."""

    def __init__(self, error: QuotaError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            value = (parsedate_to_datetime(raw) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(value, 600.0)) if math.isfinite(value) else None


class NextLegProvider:
    """TheNextLeg protocol: ``{method} {base}{prefix}/info`` then ``GET {base}{prefix}/message/{id}``."""

    simulated = False

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        path_prefix: str = "/v2",
        info_method: str = "GET",
        poll_timeout: float = 90.0,
        poll: PollPolicy = PollPolicy(),
        limiter: AskLimiter | None = None,
        request_timeout: float = 20.0,
        simulated: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self._root = base_url.rstrip("/") + prefix
        self._token = token
        self._method = info_method.upper()
        self.poll_timeout = poll_timeout
        self._poll = poll
        self._limiter = limiter or AskLimiter()
        self._request_timeout = request_timeout
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self.simulated = simulated
        self.last_stats: dict[str, Any] = {}
        self._ask_rtt = 0.0

    def __repr__(self) -> str:  # never the token
        return f"NextLegProvider(root={self._root!r}, method={self._method}, simulated={self.simulated})"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
                raise_for_status=False,
            )
        return self._session

    async def fetch(self) -> QuotaReport:
        # The deadline starts when the ask goes out: the wait for the limiter's turn before it is the
        # bot's own doing, bounded on its own (one interval per ask queued ahead), and must not eat
        # the upstream's time.
        queued = await self._limiter.wait()
        started = time.monotonic()
        deadline = started + self.poll_timeout
        ref = f"quota-bot-{uuid.uuid4().hex[:16]}"
        polls = 0
        pending_without_result = 0
        try:
            receipt = await self._call(self._method, f"{self._root}/info", deadline, ask=True, json={"ref": ref})
            message_id = _message_id(receipt)
            log.info("upstream accepted info ask ref=%s message=%s", ref, message_id)
            expire_mins = max(1, math.ceil(self.poll_timeout / 60))
            url = f"{self._root}/message/{message_id}"
            asked_at = time.monotonic()  # progress counts from (about) the upstream's receipt of the ask
            backoff = self._poll.delays(self._rng)
            delay = next(backoff)
            while True:
                left = deadline - time.monotonic()
                if left <= 0.05:
                    raise _DeadlineReached()
                await asyncio.sleep(min(delay, left - 0.05))  # a last poll just before the deadline
                polls += 1
                message = await self._call("GET", url, deadline, params={"expireMins": str(expire_mins)})
                progress = message.get("progress") if isinstance(message, dict) else None
                if isinstance(progress, str) and progress.strip().lower() == "incomplete":
                    raise Expired(f"message {message_id} progress incomplete after {polls} polls")
                result = poll_result(message)
                if result is not None and (progress is None or progress_is_done(progress)):
                    report = parse_result(result, read_at=datetime.now(timezone.utc), simulated=self.simulated)
                    log.info("upstream reading done message=%s polls=%d in %.2fs", message_id, polls,
                             time.monotonic() - started)
                    return report
                if progress_is_done(progress):  # 100 with an empty or null response: not a result yet
                    pending_without_result += 1
                estimate = self._poll.after_progress(progress_number(progress), time.monotonic() - asked_at,
                                                     self._ask_rtt)
                delay = estimate if estimate is not None else next(backoff)
                log.debug("poll %d of message %s: progress=%r, next in %.2fs", polls, message_id, progress, delay)
        except _DeadlineReached:
            detail = f"no result after {polls} polls" + (
                f" ({pending_without_result} said progress 100 without a result)" if pending_without_result else "")
            raise TimedOut(self.poll_timeout, detail, queued=queued, interval=self._limiter.interval) from None
        finally:
            self.last_stats = {"polls": polls, "seconds": time.monotonic() - started, "queued": queued}

    async def _call(self, method: str, url: str, deadline: float, *, ask: bool = False, **kwargs: Any) -> Any:
        """One request with retries for 429/5xx/connection errors, all within ``deadline``."""
        last: list[_Retryable] = []

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                return exc.retry_after
            backoff = min(self._poll.cap, self._poll.initial * self._poll.factor ** (state.attempt_number - 1))
            return backoff * (1 + self._rng.uniform(0, self._poll.jitter))

        def stop(state: RetryCallState) -> bool:
            return time.monotonic() + (state.upcoming_sleep or 0.0) >= deadline

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Retryable), wait=wait, stop=stop, reraise=True
            ):
                with attempt:
                    try:
                        again = ask and attempt.retry_state.attempt_number > 1
                        return await self._once(method, url, deadline, ask=ask, limited=again, **kwargs)
                    except _Retryable as exc:
                        last[:] = [exc]
                        log.warning("upstream %s %s: %s; will retry within the deadline", method,
                                    _path(url), exc.error.detail or exc.error.code)
                        raise
        except _Retryable as exc:  # out of time while retrying: the last failure says most
            raise exc.error from None
        except _DeadlineReached:
            if last:
                raise last[0].error from None
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method: str, url: str, deadline: float, *, ask: bool, limited: bool,
                    **kwargs: Any) -> Any:
        if limited:
            await self._limiter.wait(deadline)
        sent = time.monotonic()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _DeadlineReached()
        timeout = aiohttp.ClientTimeout(total=min(self._request_timeout, remaining))
        try:
            async with self._client().request(method, url, timeout=timeout, **kwargs) as resp:
                body = await resp.read()
                status = resp.status
                headers = resp.headers
            if ask:
                self._ask_rtt = time.monotonic() - sent
        except asyncio.TimeoutError:
            if time.monotonic() >= deadline - 0.05:
                raise _DeadlineReached() from None
            raise _Retryable(UpstreamUnavailable(f"{method} {_path(url)}: request timed out")) from None
        except aiohttp.ClientError as exc:
            raise _Retryable(UpstreamUnavailable(f"{method} {_path(url)}: {type(exc).__name__}")) from None

        where = f"{method} {_path(url)} -> HTTP {status}"
        if status in (401, 403):
            raise BadToken(where)
        if status == 429:
            raise _Retryable(RateLimited(where), _retry_after(headers))
        if status >= 500:
            raise _Retryable(UpstreamUnavailable(where), _retry_after(headers))
        if status != 200 and not 200 <= status < 300:
            raise UpstreamUnavailable(f"{where}: {_snippet(body)}")
        try:
            data = json.loads(body)
        except ValueError:
            raise BadResponse(f"{where}: not JSON: {_snippet(body)}") from None
        if isinstance(data, dict) and data.get("success") is False:
            raise UpstreamUnavailable(f"{where}: success=false msg={str(data.get('msg', ''))[:200]!r}",
                                      user_message=_refusal(data.get("msg")))
        return data


# --- the done rule (shared/upstream.md) ------------------------------------------------------------
# Done means progress 100 (a number or the string) with a result object that has ``content``; with no
# progress field at all, a result object with ``content`` alone is done. An empty or null
# ``response`` is never a result, whatever the progress says: keep polling until the deadline.

def _has_content(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("content") not in (None, "", {}, [])


def poll_result(message: Any) -> dict[str, Any] | None:
    """The result object of a poll answer, or None: under ``response`` (what real clients read,
    preferred) or flat beside ``progress`` (the docs' example), and only when it carries content."""
    if not isinstance(message, dict):
        return None
    nested = message.get("response")
    if _has_content(nested):
        return nested
    return message if _has_content(message) else None


def progress_number(progress: Any) -> float | None:
    """``42``, ``42.5``, ``"42"`` or ``"42%"`` → 42.0; anything else (``"incomplete"``, None) → None."""
    if isinstance(progress, bool):
        return None
    if isinstance(progress, (int, float)):
        return float(progress) if math.isfinite(progress) else None
    if isinstance(progress, str):
        try:
            value = float(progress.strip().rstrip("%"))
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def progress_is_done(progress: Any) -> bool:
    value = progress_number(progress)
    return value is not None and value >= 100


def _message_id(receipt: Any) -> str:
    if isinstance(receipt, dict):
        for key in ("messageId", "messageID", "message_id", "id"):
            value = receipt.get(key)
            if isinstance(value, (str, int)) and str(value).strip():
                text = str(value).strip()
                if all(ch.isalnum() or ch in "-_." for ch in text):
                    return text
    raise BadResponse(f"receipt without a usable messageId: {str(receipt)[:200]}")


def _refusal(msg: Any) -> str:
    text = " ".join(str(msg or "").split())[:160]
    return f"The Midjourney API refused the request: {text}" if text else UpstreamUnavailable.user_message


def _path(url: str) -> str:
    return yarl.URL(url).path


def _snippet(body: bytes) -> str:
    return body[:120].decode("utf-8", "replace").replace("\n", " ")
