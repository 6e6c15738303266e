"""What every provider shares: the interface, the poll policy, the ask limiter and one HTTP transport.

A provider answers "one reading of the account within a deadline" (``fetch``), raising the typed errors
of ``bot.errors``. ``HttpProvider`` does the limiter, retries, reply bounds and credentials the same way
for all, so a provider module says only where to ask, how to wait and what its error bodies mean
(docs/architecture.md, "Providers").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterator, Protocol, TypeVar

import aiohttp
import yarl
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from ..errors import (BadResponse, BadToken, CannotSwitch, QuotaError, RateLimited, ReplyTooLarge, TimedOut,
                      UpstreamUnavailable)
from ..report import QuotaReport
from .timing import LearnedTiming

log = logging.getLogger("bot.upstream")

DEFAULT_MIN_ASK_INTERVAL = 3.0  # TheNextLeg allows one request per 3 s per account
RETRY_FLOOR = 1.0  # no retry goes out sooner, whatever Retry-After says (0, negative, a date in the past)
RETRY_JITTER = 0.25  # fraction added on top of a retry's pause, so callers do not retry in step
MAX_REPLY_BYTES = 1024 * 1024  # a provider reply is read up to this much, never further
_CHUNK = 64 * 1024


class Provider(Protocol):
    """Where the service gets one reading of the account."""

    name: str  # "nextleg", "useapi", "linkr", "mjproxy" (the simulator speaks "nextleg")
    simulated: bool
    poll_timeout: float
    last_stats: dict[str, Any]

    async def fetch(self) -> QuotaReport:
        """One reading within ``poll_timeout`` seconds of the ask; its ``read_at`` is when the provider
        read Midjourney where it says so (an old stored reading shows its age). Raises QuotaError."""

    async def switch_mode(self, mode: str) -> "ModeSet":
        """Switch the account's Midjourney speed mode to ``mode`` (``fast``, ``relax``, ``turbo``) within
        ``poll_timeout`` seconds and say what is set now. Raises ``CannotSwitch`` where the provider has
        no such call, ``ModeRefused`` when Midjourney refuses, and the QuotaErrors of a reading."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ModeSet:
    """What a switch of the speed mode ended with: ``mode`` (fast, relax, turbo) is set now, as the
    provider confirmed it; ``said`` is Midjourney's own sentence, when there was one."""

    mode: str
    said: str = ""


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

    def delays(self, rng: random.Random) -> Iterator[float]:
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
        self._not_before = 0.0  # the provider asked for a pause (429/503): nothing goes out before this

    def hold(self, seconds: float) -> None:
        """The provider asked the account to pause: no ask or poll of any caller goes out for
        ``seconds`` (a later, longer pause wins; a shorter one never shortens it)."""
        self._not_before = max(self._not_before, self._clock() + seconds)

    async def pause(self, deadline: float | None = None) -> float:
        """Wait out a pause the provider asked for (polls pass here; asks in ``wait``). Raises
        ``_DeadlineReached`` when the pause would end after ``deadline``."""
        left = self._not_before - self._clock()
        if left <= 0:
            return 0.0
        if deadline is not None and self._clock() + left > deadline:
            raise _DeadlineReached()
        await asyncio.sleep(left)
        return left

    async def wait(self, deadline: float | None = None) -> float:
        """Wait for this ask's turn; returns the seconds waited. Raises ``_DeadlineReached`` when a
        ``deadline`` is given and the turn would come after it."""
        began = self._clock()
        async with self._lock:
            while True:  # the interval since the last ask, and any pause the provider asked for
                turn = max(self._not_before, (self._last + self.interval) if self._last is not None else 0.0)
                pause = turn - self._clock()
                if pause <= 0:
                    break
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


_T = TypeVar("_T")


