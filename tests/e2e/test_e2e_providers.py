"""End to end over the live providers: useapi.net, LinkrAPI and midjourney-proxy.

The bot runs as `quota-bot run` runs it (``adapters.app.serve`` in-process, the real discord.py and
slack-bolt against the fake Discord and Slack), each provider's fake from ``tests/fakes/providers.py``
stands in for the service, and `quota-bot quota` runs as a real subprocess.

useapi.net streams its job's events by default (USEAPI_STREAM): the readings here are streamed, in the
chats and in the `quota-bot quota` subprocess (no poll, the answer as the job ends). One shortcut,
in-process only, for the polled paths: useapi's real rhythm waits ~13 s before its first poll, so the
in-process bot polls useapi faster (``fast_useapi_polls``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from adapters.app import serve
from bot.providers.base import PollPolicy
from bot.providers.useapi import UseapiProvider
from bot.settings import load_settings
from bot.simulator import UpstreamSimulator
from tests.conftest import TEST_TOKEN
from tests.fakes.cli import clean_env, run_cli
from tests.fakes.discord import FakeDiscord
from tests.fakes.providers import FakeAccount, LinkrFake, MjproxyFake, UseapiFake, useapi_error
from tests.fakes.slack import FakeSlack, form, sign
from tests.secrets import ALL_TEST_SECRETS

USEAPI_TOKEN = ALL_TEST_SECRETS["USEAPI_API_TOKEN"]
LINKR_KEY = ALL_TEST_SECRETS["LINKR_API_KEY"]
MJPROXY_SECRET = ALL_TEST_SECRETS["MJPROXY_API_SECRET"]
DISCORD_TOKEN = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
SLACK_BOT = ALL_TEST_SECRETS["SLACK_BOT_TOKEN"]
SLACK_APP = ALL_TEST_SECRETS["SLACK_APP_TOKEN"]
SLACK_SECRET = ALL_TEST_SECRETS["SLACK_SIGNING_SECRET"]

NO_SUBSCRIPTION = "useapi.net says this account has no Midjourney subscription, or it expired."


# --- helpers ------------------------------------------------------------------------------------------

def _texts(node: Any) -> list[str]:
    """Every string in a JSON answer (Slack blocks, a Discord embed), in order."""
    if isinstance(node, dict):
        return [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return [node] if isinstance(node, str) else []


def _text(node: Any) -> str:
    return "\n".join(_texts(node))


def _embed(call) -> dict:
    embeds = (call.body or {}).get("embeds") or []
    assert len(embeds) == 1, call.body
    return embeds[0]


_env, _cli = clean_env, run_cli  # tests/fakes/cli.py, shared with the other CLI tests


def _no_secret_in(*texts: str) -> None:
    for text in texts:
        leaked = [name for name, value in ALL_TEST_SECRETS.items() if value in text]
        assert not leaked, f"{leaked} printed"


@dataclass
class Bot:
    """One running bot (`serve()` as `quota-bot run` runs it) and the chats it talks to."""

    slack: FakeSlack
    discord: FakeDiscord
    socket_mode: bool
    stop: asyncio.Event
    task: asyncio.Future
    port: int
    http: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)

    async def healthz(self) -> dict[str, Any]:
        async with self.http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
            assert resp.status == 200
            return await resp.json()

    async def slack_send(self, text: str = "", command: str = "/quota") -> str:
        """Send a slash command (Socket Mode envelope or signed HTTP request); returns the response id."""
        if self.socket_mode:
            _, rid = await self.slack.envelope(command, text)
            return rid
        payload, rid = self.slack.command_payload(command, text)
        body = form(payload)
        async with self.http.post(f"http://127.0.0.1:{self.port}/slack/events", data=body,
                                  headers=sign(SLACK_SECRET, body)) as resp:
            assert resp.status == 200
        return rid

    async def slack_answer(self, text: str = "", timeout: float = 15) -> dict[str, Any]:
        rid = await self.slack_send(text)
        return (await self.slack.wait_response(rid, timeout)).body

    async def discord_answer(self, options: list[dict[str, Any]] | None = None, timeout: float = 15) -> dict:
        _, token = await self.discord.slash("quota", options)
        return _embed(await self.discord.wait_edit(token, timeout))

    async def close(self) -> None:
        await self.http.close()
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def chats():
    slack = await FakeSlack(SLACK_BOT, SLACK_APP).start()
    discord = await FakeDiscord(DISCORD_TOKEN).start()
    yield slack, discord
    await discord.stop()
    await slack.stop()


@pytest.fixture
async def run_bot(chats, tmp_path):
    """``run_bot(socket_mode=…, **settings)``: the bot with fake Discord and fake Slack (Socket Mode, or HTTP
    mode on the bot's own server), stopped after the test."""
    slack, discord = chats
    bots: list[Bot] = []

    async def start(*, socket_mode: bool = True, **settings: Any) -> Bot:
        # no background readings: every ask a fake records comes from a chat command or a schedule
        settings.setdefault("quota_sample_every", "off")
        slack_mode = {"slack_app_token": SLACK_APP} if socket_mode else {"slack_signing_secret": SLACK_SECRET}
        loaded = load_settings(
            None, host="127.0.0.1", port=0, database_url=f"sqlite:///{tmp_path}/q{len(bots)}.sqlite3",
            slack_bot_token=SLACK_BOT, slack_api_url=slack.api_url, discord_bot_token=DISCORD_TOKEN,
            discord_api_base_url=discord.api_url, discord_gateway_url=discord.gateway_url,
            **slack_mode, **settings)
        discord.ready.clear()
        stop = asyncio.Event()
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(serve(loaded, stop, started=started))
        done, _ = await asyncio.wait({task, started}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert started.done(), "the bot did not start within 15 s"
        bot = Bot(slack, discord, socket_mode, stop, task, started.result()["port"])
        bots.append(bot)
        await asyncio.wait_for(discord.ready.wait(), 10)
        if socket_mode:
            await asyncio.wait_for(slack.connected.wait(), 10)
        return bot

    yield start
    for bot in bots:
        if not bot.task.done():
            await bot.close()


@pytest.fixture
def fast_useapi_polls(monkeypatch):
    """In-process only: useapi polls every 0.1 s instead of its real ~13 s first wait (see the docstring)."""
    monkeypatch.setattr(UseapiProvider, "default_poll",
                        lambda self: PollPolicy(initial=0.1, factor=1.0, cap=0.1, jitter=0.0, use_progress=False,
                                                min_delay=0.05))


# --- one provider at a time ---------------------------------------------------------------------------

@dataclass
class Case:
    """One provider: its fake, its settings (for the bot and for the subprocess) and what it should show."""

    name: str
    fake: Any
    settings: dict[str, str]
    env: dict[str, str]
    token: str
    headline: str
    numbers: dict[str, Any]  # remaining, total, percent, unit of `quota --json`
    socket_mode: bool

    def auth_ok(self, rec) -> bool:
        """The credential travels in its header and nowhere else."""
        if self.name == "mjproxy":
            return rec.headers.get("Mj-Api-Secret") == self.token and "Authorization" not in rec.headers
        return rec.headers.get("Authorization") == f"Bearer {self.token}"


async def _case(name: str) -> Case:
    standard = {"remaining": 12.06, "total": 15.0, "percent": 80.37, "unit": "hours"}
    if name == "useapi":
        fake = UseapiFake(require_token=USEAPI_TOKEN, complete_after=0.5)
        await fake.start()
        return Case(name, fake, {"useapi_api_token": USEAPI_TOKEN, "useapi_base_url": fake.base_url},
                    {"USEAPI_API_TOKEN": USEAPI_TOKEN, "USEAPI_BASE_URL": fake.base_url}, USEAPI_TOKEN,
                    "12.06 h of 15 h left", standard, socket_mode=True)
    if name == "linkr":  # H:MM:SS and no total: the Standard plan's 15 h, marked "~"
        fake = LinkrFake(require_token=LINKR_KEY, delay=0.5)
        await fake.start()
        return Case(name, fake, {"linkr_api_key": LINKR_KEY, "linkr_base_url": fake.base_url},
                    {"LINKR_API_KEY": LINKR_KEY, "LINKR_BASE_URL": fake.base_url}, LINKR_KEY,
                    "12.06 h of ~15 h left", dict(standard, percent=80.4), socket_mode=False)
    fake = MjproxyFake(require_secret=MJPROXY_SECRET, sync_delay=0.5)
    await fake.start()
    return Case(name, fake, {"mjproxy_base_url": fake.base_url, "mjproxy_api_secret": MJPROXY_SECRET,
                             "mjproxy_account_id": fake.account_id},
                {"MJPROXY_BASE_URL": fake.base_url, "MJPROXY_API_SECRET": MJPROXY_SECRET,
                 "MJPROXY_ACCOUNT_ID": fake.account_id}, MJPROXY_SECRET,
                "12.06 h of 15 h left", standard, socket_mode=True)


@pytest.mark.parametrize("provider", ["useapi", "linkr", "mjproxy"])
async def test_each_provider_answers_in_discord_slack_and_the_cli_from_one_reading(
        provider, run_bot, tmp_path, fast_useapi_polls):
    case = await _case(provider)
    fake = case.fake
    try:
        cli = None
        if provider == "useapi":
            # the subprocess keeps useapi's real timing: it runs while the chats are tested, after its own
            # ask is in, so the bot's asks can be counted apart from it
            cli = asyncio.ensure_future(_cli("quota", "--json", env=_env(**case.env), cwd=tmp_path))
            await fake.changes.wait(lambda: True if fake.asks else None, 15)
        bot = await run_bot(socket_mode=case.socket_mode, **case.settings)

        health = await bot.healthz()
        assert health["status"] == "ok" and health["upstream"] == provider
        assert health["provider"].startswith(f"{provider} (") and fake.base_url in health["provider"]
        assert health["last_reading_at"] is None and sorted(health["adapters"]) == ["discord", "slack"]

        # a burst in both chats, sent before any reading exists: one ask answers all of them
        asks_before, polls_before = len(fake.asks), len(fake.polls)
        rids = [await bot.slack_send() for _ in range(8)]
        tokens = [token for _, token in await bot.discord.slash_burst("quota", 8)]
        slack_answers = await asyncio.gather(*(bot.slack.wait_response(rid, 15) for rid in rids))
        discord_answers = await asyncio.gather(*(bot.discord.wait_edit(token, 15) for token in tokens))
        assert len(fake.asks) - asks_before == 1, f"{len(fake.asks) - asks_before} asks for one burst"
        if provider == "mjproxy":
            assert len(fake.polls) - polls_before == 1  # one sync, then one read of the account
        for answer in slack_answers:
            body = answer.body
            assert body["response_type"] == "ephemeral"
            assert body["text"] == f"Midjourney fast time: {case.headline} ({case.numbers['percent']:.2f}%)"
            assert body["blocks"][0]["text"]["text"] == f"Midjourney fast time: {case.headline}"
        for call in discord_answers:
            embed = _embed(call)
            assert embed["title"] == f"Midjourney fast time: {case.headline}"
            assert f"**{case.numbers['percent']:.2f}%** left" in embed["description"]
            assert {"name": "Job mode", "value": "Fast", "inline": True} in embed["fields"]
        health = await bot.healthz()
        assert health["last_reading_at"] is not None and health["last_error"] is None
        await bot.close()

        if cli is None:  # linkr, mjproxy: a fresh process, a reading of its own (mjproxy: the proxy's
            cli = _cli("quota", "--json", env=_env(**case.env), cwd=tmp_path)  # throttle refuses this sync)
        code, out, err = await cli
        assert code == 0, err
        doc = json.loads(out)
        assert {k: doc[k] for k in case.numbers} == case.numbers
        assert doc["job_mode"] == "Fast" and doc["simulated"] is False and isinstance(doc["renewal"], int)
        assert doc["total_derived"] is (provider == "linkr")
        _no_secret_in(out, err)
        if provider == "useapi":  # streamed: the CLI's job was read off its stream, to the end, never polled
            cli_job = next(iter(fake.jobs))
            assert fake.asks[0].body == {"stream": True}
            assert [p.path for p in fake.polls if cli_job in p.path] == []
            assert [s["closed_by"] for s in fake.streams if s["jobid"] == cli_job] == ["end"]
            assert fake.deletes == [] and fake.unfinished() == []  # no job given up, none left holding a slot

        # the credential: in its header on every request, never in a URL, a query, a body or a chat
        for rec in fake.requests:
            assert case.auth_ok(rec), rec.headers
            assert case.token not in rec.path + json.dumps(rec.query) + json.dumps(rec.body)
        for call in bot.slack.calls + [c for calls in bot.slack.responses.values() for c in calls]:
            assert case.token not in json.dumps(call.body)
        for call in bot.discord.calls:
            assert case.token not in call.path + json.dumps(call.body) + json.dumps(call.query)
    finally:
        await fake.stop()


# --- error paths, end to end in a chat ------------------------------------------------------------------

async def test_useapi_402_is_the_no_subscription_sentence_in_slack(run_bot):
    async with UseapiFake(require_token=USEAPI_TOKEN) as fake:
        fake.ask_script.append(useapi_error(402))
        bot = await run_bot(socket_mode=False, useapi_api_token=USEAPI_TOKEN, useapi_base_url=fake.base_url)
        body = await bot.slack_answer("public")
        assert body["text"] == NO_SUBSCRIPTION and body["response_type"] == "ephemeral"  # errors: to you only
        assert body["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": f":x: {NO_SUBSCRIPTION}"}}]
        assert len(fake.asks) == 1 and fake.polls == []  # final at the ask: nothing polled, nothing retried
        assert (await bot.healthz())["last_error"] == "no_subscription"


