"""Several Midjourney accounts: the accounts file (QUOTA_ACCOUNTS_FILE, TOML) and the pool that reads them.

Every mistake in the file stops start-up with one line naming the file, the account and what is wrong.
Each account gets its own ``QuotaService``; ``QuotaPool`` reads them concurrently, and one failing
account never hides the others. The file's form: README, "Several accounts".
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol, Sequence

from dotenv import dotenv_values

from .errors import QuotaError, UnknownAccount
from .providers import KINDS, ProviderConfig
from .report import AccountReading, Answered, PoolReport, QuotaReport
from .service import Listener, QuotaService
from .settings import SettingsError, _http_url, parse_on_off, url_login

log = logging.getLogger(__name__)

SINGLE = "default"  # the account name of the one account set in the environment (no accounts file)
MAX_ACCOUNTS = 20
RESERVED = ("public", "help", "history")  # words /quota takes, so never account names  # what every chat's pooled answer fits (Discord 25 fields, Slack 50 blocks)
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
COMMON_KEYS = ("name", "provider", "token", "base_url")
OWN_KEYS = {"nextleg": ("path_prefix", "info_method"), "useapi": ("channel", "stream"), "linkr": (),
            "mjproxy": ("account_id",), "simulated": ()}
SENDS_AUTHORIZATION = ("nextleg", "useapi", "linkr")  # a login in their base_url would collide with it
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Account:
    name: str
    config: ProviderConfig


def accounts_from_settings(settings: Any) -> list[Account]:
    """The accounts file's accounts, or the environment's one account as ``default``."""
    from .providers import config_from_settings

    if settings.quota_accounts_file:
        return load_accounts(settings.quota_accounts_file, settings.env_file)
    return [Account(SINGLE, config_from_settings(settings))]


def load_accounts(path: str, env_file: str | None = ".env", environ: Mapping[str, str] | None = None) -> list[Account]:
    """Read and check the accounts file; raises ``SettingsError`` with one line naming what is wrong."""
    shown = path

    def fail(reason: str) -> SettingsError:
        return SettingsError(f"QUOTA_ACCOUNTS_FILE: {shown}: {reason}")

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise fail("no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise fail(f"cannot be read ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"is not valid TOML ({exc})") from None
    extra = sorted(set(data) - {"account"})
    if extra:
        raise fail(f"unknown table or key '{extra[0]}' (the file holds [[account]] entries only)")
    entries = data.get("account")
    if not isinstance(entries, list) or not entries:
        raise fail("lists no [[account]]")
    if len(entries) > MAX_ACCOUNTS:
        raise fail(f"lists {len(entries)} accounts; at most {MAX_ACCOUNTS} are supported")
    variables = {**{k: v for k, v in (dotenv_values(env_file) if env_file and os.path.exists(env_file) else {}).items()
                    if v is not None}, **(os.environ if environ is None else environ)}
    accounts: list[Account] = []
    for number, entry in enumerate(entries, 1):
        accounts.append(_account(entry, number, variables, fail, {a.name for a in accounts}))
    return accounts


def _account(entry: Any, number: int, variables: Mapping[str, str], fail: Callable[[str], SettingsError],
             taken: set[str]) -> Account:
    if not isinstance(entry, dict):
        raise fail(f"account #{number} is not a table")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise fail(f"account #{number}: name must be 1-32 lowercase letters, digits or '-' (e.g. studio)"
                   + ("" if name is None else f", not {str(name)[:40]!r}"))
    if name in taken:
        raise fail(f"account '{name}': the name is used twice")
    if name in RESERVED:
        raise fail(f"account '{name}': the name is a word of /quota itself ({', '.join(RESERVED)}); choose another")
    where = f"account '{name}'"
    provider = entry.get("provider")
    # a misspelled key is named first (a misspelled 'provider' is not a missing provider)
    allowed = COMMON_KEYS + OWN_KEYS[provider] if provider in KINDS else tuple(
        dict.fromkeys(COMMON_KEYS + tuple(k for keys in OWN_KEYS.values() for k in keys)))
    for key in entry:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            raise fail(f"{where}: unknown key '{key}'" + (f" for provider {provider}" if provider in KINDS else "")
                       + (f" (did you mean '{close[0]}'?)" if close else "") + f" (keys: {', '.join(allowed)})")
    if provider not in KINDS:
        raise fail(f"{where}: provider must be one of {', '.join(KINDS)}"
                   + ("" if provider is None else f", not {str(provider)[:40]!r}"))
    for key, value in entry.items():
        if key == "stream" and isinstance(value, bool):  # stream = false, or "off"
            entry = {**entry, key: "on" if value else "off"}
        elif not isinstance(value, str):
            raise fail(f"{where}: {key} must be a string in quotes")
    values: dict[str, str] = {}
    for key, value in entry.items():
        def lookup(match: re.Match[str], key: str = key) -> str:
            if match.group(1) not in variables or variables[match.group(1)] == "":
                raise fail(f"{where}: {key}: ${{{match.group(1)}}} is not set (in the environment or .env)")
            return variables[match.group(1)]
        values[key] = _VAR.sub(lookup, value).strip()
    token = values.get("token") or None
    if token is None and provider in ("nextleg", "useapi", "linkr"):
        raise fail(f"{where}: token is required for {provider}")
    if token is not None and any(ch.isspace() for ch in token):
        raise fail(f"{where}: token contains spaces or a line break")
    base_url = values.get("base_url") or None
    if base_url is not None:
        try:
            base_url = _http_url(base_url, "base_url")
        except ValueError as exc:
            raise fail(f"{where}: base_url {exc}") from None
        if url_login(base_url) and provider in SENDS_AUTHORIZATION:
            raise fail(f"{where}: base_url must not carry a user name or password (user:password@): "
                       f"{provider} gets its own Authorization header; remove them from the URL")
    if provider == "mjproxy" and (base_url is None or not values.get("account_id")):
        raise fail(f"{where}: mjproxy needs base_url and account_id")
    method = values.get("info_method", "GET").upper()
    if method not in ("GET", "POST"):
        raise fail(f"{where}: info_method must be GET or POST")
    prefix = values.get("path_prefix", "/v2").strip("/")
    if prefix and not re.fullmatch(r"[A-Za-z0-9._~/-]+", prefix):
        raise fail(f"{where}: path_prefix must be a URL path such as /v2")
    try:
        stream = parse_on_off(values.get("stream", "on"))
    except ValueError as exc:
        raise fail(f"{where}: stream {exc}") from None
    setting = f"the token of account '{name}'"
    return Account(name, ProviderConfig(provider, token, base_url, channel=values.get("channel") or None,
                                        account_id=values.get("account_id") or None, stream=stream,
                                        path_prefix=f"/{prefix}" if prefix else "", info_method=method,
                                        token_setting=setting, account=name))


class Annotator(Protocol):
    """Puts the forecast on an answer and hands it back (``bot.history.History.annotate``); never fails."""

    async def __call__(self, outcome: Answered, account: str | None, /) -> Answered: ...


class QuotaPool:
    """The accounts, each with its own service; the same ``get_report`` as a single ``QuotaService``,
    plus ``account=`` to read one of them. Without an accounts file (``pooled=False``) it holds the
    environment's one account as ``default`` and answers exactly as that account's service does."""

    def __init__(self, services: dict[str, QuotaService], *, pooled: bool = True,
                 annotate: Annotator | None = None,
                 listeners: Sequence[Callable[[str, QuotaReport], Any]] = ()) -> None:
        self.services = services
        for name, service in services.items():
            service.account = name  # its label in the metrics
        self.pooled = pooled
        self.annotate = annotate  # bot.history: the forecast put on every answer
        for listener in listeners:  # e.g. the store's recorder: every fresh reading of every account
            self.subscribe(listener)
        self._inflight: asyncio.Task[PoolReport] | None = None
        self.providers = {name: "simulated" if s.simulated else getattr(s.provider, "name", "?")
                          for name, s in services.items()}

    @property
    def names(self) -> tuple[str, ...]:
        """The names a command may choose from; none without an accounts file."""
        return tuple(self.services) if self.pooled else ()

    @property
    def single(self) -> QuotaService | None:
        return None if self.pooled else next(iter(self.services.values()))

    @property
    def simulated(self) -> bool:
        return all(s.simulated for s in self.services.values())

    def subscribe(self, listener: Callable[[str, QuotaReport], Any]) -> None:
        """``listener(account, report)`` after every fresh reading of any account."""
        for name, service in self.services.items():
            service.subscribe(_bind(listener, name))

    def ready(self, account: str | None = None) -> bool:
        """Whether ``get_report(account)`` would answer from the services' caches, without asking anyone."""
        if self.single is not None:
            return self.single.ready(account)
        if account is not None:
            service = self.services.get(account)
            return service is not None and service.ready()
        return all(service.ready() for service in self.services.values())

    async def get_report(self, account: str | None = None) -> QuotaReport | PoolReport:
        if self.single is not None:
            return await self._annotated(await self.single.get_report(account), SINGLE)
        if account is not None:
            service = self.services.get(account)
            if service is None:
                raise UnknownAccount(account, self.names)
            return await self._annotated(await service.get_report(), account)
        # callers at the same moment share one pooled read (each account is single-flight anyway; this
        # spares a burst of 200 /quota the 200 × N waits and N-account summaries)
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._read_all(), name="pooled-reading")
            self._inflight.add_done_callback(self._clear)
        return await asyncio.shield(self._inflight)

    def _clear(self, task: asyncio.Task[PoolReport]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _read_all(self) -> PoolReport:
        outcomes = await asyncio.gather(*(s.get_report() for s in self.services.values()), return_exceptions=True)
        readings = []
        for name, outcome in zip(self.services, outcomes):
            if isinstance(outcome, QuotaReport):
                readings.append(AccountReading(name, self.providers[name], report=outcome))
            else:
                if not isinstance(outcome, QuotaError):
                    log.error("account %s: reading failed unexpectedly", name, exc_info=outcome)
                readings.append(AccountReading(name, self.providers[name], error=outcome))
        return await self._annotated(PoolReport(tuple(readings), datetime.now(timezone.utc)), None)

    async def _annotated(self, outcome: Answered, account: str | None) -> Answered:
        return outcome if self.annotate is None else await self.annotate(outcome, account)

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        await asyncio.gather(*(s.close() for s in self.services.values()), return_exceptions=True)


def _bind(listener: Callable[[str, QuotaReport], Any], name: str) -> Listener:
    return lambda report: listener(name, report)
