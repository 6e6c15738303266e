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
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot import __version__
from bot.service import QuotaService
from bot.settings import Settings, SettingsError
from bot.simulator import UpstreamSimulator
from bot.providers import ProviderConfig, config_from_settings, create_provider
from bot.providers.nextleg import NextLegProvider

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 8.0
LISTEN_BACKLOG = 1024


class StartupError(Exception):
    """Start-up cannot go on; ``str()`` is the one line printed before exiting with code 2."""


@dataclass
class Core:
    """The core objects one process shares (the CLI's `quota`/`check` use it too)."""

    settings: Settings
    service: QuotaService
    simulator: UpstreamSimulator | None = None
    provider: ProviderConfig | None = None

    async def close(self) -> None:
        await self.service.close()
        if self.simulator is not None:
            await self.simulator.stop()


async def build_core(settings: Settings) -> Core:
    config = config_from_settings(settings)
    simulator = None
    if config.kind == "simulated":
        simulator = UpstreamSimulator(prefix=settings.nextleg_path_prefix or "/v2")
        base_url = await simulator.start()
        provider = NextLegProvider(base_url=base_url, token="simulated", path_prefix=settings.nextleg_path_prefix,
                                   info_method=settings.nextleg_info_method,
                                   poll_timeout=settings.read_timeout, simulated=True)
        log.info("no provider credentials set: using the built-in simulated upstream at %s", base_url)
    else:
        provider = create_provider(config, poll_timeout=settings.read_timeout)
        log.info("provider: %s", config.describe())
    service = QuotaService(provider, cache_seconds=settings.quota_cache_seconds)
    return Core(settings, service, simulator, config)


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
    started: float = field(default_factory=time.time)

    def health(self) -> dict[str, Any]:
        service = self.core.service
        last = service.last_report
        return {
            "status": "ok",
            "version": __version__,
            "upstream": "simulated" if service.simulated else self.core.provider.kind if self.core.provider else "?",
            "provider": self.core.provider.describe() if self.core.provider else None,
            "adapters": [a.name for a in self.adapters],
            "uptime_seconds": round(time.time() - self.started, 1),
            "last_reading_at": last.read_at.isoformat() if last else None,
            "last_error": service.last_error.code if service.last_error else None,
        }

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(self.health())


async def serve(settings: Settings, stop: asyncio.Event, *, console_io: tuple[Any, Any] | None = None,
                started: asyncio.Future | None = None) -> None:
    """Run the bot until ``stop`` is set. Raises StartupError/SettingsError when it cannot start."""
    from bot.scheduler import Scheduler
    from bot.schedules import ScheduleError, parse_config
    from bot.store import Store, StoreError

    try:
        items = parse_config(settings.quota_schedules)
    except ScheduleError as exc:
        raise StartupError(exc.user_message) from None
    configured = {"discord": settings.discord_bot_token is not None, "slack": settings.slack_bot_token is not None}
    for item in items:
        if not configured.get(item.platform):
            token = "DISCORD_BOT_TOKEN" if item.platform == "discord" else "SLACK_BOT_TOKEN"
            raise StartupError(f"QUOTA_SCHEDULES: item '{item.platform}:{item.channel}' needs {token} to be set")

    async with AsyncExitStack() as stack:
        try:
            store = await Store.open(settings.database_path)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        stack.push_async_callback(store.close)
        core = await build_core(settings)
        stack.push_async_callback(core.close)
        core.service.subscribe(store.record_reading)

        posters: dict[str, Any] = {}
        scheduler = Scheduler(store, core.service, posters, timezone=settings.quota_timezone,
                              grace=settings.quota_schedule_grace)
        adapters = chat_adapters(settings, core.service, scheduler)
        posters.update((a.name, a) for a in adapters)
        if not adapters:
            from adapters.cli.console import ConsoleAdapter

            stdin, stdout = console_io or (None, None)
            adapters.append(ConsoleAdapter(core.service, stdin, stdout))
        runtime = Runtime(core, adapters)

        app = web.Application()
        app.router.add_get("/healthz", runtime.healthz)
        for adapter in adapters:
            adapter.mount(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        # a deep accept queue: a burst of Slack HTTP requests must not overflow it (SYN retries take 1 s)
        site = web.TCPSite(runner, settings.host, settings.port, backlog=LISTEN_BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"PORT: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        for adapter in adapters:
            try:
                await adapter.start()
            except (StartupError, SettingsError):
                raise
            except Exception as exc:
                log.exception("adapter %s failed to start", adapter.name)
                raise StartupError(f"{adapter.name} could not start: {exc}") from None
            stack.push_async_callback(_stop_adapter, adapter)

        try:
            await scheduler.sync_config(items)
        except ScheduleError as exc:
            raise StartupError(exc.user_message) from None
        await scheduler.start()
        stack.push_async_callback(scheduler.stop)

        log.info("quota-bot %s ready: provider=%s, chat=%s, http://%s:%d/healthz", __version__,
                 core.provider.kind if core.provider else "?", ",".join(a.name for a in adapters),
                 settings.host, port)
        if started is not None and not started.done():
            started.set_result({"port": port, "runtime": runtime})
        await stop.wait()
        log.info("shutting down")


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
