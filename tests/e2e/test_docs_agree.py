"""The docs a newcomer follows say what the code does (issue 21).

- every setting the code reads is in `.env.example` (and nothing else is), and the README names it;
- the Discord commands the real adapter registers (against the fake Discord) are the ones
  docs/discord.md and the README's Discord section describe, with every option;
- the Slack commands of slack-app-manifest.yml are the ones the real adapter acks (signed, in HTTP mode,
  against the fake Slack; another command gets bolt's 404), each is in docs/slack.md and the README's
  Slack section (with the HTTP-mode Request URL, and every scope), and every concrete example those
  docs give is understood by the adapter;
- the manifest keeps the rules Slack's manifest checker applies that can be checked offline;
- the README's Commands table lists every `quota-bot` subcommand and option; every metric name the
  docs give exists.
"""

from __future__ import annotations

import ast
import asyncio
import re
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from adapters.cli.main import _parser
from bot import metrics
from bot.accounts import QuotaPool
from bot.alerts import Alerts
from bot.history import History
from bot.scheduler import Scheduler
from bot.settings import Settings
from bot.store import Store
from tests.fakes.clock import FakeClock
from tests.fakes.slack import ADMIN_ID
from tests.e2e.test_discord_e2e import start_discord  # noqa: F401  (fixtures)
from tests.e2e.test_slack_e2e import slack_http  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
DISCORD_DOC = (ROOT / "docs" / "discord.md").read_text(encoding="utf-8")
SLACK_DOC = (ROOT / "docs" / "slack.md").read_text(encoding="utf-8")
MANIFEST = yaml.safe_load((ROOT / "slack-app-manifest.yml").read_text(encoding="utf-8"))
ACCOUNTS = ("studio", "lab")  # the account names the docs' examples use

# Slack's granular bot scopes (the list behind docs.slack.dev/reference/scopes?token_types=Bot, as
# @slack/web-api's manifest types carry it); a scope outside it makes the manifest fail to import.
BOT_SCOPES = frozenset("""
app_mentions:read bookmarks:read bookmarks:write calls:read calls:write channels:history channels:join
channels:manage channels:read channels:write.invites channels:write.topic chat:write chat:write.customize
chat:write.public commands conversations.connect:manage conversations.connect:read conversations.connect:write
datastore:read datastore:write dnd:read emoji:read files:read files:write groups:history groups:read
groups:write groups:write.invites groups:write.topic im:history im:read im:write incoming-webhook
links.embed:write links:read links:write metadata.message:read mpim:history mpim:read mpim:write
mpim:write.invites mpim:write.topic pins:read pins:write reactions:read reactions:write reminders:read
reminders:write remote_files:read remote_files:share remote_files:write team.billing:read
team.preferences:read team:read tokens.basic triggers:read triggers:write usergroups:read usergroups:write
users.profile:read users:read users:read.email users:write workflow.steps:execute
""".split())