async def test_useapi_moderated_job_is_its_sentence_in_discord_and_slack(run_bot, fast_useapi_polls):
    async with UseapiFake(require_token=USEAPI_TOKEN, complete_after=0.3, job_outcome="moderated") as fake:
        bot = await run_bot(useapi_api_token=USEAPI_TOKEN, useapi_base_url=fake.base_url)
        embed, body = await asyncio.gather(bot.discord_answer(), bot.slack_answer())
        assert embed["title"] == "Quota unavailable"
        assert embed["description"].startswith("Midjourney moderation stopped the /info job at useapi.net: Moderated")
        assert body["text"] == embed["description"] and body["response_type"] == "ephemeral"
        assert len(fake.asks) == 1 and len(fake.polls) >= 2  # asked together: one job, polled until it ended


async def test_linkr_401_names_linkr_api_key_and_never_shows_the_key(run_bot, caplog):
    wrong = "lkr_wrong_key_0a9b8c7d"
    async with LinkrFake(require_token=LINKR_KEY) as fake:
        bot = await run_bot(socket_mode=True, linkr_api_key=wrong, linkr_base_url=fake.base_url)
        sentence = "LinkrAPI rejected the API token (LINKR_API_KEY); ask the operator to check it."
        body, embed = await asyncio.gather(bot.slack_answer(), bot.discord_answer())
        assert body["text"] == sentence
        assert embed["title"] == "Quota unavailable" and embed["description"] == sentence
        assert len(fake.asks) == 1  # both chats shared the one ask; 401 is final: never retried
        assert fake.asks[0].headers["Authorization"] == f"Bearer {wrong}"
        everything = caplog.text + json.dumps([c.body for c in bot.slack.calls]) + json.dumps(
            [c.body for cs in bot.slack.responses.values() for c in cs]) + json.dumps([c.body for c in bot.discord.calls])
        assert wrong not in everything


