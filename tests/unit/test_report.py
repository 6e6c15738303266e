"""The parser: every format of shared/upstream.md, and it never raises on arbitrary input."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import AccountProblem, BadResponse, QuotaError
from bot.report import Amount, parse_fast_time, parse_result, parse_subscription, parse_timestamp

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, remaining, total, percent, unit", [
    ("12.06/15.0 hours (80.37%)", 12.06, 15.0, 80.37, "hours"),
    ("60.0/60.0 hours (100%)", 60.0, 60.0, 100.0, "hours"),
    ("199.00/200.0 minutes (99.50%)", 199.0, 200.0, 99.5, "minutes"),
    ("25.00 minutes", 25.0, None, None, "minutes"),
    ("0.00/15.0 hours (0.00%)", 0.0, 15.0, 0.0, "hours"),
    ("3.0/15.0 hours", 3.0, 15.0, 20.0, "hours"),  # percent derived when absent
])
def test_fast_time_formats(text, remaining, total, percent, unit):
    rem, tot, pct = parse_fast_time(text)
    assert rem.value == remaining and rem.unit == unit
    assert (tot.value if tot else None) == total
    assert pct == percent


def test_minutes_normalise_to_hours():
    rem, tot, _ = parse_fast_time("199.00/200.0 minutes (99.50%)")
    assert rem.hours == pytest.approx(3.3167, abs=1e-3) and tot.hours == pytest.approx(3.3333, abs=1e-3)
    assert str(rem) == "199 min"


@pytest.mark.parametrize("text", ["", "n/a", "lots", "12 credits", None, 12, ["x"]])
def test_odd_fast_time_is_unknown(text):
    assert parse_fast_time(text) == (None, None, None)


@pytest.mark.parametrize("text, plan, status, renewal", [
    ("Pro (Active yearly, renews next on <t:1715321361>)", "Pro", "Active yearly", 1715321361),
    ("Basic (Active monthly, renews next on <t:1705181223:R>)", "Basic", "Active monthly", 1705181223),
    ("Standard (Active monthly, renews next on <t:1705181223>)", "Standard", "Active monthly", 1705181223),
    ("None (Trial)", "None", "Trial", None),
    ("Mega", "Mega", None, None),
])
def test_subscription_formats(text, plan, status, renewal):
    p, s, r = parse_subscription(text)
    assert (p, s) == (plan, status)
    assert (int(r.timestamp()) if r else None) == renewal


def test_timestamps_both_forms_and_junk():
    assert parse_timestamp("2023-04-04T13:07:01.927Z") == datetime(2023, 4, 4, 13, 7, 1, 927000, timezone.utc)
    assert parse_timestamp({"_seconds": 1678840347, "_nanoseconds": 215000000}).timestamp() == pytest.approx(1678840347.215)
    for junk in ("yesterday", {}, {"_seconds": "x"}, None, 5, {"_seconds": True}):
        assert parse_timestamp(junk) is None


def _result(content):
    return {"originatingMessageId": "abc123", "type": "info", "createdAt": "2023-04-04T13:07:01.927Z",
            "responseAt": {"_seconds": 1678840347, "_nanoseconds": 0}, "content": content}


def test_full_example_keeps_upstream_order_and_unknown_keys():
    content = {
        "User ID": "123456789012345678",
        "Subscription": "Standard (Active monthly, renews next on <t:1705181223>)",
        "Job Mode": "Fast",
        "Visibility Mode": "Public",
        "Fast Time Remaining": "12.06/15.0 hours (80.37%)",
        "Lifetime Usage": "1234 images (56.78 hours)",
        "Brand New Field": "42",
        "Queued Jobs (fast)": 0,
        "Running Jobs": ["job1", "job2"],
    }
    report = parse_result(_result(content), read_at=NOW)
    assert [k for k, _ in report.fields] == list(content)
    assert [k for k, _ in report.other_fields] == [
        "User ID", "Visibility Mode", "Lifetime Usage", "Brand New Field", "Queued Jobs (fast)", "Running Jobs"]
    assert dict(report.fields)["Running Jobs"] == "job1, job2"
    assert report.headline == "12.06 h of 15 h left"
    assert report.level == "ok" and report.message_id == "abc123" and report.read_at == NOW
    doc = report.to_json()
    assert doc["remaining"] == 12.06 and doc["total"] == 15.0 and doc["percent"] == 80.37
    assert doc["unit"] == "hours" and doc["renewal"] == 1705181223


def test_missing_fields_show_as_unknown():
    report = parse_result(_result({"Job Mode": "Relaxed"}), read_at=NOW)
    assert report.remaining is None and report.percent is None and report.renewal is None
    assert report.headline == "unknown" and report.level == "unknown"
    trial = parse_result(_result({"Fast Time Remaining": "25.00 minutes", "Subscription": "None (Trial)"}), read_at=NOW)
    assert trial.headline == "25 min left" and trial.level == "unknown" and trial.plan_status == "Trial"


@pytest.mark.parametrize("percent, level", [(80, "ok"), (40, "ok"), (39.9, "low"), (15, "low"), (14.9, "critical"), (0, "critical")])
def test_levels(percent, level):
    report = parse_result(_result({"Fast Time Remaining": f"{percent * 0.15:.2f}/15.0 hours ({percent}%)"}), read_at=NOW)
    assert report.level == level


def test_failure_code_and_bad_content():
    with pytest.raises(AccountProblem) as caught:
        parse_result(_result("NO_FAST_HOURS"), read_at=NOW)
    assert caught.value.user_message == "This Midjourney account has no fast time left."
    for bad in (None, 5, ["x"]):
        with pytest.raises(BadResponse):
            parse_result(_result(bad), read_at=NOW)
    with pytest.raises(BadResponse):
        parse_result("not an object", read_at=NOW)


# --- properties -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_field_parsers_never_raise_on_any_string(text):
    parse_fast_time(text)
    parse_subscription(text)
    parse_timestamp(text)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=25), json_values, max_size=8) | json_values)
def test_parse_result_only_raises_typed_errors(content):
    try:
        report = parse_result(_result(content), read_at=NOW)
    except QuotaError:
        return
    report.headline, report.level, report.to_json(), report.progress_bar()


@settings(max_examples=300, deadline=None)
@given(
    remaining=st.decimals(min_value=0, max_value=9999, places=2),
    total=st.decimals(min_value="0.1", max_value=9999, places=1),
    unit=st.sampled_from(["hours", "minutes"]),
    with_total=st.booleans(),
)
def test_fast_time_round_trips_every_table_format(remaining, total, unit, with_total):
    percent = round(float(remaining) / float(total) * 100, 2)
    text = f"{remaining}/{total} {unit} ({percent:.2f}%)" if with_total else f"{remaining} {unit}"
    rem, tot, pct = parse_fast_time(text)
    assert rem.value == float(remaining) and rem.unit == unit
    if with_total:
        assert tot.value == float(total) and pct == pytest.approx(percent)
    else:
        assert tot is None and pct is None


@settings(max_examples=200, deadline=None)
@given(plan=st.sampled_from(["Basic", "Standard", "Pro", "Mega"]), period=st.sampled_from(["monthly", "yearly"]),
       stamp=st.integers(min_value=0, max_value=4_000_000_000), style=st.sampled_from(["", ":R", ":F"]))
def test_subscription_round_trips(plan, period, stamp, style):
    p, status, renewal = parse_subscription(f"{plan} (Active {period}, renews next on <t:{stamp}{style}>)")
    assert p == plan and status == f"Active {period}" and int(renewal.timestamp()) == stamp


# --- H:MM:SS, the derived total, parse_result over the /info text ---------------------------------

@pytest.mark.parametrize("text, hours", [
    ("2:45:30", 2.7583), ("2:45", 2.75), ("0:00:00", 0.0), ("120:05:00", 120.0833), (" 2:45:30 ", 2.7583),
])
def test_fast_time_clock_is_hours_with_no_total(text, hours):
    rem, tot, pct = parse_fast_time(text)
    assert rem == Amount(hours, "hours") and tot is None and pct is None


@pytest.mark.parametrize("text", ["2:4", "12:345", "2:60:00", "2:45:3", "2:45:30:10", "1e999:00"])
def test_broken_clock_is_unknown_never_its_first_number(text):
    assert parse_fast_time(text) == (None, None, None)


def test_total_from_the_plan_is_labelled_and_only_when_the_source_gave_none():
    report = parse_result(_result({
        "Subscription": "Standard (Active monthly, renews next on <t:1705181223>)",
        "Fast Time Remaining": "2:45:30"}), read_at=NOW)
    assert report.total == Amount(15.0, "hours") and report.total_derived
    assert report.percent == 18.39 and report.level == "low"
    assert report.headline == "2.76 h of ~15 h left"
    assert report.to_json()["total_derived"] is True and report.to_json()["total"] == 15.0
    given = parse_result(_result({"Subscription": "Standard (Active monthly)",
                                  "Fast Time Remaining": "12.06/20.0 hours (60.30%)"}), read_at=NOW)
    assert given.total == Amount(20.0, "hours") and not given.total_derived and given.percent == 60.3
    assert given.headline == "12.06 h of 20 h left" and given.to_json()["total_derived"] is False


@pytest.mark.parametrize("plan, fast, total", [
    ("Basic", "25.00 minutes", Amount(200.0, "minutes")),
    ("Basic", "0:25:00", Amount(200 / 60, "hours")),  # in the unit of the remaining figure
    ("Pro", "10:00:00", Amount(30.0, "hours")),
    ("Mega Plan", "10.5 hours", Amount(60.0, "hours")),
])
def test_plan_totals(plan, fast, total):
    report = parse_result(_result({"Subscription": plan, "Fast Time Remaining": fast}), read_at=NOW)
    assert report.total == total and report.total_derived
    assert report.percent == pytest.approx(report.remaining.hours / total.hours * 100, abs=0.01)


@pytest.mark.parametrize("subscription, fast", [
    ("None (Trial)", "25.00 minutes"),        # no plan table entry
    ("Professional", "3:00:00"),               # not "Pro"
    ("Standard", "20:00:00"),                  # more than the plan holds (bought hours): no total known
    (None, "3:00:00"),
])
def test_no_total_is_invented(subscription, fast):
    content = {"Fast Time Remaining": fast} | ({"Subscription": subscription} if subscription else {})
    report = parse_result(_result(content), read_at=NOW)
    assert report.total is None and report.percent is None and not report.total_derived
    assert "~" not in report.headline


def test_parse_result_reads_the_info_text_and_still_raises_on_codes():
    text = ("**User ID**: 1234\n**Subscription**: Mega (Active monthly, renews next on <t:1767225600>)\n"
            "**Fast Time Remaining**: 60.0/60.0 hours (100%)\n\n**Running Jobs**: None")
    report = parse_result({"originatingMessageId": "j1", "content": text}, read_at=NOW)
    assert report.headline == "60 h of 60 h left" and report.plan == "Mega" and report.message_id == "j1"
    assert [k for k, _ in report.fields] == ["User ID", "Subscription", "Fast Time Remaining", "Running Jobs"]
    for code in ("NO_FAST_HOURS", "**QUEUE_FULL**", "Something odd happened", ""):
        with pytest.raises(AccountProblem):
            parse_result(_result(code), read_at=NOW)
    with pytest.raises(BadResponse):
        parse_result(_result({}), read_at=NOW)
