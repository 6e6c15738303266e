"""LinkrProvider against the LinkrAPI fake on 127.0.0.1 (tests/fakes/providers.py): real aiohttp on both
sides, every answer shape and error of shared/providers.md."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pytest

from bot.errors import AccountProblem, BadResponse, BadToken, TimedOut, UpstreamUnavailable
from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.linkr import LinkrProvider
from tests.fakes.providers import FakeAccount, LinkrFake, Scripted, garbage, linkr_error
from tests.secrets import ALL_TEST_SECRETS

LINKR_TOKEN = ALL_TEST_SECRETS["LINKR_API_KEY"]
FAST_POLL = PollPolicy(initial=0.05, factor=1.5, cap=0.2, jitter=0.1)


@pytest.fixture(autouse=True)
def _no_key_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    assert LINKR_TOKEN not in caplog.text


@pytest.fixture
async def make():
    fakes: list[LinkrFake] = []
    providers: list[LinkrProvider] = []

    async def factory(*, fake: LinkrFake | None = None, **options) -> tuple[LinkrFake, LinkrProvider]:
        fake = fake or LinkrFake(require_token=LINKR_TOKEN, delay=0.05)
        await fake.start()
        fakes.append(fake)
        kwargs = dict(base_url=fake.base_url, token=LINKR_TOKEN, poll=FAST_POLL, limiter=AskLimiter(0.01),
                      poll_timeout=3.0)
        kwargs.update(options)
        provider = LinkrProvider(**kwargs)
        providers.append(provider)
        return fake, provider

    yield factory
    for provider in providers:
        await provider.close()
    for fake in fakes:
        await fake.stop()


def _data(account: FakeAccount) -> dict:
    return LinkrFake(account=account).render(account)["data"]


async def test_one_get_with_the_key_in_the_header_and_the_figures_of_the_account(make):
    fake, provider = await make()
    before = datetime.now(timezone.utc)
    report = await provider.fetch()
    after = datetime.now(timezone.utc)

    assert len(fake.requests) == 1
    ask = fake.requests[0]
    assert (ask.method, ask.path, ask.query) == ("GET", "/api/v1/info", {})
    assert ask.headers["Authorization"] == f"Bearer {LINKR_TOKEN}"
    assert LINKR_TOKEN not in ask.path and LINKR_TOKEN not in repr(provider)

    acc = fake.account
    assert dict(report.fields)["Fast Time Remaining"] == acc.remaining_hms() == "12:03:36"
    assert report.remaining.value == pytest.approx(acc.remaining_hours()) and report.remaining.unit == "hours"
    # no total in the answer: the Standard plan's 15 h, labelled as derived
    assert report.total_derived and report.total.value == 15 and report.percent == pytest.approx(80.4)
    assert report.headline == "12.06 h of ~15 h left"
    assert (report.job_mode, report.plan, report.plan_status) == ("Fast", "Standard", "Active monthly")
    assert int(report.renewal.timestamp()) == acc.renews_at()
    assert dict(report.fields)["Fast Usage"] == acc.fast_usage
    assert before <= report.read_at <= after
    assert provider.last_stats["polls"] == 0  # no polling: the one call is the ask


async def test_trial_has_no_total_and_sloppy_answers_are_read(make):
    fake, provider = await make(fake=LinkrFake(account=FakeAccount.trial(), delay=0, sloppy=True))
    report = await provider.fetch()
    assert fake.asks[0].headers["Authorization"] == f"Bearer {LINKR_TOKEN}"  # sent even when not checked
    assert report.remaining.value == pytest.approx(25 / 60, abs=1e-4)
    assert report.total is None and report.percent is None and not report.total_derived
    assert report.headline == "0.42 h left"
    assert dict(report.fields)["Stealth Mode"] == "false" and dict(report.fields)["Running Jobs"] == "None"


async def test_basic_plan_derives_its_200_minutes(make):
    fake, provider = await make(fake=LinkrFake(account=FakeAccount.basic(), delay=0))
    report = await provider.fetch()
    assert dict(report.fields)["Fast Time Remaining"] == "3:19:00"
    assert report.remaining.value == pytest.approx(199 / 60, abs=1e-4)
    assert report.total_derived and report.total.hours == pytest.approx(200 / 60)
    assert report.percent == pytest.approx(99.5) and report.plan == "Basic"


@pytest.mark.parametrize("shape", ["no status", "Success", "flat", "data as text"])
async def test_lenient_success_shapes(make, shape):
    fake, provider = await make()
    data = _data(fake.account)
    body = {"no status": {"data": data}, "Success": {"status": "Success", "data": data},
            "flat": {"status": "SUCCESS", **data},
            "data as text": {"status": "SUCCESS", "data": fake.account.info_text()}}[shape]
    fake.ask_script.append(Scripted(200, body))
    report = await provider.fetch()
    assert report.remaining.value == pytest.approx(12.06)
    assert report.plan == "Standard" and report.job_mode == "Fast"


async def test_401_is_a_bad_key_naming_the_setting_without_retry(make):
    fake, provider = await make()
    provider = LinkrProvider(base_url=fake.base_url, token="lkr_wrong", poll=FAST_POLL, limiter=AskLimiter(0.01),
                             poll_timeout=3.0)
    try:
        with pytest.raises(BadToken) as err:
            await provider.fetch()
    finally:
        await provider.close()
    assert "LinkrAPI" in err.value.user_message and "LINKR_API_KEY" in err.value.user_message
    assert "Invalid API key" in err.value.detail
    assert len(fake.asks) == 1


async def test_502_is_retried_then_the_reading_arrives(make):
    fake, provider = await make()
    fake.ask_script.extend([linkr_error(502), garbage(502)])  # JSON and an HTML gateway page
    report = await provider.fetch()
    assert report.remaining.value == pytest.approx(12.06)
    assert len(fake.asks) == 3 and fake.account.readings == 1


async def test_502_until_the_deadline_says_discord_or_midjourney_timed_out(make):
    fake, provider = await make(poll_timeout=3.0)
    fake.ask_script.extend(linkr_error(502) for _ in range(100))
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as err:
        await provider.fetch()
    assert time.monotonic() - started < 4.5
    assert "Discord or Midjourney timed out" in err.value.user_message
    assert len(fake.asks) >= 3 and fake.account.readings == 0


async def test_a_slow_call_is_not_cut_and_a_call_past_the_deadline_times_out(make):
    # The real call blocks 5–15 s: the default request timeout lets the slowest finish.
    assert LinkrProvider(token=LINKR_TOKEN)._request_timeout > 15
    fake, provider = await make(fake=LinkrFake(require_token=LINKR_TOKEN, delay=1.2))
    started = time.monotonic()
    report = await provider.fetch()
    assert time.monotonic() - started >= 1.2 and len(fake.asks) == 1
    assert report.remaining.value == pytest.approx(12.06)
    fake.delay = 5.0
    provider.poll_timeout = 0.6
    with pytest.raises(TimedOut):
        await provider.fetch()
    assert len(fake.asks) == 2


async def test_garbage_is_a_bad_response(make):
    fake, provider = await make()
    fake.ask_script.append(garbage(200))
    with pytest.raises(BadResponse):
        await provider.fetch()
    for body in ({"status": "SUCCESS", "data": None}, {"status": "SUCCESS", "data": {}}, ["SUCCESS"],
                 {"status": "SUCCESS"}):
        fake.ask_script.append(Scripted(200, body))
        with pytest.raises(BadResponse):
            await provider.fetch()
    assert len(fake.asks) == 5  # none retried


async def test_linkr_errors_show_its_message_clipped(make):
    fake, provider = await make()
    long = "Your Midjourney account is not connected to LinkrAPI; reconnect it in the dashboard. " * 10
    fake.ask_script.append(Scripted(200, {"status": "ERROR", "message": long}))
    with pytest.raises(UpstreamUnavailable) as err:
        await provider.fetch()
    sentence = err.value.user_message
    assert sentence.startswith("LinkrAPI refused the request: Your Midjourney account is not connected")
    assert len(sentence) < 200 and "\n" not in sentence

    fake.ask_script.append(linkr_error(400, "Bad request: unsupported plan"))
    with pytest.raises(UpstreamUnavailable) as err:
        await provider.fetch()
    assert err.value.user_message == "LinkrAPI refused the request: Bad request: unsupported plan"

    fake.ask_script.append(Scripted(200, {"status": "failed", "message": "NO_FAST_HOURS"}))
    with pytest.raises(AccountProblem) as err:
        await provider.fetch()
    assert err.value.user_message == "This Midjourney account has no fast time left."
    assert len(fake.asks) == 3  # final: not retried


async def test_a_message_echoing_the_key_never_shows_it(make):
    fake, provider = await make()
    fake.ask_script.append(linkr_error(403, f"Key {LINKR_TOKEN} is suspended"))
    with pytest.raises(BadToken) as err:
        await provider.fetch()
    assert LINKR_TOKEN not in str(err.value) and "***" in err.value.detail
