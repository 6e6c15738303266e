"""The useapi.net v3 provider against ``UseapiFake`` on 127.0.0.1: real aiohttp on both sides, a fast
poll policy and a small ask limiter so the whole file runs in seconds."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from bot.errors import BadResponse, BadToken, RateLimited, TimedOut, user_sentence
from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.useapi import (
    ChannelNotFound, ChannelRequired, JobFailed, JobGone, ModerationBlocked, NoSubscription, UseapiProvider,
    UseapiRefused,
)
from bot.report import Amount, QuotaReport, parse_timestamp
from tests.fakes.providers import FakeAccount, Scripted, UseapiFake, UseapiJob, garbage, useapi_error
from tests.secrets import ALL_TEST_SECRETS

TOKEN = ALL_TEST_SECRETS["USEAPI_API_TOKEN"]
FAST = PollPolicy(initial=0.03, factor=1.5, cap=0.08, jitter=0.1, use_progress=False, min_delay=0.01)
ASK = "/v3/midjourney/jobs/info"
JOBS = "/v3/midjourney/jobs/"


@pytest.fixture(autouse=True)
def _no_useapi_token_in_logs(caplog):
    """tests/secrets.py does not know this module's token: check it here too."""
    yield
    assert TOKEN not in caplog.text


@pytest.fixture
async def make_fake():
    fakes: list[UseapiFake] = []

    async def start(**kw) -> UseapiFake:
        kw.setdefault("require_token", TOKEN)
        fake = UseapiFake(**kw)
        await fake.start()
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        await fake.stop()


@pytest.fixture
async def make_provider():
    providers: list[UseapiProvider] = []

    def factory(fake: UseapiFake, **kw) -> UseapiProvider:
        # the polled reading (USEAPI_STREAM=off); the streamed one is tests/e2e/test_useapi_stream.py's
        options = dict(base_url=fake.base_url, token=TOKEN, poll=FAST, limiter=AskLimiter(0.02), poll_timeout=3.0,
                       stream=False)
        options.update(kw)
        provider = UseapiProvider(**options)
        providers.append(provider)
        return provider

    yield factory
    for provider in providers:
        await provider.close()


def plant(fake: UseapiFake, jobid: str, *, done_in: float = 0.0, outcome: str = "completed") -> UseapiJob:
    """A job the fake serves under ``jobid`` (for receipts we script ourselves)."""
    now = time.monotonic()
    job = UseapiJob(jobid, {"stream": False}, time.time(), now, now, now, now + done_in, outcome)
    fake.jobs[jobid] = job
    return job


def assert_account(report, account: FakeAccount) -> None:
    """The report shows the account's own figures."""
    assert report.remaining.hours == pytest.approx(account.remaining_hours())
    assert report.total.hours == pytest.approx(account.total_hours())
    assert report.plan == account.plan() and report.job_mode == account.job_mode
    assert report.renewal == datetime.fromtimestamp(account.renews_at(), timezone.utc)
    assert dict(report.fields)["Lifetime Usage"] == account.lifetime_usage
    assert dict(report.fields)["Running Jobs"] == account.running_jobs


# --- the ask and the happy path ---------------------------------------------------------------------

@pytest.mark.parametrize("channel", [None, "1122334455"])
async def test_ask_is_exact_and_the_token_only_in_a_header(make_fake, make_provider, channel):
    fake = await make_fake(channel_ids=["1122334455", "99"] if channel else None, complete_after=0.1)
    report = await make_provider(fake, channel=channel).fetch()
    assert len(fake.asks) == 1
    ask = fake.asks[0]
    assert ask.method == "POST" and ask.path == ASK and ask.query == {}
    assert ask.headers["Authorization"] == f"Bearer {TOKEN}"
    assert ask.headers["Content-Type"] == "application/json"
    assert ask.body == ({"stream": False, "channel": channel} if channel else {"stream": False})
    jobid = next(iter(fake.jobs))
    assert ":" in jobid and report.message_id == jobid
    assert fake.polls and all(p.method == "GET" and p.path == JOBS + jobid for p in fake.polls)
    for request in fake.requests:
        assert TOKEN not in request.path and TOKEN not in str(request.query)


