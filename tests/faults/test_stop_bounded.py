"""Stopping is bounded whatever a background task does (bot.tasks.stop_tasks).

A loop that logs and goes round on ``Exception`` kept running when the cancellation of its await came
back as another error (a SQLite rollback after a cancelled COMMIT did): the stop waited for it forever,
and `quota-bot run` that could not start never exited.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.tasks import stop_tasks


async def _swallowing_loop(rounds: list[int]) -> None:
    """The shape of the history's prune loop: the first cancellation surfaces as an error it logs."""
    first = True
    while True:
        try:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if first:
                    first = False
                    raise RuntimeError("cannot rollback - no transaction is active") from None
                raise
        except RuntimeError:
            rounds.append(1)
        await asyncio.sleep(3600)


async def _deaf(released: asyncio.Event) -> None:
    """Ignores every cancellation until the test releases it."""
    while not released.is_set():
        try:
            await released.wait()
        except asyncio.CancelledError:
            continue


async def test_a_loop_that_swallowed_its_cancellation_is_cancelled_again(caplog):
    rounds: list[int] = []
    task = asyncio.create_task(_swallowing_loop(rounds), name="history-prune")
    plain = asyncio.create_task(asyncio.sleep(3600), name="plain")
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "bot.tasks"):
        await stop_tasks([task, plain, None], grace=0.2, last=0.5)
    assert task.cancelled() and plain.cancelled() and rounds == [1]
    assert 0.2 <= time.monotonic() - started < 0.5
    assert [r.getMessage() for r in caplog.records] == [
        "task history-prune went on after it was cancelled; cancelling it again"]


async def test_a_task_that_never_stops_is_left_behind_in_bounded_time(caplog):
    released = asyncio.Event()
    task = asyncio.create_task(_deaf(released), name="deaf")
    quick = asyncio.create_task(asyncio.sleep(3600), name="quick")
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "bot.tasks"):
        await stop_tasks([task, quick], grace=0.1, last=0.2)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert quick.cancelled() and not task.done()
    assert "task deaf did not stop; left behind" in [r.getMessage() for r in caplog.records]
    released.set()
    await task


async def test_a_failed_task_is_consumed_not_raised():
    async def fails() -> None:
        raise ValueError("logged where it failed")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await stop_tasks([task])
    assert isinstance(task.exception(), ValueError)
