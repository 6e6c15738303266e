"""What a command is, declared once for every surface: its arguments (names, kinds, ranges), who may
run it, and what it is for. Discord's options, Slack's and the console's text grammar and the help
texts are all derived from these definitions (``bot.commands.catalog``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ArgKind = Literal["bool", "int", "text", "account", "channel", "id", "choice"]


@dataclass(frozen=True)
class Arg:
    """One argument. ``text``: a free text that takes the rest of the words in text grammars (a cron
    expression, a condition); ``channel``: where to post, a picker in Discord, this channel elsewhere;
    ``account``: one of the accounts file's names (autocompleted in Discord); ``choice``: one word of
    ``choices`` (a menu in Discord)."""

    name: str
    kind: ArgKind
    help: str
    required: bool = False
    default: int | bool | None = None
    low: int | None = None
    high: int | None = None
    example: str = ""
    choices: tuple[str, ...] = ()

    def placeholder(self) -> str:
        """How usage texts name it: ``<when>`` (required) or ``[days]`` (optional)."""
        return f"<{self.name}>" if self.required else f"[{self.name}]"


@dataclass(frozen=True)
class Command:
    """One command. ``path`` is its words: ``("quota",)``, ``("history",)``, ``("schedule", "add")``.
    ``manage`` names what it manages (``schedules``, ``alerts``, ``modes``) when it needs the manage
    permission (Manage Server in Discord; workspace admins, owners and SLACK_ADMIN_USER_IDS in Slack);
    ``manage_only`` (an argument and its values) narrows that to the calls where the argument has one
    of those values (``mode`` shows for everyone and switches for managers)."""

    path: tuple[str, ...]
    summary: str
    args: tuple[Arg, ...] = ()
    manage: str | None = None
    examples: tuple[str, ...] = field(default=())
    manage_only: tuple[str, tuple[str, ...]] | None = None

    def manages(self, values: dict[str, object]) -> str | None:
        """What a call with these argument values manages (the permission it needs), or None."""
        if self.manage is None or self.manage_only is None:
            return self.manage
        arg, wanted = self.manage_only
        return self.manage if values.get(arg) in wanted else None

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def family(self) -> str:
        """The metric's command label and the surface's command name: quota, quota-history,
        quota-schedule, quota-alert, quota-mode, quota-help."""
        return "quota" if self.path == ("quota",) else f"quota-{self.path[0]}"

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)
