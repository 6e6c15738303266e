"""Discord adapter: every command of bot.commands as app commands (gateway mode), answers as embeds."""

from __future__ import annotations

from typing import Any


def create_adapter(settings: Any, service: Any, schedules: Any = None, **parts: Any) -> Any:
    """``parts``: ``commands`` (bot.commands.Commands) and ``gateway_lease`` (bot.replicas.Lease)."""
    from .bot import DiscordAdapter

    return DiscordAdapter(settings, service, schedules, **parts)
