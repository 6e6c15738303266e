"""Speed modes from chat (issue 24, part A): the mode in every reading, useapi.net's mode jobs against
``UseapiFake`` (streamed and polled), the switcher with its log on both stores, and `/quota-mode` end to
end in Discord, Slack and the console: show, switch, refuse without permission, log, and a provider
that cannot switch."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timezone

import pytest
from aiohttp import web

from adapters.cli.console import ConsoleAdapter
from adapters.discord.bot import DiscordAdapter
from adapters.slack.app import SlackAdapter
from bot import metrics
from bot.accounts import QuotaPool
from bot.commands import Caller, Commands, ModeList, ModeLog, ModeSwitched, parse
from bot.errors import CannotSwitch, ModeRefused, SwitchFailed, UsageError, user_sentence
from bot.modes import ModeSwitcher
from bot.providers.base import AskLimiter, ModeSet, PollPolicy
from bot.providers.linkr import LinkrProvider
from bot.providers.useapi import ModerationBlocked, UseapiProvider
from bot.report import parse_info
from bot.service import QuotaService
from bot.settings import load_settings
from bot.store import Store
from tests.fakes.discord import USER_ID as DISCORD_USER
from tests.fakes.providers import RELAX_REFUSAL, TURBO_REFUSAL, FakeAccount, UseapiFake, useapi_error
from tests.fakes.slack import ADMIN_ID, USER_ID
from tests.secrets import ALL_TEST_SECRETS
from tests.e2e.test_discord_e2e import TOKEN as DISCORD_TOKEN
from tests.e2e.test_slack_e2e import BOT, SECRET, HttpBot

TOKEN = ALL_TEST_SECRETS["USEAPI_API_TOKEN"]
FAST = PollPolicy(initial=0.03, factor=1.5, cap=0.08, jitter=0.1, use_progress=False, min_delay=0.01)
MANAGE_GUILD = str(1 << 5)
RED = 0xE74C3C


@pytest.fixture
async def useapi():
    fakes: list[UseapiFake] = []
    providers: list[UseapiProvider] = []

    async def make(*, stream: bool = True, account: FakeAccount | None = None, **kw) -> tuple[UseapiFake, UseapiProvider]:
        fake = UseapiFake(require_token=TOKEN, complete_after=0.1, sse_interval=0.01, account=account, **kw)
        await fake.start()
        fakes.append(fake)
        provider = UseapiProvider(base_url=fake.base_url, token=TOKEN, poll=FAST, limiter=AskLimiter(0.02),
                                  poll_timeout=5.0, stream=stream)
        providers.append(provider)
        return fake, provider

    yield make
    for provider in providers:
        await provider.close()
    for fake in fakes:
        await fake.stop()


# --- the mode in every reading ---------------------------------------------------------------------------

@pytest.mark.parametrize("said, mode", [("Fast", "fast"), ("Relaxed", "relax"), ("Relax", "relax"),
                                        ("Turbo", "turbo"), ("Unknown thing", None)])
def test_the_mode_is_read_from_the_job_mode_and_is_in_the_json(said, mode):
    report = parse_info({"Fast Time Remaining": "1.00/15.0 hours (6.67%)", "Job Mode": said},
                        read_at=datetime.now(timezone.utc))
    assert report.mode == mode and report.to_json()["mode"] == mode and report.to_json()["job_mode"] == said


# --- useapi.net's mode jobs, at the wire ---------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "polled"])
async def test_useapi_switches_and_later_readings_show_the_mode(useapi, stream):
    fake, provider = await useapi(stream=stream)
    assert (await provider.fetch()).mode == "fast"
    done = await provider.switch_mode("relax")
    assert isinstance(done, ModeSet) and done.mode == "relax" and done.said.startswith("Done!")
    [ask] = fake.mode_asks
    assert ask.path == "/v3/midjourney/jobs/relax" and ask.body["stream"] is stream
    assert (await provider.fetch()).mode == "relax"
    assert (await provider.switch_mode("turbo")).mode == "turbo"
    assert (await provider.fetch()).job_mode == "Turbo"
    assert fake.unfinished() == []


@pytest.mark.parametrize("shape", ["failed", "completed"])
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "polled"])
async def test_useapi_refusals_come_back_as_midjourneys_sentence(useapi, stream, shape):
    fake, provider = await useapi(stream=stream, account=FakeAccount.basic(), turbo=False, mode_refusal=shape)
    with pytest.raises(ModeRefused) as refused:
        await provider.switch_mode("relax")
    assert refused.value.user_message == f"Midjourney did not switch to Relax: {RELAX_REFUSAL}"
    with pytest.raises(ModeRefused) as refused:
        await provider.switch_mode("turbo")
    assert refused.value.user_message == f"Midjourney did not switch to Turbo: {TURBO_REFUSAL}"
    assert fake.account.job_mode == "Fast"


async def test_useapi_a_pending_moderation_refuses_the_switch(useapi):
    fake, provider = await useapi()
    fake.ask_script.append(useapi_error(596, "Pending moderation", "Please clear it in the dashboard"))
    with pytest.raises(ModerationBlocked) as blocked:
        await provider.switch_mode("fast")
    assert "pending moderation" in blocked.value.user_message


async def test_a_provider_without_the_call_says_so():
    provider = LinkrProvider(base_url="http://127.0.0.1:9", token="lkr_x")
    try:
        with pytest.raises(CannotSwitch) as cannot:
            await provider.switch_mode("relax")
    finally:
        await provider.close()
    assert cannot.value.user_message == "LinkrAPI cannot switch the speed mode."


# --- the switcher and its log, on both stores -----------------------------------------------------------

def _count(account: str, mode: str, cause: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("quota_bot_mode_switches_total", {
        "account": account, "mode": mode, "cause": cause, "outcome": outcome}) or 0.0


@pytest.fixture
async def pool(useapi, make_service):
    """Two accounts: ``studio`` on useapi.net (can switch) and ``lab`` on TheNextLeg protocol (cannot)."""
    fake, provider = await useapi()
    studio = QuotaService(provider, cache_seconds=60)
    return fake, QuotaPool({"studio": studio, "lab": make_service()}, pooled=True)


async def test_switching_stores_counts_and_forgets_the_cached_reading(pool, store):
    fake, pool = pool
    modes = ModeSwitcher(pool, store)
    shown = {m.name: (m.mode, m.can_switch) for m in await modes.show()}
    assert shown == {"studio": ("fast", True), "lab": ("fast", False)}
    before = _count("studio", "relax", "person", "ok")
    done = await modes.switch("studio", "relax", who="U1", platform="slack", channel="C1")
    assert (done.from_mode, done.to_mode, done.account) == ("fast", "relax", "studio")
    assert _count("studio", "relax", "person", "ok") == before + 1
    assert pool.services["studio"].last_report is None  # the next answer reads it anew
    assert [m.mode for m in await modes.show("studio")] == ["relax"]

    fake.account.subscription = FakeAccount.basic().subscription  # a Basic plan has no Relax
    fake.account.job_mode = "Fast"
    with pytest.raises(SwitchFailed) as failed:
        await modes.switch("studio", "relax", who="alert #3", platform="discord", channel="1", cause="alert")
    assert failed.value.refused and failed.value.user_message.startswith("Midjourney did not switch to Relax")
    assert _count("studio", "relax", "alert", "refused") >= 1
    with pytest.raises(CannotSwitch) as cannot:
        await modes.switch("lab", "relax", who="U1", platform="slack")
    assert cannot.value.user_message == "TheNextLeg protocol cannot switch the speed mode (account lab)."
    with pytest.raises(UsageError) as which:
        await modes.switch(None, "relax", who="U1")
    assert which.value.user_message == "Say which account to switch, e.g. `/quota-mode relax studio`. Accounts: studio, lab."

    log = await modes.log()
    assert [(r.who, r.cause, r.from_mode, r.to_mode, r.outcome) for r in log] == [
        ("alert #3", "alert", "relax", "relax", "refused"), ("U1", "person", "fast", "relax", "ok")]
    assert log[0].detail.startswith("Midjourney did not switch to Relax") and log[1].detail.startswith("Done!")


# --- `/quota-mode` in the console -------------------------------------------------------------------------

async def test_console_shows_switches_and_logs(pool, tmp_path):
    fake, pool = pool
    store = await Store.open(str(tmp_path / "modes.sqlite3"))
    out = io.StringIO()
    console = ConsoleAdapter(pool, io.StringIO(), out, commands=Commands(pool, modes=ModeSwitcher(pool, store)))
    try:
        for line in ("/quota-mode", "/quota-mode relax studio", "/quota-mode relax lab", "/quota-mode turbo",
                     "/quota-mode log", "/quota-mode sideways", "/quota-mode relax studio lab"):
            await console.handle(line)
    finally:
        await store.close()
    said = out.getvalue().splitlines()
    assert said[:3] == ["studio: Fast", "lab: Fast (TheNextLeg protocol cannot switch it)", said[2]]
    assert said[2].startswith("/quota-mode relax, fast or turbo switches")
    assert said[3].startswith("Switched studio from Fast to Relax. Midjourney: “Done!")
    assert said[4] == "TheNextLeg protocol cannot switch the speed mode (account lab)."
    assert said[5].startswith("Say which account to switch")
    assert said[6].endswith("· console: studio Fast → Relax, done")
    assert said[7] == "quota-bot: There is no account 'sideways'. Accounts: studio, lab."
    assert said[8].startswith("I did not understand 'relax studio lab'. Usage: /quota-mode [relax|fast|turbo|log] [account]")
    assert fake.account.job_mode == "Relax"


# --- `/quota-mode` in Discord ----------------------------------------------------------------------------

@pytest.fixture
async def discord_bot(discord_fake, tmp_path):
    made: list[tuple[DiscordAdapter, Store]] = []

    async def start(pool: QuotaPool) -> DiscordAdapter:
        store = await Store.open(str(tmp_path / "discord.sqlite3"))
        settings = load_settings(None, discord_bot_token=DISCORD_TOKEN, discord_api_base_url=discord_fake.api_url,
                                 discord_gateway_url=discord_fake.gateway_url)
        commands = Commands(pool, modes=ModeSwitcher(pool, store))
        adapter = DiscordAdapter(settings, pool, commands=commands)
        made.append((adapter, store))
        await adapter.start()
        await asyncio.wait_for(discord_fake.ready.wait(), 10)
        return adapter

    yield start
    for adapter, store in made:
        await adapter.stop()
        await store.close()


async def _discord(fake, options=None, *, permissions: str = MANAGE_GUILD) -> tuple[dict, list]:
    iid, token = await fake.slash("quota-mode", options, permissions=permissions)
    assert (await fake.wait_callback(iid)).body["data"]["flags"] & 64  # the answer is the caller's alone
    edit = await fake.wait_edit(token)
    [embed] = (await fake.changes.wait(lambda: next((c for c in fake.edits[token] if c.method == "PATCH"), None), 10)
               ).body["embeds"]
    await asyncio.sleep(0.05)
    followups = [c for c in fake.edits[token] if c.method == "POST"]
    assert edit is not None
    return embed, followups


def _mode(value: str, account: str | None = None) -> list[dict]:
    return [{"type": 3, "name": "mode", "value": value}] + ([{"type": 3, "name": "account", "value": account}]
                                                            if account else [])


async def test_discord_quota_mode(discord_fake, discord_bot, pool):
    fake, pool = pool
    await discord_bot(pool)
    command = next(c for c in discord_fake.command_puts[-1].body if c["name"] == "quota-mode")
    options = {o["name"]: o for o in command["options"]}
    assert [c["value"] for c in options["mode"]["choices"]] == ["relax", "fast", "turbo", "log"]
    assert not options["mode"]["required"] and options["account"]["autocomplete"] is True
    assert command.get("default_member_permissions") is None  # showing is for everyone

    embed, followups = await _discord(discord_fake, permissions="0")
    assert embed["description"].startswith("`studio`: Fast\n`lab`: Fast (TheNextLeg protocol cannot switch it)\n")
    assert followups == []

    embed, followups = await _discord(discord_fake, _mode("relax", "studio"), permissions="0")
    assert embed["description"] == "Only members with the Manage Server permission can manage quota modes."
    assert embed["color"] == RED and followups == [] and fake.mode_asks == []

    embed, followups = await _discord(discord_fake, _mode("relax", "studio"))
    assert embed["description"].startswith("Switched `studio` from Fast to Relax. Midjourney: “Done!")
    [public] = followups
    assert public.body["content"] == f"<@{DISCORD_USER}> switched studio from Fast to Relax."
    assert not (public.body.get("flags") or 0) & 64 and public.body["allowed_mentions"] == {"parse": []}

    embed, _ = await _discord(discord_fake, _mode("turbo", "lab"))
    assert embed["description"] == "TheNextLeg protocol cannot switch the speed mode (account lab)."
    assert embed["color"] == RED

    embed, followups = await _discord(discord_fake, _mode("log"), permissions="0")
    assert embed["title"] == "Speed-mode switches" and followups == []
    [line] = embed["description"].splitlines()
    assert line.startswith("<t:") and line.endswith(f":f> · <@{DISCORD_USER}>: `studio` Fast → Relax, done")


# --- `/quota-mode` in Slack ------------------------------------------------------------------------------

@pytest.fixture
async def slack_bot(slack_fake, tmp_path):
    made: list[tuple[HttpBot, web.AppRunner, Store]] = []

    async def start(pool: QuotaPool, admins: str = "") -> HttpBot:
        store = await Store.open(str(tmp_path / "slack.sqlite3"))
        settings = load_settings(None, slack_bot_token=BOT, slack_signing_secret=SECRET,
                                 slack_api_url=slack_fake.api_url, slack_admin_user_ids=admins)
        adapter = SlackAdapter(settings, pool, commands=Commands(pool, modes=ModeSwitcher(pool, store)))
        app = web.Application()
        adapter.mount(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await adapter.start()
        bot = HttpBot(slack_fake, adapter, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events")
        made.append((bot, runner, store))
        return bot

    yield start
    for bot, runner, store in made:
        await bot.http.close()
        await bot.adapter.stop()
        await runner.cleanup()
        await store.close()


async def _slack(bot: HttpBot, text: str, user: str = ADMIN_ID, answers: int = 1) -> list[dict]:
    resp, answer, rid, _ = await bot.command(text, command="/quota-mode", user_id=user)
    assert resp.status == 200 and answer == ""
    await bot.fake.wait(lambda: len(bot.fake.responses.get(rid) or []) >= answers or None, 10)
    await asyncio.sleep(0.05)
    return [c.body for c in bot.fake.responses[rid]]


async def test_slack_quota_mode(slack_bot, pool):
    fake, pool = pool
    bot = await slack_bot(pool)
    [shown] = await _slack(bot, "", user=USER_ID)
    assert shown["response_type"] == "ephemeral"
    assert shown["text"].startswith("`studio`: Fast\n`lab`: Fast (TheNextLeg protocol cannot switch it)\n")

    [refused] = await _slack(bot, "relax studio", user=USER_ID)
    assert refused["text"] == ("Only workspace admins and owners, or the users in SLACK_ADMIN_USER_IDS, "
                               "can manage quota modes.") and fake.mode_asks == []

    private, public = await _slack(bot, "studio relax", answers=2)
    assert private["response_type"] == "ephemeral"
    assert private["text"].startswith("Switched `studio` from Fast to Relax. Midjourney: “Done!")
    assert public["response_type"] == "in_channel" and public["text"] == f"<@{ADMIN_ID}> switched studio from Fast to Relax."

    [cannot] = await _slack(bot, "fast lab")
    assert cannot["text"] == "TheNextLeg protocol cannot switch the speed mode (account lab)."
    assert cannot["blocks"][0]["text"]["text"].startswith(":x: TheNextLeg protocol")
    [usage] = await _slack(bot, "sideways now")
    assert usage["text"].startswith("I did not understand")

    [log] = await _slack(bot, "log", user=USER_ID)
    lines = log["text"].splitlines()
    assert lines[0] == "*Speed-mode switches*" and len(lines) == 2
    assert lines[1].startswith("<!date^") and lines[1].endswith(f" · <@{ADMIN_ID}>: `studio` Fast → Relax, done")


# --- the grammar, once for every text surface ---------------------------------------------------------------

def test_text_grammar():
    commands = Commands(QuotaPool({}, pooled=True)).all
    names = ("studio", "lab")
    assert parse("quota-mode", "", commands, names).values == {}
    assert parse("quota-mode", "Lab TURBO", commands, names).values == {"account": "lab", "mode": "turbo"}
    assert parse("quota-mode", "relaxed", commands, names).values == {"mode": "relax"}
    with pytest.raises(UsageError):
        parse("quota-mode", "relax studio lab", commands, names)
    with pytest.raises(UsageError):
        parse("quota-mode", "studio", commands, ())  # one account: no account word


async def test_commands_without_a_store_show_and_switch_but_have_no_log(pool):
    fake, pool = pool
    commands = Commands(pool)  # no ModeSwitcher given: one over the pool, unlogged
    caller = Caller("console", "console", "console")
    assert isinstance(await commands.run(caller, parse("quota-mode", "", commands.all, commands.names)), ModeList)
    switched = await commands.run(caller, parse("quota-mode", "fast studio", commands.all, commands.names))
    assert isinstance(switched, ModeSwitched) and switched.switched.record is None
    log = await commands.run(caller, parse("quota-mode", "log", commands.all, commands.names))
    assert not isinstance(log, ModeLog) and user_sentence(log.error) == "The log of switches is not available on this bot."