class HttpProvider:
    """The shared transport. Subclasses set ``name``/``label``, give ``auth_headers`` and implement
    ``_read(deadline)``; ``error_for`` maps their own error bodies."""

    name = "http"
    label = "The upstream"  # how sentences name the service
    switches_mode = False  # it has a call that switches the speed mode (``switch_mode``)
    default_interval = DEFAULT_MIN_ASK_INTERVAL

    def __init__(self, *, base_url: str, token: str, poll_timeout: float = 90.0, poll: PollPolicy | None = None,
                 limiter: AskLimiter | None = None, request_timeout: float = 20.0, simulated: bool = False,
                 rng: random.Random | None = None, token_setting: str = "NEXTLEG_API_TOKEN",
                 webhook: Any = None, timing: LearnedTiming | None = None,
                 basic_auth: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._basic_auth = basic_auth  # "Basic …", from user:password@ in a base URL (see providers.split_login)
        self._token = token
        self.poll_timeout = poll_timeout
        self._poll = poll or self.default_poll()
        self._limiter = limiter or AskLimiter(self.default_interval)
        self._request_timeout = request_timeout
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self.simulated = simulated
        self.token_setting = token_setting
        self.last_stats: dict[str, Any] = {}
        self._ask_rtt = 0.0
        self._polls = 0
        self._retries = 0
        self.webhook = webhook  # bot.webhook.WebhookHub: the callback fast path, where the provider has one
        self.timing = timing or LearnedTiming()  # how long this account's jobs take (bot.providers.timing)

    def default_poll(self) -> PollPolicy:
        return PollPolicy()

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}(base={self._base!r}, simulated={self.simulated})"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            login = {"Authorization": self._basic_auth} if self._basic_auth else {}
            self._session = aiohttp.ClientSession(headers={**login, **self.auth_headers(), "Content-Type": "application/json"},
                                                  raise_for_status=False)
        return self._session

    # --- one reading ----------------------------------------------------------------------------
    async def fetch(self) -> QuotaReport:
        return await self._within_deadline(self._read)

    async def switch_mode(self, mode: str) -> ModeSet:
        """Providers without a call that switches the speed mode (see ``Provider.switch_mode``)."""
        from . import LABELS  # the package imports this module: looked up when asked

        raise CannotSwitch(LABELS.get("simulated" if self.simulated else self.name, self.label))

    async def _within_deadline(self, work: Callable[[float], Awaitable[_T]]) -> _T:
        """``work(deadline)``: one job (a reading, a switch) after the limiter's turn, within ``poll_timeout``.
        The deadline starts when the ask goes out: the wait for the limiter's turn before it is the
        bot's own doing, bounded on its own (one interval per ask queued ahead), and must not eat
        the provider's time."""
        queued = await self._limiter.wait()
        started = time.monotonic()
        self._polls = 0
        self._retries = 0
        try:
            report = await work(started + self.poll_timeout)
            log.info("%s reading done: polls=%d retries=%d in %.2fs", self.name, self._polls, self._retries,
                     time.monotonic() - started)
            return report
        except _DeadlineReached as exc:
            raise TimedOut(self.poll_timeout, f"{self.name}: no result after {self._polls} polls"
                           + (f" ({exc})" if str(exc) else ""), queued=queued,
                           interval=self._limiter.interval) from None
        finally:
            if self._retries > 1:
                log.info("%s: %d requests of this reading were retried", self.name, self._retries)
            self.last_stats = {"polls": self._polls, "seconds": time.monotonic() - started, "queued": queued,
                               "retries": self._retries}

    async def _read(self, deadline: float) -> QuotaReport:
        raise NotImplementedError

    async def _sleep_until_next(self, delay: float, deadline: float, pushed: Any = None) -> Any:
        """Sleep before a poll, leaving time for a last poll just before the deadline. With ``pushed``
        (a webhook expectation), a callback arriving meanwhile ends the sleep and is returned (no poll);
        otherwise None, and the caller polls."""
        left = deadline - time.monotonic()
        if left <= 0.05:
            raise _DeadlineReached()
        wait = min(delay, left - 0.05)
        if pushed is not None:
            try:
                return await asyncio.wait_for(pushed.queue.get(), max(0.0, wait))
            except asyncio.TimeoutError:
                pass
        else:
            await asyncio.sleep(wait)
        self._polls += 1
        return None

    def _learn(self, started: float, upstream_seconds: float | None) -> None:
        """Record a finished job's duration from the provider's own timestamps, when it gives sane ones.
        Without them nothing is recorded: the time from the ask to the poll that saw the result is the
        poll's time, not the job's, and planning from it would move every plan later, reading by reading."""
        observed = time.monotonic() - started
        if upstream_seconds is not None and 0 < upstream_seconds <= observed + 5:
            self.timing.add(upstream_seconds)
        else:
            log.debug("%s: no usable job timestamps (%r); the job's length is not learned", self.label, upstream_seconds)

    # --- one request, retried within the deadline ------------------------------------------------
    def error_for(self, status: int, data: Any, where: str, headers: Any) -> QuotaError | _Retryable | None:
        """The provider's own error bodies → a typed error (final) or ``_Retryable``; None: the shared rules."""
        return None

    def bad_token(self, where: str) -> BadToken:
        return BadToken(where, user_message=f"{self.label} rejected the API token ({self.token_setting}); "
                                            "ask the operator to check it.")

    async def _call(self, method: str, url: str | yarl.URL, deadline: float, *, ask: bool = False, **kwargs: Any) -> Any:
        """One request with retries for 429/5xx/connection errors, all within ``deadline``. Each retry
        waits at least ``RETRY_FLOOR`` (plus jitter), or longer when the provider's ``Retry-After`` or
        the backoff says so, and that pause holds every request of the account (``AskLimiter.hold``)."""
        last: list[_Retryable] = []

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            backoff = min(self._poll.cap, self._poll.initial * self._poll.factor ** (state.attempt_number - 1))
            asked = exc.retry_after if isinstance(exc, _Retryable) and exc.retry_after is not None else backoff
            pause = max(RETRY_FLOOR, asked) * (1 + self._rng.uniform(0, RETRY_JITTER))
            self._limiter.hold(pause)  # the account's pause: the next reading waits it out too
            return pause

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
                        self._retries += 1
                        level = logging.WARNING if self._retries == 1 else logging.DEBUG
                        log.log(level, "%s: %s; will retry within the deadline, at least %.0f s apart%s",
                                self.name, exc.error.detail or f"{method} {_path(url)}: {exc.error.code}", RETRY_FLOOR,
                                " (further retries of this reading are logged at DEBUG)" if self._retries == 1 else "")
                        raise
        except _Retryable as exc:  # out of time while retrying: the last failure says most
            raise exc.error from None
        except _DeadlineReached:
            if last:
                raise last[0].error from None
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method: str, url: str | yarl.URL, deadline: float, *, ask: bool, limited: bool,
                    opened: Callable[[aiohttp.ClientResponse], Awaitable[Any]] | None = None, **kwargs: Any) -> Any:
        """One request. With ``opened``, a 200 ``text/event-stream`` answer is handed to it open (only the
        wait for its headers is bounded here: ``opened`` bounds the rest and must raise none of the
        connection errors or timeouts retried here); any other answer is read as usual."""
        if limited:
            await self._limiter.wait(deadline)
        else:
            await self._limiter.pause(deadline)  # a pause the provider asked for holds polls too
        sent = time.monotonic()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _DeadlineReached()
        timeout = aiohttp.ClientTimeout(total=min(self._request_timeout, remaining))
        scope: Any = contextlib.nullcontext()
        if opened is not None:  # a stream: bounded as a whole until its headers come, then by ``opened``
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(self._request_timeout, remaining))
            scope = asyncio.timeout(min(self._request_timeout, remaining))
        where_to = f"{method} {_path(url)}"
        try:
            async with scope, self._client().request(method, url, timeout=timeout, **kwargs) as resp:
                status = resp.status
                headers = resp.headers
                if opened is not None and status == 200 and resp.content_type == "text/event-stream":
                    scope.reschedule(None)
                    if ask:
                        self._ask_rtt = time.monotonic() - sent
                    return await opened(resp)
                body = await _read_capped(resp, f"{where_to} -> HTTP {status}", self.label)
            if ask:
                self._ask_rtt = time.monotonic() - sent
        except asyncio.TimeoutError:
            if time.monotonic() >= deadline - 0.05:
                raise _DeadlineReached() from None
            raise _Retryable(UpstreamUnavailable(f"{where_to}: request timed out")) from None
        except aiohttp.ClientError as exc:
            cause = unreachable_cause(exc)
            host = yarl.URL(url).host or "?"
            raise _Retryable(UpstreamUnavailable(
                f"{where_to}: {host}: {cause} ({type(exc).__name__})",
                user_message=f"{self.label} ({host}) cannot be reached right now: {cause}; try again in a few "
                             "minutes.")) from None

        where = f"{where_to} -> HTTP {status}"
        data, parsed = parse_json(body)
        mapped = self.error_for(status, data, where, headers)
        if mapped is not None:
            raise mapped
        if status in (401, 403):
            raise self.bad_token(where)
        if status == 429:
            raise _Retryable(RateLimited(where), _retry_after(headers))
        if status >= 500:
            raise _Retryable(UpstreamUnavailable(where), _retry_after(headers))
        if status != 200 and not 200 <= status < 300:
            raise UpstreamUnavailable(f"{where}: {_snippet(body)}")
        if not parsed:
            raise BadResponse(f"{where}: {json_problem(body)}: {_snippet(body)}")
        return data


