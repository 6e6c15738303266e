"""Shared by the benchmarks: percentiles, and ``Remote``, which runs a fake platform and its load in a
child process so a benchmark measures the bot's own event loop and not the fake's (the bot runs in
this process, the fake and the clock that times it there)."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any, Callable


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of the values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Remote:
    """``Remote(target, *args)`` starts ``target(conn, *args)`` (an async function) in a child process;
    ``ask(message)`` sends a message and waits for the child's answer without blocking the loop."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_child, args=(target, child, args), daemon=True)
        self._process.start()

    async def receive(self, timeout: float = 120) -> Any:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._conn.poll, timeout)
        if not ready:
            raise TimeoutError("the child process did not answer")
        return self._conn.recv()

    async def ask(self, message: Any, timeout: float = 120) -> Any:
        self._conn.send(message)
        return await self.receive(timeout)

    def close(self) -> None:
        try:
            self._conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


def _child(target: Callable[..., Any], conn: Any, args: tuple[Any, ...]) -> None:
    asyncio.run(target(conn, *args))


async def recv(conn: Any) -> Any:
    """In the child: wait for the parent's next message without blocking the child's loop."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.poll, None)
    return conn.recv()

