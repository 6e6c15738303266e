"""The text grammar of the surfaces where a command is typed as words (Slack, the console), derived
from the definitions: words in any order; a number is the days, ``public`` the visibility, a known
account name the account; anything else is a one-line usage answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..alerts import AlertError, parse_condition
from ..errors import UsageError, shown
from .catalog import find
from .spec import Command

HELP_WORDS = ("help", "-h", "--help", "?")
# each text command (what follows the slash) and the command families it serves
SLASHES = {"quota": ("quota", "history", "help"), "quota-schedule": ("schedule",), "quota-alert": ("alert",),
           "quota-mode": ("mode",), "help": ("help",)}
FAMILIES = {"quota": "quota", "quota-schedule": "schedule", "quota-alert": "alert", "quota-mode": "mode"}
# Discord's names of commands a text surface types as words: `/quota-history 7` is `/quota history 7`
ALIASES = {"quota-history": ("quota", "history"), "quota-help": ("help", "")}


@dataclass(frozen=True)
class Call:
    """A command with its argument values (each argument missing from ``values`` takes its default)."""

    command: Command
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        arg = next((a for a in self.command.args if a.name == name), None)
        return arg.default if arg is not None else None


def slash_form(command: Command) -> str:
    """How a text surface writes the command: ``/quota history [account] [days] [public]``."""
    head = {"quota": "/quota", "history": "/quota history", "help": "/quota help"}.get(command.path[0])
    if head is None:
        head = " ".join([f"/quota-{command.path[0]}", *command.path[1:]])
    order = {"account": 0, "days": 1, "public": 2}  # the order usage texts show (any order is taken)
    args = sorted((a for a in command.args if a.kind != "channel"), key=lambda a: (a.required is False, order.get(a.name, -1)))
    return " ".join([head, *("[" + "|".join(a.choices) + "]" if a.choices else a.placeholder() for a in args)])


def usage(commands: tuple[Command, ...], family: str, names: tuple[str, ...] = ()) -> str:
    """The usage of a family (``quota``, ``schedule``, ``alert``, ``mode``) as one line of text (backticks
    mark what is typed)."""
    members = [c for c in commands if (c.path[0] in ("quota", "history", "help")) == (family == "quota")
               and (family == "quota" or c.path[0] == family)]
    parts = [f"`{slash_form(c)}`: {c.summary[0].lower()}{c.summary[1:]}" for c in members]
    text = "Usage: " + "; ".join(parts) + "."
    days = next((a for c in members for a in c.args if a.name == "days"), None)
    if days is not None:
        text += f" Days: {days.low} to {days.high} (default {days.default}); `public` shows the answer to the channel."
    if names and family in ("quota", "mode"):
        text += f" Accounts: {', '.join(f'`{n}`' for n in names)}."
    examples = [e for c in members for e in c.examples]
    if examples:
        slash = "/quota" if family == "quota" else f"/quota-{family}"
        text += " E.g. " + ", ".join(f"`{slash} {e}`" for e in examples) + "."
    return text


def _not_understood(what: str, commands: tuple[Command, ...], family: str, names: tuple[str, ...]) -> UsageError:
    echo = shown(what, 60)
    return UsageError(f"I did not understand '{echo}'. {usage(commands, family, names)}", echo=echo)


def parse(slash: str, text: str, commands: tuple[Command, ...], names: tuple[str, ...] = ()) -> Call:
    """The call a typed command means (``slash`` without its ``/``: quota, quota-schedule, quota-alert,
    quota-mode, help). Raises ``UsageError`` with the one line to answer."""
    slash = slash.lstrip("/").lower()
    if slash in ALIASES:
        slash, word = ALIASES[slash]
        text = f"{word} {text}"
    words = text.split()
    lowered = [w.lower() for w in words]
    if slash == "help" or (lowered and lowered[0] in HELP_WORDS):
        family = FAMILIES.get(slash)
        return Call(find(commands, "help"), {"family": family})
    if slash == "quota":
        return _quota(words, lowered, commands, names)
    if slash == "quota-mode":
        return _mode(words, lowered, commands, names)
    if slash in ("quota-schedule", "quota-alert"):
        return _manage(slash.split("-", 1)[1], words, lowered, text, commands, names)
    raise UsageError(f"Unknown command '/{shown(slash, 40)}'. {usage(commands, 'quota', names)}", echo=shown(slash, 40))


def _quota(words: list[str], lowered: list[str], commands: tuple[Command, ...], names: tuple[str, ...]) -> Call:
    history = "history" in lowered
    command = find(commands, "history" if history else "quota")
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for word, low in zip(words, lowered):
        if low == "history" and history and "history" not in values:
            values["history"] = True
        elif low == "public":
            values["public"] = True
        elif history and low.isdigit():
            if "days" in values:
                unknown.append(word)
            values["days"] = int(low)
        elif names and low in names and "account" not in values:
            values["account"] = low
        else:
            unknown.append(word)
    values.pop("history", None)
    if not history and names and len(unknown) == 1 and "account" not in values and not unknown[0].isdigit():
        values["account"] = lowered[words.index(unknown[0])]  # an unknown name: answered with the names
        unknown = []
    if unknown:
        raise _not_understood(" ".join(words), commands, "quota", names)
    if history and "days" in values:
        days = command.arg("days")
        assert days.low is not None and days.high is not None
        if not days.low <= values["days"] <= days.high:
            raise UsageError(f"Days must be {days.low} to {days.high}. {usage(commands, 'quota', names)}")
    return Call(command, values)


def _mode(words: list[str], lowered: list[str], commands: tuple[Command, ...], names: tuple[str, ...]) -> Call:
    """`/quota-mode [relax|fast|turbo|log] [account]`, in any order; with several accounts a word that is
    neither is taken for an account (and answered with the names when there is none such)."""
    command = find(commands, "mode")
    choices = command.arg("mode").choices
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for word, low in zip(words, lowered):
        if low in ("relaxed", "relax-mode"):
            low = "relax"
        if low in choices and "mode" not in values:
            values["mode"] = low
        elif names and "account" not in values and (low in names or not low.isdigit()):
            values["account"] = low
        else:
            unknown.append(word)
    if unknown:
        raise _not_understood(" ".join(words), commands, "mode", names)
    return Call(command, values)


def _manage(family: str, words: list[str], lowered: list[str], text: str, commands: tuple[Command, ...],
            names: tuple[str, ...]) -> Call:
    action = lowered[0] if lowered else "help"
    if action not in ("add", "list", "remove"):
        raise _not_understood(words[0], commands, family, names)
    command = find(commands, family, action)
    rest = words[1:]
    if action == "list":
        if rest:
            raise _not_understood(" ".join(words), commands, family, names)
        return Call(command)
    if action == "remove":
        if len(rest) != 1 or not rest[0].lstrip("#").isdigit():
            raise UsageError(f"Say which one, e.g. `/quota-{family} remove 3` (ids are in `/quota-{family} list`).")
        return Call(command, {"id": int(rest[0].lstrip("#"))})
    if not rest:
        example = command.examples
        raise UsageError(f"Say {'when' if family == 'schedule' else 'below what'}, e.g. "
                         + " or ".join(f"`/quota-{family} {e}`" for e in example)
                         + ("" if family == "schedule" else f" ({command.arg('condition').example})") + ".")
    if family == "schedule":
        return Call(command, {"when": " ".join(rest)})
    condition, account = _condition_and_account(rest, names)
    return Call(command, {"condition": condition, **({"account": account} if account else {})})


def _condition_and_account(args: list[str], names: tuple[str, ...]) -> tuple[str, str | None]:
    """`add <condition> [account]`: the whole text when it is a condition (`run out` has a space), else
    the last word is the account when the rest is a condition; otherwise the whole text, whose
    AlertError then names the mistake."""
    whole = " ".join(args)
    if len(args) < 2:
        return whole, None
    try:
        parse_condition(whole)
        return whole, None
    except AlertError:
        pass
    try:
        parse_condition(" ".join(args[:-1]))
    except AlertError:
        return whole, None
    return " ".join(args[:-1]), args[-1].lower()
