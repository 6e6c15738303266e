"""A fake clock for the scheduler, alerts and history: time moves only when a test calls ``advance``.

It satisfies ``bot.scheduler.Clock``. ``advance`` never sleeps a fixed amount of real time: it wakes each
sleeper it passes, in order, and lets the loop settle (``settle``) before the clock moves on.
"""

from __future__ import annotations

import asyncio
import heapq
import linecache
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

SETTLE_DEADLINE = 2.0  # real seconds a settle waits for worker threads (the SQLite store's) before moving on
MAX_YIELDS = 5000  # loop iterations a settle may take
IDLE_POLLS = 3  # polls (1 ms apart) on which everything must be seen waiting before a settle ends
# worker threads: the function each runs and the name of its work queue there (aiosqlite 0.22; the stdlib)
WORKERS = {("aiosqlite", "_connection_worker_thread"): "tx", ("concurrent", "_worker"): "work_queue"}


class FakeClock:
    """A clock for tests: time moves only with ``advance``, which wakes the sleepers it passes."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._count = 0

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), self._count, future))
        await future

    async def advance(self, seconds: float, deadline: float = SETTLE_DEADLINE) -> None:
        """Move time forward step by step: settle, wake each sleeper at its time and settle again."""
        target = self._now + timedelta(seconds=seconds)
        await settle(deadline)
        while self._sleepers and self._sleepers[0][0] <= target:
            at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, at)
            if not future.done():  # else cancelled meanwhile
                future.set_result(None)
                await settle(deadline)
        self._now = target
        await settle(deadline)


async def settle(deadline: float = SETTLE_DEADLINE) -> None:
    """Let every task run until each one waits on this clock, a socket or an event, and none on a worker
    thread.

    Yielding to the loop (``asyncio.sleep(0)``) costs no real time. A task waiting on a worker thread (the
    SQLite store's aiosqlite thread, ``asyncio.to_thread``) needs real time to get its answer: that is
    waited for, polling every millisecond, for up to ``deadline`` seconds, then the clock moves on anyway.
    A task waiting on a socket (a loopback HTTP reading) is not waited for: the tests' ``eventually`` does."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + deadline
    quiet = idle = 0
    for _ in range(MAX_YIELDS):
        if loop.time() > ends:
            return
        ready = getattr(loop, "_ready", None)  # CPython's event loop; on another, the count of yields decides
        quiet = quiet + 1 if not ready else 0
        # settled: nothing ready to run and every worker thread waiting for work, seen on several polls in a
        # row (a thread hands its answer back between two of them; 3.13 schedules that hand-over later)
        idle = idle + 1 if quiet >= 3 and not _threads_busy() else 0
        if idle >= IDLE_POLLS:
            return
        await asyncio.sleep(0.001 if quiet >= 3 else 0)


def _threads_busy() -> bool:
    """Whether a worker thread (aiosqlite's, an executor's) has work: it is not waiting in its queue's
    ``get()``, or its queue holds work it has not taken yet."""
    for top in sys._current_frames().values():
        frame = top
        while frame is not None and _worker(frame) is None:
            frame = frame.f_back
        if frame is None:
            continue  # not a worker thread (the loop's own, pytest's)
        queue = frame.f_locals.get(_worker(frame) or "")
        # waiting: the worker's loop stands at its queue's get(), and anything above it is that get()
        # itself (queue.py, threading.py: a Python-level Queue; a SimpleQueue's get() has no frame)
        waiting = ".get(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno) and _only_waiting(top, frame)
        if not waiting or (queue is not None and not queue.empty()):
            return True
    return False


def _only_waiting(top: FrameType, worker: FrameType) -> bool:
    """Whether every frame above the worker's own is the standard library's queue or lock waiting."""
    frame: FrameType | None = top
    while frame is not None and frame is not worker:
        if Path(frame.f_code.co_filename).name not in ("queue.py", "threading.py"):
            return False
        frame = frame.f_back
    return True


def _worker(frame: FrameType) -> str | None:
    """The name of the work queue if ``frame`` runs a worker thread's loop, else None."""
    for (package, function), queue in WORKERS.items():
        if frame.f_code.co_name == function and package in Path(frame.f_code.co_filename).parts:
            return queue
    return None
