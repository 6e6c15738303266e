"""A recording stand-in for a chat platform's ``post`` (the adapters' own tests cover their real post)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any


class RecordingPoster:
    def __init__(self) -> None:
        self.posts: list[tuple[str, Any, float]] = []
        self.attempts = 0
        self.script: deque[BaseException] = deque()  # raised, in order, before posts succeed

    async def post(self, channel: str, outcome: Any) -> None:
        self.attempts += 1
        if self.script:
            raise self.script.popleft()
        self.posts.append((channel, outcome, time.monotonic()))


async def eventually(probe, timeout: float = 5.0, message: str = "condition not met"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"{message} within {timeout}s")
