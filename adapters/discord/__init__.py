"""Discord adapter: every command of bot.commands as app commands, arriving over the gateway (bot.py) or
as signed HTTP POSTs (interactions.py, DISCORD_PUBLIC_KEY), answered as embeds (render.py)."""

from __future__ import annotations

from typing import Any


def create_adapter(settings: Any, service: Any, schedules: Any = None, **parts: Any) -> Any:
    """``parts``: ``commands`` (bot.commands.Commands) and ``gateway_lease`` (bot.replicas.Lease)."""
    from .bot import DiscordAdapter

    return DiscordAdapter(settings, service, schedules, **parts)