async def test_created_started_progress_completed_reads_the_account(make_fake, make_provider):
    account = FakeAccount()
    fake = await make_fake(account=account, complete_after=0.5)
    report = await make_provider(fake).fetch()
    job = next(iter(fake.jobs.values()))
    seen = [job.status(p.at) for p in fake.polls]  # what each poll was served
    assert {"started", "progress"} <= set(seen) and seen[-1] == "completed"
    assert seen.count("completed") == 1  # stopped at the end state
    assert report.remaining == Amount(12.06, "hours") and report.total == Amount(15.0, "hours")
    assert report.percent == 80.37 and not report.total_derived
    assert_account(report, account)
    assert report.read_at == parse_timestamp(job.updated(time.monotonic()))  # useapi's time, not ours


@pytest.mark.parametrize("pending", ["absent", "empty", "null"])
@pytest.mark.parametrize("shape", ["nested", "top"])
async def test_pending_response_is_never_a_result_and_both_done_shapes(make_fake, make_provider, pending, shape):
    fake = await make_fake(complete_after=0.25, pending_response=pending, done_shape=shape)
    report = await make_provider(fake).fetch()
    job = next(iter(fake.jobs.values()))
    assert sum(job.status(p.at) != "completed" for p in fake.polls) >= 2
    assert report.remaining == Amount(12.06, "hours") and report.percent == 80.37


async def test_basic_plan_in_minutes(make_fake, make_provider):
    account = FakeAccount.basic()
    report = await make_provider(await make_fake(account=account, complete_after=0.1)).fetch()
    assert report.remaining == Amount(199.0, "minutes") and report.total == Amount(200.0, "minutes")
    assert report.percent == 99.5 and report.plan == "Basic"
    assert_account(report, account)


async def test_trial_has_no_total(make_fake, make_provider):
    report = await make_provider(await make_fake(account=FakeAccount.trial(), complete_after=0.1)).fetch()
    assert report.remaining == Amount(25.0, "minutes")
    assert report.total is None and report.percent is None and not report.total_derived
    assert report.headline == "25 min left" and report.renewal is None


# --- jobs that end badly ----------------------------------------------------------------------------

@pytest.mark.parametrize("outcome, words", [
    ("failed", ["useapi.net could not read", "Discord did not answer the /info command"]),
    ("moderated", ["Midjourney moderation stopped", "moderation blocked the command"]),
])
async def test_failed_and_moderated_jobs(make_fake, make_provider, outcome, words):
    fake = await make_fake(complete_after=0.1, job_outcome=outcome)
    with pytest.raises(JobFailed) as info:
        await make_provider(fake).fetch()
    sentence = user_sentence(info.value)
    assert all(w in sentence for w in words) and TOKEN not in sentence
    assert info.value.code == ("moderated" if outcome == "moderated" else "job_failed")
    assert len(fake.asks) == 1  # an end state: no second ask, no more polls
    assert [next(iter(fake.jobs.values())).status(p.at) for p in fake.polls][-1] == outcome


async def test_failed_job_with_useapi_codes_gets_their_sentences(make_fake, make_provider):
    fake = await make_fake(complete_after=0.05, job_outcome="failed",
                           job_error={"error": "Pending moderation", "code": 596})
    with pytest.raises(ModerationBlocked):
        await make_provider(fake).fetch()
    fake.job_error = {"error": f"bad things {TOKEN}", "errorDetails": None, "code": 500}
    with pytest.raises(JobFailed) as info:
        await make_provider(fake).fetch()
    assert "bad things ***" in info.value.user_message and TOKEN not in str(info.value)


# --- error statuses ---------------------------------------------------------------------------------

