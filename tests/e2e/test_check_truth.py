"""`quota-bot check` says what `run` would meet, and start-up failures are one line (issue 21).

Real subprocesses (`python -m bot …`, a clean environment) against the fake Discord and the fake Slack on
127.0.0.1: `check` tries each chat credential with the calls `run` makes (discord.py's login, the
application, the command registration; slack-sdk's auth.test and apps.connections.open) and prints
`run`'s own sentence when one fails. `run` that cannot start prints one line, never a traceback; a
missing `--env-file` and a malformed QUOTA_SCHEDULES / QUOTA_ALERTS / QUOTA_ALERT_MENTION stop every
command the same way.
"""

from __future__ import annotations

import pytest

from tests.fakes.cli import clean_env, run_cli
from tests.fakes.discord import GUILD_ID, FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.ports import refusing_port
from tests.secrets import ALL_TEST_SECRETS

DISCORD = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
SLACK_BOT = ALL_TEST_SECRETS["SLACK_BOT_TOKEN"]
SLACK_APP = ALL_TEST_SECRETS["SLACK_APP_TOKEN"]
SIGNING = ALL_TEST_SECRETS["SLACK_SIGNING_SECRET"]
WRONG_DISCORD = "wrong-discord-token.Zz1.fedcba654321"
WRONG_SLACK = "xoxb-wrong-0000-1111-wrongSECRET"
WRONG_APP = "xapp-1-wrong-A000-1111-wrongAPPabc"
NO_TRACEBACK = "Traceback"


