"""Replicas: several `quota-bot run` processes on one database (PostgreSQL), behind one URL.

What they share, each through the store's interface: readings (``SharedReadings``), roles (``Lease``),
changes made from chat (``ChangeWatcher``), claims (``Ownership``) and the start-up sync
(``exclusive``). On SQLite the same code runs in one process. How: docs/architecture.md, "Replicas".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Protocol, TypeVar

from .report import QuotaReport
from .tasks import stop_tasks

if TYPE_CHECKING:
    from .service import QuotaService
    from .stores.common import Listener, LockHandle
    from .stores.coordination import ReplicaStore
    from .stores.readings import ReadingStore


    class SharedStore(ReadingStore, ReplicaStore, Protocol):
        """The store's parts ``SharedReadings`` uses: the readings, and the replicas' primitives."""

log = logging.getLogger(__name__)

READING_CHANNEL = "quota_bot_reading"
DB_TIMEOUT = 5.0  # seconds one database call of these helpers may take before it counts as a failure
PEEK_EVERY = 0.5  # a waiting replica looks for the holder's reading this often (besides the NOTIFY)
LOCK_EVERY = 2.0  # ... and tries the lock this often (a holder that died leaves it free)
WAIT_MARGIN = 10.0  # waiting on another replica's reading: the provider's deadline plus this (its turn, storing)
QUIET = 5.0  # after a database error, readings go straight to the upstream for this long
LEASE_RETRY = 5.0  # a standby replica tries to take a role this often
LEASE_CHECK = 1.0  # the holder checks its lock (and re-takes it after a database restart) this often
WATCH_EVERY = 2.0  # the revision is read this often


class DatabaseUnavailable(Exception):
    """A database call of these helpers failed or took longer than ``DB_TIMEOUT``; ``str()`` says why."""


def reason(exc: BaseException) -> str:
    """One short line for a database error (a StoreError's text never holds a password; asyncpg's
    connection errors name only host and port)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {DB_TIMEOUT:g} s"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


_T = TypeVar("_T")


async def _db(awaitable: Awaitable[_T], timeout: float = DB_TIMEOUT) -> _T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the database does, the caller gets one kind
        raise DatabaseUnavailable(reason(exc)) from None


# --- shared readings -------------------------------------------------------------------------------

