"""The real `quota-bot run` process for the tests that are about the process: start it with a clean
environment and PORT=0, wait for its ready line (which names its port), read its log, stop it."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from typing import Any

from .cli import clean_env

READY = re.compile(r" ready: provider=.*http://[^:]+:(\d+)/healthz")


class BotProcess:
    """``async with BotProcess(tmp_path, FOO="1") as bot: ... bot.port, bot.log()``."""

    def __init__(self, cwd: Any, *, args: tuple[str, ...] = ("run",), preexec: Any = None, **env: str) -> None:
        self.cwd = cwd
        self.args = args
        self.env = clean_env(PORT="0", HOST="127.0.0.1", LOG_LEVEL=env.pop("LOG_LEVEL", "INFO"), **env)
        self.preexec = preexec
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return "\n".join(self.lines)

    async def start(self, timeout: float = 30.0) -> "BotProcess":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *self.args, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, preexec_fn=self.preexec)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise AssertionError(f"the bot did not become ready within {timeout} s:\n{self.log()[-3000:]}") from None
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # a line over the stream's limit: keep what can be read
                line = b"<an over-long log line>\n"
            if not line:
                self._ready.set()
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(text)
            match = READY.search(text)
            if match:
                self.port = int(match.group(1))
                self._ready.set()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return self.proc.returncode or 0

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    async def __aenter__(self) -> "BotProcess":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def rss_mb(pid: int) -> float:
    """A process's current resident memory (VmRSS), in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


__all__ = ["BotProcess", "READY", "rss_mb"]
