"""Running `python -m bot …` as a user would: a subprocess with a clean environment (shared by the tests)."""

from __future__ import annotations

import asyncio
import os
import sys


def clean_env(**extra: str) -> dict[str, str]:
    """A clean environment for the subprocess: none of the test process's settings leak in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "PYTHONPATH")}
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], cwd, timeout: float = 40) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a process still running at ``timeout`` is killed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(b""), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()
