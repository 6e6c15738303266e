"""The console chat: the default chat when neither Discord nor Slack is configured.

A person types the same commands as in Slack at the terminal running `quota-bot run` (`/quota`,
`/quota history`, `/quota-schedule`, `/quota-alert`, `/quota-mode`, `/help`) and sees the answers; schedules and
alerts added here post here while the bot runs. So the bot does all its jobs on a fresh machine with
no credentials at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import TextIO

from aiohttp import web

from bot.commands import Caller, Commands, Failure, HistoryAnswer, parse
from bot.commands.text import ALIASES, SLASHES
from bot.errors import UsageError
from bot.service import QuotaService

from .render import render_alert, render_answer, render_error, render_history, render_reading

log = logging.getLogger(__name__)

HELP = ("Type /quota for the fast time left, /quota history [days] for the last days with the pace and a chart, "
        "/quota-schedule and /quota-alert to post here on a schedule or when it runs low, /quota-mode to see or "
        "switch the speed mode (Fast, Relax, Turbo), /help for every command; Ctrl-C stops the bot.")
CHANNEL = "console"


class ConsoleAdapter:
    name = "console"

    def __init__(self, service: QuotaService, stdin: TextIO | None = None, stdout: TextIO | None = None, *,
                 commands: Commands | None = None, log_note: str | None = None) -> None:
        self.service = service
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._task: asyncio.Task[None] | None = None
        self.commands = commands or Commands(service)
        self._caller = Caller("console", CHANNEL, "console")  # the operator at the terminal may manage
        self._log_note = log_note

    def mount(self, app: web.Application) -> None:
        return None

    async def start(self) -> None:
        self._say(f"Console chat ready. {HELP}" + (f" {self._log_note}" if self._log_note else ""))
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="console-chat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def post(self, channel: str, outcome: object) -> None:
        from bot.alerts import AlertNotice

        if isinstance(outcome, AlertNotice):
            self._say(render_alert(outcome))
        else:
            self._say(render_error(outcome) if isinstance(outcome, BaseException) else render_reading(outcome))  # type: ignore[arg-type]  # a post is a reading or its error

    def _say(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    async def _loop(self) -> None:
        # A daemon thread reads stdin: a blocked readline must never hold up shutdown.
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def reader() -> None:
            for line in iter(self._in.readline, ""):
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")

        threading.Thread(target=reader, name="console-stdin", daemon=True).start()
        while True:
            line = await lines.get()
            if not line:  # EOF (e.g. stdin is /dev/null under a process manager): stop listening only
                log.info("console chat: standard input closed; the rest of the bot keeps running")
                return
            await self.handle(line.strip())

    async def handle(self, text: str) -> None:
        words = text.split()
        if not words:
            return
        slash, rest = words[0].lstrip("/").lower(), text.split(None, 1)[1] if len(words) > 1 else ""
        if slash in ("?", "h"):
            slash = "help"
        if slash not in SLASHES and slash not in ALIASES:
            self._say(f"Unknown command {words[0]!r}. {HELP}")
            return
        try:
            call = parse(slash, rest, self.commands.all, self.commands.names)
        except UsageError as exc:
            self._say(render_answer(Failure(exc)))
            return
        answer = await self.commands.run(self._caller, call)
        if isinstance(answer, HistoryAnswer):
            await self._history(answer)
        else:
            self._say(render_answer(answer))

    async def _history(self, answer: HistoryAnswer) -> None:
        """A sparkline and the pace in the terminal; the chart as a PNG next to the database."""
        history = self.commands.history
        folder = os.path.dirname(os.path.abspath(getattr(getattr(history, "store", None), "path", None)
                                                 or "quota-history.png"))
        path = os.path.join(folder, "quota-history.png")  # next to the SQLite file, else here
        try:
            await asyncio.get_running_loop().run_in_executor(None, _write, path, answer.png)
        except OSError as exc:
            log.warning("console /quota history: the chart could not be written to %s (%s)", path, exc)
            self._say(f"{render_history(answer.data)}\n  (the chart could not be written: {exc.strerror or exc})")
            return
        self._say(f"{render_history(answer.data)}\n  chart: {path}")


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
