"""MjproxyProvider against the midjourney-proxy fake on 127.0.0.1 (tests/fakes/providers.py): sync then
read, the provider's own keeping of the proxy's throttle, refused syncs, every error of shared/providers.md."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

import aiohttp
import pytest

from bot.errors import BadResponse, BadToken, TimedOut, UpstreamUnavailable
from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.mjproxy import MjproxyProvider, NoReading, UnknownProxyAccount
from tests.fakes.providers import MjproxyFake, Scripted, garbage
from tests.secrets import ALL_TEST_SECRETS

MJ_SECRET = ALL_TEST_SECRETS["MJPROXY_API_SECRET"]
FAST_POLL = PollPolicy(initial=0.05, factor=1.5, cap=0.2, jitter=0.1)


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    assert MJ_SECRET not in caplog.text


@pytest.fixture
async def make():
    fakes: list[MjproxyFake] = []
    providers: list[MjproxyProvider] = []

    async def factory(*, fake: MjproxyFake | None = None, **options) -> tuple[MjproxyFake, MjproxyProvider]:
        if fake is None:
            fake = MjproxyFake(require_secret=MJ_SECRET, sync_delay=0.05)
        if not fake.base_url:
            await fake.start()
            fakes.append(fake)
        kwargs = dict(base_url=fake.base_url, token=MJ_SECRET, account_id=fake.account_id, poll=FAST_POLL,
                      limiter=AskLimiter(0.01), poll_timeout=3.0)
        kwargs.update(options)
        provider = MjproxyProvider(**kwargs)
        providers.append(provider)
        return fake, provider

    yield factory
    for provider in providers:
        await provider.close()
    for fake in fakes:
        await fake.stop()


def _routes(fake: MjproxyFake) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests]


def _age(report) -> float:
    return (datetime.now(timezone.utc) - report.read_at).total_seconds()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_sync_then_read_with_the_secret_header_only(make):
    fake, provider = await make()
    fake.account.set_remaining(10.5)  # the stored reading (10 min old) still says 12.06
    before = datetime.now(timezone.utc)
    report = await provider.fetch()

    sync, read = f"/mj/admin/account-sync/{fake.account_id}", f"/mj/admin/account/{fake.account_id}"
    assert _routes(fake) == [("POST", sync), ("GET", read)]
    for request in fake.requests:
        assert request.headers["Mj-Api-Secret"] == MJ_SECRET and "Authorization" not in request.headers
        assert MJ_SECRET not in request.path and not request.query
    assert MJ_SECRET not in repr(provider) and fake.account_id in repr(provider)

    acc = fake.account
    assert (report.remaining.value, report.total.value, report.percent) == (10.5, 15.0, 70.0)
    assert not report.total_derived and report.remaining.hours == pytest.approx(acc.remaining_hours())
    assert (report.job_mode, report.plan, report.plan_status) == ("Fast", "Standard", "Active monthly")
    assert int(report.renewal.timestamp()) == acc.renews_at()
    assert dict(report.fields)["Turbo Usage"] == acc.turbo_usage
    assert before.timestamp() - 0.01 <= report.read_at.timestamp() <= time.time()  # infoUpdated of the sync
    assert provider.last_stats["polls"] == 1


async def test_a_second_reading_within_the_window_reads_without_syncing(make, caplog):
    fake, provider = await make(fake=MjproxyFake(require_secret=MJ_SECRET, sync_delay=0.02, throttle_scale=0.001),
                                min_sync_interval=0.3)  # the proxy's 5 minutes → 0.3 s on both sides
    first = await provider.fetch()
    fake.account.set_remaining(9.0)
    second = await provider.fetch()
    assert [m for m, _ in _routes(fake)] == ["POST", "GET", "GET"]
    assert second.read_at == first.read_at and second.remaining.value == 12.06  # the same stored reading
    assert "reading without a sync" in caplog.text
    await asyncio.sleep(0.32)
    third = await provider.fetch()
    assert [m for m, _ in _routes(fake)] == ["POST", "GET", "GET", "POST", "GET"]
    assert third.remaining.value == 9.0 and third.read_at > first.read_at
    assert len(fake.accounts[fake.account_id].syncs) == 2  # both accepted: never asked for a refused one


async def test_the_provider_keeps_the_whole_throttle_of_the_proxy(make):
    """1 per 5 min, 2 per 10, 3 per 30, 5 per hour: on a shared fake clock, the provider syncs exactly when
    the proxy would accept it, and reads the stored account otherwise."""
    clock = FakeClock()
    fake, provider = await make(fake=MjproxyFake(sync_delay=0.0, clock=clock), clock=clock)
    plan = [(0, True), (299, False), (1, True), (300, True), (300, False), (900, True), (300, True),
            (300, False), (1200, True)]
    synced = []
    for step, _ in plan:
        clock.now += step
        posts = len(fake.asks)
        await provider.fetch()
        synced.append(len(fake.asks) > posts)
    assert synced == [ok for _, ok in plan]
    assert len(fake.asks) == len(fake.accounts[fake.account_id].syncs) == 6  # not one sync refused


async def test_a_refused_sync_returns_the_stored_reading_with_its_age(make, caplog):
    fake, provider = await make(fake=MjproxyFake(require_secret=MJ_SECRET, info_age=1800,
                                                 refuse_sync="Sync too frequent: at most 1 per 5 minutes"))
    fake.account.set_remaining(3.0)  # what a sync would read now; the proxy holds the older 12.06
    report = await provider.fetch()
    assert report.remaining.value == 12.06 and report.percent == 80.37
    assert _age(report) == pytest.approx(1800, abs=5)
    assert "sync refused" in caplog.text and "1800 s old" in caplog.text
    await provider.fetch()  # a refused sync is not remembered as one: the next reading tries again
    assert [m for m, _ in _routes(fake)] == ["POST", "GET", "POST", "GET"]


async def test_a_sync_refused_as_concurrent_returns_the_stored_reading(make):
    fake, provider = await make(fake=MjproxyFake(require_secret=MJ_SECRET, sync_delay=0.5, info_age=120))
    other = aiohttp.ClientSession(headers={"Mj-Api-Secret": MJ_SECRET})
    try:  # another client (the proxy's admin page) is syncing the account
        running = asyncio.create_task(other.post(f"{fake.base_url}/mj/admin/account-sync/{fake.account_id}"))
        await fake.changes.wait(lambda: fake.asks or None, timeout=2)
        report = await provider.fetch()
        assert _age(report) == pytest.approx(120, abs=5) and report.remaining.value == 12.06
        (await running).release()
    finally:
        await other.close()


@pytest.mark.parametrize("style", ["epoch_ms", "offset"])
async def test_sloppy_info_updated_forms_keep_the_readings_age(make, style):
    fake, provider = await make(fake=MjproxyFake(info_age=3600, refuse_sync=True, time_style=style))
    report = await provider.fetch()
    assert _age(report) == pytest.approx(3600, abs=5) and report.read_at.tzinfo is not None
    assert report.remaining.value == 12.06


async def test_never_read_and_refused_says_so_with_the_proxys_message(make):
    fake, provider = await make(fake=MjproxyFake(info_age=None, refuse_sync="演示模式，禁止操作"), token=None)
    with pytest.raises(NoReading) as err:
        await provider.fetch()
    assert isinstance(err.value, UpstreamUnavailable)
    assert err.value.user_message == ("midjourney-proxy has not read this account's /info yet and refused to "
                                      "sync it now: 演示模式，禁止操作")
    for request in fake.requests:  # no secret configured: no auth header at all
        assert "Mj-Api-Secret" not in request.headers and "Authorization" not in request.headers


async def test_never_read_then_synced_reads_the_fresh_figures(make):
    fake, provider = await make(fake=MjproxyFake(info_age=None, sync_delay=0.02), token="")
    report = await provider.fetch()
    assert report.remaining.value == 12.06 and _age(report) < 5


async def test_wrong_or_missing_secret_is_a_bad_token_naming_it(make):
    fake, provider = await make(token="not-the-admin-secret")
    with pytest.raises(BadToken) as err:
        await provider.fetch()
    assert err.value.user_message == ("midjourney-proxy rejected the admin secret (MJPROXY_API_SECRET); ask the "
                                      "operator to check it.")
    assert len(fake.requests) == 1  # final: not retried
    _, provider = await make(fake=fake, token=None)
    with pytest.raises(BadToken) as err:
        await provider.fetch()
    assert "set MJPROXY_API_SECRET" in err.value.user_message
    assert "Mj-Api-Secret" not in fake.requests[-1].headers


async def test_an_unknown_account_names_the_setting(make):
    fake, provider = await make(account_id="999")
    with pytest.raises(UnknownProxyAccount) as err:
        await provider.fetch()
    assert "'999'" in err.value.user_message and "MJPROXY_ACCOUNT_ID" in err.value.user_message
    assert _routes(fake) == [("POST", "/mj/admin/account-sync/999")]
    # the trueai-org proxy's own words, as HTTP 200 or 400 with success=false
    for status, message in ((200, "账号不存在"), (400, "Account does not exist")):
        _, provider = await make(fake=fake)
        fake.ask_script.append(Scripted(status, {"success": False, "message": message}))
        with pytest.raises(UnknownProxyAccount):
            await provider.fetch()


async def test_5xx_is_retried_on_both_routes(make):
    fake, provider = await make(poll_timeout=12.0)  # three retries, each at least 1 s apart
    fake.ask_script.append(garbage(502))
    fake.poll_script.extend([Scripted(503, "Service Unavailable"), Scripted(500, {"success": False})])
    report = await provider.fetch()
    assert report.remaining.value == 12.06
    assert [m for m, _ in _routes(fake)] == ["POST", "POST", "GET", "GET", "GET"]


async def test_garbage_is_a_bad_response(make):
    fake, provider = await make()
    fake.poll_script.append(garbage(200))
    with pytest.raises(BadResponse):
        await provider.fetch()
    _, provider = await make(fake=fake)
    fake.ask_script.append(garbage(200, "<html>proxy login</html>"))
    with pytest.raises(BadResponse):
        await provider.fetch()
    _, provider = await make(fake=fake, min_sync_interval=3600)
    provider._syncs.append(provider._clock())  # as if it had just synced: read only
    fake.poll_script.append(Scripted(200, {"success": False, "message": "Internal error"}))
    with pytest.raises(UpstreamUnavailable) as err:
        await provider.fetch()
    assert err.value.user_message == "midjourney-proxy refused to show the account: Internal error"


async def test_a_slow_sync_within_the_deadline(make):
    fake, provider = await make(fake=MjproxyFake(require_secret=MJ_SECRET, sync_delay=1.0), poll_timeout=2.0)
    fake.account.set_remaining(7.25)
    started = time.monotonic()
    report = await provider.fetch()
    assert time.monotonic() - started >= 1.0 and report.remaining.value == 7.25
    assert [m for m, _ in _routes(fake)] == ["POST", "GET"]


async def test_a_sync_past_the_deadline_times_out_and_is_not_asked_again(make):
    fake, provider = await make(fake=MjproxyFake(require_secret=MJ_SECRET, sync_delay=3.0), poll_timeout=0.6)
    started = time.monotonic()
    with pytest.raises(TimedOut):
        await provider.fetch()
    assert time.monotonic() - started < 2.4  # the sync lasts 3 s
    # the proxy is still running that sync: the next reading reads the stored account, no second sync
    report = await provider.fetch()
    assert [m for m, _ in _routes(fake)] == ["POST", "GET"]
    assert _age(report) == pytest.approx(600, abs=5)