async def test_mjproxy_refused_sync_shows_the_stored_figures_and_their_age(run_bot):
    refusal = "Sync too frequent: at most 1 per 5 minutes, please try again later"
    async with MjproxyFake(require_secret=MJPROXY_SECRET, refuse_sync=refusal, info_age=1500) as fake:
        bot = await run_bot(mjproxy_base_url=fake.base_url, mjproxy_api_secret=MJPROXY_SECRET,
                            mjproxy_account_id=fake.account_id)
        body = await bot.slack_answer()
        assert body["text"] == "Midjourney fast time: 12.06 h of 15 h left (80.37%)"
        assert ":clock3: These figures were read 25 min ago (the provider's last look at Midjourney)." in _texts(body)
        embed = await bot.discord_answer()
        assert embed["title"] == "Midjourney fast time: 12.06 h of 15 h left"
        assert "🕒 These figures were read 25 min ago" in embed["description"]
        assert len(fake.asks) == 1 and len(fake.polls) == 1  # the refused sync, the read; then the cache


# --- several accounts (QUOTA_ACCOUNTS_FILE) --------------------------------------------------------------

POOL_HEADLINE = "15.38 h of 18.33 h left across 2 of 3 accounts"
SLACK_SCHEDULED = "C0POOL0001"
DISCORD_SCHEDULED = "1300000000000000009"


