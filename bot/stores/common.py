"""What every store shares: its rows, its one-line error, its lock handle, and the way a reading is kept
whole so another replica can rebuild the report.

Both stores (``bot.stores.sqlite.SQLiteStore``, ``bot.stores.postgres.PostgresStore``) are the same parts
(``bot.stores.parts``) on another database; each part's interface is beside it (``readings.ReadingStore``,
``schedules.ScheduleStore``, …) and ``parts.StoreInterface`` is all of them: the service, scheduler and
adapters never ask which store they have.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import wraps
from typing import Any, Awaitable, Callable, TypeVar, cast

from ..errors import StartupError
from ..report import Amount, QuotaReport, Unit

log = logging.getLogger("bot.store")

# pg_notify refuses payloads of 8000 bytes or more; the SQLite store holds to the same limit
MAX_PAYLOAD_BYTES = 7999


class StoreError(StartupError):
    """The database cannot be used; ``str()`` is one line naming DATABASE_URL (or the file) and why.
    It never holds a password."""


@dataclass(frozen=True)
class ScheduleRow:
    id: int
    platform: str
    channel: str
    when_text: str
    timezone: str
    source: str
    anchor: float
    created_by: str
    created_at: float
    failing: str | None


@dataclass(frozen=True)
class AlertRow:
    id: int
    platform: str
    channel: str
    account: str  # '' = the pool of every account
    condition: str
    source: str
    created_by: str
    created_at: float
    state: str  # armed | pending | fired
    fired_at: float | None
    fired_renewal: float | None
    message: str | None
    failing: str | None


@dataclass(frozen=True)
class ModeSwitchRow:
    """One switch of an account's speed mode, asked from chat or by an alert, whatever came of it."""

    id: int
    at: float  # when it was asked (Unix seconds)
    account: str
    platform: str  # where it was asked (discord, slack, console), or the alert's platform
    channel: str
    who: str  # the user's id on ``platform``, or "alert #N"
    cause: str  # "person" or "alert" (the metric's label)
    from_mode: str | None  # fast | relax | turbo, or None when no reading said
    to_mode: str
    outcome: str  # ok | refused (Midjourney said no) | failed (it did not get through)
    detail: str  # the sentence the user read (a refusal, an error), or Midjourney's confirmation



class LockHandle:
    """A named lock held by this process (``Store.try_lock``). ``held`` turns false once released, or
    when the connection that holds it (PostgreSQL) is gone; ``release()`` may be called more than once.
    ``async with handle:`` releases it on the way out."""

    def __init__(self, name: str, release: Callable[[], Awaitable[None]],
                 alive: Callable[[], bool] = lambda: True) -> None:
        self.name = name
        self._release = release
        self._alive = alive
        self._released = False

    @property
    def held(self) -> bool:
        return not self._released and self._alive()

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        await self._release()

    async def __aenter__(self) -> "LockHandle":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<LockHandle {self.name!r} {'held' if self.held else 'released'}>"


class Listener:
    """One ``listen(channel, callback)``; ``close()`` stops the callback (idempotent)."""

    def __init__(self, channel: str, close: Callable[[], Awaitable[None]]) -> None:
        self.channel = channel
        self._close = close
        self.closed = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._close()









# --- writes that fail ------------------------------------------------------------------------------

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


class WriteHealth:
    """The outcome of the store's latest write: ``problem`` is one line while the last write failed (a
    read-only file system, a full disk, a login whose write permission was revoked), None again once a
    write succeeds. /healthz reports it ("degraded")."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.since: float | None = None

    def failed(self, what: str, exc: BaseException) -> None:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        if self.problem is None:
            log.warning("the database cannot be written (%s: %s)", what, text)
            self.since = time.time()
        self.problem = f"a write to the database failed ({what}: {text})"

    def succeeded(self) -> None:
        if self.problem is not None:
            log.info("the database is written again (it could not be for %.0f s)", time.time() - (self.since or 0))
            self.problem = self.since = None


def tracks_write(method: _Method) -> _Method:
    """A store method that writes: its failure, or success, is what ``write_problem()`` says."""
    what = method.__name__.replace("_", " ")

    @wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await method(self, *args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.writes.failed(what, exc)
            raise
        self.writes.succeeded()
        return result

    return wrapper  # type: ignore[return-value]  # @wraps keeps the method's signature; mypy cannot see it


# --- a reading, whole ------------------------------------------------------------------------------

def reading_values(report: QuotaReport) -> dict[str, Any]:
    """The columns of one reading (migration 4 added fields, plan_status, message_id, responded_at and
    total_derived, so that ``report_from_row`` rebuilds the report another replica took)."""
    unit = shown.unit if (shown := report.remaining or report.total) else None
    return {
        "read_at": report.read_at.timestamp(),
        "remaining": report.remaining.value if report.remaining else None,
        "total": report.total.value if report.total else None,
        "percent": report.percent,
        "unit": unit,
        "job_mode": report.job_mode,
        "plan": report.plan,
        "renewal": report.renewal.timestamp() if report.renewal else None,
        "simulated": bool(report.simulated),
        "fields": json.dumps([[k, v] for k, v in report.fields], ensure_ascii=False),
        "plan_status": report.plan_status,
        "message_id": report.message_id,
        "responded_at": report.responded_at.timestamp() if report.responded_at else None,
        "total_derived": bool(report.total_derived),
    }


REPORT_COLUMNS = ("read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated, fields, plan_status,"
                  " message_id, responded_at, total_derived")


def report_from_row(row: Any) -> QuotaReport:
    """The ``QuotaReport`` of a row selected with ``REPORT_COLUMNS`` (in that order)."""
    (read_at, remaining, total, percent, unit, job_mode, plan, renewal, simulated, fields, plan_status,
     message_id, responded_at, total_derived) = tuple(row)
    unit = cast(Unit, unit or "hours")  # the store writes only a report's own units
    return QuotaReport(
        remaining=None if remaining is None else Amount(remaining, unit),
        total=None if total is None else Amount(total, unit),
        percent=percent,
        job_mode=job_mode,
        plan=plan,
        plan_status=plan_status,
        renewal=_when(renewal),
        fields=tuple((str(k), str(v)) for k, v in json.loads(fields or "[]")),
        read_at=_when(read_at) or datetime.now(timezone.utc),
        simulated=bool(simulated),
        message_id=message_id,
        responded_at=_when(responded_at),
        total_derived=bool(total_derived),
    )


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc)


# --- in-process callbacks and notifications ------------------------------------------------------

def check_notification(channel: str, payload: str) -> None:
    if not isinstance(channel, str) or not channel or len(channel.encode()) > 63:
        raise ValueError("a notification channel is a name of 1 to 63 bytes")
    if not isinstance(payload, str) or len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a notification payload is a string of at most {MAX_PAYLOAD_BYTES} bytes")


_callback_tasks: set[asyncio.Future[Any]] = set()


def deliver(callback: Callable[[str], Any], channel: str, payload: str) -> None:
    """Call ``callback(payload)``; a coroutine it returns runs as a task. Errors are logged, never raised
    (one faulty listener does not silence the others)."""
    try:
        result = callback(payload)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            _callback_tasks.add(task)
            task.add_done_callback(_finished)
    except Exception:
        log.exception("a listener of channel %r failed", channel)


def _finished(task: asyncio.Future[Any]) -> None:
    _callback_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("a listener failed", exc_info=task.exception())
