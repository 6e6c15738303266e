"""useapi.net's streamed reading (issue 23): the provider against ``UseapiFake``'s Server-Sent Events on
127.0.0.1, real aiohttp on both sides; the SSE reader on its own; the setting and the accounts key.

Every test ends with no job left unfinished at the fake (neither ended nor deleted): a job the bot gives
up holds one of the account's job slots at useapi for 14 minutes.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bot.accounts import load_accounts
from bot.errors import BadToken, RateLimited, TimedOut, user_sentence
from bot.providers import ProviderConfig, config_from_settings, create_provider
from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.sse import EventStreamParser
from bot.providers.useapi import ChannelRequired, JobFailed, ModerationBlocked, NoSubscription, UseapiProvider
from bot.service import QuotaService
from bot.settings import SettingsError, load_settings
from tests.fakes.providers import FakeAccount, UseapiFake, useapi_error
from tests.secrets import ALL_TEST_SECRETS
from tests.e2e.test_webhook import hub_server  # noqa: F401  (the fixture: a WebhookHub on its own server)

TOKEN = ALL_TEST_SECRETS["USEAPI_API_TOKEN"]
ASK = "/v3/midjourney/jobs/info"
# polls (after a break) every 0.1 s; a stream silent for 0.4 s is checked with a poll
POLICY = PollPolicy(initial=0.1, factor=1.0, cap=0.1, jitter=0.0, use_progress=False, min_delay=0.4)


@pytest.fixture(autouse=True)
def _no_token_in_logs(caplog):
    yield
    assert TOKEN not in caplog.text


@pytest.fixture
async def make_fake():
    fakes: list[UseapiFake] = []
    providers: list[UseapiProvider] = []

    async def start(**kw) -> UseapiFake:
        kw.setdefault("require_token", TOKEN)
        fake = UseapiFake(**kw)
        await fake.start()
        fakes.append(fake)
        return fake

    def provider(fake: UseapiFake, **kw) -> UseapiProvider:
        options = dict(base_url=fake.base_url, token=TOKEN, poll=POLICY, limiter=AskLimiter(0.02), poll_timeout=4.0)
        options.update(kw)
        made = UseapiProvider(**options)
        providers.append(made)
        return made

    start.provider = provider  # type: ignore[attr-defined]
    yield start
    for made in providers:
        await made.close()
    try:
        for fake in fakes:  # no test leaves a job that would hold a slot at useapi
            assert fake.unfinished() == [], f"jobs left unfinished and undeleted: {fake.unfinished()}"
    finally:
        for fake in fakes:
            await fake.stop()


def _job(fake: UseapiFake):
    assert len(fake.jobs) == 1
    return next(iter(fake.jobs.values()))


# --- the streamed reading ----------------------------------------------------------------------------

@pytest.mark.parametrize("channel", [None, "1122334455"])
async def test_the_ask_streams_and_the_answer_comes_as_the_job_ends(make_fake, channel):
    account = FakeAccount()
    fake = await make_fake(account=account, complete_after=0.6, channel_ids=["1122334455", "9"] if channel else None)
    provider = make_fake.provider(fake, channel=channel)
    report = await provider.fetch()
    returned = time.monotonic()
    job = _job(fake)
    assert [r.method for r in fake.requests] == ["POST"]  # the stream is the only request: no poll
    ask = fake.asks[0]
    assert ask.path == ASK and ask.headers["Authorization"] == f"Bearer {TOKEN}"
    assert ask.body == ({"stream": True, "channel": channel} if channel else {"stream": True})
    assert TOKEN not in ask.path + json.dumps(ask.query) + json.dumps(ask.body)
    assert fake.streams[0]["sent"] == ["initialized", "midjourney_created", "midjourney_started",
                                       "midjourney_progress", "midjourney_completed"]
    assert fake.streams[0]["closed_by"] == "end"  # read to its end event: the job is not left stuck
    assert report.message_id == job.jobid and report.remaining.hours == pytest.approx(account.remaining_hours())
    assert 0 <= returned - job.done_at < 1.0  # answered as it ended (generous bound: a busy machine)
    assert provider.last_stats["polls"] == 0 and fake.deletes == []


@pytest.mark.parametrize("style, keepalive", [
    ({"event_lines"}, None), ({"crlf"}, None), ({"cr"}, None), ({"split"}, None), ({"bom"}, None),
    ({"unknown"}, None), (set(), 0.05), ({"event_lines", "crlf", "split", "bom", "unknown"}, 0.05),
])
async def test_every_lenient_shape_of_the_stream_reads_the_same(make_fake, style, keepalive):
    fake = await make_fake(complete_after=0.5, sse_style=style, sse_keepalive=keepalive)
    report = await make_fake.provider(fake).fetch()
    assert report.remaining.hours == 12.06 and report.total.hours == 15.0
    assert [r.method for r in fake.requests] == ["POST"] and fake.streams[0]["closed_by"] == "end"


@pytest.mark.parametrize("outcome, kind, sentence", [
    ("failed", JobFailed, "useapi.net could not read the Midjourney account: Midjourney /info failed — Discord did "
                          "not answer the /info command."),
    ("moderated", JobFailed, "Midjourney moderation stopped the /info job at useapi.net: Moderated — Midjourney "
                             "moderation blocked the command."),
    ("error", JobFailed, "useapi.net could not read the Midjourney account: Midjourney did not answer."),
])
async def test_an_end_event_that_is_not_a_result_is_its_sentence_at_once(make_fake, outcome, kind, sentence):
    fake = await make_fake(complete_after=0.4, job_outcome=outcome)
    with pytest.raises(kind) as caught:
        await make_fake.provider(fake).fetch()
    assert user_sentence(caught.value) == sentence
    assert [r.method for r in fake.requests] == ["POST"] and fake.deletes == []  # it ended: nothing to free


async def test_a_596_in_a_failed_event_is_the_moderation_block_sentence(make_fake):
    fake = await make_fake(complete_after=0.3, job_outcome="failed",
                           job_error={"error": "Pending moderation", "errorDetails": "blocked", "code": 596})
    with pytest.raises(ModerationBlocked):
        await make_fake.provider(fake).fetch()


async def test_a_stream_cut_after_started_is_finished_by_polls_without_a_second_ask(make_fake):
    fake = await make_fake(complete_after=0.8)
    fake.stream_script.append({"cut_after": "midjourney_started"})
    provider = make_fake.provider(fake)
    report = await provider.fetch()
    assert report.remaining.hours == 12.06
    assert len(fake.asks) == 1 and fake.streams[0]["closed_by"] == "server cut"
    assert fake.polls and all(p.path.endswith(_job(fake).jobid) or "%3A" in p.path for p in fake.polls)
    assert _job(fake).status(time.monotonic()) == "completed" and fake.deletes == []


async def test_a_silent_stream_is_checked_with_a_poll_and_kept_open(make_fake):
    fake = await make_fake(complete_after=1.2)
    fake.stream_script.append({"silent_after": "midjourney_started"})
    provider = make_fake.provider(fake)
    report = await provider.fetch()
    job = _job(fake)
    assert report.remaining.hours == 12.06 and len(fake.asks) == 1
    assert fake.polls and fake.polls[0].at - job.born >= 0.4 - 0.05  # not before the stream was silent that long
    assert all(job.status(p.at) != "completed" for p in fake.polls[:-1])  # the last check found the result
    assert not job.stuck  # the stream stayed open until the job had ended


async def test_a_stream_silent_past_the_deadline_times_out_and_deletes_the_job(make_fake):
    fake = await make_fake(complete_after=float("inf"))
    fake.stream_script.append({"silent_after": "midjourney_started"})
    provider = make_fake.provider(fake, poll_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        await provider.fetch()
    assert 1.4 <= time.monotonic() - started < 4.0
    assert user_sentence(caught.value).lower().startswith("timed out")
    job = _job(fake)
    assert [d.method for d in fake.deletes] == ["DELETE"] and job.deleted_at is not None
    assert fake.unfinished() == []
    assert 1 <= len(fake.polls) <= 4  # silence checks, spaced out (0.4 s, then 0.8 s, then 1.2 s)


async def test_a_stream_that_ends_before_naming_its_job_is_asked_once_more_without_one(make_fake):
    fake = await make_fake(complete_after=0.3)
    fake.stream_script.append({"events": [(0.0, b": hello\n\n")]})  # a comment, then the stream closes
    report = await make_fake.provider(fake).fetch()
    assert report.remaining.hours == 12.06
    assert [a.body for a in fake.asks] == [{"stream": True}, {"stream": False}]
    assert fake.asks[1].at - fake.asks[0].at >= 0.015  # the second ask waited its turn at the limiter
    await asyncio.sleep(0.3)  # the first job (its id never told) ends on its own at the fake


async def test_an_oversized_event_is_skipped_and_the_stream_read_on(make_fake, monkeypatch):
    from bot.providers import useapi

    monkeypatch.setattr(useapi, "MAX_EVENT_BYTES", 4096)
    fake = await make_fake(complete_after=0.5)
    huge = b"data: {\"event\": \"midjourney_progress\", \"pad\": \"" + b"x" * 20000 + b"\"}\n\n"
    fake.stream_script.append({"events": [(0.0, "initialized"), (0.1, huge), (0.5, "midjourney_completed")]})
    quiet = PollPolicy(initial=0.1, factor=1.0, cap=0.1, jitter=0.0, use_progress=False, min_delay=3.0)
    report = await make_fake.provider(fake, poll=quiet).fetch()
    assert report.remaining.hours == 12.06 and [r.method for r in fake.requests] == ["POST"]


# --- errors before the stream: today's sentences -------------------------------------------------------

@pytest.mark.parametrize("answer, kind, sentence", [
    (useapi_error(401), BadToken, "useapi.net rejected the API token (USEAPI_API_TOKEN); ask the operator to check it."),
    (useapi_error(402), NoSubscription, "useapi.net says this account has no Midjourney subscription, or it expired."),
    (useapi_error(596), ModerationBlocked, "The Midjourney account is blocked by a pending moderation message: clear it "
                                           "in the useapi.net dashboard, then try again."),
])
async def test_errors_before_the_stream_are_todays_sentences(make_fake, answer, kind, sentence):
    fake = await make_fake()
    fake.ask_script.append(answer)
    with pytest.raises(kind) as caught:
        await make_fake.provider(fake).fetch()
    assert user_sentence(caught.value) == sentence
    assert len(fake.asks) == 1 and fake.polls == [] and fake.jobs == {}


async def test_the_channel_error_before_the_stream(make_fake):
    fake = await make_fake(channels=2)
    with pytest.raises(ChannelRequired) as caught:
        await make_fake.provider(fake).fetch()
    assert user_sentence(caught.value) == ("useapi.net has several Midjourney channels: set USEAPI_CHANNEL to the one "
                                           "to read.")


async def test_429_before_the_stream_is_retried_then_streams(make_fake):
    fake = await make_fake(complete_after=0.3)
    fake.ask_script.append(useapi_error(429, retry_after=0))
    report = await make_fake.provider(fake).fetch()
    assert report.remaining.hours == 12.06
    assert len(fake.asks) == 2 and fake.asks[1].at - fake.asks[0].at >= 1.0  # the retry floor
    assert fake.asks[1].body == {"stream": True}


async def test_429_until_the_deadline_is_the_rate_limit_sentence(make_fake):
    fake = await make_fake()
    for _ in range(5):
        fake.ask_script.append(useapi_error(429, retry_after=0))
    with pytest.raises(RateLimited) as caught:
        await make_fake.provider(fake, poll_timeout=1.5).fetch()
    assert user_sentence(caught.value) == "useapi.net is rate limiting quota requests right now; try again in a minute."


# --- shutdown: the job is freed ------------------------------------------------------------------------

async def test_closing_the_provider_mid_stream_deletes_the_job(make_fake):
    fake = await make_fake(complete_after=float("inf"))
    provider = make_fake.provider(fake, poll_timeout=30)
    service = QuotaService(provider)
    reading = asyncio.ensure_future(service.get_report())
    await fake.changes.wait(lambda: True if fake.streams and fake.streams[0]["sent"][-1:] == ["midjourney_progress"]
                            else None, 10)
    await service.close()  # the shutdown: cancels the reading, closes the provider
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert [d.method for d in fake.deletes] == ["DELETE"] and _job(fake).deleted_at is not None


async def test_a_cancelled_reading_deletes_its_job(make_fake):
    fake = await make_fake(complete_after=float("inf"))
    provider = make_fake.provider(fake, poll_timeout=30)
    reading = asyncio.ensure_future(provider.fetch())
    await fake.changes.wait(lambda: True if fake.jobs else None, 10)
    await asyncio.sleep(0.1)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert len(fake.deletes) == 1 and fake.unfinished() == []


# --- the webhook beside the stream ---------------------------------------------------------------------

async def test_with_a_public_url_the_callback_can_win_over_a_silent_stream(make_fake, hub_server):  # noqa: F811
    fake = await make_fake(complete_after=0.5, callback=True)
    fake.stream_script.append({"silent_after": "midjourney_started"})
    provider = make_fake.provider(fake, webhook=hub_server, poll=PollPolicy(initial=5, factor=1, cap=5, jitter=0,
                                                                            use_progress=False, min_delay=5))
    report = await provider.fetch()
    ask = fake.asks[0].body
    assert ask["stream"] is True and ask["replyUrl"] == hub_server.url and ask["replyRef"].startswith("quota-bot-")
    assert report.remaining.hours == 12.06 and fake.polls == []
    await fake.changes.wait(lambda: True if fake.callbacks else None, 5)
    assert fake.callbacks[0]["status"] == 202


# --- the reader, the setting, the accounts key ---------------------------------------------------------

def test_the_reader_follows_the_standard():
    parser = EventStreamParser(max_event=64)
    events = []
    for chunk in (b"\xef\xbb\xbfdata: a\r", b"\ndata: b\r\r", b": keep-alive\n", b"event: e\ndata\nid: 3\nretry: 5x\n\n",
                  b"data:  two spaces\n\n", b"data: " + b"x" * 100 + b"\n\n", b"data: after\n\n", b"data: lost"):
        events += parser.feed(chunk)
    assert [(e.type, e.data, e.id) for e in events] == [("message", "a\nb", ""), ("e", "", "3"),
                                                       ("message", " two spaces", "3"), ("message", "after", "3")]
    assert parser.comments == 1 and parser.dropped == 1 and parser.retry is None


@pytest.mark.parametrize("value, expected", [("on", True), ("OFF", False), ("true", True), ("0", False), ("1", True)])
def test_useapi_stream_setting(monkeypatch, value, expected):
    monkeypatch.setenv("USEAPI_API_TOKEN", "useapi-secret-1")
    monkeypatch.setenv("USEAPI_STREAM", value)
    settings = load_settings(None)
    assert settings.useapi_stream is expected and config_from_settings(settings).stream is expected
    assert create_provider(config_from_settings(settings)).stream is expected  # type: ignore[attr-defined]


def test_useapi_stream_is_on_by_default_and_a_bad_value_stops_start_up(monkeypatch):
    monkeypatch.setenv("USEAPI_API_TOKEN", "useapi-secret-1")
    assert load_settings(None).useapi_stream is True
    monkeypatch.setenv("USEAPI_STREAM", "sometimes")
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    assert str(caught.value) == "USEAPI_STREAM: must be on or off (or true/false, 1/0)"


def test_the_accounts_file_key_stream(tmp_path):
    path = tmp_path / "accounts.toml"
    path.write_text('[[account]]\nname = "a"\nprovider = "useapi"\ntoken = "x"\nstream = "off"\n'
                    '[[account]]\nname = "b"\nprovider = "useapi"\ntoken = "x"\nstream = false\n'
                    '[[account]]\nname = "c"\nprovider = "useapi"\ntoken = "x"\n')
    streams = {a.name: a.config.stream for a in load_accounts(str(path), None, {})}
    assert streams == {"a": False, "b": False, "c": True}
    assert "polled" in ProviderConfig("useapi", "x", stream=False).describe()
