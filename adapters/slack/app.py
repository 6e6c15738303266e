"""The Slack adapter: `/quota` and `/quota-schedule` on a slack-bolt AsyncApp.

Socket Mode when SLACK_APP_TOKEN is set (no public URL; the SDK reconnects by itself), HTTP mode
otherwise (`POST /slack/events` on the shared server, every request verified with the signing
secret by bolt). Ack first, work later: `ack()` at once, then the answer goes through `respond`
(the response_url) once the reading is there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.authorization.async_single_team_authorization import AsyncSingleTeamAuthorization
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import PostError, QuotaError
from bot.report import QuotaReport
from bot.schedules import ScheduleError, ScheduleManager, ScheduleView
from bot.service import QuotaService
from bot.settings import Settings

from .render import render_error, render_report, render_text, slack_date

log = logging.getLogger(__name__)

QUOTA_USAGE = ("*Usage:* `/quota` shows the Midjourney fast time left to you only; "
               "`/quota public` shows it to the whole channel; `/quota help` shows this.")
SCHEDULE_USAGE = ("*Usage:* `/quota-schedule add <when>` posts the quota in this channel on a schedule "
                  "(a cron expression such as `0 9 * * 1-5`, or `every 6h`); `/quota-schedule list`; "
                  "`/quota-schedule remove <id>`.")
NOT_ALLOWED = ("Only workspace admins and owners, or the users in SLACK_ADMIN_USER_IDS, "
               "can manage quota schedules.")
GONE_ERRORS = {"not_in_channel", "channel_not_found", "is_archived", "channel_is_archived", "missing_scope",
               "restricted_action", "not_allowed_token_type", "ekm_access_denied", "team_access_not_granted",
               "access_denied", "account_inactive", "invalid_auth", "token_revoked"}


class SlackAdapter:
    name = "slack"

    def __init__(self, settings: Settings, service: QuotaService, schedules: ScheduleManager | None = None,
                 *, ping_interval: float = 10.0) -> None:
        assert settings.slack_bot_token is not None
        self._ping_interval = ping_interval  # Socket Mode: how soon a silent drop is noticed
        self.service = service
        self.schedules = schedules
        self._settings = settings
        self._admins = set(settings.slack_admin_user_ids)
        self.socket_mode = settings.slack_app_token is not None
        # One session with a bounded pool of kept-alive connections for every Web API call (the SDK
        # would otherwise open a new session, and connection, per call).
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=60))
        self.client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url,
            session=self._session,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
                AsyncServerErrorRetryHandler(max_retry_count=2),
            ],
        )
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        self.app = AsyncApp(client=self.client, signing_secret=secret, process_before_response=False,
                            request_verification_enabled=not self.socket_mode)
        self.app.command("/quota")(self._quota)
        self.app.command("/quota-schedule")(self._schedule)
        self.app.error(self._on_error)
        self._handler: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"SlackAdapter(socket_mode={self.socket_mode})"

    # --- lifecycle ------------------------------------------------------------------------------
    def mount(self, app: web.Application) -> None:
        if not self.socket_mode:
            app.router.add_post("/slack/events", self._http)

    async def _http(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def start(self) -> None:
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise RuntimeError(f"SLACK_BOT_TOKEN: Slack rejected the token ({_slack_error(exc)})") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise RuntimeError(f"SLACK_API_URL: cannot reach the Slack Web API ({type(exc).__name__})") from None
        # bolt's single-team authorization calls auth.test on the first request and caches it, but
        # a burst of first requests would each call it: hand it the answer we already have.
        for middleware in getattr(self.app, "_async_middleware_list", []):
            if isinstance(middleware, AsyncSingleTeamAuthorization) and middleware.auth_test_result is None:
                middleware.auth_test_result = auth
        log.info("Slack connected as %s in team %s (%s)", auth.get("user_id"), auth.get("team_id"),
                 "Socket Mode" if self.socket_mode else "HTTP mode: POST /slack/events")
        if self.socket_mode:
            from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

            assert self._settings.slack_app_token is not None
            self._handler = AsyncSocketModeHandler(self.app, self._settings.slack_app_token.get_secret_value(),
                                                   web_client=self.client, ping_interval=self._ping_interval)
            try:
                await self._handler.connect_async()
            except SlackApiError as exc:
                raise RuntimeError(f"SLACK_APP_TOKEN: Slack refused the Socket Mode connection ({_slack_error(exc)})") from None

    async def stop(self) -> None:
        if self._handler is not None:
            await self._handler.close_async()
        for task in list(self._tasks):
            task.cancel()
        await self._session.close()

    # --- /quota ---------------------------------------------------------------------------------
    async def _quota(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        words = (command.get("text") or "").strip()
        if words.lower() in ("help", "-h", "--help", "?"):
            await ack(text=QUOTA_USAGE, response_type="ephemeral")
            return
        if words and words.lower() != "public":
            await ack(text=f"I did not understand `{_clip(words)}`. {QUOTA_USAGE}", response_type="ephemeral")
            return
        await ack()
        public = words.lower() == "public"
        try:
            blocks, text = render_report(await self.service.get_report())
        except Exception as exc:
            await self._answer_error(respond, exc, "/quota")
            return
        await respond(blocks=blocks, text=text, response_type="in_channel" if public else "ephemeral",
                      replace_original=False)

    async def _answer_error(self, respond: Any, exc: BaseException, what: str) -> None:
        """The one error handler: each failure becomes its one-line sentence, ephemeral."""
        if isinstance(exc, (QuotaError, ScheduleError)):
            log.info("%s answered with an error: %s", what, exc)
        else:
            log.error("%s failed unexpectedly", what, exc_info=exc)
        blocks, text = render_text(f":x: {exc.user_message}") if isinstance(exc, ScheduleError) else render_error(exc)
        try:
            await respond(blocks=blocks, text=text, response_type="ephemeral", replace_original=False)
        except Exception:
            log.exception("could not send the error answer to Slack")

    async def _on_error(self, error: Exception, body: dict[str, Any], respond: Any = None) -> None:
        log.error("unhandled error in a Slack listener", exc_info=error)
        if respond is not None and body.get("response_url"):
            await self._answer_error(respond, error, "slack listener")

    # --- /quota-schedule ------------------------------------------------------------------------
    async def _schedule(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        words = (command.get("text") or "").split()
        action = words[0].lower() if words else "help"
        if action not in ("add", "list", "remove"):
            prefix = "" if action in ("help", "-h", "--help", "?") else f"I did not understand `{_clip(action)}`. "
            await ack(text=prefix + SCHEDULE_USAGE, response_type="ephemeral")
            return
        await ack()
        try:
            if self.schedules is None:
                text = "Schedules are not available on this bot."
            elif not await self._is_admin(command.get("user_id", "")):
                text = NOT_ALLOWED
            elif action == "add":
                when = " ".join(words[1:])
                if not when:
                    text = "Say when, e.g. `/quota-schedule add 0 9 * * 1-5` or `/quota-schedule add every 6h`."
                else:
                    view = await self.schedules.add("slack", command["channel_id"], when, created_by=command.get("user_id", ""))
                    text = _added(view)
            elif action == "list":
                views = await self.schedules.list("slack")
                text = "\n".join(_line(v) for v in views) if views else "No quota schedules yet. Add one with `/quota-schedule add every 6h`."
            else:
                if len(words) != 2 or not words[1].lstrip("#").isdigit():
                    text = "Say which one, e.g. `/quota-schedule remove 3` (ids are in `/quota-schedule list`)."
                else:
                    schedule_id = int(words[1].lstrip("#"))
                    removed = await self.schedules.remove("slack", schedule_id)
                    text = f"Removed schedule #{schedule_id}." if removed else f"There is no schedule #{schedule_id}; see `/quota-schedule list`."
        except Exception as exc:
            await self._answer_error(respond, exc, f"/quota-schedule {action}")
            return
        blocks, fallback = render_text(text)
        await respond(blocks=blocks, text=fallback, response_type="ephemeral", replace_original=False)

    async def _is_admin(self, user_id: str) -> bool:
        if user_id in self._admins:
            return True
        try:
            user = (await self.client.users_info(user=user_id)).get("user") or {}
        except (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("users.info for the schedule permission check failed (%s); treating %s as not an admin",
                        _slack_error(exc), user_id)
            return False
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    # --- scheduled posts ------------------------------------------------------------------------
    async def post(self, channel: str, outcome: QuotaReport | QuotaError) -> None:
        blocks, text = render_report(outcome) if isinstance(outcome, QuotaReport) else render_error(outcome)
        try:
            await self.client.chat_postMessage(channel=channel, blocks=blocks, text=text)
        except SlackApiError as exc:
            response = exc.response
            data = getattr(response, "data", None)
            error = str(data.get("error", "")) if isinstance(data, dict) else ""
            status = getattr(response, "status_code", 0) if response is not None else 0
            if error == "ratelimited" or status == 429:
                after = (response.headers or {}).get("Retry-After", "1") if response is not None else "1"
                raise PostError("rate_limited", "Slack rate limit", retry_after=_float(after)) from None
            if status >= 500 or error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
                raise PostError("transient", f"Slack {error or status}") from None
            if error in GONE_ERRORS:
                raise PostError("gone", f"Slack {error}") from None
            raise PostError("gone", f"Slack {error or status}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise PostError("transient", f"network: {type(exc).__name__}") from None


def _slack_error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return f"HTTP {getattr(response, 'status_code', '?')}" if response is not None else type(exc).__name__


def _float(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0


def _clip(text: str) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= 60 else text[:59] + "…"


def _added(view: ScheduleView) -> str:
    runs = "\n".join(f"• {slack_date(t, '{date_long_pretty} at {time}')} ({t.strftime('%Y-%m-%d %H:%M')} {view.timezone})"
                     for t in view.next_runs)
    return f"Schedule *#{view.id}* added: `{view.when}` ({view.timezone}) in <#{view.channel}>.\nNext runs:\n{runs}"


def _line(view: ScheduleView) -> str:
    next_run = f"next {slack_date(view.next_runs[0])}" if view.next_runs else "no next run"
    state = f" :warning: failing: {view.failing}" if view.failing else ""
    origin = " (from QUOTA_SCHEDULES)" if view.source == "config" else ""
    return f"*#{view.id}* `{view.when}` ({view.timezone}) in <#{view.channel}>, {next_run}{origin}{state}"
