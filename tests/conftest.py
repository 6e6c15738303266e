"""Shared fakes: every test starts the same servers the same way (all on 127.0.0.1)."""

from __future__ import annotations

import logging

import pytest

from bot.providers.base import AskLimiter, PollPolicy
from bot.providers.nextleg import NextLegProvider
from bot.service import QuotaService
from bot.simulator import UpstreamSimulator
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


# --- stores: SQLite and a real PostgreSQL server (tests/pg.py) ----------------------------------------

@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the whole session (tests/pg.py): ``url(dbname)``,
    ``create_database()``, ``psql(sql, dbname)``, ``stop()``/``start()`` for fault tests. Without
    PostgreSQL's binaries the tests that use it fail (never skip), saying what to install."""
    from tests.pg import PostgresNotFound, PostgresServer

    try:
        server = PostgresServer.start_new()
    except PostgresNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server):
    """The URL of a fresh, empty database on ``pg_server`` (as its superuser, sslmode=disable)."""
    return pg_server.url(pg_server.create_database())


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """DATABASE_URL of a fresh database, once per store: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.sqlite3"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def open_stores(store_url):
    """``await open_stores()`` opens a store on ``store_url`` (each call another instance on the same
    database, as replicas would); ``open_stores(url)`` another URL. All are closed at the end."""
    from bot.store import open_store

    opened = []

    async def factory(url: str | None = None):
        store = await open_store(url or store_url)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_stores):
    """A store on a fresh database, once per kind (``store_url``'s params)."""
    return await open_stores()


@pytest.fixture
async def discord_fake():
    """The fake Discord (REST, gateway, signed interactions), with the tests' bot token."""
    from tests.fakes.discord import FakeDiscord

    fake = await FakeDiscord(ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def discord_http_endpoint(discord_fake, service):
    """The Discord adapter in HTTP mode (DISCORD_PUBLIC_KEY) over ``service``, on the bot's own HTTP server,
    with ``discord_fake`` sending its signed interactions there."""
    from tests.fakes.discord import start_http_mode

    adapter, http, url = await start_http_mode(service, api_url=discord_fake.api_url, public_key=discord_fake.public_key,
                                               token=ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"])
    discord_fake.endpoints = [url]
    yield adapter
    await adapter.stop()
    await http.stop()


@pytest.fixture
async def slack_fake():
    """The fake Slack (Web API, Socket Mode, response_url sink), with the tests' bot and app tokens."""
    from tests.fakes.slack import FakeSlack

    fake = await FakeSlack(ALL_TEST_SECRETS["SLACK_BOT_TOKEN"], ALL_TEST_SECRETS["SLACK_APP_TOKEN"]).start()
    yield fake
    await fake.stop()
