"""Providers: where readings come from, one module per provider behind one interface (``base.Provider``).

``ProviderConfig`` is one account's provider and credentials, from the environment
(``config_from_settings``) or the accounts file; ``create_provider`` builds the provider.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from .base import AskLimiter, HttpProvider, PollPolicy, Provider

__all__ = ["KINDS", "LABELS", "NEEDS", "ProviderConfig", "Provider", "create_provider", "config_from_settings",
           "AskLimiter", "HttpProvider", "PollPolicy"]

KINDS = ("nextleg", "useapi", "linkr", "mjproxy", "simulated")
LABELS = {"nextleg": "TheNextLeg protocol", "useapi": "useapi.net", "linkr": "LinkrAPI",
          "mjproxy": "midjourney-proxy", "simulated": "built-in simulator"}
# kind → (module, class, default base URL)
_CLASSES = {"nextleg": ("nextleg", "NextLegProvider", "https://api.thenextleg.io"),
            "useapi": ("useapi", "UseapiProvider", "https://api.useapi.net"),
            "linkr": ("linkr", "LinkrProvider", "https://linkrapi.com"),
            "mjproxy": ("mjproxy", "MjproxyProvider", None)}


# kind → the settings it reads: (name, required, what it is for)
NEEDS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "nextleg": (("NEXTLEG_API_TOKEN", True, "the API token"), ("NEXTLEG_BASE_URL", False, "the service's URL"),
                ("NEXTLEG_PATH_PREFIX", False, "its version prefix"), ("NEXTLEG_INFO_METHOD", False, "GET or POST")),
    "useapi": (("USEAPI_API_TOKEN", True, "the useapi.net API token"),
               ("USEAPI_CHANNEL", False, "needed only when the useapi.net account has several Midjourney channels")),
    "linkr": (("LINKR_API_KEY", True, "the LinkrAPI key (lkr_…)"),),
    "mjproxy": (("MJPROXY_BASE_URL", True, "the proxy's URL"), ("MJPROXY_ACCOUNT_ID", True, "the account's id"),
                ("MJPROXY_API_SECRET", False, "the admin secret, when the proxy has one")),
    "simulated": (),
}


@dataclass(frozen=True)
class ProviderConfig:
    """One account's provider. ``token`` is the credential (never shown: ``repr=False``);
    ``token_setting`` is how sentences name it (``USEAPI_API_TOKEN``, or an account's token)."""

    kind: str
    token: str | None = field(default=None, repr=False)
    base_url: str | None = None
    channel: str | None = None  # useapi
    account_id: str | None = None  # mjproxy
    path_prefix: str = "/v2"  # nextleg
    info_method: str = "GET"  # nextleg
    token_setting: str = ""
    account: str | None = None  # its name in QUOTA_ACCOUNTS_FILE (sentences then name the file's keys)
    stream: bool = True  # useapi: read the job's events as they come (USEAPI_STREAM / the file's ``stream``)

    def __post_init__(self) -> None:
        from ..settings import _LoginUrl, url_login

        if self.base_url and url_login(self.base_url):  # its repr (and so this config's) hides the login
            object.__setattr__(self, "base_url", _LoginUrl(self.base_url))

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    def describe(self) -> str:
        """What ``quota-bot check`` and ``/healthz`` say about it (no secret)."""
        if self.kind == "simulated":
            return "simulated (the built-in simulator; figures are made up)"
        from ..settings import redact_url

        where = redact_url(self.base_url or _CLASSES[self.kind][2] or "")
        extra = {"useapi": (f", channel {self.channel}" if self.channel else "") + ("" if self.stream else ", polled"),
                 "mjproxy": f", account {self.account_id}",
                 "nextleg": f"{self.path_prefix}, info by {self.info_method}"}.get(self.kind, "")
        return f"{self.kind} ({self.label}) at {where}{extra}"


def create_provider(config: ProviderConfig, **options: Any) -> Provider:
    """The provider for ``config``; ``options`` go to its constructor (poll_timeout, poll, limiter, …)."""
    module, name, default_url = _CLASSES[config.kind]
    cls: type[Provider] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    base_url, login = split_login(config.base_url or default_url or "")
    kwargs: dict[str, Any] = dict(base_url=base_url, token=config.token or "",
                                  token_setting=config.token_setting or "the API token", **options)
    if login is not None:  # only where the provider sends no Authorization of its own (settings checked)
        kwargs.update(basic_auth=login)
    if config.kind == "nextleg":
        kwargs.update(path_prefix=config.path_prefix, info_method=config.info_method)
    elif config.kind == "useapi":
        kwargs.update(channel=config.channel, stream=config.stream)
        if config.account:
            kwargs.update(channel_setting=f"channel in account '{config.account}' of QUOTA_ACCOUNTS_FILE")
    elif config.kind == "mjproxy":
        kwargs.update(account_id=config.account_id, token=config.token or None)
        if config.account:
            kwargs.update(account_setting=f"account_id in account '{config.account}' of QUOTA_ACCOUNTS_FILE")
    return cls(**kwargs)


def split_login(url: str) -> tuple[str, str | None]:
    """``(the URL without user:password@, its Basic Authorization header value or None)``."""
    import base64

    import yarl

    parsed = yarl.URL(url)
    if not (parsed.user or parsed.password):
        return url, None
    from ..logs import SECRETS

    login = "Basic " + base64.b64encode(f"{parsed.user or ''}:{parsed.password or ''}".encode()).decode("ascii")
    SECRETS.add(parsed.password, login)  # masked in every log line, whatever logs it
    return str(parsed.with_user(None)), login


def config_from_settings(settings: Any) -> ProviderConfig:
    """The single account of the environment (QUOTA_PROVIDER and the provider's own settings)."""
    kind = settings.provider

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    if kind == "nextleg":
        return ProviderConfig("nextleg", secret(settings.nextleg_api_token), settings.nextleg_base_url,
                              path_prefix=settings.nextleg_path_prefix, info_method=settings.nextleg_info_method,
                              token_setting="NEXTLEG_API_TOKEN")
    if kind == "useapi":
        return ProviderConfig("useapi", secret(settings.useapi_api_token), settings.useapi_base_url,
                              channel=settings.useapi_channel, stream=settings.useapi_stream,
                              token_setting="USEAPI_API_TOKEN")
    if kind == "linkr":
        return ProviderConfig("linkr", secret(settings.linkr_api_key), settings.linkr_base_url,
                              token_setting="LINKR_API_KEY")
    if kind == "mjproxy":
        return ProviderConfig("mjproxy", secret(settings.mjproxy_api_secret), settings.mjproxy_base_url,
                              account_id=settings.mjproxy_account_id, token_setting="MJPROXY_API_SECRET")
    return ProviderConfig("simulated", path_prefix=settings.nextleg_path_prefix,
                          info_method=settings.nextleg_info_method)
