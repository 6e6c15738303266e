"""Alerts that act (issue 24, part B): an alert such as ``2h:relax`` switches its account to Relax when
it fires, then posts what it did; when it re-arms it switches back to the mode it switched away from,
unless a person switched the account since. Against ``UseapiFake`` (the mode jobs, and later info jobs
that report the mode set), the real pool, switcher and stores (both kinds, and three replicas on one
database), and end to end in Slack, Discord and the console.
"""

from __future__ import annotations

import asyncio
import io
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from adapters.cli.console import ConsoleAdapter
from bot.accounts import QuotaPool
from bot.alerts import AlertError, AlertNotice, Alerts, parse_condition, parse_config
from bot.commands import Commands, parse
from bot.modes import ModeSwitcher
from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.useapi import UseapiProvider
from bot.scheduler import PostPolicy
from bot.service import QuotaService
from bot.store import Store
from tests.e2e.test_alerts import _track, settle
from tests.fakes.cli import clean_env, run_cli
from tests.fakes.clock import FakeClock
from tests.fakes.discord import CHANNEL_ID
from tests.fakes.posters import RecordingPoster, eventually
from tests.fakes.providers import UseapiFake
from tests.fakes.slack import ADMIN_ID
from tests.secrets import ALL_TEST_SECRETS
from tests.e2e.test_discord_e2e import start_discord  # noqa: F401  (fixtures)
from tests.e2e.test_slack_e2e import slack_http  # noqa: F401  (fixtures)

TOKEN = ALL_TEST_SECRETS["USEAPI_API_TOKEN"]
FAST = PollPolicy(initial=0.03, factor=1.5, cap=0.08, jitter=0.1, use_progress=False, min_delay=0.01)
DAY = 86400.0
MANAGE_GUILD = str(1 << 5)
SWITCHED = "Switched `studio` to Relax to keep the last 2 h; `/quota-mode fast` switches back."


def back(alert: int, who: str = "`studio`") -> str:
    return f"Switched {who} back to Fast, the mode alert #{alert} had switched it away from."


def _left(hours: float) -> str:
    return f"{hours:.2f}/15.0 hours ({hours / 15 * 100:.2f}%)"


def _plan(renews: float, plan: str = "Standard") -> str:
    return f"{plan} (Active monthly, renews next on <t:{int(renews)}>)"


class Rig:
    """``studio`` on the useapi fake (it can switch), and ``lab`` on the same fake too (pooled), each
    replica with its own provider, pool, switcher and store instance; Alerts built as serve() builds them."""

    def __init__(self, fake: UseapiFake) -> None:
        self.fake = fake
        self.providers: list[UseapiProvider] = []
        self.running: list[Alerts] = []

    def pool(self) -> QuotaPool:
        def service() -> QuotaService:
            provider = UseapiProvider(base_url=self.fake.base_url, token=TOKEN, poll=FAST, limiter=AskLimiter(0.01),
                                      poll_timeout=5.0, stream=False)
            self.providers.append(provider)
            return QuotaService(provider, cache_seconds=0)

        return QuotaPool({"studio": service()}, pooled=True)

    async def alerts(self, store: Any, config: str, posters: dict[str, Any], *, clock: Any = None,
                     pool: QuotaPool | None = None) -> Alerts:
        pool = pool or self.pool()
        alerts = _track(Alerts(store, pool, posters, clock=clock, policy=PostPolicy(backoff=0.01),
                               modes=ModeSwitcher(pool, store)))
        await alerts.sync_config(parse_config(config, pool.names))
        await alerts.start()
        self.running.append(alerts)
        return alerts

    async def read(self, alerts: Alerts, hours: float | None = None, **account: Any) -> None:
        """One fresh reading with the fake's account at ``hours`` left; then wait for the check it kicked
        and whatever it started (a switch, a post, a switch back)."""
        if hours is not None:
            self.fake.account.fast_time = _left(hours)
        for key, value in account.items():
            setattr(self.fake.account, key, value)
        before = alerts.finished  # type: ignore[attr-defined]
        await alerts.pool.get_report()
        await settle(alerts, before)


@pytest.fixture
async def rig():
    fake = UseapiFake(require_token=TOKEN, complete_after=0.05)
    await fake.start()
    made = Rig(fake)
    yield made
    for alerts in made.running:
        await alerts.stop()
    for provider in made.providers:
        await provider.close()
    await fake.stop()


