"""The composition root of `quota-bot run`: ``App`` builds every part through its constructor, starts
them in order, and stops them in reverse within the stop budget on SIGTERM/SIGINT. The core never
imports this module. Without provider credentials it uses the built-in simulated upstream; without a
Discord or Slack token, the console chat.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from adapters.base import Adapter
from adapters.server import LISTEN_BACKLOG, MAX_BODY, HttpServer  # noqa: F401  (LISTEN_BACKLOG: bench/bench_slack.py)
from bot import __version__
from bot.accounts import Account, QuotaPool, accounts_from_settings
from bot.commands import Commands
from bot.errors import StartupError
from bot.history import History
from bot.modes import ModeSwitcher
from bot.providers import create_provider
from bot.providers.nextleg import NextLegProvider
from bot.providers.timing import LearnedTiming
from bot.service import QuotaService
from bot.settings import Settings
from bot.simulator import UpstreamSimulator, demo_content
from bot.store import Store

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 8.0
ALERT_SAMPLE_EVERY = 3600.0  # alerts need readings: background readings at least this often
CALLBACK_PROVIDERS = ("nextleg", "useapi")  # they accept a callback URL (webhookOverride, replyUrl)
ALERT_RELOAD_EVERY = 30.0  # alert states changed by other replicas are read at least this often
SCHEDULE_RECOVER_EVERY = 5.0  # runs left claimed by a stopped replica are looked for at least this often

__all__ = ["App", "Core", "StartupError", "build_core", "run_until_signal", "serve"]


@dataclass
class Core:
    """What one process reads with (the CLI's `quota`, `history` and `check` use it too): every
    account's service in one pool (a single account without QUOTA_ACCOUNTS_FILE), and, with a store,
    the history that stores every reading and annotates every answer."""

    settings: Settings
    pool: QuotaPool
    accounts: list[Account]
    simulator: UpstreamSimulator | None = None
    history: History | None = None

    @property
    def service(self) -> QuotaPool:  # what adapters and the scheduler ask
        return self.pool

    async def close(self) -> None:
        await self.pool.close()
        if self.simulator is not None:
            await self.simulator.stop()


async def build_core(settings: Settings, *, webhook: Any = None, store: Store | None = None,
                     shared: Any = None) -> Core:
    """Every account's provider and service, the history (with a ``store``: each reading is stored, each
    answer carries its forecast, each provider's learned job durations are read back and kept) and the
    pool. ``webhook`` (a bot.webhook.WebhookHub) goes to the providers that can call back; ``shared``
    (bot.replicas.SharedReadings) shares readings with the other replicas. Raises SettingsError for a
    bad accounts file, before anything is started."""
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
            if store is not None:
                options["timing"] = await _learned_timing(store, account.name, config.kind)
            provider = create_provider(config, **options)
            log.info("account %s: %s%s", account.name, config.describe(),
                     ", with the webhook fast path" if "webhook" in options else "")
        services[account.name] = QuotaService(provider, cache_seconds=settings.quota_cache_seconds, shared=shared)
    history = None
    if store is not None:
        simulated = all(s.simulated for s in services.values())
        names = tuple(services) if settings.quota_accounts_file else ()
        history = History(store, services, sample_every=settings.sample_every(simulated),
                          keep_days=settings.quota_history_days, tz=ZoneInfo(settings.quota_timezone),
                          configured_alerts=_configured_alerts(settings, names))
    pool = QuotaPool(services, pooled=bool(settings.quota_accounts_file),
                     annotate=history.annotate if history is not None else None,
                     listeners=[reading_recorder(store)] if store is not None else ())
    return Core(settings, pool, accounts, simulator, history)


async def _learned_timing(store: Store, account: str, kind: str) -> LearnedTiming:
    """How long this account's jobs take (bot.providers.timing): read back, and each new one kept."""
    timing = LearnedTiming(on_sample=_keeper(store, account, kind))
    try:
        timing.load(await store.job_durations(account, kind))
    except Exception:
        log.exception("account %s: the learned job durations could not be read", account)
    return timing


def _configured_alerts(settings: Settings, names: tuple[str, ...]) -> list[tuple[str, str]] | None:
    """QUOTA_ALERTS as (account, condition) pairs, for the chart's alert lines; None when it does not
    parse (start-up reports that; the chart then takes the stored alerts)."""
    from bot.alerts import AlertError, parse_config

    try:
        items = parse_config(settings.quota_alerts, names)
    except AlertError:
        return None
    return [(item.account, condition.text) for item in items for condition in item.conditions]


def reading_recorder(store: Any) -> Any:
    """Every reading is stored; while the database is away it is dropped with one line (the answer and
    the other replicas do not wait for it)."""
    async def record(account: str, report: Any) -> None:
        try:
            await store.record_reading(report, account=account)
        except Exception as exc:  # noqa: BLE001 - logged; the reading was answered all the same
            log.warning("account %s: the reading was not stored (%s: %s)", account, type(exc).__name__,
                        " ".join(str(exc).split())[:200])

    return record


def _keeper(store: Any, account: str, kind: str) -> Any:
    """A job duration goes to the store in the background (never in the way of the answer)."""
    pending: set[asyncio.Task[Any]] = set()

    async def keep(seconds: float) -> None:
        try:
            await store.record_job_duration(account, kind, seconds)
        except Exception as exc:  # noqa: BLE001 - logged; only the poll timing learns less
            log.warning("account %s: a job duration was not stored (%s)", account, type(exc).__name__)

    def on_sample(seconds: float) -> None:
        task = asyncio.get_running_loop().create_task(keep(seconds))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return on_sample


# platform → (the setting that turns it on, its package)
PLATFORMS = (("discord", "DISCORD_BOT_TOKEN", "adapters.discord"),
             ("slack", "SLACK_BOT_TOKEN", "adapters.slack"))


def chat_adapters(settings: Settings, service: QuotaPool, schedules: Any = None, **parts: Any) -> list[Adapter]:
    """The configured chat adapters, built with ``parts`` (``commands``; Discord's ``gateway_lease``);
    platform libraries are imported only when configured."""
    import importlib

    adapters: list[Adapter] = []
    for name, token, package in PLATFORMS:
        if getattr(settings, token.lower()) is None:
            continue
        try:
            create = importlib.import_module(package).create_adapter
        except ImportError as exc:
            # both libraries are default dependencies: this is a broken install, not a missing extra
            raise StartupError(f"{token} is set but the {name} library cannot be imported ({exc.name}): "
                               "reinstall quota-bot (pip install -e .)") from None
        own = {k: v for k, v in parts.items() if k != "gateway_lease" or name == "discord"}
        adapters.append(create(settings, service, schedules, **own))
    return adapters


@dataclass
class Health:
    """``GET /healthz`` and ``GET /metrics``."""

    core: Core
    adapters: list[Adapter]
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
            except Exception as exc:  # noqa: BLE001 - any failure is the answer: the database is unhealthy
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



class App:
    """`quota-bot run`: ``await App(settings).serve(stop)`` builds everything, serves until ``stop`` is
    set, then stops everything. Raises StartupError (one line) when it cannot start."""

    def __init__(self, settings: Settings, *, console_io: tuple[Any, Any] | None = None) -> None:
        self.settings = settings
        self.console_io = console_io

    async def serve(self, stop: asyncio.Event, started: asyncio.Future[Any] | None = None) -> None:
        from adapters.startup import start_failure
        from bot.alerts import Alerts
        from bot.config import validate
        from bot.replicas import ChangeWatcher, Lease, SharedReadings
        from bot.scheduler import Scheduler
        from bot.schedules import ScheduleError
        from bot.store import open_store

        settings = self.settings
        config = validate(settings)  # the same checks as every other command's, before anything starts
        unconfigured = config.unconfigured()  # a schedule or alert for a platform whose token is not set
        if unconfigured:
            raise StartupError(unconfigured[0])

        async with AsyncExitStack() as stack:
            store = await open_store(settings.database_url)
            stack.push_async_callback(store.close)
            refused = await store.can_write()  # a read-only login or replica: no schedule or claim could be kept
            if refused:
                raise StartupError(f"DATABASE_URL: {refused}")
            hub = None
            if settings.quota_public_url:
                from bot.webhook import WebhookHub

                hub = WebhookHub(settings.quota_public_url)
            # replicas (bot.replicas): readings shared through the store, one upstream ask per account at a
            # time (started before anything can read: the history's sampler reads at once)
            shared = SharedReadings(store)
            await shared.start()
            stack.push_async_callback(shared.stop)
            core = await build_core(settings, webhook=hub, store=store, shared=shared)
            stack.push_async_callback(core.close)
            history = core.history
            assert history is not None
            await history.start()
            stack.push_async_callback(history.stop)
            from bot import chart

            stack.callback(chart.shutdown)  # the chart worker process, if a chart was drawn

            # The scheduler and the alerts post through the adapters, and the adapters' commands manage
            # them: the adapters register in ``posters`` (the one registry filled after construction).
            posters: dict[str, Any] = {}
            scheduler = Scheduler(store, core.pool, posters, timezone=settings.quota_timezone,
                                  grace=settings.quota_schedule_grace, min_every=settings.quota_schedule_min_every)
            modes = ModeSwitcher(core.pool, store)  # speed modes: shown, switched and logged (bot.modes)
            alerts = Alerts(store, core.pool, posters, history=history, mentions=config.mentions,
                            modes=modes)  # an alert that acts (2h:relax) switches through it
            commands = Commands(core.pool, schedules=scheduler, alerts=alerts, history=history,
                                history_days=settings.quota_history_days, modes=modes)
            adapters = chat_adapters(settings, core.pool, scheduler, commands=commands,
                                     gateway_lease=Lease(store, "discord-gateway"))  # one replica holds the gateway
            if not adapters:  # the console chat serves every command; its schedules and alerts post into it
                from adapters.cli.console import ConsoleAdapter

                stdin, stdout = self.console_io or (None, None)
                adapters.append(ConsoleAdapter(core.pool, stdin, stdout, commands=commands,
                                               log_note=_console_log(settings, self.console_io)))
            posters.update((a.name, a) for a in adapters)
            health = Health(core, adapters, store=store)

            app = web.Application(client_max_size=MAX_BODY)  # a backstop: handlers read bodies with their own cap
            app.router.add_get("/healthz", health.healthz)
            app.router.add_get("/metrics", health.metrics)
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
                except Exception as exc:  # one line (adapters.startup); the traceback only at DEBUG
                    log.debug("adapter %s failed to start", adapter.name, exc_info=True)
                    raise StartupError(start_failure(adapter.name, exc)) from None
                stack.push_async_callback(_stop_adapter, adapter)

            # schedules and alerts added or removed on another replica (or changed states of alerts): the
            # revision is read before the rows are loaded, so a change made while this replica starts counts
            watcher = ChangeWatcher(store)
            await watcher.baseline()
            try:
                await scheduler.sync_config(config.schedules)
            except ScheduleError as exc:
                raise StartupError(exc.user_message) from None
            await scheduler.start()
            stack.push_async_callback(scheduler.stop)
            await alerts.sync_config(config.alerts)
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
                started.set_result({"port": port, "runtime": health, "commands": commands})
            await stop.wait()
            log.info("shutting down")


async def serve(settings: Settings, stop: asyncio.Event, *, console_io: tuple[Any, Any] | None = None,
                started: asyncio.Future[Any] | None = None) -> None:
    """Run the bot until ``stop`` is set (``App(settings).serve``). Raises StartupError when it cannot start."""
    await App(settings, console_io=console_io).serve(stop, started)


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
