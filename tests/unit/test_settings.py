"""Settings: typed, from env and .env (env wins), one-line errors naming the variable, no secrets."""

from __future__ import annotations

import pytest

from bot.settings import SettingsError, load_settings
from tests.secrets import ALL_TEST_SECRETS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("NEXTLEG_", "QUOTA_", "DISCORD_", "SLACK_")) or name in {"HOST", "PORT", "DATABASE_URL", "LOG_LEVEL"}:
            monkeypatch.delenv(name)


def test_defaults():
    s = load_settings(None)
    assert s.nextleg_base_url == "https://api.thenextleg.io" and s.nextleg_path_prefix == "/v2"
    assert s.nextleg_info_method == "GET" and s.nextleg_poll_timeout == 90 and s.quota_cache_seconds == 60
    assert (s.host, s.port) == ("0.0.0.0", 8080) and s.database_url == "sqlite:///quota-bot.sqlite3"
    assert s.simulated_upstream and s.discord_api_base_url == "https://discord.com/api/v10"
    assert s.slack_api_url == "https://slack.com/api/" and s.quota_timezone == "UTC" and s.quota_schedule_grace == 600


def test_env_file_read_and_real_environment_wins(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("PORT=9000\nQUOTA_CACHE_SECONDS=5\nNEXTLEG_API_TOKEN=from-file-token\nDISCORD_GUILD_IDS=1, 2\n")
    monkeypatch.setenv("PORT", "9100")
    s = load_settings(str(env))
    assert s.port == 9100 and s.quota_cache_seconds == 5 and s.discord_guild_ids == (1, 2)
    assert s.nextleg_api_token.get_secret_value() == "from-file-token" and not s.simulated_upstream


def test_empty_values_mean_unset(monkeypatch):
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "")
    monkeypatch.setenv("PORT", "")
    s = load_settings(None)
    assert s.discord_bot_token is None and s.port == 8080


