"""The Slack Block Kit renderer: readable at a glance and always within Block Kit's limits."""

from __future__ import annotations

from datetime import datetime, timezone

from adapters.slack.render import FIELD_TEXT_MAX, MAX_BLOCKS, SECTION_TEXT_MAX, render_error, render_report
from bot.errors import BadToken
from bot.report import parse_result

NOW = datetime.now(timezone.utc).replace(microsecond=0)  # a fresh reading: no age line


def _report(content, simulated=False):
    return parse_result({"content": content}, read_at=NOW, simulated=simulated)


def _check_limits(blocks):
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= SECTION_TEXT_MAX
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= FIELD_TEXT_MAX for f in block.get("fields", []))
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150


def test_headline_bar_percent_renewal_and_fallback():
    blocks, text = render_report(_report({
        "Subscription": "Basic (Active monthly, renews next on <t:1705181223>)", "Job Mode": "Relaxed",
        "Fast Time Remaining": "199.00/200.0 minutes (99.50%)", "Queued Jobs (fast)": "0"}))
    assert text == "Midjourney fast time: 199 min of 200 min left (99.50%)"
    assert blocks[0]["text"]["text"] == "Midjourney fast time: 199 min of 200 min left"
    assert blocks[1]["text"]["text"] == ":large_green_circle: `████████████████████` *99.50%* left"
    fields = [f["text"] for f in blocks[2]["fields"]]
    assert fields[:2] == ["*Job mode*\nRelaxed", "*Plan*\nBasic (Active monthly)"]
    assert fields[2].startswith("*Renews*\n<!date^1705181223^") and fields[3] == "*Queued Jobs (fast)*\n0"
    assert blocks[-1]["elements"][0]["text"].startswith(f"Read <!date^{int(NOW.timestamp())}^")
    _check_limits(blocks)


def test_simulated_readings_are_labelled():
    blocks, text = render_report(_report({"Fast Time Remaining": "1.00/15.0 hours (6.67%)"}, simulated=True))
    assert "Simulated reading" in str(blocks) and text.endswith("[simulated]") and ":red_circle:" in str(blocks)


def test_many_and_long_fields_stay_within_limits():
    content = {"Fast Time Remaining": "12.06/15.0 hours (80.37%)"}
    content.update({f"Field {i} " + "k" * 500: "<v&>" * 3000 for i in range(600)})
    blocks, _ = render_report(_report(content))
    _check_limits(blocks)
    assert len(blocks) == MAX_BLOCKS and "more fields not shown" in str(blocks[-2])
    assert "&lt;v&amp;&gt;" in str(blocks)  # upstream text is escaped, never read as Slack markup


def test_error_is_one_sentence():
    blocks, text = render_error(BadToken("HTTP 401"))
    assert text == "The upstream rejected the API token (NEXTLEG_API_TOKEN); ask the operator to check it."
    assert blocks[0]["text"]["text"].startswith(":x: The upstream rejected")


def _view(i, **kw):
    from zoneinfo import ZoneInfo

    from bot.schedules import ScheduleView

    berlin = ZoneInfo("Europe/Berlin")
    runs = tuple(datetime(2026, 1, d, 9, 0, tzinfo=berlin) for d in (5, 6, 7))
    return ScheduleView(id=i, platform="slack", channel="C0FAKE01", when="0 9 * * 1-5", timezone="Europe/Berlin",
                        source="chat", next_runs=runs, **kw)


def test_schedule_added_shows_three_runs_for_each_reader_and_in_the_schedules_zone():
    from adapters.slack.render import schedule_added_text

    text = schedule_added_text(_view(7))
    assert text.startswith("Schedule *#7* added: `0 9 * * 1-5` (Europe/Berlin) in <#C0FAKE01>.\nNext runs:\n")
    # 09:00 in Berlin is 08:00 UTC: the date token carries the instant, the fallback the schedule's wall clock
    assert ("• <!date^1767600000^{date_short_pretty} {time}|2026-01-05 09:00 Europe/Berlin> "
            "(2026-01-05 09:00 Europe/Berlin)") in text
    assert text.count("• <!date^") == 3


def test_schedule_list_marks_failing_and_stays_within_a_section():
    from adapters.slack.render import render_text, schedule_list_text

    assert "failing: Slack not_in_channel" in schedule_list_text([_view(1, failing="Slack not_in_channel")])
    text = schedule_list_text([_view(i) for i in range(1, 200)])
    blocks, _ = render_text(text)
    assert len(text) <= SECTION_TEXT_MAX and text.endswith("more.") and "*#1* `0 9 * * 1-5`" in text
    _check_limits(blocks)


def test_an_old_reading_shows_its_age():
    from datetime import timedelta

    old = parse_result({"content": {"Fast Time Remaining": "3/15 hours (20%)"}}, read_at=datetime.now(timezone.utc) - timedelta(hours=3))
    blocks, _ = render_report(old)
    assert "These figures were read 3 h ago" in str(blocks)
    blocks, _ = render_report(_report({"Fast Time Remaining": "3/15 hours (20%)"}))
    assert "These figures were" not in str(blocks)
