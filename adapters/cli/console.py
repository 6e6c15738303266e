"""The console chat: the default chat when neither Discord nor Slack is configured.

A person types `/quota` at the terminal running `quota-bot run` and sees the answer, so the bot does
its main job on a fresh machine with no credentials at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import TextIO

from aiohttp import web

from bot.chart import render_png_async
from bot.errors import QuotaError
from bot.history import chart_spec
from bot.service import QuotaService

from .render import render_alert, render_error, render_history, render_reading

log = logging.getLogger(__name__)

HELP = ("Type /quota to see the fast time left, /quota history [days] for the last days with the pace and a "
        "chart, /help for this text; Ctrl-C stops the bot.")


class ConsoleAdapter:
    name = "console"

    def __init__(self, service: QuotaService, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.service = service
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._task: asyncio.Task[None] | None = None

    def mount(self, app: web.Application) -> None:
        return None

    async def start(self) -> None:
        self._say(f"Console chat ready. {HELP}")
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
            self._say(render_error(outcome) if isinstance(outcome, BaseException) else render_reading(outcome))  # type: ignore[arg-type]

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

    async def _history(self, args: list[str], names: tuple[str, ...]) -> None:
        """A sparkline and the pace in the terminal; the chart as a PNG next to the database."""
        history = getattr(self.service, "history", None)
        days = int(args[0]) if args and args[0].isdigit() else 30
        account = next((a for a in args if not a.isdigit()), None)
        if history is None:
            self._say("History is not available on this bot (no database).")
            return
        if not 1 <= days <= 400 or (account is not None and account not in names):
            takes = f"[account: {', '.join(names)}] " if names else ""
            self._say(f"Usage: /quota history {takes}[days 1-400, default 30]")
            return
        try:
            data = await history.data(days, account)
            png = await render_png_async(chart_spec(data, tz=history.tz))
            folder = os.path.dirname(os.path.abspath(getattr(history.store, "path", None) or "quota-history.png"))
            path = os.path.join(folder, "quota-history.png")  # next to the SQLite file, else here
            await asyncio.get_running_loop().run_in_executor(None, _write, path, png)
        except Exception as exc:
            log.exception("console /quota history failed")
            self._say(render_error(exc))
            return
        self._say(f"{render_history(data)}\n  chart: {path}")

    async def handle(self, text: str) -> None:
        words = text.split()
        if not words:
            return
        command, rest = words[0].lower(), " ".join(words[1:])
        # `public` means something in Discord and Slack; here everyone at the terminal sees the answer
        args = [w for w in rest.lower().split() if w != "public"]
        names = tuple(getattr(self.service, "names", ()))
        if command in ("/quota", "quota") and args and args[0] == "history":
            await self._history(args[1:], names)
        elif command in ("/quota", "quota") and (len(args) > 1 or (args and not names)):
            takes = f"an account name ({', '.join(names)})" if names else "nothing"
            self._say(f"I did not understand {rest!r}: /quota takes {takes} after it. {HELP}")
        elif command in ("/quota", "quota"):
            try:
                self._say(render_reading(await self.service.get_report(args[0] if args else None)))
            except QuotaError as exc:
                self._say(render_error(exc))
            except Exception as exc:  # never kill the chat
                log.exception("console /quota failed")
                self._say(render_error(exc))
        elif command in ("/help", "help", "?"):
            self._say(HELP)
        else:
            self._say(f"Unknown command {command!r}. {HELP}")


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
