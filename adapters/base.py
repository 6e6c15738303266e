"""What the composition root (``adapters.app``) and the scheduler expect of a chat adapter."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from bot.errors import QuotaError
from bot.report import QuotaReport

Outcome = QuotaReport | QuotaError


class Adapter(Protocol):
    name: str  # "discord", "slack", "console": the platform part of a schedule item

    def mount(self, app: web.Application) -> None:
        """Add HTTP routes to the shared server (before it starts); most adapters add none."""

    async def start(self) -> None:
        """Connect and begin serving; returns once running (work continues in background tasks)."""

    async def stop(self) -> None:
        """Disconnect; must finish within a few seconds."""

    async def post(self, channel: str, outcome: Outcome) -> None:
        """Post a scheduled, public reading (or the one-line reason it failed) into ``channel``.
        Raises ``bot.errors.PostError`` when the post did not go out."""
