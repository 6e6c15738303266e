"""Slack adapter: `/quota` and `/quota-schedule` on slack-bolt, replies in Block Kit."""

from __future__ import annotations

from typing import Any


def create_adapter(settings: Any, service: Any, schedules: Any = None) -> Any:
    from .app import SlackAdapter

    return SlackAdapter(settings, service, schedules)
