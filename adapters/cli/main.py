"""`quota-bot`: run the bot, print one reading, or check the setup.

Exit codes: 0 fine; 1 the upstream or a check failed (one line on stderr); 2 a bad setting or a
start-up failure (one line on stderr naming the variable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any, Sequence

from pydantic import SecretStr

from bot import __version__
from bot.config import TOKENS
from bot.errors import QuotaError, user_sentence
from bot.logs import mask, setup_logging
from bot.report import PoolReport
from bot.settings import SECRET_NAMES, Settings, SettingsError, load_settings

from .render import render_reading

log = logging.getLogger("quota_bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quota-bot", description="Midjourney fast-time quota bot")
    parser.add_argument("--version", action="version", version=f"quota-bot {__version__}")
    parser.add_argument("--env-file", metavar="PATH", default=None,
                        help="settings file to read; it must exist (default: .env, if there is one; the environment wins)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,quota,history,check}")
    sub.add_parser("run", help="start the HTTP server and every configured chat adapter")
    quota = sub.add_parser("quota", help="print one reading and exit")
    quota.add_argument("--json", action="store_true", help="print one JSON document")
    quota.add_argument("--account", metavar="NAME", help="only this account of QUOTA_ACCOUNTS_FILE")
    sub.add_parser("check", help="validate the settings, make one upstream call, say what works")
    history = sub.add_parser("history", help="the fast time of the last days: pace, forecast, a chart")
    history.add_argument("--days", type=_days, default=30, help="how many days back (1-400, default 30)")
    history.add_argument("--account", metavar="NAME", help="only this account of QUOTA_ACCOUNTS_FILE")
    history.add_argument("--json", action="store_true", help="print one JSON document")
    history.add_argument("--png", metavar="FILE", help="also write the chart (1200x600 PNG) to FILE")
    return parser


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number of days") from None
    if not 1 <= days <= 400:
        raise argparse.ArgumentTypeError("must be between 1 and 400")
    return days


def _fail(line: str, code: int, detail: str = "") -> int:
    """One line on stderr; the detail (what the log would say) on a second one, secrets masked."""
    print(f"quota-bot: {line}", file=sys.stderr)
    if detail:
        print(f"  detail: {mask(' '.join(detail.split()))[:300]}", file=sys.stderr)
    return code


def _fail_reading(exc: BaseException) -> int:
    """A reading failed: its sentence, then the detail the sentence refers to ("it has been logged")."""
    detail = exc.detail if isinstance(exc, QuotaError) else f"{type(exc).__name__}: {exc}"
    log.info("quota failed: %s", exc, exc_info=not isinstance(exc, QuotaError))
    return _fail(user_sentence(exc), 1, detail)


def _env_file(given: str | None) -> str | None:
    """The settings file to read: ``--env-file PATH`` (which must be a readable file: a mistyped path
    must not quietly start the simulator), else ``.env`` when there is one, else none."""
    if given is None:
        return ".env" if os.path.isfile(".env") else None
    if not os.path.exists(given):
        raise SettingsError(f"--env-file: {given} does not exist")
    if not os.path.isfile(given) or not os.access(given, os.R_OK):
        raise SettingsError(f"--env-file: {given} is not a readable file")
    return given


def _settings(env_file: str | None, command: str) -> Settings:
    from bot.config import validate

    path = _env_file(env_file)
    try:
        settings = load_settings(path)
    except (OSError, UnicodeDecodeError) as exc:  # read between the check above and now, or not text
        raise SettingsError(f"--env-file: cannot read {path} ({type(exc).__name__})") from None
    # every command stops on a malformed setting (the accounts file, QUOTA_SCHEDULES, QUOTA_ALERTS,
    # QUOTA_ALERT_MENTION), before anything starts; the accounts' tokens are masked like the rest
    config = validate(settings)
    secrets = [getattr(settings, name.lower()) for name in SECRET_NAMES]
    secrets += [SecretStr(a.config.token) for a in config.accounts if a.config.token]
    if command == "run":
        setup_logging(settings.log_level, secrets=[s.get_secret_value() for s in secrets if s is not None])
    else:  # one-shot commands: stdout is the answer; the log goes to stderr, details only with LOG_LEVEL=DEBUG
        level = "DEBUG" if settings.log_level == "DEBUG" else "CRITICAL"
        setup_logging(level, stream=sys.stderr, secrets=[s.get_secret_value() for s in secrets if s is not None])
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args.env_file, args.command)
    except SettingsError as exc:
        return _fail(str(exc), 2)
    try:
        if args.command == "run":
            return asyncio.run(_run(settings))
        if args.command == "quota":
            return asyncio.run(_quota(settings, args.json, args.account))
        if args.command == "history":
            return asyncio.run(_history(settings, args))
        return asyncio.run(_check(settings))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `quota-bot history --json | head`: the reader left; not an error
        sys.stderr.close()
        return 0


async def _run(settings: Settings) -> int:
    from adapters.app import StartupError, run_until_signal

    try:
        await run_until_signal(settings)
    except (StartupError, SettingsError) as exc:
        return _fail(str(exc), 2)
    return 0


async def _core_with_history(settings: Settings) -> tuple[Any, Any]:
    """(the core, its store): the store and the history behind the pace line, or (core, None) and a log
    line when the database cannot be used: the reading is still printed, without its forecast."""
    from adapters.app import build_core
    from bot.store import StoreError, open_store

    try:
        store = await open_store(settings.database_url)
    except StoreError as exc:
        log.warning("no history: %s", exc)
        return await build_core(settings), None
    try:
        core = await build_core(settings, store=store)
    except BaseException:
        await store.close()
        raise
    assert core.history is not None
    await core.history.seed_demo()
    return core, store


async def _quota(settings: Settings, as_json: bool, account: str | None = None) -> int:
    core, store = await _core_with_history(settings)
    try:
        report = await core.pool.get_report(account)
    except Exception as exc:  # noqa: BLE001 - typed errors and bugs alike: a sentence and its detail, never a traceback
        return _fail_reading(exc)
    finally:
        await core.close()
        if store is not None:
            await store.close()
    print(json.dumps(report.to_json(), ensure_ascii=False, indent=2) if as_json else render_reading(report))
    if isinstance(report, PoolReport) and not report.answered:
        return 1  # every account failed: the output says why, the exit code says it failed
    return 0


async def _history(settings: Settings, args: argparse.Namespace) -> int:
    """What the stored readings say: no upstream call (background readings and commands make them)."""
    from zoneinfo import ZoneInfo

    from bot.chart import render_png
    from bot.errors import UnknownAccount
    from bot.history import chart_spec

    from .render import render_history

    core, store = await _core_with_history(settings)
    try:
        if store is None:
            return _fail("no history: the database of DATABASE_URL cannot be used", 1)
        if args.account is not None and args.account not in core.pool.services or (
                args.account is not None and not core.pool.names):
            return _fail(UnknownAccount(args.account, core.pool.names).user_message, 1)
        data = await core.history.data(args.days, args.account)
        if args.png:  # one chart in a one-shot command: drawn here, no worker process
            png = await asyncio.to_thread(render_png, chart_spec(data, tz=ZoneInfo(settings.quota_timezone)))
            try:
                with open(args.png, "wb") as handle:
                    handle.write(png)
            except OSError as exc:
                return _fail(f"--png: cannot write {args.png}: {exc.strerror or exc}", 1)
        print(json.dumps(data.to_json(), ensure_ascii=False, indent=2) if args.json else render_history(data))
        if args.png and not args.json:
            print(f"  chart written to {os.path.abspath(args.png)}")
        return 0
    finally:
        await core.close()
        if store is not None:
            await store.close()


async def _check(settings: Settings) -> int:
    from adapters.app import build_core
    from bot.config import validate

    configuration = validate(settings)  # as in _settings: it passed there

    problems = 0

    def say(ok: bool | str | None, text: str) -> None:  # "warn": worth fixing, not a failure
        nonlocal problems
        mark = {True: "ok  ", False: "FAIL", None: "--  ", "warn": "warn"}[ok]
        problems += ok is False
        print(f"[{mark}] {text}")

    from bot.providers import NEEDS

    read = (f"read from {os.path.abspath(settings.env_file)} and the environment" if settings.env_file
            else "read from the environment only (no .env here; --env-file PATH reads another file)")
    say(True, f"settings are valid; {read}")
    core = await build_core(settings)
    try:
        if settings.quota_accounts_file:
            say(True, f"QUOTA_ACCOUNTS_FILE: {len(core.accounts)} account(s) in {settings.quota_accounts_file}")
        for account in core.accounts:
            config = account.config
            who = f"account {account.name}: " if settings.quota_accounts_file else ""
            if config.kind == "simulated":
                say(None, f"{who}provider: the built-in simulator" + ("" if who else
                    " (no provider credentials are set: set one of NEXTLEG_API_TOKEN, USEAPI_API_TOKEN, "
                    "LINKR_API_KEY or MJPROXY_BASE_URL, or QUOTA_PROVIDER)"))
            elif who:
                say(True, f"{who}provider: {config.describe()}")
            else:
                needs = "; ".join(f"{name} {'set' if _is_set(settings, name) else 'not set'}"
                                  + ("" if required or _is_set(settings, name) else f" ({why})")
                                  for name, required, why in NEEDS[config.kind])
                say(True, f"provider: {config.describe()}; {needs}; a reading may take {settings.read_timeout:g} s")
        readings = await asyncio.gather(*(core.pool.services[a.name].get_report() for a in core.accounts),
                                        return_exceptions=True)
        for account, outcome in zip(core.accounts, readings):
            who = f"account {account.name}: " if settings.quota_accounts_file else ""
            if isinstance(outcome, BaseException):
                detail = getattr(outcome, "detail", "") or (type(outcome).__name__ if not isinstance(outcome, QuotaError) else "")
                say(False, f"{who}provider: {user_sentence(outcome)}" + (f" [{mask(detail)}]" if detail else ""))
            else:
                say(True, f"{who}provider answered: {outcome.headline}" + (" (simulated)" if outcome.simulated else ""))
        # each chat platform is asked what `run` asks it at start, with the same failure sentences
        if settings.discord_bot_token:
            for result in await _check_discord(settings, core.service):
                say(*result)
        else:
            say(None, "Discord: not configured (set DISCORD_BOT_TOKEN)")
        if settings.slack_bot_token:
            say(*await _check_slack(settings, core.service))
        else:
            say(None, "Slack: not configured (set SLACK_BOT_TOKEN)")
    finally:
        await core.close()
    configured = configuration.platforms
    from bot.store import StoreError, open_store

    stored_alerts: list[Any] = []
    stored_schedules: list[Any] = []
    every_alert: list[Any] = []
    alert_switches: list[Any] = []
    try:
        store = await open_store(settings.database_url)
        try:
            stored_schedules = await store.schedules()
            every_alert = await store.alerts()
            stored_alerts = [a for a in every_alert if a.source == "chat"]
            alert_switches = [s for s in await store.mode_switches(500) if s.cause == "alert"]
            refused = await store.can_write()
        finally:
            await store.close()
        if refused:
            say(False, f"DATABASE_URL: {refused}")
        else:
            say(True, f"database {store.describe()}: can write; {len(stored_schedules)} schedule(s), "
                      f"{len(stored_alerts)} alert(s) from chat stored")
    except StoreError as exc:
        say(False, str(exc))
    for row in stored_schedules:  # added from a chat, then run without that chat: nothing can post them
        if row.platform == "console":  # posts while the console chat runs (no chat token), paused otherwise
            if configured:
                say(None, f"schedule #{row.id} from the console ({row.when_text}) is paused: the console chat runs "
                          "only when neither DISCORD_BOT_TOKEN nor SLACK_BOT_TOKEN is set")
            continue
        if row.source == "chat" and row.platform not in configured:
            say(False, f"schedule #{row.id} from chat posts to {row.platform}:{row.channel} ({row.when_text}), "
                       f"but {_title(row.platform)} is not configured (set {TOKENS[row.platform]}, or remove it "
                       f"there with /quota-schedule remove {row.id})")
    _say_floor(say, stored_schedules, settings.quota_schedule_min_every)
    # QUOTA_SCHEDULES / QUOTA_ALERTS are well-formed here (a malformed one stopped the command in _settings)
    missing = sorted({i.platform for i in configuration.schedules} - configured)
    if missing:
        say(False, f"QUOTA_SCHEDULES: posts to {', '.join(missing)}, which is not configured")
    elif configuration.schedules:
        say(True, f"QUOTA_SCHEDULES: {len(configuration.schedules)} schedule(s) in {settings.quota_timezone}")
    for item in configuration.alerts:
        where = f"{item.platform}:{item.channel}" + (f"@{item.account}" if item.account else "")
        conditions = ", ".join(c.text for c in item.conditions)
        if item.platform in configured:
            say(True, f"QUOTA_ALERTS: {where} when below {conditions}")
        else:
            say(False, f"QUOTA_ALERTS: {where} posts to {item.platform}, which is not configured")
    for row in stored_alerts:
        where = f"{row.platform}:{row.channel}" + (f"@{row.account}" if row.account else "")
        if row.platform in configured or (row.platform == "console" and not configured):
            say(True, f"alert #{row.id} from chat: {where} when below {row.condition} ({row.state})")
        elif row.platform == "console":  # posts while the console chat runs (no chat token), paused otherwise
            say(None, f"alert #{row.id} from the console (below {row.condition}) is paused: the console chat runs "
                      "only when neither DISCORD_BOT_TOKEN nor SLACK_BOT_TOKEN is set")
        else:
            say(False, f"alert #{row.id} from chat posts to {where} (below {row.condition}), but "
                       f"{_title(row.platform)} is not configured (set {TOKENS[row.platform]}, or remove it "
                       f"there with /quota-alert remove {row.id})")
    _say_acting(say, configuration, every_alert, alert_switches, core.pool)
    if settings.quota_public_url:
        say(*await _webhook_reachable(settings.quota_public_url))
    alerts_set = bool(settings.quota_alerts.strip()) or bool(stored_alerts)
    every = settings.sample_every(core.pool.simulated) or (3600.0 if alerts_set else None)
    say(None if every is None else True, "background readings: " + (
        f"every {every / 3600:g} h" if every and every % 3600 == 0 else f"every {every / 60:g} min" if every
        else "off (QUOTA_SAMPLE_EVERY)") + f"; readings kept {settings.quota_history_days:g} days")
    if not settings.discord_bot_token and not settings.slack_bot_token:
        say(None, "no chat platform configured: `quota-bot run` opens the console chat")
    print("all checks passed" if not problems else f"{problems} check(s) failed")
    return 0 if not problems else 1


def _say_acting(say: Any, configuration: Any, rows: list[Any], switches: list[Any], pool: Any) -> None:
    """The alerts that act (``2h:relax``): the account each switches to Relax, whether its provider can,
    and the last switches each made (the store's log, bot.modes)."""
    from datetime import datetime, timezone

    from bot.alerts import AlertError, parse_condition
    from bot.modes import ModeSwitcher, mode_name

    switcher = ModeSwitcher(pool)
    configured = {(i.platform, i.channel, i.account, c.text) for i in configuration.alerts for c in i.conditions}
    acting = [(row.id, row.platform, row.channel, row.account, row.condition) for row in rows
              if row.source == "chat" or (row.platform, row.channel, row.account, row.condition) in configured]
    stored = {(p, ch, acc, cond) for _, p, ch, acc, cond in acting}
    acting += [(None, *key) for key in sorted(configured - stored)]  # not stored yet: `run` adds them
    for alert_id, platform, channel, account, condition in acting:
        try:
            if not parse_condition(condition).action:
                continue
        except AlertError:
            continue
        name = account or next(iter(pool.services), "")
        which = f"alert #{alert_id}" if alert_id is not None else "QUOTA_ALERTS"
        text = f"{which} ({platform}:{channel}={condition}) switches {account or 'the account'} to Relax when it fires"
        cannot = switcher.cannot_switch(name, account or None)
        if cannot is not None:
            say("warn", f"{text}, but {cannot.user_message[0].lower()}{cannot.user_message[1:-1]}: it posts that "
                        "instead")
            continue
        mine = [s for s in switches if alert_id is not None and s.who == f"alert #{alert_id}"][:3]
        done = "; ".join(f"{datetime.fromtimestamp(s.at, timezone.utc):%Y-%m-%d %H:%M} UTC "
                         f"{mode_name(s.from_mode) if s.from_mode else '?'} → {mode_name(s.to_mode)}, {s.outcome}"
                         for s in mine)
        say(True, f"{text}, back when it re-arms; " + (f"last switches: {done}" if done else "no switch yet"))


def _say_floor(say: Any, rows: list[Any], minimum: float) -> None:
    """A stored schedule that fires more often than QUOTA_SCHEDULE_MIN_EVERY (added before it was raised):
    a warning naming it; `run` runs it at the minimum (bot.scheduler)."""
    from bot.schedules import ScheduleError, parse_when, span

    for row in rows:
        try:
            gap = parse_when(row.when_text).min_gap
        except ScheduleError:
            continue
        if gap < minimum:
            say("warn", f"schedule #{row.id} from {row.source} ({row.platform}:{row.channel}={row.when_text}) fires "
                        f"{'as often as ' if not row.when_text.lower().startswith('every') else ''}every {span(gap)}, "
                        f"more often than QUOTA_SCHEDULE_MIN_EVERY ({span(minimum)}): it runs at most every "
                        f"{span(minimum)} (remove it with /quota-schedule remove {row.id} and add a slower one)")


CHAT_CHECK_SECONDS = 60.0  # one platform's whole check (a login and its registrations, or two Web API calls)


def _title(platform: str) -> str:
    from adapters.startup import TITLES

    return TITLES.get(platform, platform)


async def _check_discord(settings: Settings, service: Any) -> list[tuple[bool | str, str]]:
    """What `run` does before the gateway: log in (``GET /users/@me``), read the application, register
    the commands (``PUT …/commands``, globally or in each DISCORD_GUILD_IDS guild); then close. No
    gateway connection."""
    from adapters.discord import create_adapter
    from adapters.startup import discord_unreachable, start_failure

    adapter = create_adapter(settings, service)
    try:
        try:
            await asyncio.wait_for(adapter.login(), CHAT_CHECK_SECONDS)
        except asyncio.TimeoutError as exc:
            return [(False, start_failure("discord", discord_unreachable(settings.discord_api_base_url, exc)))]
        except Exception as exc:
            log.debug("Discord check failed", exc_info=True)
            return [(False, start_failure("discord", exc))]
        who = f"Discord: logged in as {adapter.client.user} (application {adapter.client.application_id})"
        done = [where for where, failure in adapter.registrations if failure is None]
        results = [(False, failure) for _, failure in adapter.registrations if failure]
        names = ", ".join(f"/{c.name}" for c in adapter.client.tree.get_commands())
        if done:
            results.insert(0, (True, f"{who}; {names} registered {', '.join(done)}"))
        else:
            results.insert(0, (False, f"{who}; {names} registered nowhere"))
        if settings.discord_http_mode:
            results.extend(await _discord_http_mode(settings.quota_public_url))
        return results
    finally:
        await adapter.stop()


async def _check_slack(settings: Settings, service: Any) -> tuple[bool, str]:
    """What `run` asks Slack at start: ``auth.test`` with the bot token and, in Socket Mode,
    ``apps.connections.open`` with the app token (no WebSocket is opened)."""
    from adapters.slack import create_adapter
    from adapters.startup import slack_unreachable, start_failure

    adapter = create_adapter(settings, service)
    try:
        auth, _ = await asyncio.wait_for(adapter.verify(), CHAT_CHECK_SECONDS)
    except asyncio.TimeoutError as exc:
        return False, start_failure("slack", slack_unreachable(exc))
    except Exception as exc:
        log.debug("Slack check failed", exc_info=True)
        return False, start_failure("slack", exc)
    finally:
        await adapter.stop()
    who = f"Slack: SLACK_BOT_TOKEN accepted (bot user {auth.get('user_id')} in team {auth.get('team_id')})"
    if settings.slack_socket_mode:
        return True, f"{who}; Socket Mode: SLACK_APP_TOKEN accepted (apps.connections.open)"
    return True, (f"{who}; HTTP mode: Slack must reach POST /slack/events (SLACK_SIGNING_SECRET is checked "
                  "only when a command arrives)")


async def _webhook_reachable(public_url: str) -> tuple[bool, str]:
    """Whether the providers' callbacks can reach the running bot: a GET of the webhook's probe path
    through the public URL, from this machine."""
    import aiohttp

    from bot.webhook import PATH

    url = public_url.rstrip("/") + PATH
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                data = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return False, (f"QUOTA_PUBLIC_URL: {url} is not reachable from here ({type(exc).__name__}): callbacks "
                       "cannot arrive; readings still come by polling (is `quota-bot run` running?)")
    if isinstance(data, dict) and data.get("ok"):
        return True, f"QUOTA_PUBLIC_URL: the webhook fast path is reachable at {url}"
    return False, f"QUOTA_PUBLIC_URL: {url} answered, but not as quota-bot's webhook (is it the bot's public URL?)"


async def _discord_http_mode(public_url: str | None) -> list[tuple[bool | str, str]]:
    """HTTP mode (DISCORD_PUBLIC_KEY): say so, and whether QUOTA_PUBLIC_URL + /discord/interactions reaches
    the running bot (a GET, which the endpoint answers without a signature)."""
    import aiohttp

    from adapters.discord.interactions import PATH

    mode: tuple[bool | str, str] = (True, "Discord: HTTP mode: DISCORD_PUBLIC_KEY is a well-formed Public Key; no "
                                    f"gateway connection; Discord must reach POST {PATH} (the portal's Interactions "
                                    "Endpoint URL)")
    if not public_url:
        return [mode, ("warn", f"QUOTA_PUBLIC_URL is not set: cannot tell whether Discord reaches {PATH} (set it to "
                               "the bot's public HTTPS base URL)")]
    url = public_url.rstrip("/") + PATH
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                data = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return [mode, (False, f"Discord: {url} is not reachable from here ({type(exc).__name__}): Discord cannot "
                              "deliver commands (is `quota-bot run` running behind that URL?)")]
    if isinstance(data, dict) and data.get("ok") and "Discord" in str(data.get("service")):
        return [mode, (True, f"Discord: the Interactions Endpoint URL {url} reaches the bot")]
    return [mode, (False, f"Discord: {url} answered, but not as quota-bot's Discord endpoint (is it the bot's "
                          "public URL?)")]


def _is_set(settings: Settings, name: str) -> bool:
    return getattr(settings, name.lower(), None) not in (None, "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
