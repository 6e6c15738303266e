"""The webhook fast path and learned poll timing, against the fake upstream on 127.0.0.1: the upstream
calls back before, after or instead of the polls; forged and replayed callbacks are refused."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.timing import LearnedTiming
from bot.webhook import WebhookHub
from tests.ports import bound_socket


async def _serve_hub(middlewares=()) -> tuple[WebhookHub, web.AppRunner]:
    sock = bound_socket()
    hub = WebhookHub(f"http://127.0.0.1:{sock.getsockname()[1]}/")
    app = web.Application(middlewares=list(middlewares))
    hub.mount(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return hub, runner


@pytest.fixture
async def hub_server():
    """A WebhookHub mounted on its own aiohttp server (as `quota-bot run` mounts it on the shared one)."""
    hub, runner = await _serve_hub()
    yield hub
    await runner.cleanup()


SLOW = PollPolicy(initial=3.0, factor=1.0, cap=3.0, jitter=0)  # polls that would come late


async def test_the_callback_delivers_before_the_poll(upstream, make_provider, hub_server):
    upstream.complete_after = 0.3
    provider = make_provider(webhook=hub_server)
    started = time.monotonic()
    report = await provider.fetch()
    assert report.percent == 80.4 and time.monotonic() - started < 1.5
    assert upstream.asks[0].body["webhookOverride"] == hub_server.url
    assert upstream.polls == [] and len(upstream.callbacks) == 1  # counted as sent: the bot holds its reading
    assert [c.get("status") for c in await upstream.callbacks_answered()] == [202]
    assert hub_server.accepted == 1


async def test_the_callback_instead_of_the_poll(upstream, make_provider, hub_server):
    upstream.complete_after, upstream.hide_from_polls = 0.2, True  # the polls never show the result
    report = await make_provider(webhook=hub_server).fetch()
    assert report.remaining.value == 12.06 and len(upstream.callbacks) == 1
    assert [c.get("status") for c in await upstream.callbacks_answered()] == [202]


async def test_a_callback_counts_once_sent_while_the_bot_is_still_answering_it(upstream, make_provider):
    """The bot holds the reading before the upstream has the bot's answer to the callback (the order
    Python 3.12+ tends to run them in; forced here by holding the answer back): the simulator has counted
    the callback as sent, and fills in its status when the answer is back."""
    release = asyncio.Event()

    @web.middleware
    async def answer_late(request, handler):
        response = await handler(request)  # the reading is delivered to the waiting ask here
        await asyncio.wait_for(release.wait(), 15)
        return response

    upstream.complete_after, upstream.hide_from_polls = 0.2, True
    hub, runner = await _serve_hub([answer_late])
    try:
        report = await asyncio.wait_for(make_provider(webhook=hub).fetch(), 15)
        assert report.remaining.value == 12.06 and hub.accepted == 1
        assert len(upstream.callbacks) == 1 and "status" not in upstream.callbacks[0]  # sent, not yet answered
        release.set()
        assert [c.get("status") for c in await upstream.callbacks_answered()] == [202]
    finally:
        release.set()
        await runner.cleanup()


async def test_a_poll_that_wins_and_the_late_callback_is_refused(upstream, make_provider, hub_server):
    upstream.complete_after, upstream.callback_delay = 0.1, 1.0
    from bot.providers import nextleg

    original = nextleg.SAFETY_NET
    nextleg.SAFETY_NET = PollPolicy(initial=0.3, factor=1.0, cap=0.3, jitter=0)  # the safety net polls first
    try:
        report = await make_provider(webhook=hub_server).fetch()
    finally:
        nextleg.SAFETY_NET = original
    assert report.percent == 80.4 and len(upstream.polls) >= 1
    callbacks = await upstream.callbacks_answered()  # the late callback is sent a second after the job ends
    assert callbacks and callbacks[0]["status"] == 404  # its ask is over: refused
    assert hub_server.accepted == 0 and hub_server.refused == 1


async def test_forged_replayed_and_malformed_callbacks_are_refused_and_change_nothing(upstream, make_provider,
                                                                                       hub_server, caplog):
    upstream.complete_after = 0.3
    base = hub_server.public_url
    async with aiohttp.ClientSession() as http:
        provider = make_provider(webhook=hub_server)
        reading = asyncio.ensure_future(provider.fetch())
        while not upstream.asks:
            await asyncio.sleep(0.01)
        ref = upstream.asks[0].body["ref"]
        forged = {"ref": ref, "content": {"Fast Time Remaining": "0.00/15.0 hours (0.00%)"}}
        for url, body, status in (
            (f"{base}/upstream/webhook/not-the-secret", forged, 404),
            (f"{base}/upstream/webhook", forged, 405),
            (f"{base}/elsewhere", forged, 404),
            (hub_server.url, {"ref": "someone-else", "content": {}}, 404),
        ):
            async with http.post(url, json=body) as resp:
                assert resp.status == status, url
        async with http.post(hub_server.url, data=b"{not json") as resp:
            assert resp.status == 400
        async with http.post(hub_server.url, data=b"x" * (300 * 1024)) as resp:
            assert resp.status == 413
        report = await reading
        assert report.percent == 80.4, "a forged callback must not become the reading"
        replay = {"ref": ref, "originatingMessageId": report.message_id, "content": forged["content"]}
        async with http.post(hub_server.url, json=replay) as resp:
            assert resp.status == 404  # replayed after its ask: nothing in flight
        async with http.get(f"{base}/upstream/webhook") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True
    secret = hub_server.url.rsplit("/", 1)[1]
    assert secret not in caplog.text and secret not in repr(hub_server)


async def test_useapi_gets_reply_url_and_ref_and_the_callback_wins(hub_server):
    from bot.providers.useapi import UseapiProvider
    from tests.fakes.providers import UseapiFake
    from tests.secrets import ALL_TEST_SECRETS

    token = ALL_TEST_SECRETS["USEAPI_API_TOKEN"]
    fake = UseapiFake(require_token=token, complete_after=0.4, callback=True)
    await fake.start()
    provider = UseapiProvider(base_url=fake.base_url, token=token, webhook=hub_server, limiter=AskLimiter(0.01),
                              stream=False)  # the callback beside polls (beside a stream: tests/e2e/test_useapi_stream.py)
    try:
        started = time.monotonic()
        report = await provider.fetch()
        assert time.monotonic() - started < 3, "the callback, not the first safety-net poll at 20 s"
        ask = fake.asks[0].body
        assert ask["replyUrl"] == hub_server.url and ask["replyRef"].startswith("quota-bot-") and ask["stream"] is False
        assert report.remaining is not None and fake.polls == []
    finally:
        await provider.close()
        await fake.stop()


async def test_learned_timing_puts_the_first_poll_near_the_jobs_usual_length(upstream, make_provider):
    """A fake whose jobs take 4–6 s: after 20 samples the first poll lands after 4 s (not at the backoff's
    first step), and the reading needs only a poll or two."""
    timing = LearnedTiming()
    timing.load([4.0 + 2.0 * i / 19 for i in range(20)])  # 20 samples of 4–6 s, as the store keeps them
    upstream.complete_after, upstream.report_progress = 5.0, False
    provider = make_provider(poll=PollPolicy(initial=0.5, factor=1.5, cap=1.0, jitter=0), timing=timing,
                             poll_timeout=15.0)
    report = await provider.fetch()
    job = next(iter(upstream.jobs.values()))
    first = upstream.polls[0].at - job.created
    assert report.percent == 80.4 and first >= 4.0, first
    assert len(upstream.polls) <= 3, [p.at - job.created for p in upstream.polls]
    assert timing.count == 21  # it learned from this job too


async def test_a_server_without_job_timestamps_teaches_nothing(upstream, make_provider):
    """Without createdAt/responseAt the only figure is the time to the poll that saw the result (the
    poll's time, not the job's): learning it would push every plan later, reading by reading."""
    timing = LearnedTiming()
    timing.load([2.0] * 20)
    upstream.complete_after, upstream.report_progress, upstream.timestamps = 1.0, False, False
    provider = make_provider(poll=PollPolicy(initial=0.5, factor=1.5, cap=1.0, jitter=0), timing=timing,
                             poll_timeout=15.0)
    report = await provider.fetch()
    assert report.remaining is not None and upstream.polls  # answered, by polling
    assert timing.count == 20
    upstream.timestamps = True
    await provider.fetch()
    assert timing.count == 21  # the same server with timestamps: learned


def test_learned_plan_needs_enough_samples_and_rises():
    timing = LearnedTiming()
    timing.load([5.0] * 19)
    assert timing.plan() is None
    timing.add(5.0)
    plan = timing.plan()
    assert plan is not None and plan[0] >= 5.0 and all(b > a for a, b in zip(plan, plan[1:]))
    for bad in (-1, 0, float("nan"), 1e9):
        timing.add(bad)
    assert timing.count == 20
