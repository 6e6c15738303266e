"""What the bot sends to Slack and Discord never lets a user's text (or our own `<when>` placeholders)
act as a mention, a link or markup: Slack gets `&amp; &lt; &gt;` everywhere except our own `<#C…>`,
`<!date^…>` and `<!subteam^…>`; Discord shows an echo in a code span it cannot leave, and every
message carries `allowed_mentions: {"parse": []}` (an alert's configured role still pings). Long
values are cut before they are escaped, and the Discord schedule list fits one embed with an
"…and N more" line. Signed Slack commands go to the real bolt app and the fake Slack; Discord
interactions go through the real discord.py client and the fake gateway and REST."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from slack_sdk.models.blocks import Block

from adapters.discord import render as discord_render
from adapters.slack import render as slack_render
from bot.alerts import AlertNotice
from bot.schedules import ScheduleView
from tests.fakes.discord import CHANNEL_ID
from tests.fakes.slack import ADMIN_ID
from tests.e2e.test_discord_e2e import start_discord  # noqa: F401  (fixtures)
from tests.e2e.test_schedule_commands import scheduler  # noqa: F401  (fixture)
from tests.e2e.test_slack_e2e import slack_http  # noqa: F401  (fixtures)

MANAGE_GUILD = str(1 << 5)
NASTY = "<!channel> &amp; <https://x|y> <@U0BOSS>"
OUR_TOKEN = re.compile(r"<(#C[A-Z0-9]+|!date\^[^<>]*|!subteam\^[A-Z0-9]+)>")  # our own links, mentions, dates


def _no_raw_markup(text: str) -> None:
    """Only our own `<…>` tokens stay, and every `&` starts one of Slack's three escapes."""
    rest = OUR_TOKEN.sub("", text)
    assert "<" not in rest and ">" not in rest, text
    assert "&" not in re.sub(r"&(amp|lt|gt);", "", rest), text


def _valid_blocks(blocks: list[dict]) -> None:
    for block in blocks:
        Block.parse(block).validate_json()  # slack-sdk's Block Kit models: types, lengths


async def _slack(bot, text: str, command: str) -> dict:
    resp, _, rid, took = await bot.command(text, command=command, user_id=ADMIN_ID)
    assert resp.status == 200 and took < 3
    body = (await bot.fake.wait_response(rid)).body
    _valid_blocks(body["blocks"])
    for block in body["blocks"]:
        _no_raw_markup(block["text"]["text"])
    _no_raw_markup(body["text"])
    return body


# --- Slack at the wire ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["/quota", "/quota-schedule", "/quota-alert"])
async def test_slack_echo_of_unknown_text_and_the_usage_are_escaped(slack_http, command):  # noqa: F811
    bot = await slack_http()
    body = await _slack(bot, f"x{NASTY}", command)
    text = body["blocks"][0]["text"]["text"]
    echoed = "x&lt;!channel&gt; &amp;amp; &lt;https://x|y&gt;" if command == "/quota" else "x&lt;!channel&gt;`"  # the whole text, or the action word
    assert text.startswith(f"I did not understand `{echoed}")
    assert "<!channel>" not in str(body) and "<https://x|y>" not in str(body) and "<@U0BOSS>" not in str(body)
    if command != "/quota":  # the usage's placeholders, shown as typed
        assert "&lt;id&gt;" in text and ("&lt;when&gt;" in text or "&lt;condition&gt;" in text)


async def test_slack_usage_placeholders_are_escaped_in_help(slack_http):  # noqa: F811
    bot = await slack_http()
    for command, placeholder in (("/quota-schedule", "add &lt;when&gt;"), ("/quota-alert", "add &lt;condition&gt;")):
        body = await _slack(bot, "help", command)
        assert placeholder in body["text"] and body["blocks"][0]["text"]["text"] == body["text"]


