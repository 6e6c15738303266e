"""The pooled history when an account has no readings (issue 21, item 4), and the alert lines on the chart
(item 5).

Three accounts from an accounts file: two simulated (the built-in simulator) and one whose provider points
at a port nobody listens on, so it never has a reading. The pool line and its figures come from the two
that have readings, the projection starts where the pool is, the left-out account is named, and the
SIMULATED badge is shown; every configured alert that applies to a plotted series is a faint labelled
line (a percentage converted with the total). Checked on the data handed to the chart, on the figure's
artists, on the PNG, through ``history_chart`` (what Discord and Slack call), the console, and
`quota-bot history --json --png` as a subprocess.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from adapters.app import build_core
from adapters.cli import render as cli_render
from adapters.cli.console import ConsoleAdapter
from adapters.discord import render as discord_render
from adapters.slack import render as slack_render
from bot.chart import figure, render_png
from bot.commands import Commands
from bot.history import chart_spec, history_chart, summary_line
from bot.report import AccountReading, PoolReport, parse_result
from bot.settings import load_settings
from bot.simulator import demo_history
from bot.store import Store
from tests.fakes.cli import clean_env, run_cli
from tests.ports import refusing_port

DAY = 86400.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the pool (both alpha and beta have a total of 15 h): 20 % of 30 h is a line at 6 h; runout has no line;
# gamma (no readings) is not plotted, so its alert is not drawn either
QUOTA_ALERTS = ("slack:C0123ABC=20%,runout;discord:123456789012345678@alpha=5h;"
                "slack:C0123ABC@gamma=10%")
GAMMA_TOKEN = "gamma-secret-token-1234567890"


def _accounts_file(tmp_path, port: int) -> str:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nname = "alpha"\nprovider = "simulated"\n\n'
        '[[account]]\nname = "beta"\nprovider = "simulated"\n\n'
        f'[[account]]\nname = "gamma"\nprovider = "nextleg"\ntoken = "{GAMMA_TOKEN}"\n'
        f'base_url = "http://127.0.0.1:{port}"\n')
    return str(path)


async def _seed(db: str, now: float) -> None:
    """alpha: the demo's month every 2 h; beta: the same curve every 3 h, so the two interleave."""
    store = await Store.open(db)
    try:
        await store.record_history("alpha", demo_history(now), simulated=True)
        await store.record_history("beta", demo_history(now, every=3 * 3600), simulated=True)
    finally:
        await store.close()


@pytest.fixture
async def three(tmp_path):
    """(core, store, history) of the three accounts, alpha and beta seeded, and a chat alert on beta."""
    db = str(tmp_path / "q.sqlite3")
    await _seed(db, time.time())
    with refusing_port() as port:
        settings = load_settings(None, database_url=f"sqlite:///{db}", quota_accounts_file=_accounts_file(tmp_path, port),
                                 quota_alerts=QUOTA_ALERTS, quota_sample_every="off", quota_read_timeout=5)
        store = await Store.open(db)
        core = await build_core(settings, store=store)
        history = core.history
        await history.seed_demo()  # alpha and beta have their past already: nothing written
        await store.add_alerts([("discord", "123456789012345678", "beta", "2h", "chat", "u1"),
                                ("slack", "C0999", "alpha", "5h", "chat", "u2")])  # the same line as the configured one
        try:
            yield core, store, history
        finally:
            await history.stop()
            await core.close()
            await store.close()


def _pool_oracle(alpha, beta):
    """At each moment with a reading, once both have one: the sum of each account's latest value (two
    readings at the same moment: one point)."""
    out = []
    for t in sorted({t for t, _ in alpha + beta}):
        a = [v for ta, v in alpha if ta <= t]
        b = [v for tb, v in beta if tb <= t]
        if a and b:
            out.append((t, a[-1] + b[-1]))
    return out


# === item 4: the pool when an account has no readings ==============================================

