"""Why a chat adapter cannot start: every sentence in one place, for `quota-bot run` (which stops with
it) and `quota-bot check` (which tries the same calls and prints the same line as a [FAIL]).

An adapter raises ``AdapterStartError`` (its ``str()`` names the setting to fix); anything else that
escapes an adapter's start is a bug or an unexpected library error, worded by ``start_failure`` in one
line too. Tracebacks go to the log at DEBUG only.
"""

from __future__ import annotations

from bot.errors import StartupError
from bot.logs import mask

TITLES = {"discord": "Discord", "slack": "Slack"}


class AdapterStartError(StartupError):
    """A chat adapter cannot start; ``str()`` is one line naming the setting (never a secret)."""


def discord_rejected() -> AdapterStartError:
    return AdapterStartError("DISCORD_BOT_TOKEN: Discord rejected the token (401); copy it again from the developer "
                             "portal (Bot → Reset Token)")


def discord_unreachable(api_base_url: str, exc: BaseException) -> AdapterStartError:
    return AdapterStartError(f"DISCORD_API_BASE_URL: cannot reach the Discord API at {api_base_url} "
                             f"({type(exc).__name__})")


def slack_rejected(error: str) -> AdapterStartError:
    return AdapterStartError(f"SLACK_BOT_TOKEN: Slack rejected the token ({error})")


def slack_app_token_refused(error: str) -> AdapterStartError:
    return AdapterStartError(f"SLACK_APP_TOKEN: Slack refused the Socket Mode connection ({error})")


def slack_unreachable(exc: BaseException) -> AdapterStartError:
    return AdapterStartError(f"SLACK_API_URL: cannot reach the Slack Web API ({type(exc).__name__})")


def start_failure(name: str, exc: BaseException) -> str:
    """The one line `run` stops with, and `check` prints, when adapter ``name`` cannot start."""
    title = TITLES.get(name, name)
    if isinstance(exc, AdapterStartError):
        return f"{title} could not start: {exc}"
    text = mask(" ".join(str(exc).split()))[:200]
    return f"{title} could not start: {type(exc).__name__}" + (f": {text}" if text else "")
