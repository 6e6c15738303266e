"""Discord adapter: `/quota` and `/quota-schedule` as app commands, replies as embeds."""

from __future__ import annotations

from typing import Any


def create_adapter(settings: Any, service: Any, schedules: Any = None) -> Any:
    from .bot import DiscordAdapter

    return DiscordAdapter(settings, service, schedules)
