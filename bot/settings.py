"""One typed settings object, read from the environment and ``.env`` (the real environment wins).

pydantic-settings does the reading (it uses python-dotenv for ``.env``) and the typing; secrets are
``SecretStr`` so they never show in a repr, a log line or an error. ``load_settings`` turns any
validation failure into ``SettingsError``: one line that names the variable and what is wrong,
never the value of a secret.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import StartupError

SECRET_NAMES = frozenset(
    {"NEXTLEG_API_TOKEN", "USEAPI_API_TOKEN", "LINKR_API_KEY", "MJPROXY_API_SECRET",
     "DISCORD_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"}
)
ProviderName = Literal["nextleg", "useapi", "linkr", "mjproxy", "simulated"]
# provider → the setting whose presence selects it when QUOTA_PROVIDER is left out (its credential)
PROVIDER_CREDENTIALS: dict[str, str] = {"nextleg": "NEXTLEG_API_TOKEN", "useapi": "USEAPI_API_TOKEN",
                                        "linkr": "LINKR_API_KEY", "mjproxy": "MJPROXY_BASE_URL"}


class SettingsError(StartupError):
    """A bad setting: ``str()`` is the one line start-up prints before exiting with code 2."""


def _http_url(value: str, name: str, *, ws: bool = False) -> str:
    schemes = ("http://", "https://", "ws://", "wss://") if ws else ("http://", "https://")
    if not isinstance(value, str) or not value.strip().lower().startswith(schemes):
        raise ValueError(f"must be a URL starting with {' or '.join(schemes)}")
    return value.strip()


def url_login(url: str) -> bool:
    """Whether the URL carries a user name or password (``https://user:pass@host/``)."""
    try:
        parts = urlsplit(url)
        return bool(parts.username or parts.password)
    except ValueError:
        return "@" in url.partition("://")[2].partition("/")[0]


def redact_url(url: str) -> str:
    """The URL as it may be shown (logs, /healthz, check, errors): without any user name or password."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return str(url)
    cut = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0] or [len(rest)])
    host = rest[:cut].rpartition("@")[2]
    return f"{scheme}{sep}{host}{rest[cut:]}"


class _LoginUrl(str):
    """A URL with ``user:password@`` (midjourney-proxy behind basic auth, a public URL behind a proxy):
    its text is whole for the client, its repr (and so the settings' repr) never shows the login."""

    def __repr__(self) -> str:
        return repr(redact_url(str(self)))


# URL settings whose service gets its own Authorization header from the bot: a login in the URL would
# collide with it (aiohttp refuses both), and would have to be shown to be debugged
_OWN_AUTHORIZATION = {"nextleg_base_url": "TheNextLeg protocol", "useapi_base_url": "useapi.net",
                      "linkr_base_url": "LinkrAPI", "discord_api_base_url": "Discord",
                      "slack_api_url": "Slack", "discord_gateway_url": "Discord"}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.I)
_DURATION_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``600``, ``600s``, ``10m``, ``1h`` → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("must be a duration such as 600, 90s, 10m or 1h")
    return float(match.group(1)) * _DURATION_UNIT[(match.group(2) or "s").lower()]


_ON = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


def parse_on_off(value: Any) -> bool:
    """``on``/``off`` (or ``true``/``false``, ``1``/``0``, ``yes``/``no``, any case) → bool; anything else
    is a ValueError (never ``bool("false")``)."""
    if isinstance(value, bool):
        return value
    flag = _ON.get(str(value).strip().lower())
    if flag is None:
        raise ValueError("must be on or off (or true/false, 1/0)")
    return flag


class _DatabaseUrl(str):
    """DATABASE_URL as given (``str()``, f-strings and comparisons see it whole), whose repr, and so the
    settings' repr, shows ``***`` for a password: ``postgresql://bot:***@host:5432/db``."""

    def __repr__(self) -> str:
        text = str(self)
        scheme, sep, rest = text.partition("://")
        if sep:
            cut = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0] or [len(rest)])
            login, at, host = rest[:cut].rpartition("@")
            if at and ":" in login:
                login = login.split(":", 1)[0] + ":***"
            text = f"{scheme}{sep}{login}{at}{host}{rest[cut:]}"
        return repr(re.sub(r"([?&](?:password|sslpassword)=)[^&#]*", r"\1***", text, flags=re.I))