async def test_the_pool_is_the_sum_of_the_accounts_with_readings_and_says_which_is_left_out(three):
    core, store, history = three
    report = await core.pool.get_report()  # gamma fails (nobody listens), alpha and beta answer
    assert [a.name for a in report.answered] == ["alpha", "beta"]
    assert [a.name for a in report.accounts if a.error is not None] == ["gamma"]

    data = await history.data(30)
    assert data.series["gamma"] == [] and data.series["alpha"] and data.series["beta"]
    pooled = data.pooled
    assert pooled, "no pool line although two accounts have readings"
    expected = _pool_oracle(data.series["alpha"], data.series["beta"])
    assert [t for t, _ in pooled] == [t for t, _ in expected]
    assert all(v == pytest.approx(e, abs=1e-3) for (_, v), (_, e) in zip(pooled, expected))
    assert pooled[-1][1] == pytest.approx(data.series["alpha"][-1][1] + data.series["beta"][-1][1], abs=1e-3)

    # the figures are the pool's, not an account's
    figures = data.figures()
    assert figures["min"] == pytest.approx(min(v for _, v in pooled)) and figures["max"] == pytest.approx(
        max(v for _, v in pooled))
    for name in ("alpha", "beta"):  # a sum of two: not an account's figures
        values = [v for _, v in data.series[name]]
        assert figures["min"] > min(values) and figures["max"] > max(values)
    line = summary_line(data)
    assert "gamma" in line and "left out" in line and "alpha" not in line, line
    assert data.left_out == ("gamma",)

    # every plotted series is simulated: the badge; the JSON says the same
    assert data.simulated is True
    doc = data.to_json()
    assert doc["simulated"] is True and doc["left_out"] == ["gamma"]
    assert doc["pool"][-1] == [int(pooled[-1][0]), pooled[-1][1]]

    spec = chart_spec(data, tz=history.tz)
    [pool] = [s for s in spec.series if s.pool]
    assert list(pool.points) == pooled
    assert "gamma" not in [s.name for s in spec.series]  # no legend entry for a line that is not there
    assert "gamma" in spec.note
    assert data.forecast.enough and spec.projection is not None
    assert spec.projection[0] == pooled[-1]  # starts where the pool is
    (t0, h0), (t1, h1) = spec.projection
    assert (h0 - h1) / ((t1 - t0) / DAY) == pytest.approx(data.forecast.pace_per_day, rel=1e-6)  # at the pool's pace
    assert spec.simulated is True


async def test_a_real_account_beside_a_simulated_one_labels_only_the_simulated_series(three):
    """One real account with readings beside a simulated one: the badge still shows (a plotted series is
    simulated) and names the simulated account only."""
    core, store, history = three
    now = time.time()
    await store.record_history("gamma", [(now - 5 * DAY + k * 3600, 10.0 - k * 0.01, 15.0, now + 9 * DAY)
                                         for k in range(0, 120)], simulated=False)
    data = await history.data(30)
    assert data.left_out == () and data.simulated is True
    assert data.simulated_accounts == ("alpha", "beta")
    spec = chart_spec(data)
    assert spec.simulated is True and tuple(spec.simulated_names) == ("alpha", "beta")
    texts = [t.get_text() for t in figure(spec).texts]
    assert any(t.startswith("SIMULATED") and "alpha" in t and "gamma" not in t for t in texts), texts


# === item 5: the alert lines ========================================================================