@pytest.fixture
async def pool(tmp_path, monkeypatch):
    """Three accounts on three providers: `basic` (nextleg protocol, Basic plan in minutes), `slow`
    (LinkrAPI, 1.5 s a reading) and `broken` (useapi.net, 402 no subscription on every ask)."""
    basic = UpstreamSimulator(complete_after=0.2, require_token=TEST_TOKEN, content=FakeAccount.basic().fields())
    await basic.start()
    slow = LinkrFake(require_token=LINKR_KEY, delay=1.5)
    broken = UseapiFake(require_token=USEAPI_TOKEN)
    broken.ask_script.extend(useapi_error(402) for _ in range(200))
    await slow.start()
    await broken.start()
    tokens = {"POOL_BASIC_TOKEN": TEST_TOKEN, "POOL_SLOW_KEY": LINKR_KEY, "POOL_BROKEN_TOKEN": USEAPI_TOKEN}
    for name, value in tokens.items():
        monkeypatch.setenv(name, value)  # ${VAR}s of the file, for the in-process bot
    path = tmp_path / "accounts.toml"
    path.write_text(f"""
[[account]]
name = "basic"
provider = "nextleg"
token = "${{POOL_BASIC_TOKEN}}"
base_url = "{basic.base_url}"

[[account]]
name = "slow"
provider = "linkr"
token = "${{POOL_SLOW_KEY}}"
base_url = "{slow.base_url}"

[[account]]
name = "broken"
provider = "useapi"
token = "${{POOL_BROKEN_TOKEN}}"
base_url = "{broken.base_url}"
""")
    yield {"file": str(path), "env": tokens, "basic": basic, "slow": slow, "broken": broken}
    for fake in (basic, slow, broken):
        await fake.stop()


