"""The command layer (issue 22): every command declared once, the same answer for the same input on
every surface. The grammar table, the surfaces through one runner on a real store, and the console
serving every command in a real `quota-bot run` process."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import asdict, is_dataclass

import pytest

from bot.commands import (AlertAdded, AlertList, Caller, Commands, Failure, Help, Reading, Removed, ScheduleAdded,
                          ScheduleList, catalog, find, parse)
from bot.commands.text import Call
from bot.errors import UsageError
from tests.fakes.cli import clean_env

NAMES = ("alpha", "beta")


# --- 1. the grammar: words in any order, one range, the same for Slack and the console --------------

GRAMMAR = [
    ("quota", "", "quota", {}),
    ("quota", "public", "quota", {"public": True}),
    ("quota", "beta public", "quota", {"account": "beta", "public": True}),
    ("quota", "PUBLIC Beta", "quota", {"account": "beta", "public": True}),
    ("quota", "history", "history", {}),
    ("quota", "history 7", "history", {"days": 7}),
    ("quota", "history alpha 7", "history", {"account": "alpha", "days": 7}),  # the order of the usage line
    ("quota", "history 7 alpha", "history", {"account": "alpha", "days": 7}),
    ("quota", "7 public history beta", "history", {"account": "beta", "days": 7, "public": True}),
    ("quota", "history 400", "history", {"days": 400}),
    ("quota", "help", "help", {"family": "quota"}),
    ("help", "", "help", {"family": None}),
    ("quota-schedule", "add 0 9 * * 1-5", "schedule add", {"when": "0 9 * * 1-5"}),
    ("quota-schedule", "list", "schedule list", {}),
    ("quota-schedule", "remove #3", "schedule remove", {"id": 3}),
    ("quota-schedule", "help", "help", {"family": "schedule"}),
    ("quota-alert", "add 20% beta", "alert add", {"condition": "20%", "account": "beta"}),
    ("quota-alert", "add run out", "alert add", {"condition": "run out"}),
    ("quota-alert", "remove 4", "alert remove", {"id": 4}),
]


@pytest.mark.parametrize("slash, text, name, values", GRAMMAR)
def test_the_text_grammar(slash, text, name, values):
    call = parse(slash, text, catalog(NAMES, 400), NAMES)
    assert call.command.name == name and call.values == values


@pytest.mark.parametrize("slash, text, says", [
    ("quota", "history 0", "Days must be 1 to 400"),
    ("quota", "history 401", "Days must be 1 to 400"),
    ("quota", "7", "I did not understand '7'"),  # days go with history only
    ("quota", "alpha beta", "I did not understand 'alpha beta'"),
    ("quota", "history alpha gamma", "I did not understand 'history alpha gamma'"),
    ("quota-schedule", "dance", "I did not understand 'dance'"),
    ("quota-schedule", "add", "Say when"),
    ("quota-schedule", "remove seven", "Say which one"),
    ("quota-alert", "list everything", "I did not understand 'list everything'"),
])
def test_what_the_grammar_does_not_take_is_one_usage_line(slash, text, says):
    with pytest.raises(UsageError) as caught:
        parse(slash, text, catalog(NAMES, 400), NAMES)
    assert caught.value.user_message.startswith(says) and "\n" not in caught.value.user_message


def test_history_days_reach_quota_history_days_in_every_surface():
    commands = catalog((), 90)
    days = find(commands, "history").arg("days")
    assert (days.low, days.high, days.default) == (1, 90, 30)
    with pytest.raises(UsageError):
        parse("quota", "history 91", commands)
    assert find(catalog((), 7), "history").arg("days").default == 7  # the default never exceeds the range


def test_the_account_argument_exists_only_with_an_accounts_file():
    for name in ("quota", "history", "alert add"):
        assert "account" not in [a.name for a in find(catalog(), *name.split()).args]
        assert "account" in [a.name for a in find(catalog(NAMES), *name.split()).args]


def test_usage_texts_come_from_the_definitions():
    from bot.commands import slash_form, usage

    commands = catalog(NAMES, 400)
    for family in ("quota", "schedule", "alert"):
        text = usage(commands, family, NAMES)
        for command in commands:
            if command.path[0] == family or (family == "quota" and command.path[0] in ("quota", "history", "help")):
                assert slash_form(command) in text


# --- 2. every surface, the same answer --------------------------------------------------------------

@pytest.fixture
async def parts(tmp_path, make_service):
    """A real store, scheduler and alerts over the fake upstream; posters for every surface."""
    from bot.alerts import Alerts
    from bot.scheduler import Scheduler
    from bot.store import open_store
    from tests.fakes.posters import RecordingPoster

    store = await open_store(f"sqlite:///{tmp_path}/q.sqlite3")
    service = make_service()
    posters = {p: RecordingPoster() for p in ("discord", "slack", "console")}
    scheduler = Scheduler(store, service, posters, timezone="UTC", grace=600, min_every=60)
    alerts = Alerts(store, service, posters)
    await scheduler.start()
    await alerts.start()
    yield Commands(service, schedules=scheduler, alerts=alerts, history_days=400)
    await alerts.stop()
    await scheduler.stop()
    await store.close()


def _neutral(answer):
    """An answer with what differs by surface by design (ids, the platform and channel of a view) left out."""
    if isinstance(answer, (ScheduleAdded, AlertAdded)):
        return type(answer).__name__, answer.view.when if isinstance(answer, ScheduleAdded) else answer.view.condition
    if isinstance(answer, (ScheduleList, AlertList)):
        return type(answer).__name__, len(answer.views)
    if isinstance(answer, Reading):
        return "Reading", answer.outcome.headline, answer.public
    if isinstance(answer, Failure):
        return "Failure", type(answer.error).__name__, answer.error.user_message
    if isinstance(answer, Removed):
        return "Removed", answer.ok
    return type(answer).__name__, asdict(answer) if is_dataclass(answer) else answer


SURFACES = ("discord", "slack", "console")
INPUTS = [("quota", "public"), ("quota", "help"), ("quota-schedule", "add every 6h"), ("quota-schedule", "list"),
          ("quota-schedule", "add every 1s"), ("quota-schedule", "remove 999"), ("quota-alert", "add 20%"),
          ("quota-alert", "add twenty"), ("quota-alert", "list"), ("quota-alert", "remove 999")]


@pytest.mark.parametrize("slash, text", INPUTS)
async def test_every_surface_gives_the_same_answer_to_the_same_input(parts, slash, text):
    answers = []
    for surface in SURFACES:
        call = parse(slash, text, parts.all, parts.names)
        answers.append(_neutral(await parts.run(Caller(surface, f"{surface}-channel", "u1"), call)))
    assert answers[0] == answers[1] == answers[2], answers


async def test_a_surface_that_refuses_the_manage_permission_gets_its_sentence_and_nothing_changes(parts):
    async def no(what: str) -> str:
        return f"Only the boss may manage quota {what}."

    call = parse("quota-schedule", "add every 6h", parts.all)
    answer = await parts.run(Caller("slack", "C1", "u2", no), call)
    assert answer.ok is False and answer.text == "Only the boss may manage quota schedules."
    listed = await parts.run(Caller("slack", "C1", "u2"), parse("quota-schedule", "list", parts.all))
    assert listed.views == []


async def test_help_lists_every_family(parts):
    answer = await parts.run(Caller("console", "console"), Call(find(parts.all, "help"), {}))
    assert isinstance(answer, Help) and len(answer.lines) == 4
    assert "/quota-schedule add <when>" in answer.lines[1] and "/quota-alert add <condition>" in answer.lines[2]
    assert "/quota-mode [relax|fast|turbo|log]" in answer.lines[3]


# --- 3. the console serves every command, in the real process ----------------------------------------

async def _until(proc, lines: list[str], probe, timeout: float = 20) -> str:
    while True:
        for line in lines:
            if probe(line):
                return line
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode()
        assert line, "the bot exited:\n" + "".join(lines)
        lines.append(line)


async def test_the_console_serves_schedules_alerts_and_history_and_posts_into_itself(tmp_path):
    env = clean_env(PORT="0", HOST="127.0.0.1", PYTHONUNBUFFERED="1", DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3",
                    QUOTA_SCHEDULE_MIN_EVERY="1s", QUOTA_HISTORY_DAYS="120")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []

    async def say(text: str) -> None:
        proc.stdin.write(text.encode() + b"\n")
        await proc.stdin.drain()

    try:
        await _until(proc, lines, lambda l: "Console chat ready" in l)
        await say("/quota-schedule add every 2s")
        added = await _until(proc, lines, lambda l: l.startswith("Schedule #"))
        assert "'every 2s'" in added and "posted here" in added
        await say("/quota-schedule list")
        await _until(proc, lines, lambda l: "#1 'every 2s'" in l and "console:console" in l)
        # the schedule posts into the console (a reading, as in a channel)
        await _until(proc, lines, lambda l: "of 15 h left" in l, timeout=30)
        await say("/quota-schedule remove 1")
        await _until(proc, lines, lambda l: "Removed schedule #1." in l)
        await say("/quota-alert add 20%")
        await _until(proc, lines, lambda l: l.startswith("Alert #1 added: below '20%'"))
        await say("/quota-alert list")
        await _until(proc, lines, lambda l: "#1 below '20%'" in l)
        await say("/quota history 7")  # and 1..QUOTA_HISTORY_DAYS (120 here) like every surface
        await _until(proc, lines, lambda l: "chart:" in l and l.strip().endswith("quota-history.png"))
        await say("/quota history 121")
        await _until(proc, lines, lambda l: "Days must be 1 to 120" in l)
        await say("/quota-history 0")  # Discord's name for it is understood too
        await _until(proc, lines, lambda l: "Days must be 1 to 120" in l and len([x for x in lines if "Days must" in x]) == 2)
        await say("/help")
        await _until(proc, lines, lambda l: "/quota-alert add <condition>" in l)
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert "Traceback" not in "".join(lines) + err.decode()
    assert not any("Unknown command" in l for l in lines)


async def test_ctrl_c_at_the_terminal_stops_the_console_without_a_traceback(tmp_path):
    """Ctrl-C reaches the whole process group, the chart worker included: nobody prints a traceback."""
    import os
    import signal

    env = clean_env(PORT="0", HOST="127.0.0.1", PYTHONUNBUFFERED="1", DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, start_new_session=True)
    lines: list[str] = []
    try:
        await _until(proc, lines, lambda l: "Console chat ready" in l)
        proc.stdin.write(b"/quota history 7\n")  # starts the chart worker process
        await proc.stdin.drain()
        await _until(proc, lines, lambda l: "chart:" in l)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(lines) + out.decode() + err.decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-2000:]
    assert proc.returncode == 0