async def test_the_chart_gets_every_alert_that_applies_to_a_plotted_series(three):
    core, store, history = three
    data = await history.data(30)
    # pool: 20 % of alpha's 15 h + beta's 15 h; alpha 5 h (configured and from chat: one line); beta 2 h
    # (from chat); gamma's 10 % is not drawn (gamma has no readings), nor is runout (no line)
    assert sorted(data.thresholds, key=lambda x: -x[1]) == [("pool alert 20 %", 6.0), ("alpha alert", 5.0),
                                                           ("beta alert", 2.0)]
    spec = chart_spec(data, tz=history.tz)
    assert sorted(spec.thresholds, key=lambda x: -x[1]) == sorted(data.thresholds, key=lambda x: -x[1])
    assert data.to_json()["alerts"] == [{"label": label, "hours": hours} for label, hours in spec.thresholds]

    fig = figure(spec)
    [ax] = [a for a in fig.axes]
    texts = [t.get_text() for t in ax.texts]
    for label in ("pool alert 20 % · 6 h", "alpha alert · 5 h", "beta alert · 2 h"):
        assert label in texts, texts
    flat = sorted({line.get_ydata()[0] for line in ax.get_lines()
                   if len(set(line.get_ydata())) == 1 and list(line.get_xdata()) == [0, 1]})
    assert flat == [2.0, 5.0, 6.0]  # axhline: one faint line each
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["alpha", "beta", "pool"] and "gamma" not in legend and "projection" in legend
    badge = [t.get_text() for t in fig.texts]
    assert "SIMULATED" in badge and any("gamma" in t for t in badge), badge  # the badge; the note names gamma

    png = render_png(spec)
    assert png[:8] == PNG_SIGNATURE and len(png) < 200 * 1024


async def test_one_account_gets_its_own_alerts_only_and_percent_uses_its_total(three):
    core, store, history = three
    await store.add_alerts([("slack", "C0123ABC", "alpha", "50%", "chat", "u3")])
    data = await history.data(7, "alpha")
    # alpha's 5 h and 50 % of 15 h; neither the pool's 20 % nor beta's 2 h
    assert sorted(data.thresholds, key=lambda x: -x[1]) == [("alert 50 %", 7.5), ("alert", 5.0)]
    assert data.simulated and data.left_out == () and not data.pooled


async def test_history_chart_what_discord_and_slack_send_has_the_lines_and_the_note(three):
    core, store, history = three
    data, png = await history_chart(core.history, core.pool.names, 30, None)
    assert png[:8] == PNG_SIGNATURE
    assert ("pool alert 20 %", 6.0) in data.thresholds and data.left_out == ("gamma",) and data.simulated
    embed = discord_render.render_history(data).to_dict()
    assert "gamma" in embed["description"] and "left out" in embed["description"]
    blocks, _ = slack_render.render_history(data, None)
    assert "gamma" in str(blocks) and "left out" in str(blocks)


async def test_the_console_chart_and_text(three, tmp_path):
    core, store, history = three
    out = io.StringIO()
    commands = Commands(core.pool, history=history)
    await ConsoleAdapter(core.pool, io.StringIO(), out, commands=commands).handle("/quota history 30")
    text = out.getvalue()
    assert "gamma" in text and "left out" in text and "pool" in text
    assert (tmp_path / "quota-history.png").read_bytes()[:8] == PNG_SIGNATURE


# === the pooled /quota banner =======================================================================

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _reading(simulated: bool):
    renews = int((NOW + timedelta(days=12)).timestamp())
    content = {"Fast Time Remaining": "12.06/15.0 hours (80.37%)", "Job Mode": "Fast",
               "Subscription": f"Standard (Active monthly, renews next on <t:{renews}>)"}
    return parse_result({"content": content}, read_at=NOW, simulated=simulated)