@pytest.mark.parametrize("name, value, expected", [
    ("PORT", "eighty", "PORT: must be a whole number"),
    ("PORT", "70000", "PORT: must be less than or equal to 65535"),
    ("NEXTLEG_POLL_TIMEOUT", "0", "NEXTLEG_POLL_TIMEOUT: must be greater than 0"),
    ("NEXTLEG_POLL_TIMEOUT", "soon", "NEXTLEG_POLL_TIMEOUT: must be a number"),
    ("QUOTA_CACHE_SECONDS", "-1", "QUOTA_CACHE_SECONDS: must be greater than or equal to 0"),
    ("NEXTLEG_INFO_METHOD", "PUT", "NEXTLEG_INFO_METHOD: must be one of 'GET' or 'POST'"),
    ("NEXTLEG_BASE_URL", "api.thenextleg.io", "NEXTLEG_BASE_URL: must be a URL starting with http:// or https://"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL: must be one of"),
    ("DATABASE_URL", "postgres://x", "DATABASE_URL: must be a SQLite URL"),
    ("DISCORD_GUILD_IDS", "123,abc", "DISCORD_GUILD_IDS: must be a comma-separated list of numeric guild ids; 'abc'"),
    ("QUOTA_TIMEZONE", "Mars/Olympus", "QUOTA_TIMEZONE: 'Mars/Olympus' is not an IANA time zone name"),
    ("QUOTA_SCHEDULE_GRACE", "a while", "QUOTA_SCHEDULE_GRACE: must be a duration"),
    ("SLACK_ADMIN_USER_IDS", "U123,bob", "SLACK_ADMIN_USER_IDS: must be a comma-separated list of Slack user ids"),
])
def test_bad_value_names_the_variable_in_one_line(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    line = str(caught.value)
    assert line.startswith(expected) and "\n" not in line


def test_lower_case_method_and_level_are_accepted(monkeypatch):
    monkeypatch.setenv("NEXTLEG_INFO_METHOD", "post")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = load_settings(None)
    assert (s.nextleg_info_method, s.log_level) == ("POST", "DEBUG")


def test_grace_units(monkeypatch):
    monkeypatch.setenv("QUOTA_SCHEDULE_GRACE", "10m")
    assert load_settings(None).quota_schedule_grace == 600


def test_slack_modes(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", ALL_TEST_SECRETS["SLACK_BOT_TOKEN"])
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    assert str(caught.value).startswith("SLACK_SIGNING_SECRET: is required in HTTP mode")
    monkeypatch.setenv("SLACK_APP_TOKEN", ALL_TEST_SECRETS["SLACK_APP_TOKEN"])
    assert load_settings(None).slack_socket_mode
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-wrong-kind")
    with pytest.raises(SettingsError, match=r"^SLACK_APP_TOKEN: must be an app-level token"):
        load_settings(None)


@pytest.mark.parametrize("name", sorted(ALL_TEST_SECRETS))
def test_secrets_never_print(monkeypatch, name):
    secret = ALL_TEST_SECRETS[name]
    for other, value in ALL_TEST_SECRETS.items():
        monkeypatch.setenv(other, value)
    monkeypatch.setenv("QUOTA_PROVIDER", "nextleg")  # every provider's credential is set: choose one
    s = load_settings(None)
    assert getattr(s, name.lower()).get_secret_value() == secret
    assert secret not in repr(s) and secret not in str(s) and secret not in str(s.model_dump())
    # a malformed secret: the error names the variable, never the value
    bad = "bad value with spaces " + secret
    monkeypatch.setenv(name, bad)
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    assert str(caught.value).startswith(f"{name}:") and secret not in str(caught.value)


# --- the provider ---------------------------------------------------------------------------------

@pytest.mark.parametrize("env, provider", [
    ({}, "simulated"),
    ({"NEXTLEG_API_TOKEN": "nl-token-123"}, "nextleg"),
    ({"USEAPI_API_TOKEN": "user:123-abc"}, "useapi"),
    ({"LINKR_API_KEY": "lkr_abcdef"}, "linkr"),
    ({"MJPROXY_BASE_URL": "http://127.0.0.1:8080", "MJPROXY_ACCOUNT_ID": "1820000000000000001"}, "mjproxy"),
    ({"QUOTA_PROVIDER": "Simulated", "NEXTLEG_API_TOKEN": "nl-token-123"}, "simulated"),
    ({"QUOTA_PROVIDER": "linkr", "NEXTLEG_API_TOKEN": "nl-token-123", "LINKR_API_KEY": "lkr_abcdef"}, "linkr"),
])
def test_the_provider_is_chosen_by_its_credential_or_quota_provider(monkeypatch, env, provider):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings(None).provider == provider


@pytest.mark.parametrize("env, line", [
    ({"NEXTLEG_API_TOKEN": "nl-token-123", "USEAPI_API_TOKEN": "user:123-abc"},
     "QUOTA_PROVIDER: NEXTLEG_API_TOKEN and USEAPI_API_TOKEN are both set; set QUOTA_PROVIDER to the provider to "
     "use (nextleg or useapi)"),
    ({"QUOTA_PROVIDER": "useapi"}, "USEAPI_API_TOKEN: is required when QUOTA_PROVIDER=useapi"),
    ({"QUOTA_PROVIDER": "thenextleg"}, "QUOTA_PROVIDER: must be one of 'nextleg', 'useapi', 'linkr', 'mjproxy' or "
                                       "'simulated'"),
    ({"MJPROXY_BASE_URL": "http://127.0.0.1:8080"}, "MJPROXY_ACCOUNT_ID: is required with midjourney-proxy (the "
                                                    "account's id, as the proxy's admin page shows it)"),
    ({"USEAPI_BASE_URL": "api.useapi.net"}, "USEAPI_BASE_URL: must be a URL starting with http:// or https://"),
    ({"USEAPI_CHANNEL": "12 34"}, "USEAPI_CHANNEL: must be an id made of letters, digits, '-', '_' or '.'"),
    ({"QUOTA_READ_TIMEOUT": "0"}, "QUOTA_READ_TIMEOUT: must be greater than 0"),
])
def test_a_bad_provider_setting_is_one_line_naming_it(monkeypatch, env, line):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    assert str(caught.value) == line


def test_quota_read_timeout_wins_over_nextleg_poll_timeout(monkeypatch):
    monkeypatch.setenv("NEXTLEG_POLL_TIMEOUT", "30")
    assert load_settings(None).read_timeout == 30
    monkeypatch.setenv("QUOTA_READ_TIMEOUT", "45")
    assert load_settings(None).read_timeout == 45


def test_provider_secrets_never_show(monkeypatch):
    monkeypatch.setenv("USEAPI_API_TOKEN", "useapi-secret-9876")
    settings = load_settings(None)
    assert "useapi-secret-9876" not in repr(settings) and "useapi-secret-9876" not in str(settings)
    from bot.providers import config_from_settings

    config = config_from_settings(settings)
    assert config.token == "useapi-secret-9876" and "useapi-secret-9876" not in repr(config)
    assert config.describe() == "useapi (useapi.net) at https://api.useapi.net"
