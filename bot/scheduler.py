"""Scheduled quota posts: one dispatcher task that sleeps until the earliest due run.

Schedules live in the store and are re-armed at start-up; each run is claimed in the store before it is
posted (once, never twice, across restarts and replicas); a schedule has at most one run in progress.
The clock is injected. The rules: docs/architecture.md, "Scheduled runs".
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Iterable, Mapping, Protocol
from zoneinfo import ZoneInfo

from . import metrics
from .config import TOKENS
from .errors import PostError, QuotaError
from .replicas import Ownership
from .schedules import (CHAT_PLATFORMS, DEFAULT_MIN_EVERY, ConfigItem, ScheduleError, ScheduleView, When, parse_when,
                        refuse_below, span)
from .service import ReadingSource
from .store import ScheduleRow
from .tasks import stop_tasks

if TYPE_CHECKING:
    from .stores.coordination import ReplicaStore
    from .stores.schedules import ScheduleStore


    class SchedulerStore(ScheduleStore, ReplicaStore, Protocol):
        """The store's parts the scheduler uses: the schedules and their runs, and the replicas' lock."""

log = logging.getLogger(__name__)
UTC = timezone.utc
OWNER_PREFIX = "schedules-owner"
STOP_WAIT = 4.0  # a graceful stop waits this long for the runs in progress (the process has 10 s in all)


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class Poster(Protocol):
    async def post(self, channel: str, outcome: Any) -> None: ...


@dataclass
class _Armed:
    row: ScheduleRow
    when: When
    tz: ZoneInfo
    next_due: datetime

    @property
    def anchor(self) -> datetime:
        return datetime.fromtimestamp(self.row.anchor, UTC)


@dataclass(eq=False)
class _InProgress:
    """The one run of a schedule that is in progress: dispatched, not yet posted or given up."""

    due: datetime
    reading: bool = True  # waiting on the reading; False once it arrived and the run is posting
    claiming: bool = True  # waiting on its claim (the database); False once claimed

    def skip_reason(self) -> str:
        if self.claiming:
            return "the previous run still waits for the database"
        return ("the previous run still waits on a reading" if self.reading
                else "the previous run is still posting")


@dataclass(frozen=True)
class PostPolicy:
    rate_limit_attempts: int = 5
    transient_attempts: int = 3
    backoff: float = 2.0  # 2 s, 4 s, … between transient failures
    concurrency: int = 50
    window: int = 500  # at most this many due runs taken from the store at a time (``Scheduler._post_batch``)
    windows: int = 24  # ... and a burst of due runs is cut into about this many windows (at least 10 runs each)


async def deliver(poster: Poster, channel: str, outcome: Any, policy: PostPolicy, clock: Clock, what: str) -> str | None:
    """Post ``outcome`` with the retry policy of scheduled posts (429: wait ``retry_after``; 5xx/network:
    back off; a bounded number of times); None when it went out, else the reason it did not."""
    limited = transient = 0
    while True:
        try:
            await poster.post(channel, outcome)
            return None
        except PostError as exc:
            if exc.kind == "rate_limited" and limited + 1 < policy.rate_limit_attempts:
                limited += 1
                log.info("%s: rate limited, retrying in %.1fs", what, exc.retry_after or 1.0)
                await clock.sleep(exc.retry_after or 1.0)
                continue
            if exc.kind == "transient" and transient + 1 < policy.transient_attempts:
                transient += 1
                await clock.sleep(policy.backoff * 2 ** (transient - 1))
                continue
            return exc.reason
        except Exception as exc:
            log.exception("%s: posting failed unexpectedly", what)
            return f"unexpected error ({type(exc).__name__})"


async def persist(write: Callable[[], Awaitable[Any]], what: str, clock: Clock, *, patience: float = 120.0) -> bool:
    """Run the store write ``write()``; while the database cannot be reached, try again (1 s, 2 s, … 10 s
    apart) for up to ``patience`` seconds. Returns whether it was written; logs a failure once, and a
    give-up."""
    delay, waited, logged = 1.0, 0.0, False
    while True:
        try:
            await write()
            if logged:
                log.info("%s: written after the database came back", what)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any database failure: tried again until `patience`
            if waited >= patience:
                log.error("%s: not written, the database did not answer for %.0f s (%s)", what, waited, _why(exc))
                return False
            if not logged:
                log.warning("%s: the database cannot be written (%s); trying again", what, _why(exc))
                logged = True
            await clock.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)


class _Reading:
    """The one reading a batch of runs posts, taken when its first window is claimed here (not at all when
    other replicas took every run)."""

    def __init__(self, scheduler: "Scheduler") -> None:
        self._scheduler = scheduler
        self._lock = asyncio.Lock()
        self._outcome: Any = None
        self._taken = False

    async def get(self) -> Any:
        async with self._lock:
            if not self._taken:
                try:
                    self._outcome = await self._scheduler.service.get_report()
                except QuotaError as exc:
                    self._outcome = exc  # the channel gets the reason instead of silence
                except Exception as exc:
                    log.exception("reading for scheduled posts failed unexpectedly")
                    self._outcome = QuotaError(type(exc).__name__)
                self._taken = True
                self._scheduler.readings_taken += 1
            return self._outcome


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class Scheduler:
    def __init__(self, store: SchedulerStore, service: ReadingSource, posters: Mapping[str, Poster], *,
                 timezone: str = "UTC", grace: float = 600, clock: Clock | None = None,
                 policy: PostPolicy = PostPolicy(), stop_wait: float = STOP_WAIT,
                 min_every: float = DEFAULT_MIN_EVERY) -> None:
        self.store = store
        self.service = service
        self.posters = posters
        self.timezone = timezone
        self.grace = grace
        self.clock: Clock = clock or SystemClock()
        self.policy = policy
        self._armed: dict[int, _Armed] = {}
        self._heap: list[tuple[datetime, int]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        # schedule id -> its run in progress; set by the dispatcher, cleared by the run's task
        self._running: dict[int, _InProgress] = {}
        self.readings_taken = 0
        self.stop_wait = stop_wait
        self.ownership = Ownership(store, OWNER_PREFIX)
        self.owner = self.ownership.token  # written into each claim
        self._held: set[tuple[int, float]] = set()  # runs claimed here, not yet posting: released at stop
        self._recovering: asyncio.Lock = asyncio.Lock()
        self.taken_over = 0  # runs of stopped processes taken over and posted here
        # QUOTA_SCHEDULE_MIN_EVERY (seconds): ``add`` refuses a schedule that fires more often; a stored one
        # runs at most this often (``When.at_least``)
        self.min_every = min_every
        # schedules whose platform has no poster here (its token is not set): logged once, never armed,
        # claimed or taken over by this process (a replica that has the platform posts them)
        self._paused: set[int] = set()

    # --- ScheduleManager ------------------------------------------------------------------------
    async def add(self, platform: str, channel: str, when: str, *, created_by: str = "") -> ScheduleView:
        if platform not in CHAT_PLATFORMS or platform not in self.posters:
            raise ScheduleError(f"This bot cannot post to {platform}: it is not configured.")
        parsed = parse_when(when)
        refuse_below(parsed, self.min_every)
        row = await self.store.add_schedule(platform, channel, parsed.text, self.timezone, "chat",
                                            self.clock.now().timestamp(), created_by)
        armed = self._arm(row, parsed)
        log.info("schedule #%d added from chat: %s:%s=%s", row.id, platform, channel, parsed.text)
        return self._view(armed)

    async def list(self, platform: str) -> list[ScheduleView]:
        rows = await self.store.schedules(platform)
        return [self._view(self._armed[r.id], r.failing) for r in rows if r.id in self._armed]

    async def remove(self, platform: str, schedule_id: int) -> bool:
        removed = await self.store.remove_schedule(schedule_id, platform)
        if removed:
            self._armed.pop(schedule_id, None)
            self._wake.set()
            log.info("schedule #%d removed", schedule_id)
        return removed

    # --- configuration --------------------------------------------------------------------------
    async def sync_config(self, items: Iterable[ConfigItem]) -> None:
        """Keep the configured schedules in step with QUOTA_SCHEDULES: add new, keep unchanged, drop removed.
        Replicas starting together take turns (``bot.replicas.exclusive``), so an item is added once."""
        from .replicas import exclusive

        async with exclusive(self.store, "config:schedules"):
            await self._sync_config(items)

    async def _sync_config(self, items: Iterable[ConfigItem]) -> None:
        wanted = {(i.platform, i.channel, i.when.text): i for i in items}
        for row in await self.store.schedules():
            if row.source != "config":
                continue
            key = (row.platform, row.channel, row.when_text)
            if key in wanted:
                wanted.pop(key)
                if row.timezone != self.timezone:
                    await self.store.set_timezone(row.id, self.timezone)
            else:
                await self.store.remove_schedule(row.id)
                self._armed.pop(row.id, None)
                log.info("schedule #%d (%s:%s=%s) removed: no longer in QUOTA_SCHEDULES", row.id, *key)
        anchor = self.clock.now().timestamp()
        await self.store.add_schedules([(i.platform, i.channel, i.when.text, self.timezone, "config", anchor)
                                        for i in wanted.values()])
        for item in wanted.values():
            log.info("schedule added from QUOTA_SCHEDULES: %s:%s=%s", item.platform, item.channel, item.when.text)
        self._wake.set()

    async def reload(self) -> None:
        """Re-read the schedules (another replica added, removed or changed one): arm the new ones, drop
        the removed ones, re-arm those whose timezone changed; the others keep their next run."""
        rows = {row.id: row for row in await self.store.schedules()}
        changed = False
        self._paused &= set(rows)
        for sid in [sid for sid in self._armed if sid not in rows]:
            gone = self._armed.pop(sid)
            changed = True
            log.info("schedule #%d (%s:%s=%s) removed on another replica", sid, gone.row.platform, gone.row.channel,
                     gone.row.when_text)
        for row in rows.values():
            if not self._postable(row):
                continue
            armed = self._armed.get(row.id)
            if armed is not None and (armed.row.when_text, armed.row.timezone) == (row.when_text, row.timezone):
                armed.row = row  # e.g. its failing reason, set by the replica that posted
                continue
            try:
                when = parse_when(row.when_text)
            except ScheduleError as exc:
                log.error("schedule #%d is not usable and is skipped: %s", row.id, exc.user_message)
                self._armed.pop(row.id, None)
                continue
            self._arm(row, when, wake=False)
            changed = True
            log.info("schedule #%d (%s:%s=%s) %s", row.id, row.platform, row.channel, row.when_text,
                     "armed: added on another replica" if armed is None else f"re-armed in {row.timezone}")
        if changed:
            self._wake.set()

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Arm every stored schedule, deal with runs missed while down and with runs claimed but not posted
        by a process that stopped, then start the dispatcher."""
        await self.ownership.start()
        now = self.clock.now()
        last = await self.store.last_claimed()
        catching_up = 0
        for row in await self.store.schedules():
            if not self._postable(row):
                continue
            try:
                when = parse_when(row.when_text)
            except ScheduleError as exc:
                log.error("schedule #%d is not usable and is skipped: %s", row.id, exc.user_message)
                continue
            armed = self._arm(row, when, wake=False, now=now)
            since = datetime.fromtimestamp(max(last.get(row.id, row.anchor), row.anchor), UTC)
            # only the runs inside the grace window are walked (a long outage costs no cron maths);
            # of the runs before it, the first one is enough to say that something was skipped
            first = when.next_after(since, armed.tz, armed.anchor)
            if first > now:
                continue  # nothing missed: the usual case
            window = max(since, now - timedelta(seconds=self.grace, microseconds=1))
            missed = when.last_at_or_before(now, armed.tz, armed.anchor, window)
            if first <= window:
                log.warning("schedule #%d missed run(s) from %s on (the first %.0fs ago, more than QUOTA_SCHEDULE_GRACE); skipped",
                            row.id, first.isoformat(), (now - first).total_seconds())
            if missed is not None:
                log.info("schedule #%d missed its run at %s (%.0fs ago); posting it once now", row.id,
                         missed.isoformat(), (now - missed).total_seconds())
                armed.next_due = missed
                catching_up += 1
        self._rebuild_heap()
        resumed = await self.recover()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="schedule-dispatcher")
        log.info("scheduler started with %d schedule(s), %d missed run(s) to post now, %d claimed but not posted "
                 "before a stop to post now%s", len(self._armed), catching_up, resumed,
                 f"; {len(self._paused)} paused (their platform is not configured)" if self._paused else "")

    async def stop(self) -> None:
        """Stop dispatching; the runs in progress get ``stop_wait`` seconds to be posted, then those not
        yet posting are released (the next start, or another replica, posts them)."""
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
        if self._batches:
            _, late = await asyncio.wait(set(self._batches), timeout=self.stop_wait)
            await stop_tasks(late)
        held, self._held = sorted(self._held), set()
        if held:
            try:
                await asyncio.wait_for(self.store.release_runs(held, self.owner), 3.0)
                log.info("stopping: %d claimed scheduled run(s) not posted yet are left for the next start", len(held))
            except Exception as exc:  # noqa: BLE001 - the next start takes them over all the same (no owner runs)
                log.warning("stopping: %d claimed scheduled run(s) could not be released (%s); the next start takes "
                            "them over", len(held), _why(exc))
        await self.ownership.stop()

    # --- runs left by a process that stopped -----------------------------------------------------
    async def recover(self) -> int:
        """Take over the runs claimed by a process that stopped before posting them (its lock is free, or
        it released them) and post each once, by the catch-up rule; returns how many are being posted."""
        if self._recovering.locked():
            return 0
        async with self._recovering:
            try:
                rows = await self.store.unfinished_runs()
            except Exception as exc:  # noqa: BLE001 - tried again at the next look
                log.warning("claimed runs left by a stopped process cannot be looked for (%s)", _why(exc))
                return 0
            groups: dict[str | None, list[tuple[int, float, str]]] = {}
            for sid, due, owner, state in rows:
                # a paused one is left to who can post it; one this process has in progress (offered, to be
                # taken window by window) is not left behind
                if owner != self.owner and sid not in self._paused and not self._in_progress_here(sid, due):
                    groups.setdefault(owner, []).append((sid, due, state))
            resumed = 0
            for owner, runs in groups.items():
                async with self.ownership.gone(owner) as gone:
                    if not gone:
                        continue  # its owner runs: it posts them
                    try:
                        taken = await self.store.take_runs([(sid, due) for sid, due, _ in runs], owner, self.owner)
                        last = await self.store.last_claimed()
                    except Exception as exc:  # noqa: BLE001 - tried again at the next look
                        log.warning("claimed runs left by a stopped process cannot be taken over (%s)", _why(exc))
                        continue
                    resumed += await self._resume([r for r in runs if (r[0], r[1]) in taken], last)
            return resumed

    async def _resume(self, runs: builtins.list[tuple[int, float, str]], last: Mapping[int, float]) -> int:
        """Post the taken-over runs that the catch-up rule allows; record the others as skipped."""
        now = self.clock.now()
        due: list[tuple[_Armed, datetime]] = []
        skipped: list[tuple[int, float, str]] = []
        marks: dict[int, _InProgress] = {}
        given_back: list[tuple[int, float]] = []
        for sid, at, state in runs:
            armed = self._armed.get(sid)
            moment = datetime.fromtimestamp(at, UTC)
            if self._in_progress_here(sid, at):
                # dispatched here since the look (another replica offered it first): its window takes it
                given_back.append((sid, at))
                continue
            if state == "posting":
                reason = "its process stopped while posting it (it may have gone out; never sent twice)"
            elif armed is None:
                reason = "its schedule is not armed here"
            elif (now - moment).total_seconds() > self.grace:
                reason = "claimed by a process that stopped before posting it, longer ago than QUOTA_SCHEDULE_GRACE"
            elif last.get(sid, at) > at or (armed.next_due <= now and armed.next_due > moment):
                reason = "a later run of its schedule was claimed (it is posted instead)"
            elif sid in self._running or sid in marks:
                reason = "another run of its schedule is in progress"
            else:
                marks[sid] = self._running[sid] = _InProgress(moment, claiming=False)
                due.append((armed, moment))
                self._held.add((sid, at))
                log.info("schedule #%d: its run due at %s was claimed by a process that stopped before posting it; "
                         "posting it now", sid, moment.isoformat())
                continue
            log.warning("schedule #%d: its run due at %s, left by a process that stopped, is skipped: %s", sid,
                        moment.isoformat(), reason)
            skipped.append((sid, at, f"skipped: {reason}"))
        if given_back:
            await persist(lambda: self.store.release_runs(given_back, self.owner),
                          f"{len(given_back)} scheduled run(s) in progress here", self.clock)
        if skipped:
            await persist(lambda: self.store.finish(skipped), f"the result of {len(skipped)} skipped scheduled run(s)",
                          self.clock)
        if due:
            self.taken_over += len(due)
            self._launch(self._post_batch(due, [], marks, claimed=True), marks)
        return len(due)

    def _in_progress_here(self, sid: int, due: float) -> bool:
        """Whether the run (sid, due) is the one this process has in progress for its schedule."""
        mark = self._running.get(sid)
        return mark is not None and mark.due.timestamp() == due

    def _launch(self, work: Coroutine[Any, Any, None], marks: Mapping[int, _InProgress]) -> None:
        batch = asyncio.get_running_loop().create_task(work)
        self._batches.add(batch)
        batch.add_done_callback(self._batches.discard)
        # however the task ends (even cancelled before it began), its schedules are free again
        batch.add_done_callback(lambda _: self._release(marks))

    # --- the dispatcher -------------------------------------------------------------------------
    def _postable(self, row: ScheduleRow) -> bool:
        """Whether this process can post the schedule's runs; when not (its platform's token is not set), it
        is paused: logged once, then neither armed nor claimed here (no reading is spent on a post that
        cannot go out)."""
        if row.platform in self.posters:
            return True
        if row.id not in self._paused:
            self._paused.add(row.id)
            self._armed.pop(row.id, None)
            why = ("the console chat runs only when neither DISCORD_BOT_TOKEN nor SLACK_BOT_TOKEN is set"
                   if row.platform not in TOKENS else f"{row.platform} is not configured here (set "
                   f"{TOKENS[row.platform]}, or remove it with /quota-schedule remove {row.id})")
            log.warning("schedule #%d (%s:%s=%s) is paused: %s", row.id, row.platform, row.channel, row.when_text, why)
        return False

    def _arm(self, row: ScheduleRow, when: When, wake: bool = True, now: datetime | None = None) -> _Armed:
        floored = when.at_least(self.min_every)
        if floored.floor is not None:
            log.warning("schedule #%d (%s:%s=%s) fires %severy %s, more often than QUOTA_SCHEDULE_MIN_EVERY allows: "
                        "it runs at most every %s", row.id, row.platform, row.channel, row.when_text,
                        "" if when.every is not None else "as often as ", span(when.min_gap), span(self.min_every))
        when = floored
        tz = ZoneInfo(row.timezone)
        anchor = datetime.fromtimestamp(row.anchor, UTC)
        armed = _Armed(row, when, tz, when.next_after(now or self.clock.now(), tz, anchor))
        self._armed[row.id] = armed
        heapq.heappush(self._heap, (armed.next_due, row.id))
        if wake:
            self._wake.set()
        return armed

    def _rebuild_heap(self) -> None:
        self._heap = [(a.next_due, sid) for sid, a in self._armed.items()]
        heapq.heapify(self._heap)

    def _view(self, armed: _Armed, failing: str | None = None) -> ScheduleView:
        row = armed.row
        runs = armed.when.next_runs(self.clock.now(), armed.tz, armed.anchor)
        return ScheduleView(row.id, row.platform, row.channel, row.when_text, row.timezone, row.source, runs,
                            failing if failing is not None else row.failing)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            while self._heap and (self._heap[0][1] not in self._armed
                                  or self._armed[self._heap[0][1]].next_due != self._heap[0][0]):
                heapq.heappop(self._heap)  # removed or re-armed since it was pushed
            if not self._heap:
                await self._wake.wait()
                continue
            wait = (self._heap[0][0] - self.clock.now()).total_seconds()
            if wait > 0:
                sleeper = asyncio.ensure_future(self.clock.sleep(wait))
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
                continue
            now = self.clock.now()
            due: list[tuple[_Armed, datetime]] = []
            skipped: list[tuple[_Armed, datetime, str]] = []
            marks: dict[int, _InProgress] = {}
            while self._heap and self._heap[0][0] <= now:
                at, sid = heapq.heappop(self._heap)
                armed = self._armed.get(sid)
                if armed is None or armed.next_due != at:
                    continue
                busy = self._running.get(sid)
                if busy is None:  # marked here, before any await, so the next due moment sees it
                    marks[sid] = self._running[sid] = _InProgress(at)
                    due.append((armed, at))
                else:  # at most one run in progress per schedule: skip, never queue
                    reason = busy.skip_reason()
                    log.warning("schedule #%d (%s:%s): the run due at %s is skipped: %s (it was due at %s)", sid,
                                armed.row.platform, armed.row.channel, at.isoformat(), reason, busy.due.isoformat())
                    skipped.append((armed, at, f"skipped: {reason}"))
                # the next run after now: a long stall never turns into a burst of old runs
                armed.next_due = armed.when.next_after(now, armed.tz, armed.anchor)
                heapq.heappush(self._heap, (armed.next_due, sid))
            if due or skipped:
                self._launch(self._post_batch(due, skipped, marks), marks)

    def _release(self, marks: Mapping[int, _InProgress]) -> None:
        for sid, mark in marks.items():
            if self._running.get(sid) is mark:
                del self._running[sid]

    async def _post_batch(self, due: builtins.list[tuple[_Armed, datetime]],
                          skipped: builtins.list[tuple[_Armed, datetime, str]],
                          marks: Mapping[int, _InProgress], claimed: bool = False) -> None:
        """Record the skipped runs, offer the due ones and post this process's share of them, with one
        reading (``claimed``: runs taken over, already this process's)."""
        reading = _Reading(self)
        if claimed:
            for mark in marks.values():
                mark.claiming = False
            await self._post_claimed(due, marks, {(a.row.id, at.timestamp()) for a, at in due}, reading)
            return
        if skipped:
            # skipped runs are claimed (a restart never posts them) and recorded as skipped at once
            recorded = await self._until_grace(self.store.claim, [(a.row.id, at.timestamp()) for a, at, _ in skipped],
                                               "claim", retry=False)
            await self._record_skipped(skipped, recorded or set())
        offered = await self._until_grace(self.store.offer, [(a.row.id, at.timestamp()) for a, at in due], "offer")
        for mark in marks.values():
            mark.claiming = False
        if offered is None:
            self._release({a.row.id: marks[a.row.id] for a, _ in due})
            return
        # Every replica that finds the runs due has offered the same ones; each takes a window of them at a
        # time, the next one only when it has posted (two windows in flight), so a busy replica takes fewer
        # and a free one more, and none waits for another's (``take``: FOR UPDATE SKIP LOCKED). About 24
        # windows a burst: enough to share among a few replicas, few enough that the store's round trips
        # (take, posting, finish: three a window) stay a small part of posting them.
        size = min(self.policy.window, max(10, -(-len(due) // self.policy.windows)))
        windows = iter([due[i:i + size] for i in range(0, len(due), size)])
        gate = asyncio.Semaphore(self.policy.concurrency)

        async def share() -> None:
            for window in windows:
                keys = [(a.row.id, at.timestamp()) for a, at in window]
                taken = await self._until_grace(lambda runs: self.store.take(runs, self.owner), keys, "take")
                won = taken or set()
                self._held.update(won)
                await self._post_claimed(window, marks, won, reading, gate)

        await asyncio.gather(*(share() for _ in range(2)))

    async def _record_skipped(self, skipped: builtins.list[tuple[_Armed, datetime, str]],
                              claimed: set[tuple[int, float]]) -> None:
        passed = [(a.row.id, at.timestamp(), result) for a, at, result in skipped
                  if (a.row.id, at.timestamp()) in claimed]
        for armed, at, _ in skipped:
            if (armed.row.id, at.timestamp()) in claimed:
                metrics.SCHEDULED_POSTS.labels(armed.row.platform, "skipped").inc()
        if passed:
            await persist(lambda: self.store.finish(passed), f"the result of {len(passed)} skipped scheduled run(s)",
                          self.clock)

    async def _post_claimed(self, due: builtins.list[tuple[_Armed, datetime]], marks: Mapping[int, _InProgress],
                            claimed: set[tuple[int, float]], reading: "_Reading",
                            gate: asyncio.Semaphore | None = None) -> None:
        runs = [(a, at) for a, at in due if (a.row.id, at.timestamp()) in claimed]
        self._release({a.row.id: marks[a.row.id] for a, at in due if (a.row.id, at.timestamp()) not in claimed})
        if not runs:
            return
        outcome = await reading.get()
        for armed, _ in runs:
            marks[armed.row.id].reading = False
        # claimed → posting: from here a crash leaves the run recorded as skipped, never sent twice; a run
        # another replica took over meanwhile (this one's lock was lost) is not posted here
        keys = [(a.row.id, at.timestamp()) for a, at in runs]
        try:
            mine = await asyncio.wait_for(self.store.posting(keys, self.owner), 10.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - posted all the same: late rather than lost
            log.warning("%d scheduled run(s): their posting state was not stored (%s); posting them", len(keys),
                        _why(exc))
            mine = set(keys)
        self._held.difference_update(keys)
        for armed, at in [r for r in runs if (r[0].row.id, r[1].timestamp()) not in mine]:
            log.warning("schedule #%d: its run due at %s was taken over by another replica; not posted here",
                        armed.row.id, at.isoformat())
            self._release({armed.row.id: marks[armed.row.id]})
        runs = [r for r in runs if (r[0].row.id, r[1].timestamp()) in mine]
        if not runs:
            return
        gate = gate or asyncio.Semaphore(self.policy.concurrency)

        async def one(armed: _Armed, at: datetime) -> tuple[int, float, str]:
            try:
                async with gate:
                    return armed.row.id, at.timestamp(), await self._post_one(armed, outcome)
            finally:  # this schedule is free as soon as its own post is done, not the whole batch
                self._release({armed.row.id: marks[armed.row.id]})

        results = await asyncio.gather(*(one(a, at) for a, at in runs))
        await persist(lambda: self.store.finish(results), f"the result of {len(results)} scheduled post(s)", self.clock)

    async def _until_grace(self, write: Callable[[builtins.list[tuple[int, float]]], Awaitable[Any]],
                           runs: builtins.list[tuple[int, float]], what: str,
                           retry: bool = True) -> Any:
        """``write(runs)`` in the store (a claim, an offer, a take: they decide which replica posts a run).
        While the database cannot be reached, try again (1 s, then every 2 s) until the oldest run is older
        than the grace window; then None: the runs are skipped, with a log line. Without ``retry`` (only
        skipped runs, whose claim just records them) one try."""
        if not runs:
            return set()
        oldest = min(due for _, due in runs)
        delay, logged = 1.0, False
        while True:
            try:
                result = await write(runs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any database failure: tried again within the grace
                left = oldest + self.grace - self.clock.now().timestamp()
                if not retry:
                    log.info("could not record %d skipped scheduled run(s) (%s)", len(runs), _why(exc))
                    return None
                if left <= 0:
                    log.error("could not %s %d scheduled run(s) within QUOTA_SCHEDULE_GRACE (%.0f s): %s; they "
                              "are skipped", what, len(runs), self.grace, _why(exc))
                    return None
                if not logged:
                    log.warning("could not %s %d scheduled run(s) (%s); trying again until the database "
                                "answers (for up to %.0f s)", what, len(runs), _why(exc), left)
                    logged = True
                await self.clock.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)  # a refused connection costs nothing: be quick once it is back
                continue
            if logged:
                log.info("%s of %d scheduled run(s) done after the database came back", what, len(runs))
            return set() if result is None else result

    async def _post_one(self, armed: _Armed, outcome: Any) -> str:
        row = armed.row
        poster = self.posters.get(row.platform)
        if poster is None:
            return await self._failing(armed, f"{row.platform} is not configured")
        failure = await deliver(poster, row.channel, outcome, self.policy, self.clock, f"schedule #{row.id}")
        metrics.SCHEDULED_POSTS.labels(row.platform, "failed" if failure is not None else "posted").inc()
        if failure is not None:
            return await self._failing(armed, failure)
        if armed.row.failing is not None:
            log.info("schedule #%d recovered: posted to %s:%s", row.id, row.platform, row.channel)
            await self._set_failing(armed, None)
        return "posted" if not isinstance(outcome, QuotaError) else f"posted error: {outcome.code}"

    async def _set_failing(self, armed: _Armed, reason: str | None) -> None:
        armed.row = ScheduleRow(**{**armed.row.__dict__, "failing": reason})
        try:
            await self.store.set_failing(armed.row.id, reason)
        except Exception as exc:  # noqa: BLE001 - shown by /quota-schedule list only: not worth holding the run for
            log.warning("schedule #%d: its failing state was not stored (%s)", armed.row.id, _why(exc))

    async def _failing(self, armed: _Armed, reason: str) -> str:
        log.warning("schedule #%d (%s:%s) is failing: %s", armed.row.id, armed.row.platform, armed.row.channel, reason)
        await self._set_failing(armed, reason)
        return f"failed: {reason}"