async def test_accounts_file_pools_in_chats_schedules_and_the_cli(pool, run_bot, tmp_path):
    env = _env(QUOTA_ACCOUNTS_FILE=pool["file"], **pool["env"])
    clis = [asyncio.ensure_future(_cli("quota", "--json", env=env, cwd=tmp_path)),
            asyncio.ensure_future(_cli("quota", "--account", "basic", "--json", env=env, cwd=tmp_path)),
            asyncio.ensure_future(_cli("quota", "--account", "nope", "--json", env=env, cwd=tmp_path))]
    bot = await run_bot(quota_accounts_file=pool["file"],
                        quota_schedules=f"slack:{SLACK_SCHEDULED}=every 3s;discord:{DISCORD_SCHEDULED}=every 3s",
                        quota_schedule_min_every="1s")
    quota = next(c for c in bot.discord.command_puts[-1].body if c["name"] == "quota")
    account_option = next(o for o in quota["options"] if o["name"] == "account")
    assert account_option["type"] == 3 and account_option["autocomplete"] is True

    # the pooled answer, asked in both chats at once
    slack_rid = await bot.slack_send()
    _, discord_token = await bot.discord.slash("quota")
    body = (await bot.slack.wait_response(slack_rid, 15)).body
    assert body["text"] == f"Midjourney fast time: {POOL_HEADLINE} (83.87%)"
    assert body["blocks"][0]["text"]["text"] == f"Midjourney fast time: {POOL_HEADLINE}"
    lines = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"][1:]  # after the pooled bar
    assert len(lines) == 3
    assert lines[0].startswith(":large_green_circle: *basic*  199 min of 200 min\n")
    assert lines[1].startswith(":large_green_circle: *slow*  12.06 h of ~15 h\n")
    assert lines[2] == f":x: *broken*: {NO_SUBSCRIPTION} _(not in the sum)_"
    embed = _embed(await bot.discord.wait_edit(discord_token, 15))
    assert embed["title"] == f"Midjourney fast time: {POOL_HEADLINE}"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert list(fields) == ["🟢 basic", "🟢 slow", "✗ broken"]
    assert "**199 min of 200 min**" in fields["🟢 basic"] and "**12.06 h of ~15 h**" in fields["🟢 slow"]
    assert fields["✗ broken"] == f"*Not in the sum:* {NO_SUBSCRIPTION}"

    # one account by name, in both chats (and to the channel when asked)
    interaction, token = await bot.discord.slash("quota", [{"type": 3, "name": "account", "value": "slow"},
                                                           {"type": 5, "name": "public", "value": True}])
    embed = _embed(await bot.discord.wait_edit(token))
    assert embed["title"] == "Midjourney fast time: 12.06 h of ~15 h left" and "across" not in _text(embed)
    assert not (bot.discord.callbacks[interaction].body.get("data") or {}).get("flags", 0) & 64  # not ephemeral
    body = await bot.slack_answer("basic")
    assert body["text"] == "Midjourney fast time: 199 min of 200 min left (99.50%)"
    assert body["response_type"] == "ephemeral" and "slow" not in _text(body) and "broken" not in _text(body)
    body = await bot.slack_answer("slow public")
    assert body["text"] == "Midjourney fast time: 12.06 h of ~15 h left (80.40%)" and body["response_type"] == "in_channel"
    body = await bot.slack_answer("nope")
    assert body["text"] == "There is no account 'nope'. Accounts: basic, slow, broken."
    embed = await bot.discord_answer([{"type": 3, "name": "account", "value": "nope"}])
    assert embed["description"] == "There is no account `nope`. Accounts: basic, slow, broken."  # the echo in a code span

    # autocomplete while typing `account:` answers the matching names (callback type 8), asking nobody
    # (the CLI processes ask the same fakes: on a busy machine they may still be starting, so they end first)
    await asyncio.wait(clis, timeout=60)
    asks = (len(pool["basic"].asks), len(pool["slow"].asks), len(pool["broken"].asks))
    for typed, names in (("sl", ["slow"]), ("b", ["basic", "broken"]), ("", ["basic", "slow", "broken"])):
        interaction = await bot.discord.autocomplete("quota", [{"type": 3, "name": "account", "value": typed,
                                                                "focused": True}])
        callback = await bot.discord.wait_callback(interaction)
        assert callback.body["type"] == 8
        assert callback.body["data"]["choices"] == [{"name": n, "value": n} for n in names]
    assert (len(pool["basic"].asks), len(pool["slow"].asks), len(pool["broken"].asks)) == asks

    # the scheduled posts carry the pooled answer too
    post = await bot.slack.wait(lambda: next((p for p in bot.slack.posts if p.body.get("channel") == SLACK_SCHEDULED),
                                             None), timeout=10)
    assert post.body["text"] == f"Midjourney fast time: {POOL_HEADLINE} (83.87%)"
    posted = _text(json.loads(post.body["blocks"]) if isinstance(post.body["blocks"], str) else post.body["blocks"])
    assert f":x: *broken*: {NO_SUBSCRIPTION}" in posted
    posted = await bot.discord.changes.wait(lambda: next(
        (c for c in bot.discord.channel_posts if c.path == f"/channels/{DISCORD_SCHEDULED}/messages"), None), 10)
    assert _embed(posted)["title"] == f"Midjourney fast time: {POOL_HEADLINE}"

    health = await bot.healthz()
    assert health["provider"] == "3 accounts"
    assert [(a["name"], a["provider"].split(" ")[0], a["last_error"]) for a in health["accounts"]] == [
        ("basic", "nextleg", None), ("slow", "linkr", None), ("broken", "useapi", "no_subscription")]
    await bot.close()

    (code, out, err), (code_one, out_one, err_one), (code_none, out_none, err_none) = await asyncio.gather(*clis)
    _no_secret_in(out, err, out_one, err_one, out_none, err_none)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["remaining"], doc["total"], doc["percent"], doc["unit"]) == (15.3767, 18.3333, 83.87, "hours")
    assert (doc["accounts_answered"], doc["accounts_total"]) == (2, 3)
    by_name = {a["name"]: a for a in doc["accounts"]}
    assert list(by_name) == ["basic", "slow", "broken"]
    assert (by_name["basic"]["remaining"], by_name["basic"]["total"], by_name["basic"]["unit"]) == (199.0, 200.0, "minutes")
    assert by_name["broken"]["error"] == {"code": "no_subscription", "message": NO_SUBSCRIPTION}
    assert code_one == 0, err_one
    one = json.loads(out_one)
    assert (one["remaining"], one["total"], one["percent"], one["unit"]) == (199.0, 200.0, 99.5, "minutes")
    assert "accounts" not in one and one["plan"] == "Basic"
    assert code_none == 1 and out_none == ""
    assert err_none.splitlines()[0] == "quota-bot: There is no account 'nope'. Accounts: basic, slow, broken."


