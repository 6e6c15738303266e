"""From a Discord interaction to a call of the command layer, for both ways interactions arrive (the
gateway, through discord.py's app commands; the Interactions Endpoint URL, as JSON): which command a
name and subcommand mean, the option values as a ``Call``, whether the answer is private, who may
manage, and the account names offered while a user types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import discord

from bot.commands import Call, Command

MANAGE_HINT = "Only members with the Manage Server permission can manage quota {what}."
CHOICES_MAX = 25  # Discord shows at most 25 autocomplete choices


def discord_name(command: Command) -> tuple[str, str | None]:
    """(the app command's name, its subcommand or None): ``quota``, ``quota-history``,
    ``quota-schedule add``."""
    return command.family, command.path[1] if len(command.path) > 1 else None


def find_command(commands: Iterable[Command], name: str, subcommand: str | None) -> Command | None:
    """The definition a Discord command name (and subcommand) stands for; None for one this bot does not
    serve (registered by another version, say). `help` is not a Discord command."""
    for command in commands:
        if command.path != ("help",) and discord_name(command) == (name, subcommand):
            return command
    return None


def to_call(command: Command, values: dict[str, Any]) -> Call:
    """The call for ``values`` (option name → value; None or missing: the argument's default): an account
    name trimmed and lower-cased, a channel as its id (an object with ``id``, as discord.py gives it, or a
    snowflake string, as an HTTP interaction carries it)."""
    given: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if "account" in given:
        given["account"] = str(given["account"]).strip().lower()
    if "channel" in given:
        channel = given["channel"]
        given["channel"] = str(getattr(channel, "id", channel))
    return Call(command, given)


def is_private(command: Command, values: dict[str, Any]) -> bool:
    """Only the caller sees the answer unless `public`; manage commands always private."""
    return command.manage is not None or not values.get("public")


def manage_check(manage_guild: bool) -> Callable[[str], Awaitable[bool | str]]:
    """The caller's ``may_manage``: the command's default permission is only a hint (a server can change
    it), so Manage Server is checked on every call."""
    async def may_manage(what: str) -> bool | str:
        return True if manage_guild else MANAGE_HINT.format(what=what)

    return may_manage


def permissions_bitfield(value: Any) -> discord.Permissions:
    """An interaction's ``member.permissions`` (a decimal string), read as discord.py reads it; anything
    else is no permission at all."""
    try:
        return discord.Permissions(int(str(value))) if value is not None and str(value).isdigit() else discord.Permissions.none()
    except (ValueError, OverflowError):
        return discord.Permissions.none()


def account_choices(names: Iterable[str], typed: str) -> list[str]:
    """The account names matching what the user typed so far, at most CHOICES_MAX."""
    typed = typed.strip().lower()
    return [n for n in names if typed in n][:CHOICES_MAX]


# --- options as an HTTP interaction carries them ----------------------------------------------------------

class BadOptions(ValueError):
    """The interaction's options do not fit the command (a forged or stale body): answered as a usage line."""


def command_and_options(commands: Iterable[Command], data: Any) -> tuple[Command | None, list[Any]]:
    """The command named by an interaction's ``data`` (``name``, and a subcommand as its one option of
    type 1), and that command's options."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise BadOptions("no command name")
    options = data.get("options") or []
    if not isinstance(options, list):
        raise BadOptions("options is not a list")
    subcommand = None
    if options and isinstance(options[0], dict) and options[0].get("type") in (1, 2):
        first = options[0]
        subcommand = first.get("name") if isinstance(first.get("name"), str) else None
        options = first.get("options") or []
        if not isinstance(options, list):
            raise BadOptions("options is not a list")
    return find_command(commands, data["name"], subcommand), options


def option_values(command: Command, options: list[Any]) -> tuple[dict[str, Any], str | None]:
    """(option name → value, the name of the focused option or None) for ``command``'s arguments; an
    option of another name is ignored, a value of the wrong type or out of range raises BadOptions."""
    values: dict[str, Any] = {}
    focused = None
    for option in options:
        if not isinstance(option, dict) or not isinstance(option.get("name"), str):
            raise BadOptions("an option without a name")
        arg = next((a for a in command.args if a.name == option["name"]), None)
        if arg is None:
            continue
        value = option.get("value")
        if option.get("focused"):  # autocomplete: what the user is typing, as text
            focused = arg.name
            values[arg.name] = "" if value is None else str(value)
            continue
        if arg.kind == "bool":
            ok = isinstance(value, bool)
        elif arg.kind in ("int", "id"):
            ok = isinstance(value, int) and not isinstance(value, bool) and \
                (arg.low is None or value >= arg.low) and (arg.high is None or value <= arg.high)
        elif arg.kind == "choice":
            ok = isinstance(value, str) and value in getattr(arg, "choices", ())
        elif arg.kind == "channel":
            ok = isinstance(value, str) and value.isdigit() and len(value) <= 20
        else:
            ok = isinstance(value, str) and len(value) <= 6000
        if not ok:
            raise BadOptions(f"option {arg.name} has a value that does not fit")
        values[arg.name] = value
    return values, focused
