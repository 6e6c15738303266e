"""The pooled answer over several accounts (PoolReport) in each platform's idiom: the sum first, then one
line per account in order, a failed account shown with its reason and out of the sum, always within
Discord's and Slack's limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.cli import render as cli
from adapters.discord import render as discord_render
from adapters.slack import render as slack_render
from bot.errors import AccountProblem, TimedOut, UpstreamUnavailable, user_sentence
from bot.report import AccountReading, PoolReport, parse_result

NOW = datetime.now(timezone.utc).replace(microsecond=0)  # fresh readings: no age line
RENEWS = int((NOW + timedelta(days=12, hours=3)).timestamp())
DOWN = user_sentence(UpstreamUnavailable("x"))


def _report(fast="12.06/15.0 hours (80.37%)", plan="Standard", mode="Fast", *, read_at=NOW, simulated=False, **extra):
    content = {"Fast Time Remaining": fast, "Subscription": f"{plan} (Active monthly, renews next on <t:{RENEWS}>)",
               "Job Mode": mode, **extra}
    return parse_result({"content": content}, read_at=read_at, simulated=simulated)


def _pool(*accounts: AccountReading) -> PoolReport:
    return PoolReport(accounts=tuple(accounts), read_at=NOW)


def _three(**kw) -> PoolReport:
    return _pool(
        AccountReading("studio", "nextleg", _report(**kw)),
        AccountReading("basic-plan", "useapi", _report("190.00/200.0 minutes (95.00%)", "Basic", "Relaxed", **kw)),
        AccountReading("backup", "useapi", error=UpstreamUnavailable("x")),
    )


def _many(n: int = 20) -> PoolReport:
    """n accounts: long names full of markup, long job modes, some failed with long codes, some old."""
    accounts = []
    for i in range(n):
        name = f"acct-{i:02d} " + "<*_&>`~|" * 40
        if i % 4 == 3:
            error = AccountProblem("X" * 150 + "<&>" * 50) if i % 8 == 3 else TimedOut(90)
            accounts.append(AccountReading(name, "useapi", error=error))
        else:
            report = _report(f"{i}.5/30.0 hours", "Pro", "Fast <&> " * 500, read_at=NOW - timedelta(hours=i),
                             **{"Visibility Mode": "v" * 3000})
            accounts.append(AccountReading(name, "nextleg", report))
    return _pool(*accounts)


def test_the_pool_sums_two_of_three_accounts():
    pool = _three()
    assert pool.headline == "15.23 h of 18.33 h left across 2 of 3 accounts" and pool.percent == 83.05


# --- Discord ---------------------------------------------------------------------------------------

def _check_discord(embed):
    data = embed.to_dict()
    assert len(data.get("title", "")) <= discord_render.TITLE_MAX
    assert len(data.get("description", "")) <= discord_render.DESCRIPTION_MAX
    assert len(data.get("fields", [])) <= discord_render.FIELDS_MAX
    for field in data.get("fields", []):
        assert 0 < len(field["name"]) <= discord_render.FIELD_NAME_MAX
        assert 0 < len(field["value"]) <= discord_render.FIELD_VALUE_MAX
    assert len(data.get("footer", {}).get("text", "")) <= discord_render.FOOTER_MAX
    assert len(embed) <= discord_render.TOTAL_MAX


def test_discord_headline_bar_and_one_field_per_account():
    embed = discord_render.render_pool(_three())
    _check_discord(embed)
    data = embed.to_dict()
    assert data["title"] == "Midjourney fast time: 15.23 h of 18.33 h left across 2 of 3 accounts"
    assert data["description"].startswith("`█████████████████░░░` **83.05%** left")
    assert data["color"] == discord_render.COLOURS["ok"]
    fields = data["fields"]
    assert [f["name"] for f in fields] == ["🟢 studio", "🟢 basic-plan", "✗ backup"]
    assert all(f["inline"] is False for f in fields)
    assert fields[0]["value"] == f"`████████░░` 80.37% · **12.06 h of 15 h**\nFast · renews <t:{RENEWS}:R>"
    assert "**190 min of 200 min**" in fields[1]["value"] and "`██████████` 95.00%" in fields[1]["value"]
    assert fields[2]["value"] == f"*Not in the sum:* {DOWN}"
    assert "read " not in str(fields) and "Simulated" not in data["description"]


def test_discord_colour_follows_the_pool_level():
    low = _pool(AccountReading("a", "nextleg", _report("3/15 hours")), AccountReading("b", "nextleg", _report("2/15 hours")))
    assert discord_render.render_pool(low).colour.value == discord_render.COLOURS["low"]
    trial = _pool(AccountReading("t", "nextleg", _report("25.00 minutes", "None")))
    embed = discord_render.render_pool(trial).to_dict()
    assert embed["color"] == discord_render.COLOURS["unknown"] and "description" not in embed  # no total: no bar
    assert embed["title"].endswith("0.42 h left across 1 account") and "**25 min**" in embed["fields"][0]["value"]


def test_discord_twenty_accounts_stay_within_limits_and_in_order():
    embed = discord_render.render_pool(_many(20))
    _check_discord(embed)
    fields = embed.to_dict()["fields"]
    assert len(fields) == 20
    assert [f["name"].split("acct-")[1][:2] for f in fields] == [f"{i:02d}" for i in range(20)]
    assert sum(f["name"].startswith("✗") for f in fields) == 5
    assert all(f["value"].startswith("*Not in the sum:* ") for f in fields if f["name"].startswith("✗"))
    assert "Timed out: the Midjourney API gave no answer within 90 s." in fields[7]["value"]
    assert "h of 30 h" in fields[0]["value"]


def test_discord_more_accounts_than_fields_says_how_many_are_hidden():
    embed = discord_render.render_pool(_many(40))
    _check_discord(embed)
    fields = embed.to_dict()["fields"]
    assert len(fields) == 25 and fields[-1]["value"] == "16 more accounts not shown"


# --- Slack -----------------------------------------------------------------------------------------

def _check_slack(blocks):
    assert len(blocks) <= slack_render.MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= slack_render.SECTION_TEXT_MAX
            assert len(block.get("fields", [])) <= slack_render.FIELDS_PER_SECTION
            assert all(len(f["text"]) <= slack_render.FIELD_TEXT_MAX for f in block.get("fields", []))
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= slack_render.HEADER_MAX


def _sections(blocks):
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]


def test_slack_header_bar_one_section_per_account_and_footer():
    blocks, text = slack_render.render_pool(_three())
    _check_slack(blocks)
    assert text == "Midjourney fast time: 15.23 h of 18.33 h left across 2 of 3 accounts (83.05%)"
    assert blocks[0]["text"]["text"] == "Midjourney fast time: 15.23 h of 18.33 h left across 2 of 3 accounts"
    sections = _sections(blocks)
    assert sections[0] == ":large_green_circle: `█████████████████░░░` *83.05%* left"
    assert sections[1].startswith(":large_green_circle: *studio*  12.06 h of 15 h\n`████████░░` *80.37%* · Fast · renews "
                                  f"<!date^{RENEWS}^{{date_short_pretty}}|")
    assert sections[2].startswith(":large_green_circle: *basic-plan*  190 min of 200 min\n`██████████` *95.00%* · Relaxed")
    assert sections[3] == f":x: *backup*: {DOWN} _(not in the sum)_"
    footer = blocks[-1]["elements"][0]["text"]
    assert footer.startswith(f"Read <!date^{int(NOW.timestamp())}^") and footer.endswith("2 of 3 accounts answered")
    assert "clock3" not in str(blocks) and "Simulated" not in str(blocks)


def test_slack_escapes_names_and_provider_text():
    pool = _pool(AccountReading("<!channel> & co", "nextleg", _report(mode="<@U123> fast")),
                 AccountReading("x", "useapi", error=AccountProblem("<!here>")))
    blocks, _ = slack_render.render_pool(pool)
    assert "<!channel>" not in str(blocks) and "<@U123>" not in str(blocks) and "<!here>" not in str(blocks)
    assert "*&lt;!channel&gt; &amp; co*" in str(blocks) and "&lt;@U123&gt; fast" in str(blocks)


def test_slack_colour_emoji_follows_the_pool_level():
    low = _pool(AccountReading("a", "nextleg", _report("5/15 hours")), AccountReading("b", "nextleg", _report("1/15 hours")))
    sections = _sections(slack_render.render_pool(low)[0])
    assert sections[0].startswith(":large_orange_circle:") and sections[2].startswith(":red_circle: *b*")


def test_slack_twenty_accounts_stay_within_limits_and_in_order():
    blocks, text = slack_render.render_pool(_many(20))
    _check_slack(blocks)
    sections = _sections(blocks)[1:]  # after the pooled bar
    assert len(sections) == 20 and "across 15 of 20 accounts" in text
    assert [s.split("acct-")[1][:2] for s in sections] == [f"{i:02d}" for i in range(20)]
    assert sum(s.startswith(":x:") for s in sections) == 5
    assert "&lt;*_&amp;&gt;" in sections[0] and "<*_&>" not in str(blocks)


def test_slack_more_accounts_than_blocks_are_packed_then_counted():
    blocks, _ = slack_render.render_pool(_many(300))
    _check_slack(blocks)
    shown = str(blocks).count("acct-")
    assert "more accounts not shown" in _sections(blocks)[-1]
    assert f"…and {300 - shown} more accounts not shown" in _sections(blocks)[-1]


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_headline_bar_and_aligned_table():
    out = cli.render_pool(_three())
    lines = out.splitlines()
    assert lines[0] == "Midjourney fast time: 15.23 h of 18.33 h left across 2 of 3 accounts"
    assert lines[1] == "  [####################----] 83.05%  OK"
    header, studio, basic, backup = lines[2:6]
    assert header.split() == ["Account", "Left", "Fast", "time", "Job", "mode", "Renews"]  # no "Read": all fresh
    assert studio.split()[:8] == ["studio", "12.06", "h", "of", "15", "h", "[########--]", "80.37%"]
    assert basic.split()[:8] == ["basic-plan", "190", "min", "of", "200", "min", "[##########]", "95.00%"]
    for column in ("Left", "Fast time", "Job mode", "Renews"):
        at = header.index(column)
        assert studio[at - 1] == " " and studio[at] != " " and basic[at] != " "
    assert "Relaxed" in basic and "in 12d" in studio
    assert backup == f"  backup      ✗ {DOWN} (not in the sum)"
    assert lines[-1].startswith("  Read at ") and "\x1b[" not in out and "SIMULATED" not in out


def test_cli_long_and_multiline_values_stay_on_one_row():
    out = cli.render_pool(_many(20))
    rows = [line for line in out.splitlines() if "acct-" in line]
    assert len(rows) == 20 and all(len(r) < 200 for r in rows if "✗" not in r)


# --- in all three ----------------------------------------------------------------------------------

def _everything(pool):
    embed = discord_render.render_pool(pool)
    blocks, text = slack_render.render_pool(pool)
    return {"discord": str(embed.to_dict()), "slack": str(blocks) + text, "cli": cli.render_pool(pool)}


@pytest.mark.parametrize("platform", ["discord", "slack", "cli"])
def test_every_account_and_the_failed_sentence_are_shown(platform):
    shown = _everything(_three())[platform]
    assert "across 2 of 3 accounts" in shown and "15.23 h of 18.33 h" in shown
    for name, figures in [("studio", "12.06 h of 15 h"), ("basic-plan", "190 min of 200 min"), ("backup", DOWN)]:
        assert name in shown and figures in shown
    assert shown.index("studio") < shown.index("basic-plan") < shown.index("backup")


@pytest.mark.parametrize("platform", ["discord", "slack", "cli"])
def test_an_old_reading_shows_its_age(platform):
    pool = _pool(AccountReading("fresh", "nextleg", _report()),
                 AccountReading("stale", "mjproxy", _report(read_at=datetime.now(timezone.utc) - timedelta(minutes=25))))
    shown = _everything(pool)[platform]
    assert shown.count("read 25 min ago") == 1 and shown.index("stale") < shown.index("read 25 min ago")


@pytest.mark.parametrize("platform", ["discord", "slack", "cli"])
def test_a_simulated_pool_says_so(platform):
    shown = _everything(_three(simulated=True))[platform]
    assert ("SIMULATED" if platform == "cli" else "Simulated reading") in shown
    if platform == "slack":
        assert shown.endswith("[simulated]")


@pytest.mark.parametrize("module", [discord_render, slack_render, cli], ids=["discord", "slack", "cli"])
def test_render_reading_dispatches_on_the_type(module):
    def same(a, b):
        if hasattr(a, "to_dict"):
            a, b = a.to_dict(), b.to_dict()
        return a == b

    single, pool = _report(), _three()
    assert same(module.render_reading(single), module.render_report(single))
    assert same(module.render_reading(pool), module.render_pool(pool))
    assert not same(module.render_reading(pool), module.render_report(single))