def _texts(node) -> list[str]:
    if isinstance(node, dict):
        return [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return [node] if isinstance(node, str) else []


def _shown(pool: PoolReport) -> dict[str, str]:
    """What each chat shows outside the per-account lines: the banner, the footer, the fallback text."""
    embed = discord_render.render_pool(pool).to_dict()
    blocks, text = slack_render.render_pool(pool)
    slack = [t for b in blocks if b["type"] in ("header", "context") for t in _texts(b)]
    return {"discord": embed["description"] + "\n" + embed["footer"]["text"], "slack": "\n".join([*slack, text]),
            "cli": cli_render.render_pool(pool).split("Midjourney fast time:")[0]}


@pytest.mark.parametrize("platform", ["discord", "slack", "cli"])
def test_the_pooled_banner_names_the_simulated_accounts_only(platform):
    pool = PoolReport((AccountReading("real-one", "nextleg", _reading(False)),
                       AccountReading("demo", "simulated", _reading(True))), NOW)
    shown = _shown(pool)[platform]
    banner = [line for line in shown.splitlines() if "imulated" in line or "SIMULATED" in line]
    assert banner, shown
    assert any("demo" in line for line in banner) and not any("real-one" in line for line in banner), banner
    assert "no provider credentials" not in shown  # the real account has them
    assert "partly simulated" in shown or platform == "cli"


async def test_the_pooled_banner_with_a_failed_account(three):
    core, store, history = three
    report = await core.pool.get_report()
    for platform, shown in _shown(report).items():
        assert "alpha" in shown and "beta" in shown
        assert "no provider credentials" not in shown, platform  # gamma has a token: it failed, it is not simulated
        assert GAMMA_TOKEN not in shown


# === `quota-bot history --json --png` ===============================================================

async def test_cli_history_json_and_png(tmp_path):
    db = str(tmp_path / "q.sqlite3")
    await _seed(db, time.time())
    png_path = tmp_path / "out.png"
    with refusing_port() as port:
        env = clean_env(DATABASE_URL=f"sqlite:///{db}", QUOTA_ACCOUNTS_FILE=_accounts_file(tmp_path, port),
                        QUOTA_ALERTS=QUOTA_ALERTS)
        code, out, err = await run_cli("history", "--json", "--png", str(png_path), cwd=tmp_path, env=env)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["simulated"] is True and doc["left_out"] == ["gamma"] and doc["series"]["gamma"] == []
    pool = [v for _, v in doc["pool"]]
    assert pool and doc["min"] == pytest.approx(min(pool)) and doc["max"] == pytest.approx(max(pool))
    # the configured alerts (the CLI never ran the bot: they come from QUOTA_ALERTS, not the store)
    assert {(a["label"], a["hours"]) for a in doc["alerts"]} == {("pool alert 20 %", 6.0), ("alpha alert", 5.0)}
    assert GAMMA_TOKEN not in out + err
    data = png_path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) < 200 * 1024


# === Slack end to end: `/quota history` and `/quota` through the real slack-bolt ======================

async def test_slack_quota_history_and_quota_with_an_account_that_fails(tmp_path):
    import asyncio

    from adapters.app import serve
    from tests.fakes.slack import FakeSlack
    from tests.secrets import ALL_TEST_SECRETS

    bot_token, app_token = ALL_TEST_SECRETS["SLACK_BOT_TOKEN"], ALL_TEST_SECRETS["SLACK_APP_TOKEN"]
    db = str(tmp_path / "q.sqlite3")
    await _seed(db, time.time())
    slack = await FakeSlack(bot_token, app_token).start()
    stop = asyncio.Event()
    task = None
    try:
        with refusing_port() as port:
            settings = load_settings(None, host="127.0.0.1", port=0, database_url=f"sqlite:///{db}",
                                     quota_accounts_file=_accounts_file(tmp_path, port), quota_sample_every="off",
                                     quota_alerts="slack:C0123ABC=20%;slack:C0123ABC@alpha=5h", quota_read_timeout=5,
                                     slack_bot_token=bot_token, slack_app_token=app_token, slack_api_url=slack.api_url)
            started = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(serve(settings, stop, started=started))
            done, _ = await asyncio.wait({task, started}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
            await asyncio.wait_for(slack.connected.wait(), 10)

            _, rid = await slack.envelope("/quota", "history 30")
            body = (await slack.wait_response(rid, 20)).body
            text = "\n".join(_texts(body["blocks"]))
            assert "gamma left out of the pool" in text and "Lowest" in text, text
            assert [b for b in body["blocks"] if b["type"] == "image"] and len(slack.uploads) == 1
            assert slack.uploads[0].data[:8] == PNG_SIGNATURE

            _, rid = await slack.envelope("/quota", "")
            body = (await slack.wait_response(rid, 30)).body
            banner = [t for b in body["blocks"] if b["type"] == "context" for t in _texts(b) if "Simulated" in t]
            assert len(banner) == 1 and "alpha, beta" in banner[0] and "gamma" not in banner[0], banner
            assert GAMMA_TOKEN not in str(body)
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 15)
        await slack.stop()
