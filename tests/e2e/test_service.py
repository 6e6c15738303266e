"""The service: single flight, cache, typed errors — against the fake upstream."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.errors import BadToken, TimedOut
from bot.simulator import Scripted


async def test_fifty_concurrent_callers_share_one_ask(upstream, make_service):
    upstream.complete_after = 0.3
    service = make_service()
    reports = await asyncio.gather(*(service.get_report() for _ in range(50)))
    assert len(upstream.asks) == 1
    assert all(r is reports[0] for r in reports)
    assert service.asks == 1 and service.shared == 49


async def test_cache_hit_then_expiry(upstream, make_service):
    service = make_service(cache_seconds=0.4)
    first = await service.get_report()
    assert await service.get_report() is first and len(upstream.asks) == 1
    await asyncio.sleep(0.45)
    second = await service.get_report()
    assert second is not first and len(upstream.asks) == 2
    assert second.remaining.value < first.remaining.value  # the simulator's account drains


async def test_cache_zero_only_shares_in_flight(upstream, make_service):
    service = make_service(cache_seconds=0)
    await asyncio.gather(service.get_report(), service.get_report())
    assert len(upstream.asks) == 1
    await service.get_report()
    assert len(upstream.asks) == 2


async def test_limiter_spaces_back_to_back_asks(upstream, make_service):
    from bot.providers.base import AskLimiter

    service = make_service(cache_seconds=0, limiter=AskLimiter(0.5))
    await service.get_report()
    await service.get_report()
    assert upstream.asks[1].at - upstream.asks[0].at >= 0.49


async def test_errors_are_shared_and_not_cached(upstream, make_service):
    service = make_service()
    upstream.ask_script.append(Scripted(401))
    results = await asyncio.gather(*(service.get_report() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, BadToken) for r in results) and len(upstream.asks) == 1
    assert service.last_error is results[0]
    report = await service.get_report()  # the next caller asks again
    assert report.percent == 80.4 and service.last_error is None


async def test_one_cancelled_caller_does_not_cancel_the_others(upstream, make_service):
    upstream.complete_after = 0.3
    service = make_service()
    impatient = asyncio.ensure_future(service.get_report())
    patient = asyncio.ensure_future(service.get_report())
    await asyncio.sleep(0.05)
    impatient.cancel()
    report = await patient
    assert report.percent == 80.4 and len(upstream.asks) == 1


async def test_timeout_sentence_says_how_long(upstream, make_service):
    upstream.complete_after = float("inf")
    service = make_service(poll_timeout=0.5)
    with pytest.raises(TimedOut) as caught:
        await service.get_report()
    assert caught.value.user_message == "Timed out: the Midjourney API gave no answer within 0.5 s."


async def test_listeners_get_each_fresh_reading_and_cannot_break_it(upstream, make_service, caplog):
    service = make_service(cache_seconds=0)
    seen = []

    async def record(report):
        seen.append(report)

    def broken(report):
        raise RuntimeError("listener bug")

    service.subscribe(record)
    service.subscribe(broken)
    report = await service.get_report()
    assert seen == [report]
    assert "a reading listener failed" in caplog.text


async def test_no_secret_in_logs_even_at_debug(upstream, make_service, caplog):
    caplog.set_level(logging.DEBUG)
    service = make_service(cache_seconds=0)
    upstream.ask_script.extend([Scripted(500), Scripted(401)])
    with pytest.raises(BadToken):
        await service.get_report()
    await service.get_report()
    assert "Bearer" not in caplog.text
    # the autouse fixture asserts the token itself is absent


async def test_ready_says_whether_a_reading_is_at_hand_without_asking(upstream, make_service):
    from bot.accounts import QuotaPool
    from bot.commands import Call, Commands, catalog

    service = make_service(cache_seconds=0.4)
    assert not service.ready() and upstream.asks == []
    await service.get_report()
    assert service.ready() and not service.ready("studio"), "one account: a name is never at hand"
    await asyncio.sleep(0.45)
    assert not service.ready(), "expired"
    lab, studio = make_service(cache_seconds=60), make_service(cache_seconds=60)
    pool = QuotaPool({"lab": lab, "studio": studio})
    await studio.get_report()
    assert pool.ready("studio") and not pool.ready("lab") and not pool.ready(), "the pool needs every account"
    assert not pool.ready("nobody")
    await lab.get_report()
    assert pool.ready()
    quota = next(c for c in catalog(("lab", "studio"), 400) if c.path == ("quota",))
    commands = Commands(pool)
    assert commands.ready(Call(quota, {"account": "lab"})) and commands.ready(Call(quota, {}))
    lab.invalidate()
    assert not commands.ready(Call(quota, {})) and commands.ready(Call(quota, {"account": "studio"}))