async def test_pooled_failures_name_the_accounts_file_key_not_an_unset_environment_setting(run_bot, tmp_path):
    """A failing account of the accounts file is fixed in the file (its ``account_id``, its ``channel``), as
    its token's sentence already says ("the token of account 'x'"); naming MJPROXY_ACCOUNT_ID or
    USEAPI_CHANNEL, which this bot does not read, sends the operator to the wrong place."""
    async with MjproxyFake(require_secret=MJPROXY_SECRET) as proxy, UseapiFake(require_token=USEAPI_TOKEN,
                                                                                 channels=2) as useapi:
        path = tmp_path / "accounts.toml"
        path.write_text(f"""
[[account]]
name = "proxy"
provider = "mjproxy"
token = "{MJPROXY_SECRET}"
base_url = "{proxy.base_url}"
account_id = "1829999999999999999"

[[account]]
name = "studio"
provider = "useapi"
token = "{USEAPI_TOKEN}"
base_url = "{useapi.base_url}"
""")
        bot = await run_bot(quota_accounts_file=str(path))
        lines = [b["text"]["text"] for b in (await bot.slack_answer())["blocks"] if b["type"] == "section"]
        proxy_line = next(line for line in lines if "*proxy*" in line)
        studio_line = next(line for line in lines if "*studio*" in line)
        assert "midjourney-proxy has no account '1829999999999999999'" in proxy_line  # the right failure...
        assert "several Midjourney channels" in studio_line
        assert "MJPROXY_ACCOUNT_ID" not in proxy_line and "account_id" in proxy_line  # ...sent to the right key
        assert "USEAPI_CHANNEL" not in studio_line and "channel" in studio_line.split("channels", 1)[1]


async def test_a_malformed_accounts_file_stops_run_with_one_line(tmp_path):
    path = tmp_path / "accounts.toml"
    path.write_text('[[account]]\nname = "studio"\nprovider = "useapi"\ntoken = "${STUDIO_TOKEN}"\nchanel = "1"\n')
    started = time.monotonic()
    code, out, err = await _cli("run", env=_env(QUOTA_ACCOUNTS_FILE=str(path), STUDIO_TOKEN=USEAPI_TOKEN,
                                                HOST="127.0.0.1", PORT="0",
                                                DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3"), cwd=tmp_path)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"quota-bot: QUOTA_ACCOUNTS_FILE: {path}: account 'studio': unknown key 'chanel' for provider useapi "
        "(did you mean 'channel'?) (keys: name, provider, token, base_url, channel, stream)"]
    assert time.monotonic() - started < 10
    assert not (tmp_path / "q.sqlite3").exists()  # stopped before anything started