async def test_slack_a_bad_when_echoed_in_the_error_is_escaped(slack_http, scheduler, service):  # noqa: F811
    bot = await slack_http(service, schedules=scheduler)
    scheduler.posters_ref["slack"] = bot.adapter
    body = await _slack(bot, f"add {NASTY}", "/quota-schedule")
    assert body["text"].startswith(":x: '&lt;!channel&gt; &amp;amp; &lt;https://x|y&gt; &lt;@U0BOSS&gt;' is not a 5-field")
    body = await _slack(bot, "add 20% <!here>", "/quota-alert")  # no alerts here: still one escaped line
    assert "<!here>" not in str(body)


async def test_slack_a_long_echo_is_cut_before_it_is_escaped(slack_http, scheduler, service):  # noqa: F811
    bot = await slack_http(service, schedules=scheduler)
    scheduler.posters_ref["slack"] = bot.adapter
    body = await _slack(bot, "add every " + "&<" * 2000, "/quota-schedule")  # _no_raw_markup: no broken escape
    text = body["blocks"][0]["text"]["text"]
    assert len(text) <= 3000 and "…' is not understood" in text
    body = await _slack(bot, "&" * 3000, "/quota")  # the "I did not understand" echo, cut the same way
    assert len(body["blocks"][0]["text"]["text"]) <= 3000


async def test_slack_schedule_answers_keep_our_channel_and_date_tokens(slack_http, scheduler, service):  # noqa: F811
    bot = await slack_http(service, schedules=scheduler)
    scheduler.posters_ref["slack"] = bot.adapter
    added = await _slack(bot, "add every 6h", "/quota-schedule")
    assert "in <#C0FAKE01>." in added["text"] and added["text"].count("<!date^") == 3
    listed = await _slack(bot, "list", "/quota-schedule")
    assert "`every 6h` (Europe/Berlin) in <#C0FAKE01>, next <!date^" in listed["text"]


# --- Slack renderers (pure) -------------------------------------------------------------------------

def test_slack_render_text_cuts_plain_text_before_escaping():
    for raw in ("&" * 4000, "a" + "<" * 3999, "x" * 2998 + "&&&"):
        blocks, fallback = slack_render.render_text(raw)
        text = blocks[0]["text"]["text"]
        assert len(text) <= 3000 and text.endswith("…") and fallback == text
        _no_raw_markup(text)
        _valid_blocks(blocks)


def test_slack_a_long_field_value_is_cut_before_escaping():
    assert slack_render.fit("&" * 10, 12) == "&amp;&amp;…"
    assert slack_render.fit("ab<", 10) == "ab&lt;"
    text = slack_render._trim(slack_render.Mrkdwn("x" * 2996 + "&amp; <#C0FAKE01>"), 3000)
    assert text == "x" * 2996 + "…"  # never inside an escape or one of our own tokens


def test_slack_alert_keeps_the_configured_user_group_and_escapes_the_rest():
    notice = AlertNotice(1, "Fast time (<!here>) below 10 %", "pace & <b>", None, "", "10%", mention="S0123ABC")
    blocks, fallback = slack_render.render_alert(notice)
    assert blocks[0]["text"]["text"].startswith(":warning: <!subteam^S0123ABC> *Fast time (&lt;!here&gt;) below")
    assert fallback == "<!subteam^S0123ABC> Fast time (&lt;!here&gt;) below 10 %"
    _valid_blocks(blocks)
    for block in blocks:
        for part in [block.get("text")] + block.get("elements", []):
            if part:
                _no_raw_markup(part["text"])


# --- Discord at the wire ----------------------------------------------------------------------------

def _code_span(description: str) -> str:
    """The first inline code span's content; the span must close on the same line."""
    match = re.search(r"`([^`\n]*)`", description)
    assert match, description
    return match.group(1)


