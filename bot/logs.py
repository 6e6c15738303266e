"""Logging: a logger per module, stdout by default, level from LOG_LEVEL, secrets masked.

Secrets are kept out of log calls by construction (they live only in SecretStr and in one
Authorization header); the masking filter is the second line of defence for anything a library logs.
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, TextIO

MASK = "«redacted»"


class SecretFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if s and len(s) >= 6}

    def add(self, *secrets: str | None) -> None:
        self.secrets.update(s for s in secrets if s and len(s) >= 6)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            if secret in masked:
                masked = masked.replace(secret, MASK)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text
        if exc_text:
            for secret in self.secrets:
                exc_text = exc_text.replace(secret, MASK)
            record.exc_text = exc_text
        if masked != message:
            record.msg, record.args = masked, None
        return True


SECRETS = SecretFilter()


def mask(text: str) -> str:
    """``text`` with every known secret replaced (for lines printed outside the log, e.g. the CLI's)."""
    for secret in SECRETS.secrets:
        text = text.replace(secret, MASK)
    return text


def setup_logging(level: str = "INFO", stream: TextIO | None = None, secrets: Iterable[str | None] = ()) -> None:
    SECRETS.add(*secrets)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(SECRETS)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_quota_bot", False):
            root.removeHandler(old)
    handler._quota_bot = True  # type: ignore[attr-defined]  # our mark, to replace our own handler only
    root.addHandler(handler)
    root.setLevel(level)
    # chatty libraries stay at WARNING unless we debug
    for name in ("discord", "slack_bolt", "slack_sdk", "aiohttp.access"):
        logging.getLogger(name).setLevel(level if level == "DEBUG" else max(logging.getLevelName(level), logging.WARNING))


def log_to_file(path: str) -> None:
    """Send the log lines to ``path`` instead of the terminal (the console chat keeps its screen for the
    chat); the same format, level and masking."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(SECRETS)
    for old in list(root.handlers):
        if getattr(old, "_quota_bot", False):
            root.removeHandler(old)
    handler._quota_bot = True  # type: ignore[attr-defined]  # our mark, to replace our own handler only
    root.addHandler(handler)
