"""Discord's app commands are derived from the command definitions (``bot.commands.catalog``): the
options the real discord.py client registers (the fake Discord's command PUT) are exactly the catalog's
arguments, names, types, required, ranges (history's days reach QUOTA_HISTORY_DAYS as set at start) and
autocomplete on the account, with and without an accounts file."""

from __future__ import annotations

import asyncio

import pytest

from adapters.discord.bot import POSTABLE, DiscordAdapter
from bot.accounts import QuotaPool
from bot.commands import catalog
from bot.settings import load_settings
from tests.fakes.discord import FakeDiscord
from tests.secrets import ALL_TEST_SECRETS

TOKEN = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
HISTORY_DAYS = 120  # QUOTA_HISTORY_DAYS at start: neither the default (400) nor the old fixed 90
NAMES = ("studio", "lab")
# Discord's option types (interactions/application-commands.mdx, Application Command Option Type)
TYPES = {"bool": 5, "int": 4, "id": 4, "text": 3, "account": 3, "channel": 7, "choice": 3}


@pytest.fixture
async def registered(make_service):
    """Start the real adapter against the fake Discord; returns (the PUT body by name, the fake)."""
    fakes: list[FakeDiscord] = []
    adapters: list[DiscordAdapter] = []

    async def start(names: tuple[str, ...]) -> tuple[dict[str, dict], FakeDiscord]:
        fake = await FakeDiscord(TOKEN).start()
        fakes.append(fake)
        settings = load_settings(None, discord_bot_token=TOKEN, discord_api_base_url=fake.api_url,
                                 discord_gateway_url=fake.gateway_url, quota_history_days=HISTORY_DAYS)
        service = QuotaPool({n: make_service() for n in names}) if names else make_service()
        adapter = DiscordAdapter(settings, service)
        adapters.append(adapter)
        await adapter.start()
        await asyncio.wait_for(fake.ready.wait(), 10)
        assert len(fake.command_puts) == 1
        return {c["name"]: c for c in fake.command_puts[0].body}, fake

    yield start
    for adapter in adapters:
        await adapter.stop()
    for fake in fakes:
        await fake.stop()


def _expected_option(arg) -> dict:
    option = {"type": TYPES[arg.kind], "name": arg.name, "required": arg.required, "description": arg.help}
    if arg.low is not None:
        option["min_value"] = arg.low
    if arg.high is not None:
        option["max_value"] = arg.high
    if arg.kind == "account":
        option["autocomplete"] = True
    if arg.kind == "channel":
        option["channel_types"] = [t.value for t in POSTABLE]
    if arg.kind == "choice":
        option["choices"] = [{"name": c, "value": c} for c in arg.choices]
    return option


def _options(body: dict) -> list[dict]:
    return [{k: v for k, v in o.items() if k in ("type", "name", "required", "description", "min_value", "max_value",
                                                   "autocomplete", "channel_types", "choices")}
            for o in body.get("options", [])]


def _by_path(put: dict[str, dict]) -> dict[tuple[str, ...], dict]:
    """{("quota",): command, ("quota-schedule", "add"): subcommand, …} as registered."""
    paths: dict[tuple[str, ...], dict] = {}
    for name, command in put.items():
        subs = [o for o in command.get("options", []) if o["type"] == 1]
        if subs:
            for sub in subs:
                paths[(name, sub["name"])] = sub
        else:
            paths[(name,)] = command
    return paths


@pytest.mark.parametrize("names", [(), NAMES], ids=["one account", "accounts file"])
async def test_registered_options_are_exactly_the_catalogs(registered, names):
    put, _ = await registered(names)
    commands = [c for c in catalog(names, HISTORY_DAYS) if c.path != ("help",)]  # no /quota-help in Discord
    expected = {(c.family,) + c.path[1:]: c for c in commands}
    registered_paths = _by_path(put)
    assert set(registered_paths) == set(expected)
    assert set(put) == {"quota", "quota-history", "quota-schedule", "quota-alert", "quota-mode"}
    for path, command in expected.items():
        body = registered_paths[path]
        assert body["description"] == command.summary, path
        assert _options(body) == [_expected_option(a) for a in command.args], path
    # the manage families: Manage Server by default, guild only, subcommands in the catalog's order
    for family in ("quota-schedule", "quota-alert"):
        group = put[family]
        assert group["default_member_permissions"] in (str(1 << 5), 1 << 5)
        assert group.get("dm_permission") is False or group.get("contexts") == [0]
        assert [o["name"] for o in group["options"]] == ["add", "list", "remove"]
    for name in ("quota", "quota-history"):
        assert put[name].get("default_member_permissions") is None


@pytest.mark.parametrize("names", [(), NAMES], ids=["one account", "accounts file"])
async def test_history_days_reach_quota_history_days(registered, names):
    put, _ = await registered(names)
    days = next(o for o in put["quota-history"]["options"] if o["name"] == "days")
    assert (days["type"], days["required"], days["min_value"], days["max_value"]) == (4, False, 1, HISTORY_DAYS)
    assert days["description"] == f"How many days back (1-{HISTORY_DAYS}, default 30)"
    accounts = [(p, o) for p, c in _by_path(put).items() for o in c.get("options", []) if o["name"] == "account"]
    if names:  # the account option of quota, history and alert add: autocompleted, never required
        assert [p for p, _ in accounts] == [("quota",), ("quota-history",), ("quota-alert", "add"), ("quota-mode",)]
        assert all(o["autocomplete"] is True and o["type"] == 3 and not o["required"] for _, o in accounts)
    else:
        assert accounts == []


async def test_one_autocomplete_serves_every_account_option(registered):
    _, fake = await registered(NAMES)
    typed = [("quota", [{"type": 3, "name": "account", "value": "ST", "focused": True}]),
             ("quota-history", [{"type": 4, "name": "days", "value": 7},
                                {"type": 3, "name": "account", "value": "a", "focused": True}]),
             ("quota-alert", [{"type": 1, "name": "add", "options": [
                 {"type": 3, "name": "condition", "value": "20%"},
                 {"type": 3, "name": "account", "value": "", "focused": True}]}])]
    answers = []
    for name, options in typed:
        callback = await fake.wait_callback(await fake.autocomplete(name, options))
        assert callback.body["type"] == 8
        answers.append([c["value"] for c in callback.body["data"]["choices"]])
    assert answers == [["studio"], ["lab"], ["studio", "lab"]]
