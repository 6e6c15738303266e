"""The Discord embed renderer: readable at a glance and always within Discord's embed limits."""

from __future__ import annotations

from datetime import datetime, timezone

from adapters.discord.render import FIELD_VALUE_MAX, FIELDS_MAX, TOTAL_MAX, render_error, render_report
from bot.errors import AccountProblem, TimedOut
from bot.report import parse_result

NOW = datetime.now(timezone.utc).replace(microsecond=0)  # a fresh reading: no age line


def _report(content, simulated=False):
    return parse_result({"content": content}, read_at=NOW, simulated=simulated)


def _check_limits(embed):
    data = embed.to_dict()
    assert len(data.get("title", "")) <= 256 and len(data.get("description", "")) <= 4096
    assert len(data.get("fields", [])) <= FIELDS_MAX
    for field in data.get("fields", []):
        assert 0 < len(field["name"]) <= 256 and 0 < len(field["value"]) <= FIELD_VALUE_MAX
    assert len(embed) <= TOTAL_MAX


def test_headline_bar_percent_colour_and_renewal():
    embed = render_report(_report({
        "Subscription": "Pro (Active yearly, renews next on <t:1715321361>)", "Job Mode": "Turbo",
        "Fast Time Remaining": "3.00/30.0 hours (10.00%)", "Visibility Mode": "Stealth"}))
    data = embed.to_dict()
    assert data["title"] == "Midjourney fast time: 3 h of 30 h left"
    assert data["description"].startswith("`██░░░░░░░░░░░░░░░░░░` **10.00%**")
    assert data["color"] == 0xE74C3C  # red: under 15 %
    fields = {f["name"]: f["value"] for f in data["fields"]}
    assert fields["Renews"] == "<t:1715321361:R> (<t:1715321361:f>)" and fields["Job mode"] == "Turbo"
    assert fields["Visibility Mode"] == "Stealth" and data["timestamp"].startswith(NOW.date().isoformat())


def test_amber_and_minutes_and_simulated_label():
    embed = render_report(_report({"Fast Time Remaining": "60.00/200.0 minutes (30.00%)"}, simulated=True)).to_dict()
    assert embed["color"] == 0xE67E22 and embed["title"].endswith("60 min of 200 min left")
    assert "(1.00 h)" in embed["description"] and "Simulated reading" in embed["description"]
    assert "simulated" in embed["footer"]["text"]


def test_trial_without_total_or_percent():
    embed = render_report(_report({"Fast Time Remaining": "25.00 minutes", "Subscription": "None (Trial)"})).to_dict()
    assert embed["title"].endswith("25 min left") and embed["color"] == 0x95A5A6


def test_many_and_long_fields_are_truncated_not_failed():
    content = {"Fast Time Remaining": "12.06/15.0 hours (80.37%)"}
    content.update({f"Field {i:02d} " + "n" * 300: "v" * 5000 for i in range(40)})
    embed = render_report(_report(content))
    _check_limits(embed)
    fields = embed.to_dict()["fields"]
    assert len(fields) >= 3 and fields[0]["value"].endswith("…")


def test_many_short_fields_keep_within_25_and_say_how_many_more():
    content = {"Fast Time Remaining": "12.06/15.0 hours (80.37%)", "Job Mode": "Fast"}
    content.update({f"Queue {i}": str(i) for i in range(40)})
    embed = render_report(_report(content))
    _check_limits(embed)
    fields = embed.to_dict()["fields"]
    assert len(fields) == 25 and fields[-1]["value"] == "17 more fields not shown"  # 41 fields: 24 shown + the note


def test_empty_values_become_a_dash():
    fields = render_report(_report({"Running Jobs": "", "Odd": "  "})).to_dict()["fields"]
    assert all(f["value"] == "—" for f in fields)


def test_error_embed_is_red_and_one_line():
    embed = render_error(AccountProblem("NO_FAST_HOURS")).to_dict()
    assert embed["color"] == 0xE74C3C and embed["description"] == "This Midjourney account has no fast time left."
    assert render_error(TimedOut(90)).to_dict()["description"] == "Timed out: the Midjourney API gave no answer within 90 s."
    assert render_error(ValueError("secret detail")).to_dict()["description"] == "Something went wrong; it has been logged."


def test_an_old_reading_shows_its_age():
    from datetime import timedelta

    old = parse_result({"content": {"Fast Time Remaining": "3/15 hours (20%)"}}, read_at=datetime.now(timezone.utc) - timedelta(minutes=25))
    assert "These figures were read 25 min ago" in render_report(old).description
    assert "These figures were" not in (render_report(_report({"Fast Time Remaining": "3/15 hours"})).description or "")
