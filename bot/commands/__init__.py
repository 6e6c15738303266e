"""The command layer: every command declared once (``catalog``), run once for every surface
(``Commands.run``: permissions, metrics, error mapping), answering with neutral answers
(``answers``) that each adapter renders in its platform's idiom. Text surfaces (Slack, the console)
parse typed words with ``text.parse``; Discord derives its options from the same definitions."""

from .answers import (AlertAdded, AlertList, Answer, Failure, Help, HistoryAnswer, ModeList, ModeLog, ModeSwitched,
                      Notice, Reading, Removed, ScheduleAdded, ScheduleList)
from .catalog import catalog, find
from .run import Caller, Commands, ReadingSource
from .spec import Arg, Command
from .text import HELP_WORDS, Call, parse, slash_form, usage

__all__ = ["AlertAdded", "AlertList", "Answer", "Arg", "Call", "Caller", "Command", "Commands", "Failure", "HELP_WORDS",
           "Help", "HistoryAnswer", "ModeList", "ModeLog", "ModeSwitched", "Notice", "Reading", "ReadingSource", "Removed",
           "ScheduleAdded", "ScheduleList", "catalog", "find", "parse", "slash_form", "usage"]
