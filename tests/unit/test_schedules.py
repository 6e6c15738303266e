"""`when` parsing, QUOTA_SCHEDULES parsing, and next-run maths (cron in a timezone, across DST)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from bot.schedules import ScheduleError, parse_config, parse_when

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def test_every_units():
    assert parse_when("every 6h").every == 21600 and parse_when("every 30m").every == 1800
    assert parse_when("every 3s").every == 3 and parse_when("Every 1 d").every == 86400
    assert parse_when("  0   9 * * 1-5 ").cron == "0 9 * * 1-5"


@pytest.mark.parametrize("text, start", [
    ("every 0h", "'every 0h': every needs a positive number"),
    ("every 5 fortnights", "'every 5 fortnights' is not understood"),
    ("0 9 * *", "'0 9 * *' is not a 5-field cron expression"),
    ("0 25 * * *", "'0 25 * * *' is not a valid cron expression (bad hour)"),
    ("", "Say when to post"),
])
def test_bad_when_is_one_line_with_an_example(text, start):
    with pytest.raises(ScheduleError) as caught:
        parse_when(text)
    message = caught.value.user_message
    assert message.startswith(start) and "\n" not in message and "e.g." in message


def test_config_items():
    items = parse_config("discord:123456789012345678=0 9 * * 1-5;slack:C0123ABC=every 6h; ;")
    assert [(i.platform, i.channel, i.when.text) for i in items] == [
        ("discord", "123456789012345678", "0 9 * * 1-5"), ("slack", "C0123ABC", "every 6h")]
    assert parse_config("") == []


@pytest.mark.parametrize("value, expected", [
    ("slack:C01=every 0h", "QUOTA_SCHEDULES: item 'slack:C01=every 0h': 'every 0h': every needs a positive number"),
    ("teams:x=every 1h", "QUOTA_SCHEDULES: item 'teams:x=every 1h': platform must be discord or slack"),
    ("slack:C01", "QUOTA_SCHEDULES: item 'slack:C01': write it as platform:channel=when"),
    ("discord:general=every 1h", "QUOTA_SCHEDULES: item 'discord:general=every 1h': a Discord channel id is a number"),
    ("slack:C01=every 1h;slack:=every 2h", "QUOTA_SCHEDULES: item 'slack:=every 2h': the channel id is missing"),
])
def test_config_errors_name_the_item(value, expected):
    with pytest.raises(ScheduleError) as caught:
        parse_config(value)
    assert caught.value.user_message.startswith(expected)


def test_cron_across_spring_forward_in_berlin():
    when = parse_when("30 2 * * *")  # 02:30 does not exist on 2026-03-29
    runs = when.next_runs(datetime(2026, 3, 27, 12, tzinfo=UTC), BERLIN, ANCHOR, 3)
    assert [r.isoformat() for r in runs] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_cron_across_fall_back_runs_once():
    when = parse_when("30 2 * * *")  # 02:30 happens twice on 2026-10-25
    runs = when.next_runs(datetime(2026, 10, 24, 12, tzinfo=UTC), BERLIN, ANCHOR, 3)
    assert [r.isoformat() for r in runs] == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]


def test_weekday_cron_keeps_local_nine_oclock_across_dst():
    when = parse_when("0 9 * * 1-5")
    runs = when.next_runs(datetime(2026, 3, 27, 10, tzinfo=UTC), BERLIN, ANCHOR, 2)
    assert [r.isoformat() for r in runs] == ["2026-03-30T09:00:00+02:00", "2026-03-31T09:00:00+02:00"]
    assert [r.astimezone(UTC).hour for r in runs] == [7, 7]


def test_every_is_absolute_time_across_dst_and_anchored():
    when = parse_when("every 6h")
    anchor = datetime(2026, 3, 28, 22, 15, tzinfo=UTC)
    runs = when.next_runs(datetime(2026, 3, 29, 0, 0, tzinfo=UTC), BERLIN, anchor, 3)
    assert [r.astimezone(UTC).isoformat() for r in runs] == [
        "2026-03-29T04:15:00+00:00", "2026-03-29T10:15:00+00:00", "2026-03-29T16:15:00+00:00"]
    # the same due times whenever they are computed: deterministic across restarts
    later = when.next_after(datetime(2026, 3, 29, 4, 15, tzinfo=UTC), BERLIN, anchor)
    assert later.isoformat() == "2026-03-29T10:15:00+00:00"


def test_last_missed_run():
    when = parse_when("every 1h")
    now = datetime(2026, 1, 1, 5, 10, tzinfo=UTC)
    assert when.last_at_or_before(now, BERLIN, ANCHOR, ANCHOR) == datetime(2026, 1, 1, 5, tzinfo=UTC)
    assert when.last_at_or_before(now, BERLIN, ANCHOR, datetime(2026, 1, 1, 5, tzinfo=UTC)) is None
    cron = parse_when("0 9 * * *")
    assert cron.last_at_or_before(datetime(2026, 1, 3, 9, 5, tzinfo=UTC), UTC, ANCHOR, ANCHOR) == datetime(2026, 1, 3, 9, tzinfo=UTC)