def _env(tmp_path, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3", HOST="127.0.0.1", PORT="0", **extra)


def _discord(fake: FakeDiscord, token: str = DISCORD) -> dict[str, str]:
    return {"DISCORD_BOT_TOKEN": token, "DISCORD_API_BASE_URL": fake.api_url, "DISCORD_GATEWAY_URL": fake.gateway_url}


def _slack_http(fake: FakeSlack, token: str = SLACK_BOT) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": token, "SLACK_SIGNING_SECRET": SIGNING, "SLACK_API_URL": fake.api_url}


def _slack_socket(fake: FakeSlack, app_token: str = SLACK_APP) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": SLACK_BOT, "SLACK_APP_TOKEN": app_token, "SLACK_API_URL": fake.api_url}


def _fails(out: str) -> list[str]:
    return [line[len("[FAIL] "):] for line in out.splitlines() if line.startswith("[FAIL] ")]


def _no_secrets(*texts: str) -> None:
    for text in texts:
        for value in (*ALL_TEST_SECRETS.values(), WRONG_DISCORD, WRONG_SLACK, WRONG_APP):
            assert value not in text


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("quota-bot: ")
    return lines[0][len("quota-bot: "):]


# --- check tries the chat credentials as run does ---------------------------------------------------

async def test_check_fails_rejected_chat_tokens_with_runs_sentences(tmp_path, discord_fake, slack_fake):
    env = _env(tmp_path, **_discord(discord_fake, WRONG_DISCORD), **_slack_http(slack_fake, WRONG_SLACK))
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    assert code == 1, out + err
    assert "all checks passed" not in out and "registered" not in out, out
    assert not discord_fake.command_puts  # nothing was registered
    fails = _fails(out)
    discord_line = next(line for line in fails if line.startswith("Discord"))
    slack_line = next(line for line in fails if line.startswith("Slack"))
    assert discord_line.startswith("Discord could not start: DISCORD_BOT_TOKEN: Discord rejected the token (401)")
    assert slack_line == "Slack could not start: SLACK_BOT_TOKEN: Slack rejected the token (invalid_auth)"
    # the fakes were asked what run asks: GET /users/@me, auth.test
    assert any(c.path == "/users/@me" for c in discord_fake.calls)
    assert any(c.path == "auth.test" for c in slack_fake.calls)

    # `run` with the same settings stops with the very same line (one platform at a time: Discord starts first)
    code, out_run, err_run = await run_cli("run", env=_env(tmp_path, **_discord(discord_fake, WRONG_DISCORD)),
                                           cwd=tmp_path)
    assert code == 2 and _one_line(err_run) == discord_line
    assert NO_TRACEBACK not in out_run + err_run
    code, out_run2, err_run2 = await run_cli("run", env=_env(tmp_path, **_slack_http(slack_fake, WRONG_SLACK)),
                                             cwd=tmp_path)
    assert code == 2 and _one_line(err_run2) == slack_line
    assert NO_TRACEBACK not in out_run2 + err_run2
    _no_secrets(out, err, out_run, err_run, out_run2, err_run2)


async def test_check_registers_the_commands_before_saying_so(tmp_path, discord_fake, slack_fake):
    env = _env(tmp_path, **_discord(discord_fake), **_slack_http(slack_fake))
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    assert code == 0, out + err
    assert "all checks passed" in out
    assert "[ok  ] Discord: logged in as quota-bot" in out and "/quota-alert, /quota-mode registered globally" in out, out
    [put] = discord_fake.command_puts  # registered globally, as run does: the same commands
    assert put.path.endswith("/commands") and "/guilds/" not in put.path
    assert {c["name"] for c in put.body} == {"quota", "quota-history", "quota-schedule", "quota-alert", "quota-mode"}
    assert [c.path for c in discord_fake.calls[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert not discord_fake.identifies  # no gateway connection
    assert "[ok  ] Slack: SLACK_BOT_TOKEN accepted (bot user U0BOT0001" in out, out
    _no_secrets(out, err)


async def test_check_names_the_guild_whose_registration_failed(tmp_path, discord_fake):
    discord_fake.put_script.append((403, {"message": "Missing Access", "code": 50001}, {}))
    env = _env(tmp_path, DISCORD_GUILD_IDS=f"{GUILD_ID},1200000000000000002", **_discord(discord_fake))
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    assert code == 1, out + err
    assert len(discord_fake.command_puts) == 2 and all("/guilds/" in c.path for c in discord_fake.command_puts)
    assert f"[FAIL] Discord commands could not be registered in guild {GUILD_ID}: 403" in out, out
    assert "/quota-alert, /quota-mode registered in guild 1200000000000000002\n" in out  # and only there


async def test_check_socket_mode_asks_for_a_connection_without_opening_it(tmp_path, slack_fake):
    code, out, err = await run_cli("check", env=_env(tmp_path, **_slack_socket(slack_fake, WRONG_APP)), cwd=tmp_path)
    assert code == 1, out + err
    line = "Slack could not start: SLACK_APP_TOKEN: Slack refused the Socket Mode connection (invalid_auth)"
    assert line in _fails(out) and "all checks passed" not in out
    code, out_run, err_run = await run_cli("run", env=_env(tmp_path, **_slack_socket(slack_fake, WRONG_APP)),
                                           cwd=tmp_path)
    assert code == 2 and _one_line(err_run) == line and NO_TRACEBACK not in out_run + err_run

    code, out, err = await run_cli("check", env=_env(tmp_path, **_slack_socket(slack_fake)), cwd=tmp_path)
    assert code == 0, out + err
    assert "Socket Mode: SLACK_APP_TOKEN accepted (apps.connections.open)" in out
    assert slack_fake.connections == 1 and slack_fake.accepted == 0  # the URL was asked for, never connected to
    _no_secrets(out, err, out_run, err_run)


async def test_check_fails_stored_items_of_a_platform_not_configured(tmp_path, discord_fake):
    from bot.store import Store

    store = await Store.open(str(tmp_path / "q.sqlite3"))
    row = await store.add_schedule("slack", "C0LOST01", "every 6h", "UTC", "chat", 0.0, "U1")
    [alert] = await store.add_alerts([("slack", "C0LOST02", "", "20%", "chat", "U1")])
    await store.close()
    code, out, err = await run_cli("check", env=_env(tmp_path, **_discord(discord_fake)), cwd=tmp_path)
    assert code == 1, out + err
    fails = _fails(out)
    assert any(f"schedule #{row.id}" in line and "slack:C0LOST01" in line and "SLACK_BOT_TOKEN" in line
               for line in fails), out
    assert any(f"alert #{alert.id}" in line and "slack:C0LOST02" in line and "SLACK_BOT_TOKEN" in line
               for line in fails), out
    assert "2 check(s) failed" in out


async def test_check_says_which_settings_file_it_read(tmp_path):
    (tmp_path / "prod.env").write_text("QUOTA_CACHE_SECONDS=30\n")
    code, out, err = await run_cli("--env-file", "prod.env", "check", env=_env(tmp_path), cwd=tmp_path)
    assert code == 0, out + err
    assert f"read from {tmp_path / 'prod.env'}" in out
    code, out, err = await run_cli("check", env=_env(tmp_path), cwd=tmp_path)
    assert "read from the environment only" in out
    (tmp_path / ".env").write_text("QUOTA_CACHE_SECONDS=30\n")
    code, out, err = await run_cli("check", env=_env(tmp_path), cwd=tmp_path)
    assert f"read from {tmp_path / '.env'}" in out


# --- start-up failures are one line -----------------------------------------------------------------

@pytest.mark.parametrize("where", ["refused", "dns"])
async def test_run_that_cannot_reach_discord_is_one_line(tmp_path, where):
    with refusing_port() as port:
        base = f"http://127.0.0.1:{port}/api/v10" if where == "refused" else "http://quota-bot-test.invalid/api/v10"
        env = _env(tmp_path, DISCORD_BOT_TOKEN=DISCORD, DISCORD_API_BASE_URL=base)
        code, out, err = await run_cli("run", env=env, cwd=tmp_path)
        code_check, out_check, _ = await run_cli("check", env=env, cwd=tmp_path)
    assert code == 2, out + err
    line = _one_line(err)
    assert line.startswith(f"Discord could not start: DISCORD_API_BASE_URL: cannot reach the Discord API at {base}")
    assert NO_TRACEBACK not in out + err
    assert code_check == 1 and line in _fails(out_check)


async def test_a_traceback_only_at_debug(tmp_path, discord_fake):
    env = _env(tmp_path, LOG_LEVEL="DEBUG", **_discord(discord_fake, WRONG_DISCORD))
    code, out, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 2 and _one_line(err).startswith("Discord could not start: DISCORD_BOT_TOKEN")
    assert NO_TRACEBACK in out  # the detail is in the log when asked for
    _no_secrets(out, err)


@pytest.mark.parametrize("command", ["run", "quota", "check"])
async def test_a_missing_env_file_is_one_line(tmp_path, command):
    missing = str(tmp_path / "nowhere" / "prod.env")
    code, out, err = await run_cli("--env-file", missing, command, env=_env(tmp_path), cwd=tmp_path)
    assert code == 2 and out == ""
    assert _one_line(err) == f"--env-file: {missing} does not exist"


@pytest.mark.parametrize("command, setting, value, line", [
    ("quota", "QUOTA_SCHEDULES", "slack:C01=every 0h", "QUOTA_SCHEDULES: item 'slack:C01=every 0h'"),
    ("history", "QUOTA_ALERTS", "slack:C0123=lots", "QUOTA_ALERTS: item 'slack:C0123=lots': 'lots' is not a condition"),
    ("check", "QUOTA_ALERT_MENTION", "teams:x", "QUOTA_ALERT_MENTION: 'teams:x'"),
    ("check", "QUOTA_SCHEDULES", "discord:general=every 1h", "QUOTA_SCHEDULES: item 'discord:general=every 1h'"),
    ("run", "QUOTA_ALERTS", "slack:C0123@nobody=5h", "QUOTA_ALERTS: item 'slack:C0123@nobody=5h': there is no account"),
])
async def test_a_malformed_setting_stops_every_command(tmp_path, command, setting, value, line):
    code, out, err = await run_cli(command, env=_env(tmp_path, **{setting: value}), cwd=tmp_path)
    assert code == 2, out + err
    assert _one_line(err).startswith(line) and out == ""