def _acted(poster: RecordingPoster) -> list[tuple[str, str | None]]:
    return [(notice.kind, notice.action_line()) for _, notice, _ in poster.posts]


# --- the grammar ------------------------------------------------------------------------------------------

def test_conditions_carry_their_action_and_pool_items_cannot_act():
    assert parse_condition("2h:relax") == parse_condition("2h relax") == parse_condition(" 2H : Relax ")
    assert (parse_condition("2h relax").text, parse_condition("2h relax").action) == ("2h:relax", "relax")
    assert parse_condition("run out relax").text == "runout:relax" and parse_condition("20%").action == ""
    with pytest.raises(AlertError, match="the one action is relax"):
        parse_condition("2h:fast")
    [item] = parse_config("slack:C0ALERTS@studio=20%,2h:relax", ("studio", "lab"))
    assert [(c.text, c.action) for c in item.conditions] == [("20%", ""), ("2h:relax", "relax")]
    assert parse_config("slack:C1=2h:relax")[0].conditions[0].action == "relax"  # one account: it is the pool
    with pytest.raises(AlertError) as caught:
        parse_config("slack:C1=20%,2h:relax", ("studio", "lab"))
    assert caught.value.user_message == (
        "QUOTA_ALERTS: item 'slack:C1=20%,2h:relax': '2h:relax': an alert on the pool cannot switch (which account "
        "would it switch?); name the account, e.g. slack:C1@lab=2h:relax")
    names = ("studio", "lab")
    commands = Commands(QuotaPool({}, pooled=True)).all
    assert parse("quota-alert", "add 2h relax studio", commands, names).values == {"condition": "2h relax",
                                                                                    "account": "studio"}
    assert parse("quota-alert", "add 2h:relax", commands, names).values == {"condition": "2h:relax"}


