"""The forecast maths (bot/forecast.py): exact examples, then hypothesis properties."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.forecast import NOT_ENOUGH_REASON, Forecast, Sample, combine, forecast, pace_line

DAY = 86400.0
HOUR = 3600.0
T0 = 1_700_000_000.0
PROPS = settings(max_examples=200, deadline=None)


def ts(month: int, day: int, hour: int = 0) -> float:
    return datetime(2024, month, day, hour, tzinfo=timezone.utc).timestamp()


DEC8 = ts(12, 8)


# ---- examples ---------------------------------------------------------------------------------

def test_runs_out_before_renewal_sentence():
    samples = [Sample(ts(11, 10), 40.0, 30.0, DEC8),   # older than the window: ignored
               Sample(ts(11, 20), 24.7, 30.0, DEC8),
               Sample(ts(11, 27), 11.4, 30.0, DEC8)]
    f = forecast(samples, now=ts(11, 27, 1))
    assert f.enough and f.reason is None
    assert f.pace_per_day == pytest.approx(1.9) and f.window_days == pytest.approx(7.0)
    assert f.remaining == 11.4 and f.renewal == DEC8
    assert f.runs_out_at == pytest.approx(ts(12, 3))
    assert f.lasts_to_renewal is False and f.spare_at_renewal is None
    assert f.short_by_days == pytest.approx(5.0)
    assert f.cycle_start == ts(11, 10)
    assert pace_line(f) == "Using 1.9 h/day (7 days) → runs out in about 6 days (Dec 3), 5 days before renewal"


def test_runs_out_with_renewal_unknown():
    f = forecast([Sample(ts(11, 20), 24.7), Sample(ts(11, 27), 11.4)], now=ts(11, 27))
    assert f.renewal is None and f.lasts_to_renewal is None and f.short_by_days is None
    assert pace_line(f) == "Using 1.9 h/day (7 days) → runs out in about 6 days (Dec 3)"


def test_lasts_to_renewal_with_spare_after_a_renewal():
    samples = [Sample(ts(11, 20), 3.0, 15.0, ts(11, 25)),   # the previous cycle
               Sample(ts(11, 25, 1), 9.2, 15.0, DEC8),     # past the announced renewal: new cycle
               Sample(ts(11, 28, 1), 8.0, 15.0, DEC8)]
    f = forecast(samples, now=ts(11, 28, 2))
    assert f.cycle_start == ts(11, 25)
    assert f.pace_per_day == pytest.approx(0.4) and f.window_days == pytest.approx(3.0)
    assert f.lasts_to_renewal is True and f.short_by_days is None
    assert f.spare_at_renewal == pytest.approx(8.0 - 0.4 * (DEC8 - ts(11, 28, 1)) / DAY)
    assert pace_line(f) == "Using 0.4 h/day (3 days) → lasts to the renewal on Dec 8 with about 4 h to spare"


def test_not_using_fast_time():
    f = forecast([Sample(ts(11, 26), 5.0, renewal=DEC8), Sample(ts(11, 28), 5.0, renewal=DEC8)], now=ts(11, 28))
    assert f.pace_per_day == 0.0 and f.runs_out_at is None
    assert f.lasts_to_renewal is True and f.spare_at_renewal == 5.0
    assert pace_line(f) == "Not using fast time lately (2 days) → lasts to the renewal on Dec 8"


def test_not_enough_history():
    for samples in ([], [Sample(ts(11, 26), 5.0)],
                    [Sample(ts(11, 26), 5.0), Sample(ts(11, 26) + 59 * 60, 4.0)]):
        f = forecast(samples, now=ts(11, 27))
        assert f == Forecast(False, NOT_ENOUGH_REASON, None, None, None, None, None, None, None, None, None)
        assert pace_line(f) == "Not enough history yet for a forecast (needs 2 readings at least 1 h apart)"


def test_runs_out_within_a_day_says_hours():
    f = forecast([Sample(ts(11, 26), 3.0, renewal=DEC8), Sample(ts(11, 27), 1.0, renewal=DEC8)], now=ts(11, 27))
    assert f.pace_per_day == pytest.approx(2.0)
    assert pace_line(f) == "Using 2.0 h/day (1 day) → runs out in about 12 hours (Nov 27), 11 days before renewal"


def test_small_pace_has_two_decimals_and_dates_follow_tz():
    f = forecast([Sample(ts(11, 20), 1.0), Sample(ts(11, 27), 0.51)], now=ts(11, 27))
    assert pace_line(f).startswith("Using 0.07 h/day (7 days) → runs out in about 7 days (Dec 4)")
    g = forecast([Sample(ts(11, 20), 24.7), Sample(ts(11, 27), 11.4)], now=ts(11, 27))
    assert "(Dec 2)" in pace_line(g, ZoneInfo("America/Los_Angeles"))


def test_refill_restarts_the_cycle():
    samples = [Sample(ts(11, 20), 10.0), Sample(ts(11, 22), 2.0),   # heavy use, then hours bought
               Sample(ts(11, 23), 12.0), Sample(ts(11, 25), 11.0)]
    f = forecast(samples, now=ts(11, 25))
    assert f.cycle_start == ts(11, 23) and f.pace_per_day == pytest.approx(0.5)
    small_rise = [Sample(ts(11, 20), 10.0), Sample(ts(11, 22), 10.04), Sample(ts(11, 24), 9.0)]
    g = forecast(small_rise, now=ts(11, 24))
    assert g.cycle_start == ts(11, 20) and g.pace_per_day == pytest.approx(0.25), "noise is not a refill"


def test_renewal_moving_forward_restarts_the_cycle():
    samples = [Sample(ts(11, 20), 2.0, renewal=DEC8), Sample(ts(11, 21), 1.0, renewal=DEC8),
               Sample(ts(11, 22), 15.0, renewal=DEC8 + 14 * DAY), Sample(ts(11, 24), 14.0, renewal=DEC8 + 14 * DAY)]
    f = forecast(samples, now=ts(11, 24))
    assert f.cycle_start == ts(11, 22) and f.pace_per_day == pytest.approx(0.5)
    assert f.renewal == DEC8 + 14 * DAY


def test_long_gap_measures_between_the_readings():
    f = forecast([Sample(ts(11, 1), 20.0), Sample(ts(11, 11), 15.0)], now=ts(11, 11))
    assert f.pace_per_day == pytest.approx(0.5) and f.window_days == pytest.approx(10.0)
    assert pace_line(f).startswith("Using 0.5 h/day (10 days)")


def test_clock_skew_and_duplicates():
    samples = [Sample(ts(11, 27), 11.4), Sample(ts(11, 20), 99.0), Sample(ts(11, 20), 24.7),
               Sample(ts(11, 27, 2), 0.0),        # read by a clock 2 h ahead: ignored
               Sample(math.nan, 1.0), Sample(ts(11, 21), -3.0), Sample(ts(11, 22), math.inf)]
    f = forecast(samples, now=ts(11, 27))
    assert f.pace_per_day == pytest.approx(1.9) and f.remaining == 11.4


def test_already_out():
    f = forecast([Sample(ts(11, 26), 2.0, renewal=DEC8), Sample(ts(11, 27), 0.0, renewal=DEC8)], now=ts(11, 27))
    assert f.runs_out_at == ts(11, 27) and f.lasts_to_renewal is False
    assert pace_line(f) == "Using 2.0 h/day (1 day) → already out of fast time, 11 days before renewal"


def test_combine_pools_the_accounts():
    a = forecast([Sample(ts(11, 20), 24.7, renewal=DEC8), Sample(ts(11, 27), 11.4, renewal=DEC8)], now=ts(11, 27))
    b = forecast([Sample(ts(11, 24), 10.0, renewal=ts(12, 20)), Sample(ts(11, 27), 8.6, renewal=ts(12, 20))],
                 now=ts(11, 27))
    lonely = forecast([Sample(ts(11, 27), 30.0)], now=ts(11, 27))
    pool = combine([a, b, lonely], now=ts(11, 27))
    assert pool.enough and pool.reason == "1 account without enough history left out"
    assert pool.pace_per_day == pytest.approx(1.9 + 1.4 / 3) and pool.remaining == pytest.approx(20.0)
    assert pool.renewal == DEC8 and pool.window_days == pytest.approx(3.0) and pool.cycle_start == ts(11, 24)
    days = 20.0 / (1.9 + 1.4 / 3)
    assert pool.runs_out_at == pytest.approx(ts(11, 27) + days * DAY)
    assert pool.lasts_to_renewal is False and pool.short_by_days == pytest.approx(11 - days)
    assert pace_line(pool) == "Using 2.4 h/day (3 days) → runs out in about 8 days (Dec 5), 3 days before renewal"
    none = combine([lonely], now=ts(11, 27))
    assert not none.enough and none.pace_per_day is None and pace_line(none).startswith("Not enough history")
    assert not combine([], now=ts(11, 27)).enough


def test_bad_window_is_a_programming_error():
    with pytest.raises(ValueError):
        forecast([], now=T0, window_days=0)


# ---- properties -------------------------------------------------------------------------------

gaps = st.floats(min_value=60.0, max_value=5 * DAY)
drops = st.floats(min_value=0.0, max_value=3.0)
maybe_renewal = st.one_of(st.none(), st.just(T0 + 400 * DAY))


@st.composite
def decreasing(draw, start_at=T0, min_size=2, max_size=15, renewal=None):
    """A non-increasing series (no refill, no renewal passed)."""
    n = draw(st.integers(min_size, max_size))
    left = draw(st.floats(min_value=0.0, max_value=500.0))
    at, out = start_at, []
    for i in range(n):
        if i:
            at += draw(gaps)
            left = max(0.0, left - draw(drops))
        out.append(Sample(at, left, None, renewal))
    return out


def spans_an_hour(samples):
    return len(samples) >= 2 and samples[-1].at - samples[0].at >= HOUR


@PROPS
@given(decreasing(), maybe_renewal)
def test_decreasing_series_has_a_non_negative_pace(samples, renewal):
    samples = [Sample(s.at, s.remaining, None, renewal) for s in samples]
    f = forecast(samples, now=samples[-1].at)
    assert f.enough == spans_an_hour(samples)
    if f.enough:
        assert f.pace_per_day >= 0 and f.remaining == samples[-1].remaining
        assert f.runs_out_at is None or f.runs_out_at >= samples[-1].at
        if f.remaining > 0 and f.pace_per_day > 0:
            assert f.runs_out_at > samples[-1].at or f.runs_out_at == pytest.approx(samples[-1].at)
        in_window = [s for s in samples if samples[-1].at - 7 * DAY <= s.at <= samples[-1].at - HOUR]
        assert f.window_days <= 7.0 or not in_window, "beyond the window only when it holds no usable start"
        assert isinstance(pace_line(f), str)


@PROPS
@given(st.floats(min_value=0.0, max_value=1000.0), st.lists(gaps, min_size=1, max_size=10), maybe_renewal)
def test_constant_series_never_runs_out(left, steps, renewal):
    at = [T0]
    for step in steps:
        at.append(at[-1] + step)
    samples = [Sample(t, left, None, renewal) for t in at]
    f = forecast(samples, now=at[-1])
    if not spans_an_hour(samples):
        assert not f.enough
        return
    assert f.pace_per_day == 0.0 and f.runs_out_at is None and f.short_by_days is None
    if renewal is None:
        assert f.lasts_to_renewal is None
    else:
        assert f.lasts_to_renewal is True and f.spare_at_renewal == left
        assert pace_line(f).startswith("Not using fast time lately")


@PROPS
@given(decreasing(min_size=1), st.floats(min_value=0.1, max_value=300.0), st.data())
def test_only_the_part_after_a_refill_counts(head, rise, data):
    start = head[-1].at + data.draw(gaps)
    tail = data.draw(decreasing(start_at=start))
    lift = head[-1].remaining + rise - tail[0].remaining       # the tail starts `rise` above the head's end
    tail = [Sample(s.at, s.remaining + lift, None, None) for s in tail]
    whole = forecast(head + tail, now=tail[-1].at)
    assert whole == forecast(tail, now=tail[-1].at)
    if whole.enough:
        assert whole.cycle_start == tail[0].at


@PROPS
@given(decreasing(min_size=1, renewal=T0 + 40 * DAY), st.floats(min_value=0.0, max_value=3 * DAY),
       st.booleans(), st.data())
def test_a_renewal_resets_the_cycle(head, after, new_date_known, data):
    renewal = T0 + 40 * DAY
    head = [s for s in head if s.at < renewal] or [Sample(T0, 5.0, None, renewal)]
    next_renewal = renewal + 30 * DAY if new_date_known else None
    tail = data.draw(decreasing(start_at=max(renewal, head[-1].at + 1) + after, renewal=next_renewal))
    tail = [s for s in tail if s.at < renewal + 30 * DAY]
    whole = forecast(head + tail, now=tail[-1].at)
    alone = forecast(tail, now=tail[-1].at)
    assert whole.enough == alone.enough
    if whole.enough:
        assert whole.cycle_start == renewal
        assert (whole.pace_per_day, whole.window_days, whole.remaining, whole.runs_out_at, whole.renewal) == (
            alone.pace_per_day, alone.window_days, alone.remaining, alone.runs_out_at, alone.renewal)
        assert whole.renewal == next_renewal


@PROPS
@given(st.floats(min_value=0.0, max_value=200.0), st.floats(min_value=0.0, max_value=200.0),
       st.floats(min_value=HOUR, max_value=60 * DAY))
def test_a_single_reading_or_a_pair_far_apart(left, spent, apart):
    assert not forecast([Sample(T0, left)], now=T0).enough
    f = forecast([Sample(T0, left + spent), Sample(T0 + apart, left)], now=T0 + apart)
    assert f.enough and f.pace_per_day == pytest.approx(spent / (apart / DAY))
    assert f.window_days == pytest.approx(apart / DAY)


@st.composite
def messy(draw):
    """Distinct times, any remaining (refills), renewals announced, moved and passed."""
    times = draw(st.lists(st.floats(min_value=T0, max_value=T0 + 90 * DAY), min_size=0, max_size=20, unique=True))
    out = []
    for t in times:
        renewal = draw(st.one_of(st.none(), st.sampled_from([T0 + 20 * DAY, T0 + 50 * DAY, T0 + 80 * DAY])))
        out.append(Sample(t, draw(st.floats(min_value=0.0, max_value=30.0)), 30.0, renewal))
    return out


@PROPS
@given(messy(), st.data())
def test_order_does_not_matter(samples, data):
    now = T0 + 91 * DAY
    doubled = samples + samples[: len(samples) // 2]       # exact duplicates too
    shuffled = data.draw(st.permutations(doubled))
    f = forecast(sorted(samples, key=lambda s: s.at), now)
    assert forecast(shuffled, now) == f
    if f.enough:
        assert f.pace_per_day >= 0 and f.window_days > 0


garbage_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 5e-324]))
garbage_sample = st.builds(Sample, garbage_float, garbage_float, st.one_of(st.none(), garbage_float),
                           st.one_of(st.none(), garbage_float))


@PROPS
@given(st.lists(garbage_sample, max_size=12), garbage_float,
       st.floats(min_value=0.01, max_value=1e6), st.sampled_from([timezone.utc, ZoneInfo("Asia/Tokyo")]))
def test_garbage_never_raises(samples, now, window, tz):
    f = forecast(samples, now, window_days=window)
    assert isinstance(pace_line(f, tz), str)
    pool = combine([f, f], now)
    assert isinstance(pace_line(pool, tz), str)
    if f.enough:
        assert f.pace_per_day >= 0 and math.isfinite(f.pace_per_day)


@PROPS
@given(st.data(), maybe_renewal)
def test_readings_older_than_the_window_do_not_change_the_pace(data, renewal):
    latest_at = T0 + 30 * DAY
    offsets = sorted(data.draw(st.lists(st.floats(min_value=0.0, max_value=7 * DAY), min_size=1, max_size=10,
                                        unique=True)), reverse=True)
    offsets = [o for o in offsets if o > 0] + [0.0]
    if offsets[0] < HOUR:
        offsets.insert(0, data.draw(st.floats(min_value=HOUR, max_value=7 * DAY)))
    window = data.draw(decreasing(min_size=len(offsets), max_size=len(offsets)))
    window = [Sample(latest_at - o, s.remaining, None, renewal) for o, s in zip(offsets, window)]
    old_offsets = data.draw(st.lists(st.floats(min_value=7 * DAY + 1, max_value=25 * DAY), min_size=1,
                                     max_size=8, unique=True))
    old, left = [], window[0].remaining
    for o in sorted(old_offsets):                 # going back in time, fast time was higher (no refill)
        left += data.draw(drops)
        old.insert(0, Sample(latest_at - o, left, None, renewal))
    alone = forecast(window, now=latest_at)
    whole = forecast(old + window, now=latest_at)
    assert alone.enough and whole.enough
    assert whole.pace_per_day == alone.pace_per_day and whole.window_days == alone.window_days <= 7.0
    assert (whole.runs_out_at, whole.lasts_to_renewal, whole.spare_at_renewal) == (
        alone.runs_out_at, alone.lasts_to_renewal, alone.spare_at_renewal)
