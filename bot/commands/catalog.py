"""Every command, declared once: ``catalog()`` gives the definitions for this bot (the account
argument exists only with an accounts file; history's days reach QUOTA_HISTORY_DAYS)."""

from __future__ import annotations

from ..alerts import EXAMPLES as ALERT_EXAMPLES
from ..report import MODES
from ..schedules import EXAMPLE as SCHEDULE_EXAMPLE
from .spec import Arg, Command

HISTORY_DEFAULT_DAYS = 30
PUBLIC = Arg("public", "bool", "Show the answer to everyone in the channel (default: only you)", default=False)
CHANNEL = Arg("channel", "channel", "Where to post (default: this channel)")


def _account(help: str) -> Arg:
    return Arg("account", "account", help)


def catalog(names: tuple[str, ...] = (), history_days: int = 400) -> tuple[Command, ...]:
    """The commands of a bot with these account names (empty: one account, no account argument) and
    QUOTA_HISTORY_DAYS ``history_days`` (the most days history takes)."""
    several = bool(names)
    high = max(1, int(history_days))
    days = Arg("days", "int", f"How many days back (1-{high}, default {min(HISTORY_DEFAULT_DAYS, high)})",
               default=min(HISTORY_DEFAULT_DAYS, high), low=1, high=high)
    ident = {what: Arg("id", "id", f"The {what}'s id, as shown by /quota-{what} list", required=True)
             for what in ("schedule", "alert")}
    return (
        Command(("quota",), "How much Midjourney fast time is left" + (", across the accounts" if several else ""),
                (PUBLIC,) + ((_account("Only this account (default: all of them, with the sum)"),) if several else ()),
                examples=("public",)),
        Command(("history",), "Fast time over the last days: pace, forecast and a chart",
                (days, PUBLIC) + ((_account("Only this account (default: all of them and the pool)"),) if several else ()),
                examples=("history 7",)),
        Command(("schedule", "add"), "Post the quota on a schedule (cron or 'every 6h')",
                (Arg("when", "text", "A cron expression such as '0 9 * * 1-5', or 'every 6h'", required=True,
                     example=SCHEDULE_EXAMPLE), CHANNEL), manage="schedules",
                examples=("add 0 9 * * 1-5", "add every 6h")),
        Command(("schedule", "list"), "List the quota schedules", manage="schedules"),
        Command(("schedule", "remove"), "Remove a quota schedule by its id", (ident["schedule"],), manage="schedules"),
        Command(("alert", "add"), "Post into a channel when the fast time falls below a line",
                (Arg("condition", "text", "Below what: 20%, 5h, 90m or runout; add relax to switch the account to "
                     "Relax then", required=True, example=ALERT_EXAMPLES), CHANNEL)
                + ((_account("Only this account (default: all of them, the sum; an alert that acts names one)"),)
                   if several else ()),
                manage="alerts", examples=("add 20%", "add 5h", "add 2h relax")),
        Command(("alert", "list"), "List the quota alerts", manage="alerts"),
        Command(("alert", "remove"), "Remove a quota alert by its id", (ident["alert"],), manage="alerts"),
        Command(("mode",), "The speed mode (Fast, Relax, Turbo) of " + ("each account" if several else "the account")
                + ": show it, switch it, or list the last switches",
                (Arg("mode", "choice", "relax, fast or turbo switches (managers only); log lists the last switches "
                     "(default: show the mode)", choices=("relax", "fast", "turbo", "log")),)
                + ((_account("The account to switch (default: every account is shown)"),) if several else ()),
                manage="modes", manage_only=("mode", MODES), examples=("relax", "fast", "log")),
        Command(("help",), "What the commands take"),
    )


def find(commands: tuple[Command, ...], *path: str) -> Command:
    return next(c for c in commands if c.path == tuple(path))