class SharedReadings:
    """The hook ``QuotaService`` calls inside its single-flight read (``service.shared``).

    ``read(service)`` returns the service's reading: the database's when it is fresh, another
    replica's when one is reading the account right now, else its own (``service.ask()``, which asks
    the upstream, caches and records the reading). Upstream errors propagate as they are; database
    errors never do."""

    def __init__(self, store: SharedStore, *, peek_every: float = PEEK_EVERY, lock_every: float = LOCK_EVERY) -> None:
        self.store = store
        self.peek_every = peek_every
        self.lock_every = lock_every
        self._news: dict[str, tuple[int, dict[str, Any]]] = {}  # account → (sequence, last announcement)
        self._sequence = 0
        self._wake = asyncio.Event()
        self._listener: Listener | None = None
        # account → set when this process's reading of it (lock held) is over: a newer read of this
        # process waits for it rather than for the lock (the service's single flight ended at the answer)
        self._holding: dict[str, asyncio.Event] = {}
        self._skip_until = 0.0
        self._down_since: float | None = None
        self._last_warning = 0.0
        # what happened, for tests and the log: readings used from the database, taken from another
        # replica's announcement, asked while holding the lock, asked directly (database unusable)
        self.counts = {"stored": 0, "shared": 0, "asked": 0, "direct": 0}

    async def start(self) -> None:
        try:
            self._listener = await _db(self.store.listen(READING_CHANNEL, self._on_news))
        except DatabaseUnavailable as exc:  # the waiting replicas still look every PEEK_EVERY seconds
            log.warning("shared readings: cannot LISTEN on %s (%s); other replicas' readings are found by "
                        "looking at the database", READING_CHANNEL, exc)

    async def stop(self) -> None:
        if self._listener is not None:
            try:
                await self._listener.close()
            except Exception:  # noqa: BLE001 - closing a listener of a store that is going away
                pass
            self._listener = None

    def _on_news(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            account = str(data["account"])
        except (ValueError, KeyError, TypeError):
            return
        self._sequence += 1
        self._news[account] = (self._sequence, data)
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    # --- the read ---------------------------------------------------------------------------------
    async def read(self, service: QuotaService) -> QuotaReport:
        if time.monotonic() < self._skip_until:
            return await self._direct(service, None)
        try:
            return await self._read(service)
        except DatabaseUnavailable as exc:
            return await self._direct(service, str(exc))

    async def _read(self, service: QuotaService) -> QuotaReport:
        account, simulated = service.account, service.simulated
        if service.cache_seconds > 0:
            stored = await _db(self.store.latest_report(account, simulated, service.cache_seconds))
            self._answering()
            if stored is not None and stored.read_at.timestamp() <= getattr(service, "fresh_after", 0.0):
                stored = None  # taken before the account changed (a switched speed mode)
            if stored is not None:
                self.counts["stored"] += 1
                log.debug("account %s: a reading of %s from the database", account, stored.read_at.isoformat())
                return service.use_stored(stored)
        seen = self._news.get(account, (0, {}))[0]
        baseline = await _db(self.store.latest_reading_at(account, simulated))
        self._answering()
        patience = float(getattr(service.provider, "poll_timeout", 90.0)) + WAIT_MARGIN
        deadline = time.monotonic() + patience
        waited = hurry = False
        while True:
            mine = self._holding.get(account)
            if mine is not None:  # this process's previous reading is being recorded: then read anew
                await mine.wait()
            lock = await _db(self.store.try_lock(f"reading:{account}"))
            if lock is not None:
                return await self._ask_holding(service, lock, waited, baseline)
            if not waited:
                log.debug("account %s: another replica is reading it; waiting for its reading", account)
                waited = True
            # right after the holder said it failed, its lock comes free at once: try again soon
            next_lock = time.monotonic() + (0.1 if hurry else self.lock_every)
            hurry = False
            while time.monotonic() < next_lock:
                news = self._news.get(account)
                if news is not None and news[0] > seen:
                    seen, data = news
                    if not data.get("ok"):
                        log.info("account %s: the replica reading it failed (%s); reading it here",
                                 account, data.get("error") or "?")
                        hurry = True
                        break  # the holder failed: take the lock and ask ourselves
                    report = await self._stored_since(account, simulated, data.get("read_at"))
                    if report is not None:
                        self.counts["shared"] += 1
                        return service.use_stored(report)
                if time.monotonic() >= deadline:
                    log.warning("account %s: no reading from the replica holding it within %.0f s; asking the "
                                "upstream from here", account, patience)
                    self.counts["direct"] += 1
                    return await service.ask()
                wake = self._wake
                try:
                    await asyncio.wait_for(wake.wait(), min(self.peek_every, max(0.01, next_lock - time.monotonic())))
                    continue  # an announcement: look at it
                except asyncio.TimeoutError:
                    pass
                report = await self._newer_than(account, simulated, baseline)  # a missed announcement
                if report is not None:
                    self.counts["shared"] += 1
                    return service.use_stored(report)

    async def _ask_holding(self, service: QuotaService, lock: LockHandle, waited: bool, baseline: float | None) -> QuotaReport:
        account = service.account
        holding = self._holding[account] = asyncio.Event()
        try:
            if waited:
                # the lock came free while we waited: the holder's reading may be stored already
                report = await self._newer_than(account, service.simulated, baseline)
                if report is not None:
                    self.counts["shared"] += 1
                    return service.use_stored(report)
            try:
                report = await service.ask()
            except Exception as exc:
                await self._announce({"account": account, "ok": False,
                                      "error": getattr(exc, "code", type(exc).__name__)})
                raise
            self.counts["asked"] += 1
            await self._announce({"account": account, "ok": True, "read_at": report.read_at.timestamp()})
            return report
        finally:
            try:
                await asyncio.wait_for(lock.release(), DB_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the lock goes with its connection anyway
                log.debug("account %s: letting go of the reading lock failed (%s)", account, reason(exc))
            if self._holding.get(account) is holding:
                del self._holding[account]
            holding.set()

    async def _announce(self, data: dict[str, Any]) -> None:
        """NOTIFY the other replicas; a failure is logged (they find the reading by looking, or ask)."""
        try:
            await _db(self.store.notify(READING_CHANNEL, json.dumps(data)))
        except DatabaseUnavailable as exc:
            log.info("account %s: the reading was not announced to the other replicas (%s)", data["account"], exc)

    async def _stored_since(self, account: str, simulated: bool, read_at: Any) -> QuotaReport | None:
        """The newest stored reading of ``account``, taken at ``read_at`` or later."""
        try:
            at = float(read_at)
        except (TypeError, ValueError):
            return None
        return await _db(self.store.latest_report(account, simulated, max(1.0, time.time() - at + 1.0)))

    async def _newer_than(self, account: str, simulated: bool, baseline: float | None) -> QuotaReport | None:
        """The newest stored reading of ``account`` when one was stored after ``baseline`` (the newest
        reading's time when this read began), else None."""
        latest = await _db(self.store.latest_reading_at(account, simulated))
        if latest is None or (baseline is not None and latest <= baseline):
            return None
        return await _db(self.store.latest_report(account, simulated, max(1.0, time.time() - latest + 1.0)))

    # --- the database away ------------------------------------------------------------------------
    async def _direct(self, service: QuotaService, why: str | None) -> QuotaReport:
        now = time.monotonic()
        self.counts["direct"] += 1
        if why is not None:
            self._skip_until = now + QUIET
            if self._down_since is None:
                self._down_since = now
                self._last_warning = now
                log.warning("shared readings: the database cannot be used (%s); account %s is read from the "
                            "upstream directly until it answers again", why, service.account)
            elif now - self._last_warning >= 30:
                self._last_warning = now
                log.warning("shared readings: the database still cannot be used (%s); reading account %s from "
                            "the upstream directly", why, service.account)
            else:
                log.info("account %s: the database cannot be used (%s); reading it from the upstream directly",
                         service.account, why)
        else:
            log.info("account %s: the database was unusable a moment ago; reading it from the upstream directly",
                     service.account)
        return await service.ask()

    def _answering(self) -> None:
        if self._down_since is not None:
            log.info("shared readings: the database answers again (after %.0f s)", time.monotonic() - self._down_since)
            self._down_since = None


# --- roles: a lock held while it can be ------------------------------------------------------------

class Lease:
    """A named lock of the store held as a role (``discord-gateway``): ``acquire()`` waits until this
    process holds it; ``kept()`` returns once it is lost for good; ``release()`` lets go."""

    def __init__(self, store: ReplicaStore, name: str, *, retry: float = LEASE_RETRY, check: float = LEASE_CHECK) -> None:
        self.store = store
        self.name = name
        self.retry = retry
        self.check = check
        self._handle: LockHandle | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    async def _try(self) -> tuple[LockHandle | None, str | None]:
        """(handle or None, why the database could not be asked)."""
        try:
            return await _db(self.store.try_lock(self.name)), None
        except DatabaseUnavailable as exc:
            return None, str(exc)

    async def take(self) -> bool:
        """One try: whether this process holds the lock now."""
        if self._handle is None:
            self._handle, _ = await self._try()
        return self._handle is not None

    async def keep(self) -> None:
        """Hold the lock for as long as this runs: take it, and take it again whenever it is lost."""
        while True:
            if self._handle is None:
                await self.acquire()
            await self.kept()

    async def acquire(self) -> bool:
        """Wait until this process holds the lock (trying every ``retry`` s). Returns True when it had to
        wait: another replica held it, or the database could not be asked."""
        attempts = 0
        while True:
            handle, why = await self._try()
            if handle is not None:
                self._handle = handle
                return attempts > 0
            if attempts == 0:
                if why is None:
                    log.info("%s: another replica holds it; this one stands by (trying every %g s)", self.name,
                             self.retry)
                else:
                    log.warning("%s: cannot take it (%s); trying again every %g s", self.name, why, self.retry)
            attempts += 1
            await asyncio.sleep(self.retry)

    async def kept(self) -> None:
        """Returns when the lock is lost for good: its connection went away (a database restart) and
        another replica holds it now. While the database cannot be asked, this process keeps the role:
        nobody else can take the lock then."""
        away = False
        while True:
            await asyncio.sleep(self.check)
            if self._handle is not None and self._handle.held:
                continue
            handle, why = await self._try()
            if handle is not None:
                self._handle = handle
                log.info("%s: taken again after its database connection was lost", self.name)
                away = False
                continue
            if why is not None:
                if not away:
                    log.warning("%s: its database connection was lost and the database cannot be asked (%s); "
                                "keeping the role until it answers", self.name, why)
                    away = True
                continue
            log.warning("%s: its database connection was lost and another replica holds it now", self.name)
            self._handle = None
            return

    async def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                await asyncio.wait_for(handle.release(), DB_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - it goes with its connection anyway
                log.debug("%s: letting go failed (%s)", self.name, reason(exc))


class Ownership:
    """A token that names this process in the claims it writes (a scheduled run, an alert), and the lock
    ``<prefix>:<token>`` it holds while it runs. A claim whose owner's lock is free was left by a process
    that stopped (or released, owner None) before finishing it: ``gone(owner)`` holds that lock (so
    replicas take turns) while the caller takes the claim over."""

    def __init__(self, store: ReplicaStore, prefix: str, *, released: str = "released") -> None:
        import uuid

        self.store = store
        self.prefix = prefix
        self.released = released  # the lock taken over claims that name no owner
        self.token = uuid.uuid4().hex[:16]
        self._lease = Lease(store, self.lock_name(self.token))
        self._keeper: asyncio.Task[None] | None = None

    def lock_name(self, owner: str | None) -> str:
        return f"{self.prefix}:{owner or self.released}"

    async def start(self) -> None:
        """Hold this process's lock (a fresh name: free, unless the database is away: taken later)."""
        await self._lease.take()
        self._keeper = asyncio.get_running_loop().create_task(self._lease.keep(), name=self.prefix)

    async def stop(self) -> None:
        if self._keeper is not None:
            await stop_tasks([self._keeper])
            self._keeper = None
        await self._lease.release()

    @asynccontextmanager
    async def gone(self, owner: str | None) -> AsyncIterator[bool]:
        """Whether ``owner`` stopped (its lock is free; None: nobody holds its claims); while the block
        runs this process holds that lock, so one replica at a time takes its claims over. False when
        it still runs, is this process, or the database cannot tell."""
        if owner == self.token:
            yield False
            return
        try:
            lock = await _db(self.store.try_lock(self.lock_name(owner)))
        except DatabaseUnavailable as exc:
            log.info("%s: cannot tell whether the owner of some claims still runs (%s)", self.prefix, exc)
            lock = None
        try:
            yield lock is not None
        finally:
            if lock is not None:
                try:
                    await asyncio.wait_for(lock.release(), DB_TIMEOUT)
                except Exception:  # noqa: BLE001 - it goes with its connection anyway
                    pass


@asynccontextmanager
async def exclusive(store: ReplicaStore, name: str, *, wait: float = 15.0, every: float = 0.1) -> AsyncIterator[bool]:
    """Hold the store's lock ``name`` for the block, waiting for it up to ``wait`` seconds (replicas
    starting together take turns). Yields whether it is held: after ``wait``, or when the database
    cannot be asked, the block runs without it (logged)."""
    handle = None
    deadline = time.monotonic() + wait
    while True:
        try:
            handle = await _db(store.try_lock(name))
        except DatabaseUnavailable as exc:
            log.warning("%s: the lock cannot be taken (%s); going on without it", name, exc)
            break
        if handle is not None or time.monotonic() >= deadline:
            if handle is None:
                log.warning("%s: another replica held the lock for %g s; going on without it", name, wait)
            break
        await asyncio.sleep(every)
    try:
        yield handle is not None
    finally:
        if handle is not None:
            try:
                await asyncio.wait_for(handle.release(), DB_TIMEOUT)
            except Exception:  # noqa: BLE001
                pass


# --- changes made on other replicas ----------------------------------------------------------------

class ChangeWatcher:
    """Reads the store's revision every ``every`` seconds and calls each ``watch``ed reload when it
    moved (a schedule or alert was added or removed, here or on another replica); a reload given
    ``at_least_every`` also runs that often without a change (for state the revision does not count)."""

    def __init__(self, store: ReplicaStore, *, every: float = WATCH_EVERY) -> None:
        self.store = store
        self.every = every
        self._reloads: list[tuple[Callable[[], Awaitable[Any]], float | None]] = []
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def watch(self, reload: Callable[[], Awaitable[Any]], *, at_least_every: float | None = None) -> None:
        self._reloads.append((reload, at_least_every))

    async def baseline(self) -> None:
        """Read the revision the rows about to be loaded belong to: call it before loading them, so a
        change made meanwhile (another replica, while this one starts) is seen as one."""
        try:
            self._seen = await _db(self.store.revision())
        except DatabaseUnavailable:
            self._seen = None  # the first look reloads

    async def start(self) -> None:
        if self._seen is None:
            await self.baseline()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="change-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None

    async def _run(self) -> None:
        last_run = [time.monotonic()] * len(self._reloads)
        away = False
        while True:
            await asyncio.sleep(self.every)
            try:
                revision = await _db(self.store.revision())
            except DatabaseUnavailable as exc:
                if not away:
                    log.info("watching for changes from other replicas paused: %s", exc)
                    away = True
                continue
            if away:
                log.info("watching for changes from other replicas again")
                away = False
            moved = revision != self._seen
            failed = False
            now = time.monotonic()
            for index, (reload, periodic) in enumerate(self._reloads):
                if not moved and (periodic is None or now - last_run[index] < periodic):
                    continue
                try:
                    await reload()
                    last_run[index] = now
                except Exception as exc:  # noqa: BLE001 - tried again at the next look
                    failed = True
                    log.warning("reloading after a change failed (%s); trying again in %g s", reason(exc), self.every)
            if moved and not failed:
                self.reloads += 1
                self._seen = revision
