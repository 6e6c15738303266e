"""Stopping background tasks within a bound.

A loop that logs and goes round on ``Exception`` keeps running when a library turns the cancellation of
its await into an error of its own (a stop then waited for it forever, and `quota-bot run` that could not
start never exited). ``stop_tasks`` cancels, waits a little, cancels what is still running once more (the
loop is asleep again by then), and leaves behind, logged, whatever still has not finished: a stop is
bounded whatever the tasks do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

log = logging.getLogger("bot.tasks")

GRACE = 1.0  # seconds a cancelled task gets before it is cancelled again (a rollback in flight finishes first)
LAST = 2.0  # seconds after the second cancellation before it is left behind


async def stop_tasks(tasks: Iterable[asyncio.Task[object] | None], *, grace: float = GRACE,
                     last: float = LAST) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and wait for them, at most ``grace + last`` seconds.
    Their results and errors are consumed: a task that failed was logged where it failed."""
    given = [task for task in tasks if task is not None]
    pending = {task for task in given if not task.done()}
    for task in pending:
        task.cancel()
    for wait, again in ((grace, True), (last, False)):
        if not pending:
            break
        _, pending = await asyncio.wait(pending, timeout=wait)
        for task in pending:
            if again:
                log.warning("task %s went on after it was cancelled; cancelling it again", task.get_name())
                task.cancel()
            else:
                log.error("task %s did not stop; left behind", task.get_name())
    for task in (t for t in given if t.done() and not t.cancelled()):
        task.exception()  # retrieved, so asyncio does not log it again at exit
