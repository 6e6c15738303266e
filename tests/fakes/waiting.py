"""Waiting for what a fake server has recorded, woken by each change instead of polling."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable


class Changes:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def touch(self) -> None:
        """Something was recorded: wake every waiter to re-check."""
        self._event.set()

    async def wait(self, probe: Callable[[], Any], timeout: float) -> Any:
        """Return ``probe()`` as soon as it is not None; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (value := probe()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s")
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                continue
            if self._event is event:
                self._event = asyncio.Event()
        return value
