"""Shared fakes: every test starts the same servers the same way (all on 127.0.0.1)."""

from __future__ import annotations

import logging

import pytest

from bot.service import QuotaService
from bot.simulator import UpstreamSimulator
from bot.upstream import AskLimiter, NextLegProvider, PollPolicy

from tests.secrets import ALL_TEST_SECRETS

TEST_TOKEN = ALL_TEST_SECRETS["NEXTLEG_API_TOKEN"]
FAST_POLL = PollPolicy(initial=0.05, factor=1.5, cap=0.2, jitter=0.1)


@pytest.fixture
async def upstream():
    """The scripted fake upstream (the same server `quota-bot run` uses as its simulator)."""
    sim = UpstreamSimulator(complete_after=0.2, require_token=TEST_TOKEN)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def make_provider(upstream):
    providers: list[NextLegProvider] = []

    def factory(**kwargs) -> NextLegProvider:
        options = dict(base_url=upstream.base_url, token=TEST_TOKEN, poll=FAST_POLL,
                       limiter=AskLimiter(0.05), poll_timeout=5.0)
        options.update(kwargs)
        provider = NextLegProvider(**options)
        providers.append(provider)
        return provider

    yield factory
    for provider in providers:
        await provider.close()


@pytest.fixture
async def make_service(make_provider):
    services: list[QuotaService] = []

    def factory(cache_seconds: float = 60.0, **provider_kwargs) -> QuotaService:
        service = QuotaService(make_provider(**provider_kwargs), cache_seconds=cache_seconds)
        services.append(service)
        return service

    yield factory
    for service in services:
        await service.close()


@pytest.fixture
async def service(make_service):
    """A quota service reading from the fake upstream, with fast polling for tests."""
    return make_service()


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog):
    """Every test: no secret used by the tests may appear in any captured log line."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)  # one line per SQL call drowns the rest
    yield
    from tests.secrets import ALL_TEST_SECRETS

    text = caplog.text
    leaked = [name for name, value in ALL_TEST_SECRETS.items() if value in text]
    assert not leaked, f"secret(s) {leaked} appeared in log output"
