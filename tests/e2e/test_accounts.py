"""Several accounts: the accounts file (every mistake is one line naming the file, the account and what is
wrong) and the pool that reads them concurrently."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.accounts import QuotaPool, load_accounts
from bot.errors import UnknownAccount
from bot.providers.base import AskLimiter
from bot.providers.nextleg import NextLegProvider
from bot.report import PoolReport
from bot.service import QuotaService
from bot.settings import SettingsError
from bot.simulator import Scripted, UpstreamSimulator
from tests.conftest import FAST_POLL, TEST_TOKEN

GOOD = """
[[account]]
name = "studio"
provider = "useapi"
token = "${STUDIO_TOKEN}"
channel = "1234567890"

[[account]]
name = "freelance"
provider = "nextleg"
token = "${FREELANCE_NEXTLEG_TOKEN}"
base_url = "https://api.example-clone.com"
path_prefix = "/v1"
info_method = "post"

[[account]]
name = "proxy"
provider = "mjproxy"
base_url = "http://127.0.0.1:8080"
account_id = "1820000000000000001"

[[account]]
name = "demo"
provider = "simulated"
"""


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return str(path)


def test_a_good_file_gives_every_account_with_its_provider_keys(tmp_path):
    (tmp_path / ".env").write_text("FREELANCE_NEXTLEG_TOKEN=from-dotenv-123\n")
    accounts = load_accounts(_write(tmp_path, GOOD), str(tmp_path / ".env"), environ={"STUDIO_TOKEN": "from-env-456"})
    assert [a.name for a in accounts] == ["studio", "freelance", "proxy", "demo"]
    studio, freelance, proxy, demo = (a.config for a in accounts)
    assert (studio.kind, studio.token, studio.channel, studio.base_url) == ("useapi", "from-env-456", "1234567890", None)
    assert (freelance.token, freelance.base_url, freelance.path_prefix, freelance.info_method) == (
        "from-dotenv-123", "https://api.example-clone.com", "/v1", "POST")
    assert (proxy.kind, proxy.token, proxy.account_id) == ("mjproxy", None, "1820000000000000001")
    assert demo.kind == "simulated" and "from-env-456" not in repr(accounts)
    assert studio.token_setting == "the token of account 'studio'"


def test_the_environment_wins_over_dotenv(tmp_path):
    (tmp_path / ".env").write_text("T=from-dotenv\n")
    text = '[[account]]\nname = "a"\nprovider = "linkr"\ntoken = "${T}"\n'
    [account] = load_accounts(_write(tmp_path, text), str(tmp_path / ".env"), environ={"T": "from-env"})
    assert account.config.token == "from-env"


@pytest.mark.parametrize("text, reason", [
    ("[[account]\nname = 'a'", "is not valid TOML"),
    ("", "lists no [[account]]"),
    ("[general]\nx = 1", "unknown table or key 'general'"),
    ('[[account]]\nprovider = "simulated"', "account #1: name must be 1-32 lowercase letters, digits or '-'"),
    ('[[account]]\nname = "Studio A"\nprovider = "simulated"', "account #1: name must be 1-32 lowercase letters"),
    ('[[account]]\nname = "a"\nprovider = "simulated"\n[[account]]\nname = "a"\nprovider = "simulated"',
     "account 'a': the name is used twice"),
    ('[[account]]\nname = "a"\nprovider = "thenextleg"', "account 'a': provider must be one of nextleg, useapi, "
                                                          "linkr, mjproxy, simulated, not 'thenextleg'"),
    ('[[account]]\nname = "a"\nprovider = "useapi"\ntoken = "x"\nchanel = "1"',
     "account 'a': unknown key 'chanel' for provider useapi (did you mean 'channel'?) (keys: name, provider, token, "
     "base_url, channel, stream)"),
    ('[[account]]\nname = "a"\nprovider = "useapi"\ntoken = "x"\nstream = "maybe"',
     "account 'a': stream must be on or off (or true/false, 1/0)"),
    ('[[account]]\nname = "a"\nprovider = "useapi"\ntoken = "x"\nstream = 1',
     "account 'a': stream must be a string in quotes"),
    # a misspelled 'provider' is named as the unknown key, not reported as a missing provider
    ('[[account]]\nname = "a"\nprovdier = "useapi"\ntoken = "x"',
     "account 'a': unknown key 'provdier' (did you mean 'provider'?)"),
    # a login in the base URL of a provider that sends its own Authorization header
    ('[[account]]\nname = "a"\nprovider = "useapi"\ntoken = "x"\nbase_url = "https://u:pw@api.useapi.net"',
     "account 'a': base_url must not carry a user name or password (user:password@)"),
    ('[[account]]\nname = "a"\nprovider = "linkr"\ntoken = "x"\nchannel = "1"', "unknown key 'channel' for provider linkr"),
    ('[[account]]\nname = "a"\nprovider = "useapi"', "account 'a': token is required for useapi"),
    ('[[account]]\nname = "a"\nprovider = "useapi"\ntoken = "${NOT_SET_ANYWHERE}"',
     "account 'a': token: ${NOT_SET_ANYWHERE} is not set (in the environment or .env)"),
    ('[[account]]\nname = "a"\nprovider = "useapi"\ntoken = 12', "account 'a': token must be a string in quotes"),
    ('[[account]]\nname = "a"\nprovider = "linkr"\ntoken = "x"\nbase_url = "linkrapi.com"',
     "account 'a': base_url must be a URL starting with http:// or https://"),
    ('[[account]]\nname = "a"\nprovider = "mjproxy"\nbase_url = "http://x"', "account 'a': mjproxy needs base_url and account_id"),
    ("\n".join(f'[[account]]\nname = "a{i}"\nprovider = "simulated"' for i in range(21)), "lists 21 accounts; at most 20"),
    ('[[account]]\nname = "public"\nprovider = "simulated"', "account 'public': the name is a word of /quota itself"),
])
def test_every_mistake_is_one_line_naming_the_file_and_the_account(tmp_path, text, reason):
    path = _write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_accounts(path, None, environ={})
    line = str(caught.value)
    assert line.startswith(f"QUOTA_ACCOUNTS_FILE: {path}: ") and reason in line and "\n" not in line


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match=r"accounts\.toml: no such file"):
        load_accounts(str(tmp_path / "accounts.toml"), None, environ={})


# --- the pool ---------------------------------------------------------------------------------------

@pytest.fixture
async def sims():
    made = []

    async def make(**options) -> UpstreamSimulator:
        sim = UpstreamSimulator(require_token=TEST_TOKEN, **options)
        await sim.start()
        made.append(sim)
        return sim

    yield make
    for sim in made:
        await sim.stop()


def _service(sim: UpstreamSimulator, timeout: float = 5.0) -> QuotaService:
    return QuotaService(NextLegProvider(base_url=sim.base_url, token=TEST_TOKEN, poll=FAST_POLL,
                                        limiter=AskLimiter(0.05), poll_timeout=timeout))


async def test_the_pool_sums_in_hours_reads_concurrently_and_shows_the_failing_account(sims):
    fast = await sims(complete_after=0.6)
    slow = await sims(complete_after=1.0)
    minutes = await sims(complete_after=0.6, content={"Fast Time Remaining": "120.00/200.0 minutes (60.00%)",
                                                      "Subscription": "Basic (Active monthly)"})
    broken = await sims(complete_after=0.1)
    broken.ask_script.extend([Scripted(401)] * 5)
    pool = QuotaPool({"fast": _service(fast), "slow": _service(slow), "basic": _service(minutes),
                      "broken": _service(broken)})
    try:
        started = time.monotonic()
        report = await pool.get_report()
        elapsed = time.monotonic() - started
        assert isinstance(report, PoolReport)
        # one after the other they would take 0.6 + 1.0 + 0.6 s and more; the margin is for a busy machine
        assert 1.0 <= elapsed < 2.1, "as long as the slowest account, not the sum"
        assert [a.name for a in report.accounts] == ["fast", "slow", "basic", "broken"]
        assert report.remaining_hours == pytest.approx(12.06 + 12.06 + 2.0, abs=1e-3)
        assert report.total_hours == pytest.approx(15 + 15 + 200 / 60, abs=1e-3)
        assert report.headline == "26.12 h of 33.33 h left across 3 of 4 accounts"
        failed = report.accounts[3]
        assert failed.report is None and "rejected the API token" in failed.error.user_message
        doc = report.to_json()
        assert doc["remaining"] == pytest.approx(26.12) and doc["unit"] == "hours" and doc["accounts_total"] == 4
        assert doc["accounts"][2]["unit"] == "minutes" and doc["accounts"][2]["remaining"] == 120.0
        assert doc["accounts"][3]["error"]["code"] == "bad_token" and doc["accounts"][0]["error"] is None
        # each account has its own single flight: a burst asks each one once
        for service in pool.services.values():
            service.cache_seconds = 0
        before = [len(s.asks) for s in (fast, slow, minutes)]
        await asyncio.gather(*(pool.get_report() for _ in range(50)))
        assert [len(s.asks) - b for s, b in zip((fast, slow, minutes), before)] == [1, 1, 1]
    finally:
        await pool.close()


async def test_one_account_by_name_and_an_unknown_name_lists_them(sims):
    a, b = await sims(complete_after=0.05), await sims(complete_after=0.05)
    pool = QuotaPool({"studio": _service(a), "freelance": _service(b)})
    try:
        report = await pool.get_report("freelance")
        assert report.remaining.value == 12.06 and len(a.asks) == 0 and len(b.asks) == 1
        with pytest.raises(UnknownAccount) as caught:
            await pool.get_report("nope")
        assert caught.value.user_message == "There is no account 'nope'. Accounts: studio, freelance."
        assert pool.names == ("studio", "freelance")
    finally:
        await pool.close()


async def test_without_a_file_the_single_account_answers_as_before(sims):
    sim = await sims(complete_after=0.05)
    pool = QuotaPool({"default": _service(sim)}, pooled=False)
    try:
        report = await pool.get_report()
        assert not isinstance(report, PoolReport) and report.remaining.value == 12.06
        assert pool.names == ()
        with pytest.raises(UnknownAccount):
            await pool.get_report("studio")
    finally:
        await pool.close()
