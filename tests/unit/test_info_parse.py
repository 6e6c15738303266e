"""One parser for the /info facts: the four forms of shared/providers.md give the same report,
and no input makes it raise anything but the typed errors."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import AccountProblem, BadResponse, QuotaError
from bot.report import DISPLAY_NAMES, Amount, QuotaReport, parse_info, parse_result

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)

CONTENT = {  # TheNextLeg's content object, with a key no table knows
    "User ID": "123456789012345678",
    "Subscription": "Standard (Active monthly, renews next on <t:1705181223>)",
    "Job Mode": "Fast",
    "Visibility Mode": "Public",
    "Fast Time Remaining": "12.06/15.0 hours (80.37%)",
    "Lifetime Usage": "1234 images (56.78 hours)",
    "Relaxed Usage": "10 images (0.50 hours)",
    "Niji Job Mode": "Relax",
    "Queued Jobs (fast)": "0",
    "Queued Jobs (relax)": "0",
    "Running Jobs": "None",
}


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _camel(name: str) -> str:
    first, *rest = _snake(name).split("_")
    return first + "".join(word.capitalize() for word in rest)


def _text(content: dict[str, str]) -> str:
    lines = [f"**{k}**: {v}" for k, v in content.items()]
    lines.insert(len(lines) // 2, "")  # useapi's text has a blank line before the queues
    return "Your info\n" + "\n".join(lines)


def _clock(hours: float) -> str:
    seconds = round(hours * 3600)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _proxy(content: dict[str, str], *, info_updated: str = "2025-12-31T23:00:00Z", keep: tuple[str, ...] | None = None):
    """A midjourney-proxy account holding ``content`` as its properties (only ``keep`` of them)."""
    props = {k: v for k, v in content.items() if keep is None or k in keep}
    sub = re.match(r"(.+?) \((.+?), renews next on <t:(\d+)>\)", content.get("Subscription", ""))
    displays = {"mode": content.get("Job Mode", "")}
    if sub:
        renew = datetime.fromtimestamp(int(sub.group(3)), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        displays |= {"subscribePlan": sub.group(1), "billedWay": sub.group(2), "renewDate": renew}
    return {
        "id": "acc1", "channelId": "1300000000000000001", "userToken": "discord-user-token", "botToken": "bot-token",
        "loginPassword": "hunter2", "mode": "FAST", "enable": True, "coreSize": 3,
        "fastTimeRemaining": content.get("Fast Time Remaining", ""), "relaxedUsage": content.get("Relaxed Usage", ""),
        "turboUsage": "", "fastUsage": "", "lifetimeUsage": content.get("Lifetime Usage", ""),
        "infoUpdated": info_updated, "properties": props, "displays": displays,
    }


# --- each form -----------------------------------------------------------------------------------

def test_object_form_keeps_order_and_unknown_keys():
    report = parse_info(CONTENT, read_at=NOW)
    assert [k for k, _ in report.fields] == list(CONTENT)
    assert report.headline == "12.06 h of 15 h left" and report.percent == 80.37 and not report.total_derived
    assert (report.job_mode, report.plan, report.plan_status) == ("Fast", "Standard", "Active monthly")
    assert int(report.renewal.timestamp()) == 1705181223 and report.read_at == NOW


def test_text_form_strips_markdown_and_ignores_other_lines():
    text = ("Your info - someone\n\n**User ID**: 1234\n__Subscription__: Mega (Active monthly, renews next on <t:1767225600>)\n"
            "`Job Mode`: Turbo\n> - **Fast Time Remaining**: 60.0/60.0 hours (100%)\r\n\n   \nno colon here\n"
            "**Queued Jobs (fast)**: 0\n**Running Jobs**: None\n**Brand New Thing**: 5: five\n")
    report = parse_info(text, read_at=NOW)
    assert report.fields == (
        ("User ID", "1234"), ("Subscription", "Mega (Active monthly, renews next on <t:1767225600>)"),
        ("Job Mode", "Turbo"), ("Fast Time Remaining", "60.0/60.0 hours (100%)"), ("Queued Jobs (fast)", "0"),
        ("Running Jobs", "None"), ("Brand New Thing", "5: five"))
    assert report.headline == "60 h of 60 h left" and report.job_mode == "Turbo" and report.plan == "Mega"
    assert int(report.renewal.timestamp()) == 1767225600


def test_snake_case_form_with_clock_and_readable_unknown_keys():
    data = {_snake(k): v for k, v in CONTENT.items()} | {"fast_time_remaining": "2:45:30", "extra_thing_id": 7}
    report = parse_info(data, read_at=NOW)
    assert [k for k, _ in report.fields] == [*CONTENT, "Extra Thing ID"]
    assert report.remaining == Amount(2.7583, "hours") and report.total == Amount(15.0, "hours")
    assert report.total_derived and report.percent == 18.39
    assert report.headline == "2.76 h of ~15 h left" and report.to_json()["total_derived"] is True


def test_camel_case_flat_object_is_the_same_as_the_object_form():
    report = parse_info({_camel(k): v for k, v in CONTENT.items()}, read_at=NOW)
    assert report == parse_info(CONTENT, read_at=NOW)


def test_proxy_account_reads_properties_and_hides_its_settings():
    report = parse_info(_proxy(CONTENT), read_at=NOW)
    assert [k for k, _ in report.fields] == list(CONTENT)  # top-level copies add nothing new
    assert report.read_at == datetime(2025, 12, 31, 23, tzinfo=timezone.utc)  # infoUpdated, not "now"
    assert report.headline == "12.06 h of 15 h left" and report.plan == "Standard" and report.job_mode == "Fast"
    shown = json.dumps(report.to_json())
    assert "token" not in shown.lower() and "hunter2" not in shown and "Core Size" not in shown


def test_proxy_account_with_sparse_properties_falls_back_to_displays():
    account = _proxy(CONTENT, info_updated="2025-12-31T18:00:00+08:00", keep=("Visibility Mode",))
    report = parse_info(account, read_at=NOW)
    assert report.read_at == datetime(2025, 12, 31, 10, tzinfo=timezone.utc)
    assert (report.plan, report.plan_status, report.job_mode) == ("Standard", "Active monthly", "Fast")
    assert int(report.renewal.timestamp()) == 1705181223  # from displays.renewDate
    assert report.headline == "12.06 h of 15 h left"
    assert [k for k, _ in report.fields] == [
        "Visibility Mode", "Fast Time Remaining", "Relaxed Usage", "Lifetime Usage", "Subscription", "Job Mode"]


def test_proxy_account_is_lenient_about_what_is_missing():
    report = parse_info({"properties": {"Fast Time Remaining": "3:00:00"}, "infoUpdated": "not a date",
                         "displays": {"subscribePlan": "Pro", "renewDate": "garbage"}}, read_at=NOW)
    assert report.read_at == NOW and report.renewal is None and report.plan == "Pro"
    assert report.total == Amount(30.0, "hours") and report.total_derived and report.percent == 10.0
    with pytest.raises(BadResponse):  # an account never synced: nothing to show
        parse_info({"properties": {}, "displays": {"mode": ""}, "fastTimeRemaining": "", "infoUpdated": None}, read_at=NOW)


@pytest.mark.parametrize("payload", [{}, {"": "x"}, {"Brand New": "x"}, {"status": "SUCCESS"}, "", "   \n\n",
                                     "no colon anywhere", "Error: it broke", None, 5, 1.5, True, [CONTENT]])
def test_nothing_recognisable_is_a_bad_response(payload):
    with pytest.raises(BadResponse):
        parse_info(payload, read_at=NOW)


@pytest.mark.parametrize("code", ["NO_FAST_HOURS", " QUEUE_FULL\n", "**JOB_QUEUED**", "`SOME_NEW_CODE`"])
def test_bare_code_is_an_account_problem(code):
    with pytest.raises(AccountProblem) as caught:
        parse_info(code, read_at=NOW)
    assert caught.value.upstream_code == re.sub(r"[*`\s]", "", code)


def test_simulated_flag_passes_through():
    assert parse_info(CONTENT, read_at=NOW, simulated=True).simulated


# --- the same facts in four forms ----------------------------------------------------------------

PLANS = {"Basic": (200.0, "minutes"), "Standard": (15.0, "hours"), "Pro": (30.0, "hours"), "Mega": (60.0, "hours")}


@st.composite
def accounts(draw):
    plan = draw(st.sampled_from(sorted(PLANS)))
    total, unit = PLANS[plan]
    remaining = draw(st.integers(min_value=0, max_value=int(total * 100))) / 100
    percent = round(remaining / total * 100, 2)
    stamp = draw(st.integers(min_value=1_600_000_000, max_value=2_000_000_000))
    content = {
        "User ID": str(draw(st.integers(min_value=10**17, max_value=10**18 - 1))),
        "Subscription": f"{plan} (Active {draw(st.sampled_from(['monthly', 'yearly']))}, renews next on <t:{stamp}>)",
        "Job Mode": draw(st.sampled_from(["Fast", "Relaxed", "Turbo"])),
        "Visibility Mode": draw(st.sampled_from(["Public", "Stealth"])),
        "Fast Time Remaining": f"{remaining:.2f}/{total:.1f} {unit} ({percent:.2f}%)",
        "Lifetime Usage": f"{draw(st.integers(0, 99999))} images (1.77 hours)",
        "Queued Jobs (fast)": "0",
        "Running Jobs": "None",
    }
    keys = draw(st.permutations(list(content)))
    return {k: content[k] for k in keys}, Amount(remaining, unit)


def _facts(report: QuotaReport):
    return (report.job_mode, report.plan, report.plan_status, report.renewal)


@settings(max_examples=200, deadline=None)
@given(accounts(), st.booleans())
def test_four_forms_give_the_same_report(account, sparse_proxy):
    content, remaining = account
    obj = parse_info(content, read_at=NOW)
    text = parse_info(_text(content), read_at=NOW)
    keep = ("User ID", "Visibility Mode") if sparse_proxy else None
    proxy = parse_info(_proxy(content, keep=keep), read_at=NOW)
    linkr_data = {_snake(k): v for k, v in content.items()} | {"fast_time_remaining": _clock(remaining.hours)}
    linkr = parse_info(linkr_data, read_at=NOW)

    assert obj.remaining == remaining and not obj.total_derived
    for other in (text, proxy):
        assert (other.remaining, other.total, other.percent, other.total_derived) == (
            obj.remaining, obj.total, obj.percent, False)
        assert _facts(other) == _facts(obj)
    assert text.fields == obj.fields and [k for k, _ in linkr.fields] == [k for k, _ in obj.fields]
    assert proxy.read_at == datetime(2025, 12, 31, 23, tzinfo=timezone.utc) and obj.read_at == NOW

    # LinkrAPI: hours from H:MM:SS (to the second), the total derived from the plan and labelled.
    assert _facts(linkr) == _facts(obj)
    assert linkr.remaining.unit == "hours" and linkr.remaining.hours == pytest.approx(remaining.hours, abs=1e-3)
    assert linkr.total_derived and linkr.total.hours == pytest.approx(obj.total.hours)
    assert linkr.percent == pytest.approx(obj.percent, abs=0.05)
    assert linkr.headline.replace("~", "") == f"{linkr.remaining} of {linkr.total} left"


# --- nothing but typed errors --------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)
# Text built from the pieces the parser looks for, mixed with arbitrary unicode.
pieces = st.sampled_from([
    "**", "__", "`", ":", ": ", "\n", "\r\n", " ", "> ", "- ", "(", ")", "/", "%", "<t:", ">", "-", ".", ",",
    "Fast Time Remaining", "fast_time_remaining", "Subscription", "Job Mode", "renews next on", "hours", "minutes",
    "Standard", "Basic", "Mega", "Pro", "NO_FAST_HOURS", "12.06/15.0", "2:45:30", "9" * 40, "1e309", "<t:99999999999>",
]) | st.text(max_size=6)
info_texts = st.lists(pieces, max_size=25).map("".join)
info_keys = st.sampled_from([*DISPLAY_NAMES, *map(_snake, DISPLAY_NAMES), *map(_camel, DISPLAY_NAMES)]) | st.text(max_size=12)
info_values = info_texts | json_values
info_objects = st.dictionaries(info_keys, info_values, max_size=8)
proxy_objects = st.fixed_dictionaries(
    {},
    optional={"properties": info_objects | json_values, "displays": st.dictionaries(
                  st.sampled_from(["subscribePlan", "billedWay", "renewDate", "mode"]) | st.text(max_size=8),
                  info_values, max_size=4) | json_values,
              "infoUpdated": info_texts | json_values | st.datetimes().map(datetime.isoformat),
              "fastTimeRemaining": info_values, "userToken": st.text(max_size=8)},
).filter(bool)
anything = json_values | info_texts | info_objects | proxy_objects


def _exercise(report: QuotaReport) -> None:
    """Everything a renderer touches works on the report."""
    json.dumps(report.to_json())
    report.headline, report.level, report.progress_bar(), report.other_fields
    for when in (report.read_at, report.renewal):
        if when is not None:
            when.astimezone(), when.timestamp(), when.isoformat()
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in report.fields)
    assert len({k for k, _ in report.fields}) == len(report.fields)
    if report.total_derived:
        assert report.total is not None and report.remaining is not None and 0 <= report.percent <= 100
    if report.percent is not None:
        assert report.percent == report.percent  # never NaN


@settings(max_examples=200, deadline=None)
@given(anything)
def test_parse_info_raises_only_typed_errors(payload):
    try:
        report = parse_info(payload, read_at=NOW)
    except QuotaError:
        return
    _exercise(report)


@settings(max_examples=200, deadline=None)
@given(anything, st.sampled_from(["originatingMessageId", "messageId", "other"]),
       json_values | st.datetimes(timezones=st.just(timezone.utc)).map(datetime.isoformat))
def test_parse_result_raises_only_typed_errors(content, id_key, responded):
    try:
        report = parse_result({id_key: content, "content": content, "responseAt": responded}, read_at=NOW)
    except QuotaError:
        return
    _exercise(report)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])))
def test_any_info_updated_is_a_usable_time_or_ignored(when):
    report = parse_info({"properties": {"Job Mode": "Fast"}, "infoUpdated": when.isoformat()}, read_at=NOW)
    assert report.read_at in (NOW, when)
    _exercise(report)