async def _read_capped(resp: aiohttp.ClientResponse, where: str, label: str, cap: int = MAX_REPLY_BYTES) -> bytes:
    """The reply's body, read chunk by chunk up to ``cap`` bytes. A larger reply (announced by its
    Content-Length, or found while reading) is read no further, its connection is closed, and the
    reading ends with ``ReplyTooLarge``."""
    announced = resp.content_length
    if announced is not None and announced > cap:
        resp.close()
        raise ReplyTooLarge(f"{where}: the reply announced {announced} bytes (the cap is {cap})", provider=label)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            resp.close()
            raise ReplyTooLarge(f"{where}: the reply went past {cap} bytes and was not read further",
                                provider=label)
        chunks.append(chunk)


def parse_json(body: bytes | str) -> tuple[Any, bool]:
    """``(data, True)`` for a JSON body, ``(None, False)`` for an empty body, one that is not JSON, or
    one nested too deep to read (``RecursionError``: a hostile body, never a crash; see json_problem)."""
    if not body.strip():
        return None, False
    try:
        return json.loads(body), True
    except (ValueError, RecursionError):
        return None, False


def json_problem(body: bytes | str) -> str:
    """Why ``parse_json`` could not read the body, in words (asked on the failure path only)."""
    try:
        json.loads(body)
    except RecursionError:
        return "JSON nested too deep to read"
    except ValueError:
        pass
    return "not JSON"