async def test_bad_token_is_final(make_fake, make_provider):
    fake = await make_fake()
    with pytest.raises(BadToken) as info:
        await make_provider(fake, token="useapi-wrong-token").fetch()
    assert info.value.user_message == ("useapi.net rejected the API token (USEAPI_API_TOKEN); "
                                       "ask the operator to check it.")
    assert len(fake.asks) == 1 and not fake.polls
    fake.ask_script.append(useapi_error(403, "Forbidden"))
    with pytest.raises(BadToken):
        await make_provider(fake).fetch()


@pytest.mark.parametrize("where, answer, error, sentence", [
    ("ask", useapi_error(402), NoSubscription,
     "useapi.net says this account has no Midjourney subscription, or it expired."),
    ("ask", useapi_error(596), ModerationBlocked,
     "The Midjourney account is blocked by a pending moderation message: clear it in the useapi.net dashboard, "
     "then try again."),
    ("poll", useapi_error(402), NoSubscription, None),
    ("poll", useapi_error(404), JobGone, "useapi.net no longer knows the /info job (not found); try again."),
    ("poll", useapi_error(410), JobGone,
     "The /info job expired at useapi.net before quota-bot could read it; try again."),
    ("ask", useapi_error(400, "Prompt is invalid " + "x" * 400), UseapiRefused, None),
    ("ask", useapi_error(422, "Unprocessable"), UseapiRefused, "useapi.net refused the request: Unprocessable."),
])
async def test_final_errors(make_fake, make_provider, where, answer, error, sentence):
    fake = await make_fake()
    (fake.ask_script if where == "ask" else fake.poll_script).append(answer)
    with pytest.raises(error) as info:
        await make_provider(fake).fetch()
    if sentence is not None:
        assert user_sentence(info.value) == sentence
    assert len(fake.asks) == 1 and len(fake.polls) == (0 if where == "ask" else 1)  # not retried
    if error is UseapiRefused and sentence is None:
        shown = info.value.user_message
        assert shown.startswith("useapi.net refused the request: Prompt is invalid xxx") and len(shown) < 220


async def test_channel_required_and_unknown_channel(make_fake, make_provider):
    fake = await make_fake(channels=2)
    with pytest.raises(ChannelRequired) as info:
        await make_provider(fake).fetch()
    assert user_sentence(info.value) == ("useapi.net has several Midjourney channels: set USEAPI_CHANNEL "
                                         "to the one to read.")
    assert len(fake.asks) == 1 and "channel parameter is required" in info.value.detail
    fake = await make_fake(channel_ids=["111", "222"])
    with pytest.raises(ChannelNotFound) as info:
        await make_provider(fake, channel="333").fetch()
    assert user_sentence(info.value) == "useapi.net has no Midjourney channel 333: check USEAPI_CHANNEL."
    report = await make_provider(fake, channel="222").fetch()
    assert report.remaining == Amount(12.06, "hours") and fake.asks[-1].body["channel"] == "222"


async def test_429_retry_after_is_honoured_then_success(make_fake, make_provider):
    fake = await make_fake(complete_after=0.1)
    fake.ask_script.append(useapi_error(429, retry_after=0.3))
    fake.poll_script.append(useapi_error(429, retry_after=0.2))
    report = await make_provider(fake).fetch()
    assert report.remaining == Amount(12.06, "hours")
    assert len(fake.asks) == 2 and fake.asks[1].at - fake.asks[0].at >= 0.27
    assert fake.polls[1].at - fake.polls[0].at >= 0.17
    assert len(fake.jobs) == 1  # the refused ask made no job


async def test_429_until_the_deadline_says_rate_limited(make_fake, make_provider):
    fake = await make_fake()
    fake.ask_script.extend(useapi_error(429, retry_after=0.1) for _ in range(50))
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await make_provider(fake, poll_timeout=3.0).fetch()
    # 50 refusals would last 5 s; each retry waits at least the 1 s floor, whatever Retry-After says
    assert time.monotonic() - started < 4.5 and 2 <= len(fake.asks) <= 3
    assert info.value.user_message.startswith("useapi.net is rate limiting")


