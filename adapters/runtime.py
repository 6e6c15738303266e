"""The composition root: builds the core from the settings, starts the HTTP server and every
configured adapter, and shuts everything down cleanly on SIGTERM/SIGINT.

Each real part replaces its default as soon as its credentials are set: no provider credentials (see
QUOTA_PROVIDER) → the built-in simulated upstream; no Discord or Slack token → the console chat.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import AsyncExitStack
from zoneinfo import ZoneInfo
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from adapters.server import LISTEN_BACKLOG, MAX_BODY, HttpServer  # noqa: F401  (LISTEN_BACKLOG: bench/bench_slack.py)
from bot import __version__
from bot.service import QuotaService
from bot.settings import Settings, SettingsError
from bot.simulator import UpstreamSimulator, demo_content
from bot.accounts import Account, QuotaPool, accounts_from_settings
from bot.providers import create_provider
from bot.providers.nextleg import NextLegProvider

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 8.0
ALERT_SAMPLE_EVERY = 3600.0
CALLBACK_PROVIDERS = ("nextleg", "useapi")  # they accept a callback URL (webhookOverride, replyUrl)  # alerts need readings: background readings at least this often
ALERT_RELOAD_EVERY = 30.0  # alert states changed by other replicas are read at least this often
SCHEDULE_RECOVER_EVERY = 5.0  # runs left claimed by a stopped replica are looked for at least this often


class StartupError(Exception):
    """Start-up cannot go on; ``str()`` is the one line printed before exiting with code 2."""


@dataclass
class Core:
    """The core objects one process shares (the CLI's `quota`/`check` use it too): every account's
    service in one pool (a single account without QUOTA_ACCOUNTS_FILE)."""

    settings: Settings
    pool: QuotaPool
    accounts: list[Account]
    simulator: UpstreamSimulator | None = None
    history: Any = None  # bot.history.History once a store is open

    @property
    def service(self) -> QuotaPool:  # what adapters and the scheduler ask
        return self.pool

    async def close(self) -> None:
        await self.pool.close()
        if self.simulator is not None:
            await self.simulator.stop()


async def build_core(settings: Settings, webhook: Any = None) -> Core:
    """Raises SettingsError for a bad accounts file (before anything is started). ``webhook`` (a
    bot.webhook.WebhookHub, only where a server receives callbacks) goes to the providers that can
    call back."""
    accounts = accounts_from_settings(settings)
    simulator = None
    services: dict[str, QuotaService] = {}
    for account in accounts:
        config = account.config
        if config.kind == "simulated":
            if simulator is None:
                simulator = UpstreamSimulator(prefix=config.path_prefix or "/v2", content=demo_content)
                await simulator.start()
                log.info("readings of %s come from the built-in simulated upstream at %s",
                         "the account" if not settings.quota_accounts_file else "simulated accounts", simulator.base_url)
            provider: Any = NextLegProvider(base_url=simulator.base_url, token="simulated",
                                            path_prefix=config.path_prefix, info_method=config.info_method,
                                            poll_timeout=settings.read_timeout, simulated=True)
        else:
            options: dict[str, Any] = {"poll_timeout": settings.read_timeout}
            if webhook is not None and config.kind in CALLBACK_PROVIDERS:
                options["webhook"] = webhook
            provider = create_provider(config, **options)
            log.info("account %s: %s%s", account.name, config.describe(),
                     ", with the webhook fast path" if "webhook" in options else "")
        services[account.name] = QuotaService(provider, cache_seconds=settings.quota_cache_seconds)
    pool = QuotaPool(services, pooled=bool(settings.quota_accounts_file))
    return Core(settings, pool, accounts, simulator)


async def attach_history(settings: Settings, core: Core, store: Any) -> Any:
    """Every reading is stored and every answer carries its forecast (bot.history); each provider's
    learned job durations are read back and every new one is kept (bot.providers.timing)."""
    from bot.history import History

    core.pool.subscribe(_recorder(store))
    for name, service in core.pool.services.items():
        timing = getattr(service.provider, "timing", None)
        if timing is None or service.simulated:
            continue
        kind = str(getattr(service.provider, "name", "?"))
        try:
            timing.load(await store.job_durations(name, kind))
        except Exception:
            log.exception("account %s: the learned job durations could not be read", name)
        timing.on_sample = _keeper(store, name, kind)
    history = History(store, core.pool, sample_every=settings.sample_every(core.pool.simulated),
                      keep_days=settings.quota_history_days, tz=ZoneInfo(settings.quota_timezone),
                      configured_alerts=_configured_alerts(settings, core))
    core.pool.annotate = history.annotate
    core.pool.history = history  # what the adapters' history commands read
    core.history = history
    return history


def _configured_alerts(settings: Settings, core: Core) -> list[tuple[str, str]] | None:
    """QUOTA_ALERTS as (account, condition) pairs, for the chart's alert lines; None when it does not
    parse (start-up reports that; the chart then takes the stored alerts)."""
    from bot.alerts import AlertError, parse_config

    try:
        items = parse_config(settings.quota_alerts, core.pool.names)
    except AlertError:
        return None
    return [(item.account, condition.text) for item in items for condition in item.conditions]


def _recorder(store: Any) -> Any:
    """Every reading is stored; while the database is away it is dropped with one line (the answer and
    the other replicas do not wait for it)."""
    async def record(account: str, report: Any) -> None:
        try:
            await store.record_reading(report, account=account)
        except Exception as exc:
            log.warning("account %s: the reading was not stored (%s: %s)", account, type(exc).__name__,
                        " ".join(str(exc).split())[:200])

    return record


def _keeper(store: Any, account: str, kind: str) -> Any:
    """A job duration goes to the store in the background (never in the way of the answer)."""
    pending: set[asyncio.Task[Any]] = set()

    async def keep(seconds: float) -> None:
        try:
            await store.record_job_duration(account, kind, seconds)
        except Exception as exc:
            log.warning("account %s: a job duration was not stored (%s)", account, type(exc).__name__)

    def on_sample(seconds: float) -> None:
        task = asyncio.get_running_loop().create_task(keep(seconds))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return on_sample


# platform → (the setting that turns it on, its package)
PLATFORMS = (("discord", "DISCORD_BOT_TOKEN", "adapters.discord"),
             ("slack", "SLACK_BOT_TOKEN", "adapters.slack"))


def chat_adapters(settings: Settings, service: QuotaService, schedules: Any = None) -> list[Any]:
    """The configured chat adapters; platform libraries are imported only when configured."""
    import importlib

    adapters: list[Any] = []
    for name, token, package in PLATFORMS:
        if getattr(settings, token.lower()) is None:
            continue
        try:
            create = importlib.import_module(package).create_adapter
            adapters.append(create(settings, service, schedules))
        except ImportError as exc:
            # both libraries are default dependencies: this is a broken install, not a missing extra
            raise StartupError(f"{token} is set but the {name} library cannot be imported ({exc.name}): "
                               "reinstall quota-bot (pip install -e .)") from None
    return adapters


@dataclass
class Runtime:
    core: Core
    adapters: list[Any]
    store: Any = None
    started: float = field(default_factory=time.time)

    def health(self) -> dict[str, Any]:
        core = self.core
        accounts = []
        for account in core.accounts:
            service = core.pool.services[account.name]
            last = service.last_report
            accounts.append({"name": account.name, "provider": account.config.describe(),
                             "last_reading_at": last.read_at.isoformat() if last else None,
                             "last_error": service.last_error.code if service.last_error else None})
        first = accounts[0]
        return {
            "status": "ok",
            "version": __version__,
            "upstream": "simulated" if core.pool.simulated else ",".join(sorted({a.config.kind for a in core.accounts})),
            "provider": first["provider"] if len(accounts) == 1 else f"{len(accounts)} accounts",
            "adapters": [a.name for a in self.adapters],
            "uptime_seconds": round(time.time() - self.started, 1),
            "last_reading_at": first["last_reading_at"],
            "last_error": first["last_error"],
            "accounts": accounts,
            **{f"{a.name}_gateway": "held" if a.gateway_held else "standby"
               for a in self.adapters if getattr(a, "gateway_lease", None) is not None},
        }

    async def healthz(self, request: web.Request) -> web.Response:
        """200 with ``status: ok``, or ``status: degraded`` and the reason while the database does not
        answer, or while its latest write failed (a read-only or full disk, a revoked permission: claims of
        scheduled runs and readings are not kept) until a write succeeds again. Still 200: the bot answers
        /quota from the provider, so a platform must not kill it."""
        health = self.health()
        problem = None
        if self.store is not None:
            try:
                problem = await asyncio.wait_for(self.store.healthy(), 5)
            except Exception as exc:
                problem = f"the database did not answer ({type(exc).__name__})"
            if problem is None:
                problem = self.store.write_problem()
        health["database"] = self.store.describe() if self.store is not None else None
        if problem:
            health.update(status="degraded", reason=problem)
        return web.json_response(health)

    async def metrics(self, request: web.Request) -> web.Response:
        from bot import metrics

        return web.Response(body=metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})


async def serve(settings: Settings, stop: asyncio.Event, *, console_io: tuple[Any, Any] | None = None,
                started: asyncio.Future | None = None) -> None:
    """Run the bot until ``stop`` is set. Raises StartupError/SettingsError when it cannot start."""
    from bot.scheduler import Scheduler
    from bot.schedules import ScheduleError
    from bot.store import StoreError, open_store

    from bot.alerts import Alerts
    from bot.config import validate

    from adapters.startup import start_failure

    try:  # the same checks as every other command's (bot.config), before anything starts
        config = validate(settings)
    except SettingsError as exc:
        raise StartupError(str(exc)) from None
    items, mentions, alert_items = config.schedules, config.mentions, config.alerts
    unconfigured = config.unconfigured()  # a schedule or alert for a platform whose token is not set
    if unconfigured:
        raise StartupError(unconfigured[0])

    async with AsyncExitStack() as stack:
        try:
            store = await open_store(settings.database_url)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        stack.push_async_callback(store.close)
        refused = await store.can_write()  # a read-only login or replica: no schedule or claim could be kept
        if refused:
            raise StartupError(f"DATABASE_URL: {refused}")
        hub = None
        if settings.quota_public_url:
            from bot.webhook import WebhookHub

            hub = WebhookHub(settings.quota_public_url)
        try:
            core = await build_core(settings, webhook=hub)
        except SettingsError as exc:
            raise StartupError(str(exc)) from None
        stack.push_async_callback(core.close)
        # replicas (bot.replicas): readings shared through the store, one upstream ask per account at a time
        # (wired before anything can read: the history's sampler reads at once)
        from bot.replicas import ChangeWatcher, Lease, SharedReadings

        shared = SharedReadings(store)
        await shared.start()
        stack.push_async_callback(shared.stop)
        for service in core.pool.services.values():
            service.shared_readings = shared
        history = await attach_history(settings, core, store)
        await history.start()
        stack.push_async_callback(history.stop)
        from bot import chart

        stack.callback(chart.shutdown)  # the chart worker process, if a chart was drawn

        posters: dict[str, Any] = {}
        scheduler = Scheduler(store, core.service, posters, timezone=settings.quota_timezone,
                              grace=settings.quota_schedule_grace, min_every=settings.quota_schedule_min_every)
        alerts = Alerts(store, core.pool, posters, history=history, mentions=mentions)
        core.pool.alerts = alerts  # what the adapters' /quota-alert commands manage
        adapters = chat_adapters(settings, core.service, scheduler)
        for adapter in adapters:
            if adapter.name == "discord":  # one replica at a time holds the gateway connection
                adapter.gateway_lease = Lease(store, "discord-gateway")
        posters.update((a.name, a) for a in adapters)
        if not adapters:  # the console chat serves every command; its schedules and alerts post into it
            from adapters.cli.console import ConsoleAdapter

            stdin, stdout = console_io or (None, None)
            console = ConsoleAdapter(core.service, stdin, stdout, schedules=scheduler, alerts=alerts,
                                     history_days=settings.quota_history_days, log_note=_console_log(settings, console_io))
            adapters.append(console)
            posters["console"] = console
        runtime = Runtime(core, adapters, store=store)

        app = web.Application(client_max_size=MAX_BODY)  # a backstop: handlers read bodies with their own cap
        app.router.add_get("/healthz", runtime.healthz)
        app.router.add_get("/metrics", runtime.metrics)
        if hub is not None:
            hub.mount(app)
        for adapter in adapters:
            adapter.mount(app)
        http = HttpServer(app, settings.host, settings.port)  # timeouts, connection cap: adapters/server.py
        try:
            port = await http.start()
        except OSError as exc:
            raise StartupError(f"PORT: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
        stack.push_async_callback(http.stop)

        for adapter in adapters:
            try:
                await adapter.start()
            except (StartupError, SettingsError):
                raise
            except Exception as exc:  # one line (adapters.startup); the traceback only at DEBUG
                log.debug("adapter %s failed to start", adapter.name, exc_info=True)
                raise StartupError(start_failure(adapter.name, exc)) from None
            stack.push_async_callback(_stop_adapter, adapter)

        # schedules and alerts added or removed on another replica (or changed states of alerts): the
        # revision is read before the rows are loaded, so a change made while this replica starts counts
        watcher = ChangeWatcher(store)
        await watcher.baseline()
        try:
            await scheduler.sync_config(items)
        except ScheduleError as exc:
            raise StartupError(exc.user_message) from None
        await scheduler.start()
        stack.push_async_callback(scheduler.stop)
        await alerts.sync_config(alert_items)
        await alerts.start()
        stack.push_async_callback(alerts.stop)
        if alerts.count:
            history.ensure_sampling(ALERT_SAMPLE_EVERY)
        watcher.watch(scheduler.reload)
        # runs claimed by a replica that stopped before posting them are taken over (bot.scheduler)
        watcher.watch(scheduler.recover, at_least_every=SCHEDULE_RECOVER_EVERY)
        watcher.watch(alerts.reload, at_least_every=ALERT_RELOAD_EVERY)
        await watcher.start()
        stack.push_async_callback(watcher.stop)

        log.info("quota-bot %s ready: provider=%s, chat=%s, http://%s:%d/healthz", __version__,
                 ",".join(sorted({a.config.kind for a in core.accounts})), ",".join(a.name for a in adapters),
                 settings.host, port)
        if started is not None and not started.done():
            started.set_result({"port": port, "runtime": runtime})
        await stop.wait()
        log.info("shutting down")


def _console_log(settings: Settings, console_io: Any) -> str | None:
    """At a terminal, the console chat keeps its screen for the chat: log lines go to quota-bot.log next
    to the database (or here); under a process manager or a pipe they stay on stdout."""
    import os
    import sys

    if console_io is not None or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None
    from bot.logs import log_to_file

    folder = os.path.dirname(os.path.abspath(settings.database_path)) if settings.database_path else os.getcwd()
    path = os.path.join(folder, "quota-bot.log")
    try:
        log_to_file(path)
    except OSError as exc:
        log.warning("the log stays on the terminal: %s cannot be written (%s)", path, exc.strerror or exc)
        return None
    return f"Log lines go to {path}."


async def _stop_adapter(adapter: Any) -> None:
    try:
        await asyncio.wait_for(adapter.stop(), SHUTDOWN_SECONDS / 2)
    except Exception:
        log.exception("adapter %s did not stop cleanly", adapter.name)


async def run_until_signal(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await serve(settings, stop)
