"""The provider against the fake upstream on 127.0.0.1: real aiohttp on both sides."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.errors import AccountProblem, BadResponse, BadToken, Expired, RateLimited, TimedOut, UpstreamUnavailable
from bot.providers.base import AskLimiter, PollPolicy
from bot.simulator import Scripted
from tests.conftest import TEST_TOKEN


async def test_queued_running_done_reads_the_numbers(upstream, make_provider):
    upstream.queue_time, upstream.complete_after = 0.3, 0.6  # queued (progress 0), then running
    provider = make_provider(poll=PollPolicy(initial=0.05, cap=0.1, jitter=0, use_progress=False))
    report = await provider.fetch()
    assert (report.remaining.value, report.total.value, report.percent) == (12.06, 15.0, 80.4)
    assert report.job_mode == "Fast" and report.plan == "Standard"
    assert len(upstream.asks) == 1 and len(upstream.polls) >= 4
    assert report.message_id == next(iter(upstream.jobs))


async def test_progress_estimate_polls_once_more_just_after_done(upstream, make_provider):
    upstream.complete_after = 1.5
    provider = make_provider(poll=PollPolicy(initial=0.3, jitter=0))
    report = await provider.fetch()
    job = next(iter(upstream.jobs.values()))
    assert report.percent == 80.4
    assert len(upstream.polls) == 2, [p.at - job.created for p in upstream.polls]
    assert 0 <= upstream.polls[-1].at - job.done_at < 0.5  # just after done, not a blind interval later


def test_progress_estimate_rules():
    policy = PollPolicy()
    assert policy.after_progress(20, 1.0) == pytest.approx(4.05)  # 1 s for 20 % → done by 5 s
    assert PollPolicy(min_delay=0.1).after_progress(99, 20.0) == pytest.approx(0.2520, abs=1e-3)
    assert policy.after_progress(1, 1.0) == 20.0  # capped
    assert policy.after_progress(99, 10.0) == 0.25  # never hammer
    for odd in (0, 100, "incomplete", None, True, -5):
        assert policy.after_progress(odd, 1.0) is None
    assert PollPolicy(use_progress=False).after_progress(50, 1.0) is None


async def test_ask_is_exact_token_in_header_only_ref_sent(upstream, make_provider):
    await make_provider().fetch()
    ask = upstream.asks[0]
    assert ask.method == "GET" and ask.path == "/v2/info"
    assert ask.headers["Authorization"] == f"Bearer {TEST_TOKEN}"
    assert ask.headers["Content-Type"] == "application/json"
    assert set(ask.body) == {"ref"} and ask.body["ref"].startswith("quota-bot-")
    assert upstream.jobs[next(iter(upstream.jobs))].ref == ask.body["ref"]
    for request in upstream.asks + upstream.polls:
        assert TEST_TOKEN not in request.path and TEST_TOKEN not in str(request.query)
    poll = upstream.polls[0]
    assert poll.path.startswith("/v2/message/") and "//" not in poll.path
    assert int(poll.query["expireMins"]) >= 1


async def test_post_method_and_custom_prefix(upstream, make_provider):
    upstream.prefix = "/v1"
    from bot.simulator import UpstreamSimulator

    sim = UpstreamSimulator(prefix="/v1", complete_after=0.1, require_token=TEST_TOKEN)
    await sim.start()
    try:
        report = await make_provider(base_url=sim.base_url + "/", path_prefix="v1/", info_method="POST").fetch()
        assert report.remaining.value == 12.06
        assert sim.asks[0].method == "POST" and sim.asks[0].path == "/v1/info"
    finally:
        await sim.stop()


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("firestore", [True, False])
async def test_result_flat_or_under_response_and_both_timestamp_forms(upstream, make_provider, nested, firestore):
    upstream.nested, upstream.firestore_times = nested, firestore
    report = await make_provider().fetch()
    assert report.percent == 80.4
    assert report.responded_at is not None and abs(report.responded_at.timestamp() - time.time()) < 60


async def test_incomplete_stops_polling(upstream, make_provider):
    upstream.complete_after = 60
    upstream.expire_after = 0.15
    started = time.monotonic()
    with pytest.raises(Expired) as caught:
        await make_provider().fetch()
    polls = len(upstream.polls)
    await asyncio.sleep(0.4)
    assert len(upstream.polls) == polls, "kept polling after incomplete"
    assert time.monotonic() - started < 2
    assert "incomplete" in caught.value.user_message


@pytest.mark.parametrize("code, sentence", [
    ("NO_FAST_HOURS", "This Midjourney account has no fast time left."),
    ("QUEUE_FULL", "The Midjourney queue is full right now; try again in a few minutes."),
    ("SOMETHING_NEW", "The Midjourney API answered with SOMETHING_NEW."),
])
async def test_failure_codes_become_account_problems(upstream, make_provider, code, sentence):
    upstream.content = code
    with pytest.raises(AccountProblem) as caught:
        await make_provider().fetch()
    assert caught.value.user_message == sentence


@pytest.mark.parametrize("status", [401, 403])
async def test_bad_token_is_final(upstream, make_provider, status):
    upstream.ask_script.extend([Scripted(status, {"success": False, "msg": "nope"})] * 3)
    with pytest.raises(BadToken) as caught:
        await make_provider().fetch()
    assert len(upstream.asks) == 1, "401/403 must not be retried"
    assert "API token" in caught.value.user_message and "rejected" in caught.value.user_message


async def test_wrong_token_is_rejected_by_the_fake(upstream, make_provider):
    with pytest.raises(BadToken):
        await make_provider(token="not-the-token").fetch()


async def test_429_waits_retry_after_then_succeeds(upstream, make_provider):
    upstream.ask_script.append(Scripted(429, {"success": False}, headers={"Retry-After": "0.6"}))
    report = await make_provider().fetch()
    assert report.percent == 80.4
    assert len(upstream.asks) == 2
    assert upstream.asks[1].at - upstream.asks[0].at >= 0.55


async def test_429_past_the_deadline_reports_rate_limited(upstream, make_provider):
    upstream.ask_script.extend([Scripted(429, headers={"Retry-After": "0.3"})] * 10)
    with pytest.raises(RateLimited):
        await make_provider(poll_timeout=2.8).fetch()
    # retries wait at least the 1 s floor (plus up to 25 % jitter), never past the deadline
    assert 2 <= len(upstream.asks) <= 3


async def test_500_twice_then_ok(upstream, make_provider):
    upstream.ask_script.extend([Scripted(500, "oops"), Scripted(502, "bad gateway")])
    report = await make_provider().fetch()
    assert report.percent == 80.4 and len(upstream.asks) == 3


async def test_5xx_on_polls_is_retried(upstream, make_provider):
    upstream.poll_script.extend([Scripted(503), Scripted(500)])
    report = await make_provider().fetch()
    assert report.percent == 80.4


async def test_5xx_until_deadline_is_unavailable(upstream, make_provider):
    upstream.ask_script.extend([Scripted(503)] * 50)
    with pytest.raises(UpstreamUnavailable):
        await make_provider(poll_timeout=0.8).fetch()


async def test_connection_refused_is_unavailable_not_a_crash(make_provider):
    with pytest.raises(UpstreamUnavailable):
        await make_provider(base_url="http://127.0.0.1:9", poll_timeout=0.6).fetch()


@pytest.mark.parametrize("body", ["<html>Bad gateway</html>", "", "{not json"])
async def test_non_json_body_is_a_bad_response(upstream, make_provider, body):
    upstream.ask_script.append(Scripted(200, body))
    with pytest.raises(BadResponse):
        await make_provider().fetch()


async def test_receipt_without_message_id_is_a_bad_response(upstream, make_provider):
    upstream.ask_script.append(Scripted(200, {"success": True}))
    with pytest.raises(BadResponse):
        await make_provider().fetch()


async def test_success_false_gives_its_message(upstream, make_provider):
    upstream.ask_script.append(Scripted(200, {"success": False, "msg": "Account paused"}))
    with pytest.raises(UpstreamUnavailable) as caught:
        await make_provider().fetch()
    assert "Account paused" in caught.value.user_message


async def test_never_completes_hits_the_deadline(upstream, make_provider):
    upstream.complete_after = float("inf")
    started = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        await make_provider(poll_timeout=1.0).fetch()
    elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 2.5
    assert "timed out" in caught.value.user_message.lower() and "1 s" in caught.value.user_message
    polls = len(upstream.polls)
    await asyncio.sleep(0.3)
    assert len(upstream.polls) == polls, "polling went on after the deadline"
    # backoff, not hammering: never faster than the first delay (0.05 s), so at most 1 s / 0.05 s polls
    gaps = [b.at - a.at for a, b in zip(upstream.polls, upstream.polls[1:])]
    assert min(gaps) >= 0.04 and 3 <= polls <= 20


async def test_slow_network_still_answers(upstream, make_provider):
    upstream.latency = 0.3
    report = await make_provider(poll_timeout=5.0).fetch()
    assert report.percent == 80.4


async def test_request_hanging_past_the_deadline_times_out(upstream, make_provider):
    upstream.latency = 5
    started = time.monotonic()
    with pytest.raises(TimedOut):
        await make_provider(poll_timeout=0.7).fetch()
    assert time.monotonic() - started < 3.0  # the request hangs for 5 s


async def test_default_poll_policy_starts_fast_and_caps():
    import random

    gen = PollPolicy(jitter=0).delays(random.Random(1))
    delays = [next(gen) for _ in range(8)]
    assert delays[:3] == [1.5, 2.25, 3.0] and max(delays) == 3.0
    jittered = PollPolicy().delays(random.Random(2))
    first = [next(jittered) for _ in range(3)]
    assert first != [1.5, 2.25, 3.0] and all(abs(a - b) <= 0.11 * b for a, b in zip(first, [1.5, 2.25, 3.0]))


async def test_limiter_keeps_asks_apart():
    limiter = AskLimiter(0.3)
    starts = []
    deadline = time.monotonic() + 10
    for _ in range(3):
        await limiter.wait(deadline)
        starts.append(time.monotonic())
    assert all(b - a >= 0.29 for a, b in zip(starts, starts[1:]))
    assert AskLimiter().interval == 3.0


async def test_provider_repr_has_no_token(make_provider):
    provider = make_provider()
    assert TEST_TOKEN not in repr(provider) and TEST_TOKEN not in str(vars(provider).get("_root"))


# --- the done rule: every pending and done shape of shared/upstream.md --------------------------------

@pytest.mark.parametrize("pending_response", ["absent", "empty", "null"])
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("progress_field, as_string", [(True, False), (True, True), (False, False)])
async def test_every_pending_and_done_shape_reads_the_numbers(upstream, make_provider, pending_response, nested,
                                                              progress_field, as_string):
    upstream.complete_after = 0.4
    upstream.pending_response, upstream.nested = pending_response, nested
    upstream.progress_field, upstream.progress_as_string = progress_field, as_string
    report = await make_provider(poll=PollPolicy(initial=0.05, cap=0.1, jitter=0, use_progress=False)).fetch()
    assert (report.remaining.value, report.total.value, report.percent) == (12.06, 15.0, 80.4)
    assert len(upstream.polls) >= 2, "the pending answers must have been seen and polled past"


async def test_progress_100_with_an_empty_response_is_not_done(upstream, make_provider):
    upstream.complete_after, upstream.empty_at_100 = 0.1, 0.4  # says 100 with "response": {} for 0.4 s
    report = await make_provider(poll=PollPolicy(initial=0.05, cap=0.1, jitter=0)).fetch()
    assert report.percent == 80.4
    assert len(upstream.polls) >= 3


async def test_progress_100_that_never_brings_a_result_times_out(upstream, make_provider):
    upstream.complete_after, upstream.empty_at_100 = 0.05, float("inf")
    upstream.pending_response = "null"
    with pytest.raises(TimedOut) as caught:
        await make_provider(poll_timeout=0.8).fetch()
    assert "progress 100 without a result" in caught.value.detail


def test_done_rule_helpers():
    from bot.providers.nextleg import poll_result, progress_is_done

    result = {"content": {"Fast Time Remaining": "1/15 hours"}}
    assert poll_result({"progress": 100, "response": result}) is result
    flat = {"progress": 100, **result}
    assert poll_result(flat) is flat
    for pending in ({"progress": 42, "response": {}}, {"progress": 42, "response": None}, {"progress": 100},
                    {"response": {}}, {"response": {"content": None}}, {"content": {}}, None, [], "x"):
        assert poll_result(pending) is None, pending
    assert all(progress_is_done(p) for p in (100, 100.0, "100", " 100% "))
    assert not any(progress_is_done(p) for p in (99, "99", "incomplete", None, True, float("nan"), {}))


# --- the limiter's wait is the bot's, not the upstream's ----------------------------------------------

async def test_the_wait_for_an_ask_slot_does_not_eat_the_deadline(upstream, make_service):
    upstream.complete_after = 0.2
    service = make_service(cache_seconds=0, limiter=AskLimiter(1.5), poll_timeout=1.0)
    await service.get_report()
    started = time.monotonic()
    report = await service.get_report()  # waits ~1.2 s for its turn: more than the whole deadline
    assert report.remaining is not None
    assert time.monotonic() - started >= 1.0
    assert service.provider.last_stats["queued"] >= 0.9
    assert upstream.asks[1].at - upstream.asks[0].at >= 1.45


async def test_a_timeout_after_the_bot_held_the_ask_back_says_so(upstream, make_service):
    upstream.complete_after = 0.1
    service = make_service(cache_seconds=0, limiter=AskLimiter(1.5), poll_timeout=0.5)
    await service.get_report()
    upstream.complete_after = float("inf")
    with pytest.raises(TimedOut) as caught:
        await service.get_report()
    sentence = caught.value.user_message
    assert "within 0.5 s" in sentence and "quota-bot held the ask back 1 s" in sentence
    assert "one ask per 1.5 s" in sentence


async def test_queued_asks_each_wait_at_most_one_interval_per_ask_ahead():
    limiter = AskLimiter(0.5)
    waits = await asyncio.gather(*(limiter.wait() for _ in range(4)))
    assert waits[0] < 0.2
    for position, waited in enumerate(waits):
        # one interval per ask ahead; a wait of one interval more would be 0.5 s past it
        assert 0.5 * position - 0.05 <= waited <= 0.5 * position + 0.25, waits


@pytest.mark.parametrize("pending", [{"progress": 42, "response": {}}, {"progress": 42, "response": None},
                                     {"progress": "42", "response": {}}, {"response": {}}, {"response": None}])
async def test_a_scripted_pending_answer_with_an_empty_response_is_polled_past(upstream, make_provider, pending):
    upstream.poll_script.extend([Scripted(200, pending)] * 2)
    report = await make_provider(poll=PollPolicy(initial=0.05, cap=0.1, jitter=0)).fetch()
    assert report.percent == 80.4 and len(upstream.polls) >= 3