def unreachable_cause(exc: BaseException) -> str:
    """Why a connection failed, in words: refused, DNS, TLS, a timeout, or the server hanging up."""
    import socket
    import ssl

    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)) \
            or isinstance(getattr(exc, "os_error", None), ssl.SSLError):
        return "its TLS certificate or handshake failed"
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, socket.gaierror) or type(exc).__name__ == "ClientConnectorDNSError":
        return "its name could not be resolved (DNS)"
    if isinstance(os_error, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(os_error, (TimeoutError, asyncio.TimeoutError)):
        return "the connection timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the reply broke off"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"the connection failed ({os_error.strerror if os_error and os_error.strerror else type(exc).__name__})"
    return f"the request failed ({type(exc).__name__})"


def _next_delay(plan: Iterator[float], asked_at: float, backoff: Iterator[float]) -> float:
    """The next planned poll (seconds after the ask) still ahead, else the next backoff delay."""
    elapsed = time.monotonic() - asked_at
    for offset in plan:
        if offset > elapsed + 0.05:
            return offset - elapsed
    return next(backoff)


def _path(url: str | yarl.URL) -> str:
    return yarl.URL(url).path


def _snippet(body: bytes) -> str:
    return body[:120].decode("utf-8", "replace").replace("\n", " ")
