"""The whole configuration checked at once, for every command (`run`, `check`, `quota`, `history`).

``load_settings`` checks each setting's type; ``validate`` parses what the settings hold as text (the
accounts file, QUOTA_SCHEDULES, QUOTA_ALERTS, QUOTA_ALERT_MENTION) and raises ``SettingsError`` with one
line naming the setting. ``unconfigured`` lists items for a platform whose token is not set: `run` and
`check` refuse them, the one-shot commands ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .accounts import Account
    from .alerts import AlertItem
    from .schedules import ConfigItem

TOKENS = {"discord": "DISCORD_BOT_TOKEN", "slack": "SLACK_BOT_TOKEN"}


@dataclass(frozen=True)
class Config:
    settings: Settings
    accounts: list[Account]
    schedules: list[ConfigItem]  # QUOTA_SCHEDULES
    alerts: list[AlertItem]  # QUOTA_ALERTS
    mentions: dict[str, str]  # QUOTA_ALERT_MENTION

    @property
    def platforms(self) -> set[str]:
        """The chat platforms whose bot token is set."""
        return {name for name, token in TOKENS.items() if getattr(self.settings, token.lower()) is not None}

    def unconfigured(self) -> list[str]:
        """One line per configured item that posts to a platform whose token is not set (the line `run`
        stops with)."""
        lines = []
        for setting, items in (("QUOTA_SCHEDULES", self.schedules), ("QUOTA_ALERTS", self.alerts)):
            for item in items:
                if item.platform not in self.platforms:
                    lines.append(f"{setting}: item '{item.platform}:{item.channel}' needs {TOKENS[item.platform]} "
                                 "to be set")
        return lines


def validate(settings: Settings) -> Config:
    """Parse every setting that holds a list or a file; ``SettingsError`` (one line) on the first bad one."""
    from .accounts import accounts_from_settings
    from .alerts import AlertError, parse_mentions
    from .alerts import parse_config as parse_alerts
    from .schedules import ScheduleError
    from .schedules import parse_config as parse_schedules

    accounts = accounts_from_settings(settings)  # SettingsError naming QUOTA_ACCOUNTS_FILE
    names = tuple(a.name for a in accounts) if settings.quota_accounts_file else ()
    try:
        schedules = parse_schedules(settings.quota_schedules, settings.quota_schedule_min_every)
    except ScheduleError as exc:
        raise SettingsError(exc.user_message) from None
    try:
        alerts = parse_alerts(settings.quota_alerts, names)
        mentions = parse_mentions(settings.quota_alert_mention)
    except AlertError as exc:
        raise SettingsError(exc.user_message) from None
    return Config(settings, accounts, schedules, alerts, mentions)