async def test_5xx_then_success(make_fake, make_provider):
    fake = await make_fake(complete_after=0.1)
    fake.ask_script.extend([useapi_error(503), useapi_error(500)])
    fake.poll_script.extend([garbage(502), useapi_error(503)])
    report = await make_provider(fake, poll_timeout=15.0).fetch()  # four retries, each at least 1 s apart
    assert report.remaining == Amount(12.06, "hours")
    assert len(fake.asks) == 3 and len(fake.jobs) == 1 and len(fake.polls) >= 3


@pytest.mark.parametrize("where", ["ask", "poll"])
async def test_garbage_body_is_a_bad_response(make_fake, make_provider, where):
    fake = await make_fake()
    (fake.ask_script if where == "ask" else fake.poll_script).append(garbage(200))
    with pytest.raises(BadResponse) as info:
        await make_provider(fake).fetch()
    assert "not JSON" in info.value.detail and len(fake.asks) == 1


async def test_receipt_without_a_jobid_is_a_bad_response(make_fake, make_provider):
    fake = await make_fake()
    fake.ask_script.append(Scripted(201, {"status": "created", "verb": "info"}))
    with pytest.raises(BadResponse):
        await make_provider(fake).fetch()
    assert not fake.polls


async def test_error_text_never_shows_the_token(make_fake, make_provider):
    fake = await make_fake()
    fake.ask_script.append(useapi_error(400, f"Invalid token {TOKEN} for this route"))
    with pytest.raises(UseapiRefused) as info:
        await make_provider(fake).fetch()
    assert TOKEN not in info.value.user_message and TOKEN not in str(info.value)
    assert info.value.user_message == "useapi.net refused the request: Invalid token *** for this route."


# --- odd jobs and the deadline ----------------------------------------------------------------------

async def test_a_job_that_never_ends_times_out_at_the_deadline(make_fake, make_provider):
    fake = await make_fake(complete_after=float("inf"), pending_response="empty")
    started = time.monotonic()
    with pytest.raises(TimedOut) as info:
        await make_provider(fake, poll_timeout=0.6).fetch()
    assert 0.5 <= time.monotonic() - started < 2.0
    assert len(fake.polls) >= 5 and "last status 'created'" in info.value.detail  # the fake starts it after 1 s


async def test_unknown_statuses_and_one_empty_completed_keep_polling(make_fake, make_provider):
    account = FakeAccount.basic()
    fake = await make_fake(account=account, complete_after=0.2)
    fake.poll_script.extend([
        Scripted(200, {"status": "waiting-for-discord", "response": None}),
        Scripted(200, {"status": None}),
        Scripted(200, ["not", "an", "object"]),
        Scripted(200, {"status": "completed", "response": {}}),  # once: tolerated, polled again
    ])
    report = await make_provider(fake).fetch()
    assert report.remaining == Amount(199.0, "minutes") and len(fake.polls) >= 5


async def test_completed_without_content_again_and_again_is_a_bad_response(make_fake, make_provider):
    fake = await make_fake()
    fake.poll_script.extend(Scripted(200, {"status": "completed", "response": {"content": ""}}) for _ in range(3))
    with pytest.raises(BadResponse) as info:
        await make_provider(fake).fetch()
    assert len(fake.polls) == 3 and "without content" in info.value.detail


@pytest.mark.parametrize("key", ["jobid", "jobId", "id"])
async def test_jobid_keys_and_unsafe_characters(make_fake, make_provider, key):
    fake = await make_fake()
    jobid = "j0101i-u7-c42-bot:midjourney/odd?x=1#frag %25 ü"
    plant(fake, jobid, done_in=0.1)
    fake.ask_script.append(Scripted(201, {key: jobid, "status": "created"}))
    report = await make_provider(fake).fetch()
    assert report.message_id == jobid and report.remaining == Amount(12.06, "hours")
    assert fake.polls and all(p.path == JOBS + jobid and p.query == {} for p in fake.polls)