async def test_a_pool_item_that_acts_stops_start_up_with_one_line(tmp_path):
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[account]]\nname = "studio"\nprovider = "simulated"\n\n'
                        '[[account]]\nname = "lab"\nprovider = "simulated"\n')
    for command in ("run", "check", "quota"):
        code, out, err = await run_cli(command, cwd=tmp_path, env=clean_env(
            QUOTA_ACCOUNTS_FILE=str(accounts), HOST="127.0.0.1", PORT="0", QUOTA_SAMPLE_EVERY="off",
            DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3", QUOTA_ALERTS="slack:C0ALERTS=2h:relax"))
        assert code == 2, (command, out, err)
        assert err.strip().splitlines() == [
            "quota-bot: QUOTA_ALERTS: item 'slack:C0ALERTS=2h:relax': '2h:relax': an alert on the pool cannot "
            "switch (which account would it switch?); name the account, e.g. slack:C0ALERTS@lab=2h:relax"]


# --- once per crossing, back on re-arm, never over a person ------------------------------------------------

async def test_an_acting_alert_switches_once_stays_and_switches_back_after_the_renewal(rig, store):
    start = datetime.now(timezone.utc).replace(microsecond=0)
    clock = FakeClock(start)
    renews = start.timestamp() + DAY
    rig.fake.account.subscription = _plan(renews)
    poster = RecordingPoster()
    alerts = await rig.alerts(store, "slack:C0ALERTS@studio=20%,2h:relax", {"slack": poster}, clock=clock)

    await rig.read(alerts, 12.0)
    assert poster.posts == [] and rig.fake.mode_asks == []
    await rig.read(alerts, 1.5)  # below 20 % and 2 h at once: two alerts, one of them acts
    assert rig.fake.account.job_mode == "Relax" and len(rig.fake.mode_asks) == 1
    assert sorted(_acted(poster), key=str) == sorted([("alert", None), ("alert", SWITCHED)], key=str)
    for hours in (1.4, 1.2):  # still below: nothing more
        await clock.advance(3600)
        await rig.read(alerts, hours)
    assert len(rig.fake.mode_asks) == 1 and len(poster.posts) == 2

    await clock.advance(DAY)  # renewed: the fast time is back, the account still in the Relax the alert set
    await rig.read(alerts, 15.0, subscription=_plan(renews + 30 * DAY))
    assert rig.fake.account.job_mode == "Fast" and len(rig.fake.mode_asks) == 2
    backs = [n for _, n, _ in poster.posts if n.kind == "back"]
    assert [(n.headline, n.action_line()) for n in backs] == [
        ("The plan (studio) renewed: 15 h of fast time left", back(2))]
    log = await ModeSwitcher(alerts.pool, store).log()
    assert [(r.who, r.cause, r.from_mode, r.to_mode, r.outcome, r.platform, r.channel) for r in log] == [
        ("alert #2", "alert", "relax", "fast", "ok", "slack", "C0ALERTS"),
        ("alert #2", "alert", "fast", "relax", "ok", "slack", "C0ALERTS")]
    assert [v.state for v in await alerts.list("slack")] == ["armed", "armed"]


async def test_no_switch_back_after_a_person_switched_and_a_failed_switch_is_posted_once_then_retried(rig, store):
    poster = RecordingPoster()
    alerts = await rig.alerts(store, "slack:C0ALERTS@studio=2h:relax", {"slack": poster})
    await rig.read(alerts, 1.5)
    assert rig.fake.account.job_mode == "Relax"
    await ModeSwitcher(alerts.pool, store).switch("studio", "turbo", who="U1", platform="slack")  # a person
    await rig.read(alerts, 15.0)  # back above the line: re-armed, but the account is a person's now
    assert rig.fake.account.job_mode == "Turbo" and len(rig.fake.mode_asks) == 2
    assert [n.kind for _, n, _ in poster.posts] == ["alert"]
    assert [v.state for v in await alerts.list("slack")] == ["armed"]

    # a Basic plan has no Relax: the refusal is posted once, not tried again while below
    rig.fake.account.job_mode = "Fast"
    renews = time.time() + 11 * DAY
    await rig.read(alerts, 1.5, subscription=_plan(renews, "Basic"))
    for hours in (1.4, 1.3):
        await rig.read(alerts, hours)
    assert rig.fake.account.job_mode == "Fast" and len(rig.fake.mode_asks) == 3
    failed = poster.posts[1][1]
    assert failed.acted == "failed" and failed.action_line().startswith("Could not switch `studio` to Relax: Midjourney")
    assert failed.action_line().endswith("It is tried again at the next crossing.") and len(poster.posts) == 2
    await rig.read(alerts, 15.0, subscription=_plan(renews))  # re-armed: nothing it switched, nothing back
    assert len(rig.fake.mode_asks) == 3 and len(poster.posts) == 2
    await rig.read(alerts, 1.5)  # the next crossing tries again (the plan has Relax now)
    assert rig.fake.account.job_mode == "Relax" and len(rig.fake.mode_asks) == 4
    assert _acted(poster)[-1] == ("alert", SWITCHED)


async def test_three_replicas_switch_once_per_crossing_and_back_once(rig, open_stores):
    posters = [RecordingPoster() for _ in range(3)]
    replicas = []
    for poster in posters:
        replicas.append(await rig.alerts(await open_stores(), "slack:C0ALERTS@studio=2h:relax", {"slack": poster}))

    async def everyone(hours: float) -> None:
        rig.fake.account.fast_time = _left(hours)
        await asyncio.gather(*(rig.read(a) for a in replicas))
        for alerts in replicas:  # as the change watcher does: each replica takes the stored states
            await alerts.reload()

    await everyone(1.5)
    assert len(rig.fake.mode_asks) == 1 and rig.fake.account.job_mode == "Relax"
    assert [n.acted for p in posters for _, n, _ in p.posts] == ["ok"]
    await everyone(1.4)
    await everyone(15.0)
    await eventually(lambda: not any(a._deliveries for a in replicas))
    assert len(rig.fake.mode_asks) == 2 and rig.fake.account.job_mode == "Fast"
    assert sorted(n.kind for p in posters for _, n, _ in p.posts) == ["alert", "back"]
    await everyone(1.5)  # the next crossing: once again
    assert len(rig.fake.mode_asks) == 3 and sum(len(p.posts) for p in posters) == 3


async def test_a_recovered_claim_posts_what_its_switch_came_to_without_switching_again(rig, tmp_path):
    store = await Store.open(str(tmp_path / "q.sqlite3"))
    try:
        alerts = await rig.alerts(store, "slack:C0ALERTS@studio=2h:relax", {"slack": RecordingPoster()})
        notice = AlertNotice(1, "Fast time (studio) below 2 h: 1.5 h of 15 h left", None, None, "studio", "2h:relax",
                             action="relax", acted="ok", mode="fast")
        assert await alerts._act(alerts._rows[1], notice) is notice  # already done: not again
        assert rig.fake.mode_asks == []
    finally:
        await store.close()


# --- `/quota-alert add 2h relax`, end to end -----------------------------------------------------------------

async def test_slack_add_2h_relax_fires_switches_and_switches_back(rig, slack_http, tmp_path):  # noqa: F811
    store = await Store.open(str(tmp_path / "slack.sqlite3"))
    posters: dict[str, Any] = {}
    pool = rig.pool()
    alerts = await rig.alerts(store, "", posters, pool=pool)
    try:
        bot = await slack_http(pool, alerts=alerts)
        posters["slack"] = bot.adapter

        async def ask(text: str) -> str:
            _, _, rid, _ = await bot.command(text, command="/quota-alert", user_id=ADMIN_ID)
            return str((await bot.fake.wait_response(rid)).body["text"])

        assert await ask("add 2h relax studio") == (
            "Alert *#1* added: below `2h:relax` for account *studio*, posted in <#C0FAKE01>.\n"
            "When it fires it switches `studio` to Relax first; when it re-arms, back to the mode before, unless "
            "someone switched it since.")
        await rig.read(alerts, 1.5)
        post = await bot.fake.wait(lambda: next(iter(bot.fake.posts), None))
        assert post.body["text"] == f"Fast time (studio) below 2 h: 1.5 h of 15 h left. {SWITCHED}"
        section = post.body["blocks"][0]["text"]["text"]
        assert f":turtle: {SWITCHED}" in section and "Whoever manages" not in section
        await rig.read(alerts, 15.0)
        again = await bot.fake.wait(lambda: bot.fake.posts[1] if len(bot.fake.posts) > 1 else None)
        assert again.body["text"] == f"Fast time (studio) back above 2 h: 15 h left. {back(1)}"
        assert rig.fake.account.job_mode == "Fast"
    finally:
        await alerts.stop()
        await store.close()


async def test_discord_add_2h_relax_fires_switches_and_switches_back(rig, discord_fake, start_discord, tmp_path):  # noqa: F811
    store = await Store.open(str(tmp_path / "discord.sqlite3"))
    posters: dict[str, Any] = {}
    pool = rig.pool()
    alerts = await rig.alerts(store, "", posters, pool=pool)
    try:
        posters["discord"] = await start_discord(pool, alerts=alerts)
        options = [{"type": 3, "name": "condition", "value": "2h relax"}, {"type": 3, "name": "account", "value": "studio"}]
        iid, token = await discord_fake.slash("quota-alert", options, subcommand="add", permissions=MANAGE_GUILD)
        await discord_fake.wait_callback(iid)
        [embed] = (await discord_fake.wait_edit(token)).body["embeds"]
        assert embed["description"].startswith("Alert **#1** added: below `2h:relax`")
        await rig.read(alerts, 1.5)
        post = await discord_fake.changes.wait(lambda: next(iter(discord_fake.channel_posts), None), 10)
        assert post.path == f"/channels/{CHANNEL_ID}/messages"
        [alert] = post.body["embeds"]
        assert alert["title"] == "⚠️ Fast time (studio) below 2 h: 1.5 h of 15 h left"
        assert alert["description"].startswith("🐢 Switched `studio` to Relax to keep the last 2 h; `/quota-mode fast`")
        await rig.read(alerts, 15.0)
        again = await discord_fake.changes.wait(
            lambda: discord_fake.channel_posts[1] if len(discord_fake.channel_posts) > 1 else None, 10)
        [embed] = again.body["embeds"]
        assert embed["title"] == "↩️ Fast time (studio) back above 2 h: 15 h left"
        assert embed["description"] == back(1)
    finally:
        await alerts.stop()
        await store.close()


async def test_console_add_2h_relax_fires_switches_and_switches_back(rig, tmp_path):
    store = await Store.open(str(tmp_path / "console.sqlite3"))
    out = io.StringIO()
    posters: dict[str, Any] = {}
    pool = rig.pool()
    alerts = await rig.alerts(store, "", posters, pool=pool)
    console = ConsoleAdapter(pool, io.StringIO(), out, commands=Commands(pool, alerts=alerts,
                                                                         modes=ModeSwitcher(pool, store)))
    posters["console"] = console
    try:
        await console.handle("/quota-alert add 2h relax")
        assert "Alert #1 added: below '2h:relax'" in out.getvalue()
        await rig.read(alerts, 1.5)
        await rig.read(alerts, 15.0)
        said = out.getvalue()
        assert ("ALERT #1: Fast time below 2 h: 1.5 h of 15 h left\n"
                "  Switched the account to Relax to keep the last 2 h; /quota-mode fast switches back.\n") in said
        assert ("ALERT #1: Fast time back above 2 h: 15 h left\n"
                f"  {back(1, 'the account')}\n") in said
        await console.handle("/quota-mode log")
        assert [line.split(" · ", 1)[1] for line in out.getvalue().splitlines()[-2:]] == [
            "alert #1: studio Relax → Fast, done", "alert #1: studio Fast → Relax, done"]
    finally:
        await alerts.stop()
        await store.close()


# --- `quota-bot check` lists the alerts that act ------------------------------------------------------------

async def test_check_lists_the_alerts_that_act_and_their_switches(rig, tmp_path):
    db = tmp_path / "q.sqlite3"
    store = await Store.open(str(db))
    try:  # as `run` left it: the configured alert stored as #1, and one switch it made
        await store.add_alerts([("slack", "C0ALERTS", "", "2h:relax", "config", "")])
        await store.record_mode_switch(datetime(2030, 1, 2, 3, 4, tzinfo=timezone.utc).timestamp(), "default", "slack",
                                       "C0ALERTS", "alert #1", "alert", "fast", "relax", "ok", "Done!")
    finally:
        await store.close()
    env = dict(HOST="127.0.0.1", PORT="0", QUOTA_SAMPLE_EVERY="off", DATABASE_URL=f"sqlite:///{db}",
               QUOTA_ALERTS="slack:C0ALERTS=2h:relax;slack:C0OTHER=90m relax")
    code, out, err = await run_cli("check", cwd=tmp_path, env=clean_env(
        USEAPI_API_TOKEN=TOKEN, USEAPI_BASE_URL=rig.fake.base_url, **env))
    lines = out.splitlines()
    assert ("[ok  ] alert #1 (slack:C0ALERTS=2h:relax) switches the account to Relax when it fires, back when it "
            "re-arms; last switches: 2030-01-02 03:04 UTC Fast → Relax, ok") in lines, out
    assert ("[ok  ] QUOTA_ALERTS (slack:C0OTHER=90m:relax) switches the account to Relax when it fires, back when "
            "it re-arms; no switch yet") in lines, out
    code, out, err = await run_cli("check", cwd=tmp_path, env=clean_env(**env))  # the simulator cannot switch
    assert ("[warn] alert #1 (slack:C0ALERTS=2h:relax) switches the account to Relax when it fires, but the "
            "built-in simulator cannot switch the speed mode: it posts that instead") in out.splitlines(), out


async def test_chat_asks_a_pool_alert_that_acts_for_its_account_and_says_when_it_cannot_switch(rig, tmp_path,
                                                                                                 make_service):
    store = await Store.open(str(tmp_path / "q.sqlite3"))
    try:
        pool = QuotaPool({"studio": rig.pool().services["studio"], "lab": make_service()}, pooled=True)
        alerts = await rig.alerts(store, "", {"slack": RecordingPoster()}, pool=pool)
        with pytest.raises(AlertError) as caught:
            await alerts.add("slack", "C1", "2h relax")
        assert caught.value.user_message == ("An alert on every account cannot switch (which account would it "
                                             "switch?): name the account, e.g. `/quota-alert add 2h relax studio`.")
        lab = await alerts.add("slack", "C1", "2h relax", account="lab")
        assert lab.condition == "2h:relax" and lab.note == (
            "TheNextLeg protocol cannot switch the speed mode (account lab): when it fires it posts that instead of "
            "switching `lab` to Relax.")
        await alerts.stop()
    finally:
        await store.close()