def _login_checked(url: str, field: str) -> str:
    if not url_login(url):
        return url
    if field in _OWN_AUTHORIZATION:
        raise ValueError(f"must not carry a user name or password (user:password@): {_OWN_AUTHORIZATION[field]} "
                         "gets its own Authorization header; remove them from the URL")
    return _LoginUrl(url)


def _comma_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    _chosen: str = PrivateAttr("simulated")
    _env_file: str | None = PrivateAttr(None)  # where ${VAR}s of the accounts file are also looked up

    # --- provider -------------------------------------------------------------------------------
    quota_provider: ProviderName | None = None
    quota_read_timeout: float | None = Field(None, gt=0, le=840)  # alias of NEXTLEG_POLL_TIMEOUT; wins
    quota_accounts_file: str | None = None  # TOML listing several accounts (bot.accounts)
    quota_sample_every: Annotated[float | None, NoDecode] = None  # background readings; None: the default
    quota_history_days: float = Field(400.0, gt=0, le=3650)
    useapi_api_token: SecretStr | None = None
    useapi_base_url: str = "https://api.useapi.net"
    useapi_channel: str | None = None
    useapi_stream: bool = True  # read the job's events as they come (Server-Sent Events); off: poll
    linkr_api_key: SecretStr | None = None
    linkr_base_url: str = "https://linkrapi.com"
    mjproxy_base_url: str | None = None
    mjproxy_api_secret: SecretStr | None = None
    mjproxy_account_id: str | None = None

    # --- TheNextLeg protocol ----------------------------------------------------------------------
    nextleg_api_token: SecretStr | None = None
    nextleg_base_url: str = "https://api.thenextleg.io"
    nextleg_path_prefix: str = "/v2"
    nextleg_info_method: Literal["GET", "POST"] = "GET"
    nextleg_poll_timeout: float = Field(90.0, gt=0, le=840)
    quota_cache_seconds: float = Field(60.0, ge=0, le=86400)

    # --- process --------------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    database_url: str = "sqlite:///quota-bot.sqlite3"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # --- Discord --------------------------------------------------------------------------------
    discord_bot_token: SecretStr | None = None
    discord_guild_ids: Annotated[tuple[int, ...], NoDecode] = ()
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None
    # the app's Public Key (hex): Discord POSTs interactions to /discord/interactions (no gateway)
    discord_public_key: str | None = None

    # --- Slack ----------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_admin_user_ids: Annotated[tuple[str, ...], NoDecode] = ()

    # --- schedules ------------------------------------------------------------------------------
    quota_schedules: str = ""
    quota_timezone: str = "UTC"
    quota_schedule_grace: float = 600.0
    quota_schedule_min_every: float = 900.0  # seconds: a schedule may fire at most this often

    # --- alerts ---------------------------------------------------------------------------------
    quota_alerts: str = ""
    quota_alert_mention: str = ""

    # --- the webhook fast path ------------------------------------------------------------------
    quota_public_url: str | None = None  # the bot's public base URL: providers call back there

    # --- validators -----------------------------------------------------------------------------
    @field_validator("nextleg_info_method", "log_level", "quota_provider", mode="before")
    @classmethod
    def _upper(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().lower() if info.field_name == "quota_provider" else value.strip().upper()

    @field_validator("nextleg_base_url", "discord_api_base_url", "slack_api_url", "useapi_base_url",
                     "linkr_base_url", "mjproxy_base_url", "quota_public_url")
    @classmethod
    def _url(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _login_checked(_http_url(value, info.field_name), info.field_name)

    @field_validator("useapi_stream", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> bool:
        return parse_on_off(value)

    @field_validator("useapi_channel", "mjproxy_account_id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value.strip()):
            raise ValueError("must be an id made of letters, digits, '-', '_' or '.'")
        return None if value is None else value.strip()

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _login_checked(_http_url(value, info.field_name, ws=True), info.field_name)

    @field_validator("discord_public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
            raise ValueError("must be the application's Public Key: 64 hexadecimal characters (Developer Portal, "
                             "General Information)")
        return value.strip().lower()

    @field_validator("nextleg_path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip().strip("/")
        if value and not re.fullmatch(r"[A-Za-z0-9._~/-]+", value):
            raise ValueError("must be a URL path such as /v2 or /v1")
        return f"/{value}" if value else ""

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        """``sqlite:///path`` or a PostgreSQL URL (``postgresql://`` or the platforms' ``postgres://``),
        checked here so a malformed one stops start-up naming DATABASE_URL (the value, which may hold a
        password, is never repeated). The value keeps its text; only its repr hides the password."""
        from .stores.dsn import kind

        value = value.strip()
        kind(value)  # ValueError: one line, e.g. "the PostgreSQL URL's sslmode must be one of …"
        return _DatabaseUrl(value)

    @field_validator("discord_guild_ids", mode="before")
    @classmethod
    def _guild_ids(cls, value: Any) -> tuple[int, ...]:
        items = _comma_list(value)
        bad = [item for item in items if not item.isdigit()]
        if bad:
            raise ValueError(f"must be a comma-separated list of numeric guild ids; {bad[0]!r} is not one")
        return tuple(int(item) for item in items)

    @field_validator("slack_admin_user_ids", mode="before")
    @classmethod
    def _user_ids(cls, value: Any) -> tuple[str, ...]:
        items = _comma_list(value)
        bad = [item for item in items if not re.fullmatch(r"[UW][A-Z0-9]{2,}", item)]
        if bad:
            raise ValueError(f"must be a comma-separated list of Slack user ids (U…/W…); {bad[0]!r} is not one")
        return items

    @field_validator("quota_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. UTC, Europe/Berlin)") from None
        return value.strip()

    @field_validator("quota_sample_every", mode="before")
    @classmethod
    def _sample_every(cls, value: Any) -> float | None:
        if value is None:
            return None
        if str(value).strip().lower() in ("off", "0", "no", "false", "none"):
            return 0.0
        seconds = parse_duration(value)
        if seconds < 900:
            raise ValueError("must be at least 15m (or off); each reading runs /info in Discord")
        return seconds

    @field_validator("quota_schedule_grace", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("quota_schedule_min_every", mode="before")
    @classmethod
    def _min_every(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if not 1 <= seconds <= 86400:
            raise ValueError("must be between 1s and 1d, e.g. 15m")
        return seconds

    @field_validator("discord_bot_token", "slack_bot_token", "slack_app_token", "slack_signing_secret", "nextleg_api_token",
                     "useapi_api_token", "linkr_api_key", "mjproxy_api_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw != raw.strip() or any(ch.isspace() for ch in raw):
            raise ValueError("contains spaces or a line break; paste the token alone")
        if info.field_name == "slack_bot_token" and not raw.startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        if info.field_name == "slack_app_token" and not raw.startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp- (Socket Mode)")
        return value

    @model_validator(mode="after")
    def _provider(self) -> "Settings":
        chosen: str | None = self.quota_provider
        given = [name for name, setting in PROVIDER_CREDENTIALS.items() if getattr(self, setting.lower()) is not None]
        if self.quota_accounts_file:  # the accounts come from the file; these settings only feed its ${VAR}s
            self._chosen = chosen or (given[0] if given else "simulated")
            return self
        if chosen is None and len(given) > 1:
            both = " and ".join(PROVIDER_CREDENTIALS[name] for name in given)
            raise ValueError(f"QUOTA_PROVIDER: {both} are all set; set QUOTA_PROVIDER to the provider to use "
                             f"({', '.join(given)})" if len(given) > 2 else
                             f"QUOTA_PROVIDER: {both} are both set; set QUOTA_PROVIDER to the provider to use "
                             f"({' or '.join(given)})")
        chosen = chosen or (given[0] if given else "simulated")
        needed = PROVIDER_CREDENTIALS.get(chosen)
        if needed and getattr(self, needed.lower()) is None:
            raise ValueError(f"{needed}: is required when QUOTA_PROVIDER={chosen}")
        if chosen == "mjproxy" and not self.mjproxy_account_id:
            raise ValueError("MJPROXY_ACCOUNT_ID: is required with midjourney-proxy (the account's id, as the "
                             "proxy's admin page shows it)")
        self._chosen = chosen
        return self

    @model_validator(mode="after")
    def _slack_mode(self) -> "Settings":
        if self.slack_bot_token and not self.slack_app_token and not self.slack_signing_secret:
            raise ValueError(
                "SLACK_SIGNING_SECRET: is required in HTTP mode (SLACK_BOT_TOKEN is set without SLACK_APP_TOKEN)"
            )
        if (self.slack_app_token or self.slack_signing_secret) and not self.slack_bot_token:
            name = "SLACK_APP_TOKEN" if self.slack_app_token else "SLACK_SIGNING_SECRET"
            raise ValueError(f"SLACK_BOT_TOKEN: is required when {name} is set")
        return self

    @model_validator(mode="after")
    def _discord_mode(self) -> "Settings":
        if self.discord_public_key and not self.discord_bot_token:
            raise ValueError("DISCORD_BOT_TOKEN: is required when DISCORD_PUBLIC_KEY is set (commands are registered "
                             "and posts are sent with it)")
        return self

    # --- derived --------------------------------------------------------------------------------
    @property
    def provider(self) -> str:
        """The provider in use: QUOTA_PROVIDER, else the one whose credential is set, else simulated."""
        return self._chosen

    def sample_every(self, simulated: bool) -> float | None:
        """Seconds between background readings: QUOTA_SAMPLE_EVERY; by default 6 h with a real provider,
        off when every account is simulated; None when off."""
        if self.quota_sample_every is None:
            return None if simulated else 6 * 3600.0
        return self.quota_sample_every or None

    @property
    def env_file(self) -> str | None:
        return self._env_file

    @property
    def simulated_upstream(self) -> bool:
        return self.provider == "simulated"

    @property
    def read_timeout(self) -> float:
        """Seconds one reading may take, for every provider: QUOTA_READ_TIMEOUT if set, else NEXTLEG_POLL_TIMEOUT."""
        return self.quota_read_timeout if self.quota_read_timeout is not None else self.nextleg_poll_timeout

    @property
    def discord_http_mode(self) -> bool:
        """Discord POSTs interactions to /discord/interactions (DISCORD_PUBLIC_KEY): no gateway connection."""
        return self.discord_bot_token is not None and self.discord_public_key is not None

    @property
    def slack_socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def database_kind(self) -> Literal["sqlite", "postgresql"]:
        """Which store DATABASE_URL selects: ``sqlite`` (``sqlite:///…``) or ``postgresql``."""
        return "sqlite" if self.database_url.startswith("sqlite:///") else "postgresql"

    @property
    def database_path(self) -> str | None:
        """The SQLite file of DATABASE_URL; None when it is a PostgreSQL URL."""
        return self.database_url[len("sqlite:///"):] if self.database_kind == "sqlite" else None


def load_settings(env_file: str | None = ".env", **overrides: Any) -> Settings:
    """Read the settings, or raise ``SettingsError`` with one line naming the variable."""
    try:
        settings = Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]  # pydantic-settings' own argument
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    settings._env_file = env_file
    return settings


def _one_line(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    message = str(error.get("msg", "is not valid"))
    message = re.sub(r"^(Value error|Assertion failed), ", "", message)
    if error.get("loc"):
        name = str(error["loc"][0]).upper()
        if error.get("type") == "literal_error":
            message = message.replace("Input should be", "must be one of")
        elif error.get("type") in {"float_parsing", "int_parsing"}:
            message = "must be a whole number" if error["type"] == "int_parsing" else "must be a number"
        else:
            message = message.replace("Input should be", "must be")
        return f"{name}: {message}"
    return message  # model-level checks already start with the variable's name
