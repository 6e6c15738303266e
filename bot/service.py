"""The quota service of one account, which every command, schedule and alert reads through.

Concurrent callers share one provider request (single flight); a finished reading is reused for
``cache_seconds``. With ``shared`` (``bot.replicas.SharedReadings``) replicas share readings through
the database. Errors are the typed ``QuotaError``s of ``bot.errors``, each with its sentence.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from datetime import datetime, timezone
from typing import Awaitable, Callable, Protocol

from . import metrics
from .errors import QuotaError, UnknownAccount
from .providers.base import Provider
from .report import PoolReport, QuotaReport

log = logging.getLogger(__name__)

Listener = Callable[[QuotaReport], Awaitable[None] | None]


class SharedReader(Protocol):
    """Readings shared with the other replicas through the store (``bot.replicas.SharedReadings``)."""

    async def read(self, service: QuotaService) -> QuotaReport: ...


class ReadingSource(Protocol):
    """Where readings come from: one account (``QuotaService``) or several (``bot.accounts.QuotaPool``)."""

    @property
    def names(self) -> tuple[str, ...]: ...

    async def get_report(self, account: str | None = None) -> QuotaReport | PoolReport: ...

    def ready(self, account: str | None = None) -> bool:
        """Whether ``get_report(account)`` would answer from memory, without asking anyone."""
        ...


class QuotaService:
    def __init__(
        self,
        provider: Provider,
        *,
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedReader | None = None,
    ) -> None:
        self.provider = provider
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._inflight: asyncio.Task[QuotaReport] | None = None
        self._cached: tuple[float, QuotaReport] | None = None
        self._listeners: list[Listener] = []
        self.last_error: QuotaError | None = None
        self.asks = 0  # upstream readings started (not HTTP requests)
        self.cache_hits = 0
        self.shared = 0
        # bot.replicas.SharedReadings: readings shared with the other replicas through the store
        self.shared_readings = shared
        self.fresh_after = 0.0  # Unix time: a stored reading taken before it is not used (see invalidate)

    @property
    def simulated(self) -> bool:
        return bool(getattr(self.provider, "simulated", False))

    @property
    def last_report(self) -> QuotaReport | None:
        return self._cached[1] if self._cached else None

    def invalidate(self) -> None:
        """Forget the cached reading (the account changed: its speed mode was switched); readings taken
        before now, stored by any replica, are not used in its place either."""
        self._cached = None
        self.fresh_after = time.time()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(report)`` after every fresh reading (the store records them)."""
        self._listeners.append(listener)

    names: tuple[str, ...] = ()  # one account: no names to choose from (see bot.accounts for several)
    account = "default"  # its name in the metrics (bot.accounts names the file's accounts)

    def ready(self, account: str | None = None) -> bool:
        """Whether ``get_report`` would answer from the cache, without asking anyone."""
        return (account is None and self._cached is not None
                and self._clock() - self._cached[0] < self.cache_seconds)

    async def get_report(self, account: str | None = None) -> QuotaReport:
        if account is not None:
            raise UnknownAccount(account, ())
        if self._cached is not None and self._clock() - self._cached[0] < self.cache_seconds:
            self.cache_hits += 1
            metrics.CACHE.labels(self.account, "hit").inc()
            return self._cached[1]
        if self._inflight is None:
            self.asks += 1
            metrics.CACHE.labels(self.account, "ask").inc()
            self._inflight = asyncio.get_running_loop().create_task(self._read(), name="quota-reading")
        else:
            self.shared += 1
            metrics.CACHE.labels(self.account, "shared").inc()
        # shield: one caller giving up (e.g. a cancelled handler) must not cancel the others' reading
        return await asyncio.shield(self._inflight)

    async def _read(self) -> QuotaReport:
        try:
            if self.shared_readings is not None:
                return await self.shared_readings.read(self)
            return await self.ask()
        finally:
            self._done_reading()

    def _done_reading(self) -> None:
        """The reading in flight is over for new callers (``ask``: once the upstream answered, before the
        reading is recorded, as with ``cache_seconds=0`` only readings in flight are shared)."""
        if self._inflight is asyncio.current_task():
            self._inflight = None

    async def ask(self) -> QuotaReport:
        """One reading from the upstream: cached, counted, and handed to every subscriber (the store
        records it) before it is returned."""
        started = self._clock()
        provider = str(getattr(self.provider, "name", "?")) if not self.simulated else "simulated"
        try:
            report = await self.provider.fetch()
        except QuotaError as exc:
            metrics.READINGS.labels(self.account, provider, exc.code).inc()
            self.last_error = exc
            log.warning("quota reading failed after %.1fs: %s: %s", self._clock() - started, exc.code,
                        exc.detail or exc.user_message)
            raise
        except Exception:
            metrics.READINGS.labels(self.account, provider, "unexpected").inc()
            log.exception("quota reading failed unexpectedly")
            raise
        finally:
            self._done_reading()
            stats = getattr(self.provider, "last_stats", None) or {}
            if "seconds" in stats:
                metrics.READING_SECONDS.labels(self.account, provider).observe(stats["seconds"])
                metrics.POLLS.labels(self.account, provider).observe(stats.get("polls", 0))
        self._cached = (self._clock(), report)
        self.last_error = None
        metrics.READINGS.labels(self.account, provider, "ok").inc()
        if report.remaining is not None:
            metrics.set_remaining(self.account, report.remaining.hours)
        for listener in list(self._listeners):
            try:
                result = listener(report)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a reading listener failed")
        return report

    def use_stored(self, report: QuotaReport) -> QuotaReport:
        """Take a reading another replica stored (nothing asked, nothing recorded again): it is cached
        for what is left of ``cache_seconds`` after its age."""
        taken = report.responded_at or report.read_at
        age = max(0.0, (datetime.now(timezone.utc) - taken).total_seconds())
        self._cached = (self._clock() - age, report)
        self.last_error = None
        if report.remaining is not None:
            metrics.set_remaining(self.account, report.remaining.hours)
        return report

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        await self.provider.close()
