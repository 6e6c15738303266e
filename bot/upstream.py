"""Compatibility names: the providers live in ``bot.providers`` (one module per provider)."""

from __future__ import annotations

from .providers.base import DEFAULT_MIN_ASK_INTERVAL, AskLimiter, HttpProvider, PollPolicy, Provider
from .providers.nextleg import NextLegProvider, poll_result, progress_is_done, progress_number

__all__ = ["DEFAULT_MIN_ASK_INTERVAL", "AskLimiter", "HttpProvider", "NextLegProvider", "PollPolicy", "Provider",
           "poll_result", "progress_is_done", "progress_number"]
