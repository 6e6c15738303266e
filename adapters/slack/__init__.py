"""Slack adapter: every command of bot.commands as /quota, /quota-schedule and /quota-alert on
slack-bolt (Socket Mode or HTTP mode), answers in Block Kit."""

from __future__ import annotations

from typing import Any


def create_adapter(settings: Any, service: Any, schedules: Any = None, **parts: Any) -> Any:
    """``parts``: ``commands`` (bot.commands.Commands)."""
    from .app import SlackAdapter

    return SlackAdapter(settings, service, schedules, commands=parts.get("commands"))