async def test_a_receipt_already_done_needs_no_poll(make_fake, make_provider):
    fake = await make_fake()
    text = FakeAccount.trial().info_text()
    fake.ask_script.append(Scripted(201, {"jobid": "j1", "status": "completed", "content": text}))
    report = await make_provider(fake).fetch()
    assert report.remaining == Amount(25.0, "minutes") and not fake.polls


async def test_read_at_is_now_when_updated_is_missing_or_odd(make_fake, make_provider):
    fake = await make_fake()
    text = fake.account.info_text()
    fake.poll_script.extend([Scripted(200, {"status": "completed", "updated": "yesterday-ish",
                                            "response": {"content": text}}),
                             Scripted(200, {"status": "completed", "content": text,
                                            "updated": "2999-01-01T00:00:00Z"})])
    for _ in range(2):
        before = datetime.now(timezone.utc)
        report = await make_provider(fake).fetch()
        assert before <= report.read_at <= datetime.now(timezone.utc)
    old = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    fake.poll_script.append(Scripted(200, {"status": "completed", "updated": old, "response": {"content": text}}))
    report = await make_provider(fake).fetch()
    assert report.read_at == datetime.fromisoformat(old)


# --- manners ----------------------------------------------------------------------------------------

def test_default_poll_never_polls_faster_than_10s():
    policy = UseapiProvider(token=TOKEN).default_poll()
    assert not policy.use_progress
    for seed in range(50):
        delays = policy.delays(random.Random(seed))
        sample = [next(delays) for _ in range(40)]
        assert all(10.0 <= d <= 14.0 for d in sample), sample
        assert 12.0 <= sample[0] <= 14.0  # the first poll just before the earliest likely answer (~15 s)
    average = sum(d for seed in range(50) for d in list(_take(policy, seed, 20))[5:]) / (50 * 15)
    assert 10.0 <= average <= 11.0  # then at the floor of useapi's advice (10–30 s)


def _take(policy: PollPolicy, seed: int, n: int):
    delays = policy.delays(random.Random(seed))
    return (next(delays) for _ in range(n))


async def test_defaults_and_repr_never_show_the_token():
    provider = UseapiProvider(token=TOKEN, channel=" 42 ")
    try:
        assert provider.name == "useapi" and provider.label == "useapi.net"
        assert provider._poll == provider.default_poll() and provider._limiter.interval == 3.0
        assert provider.token_setting == "USEAPI_API_TOKEN" and provider.poll_timeout > 0
        assert TOKEN not in repr(provider) and "42" in repr(provider) and "api.useapi.net" in repr(provider)
        assert str(provider.job_url("a:b/c")).endswith("/v3/midjourney/jobs/a%3Ab%2Fc")
    finally:
        await provider.close()


async def test_concurrent_fetches(make_fake, make_provider):
    account = FakeAccount(drain_per_reading=True)
    fake = await make_fake(account=account, complete_after=0.2)
    provider = make_provider(fake, limiter=AskLimiter(0.1))
    reports = await asyncio.gather(*(provider.fetch() for _ in range(4)))
    assert len(fake.asks) == 4 and len(fake.jobs) == 4 and account.readings == 4
    assert len({r.message_id for r in reports}) == 4
    assert sorted(r.remaining.value for r in reports) == pytest.approx([11.85, 11.92, 11.99, 12.06])
    gaps = [b.at - a.at for a, b in zip(fake.asks, fake.asks[1:])]
    assert all(g >= 0.07 for g in gaps)  # the limiter spaced the asks
    other = make_provider(fake)
    both = await asyncio.gather(provider.fetch(), other.fetch(), return_exceptions=True)
    assert all(isinstance(r, QuotaReport) for r in both), both