def section(text: str, title: str) -> str:
    """The text of the `## title` section, up to the next `## ` heading."""
    match = re.search(rf"(?m)^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def spans(text: str) -> list[str]:
    """Every inline code span (`…`) of a Markdown text."""
    return re.findall(r"`([^`\n]+)`", text)


def command_spans(text: str, commands: set[str]) -> list[str]:
    """The code spans that start with one of ``commands`` (`/quota`, `/quota-alert`, …)."""
    return [s for s in spans(text) if s.split()[0] in commands]


# --- settings ----------------------------------------------------------------------------------------

SETTINGS = {name.upper() for name in Settings.model_fields}


def test_env_example_lists_every_setting_and_only_settings():
    listed = set(re.findall(r"(?m)^(?:#\s*)?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE))
    assert SETTINGS - listed == set(), "settings the code reads that .env.example does not list"
    assert listed - SETTINGS == set(), ".env.example lists names the code does not read"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_readme_names_every_setting(name):
    assert re.search(rf"`{name}`|`{name}=|^{name}=", README, re.M), f"{name} is not in the README"


def _environment_reads() -> dict[str, str]:
    """Every literal name read with os.environ[…], os.environ.get(…) or os.getenv(…) in bot/ and adapters/."""
    found: dict[str, str] = {}
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key = None
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
                key = node.slice
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
                    "os.environ.get", "os.getenv", "environ.get", "getenv", "os.environ.setdefault"):
                key = node.args[0] if node.args else None
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found[key.value] = str(path.relative_to(ROOT))
    return found


def test_the_code_reads_no_environment_variable_outside_the_settings():
    strays = {name: where for name, where in _environment_reads().items() if name.upper() not in SETTINGS}
    assert strays == {}, "read from the environment but not a setting (add it to bot/settings.py and .env.example)"


# --- the CLI and the metrics -------------------------------------------------------------------------

def _subcommands() -> dict[str, set[str]]:
    parser = _parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: {o for a in p._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
            for name, p in sub.choices.items()}


def test_the_readme_commands_table_lists_every_subcommand_and_option():
    table = section(README, "Commands")
    rows = [line for line in table.splitlines() if line.startswith("| `quota-bot ")]
    for name, options in _subcommands().items():
        mine = [row for row in rows if re.match(rf"\| `quota-bot {name}( |`)", row)]
        assert mine, f"`quota-bot {name}` has no row in the README's Commands table"
        for option in options:
            assert any(option in row for row in mine), f"`quota-bot {name} {option}` is not in the Commands table"


def test_every_metric_the_docs_name_exists():
    families = {m.name for m in metrics.REGISTRY.collect()}
    samples = {s.name for m in metrics.REGISTRY.collect() for s in m.samples} | families
    for where, text in (("README.md", README), ("docs/discord.md", DISCORD_DOC), ("docs/slack.md", SLACK_DOC)):
        for name in set(re.findall(r"\bquota_bot_[a-z_]+", text)):
            assert name in samples or name in families or any(name == f + "_total" for f in families), \
                f"{where} names {name}, which /metrics does not serve"


# --- Discord ----------------------------------------------------------------------------------------

async def _registered(discord_fake, start_discord, make_service, pooled: bool) -> dict[str, set[str]]:  # noqa: F811
    """{"quota": {"public", …}, "quota-schedule add": {"when", "channel"}, …} as PUT to the fake Discord."""
    service = (QuotaPool({n: make_service() for n in ACCOUNTS}) if pooled else make_service())
    await start_discord(service)
    body = discord_fake.command_puts[-1].body
    paths: dict[str, set[str]] = {}
    for command in body:
        subs = [o for o in command.get("options", []) if o["type"] == 1]
        if subs:
            paths[command["name"]] = set()
            for sub in subs:
                paths[f"{command['name']} {sub['name']}"] = {o["name"] for o in sub.get("options", [])}
        else:
            paths[command["name"]] = {o["name"] for o in command.get("options", [])}
    return paths


def _discord_span(span: str, paths: dict[str, set[str]]) -> tuple[str, set[str]]:
    """(`quota-schedule add`, {"when", "channel"}) from `/quota-schedule add when:<…> [channel]`."""
    words = span.split()
    path = words[0][1:]
    if len(words) > 1 and f"{path} {words[1]}" in paths:
        path = f"{path} {words[1]}"
    options = set()
    for word in words[1:]:
        match = re.match(r"^\[?([a-z_]+)(?::|\]$)", word)
        if match:
            options.add(match.group(1))
    return path, options


async def test_discord_docs_describe_exactly_the_registered_commands(discord_fake, start_discord, make_service):  # noqa: F811
    single = await _registered(discord_fake, start_discord, make_service, pooled=False)
    pooled = await _registered(discord_fake, start_discord, make_service, pooled=True)
    assert set(single) == set(pooled)
    paths = {p: single[p] | pooled[p] for p in single}
    names = {f"/{p.split()[0]}" for p in paths}
    for where, text in (("docs/discord.md", DISCORD_DOC), ("README's Discord section", section(README, "Discord"))):
        found = command_spans(text, names | {"/quota-bogus"})
        shown = [_discord_span(s, paths) for s in found]
        for path in paths:
            assert any(p == path or p.startswith(path + " ") for p, _ in shown), f"{where} does not show `/{path}`"
        for span, (path, options) in zip(found, shown):
            assert path in paths, f"{where}: `{span}` is no command the bot registers"
            assert options <= paths[path], f"{where}: `{span}` uses options /{path} does not have"
    # the full guide gives every option of every command
    shown = [_discord_span(s, paths) for s in command_spans(DISCORD_DOC, names)]
    for path, options in paths.items():
        given = set().union(*[o for p, o in shown if p == path])
        assert options <= given, f"docs/discord.md never shows /{path} with {sorted(options - given)}"
    assert "Discord commands registered globally: " + ", ".join(p for p in paths if " " not in p) in DISCORD_DOC


# --- Slack ------------------------------------------------------------------------------------------

MANIFEST_COMMANDS = {c["command"] for c in MANIFEST["features"]["slash_commands"]}
MANIFEST_SCOPES = list(MANIFEST["oauth_config"]["scopes"]["bot"])


def test_the_manifest_keeps_slack_s_rules():
    info = MANIFEST["display_information"]
    assert 1 <= len(info["name"]) <= 35 and len(info.get("description", "")) <= 140
    assert 4000 >= len(info.get("long_description", "x" * 174)) >= 174
    bot_user = MANIFEST["features"]["bot_user"]
    assert re.fullmatch(r"[a-z0-9._-]{1,80}", bot_user["display_name"])
    commands = MANIFEST["features"]["slash_commands"]
    assert 1 <= len(commands) <= 50
    assert len({c["command"] for c in commands}) == len(commands), "a command is listed twice"
    socket = MANIFEST["settings"]["socket_mode_enabled"]
    for c in commands:
        assert set(c) <= {"command", "description", "usage_hint", "should_escape", "url"}, c
        assert re.fullmatch(r"/[a-z0-9_-]{1,31}", c["command"]), f"{c['command']}: lowercase, at most 32 characters"
        assert 1 <= len(c["description"]) <= 2000
        assert len(c.get("usage_hint", "")) <= 1000
        assert isinstance(c.get("should_escape", False), bool)
        if socket is False or "url" in c:
            assert str(c.get("url", "")).startswith("https://"), f"{c['command']}: HTTP mode needs an https url"
    assert MANIFEST_SCOPES and set(MANIFEST_SCOPES) <= BOT_SCOPES, set(MANIFEST_SCOPES) - BOT_SCOPES
    assert len(MANIFEST_SCOPES) == len(set(MANIFEST_SCOPES))


def _usage_words(command: str) -> set[str]:
    """What the adapter's own usage answer offers after ``command``: `add`, `history`, `<account>`, …"""
    from bot.commands import catalog
    from bot.commands import usage as derived

    commands = catalog(ACCOUNTS)
    family = {"/quota": "quota", "/quota-schedule": "schedule", "/quota-alert": "alert", "/quota-mode": "mode"}[command]
    text = derived(commands, family, ACCOUNTS)
    return {w.strip("<>[]") for w in re.findall(rf"`{re.escape(command)} ([a-z<>\[\]]+)", text)}


@pytest.mark.parametrize("command", sorted(MANIFEST_COMMANDS))
def test_each_manifest_usage_hint_offers_what_the_command_takes(command):
    hint = next(c for c in MANIFEST["features"]["slash_commands"] if c["command"] == command).get("usage_hint", "")
    for word in _usage_words(command):
        assert re.search(rf"\b{word}\b", hint), f"{command}'s usage_hint does not offer {word!r}: {hint!r}"


async def test_the_adapter_acks_exactly_the_manifest_commands(slack_http):  # noqa: F811
    bot = await slack_http()
    assert bot.adapter._ack_first == MANIFEST_COMMANDS
    for command in sorted(MANIFEST_COMMANDS):
        resp, answer, rid, _ = await bot.command("help", command=command)
        assert resp.status == 200, command
        body = (await bot.fake.wait_response(rid)).body
        assert body["text"].startswith("*Usage:*"), (command, body["text"])
    resp, answer, _, _ = await bot.command("help", command="/quota-bogus")
    assert resp.status == 404 and answer == {"error": "unhandled request"}


@pytest.mark.parametrize("where", ["docs/slack.md", "README"])
def test_slack_docs_give_every_command_scope_and_request_url(where):
    text = SLACK_DOC if where == "docs/slack.md" else section(README, "Slack")
    for command in MANIFEST_COMMANDS:
        assert command in {s.split()[0] for s in spans(text)}, f"{where} does not show `{command}`"
    for scope in MANIFEST_SCOPES:
        assert scope in spans(text), f"{where} does not name the scope `{scope}`"
    request_url = [p for p in re.split(r"\n\s*\n", text) if "Request URL" in p]
    assert request_url, f"{where} does not say where HTTP mode's Request URL goes"
    for command in MANIFEST_COMMANDS:
        assert any(f"`{command}`" in p for p in request_url), f"{where}: HTTP mode's Request URL of `{command}`"
    assert "/slack/events" in " ".join(request_url)
    for span in command_spans(text, {c for c in {s.split()[0] for s in spans(text)} if c.startswith("/quota")}):
        assert span.split()[0] in MANIFEST_COMMANDS, f"{where}: `{span}` is not a command of the manifest"


MISUNDERSTOOD = ("I did not understand", "days must be", "Say when", "Say which one", "Say below what",
                 "is not a condition", "is not understood", "is not a 5-field", "is not a valid cron", "There is no account")


def _examples() -> list[str]:
    """Every concrete Slack command the docs show (no <placeholder>, [option], | or …), outside the
    troubleshooting tables (which quote what Slack itself says, e.g. `/quota failed with …`)."""
    texts = [SLACK_DOC, section(README, "Slack")]
    texts += [line for line in README.splitlines() if "Slack" in line]
    texts = ["\n".join(line for line in text.splitlines() if not line.startswith("|")) for text in texts]
    found = []
    for text in texts:
        for span in command_spans(text, MANIFEST_COMMANDS):
            bare_group = span in MANIFEST_COMMANDS - {"/quota"}  # a name, not an example: usage by design
            if not re.search(r"[<>\[\]|…]", span) and not bare_group and span not in found:
                found.append(span)
    return found


@pytest.fixture
async def slack_managed(tmp_path, make_service):
    """A pool of the docs' accounts with the real Scheduler, Alerts and History on a real Store."""
    store = await Store.open(str(tmp_path / "docs.sqlite3"))
    pool = QuotaPool({n: make_service() for n in ACCOUNTS})
    posters: dict = {}
    scheduler = Scheduler(store, pool, posters, timezone="UTC", clock=FakeClock(datetime(2026, 3, 2, tzinfo=timezone.utc)))
    alerts = Alerts(store, pool, posters)
    history = History(store, pool, tz=ZoneInfo("UTC"))
    await scheduler.start()
    await alerts.start()
    yield pool, scheduler, posters, alerts, history
    await alerts.stop()
    await scheduler.stop()
    await store.close()


async def test_every_slack_example_in_the_docs_is_understood(slack_http, slack_managed):  # noqa: F811
    pool, scheduler, posters, alerts, history = slack_managed
    bot = await slack_http(pool, schedules=scheduler, admins=ADMIN_ID, alerts=alerts, history=history)
    posters["slack"] = bot.adapter
    examples = _examples()
    assert len(examples) >= 8, examples
    for example in examples:
        command, _, text = example.partition(" ")
        resp, _, rid, _ = await bot.command(text, command=command, user_id=ADMIN_ID)
        assert resp.status == 200, example
        answer = (await asyncio.wait_for(bot.fake.wait_response(rid, timeout=20), 25)).body["text"]
        assert not any(marker in answer for marker in MISUNDERSTOOD), f"`{example}` → {answer}"
        if "help" not in text.split():
            assert not answer.startswith("*Usage:*"), f"`{example}` → {answer}"
        assert not answer.startswith(":x:"), f"`{example}` → {answer}"
        if text.split()[:1] == ["history"]:
            assert answer.startswith("Midjourney fast time"), f"`{example}` → {answer}"