async def test_discord_a_bad_when_is_echoed_in_a_code_span_without_mentions(discord_fake, start_discord, scheduler, service):  # noqa: F811
    adapter = await start_discord(service, schedules=scheduler)
    scheduler.posters_ref["discord"] = adapter
    typed = "@everyone <@&42> `` [x](https://evil.example) ` 9"
    _, token = await discord_fake.slash("quota-schedule", [{"type": 3, "name": "when", "value": typed}],
                                        subcommand="add", permissions=MANAGE_GUILD)
    edit = await discord_fake.wait_edit(token)
    assert edit.body["allowed_mentions"] == {"parse": []}
    description = edit.body["embeds"][0]["description"]
    shown = _code_span(description)
    assert description.startswith(f"`{shown}` is not a 5-field cron expression")
    assert "@everyone <@&42>" in shown and "[x](https://evil.example)" in shown and "`" not in shown


async def test_discord_every_answer_carries_no_mentions(discord_fake, start_discord, scheduler, service):  # noqa: F811
    adapter = await start_discord(service, schedules=scheduler)
    scheduler.posters_ref["discord"] = adapter
    for subcommand, options in (("add", [{"type": 3, "name": "when", "value": "every 6h"}]), ("list", None),
                                ("remove", [{"type": 4, "name": "id", "value": 7}])):
        _, token = await discord_fake.slash("quota-schedule", options, subcommand=subcommand, permissions=MANAGE_GUILD)
        assert (await discord_fake.wait_edit(token)).body["allowed_mentions"] == {"parse": []}
    _, token = await discord_fake.slash("quota", [])
    assert (await discord_fake.wait_edit(token)).body["allowed_mentions"] == {"parse": []}


async def test_discord_schedule_list_fits_one_embed_with_and_n_more(discord_fake, start_discord, scheduler, service):  # noqa: F811
    adapter = await start_discord(service, schedules=scheduler)
    scheduler.posters_ref["discord"] = adapter
    minutes = ",".join(str(m) for m in range(60))
    for hour in range(24):
        await scheduler.add("discord", CHANNEL_ID, f"{minutes} {hour} * * *")
    _, token = await discord_fake.slash("quota-schedule", subcommand="list", permissions=MANAGE_GUILD)
    description = (await discord_fake.wait_edit(token)).body["embeds"][0]["description"]
    lines = description.split("\n")
    assert len(description) <= 4096
    assert re.fullmatch(r"…and (\d+) more\.", lines[-1]) and int(lines[-1][5:-6]) + len(lines) - 1 == 24
    for line in lines[:-1]:  # whole lines: the id, the code span closed, the channel mention whole
        assert line.startswith("**#") and line.count("`") == 2 and f"in <#{CHANNEL_ID}>, next <t:" in line


async def test_discord_alert_still_pings_the_configured_role(discord_fake, start_discord):  # noqa: F811
    """A guard (it passed before too): no-mentions by default must not silence QUOTA_ALERT_MENTION."""
    adapter = await start_discord()
    notice = AlertNotice(3, "Fast time below 10 %", None, None, "", "10%", mention="987654321")
    await adapter.post(CHANNEL_ID, notice)
    post = discord_fake.channel_posts[-1].body
    assert post["content"] == "<@&987654321>"
    mentions = post["allowed_mentions"]  # the role, and nobody else (no @everyone, no users)
    assert [str(r) for r in mentions["roles"]] == ["987654321"] and mentions["parse"] == [] and "users" not in mentions


def test_discord_code_span_cannot_be_left_and_is_cut_first():
    assert discord_render.discord_code("a`b``c") == "`aˋbˋˋc`"
    long = discord_render.discord_code("x" * 500)
    assert len(long) == 202 and long.endswith("…`")
    view = ScheduleView(1, "discord", CHANNEL_ID, "`0 9 * * *` @everyone", "UTC", "chat",
                        (datetime(2026, 1, 1, tzinfo=timezone.utc),))
    assert discord_render.schedule_line(view).startswith("**#1** `ˋ0 9 * * *ˋ @everyone` (UTC)")
