"""The Slack adapter: every command of ``bot.commands`` on a slack-bolt AsyncApp.

Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode (`POST /slack/events` on the shared server,
every request verified). Ack first, work later: `ack()` at once, every answer through `respond` from a
background task. Why HTTP mode acks before bolt: docs/architecture.md, "Slack".
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Coroutine
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware.authorization.async_single_team_authorization import AsyncSingleTeamAuthorization
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters import startup
from bot import metrics
from bot.alerts import AlertNotice
from bot.commands import Caller, Commands, Failure, HistoryAnswer, ModeSwitched, parse
from bot.errors import PostError, QuotaError, UsageError
from bot.inbound import BodyRefused, LogThrottle, read_body, refusal_response
from bot.report import PoolReport, QuotaReport
from bot.schedules import ScheduleManager
from bot.service import QuotaService
from bot.settings import Settings

from .files import upload_png
from .render import render_alert, render_answer, render_error, render_history, render_reading

log = logging.getLogger(__name__)


def _not_the_token_warning(record: logging.LogRecord) -> bool:
    """bolt reads SLACK_BOT_TOKEN from the environment by itself and, since the bot hands it a client
    (which carries that token), warns at every start that "`token` will be unused": true, and nothing
    for the operator to do. Only that message is dropped."""
    return record.getMessage() != warning_client_prioritized_and_token_skipped()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_not_the_token_warning)

SLASH_COMMANDS = ("/quota", "/quota-schedule", "/quota-alert", "/quota-mode")  # bot.commands.text.SLASHES, as Slack names them
NOT_ALLOWED = ("Only workspace admins and owners, or the users in SLACK_ADMIN_USER_IDS, "
               "can manage quota {what}.")
# A 429 asking for a longer wait than this is not slept through inside one Web API call (it would hold
# a scheduled post for minutes): the call fails, and `post` hands `retry_after` to the scheduler.
MAX_RATELIMIT_WAIT = 30.0
REJECTED_LOG_INTERVAL = 60.0
RESPONSE_TIMEOUT = 15  # seconds for one answer at a response_url
MAX_BODY = 64 * 1024  # a slash command's form is a few hundred bytes; anything this large is not Slack
_STAMP = re.compile(r"\d{1,12}")  # X-Slack-Request-Timestamp: Unix seconds
GONE_ERRORS = {"not_in_channel", "channel_not_found", "is_archived", "channel_is_archived", "missing_scope",
               "restricted_action", "not_allowed_token_type", "ekm_access_denied", "team_access_not_granted",
               "access_denied", "account_inactive", "invalid_auth", "token_revoked"}


class ShortRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (waits `Retry-After`, then retries), for short waits only."""

    def __init__(self, max_retry_count: int = 3, max_wait: float = MAX_RATELIMIT_WAIT) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    async def _can_retry_async(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if not await super()._can_retry_async(state=state, request=request, response=response, error=error):
            return False
        return _retry_after(response.headers) <= self.max_wait


class SlackAdapter:
    name = "slack"

    def __init__(self, settings: Settings, service: QuotaService, schedules: ScheduleManager | None = None,
                 *, ping_interval: float = 10.0, commands: Commands | None = None) -> None:
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
                ShortRateLimitRetryHandler(max_retry_count=3),
                AsyncServerErrorRetryHandler(max_retry_count=2),
            ],
        )
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        # process_before_response=True: see the module docstring (listeners ack and return at once).
        # The app takes slash commands only (the manifest subscribes to no events and no functions), so
        # bolt's middleware for Events API url_verification, the bot's own events and function tokens
        # would only cost time on every command: off (bolt's dispatch 0.145 -> 0.116 ms a command).
        self.app = AsyncApp(client=self.client, signing_secret=secret, process_before_response=True,
                            request_verification_enabled=not self.socket_mode,
                            url_verification_enabled=False, ignoring_self_events_enabled=False,
                            ignoring_self_assistant_message_events_enabled=False,
                            attaching_function_token_enabled=False)
        # the commands this adapter serves (built by the composition root; a bare one for a lone adapter)
        self.commands = commands or Commands(service, schedules=schedules, history_days=settings.quota_history_days)
        for slash in SLASH_COMMANDS:
            self.app.command(slash)(self._command)
        self.app.error(self._on_error)
        # HTTP mode (see the module docstring): our commands are acked before bolt runs them
        self._ack_first = frozenset(SLASH_COMMANDS)
        self._verifier = None if self.socket_mode else SignatureVerifier(secret)
        self._deferred: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()  # acked, for bolt
        self._dispatcher: asyncio.Task[None] | None = None
        self._handler: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rejected = 0  # HTTP requests bolt refused (bad or stale signature) since the last warning
        self._rejected_logged_at = float("-inf")
        self._http_log = LogThrottle(log)  # other refusals of HTTP requests, throttled the same way

    def __repr__(self) -> str:
        return f"SlackAdapter(socket_mode={self.socket_mode})"

    # --- lifecycle ------------------------------------------------------------------------------
    def mount(self, app: web.Application) -> None:
        if not self.socket_mode:
            app.router.add_post("/slack/events", self._http)

    async def _http(self, request: web.Request) -> web.Response:
        """`POST /slack/events`. Whatever arrives (a scanner, a broken proxy), the answer is a 4xx, never
        a 500: too large 413; no, malformed or wrong signature 401 (counted by the same warning); not
        UTF-8 400; not form-encoded 415 (Slack sends slash commands and ssl_check as forms)."""
        started = time.monotonic()
        try:
            raw = await read_body(request, MAX_BODY)  # counted while reading, within a deadline
        except BodyRefused as refused:  # too large, too slow, or the client hung up: one line, throttled
            self._http_log(f"body {refused.status}", logging.INFO, "Slack HTTP request refused (%d): %s",
                           refused.status, refused.reason)
            return refusal_response(refused)
        headers = request.headers
        stamp, signature = headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            body = None
        assert self._verifier is not None
        if not (_STAMP.fullmatch(stamp) and signature.startswith("v0=") and body is not None
                and self._verifier.is_valid(body, stamp, signature)):
            if body is None and _STAMP.fullmatch(stamp) and signature.startswith("v0="):
                return _refuse(400, "the body is not UTF-8")  # signed, perhaps, but not by Slack's rules
            self._note_rejected()
            return _refuse(401, "invalid request")
        if request.content_type != "application/x-www-form-urlencoded":
            return _refuse(415, "expected application/x-www-form-urlencoded")
        form = parse_qs(body)
        if form.get("command", [""])[0] in self._ack_first:
            if not form.get("response_url", [""])[0]:  # signed, but nowhere to answer: not acked
                self._http_log("no response_url", logging.WARNING, "Slack command refused (400): it has no "
                               "response_url, so it could not be answered")
                return _refuse(400, "a slash command needs a response_url")
            self._deferred.put_nowait((body, request.query_string, headers))
            if self._dispatcher is None:
                self._dispatcher = asyncio.create_task(self._dispatch_deferred())
            metrics.ACK_SECONDS.labels("slack").observe(time.monotonic() - started)
            return web.Response(status=200)
        bolt_response = await self.app.async_dispatch(AsyncBoltRequest(body=body, query=request.query_string,
                                                                       headers=headers))
        return await to_aiohttp_response(bolt_response)

    async def _dispatch_deferred(self) -> None:
        """Hand the acked commands to bolt, one per turn of the event loop (acks still to send go first)."""
        while True:
            body, query, headers = await self._deferred.get()
            self._background(self._dispatch(body, query, headers), "slack command")
            await asyncio.sleep(0)

    async def _dispatch(self, body: str, query: str, headers: Any) -> None:
        response = await self.app.async_dispatch(AsyncBoltRequest(body=body, query=query, headers=headers))
        if response.status != 200:  # already acked: bolt's answer reaches no one, so it goes to the log
            log.warning("Slack command acked, but bolt answered it with HTTP %s: %s", response.status,
                        _clip(response.body))

    def _note_rejected(self) -> None:
        """A wrong SLACK_SIGNING_SECRET makes every command fail, and Slack shows users only a vague
        error: say so in the log. Warn, at most once a minute (a flood of forged requests must not
        flood the log)."""
        self._rejected += 1
        now = time.monotonic()
        if now - self._rejected_logged_at >= REJECTED_LOG_INTERVAL:
            log.warning("Slack HTTP request(s) refused with 401: bad or stale signature (%d since the last "
                        "warning); if every command fails, check SLACK_SIGNING_SECRET", self._rejected)
            self._rejected, self._rejected_logged_at = 0, now

    async def start(self) -> None:
        """Check the bot token, then (Socket Mode) connect. A failure raises one line naming the
        variable, after closing what was opened (the runtime stops only adapters that started)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def verify(self) -> tuple[Any, str | None]:
        """What `run` asks Slack before serving, and all `check` does: ``auth.test`` with the bot token
        and, in Socket Mode, ``apps.connections.open`` with the app token (the WebSocket URL is returned,
        not connected to). Raises ``AdapterStartError`` (one line naming the setting)."""
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise startup.slack_rejected(_slack_error(exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise startup.slack_unreachable(exc) from None
        if not self.socket_mode:
            return auth, None
        # slack-sdk's connect() retries every failure for ever, a refused app token included: ask for the
        # WebSocket URL ourselves first, so a bad token is one start-up line, and hand the URL to the
        # client, which then connects to it without asking again.
        assert self._settings.slack_app_token is not None
        try:
            opened = await self.client.apps_connections_open(app_token=self._settings.slack_app_token.get_secret_value())
        except SlackApiError as exc:
            raise startup.slack_app_token_refused(_slack_error(exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise startup.slack_unreachable(exc) from None
        return auth, opened["url"]

    async def _start(self) -> None:
        auth, url = await self.verify()
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
            self._handler.client.wss_uri = url  # asked for in verify()
            await self._handler.connect_async()

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            if self._deferred.qsize():
                log.warning("%d acked Slack command(s) left unanswered: the bot is stopping", self._deferred.qsize())
        if self._handler is not None:
            await self._handler.close_async()
        pending = list(self._tasks)
        for task in pending:  # answers still waiting for the upstream: the process is going away
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        await self._session.close()

    # --- commands (declared once in bot.commands; rendered here) ---------------------------------
    async def _command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        """Every slash command: ack at once (in HTTP mode the ack has already gone out, see `_http`),
        then parse, run and answer at the response_url in the background."""
        await self._ack(ack)
        slash = str(command.get("command") or "/quota")
        user = str(command.get("user_id") or "")

        async def may_manage(what: str) -> bool | str:
            allowed = await self._is_admin(user, what[:-1])
            return True if allowed is True else (NOT_ALLOWED.format(what=what) if allowed is False else allowed)

        caller = Caller("slack", str(command.get("channel_id") or ""), user, may_manage)
        self._background(self._answer(respond, caller, slash, str(command.get("text") or "")), slash)

    async def _answer(self, respond: Any, caller: Caller, slash: str, text: str) -> None:
        try:
            call = parse(slash, text, self.commands.all, self.commands.names)
        except UsageError as exc:
            answer: Any = Failure(exc)
            what = slash
        else:
            what = f"/{call.command.family}" + (f" {call.command.path[1]}" if len(call.command.path) > 1 else "")
            answer = await self.commands.run(caller, call)
        if isinstance(answer, HistoryAnswer):
            await self._answer_history(respond, answer, what)
            return
        blocks, fallback, public = render_answer(answer)
        await self._send(respond, what, blocks=blocks, text=fallback,
                         response_type="in_channel" if public else "ephemeral")
        if isinstance(answer, ModeSwitched):  # one public line for the channel: who switched what
            line = answer.announcement(f"<@{caller.user}>" if caller.user.isalnum() else "Someone")
            await self._send(respond, what, text=line, response_type="in_channel",
                             blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": line}}])

    async def _answer_history(self, respond: Any, answer: HistoryAnswer, what: str) -> None:
        title = f"Midjourney fast time, last {answer.days} days"
        file_id = await upload_png(self.client, answer.png, filename=f"quota-history-{answer.days}d.png", title=title,
                                   session=self._session)
        blocks, text = render_history(answer.data, file_id)
        kind = "in_channel" if answer.public else "ephemeral"
        if not await self._send(respond, what, blocks=blocks, text=text, response_type=kind) and file_id:
            # Slack may still be processing a file uploaded a moment ago: once more, then without the image
            await asyncio.sleep(1.5)
            if not await self._send(respond, what, blocks=blocks, text=text, response_type=kind):
                blocks, text = render_history(answer.data, None)
                await self._send(respond, what, blocks=blocks, text=text, response_type=kind)

    async def _ack(self, ack: Any) -> None:
        """``ack()``; in Socket Mode timed for the ack histogram (HTTP mode acked in `_http`, and timed there)."""
        started = time.monotonic()
        await ack()
        if self.socket_mode:
            metrics.ACK_SECONDS.labels("slack").observe(time.monotonic() - started)

    async def _send(self, respond: Any, what: str, **message: Any) -> bool:
        """Answer through the command's response_url (bolt's `respond` carries it), over the adapter's
        kept-alive session: bolt's own `respond` opens a new session, so a new connection and TLS
        handshake, for every answer. Slack refuses a response_url that expired (30 min) or was used 5
        times with a non-200 status and no exception: that goes to the log, with Slack's word."""
        url = getattr(respond, "response_url", None)
        body = {"replace_original": False, **message}
        if not url:  # a command with nowhere to answer (a sloppy or forged envelope): one line, no traceback
            log.warning("%s: the command has no response_url; it could not be answered", what)
            return False
        answer = await AsyncWebhookClient(url=url, session=self._session, timeout=RESPONSE_TIMEOUT).send_dict(body)
        status = getattr(answer, "status_code", 200)
        if status != 200:
            log.warning("%s: Slack refused the answer at the response_url (HTTP %s: %s)", what, status,
                        _clip(str(getattr(answer, "body", "")).strip()))
        return status == 200

    def _background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run the slow part of a command after its ack, as a task the adapter owns (cancelled on stop)."""
        task = asyncio.create_task(self._guarded(work, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:  # the response_url is unreachable
            log.error("%s: the answer could not be sent to Slack (%s)", what, _slack_error(exc))
        except Exception as exc:  # a bug: log it with its traceback, never kill the bot
            log.error("%s: the answer could not be sent to Slack (%s)", what, _slack_error(exc), exc_info=exc)

    async def _on_error(self, error: Exception, body: dict[str, Any], respond: Any = None) -> None:
        log.error("unhandled error in a Slack listener", exc_info=error)
        if respond is not None and body.get("response_url"):
            blocks, text = render_error(error)
            try:
                await self._send(respond, "slack listener", blocks=blocks, text=text, response_type="ephemeral")
            except Exception as send_error:  # noqa: BLE001 - logged; the error answer is best effort
                log.error("could not send the error answer to Slack (%s)", _slack_error(send_error))

    async def _is_admin(self, user_id: str, what: str = "schedule") -> bool | str:
        """True, False, or (when Slack could not tell us) the one line that says so."""
        if user_id in self._admins:
            return True
        try:
            user = (await self.client.users_info(user=user_id)).get("user") or {}
        except (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = _slack_error(exc)
            if reason in ("user_not_found", "user_not_visible"):
                log.info("users.info: %s for %s; not an admin", reason, user_id)
                return False
            log.warning("users.info for the %s permission check of %s failed (%s)", what, user_id, reason)
            hint = " (the app lacks the users:read scope: reinstall it from the manifest)" if reason == "missing_scope" else ""
            return (f":x: Could not check with Slack whether you are a workspace admin ({reason}){hint}; try "
                    "again in a minute, or ask the operator to add your member id to SLACK_ADMIN_USER_IDS.")
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    # --- scheduled posts ------------------------------------------------------------------------
    async def post(self, channel: str, outcome: QuotaReport | PoolReport | QuotaError | AlertNotice) -> None:
        if isinstance(outcome, AlertNotice):
            blocks, text = render_alert(outcome)
        else:
            blocks, text = render_error(outcome) if isinstance(outcome, BaseException) else render_reading(outcome)
        try:
            await self.client.chat_postMessage(channel=channel, blocks=blocks, text=text)
        except SlackApiError as exc:
            response = exc.response
            data = getattr(response, "data", None)
            error = str(data.get("error", "")) if isinstance(data, dict) else ""
            status = getattr(response, "status_code", 0) if response is not None else 0
            if error == "ratelimited" or status == 429:
                after = _retry_after(getattr(response, "headers", None) or {})
                raise PostError("rate_limited", "Slack rate limit", retry_after=after) from None
            if status >= 500 or error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
                raise PostError("transient", f"Slack {error or status}") from None
            if error in GONE_ERRORS:
                raise PostError("gone", f"Slack {error}") from None
            raise PostError("gone", f"Slack {error or status}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise PostError("transient", f"network: {type(exc).__name__}") from None


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _slack_error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return f"HTTP {getattr(response, 'status_code', '?')}" if response is not None else type(exc).__name__


def _retry_after(headers: Any) -> float:
    """Seconds from a `Retry-After` header (a str, or a list of them as the retry handlers see it); 1 s
    when it is missing or unreadable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value))  # type: ignore[arg-type]  # whatever float() refuses is caught below
    except (TypeError, ValueError):
        return 1.0


def _clip(text: str) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= 60 else text[:59] + "…"

