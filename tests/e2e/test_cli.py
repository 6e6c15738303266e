"""The `quota-bot` command as a user runs it: real subprocesses, the fake upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import aiohttp

from tests.conftest import TEST_TOKEN
from tests.secrets import ALL_TEST_SECRETS

SIM_LABEL = "SIMULATED"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "PYTHONPATH")}
    env.update(extra)
    return env


async def _cli(*args: str, env: dict[str, str], cwd, stdin: bytes | None = None, timeout: float = 30):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode, out.decode(), err.decode()


def _no_secrets(*texts: str) -> None:
    for text in texts:
        for name, value in ALL_TEST_SECRETS.items():
            assert value not in text, f"{name} printed"


async def test_quota_prints_one_reading(upstream, tmp_path):
    code, out, err = await _cli("quota", cwd=tmp_path, env=_env(NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL=upstream.base_url))
    assert code == 0, err
    assert "12.06 h of 15 h left" in out and "80.40%" in out and "Job mode" in out and SIM_LABEL not in out
    assert len(upstream.asks) == 1
    _no_secrets(out, err)


async def test_quota_json_has_numbers_and_raw_fields(upstream, tmp_path):
    code, out, err = await _cli("quota", "--json", cwd=tmp_path,
                                env=_env(NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL=upstream.base_url))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["remaining"] == 12.06 and doc["total"] == 15.0 and doc["percent"] == 80.4
    assert doc["unit"] == "hours" and isinstance(doc["renewal"], int) and doc["simulated"] is False
    assert doc["fields"]["Fast Time Remaining"].startswith("12.06/15.0 hours")


async def test_quota_env_file_is_read(upstream, tmp_path):
    (tmp_path / ".env").write_text(f"NEXTLEG_API_TOKEN={TEST_TOKEN}\nNEXTLEG_BASE_URL={upstream.base_url}\n")
    code, out, err = await _cli("quota", cwd=tmp_path, env=_env())
    assert code == 0, err
    assert SIM_LABEL not in out and len(upstream.asks) == 1


async def test_quota_errors_are_one_line_on_stderr(upstream, tmp_path):
    code, out, err = await _cli("quota", cwd=tmp_path,
                                env=_env(NEXTLEG_API_TOKEN="wrong-token-123456", NEXTLEG_BASE_URL=upstream.base_url))
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "quota-bot: The upstream rejected the API token (NEXTLEG_API_TOKEN); ask the operator to check it.",
        "  detail: GET /v2/info -> HTTP 401"]
    assert "wrong-token-123456" not in err


async def test_a_sentence_that_says_it_has_been_logged_shows_the_detail(upstream, tmp_path):
    from bot.simulator import Scripted

    upstream.ask_script.append(Scripted(200, "<html>maintenance</html>"))
    code, out, err = await _cli("quota", cwd=tmp_path,
                                env=_env(NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL=upstream.base_url))
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 2, err
    assert lines[0] == "quota-bot: The Midjourney API sent an answer quota-bot could not read; it has been logged."
    assert lines[1].startswith("  detail: GET /v2/info -> HTTP 200: not JSON: <html>maintenance</html>")
    _no_secrets(out, err)


async def test_quota_upstream_down(tmp_path):
    code, out, err = await _cli("quota", cwd=tmp_path, env=_env(
        NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL="http://127.0.0.1:9", NEXTLEG_POLL_TIMEOUT="1"))
    assert code == 1 and err.strip().startswith("quota-bot: The upstream (127.0.0.1) cannot be reached right now: "
                                                "the connection was refused")
    _no_secrets(out, err)


async def test_bad_setting_exits_2_naming_the_variable(tmp_path):
    code, out, err = await _cli("quota", cwd=tmp_path, env=_env(QUOTA_CACHE_SECONDS="a minute"))
    assert code == 2 and err.strip() == "quota-bot: QUOTA_CACHE_SECONDS: must be a number"


async def test_no_token_uses_the_labelled_simulator(tmp_path):
    code, out, err = await _cli("quota", cwd=tmp_path, env=_env())
    assert code == 0, err
    assert out.startswith("[SIMULATED reading") and "of 15 h left" in out


async def test_check_reports_what_works(upstream, tmp_path):
    code, out, err = await _cli("check", cwd=tmp_path, env=_env(NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL=upstream.base_url))
    assert code == 0, out + err
    assert "[ok  ] provider answered: 12.06 h of 15 h left" in out
    assert "Discord: not configured (set DISCORD_BOT_TOKEN)" in out and "all checks passed" in out
    code, out, err = await _cli("check", cwd=tmp_path, env=_env(NEXTLEG_API_TOKEN="wrong-token-123456", NEXTLEG_BASE_URL=upstream.base_url))
    assert code == 1 and "[FAIL] provider: The upstream rejected the API token" in out


async def test_run_serves_healthz_console_chat_and_stops_on_sigterm(tmp_path):
    env = _env(PORT="0", HOST="127.0.0.1", PYTHONUNBUFFERED="1", DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "bot exited early: " + (await proc.stderr.read()).decode()
            lines.append(line)
            if "ready:" in line:
                port = int(line.rsplit(":", 1)[1].split("/")[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                health = await resp.json()
        assert resp.status == 200 and health["status"] == "ok" and health["upstream"] == "simulated"
        assert "console" in health["adapters"]
        proc.stdin.write(b"/quota\n")
        await proc.stdin.drain()
        while not any("of 15 h left" in l for l in lines):
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 20)).decode())
        assert any(l.startswith("[SIMULATED reading") for l in lines)
        proc.stdin.write(b"/nonsense\n")
        await proc.stdin.drain()
        while not any("Unknown command '/nonsense'" in l for l in lines):
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 10)).decode())
        proc.stdin.write(b"/quota tomorrow please\n")  # a bad argument is one line, not a reading
        await proc.stdin.drain()
        while not any("I did not understand 'tomorrow please'" in l for l in lines):
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 10)).decode())
        assert sum("of 15 h left" in l for l in lines) == 1
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0 and time.monotonic() - started < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_port_in_use_is_one_line(tmp_path):
    from aiohttp import web

    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        code, out, err = await _cli("run", cwd=tmp_path, env=_env(HOST="127.0.0.1", PORT=str(port), DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3"), stdin=b"")
        assert code == 2 and err.strip().startswith(f"quota-bot: PORT: cannot listen on 127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def test_core_imports_no_platform_library():
    import subprocess

    code = ("import sys, bot.service, bot.providers, bot.report, bot.settings, bot.simulator, bot.errors, "
            "bot.schedules, bot.scheduler, bot.store, bot.logs, bot.commands, bot.alerts, bot.history, bot.config, "
            "bot.replicas, bot.webhook, bot.inbound, bot.accounts; "
            "mods = [m for m in sys.modules if m.split('.')[0] in ('discord', 'slack_bolt', 'slack_sdk', 'adapters')]; "
            "print(','.join(mods))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


async def test_check_reports_schedule_and_database_problems(tmp_path):
    (tmp_path / "bad.sqlite3").write_bytes(b"garbage" * 50)
    code, out, err = await _cli("check", cwd=tmp_path, env=_env(
        QUOTA_SCHEDULES="slack:C01=every 1h", DATABASE_URL=f"sqlite:///{tmp_path}/bad.sqlite3"))
    assert code == 1
    assert f"[FAIL] DATABASE_URL: {tmp_path}/bad.sqlite3 is not a SQLite database" in out
    assert "[FAIL] QUOTA_SCHEDULES: posts to slack, which is not configured" in out
    assert "2 check(s) failed" in out
