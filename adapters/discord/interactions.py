"""Discord over HTTP: ``POST /discord/interactions``, the Interactions Endpoint URL (DISCORD_PUBLIC_KEY).

Each request is verified first (Ed25519 signature, a timestamp within 5 minutes, at most 64 KiB), then
answered: PING, a command (inline when ready within INLINE_WAIT, else deferred and edited), an
autocomplete. ``GET`` answers unsigned so ``quota-bot check`` can test QUOTA_PUBLIC_URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import aiohttp
import discord
from aiohttp import web
from discord.http import handle_message_parameters
from discord.webhook.async_ import async_context
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from bot import metrics
from bot.commands import Caller, Commands, Failure, ModeSwitched, Notice, Reading
from bot.commands.run import Unexpected
from bot.errors import UsageError
from bot.inbound import BodyRefused, LogThrottle, read_body

from .calls import (
    BadOptions,
    account_choices,
    command_and_options,
    is_private,
    manage_check,
    option_values,
    permissions_bitfield,
    to_call,
)
from .render import render_answer

log = logging.getLogger(__name__)

PATH = "/discord/interactions"
MAX_BODY = 64 * 1024
MAX_SKEW = 300.0  # seconds a signed timestamp may be from now
# How long a command may take and still be answered in the response itself (type 4): a store query
# takes a millisecond; anything slower is deferred at once, since the user sees "thinking…" sooner and
# the final answer comes no later (the command runs on meanwhile). Not waited for while the same command
# (same options) is still waiting for its answer: this one waits for the same reading (one ask per burst).
INLINE_WAIT = 0.005
EDIT_GRACE = 5.0  # seconds stop() waits for edits in progress before cancelling them
POOL_SIZE = 32  # kept-alive connections for the edits of @original
PING, COMMAND, AUTOCOMPLETE = 1, 2, 4
PONG, MESSAGE, DEFERRED, CHOICES = 1, 4, 5, 8
EPHEMERAL = 64
UNKNOWN_COMMAND = "This command is not served by this bot (registered by another version?)."


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, separators=(",", ":")).encode(),
                        content_type="application/json")


# the deferrals, built once (public, private): {"type": 5, "data": {"flags": 0 | 64}}
_DEFERRALS = {private: json.dumps({"type": DEFERRED, "data": {"flags": EPHEMERAL if private else 0}},
                                  separators=(",", ":")).encode() for private in (False, True)}


def _payload(rendered: dict[str, Any], *, private: bool) -> Any:
    """discord.py's message parameters for a rendering (the same JSON and multipart as the gateway mode's
    edits), mentioning nobody."""
    flags = discord.MessageFlags(ephemeral=True) if private else discord.utils.MISSING
    return handle_message_parameters(embed=rendered["embed"], attachments=rendered.get("attachments", discord.utils.MISSING),
                                     allowed_mentions=discord.AllowedMentions.none(), flags=flags)


class Interactions:
    """The endpoint. ``mount(app)`` adds its routes; ``stop()`` waits briefly for edits in progress."""

    def __init__(self, public_key: str, commands: Commands, *, inline_wait: float = INLINE_WAIT) -> None:
        self._key = VerifyKey(bytes.fromhex(public_key))
        self.commands = commands
        self.inline_wait = inline_wait
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._throttle = LogThrottle(log)
        self.refused = 0
        self.answered = 0
        self._readings: dict[tuple[int, bool], tuple[Any, bytes]] = {}  # see _rendered_reading
        self._ack_seconds = metrics.ACK_SECONDS.labels("discord")
        self._waiting: dict[Any, asyncio.Task[Any]] = {}  # see _command

    def __repr__(self) -> str:
        return f"Interactions(answered={self.answered}, refused={self.refused})"

    def mount(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.handle)
        app.router.add_get(PATH, self.probe)  # also answers HEAD

    async def probe(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "service": "quota-bot Discord interactions"})

    async def stop(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=EDIT_GRACE)
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # --- verification -----------------------------------------------------------------------------
    def _refuse(self, status: int, reason: str, *, close: bool = False) -> web.Response:
        self.refused += 1
        self._throttle(f"refused {status} {reason}", logging.INFO, "Discord interaction refused (%d): %s",
                       status, reason)
        response = _json({"error": reason}, status)
        if close:  # the rest of a body is not waited for
            response.force_close()
        return response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        signature = request.headers.get("X-Signature-Ed25519", "")
        stamp = request.headers.get("X-Signature-Timestamp", "")
        if not signature or not stamp:
            return self._refuse(401, "missing signature", close=True)
        content = request.content
        declared = request.content_length
        if content.is_eof() and declared is not None and declared <= MAX_BODY:
            raw = content.read_nowait()  # the whole body arrived with its head (as Discord's do): nothing to wait for
        else:
            try:
                raw = await read_body(request, MAX_BODY)
            except BodyRefused as refused:
                return self._refuse(refused.status, refused.reason, close=True)
        try:
            sent_at = float(stamp) if stamp.isdigit() else None
            if sent_at is None or abs(time.time() - sent_at) > MAX_SKEW:
                return self._refuse(401, "timestamp missing or more than 5 minutes from now")
            self._key.verify(stamp.encode() + raw, bytes.fromhex(signature))
        except (BadSignatureError, ValueError, TypeError):
            return self._refuse(401, "invalid request signature")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return self._refuse(400, "the body is not JSON")
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == PING:
            return _json({"type": PONG})
        if kind not in (COMMAND, AUTOCOMPLETE) or not isinstance(body.get("token"), str) \
                or not isinstance(body.get("application_id"), str) or not isinstance(body.get("data"), dict):
            return self._refuse(400, "not an interaction this bot answers")
        try:
            command, options = command_and_options(self.commands.all, body["data"])
        except BadOptions as exc:
            return self._refuse(400, f"not an interaction this bot answers ({exc})")
        if kind == AUTOCOMPLETE:
            return self._autocomplete(command, options)
        self.answered += 1
        return await self._command(request, body, command, options, started)

    # --- answers ----------------------------------------------------------------------------------
    def _autocomplete(self, command: Any, options: list[Any]) -> web.Response:
        choices: list[str] = []
        if command is not None:
            try:
                values, focused = option_values(command, options)
            except BadOptions:
                values, focused = {}, None
            if focused is not None and command.arg(focused).kind == "account":
                choices = account_choices(self.commands.names, str(values[focused]))
        return _json({"type": CHOICES, "data": {"choices": [{"name": n, "value": n} for n in choices]}})

    async def _command(self, request: web.Request, body: dict[str, Any], command: Any, options: list[Any],
                       started: float) -> web.StreamResponse:
        member: dict[str, Any] = body["member"] if isinstance(body.get("member"), dict) else {}
        user = member.get("user") if isinstance(member.get("user"), dict) else body.get("user")
        user_id = str(user.get("id", "")) if isinstance(user, dict) else ""
        channel = str(body.get("channel_id") or "")
        if command is None:
            return self._message(Notice(UNKNOWN_COMMAND, ok=False), private=True, started=started)
        try:
            values, _ = option_values(command, options)
        except BadOptions as exc:
            log.info("Discord /%s: %s", command.family, exc)
            family = "quota" if command.path[0] in ("quota", "history") else command.path[0]
            failure = Failure(UsageError(self.commands.usage(family)))
            return self._message(failure, private=True, started=started)
        private = is_private(command, values)
        caller = Caller("discord", channel, user_id,
                        manage_check(permissions_bitfield(member.get("permissions")).manage_guild))
        call = to_call(command, values)
        same = (command.path, tuple(sorted((k, str(v)) for k, v in call.values.items())))
        earlier = self._waiting.get(same)
        if self.commands.ready(call):  # at hand (a cached reading): run it, to answer in the response
            work = await self._started(self.commands.run(caller, call))
            if not work.done():  # its forecast, read once per reading from the store
                await asyncio.wait({work}, timeout=self.inline_wait)
        elif earlier is not None and not earlier.done():
            # the same command came before and waits for its answer: this one shares that reading and cannot
            # be ready sooner, so it is deferred at once
            work = asyncio.get_running_loop().create_task(self.commands.run(caller, call))
        else:  # the first of its kind to wait (for a store query, a millisecond, or the upstream): briefly
            work = asyncio.get_running_loop().create_task(self.commands.run(caller, call))
            self._waiting[same] = work
            work.add_done_callback(lambda _: self._waiting.pop(same, None) if self._waiting.get(same) is work else None)
            await asyncio.wait({work}, timeout=self.inline_wait)
        if work.done() and not isinstance(work.result(), ModeSwitched):  # a switch also posts a public line: deferred
            answer = work.result()
            cached = self._rendered_reading(answer, private)
            if cached is not None:  # a burst on one cached reading: rendered once, not once per command
                self._ack_seconds.observe(time.monotonic() - started)
                return web.Response(body=cached, content_type="application/json")
            rendered = render_answer(answer)
            if not rendered.get("attachments"):  # a chart goes out as the edit's attachment
                return self._message(answer, private=private, started=started, rendered=rendered)
        response = web.Response(body=_DEFERRALS[private], content_type="application/json")
        await response.prepare(request)
        await response.write_eof()  # sent before the edit can reach Discord
        self._ack_seconds.observe(time.monotonic() - started)
        task = asyncio.get_running_loop().create_task(
            self._edit(body["application_id"], body["token"], work, command.family, user_id), name="discord-edit")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return response

    @staticmethod
    async def _started(coro: Any) -> asyncio.Task[Any]:
        """``coro`` as a task that has already run up to its first wait for I/O: done when it needed none,
        so the caller knows at once whether the answer is ready."""
        if sys.version_info >= (3, 12):  # run eagerly, in this very step
            return asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)  # type: ignore[call-arg]
        task = asyncio.get_running_loop().create_task(coro)
        await asyncio.sleep(0)  # one turn of the loop: the task's first step runs before this one resumes
        return task

    def _rendered_reading(self, answer: Any, private: bool) -> bytes | None:
        """The type 4 response to a reading, as bytes, built once per reading object and visibility (the
        few newest are kept; the reading itself is held so its id is never reused meanwhile)."""
        if not isinstance(answer, Reading):
            return None
        key = (id(answer.outcome), private)
        hit = self._readings.get(key)
        if hit is not None and hit[0] is answer.outcome:
            return hit[1]
        params = _payload(render_answer(answer), private=private)
        body = json.dumps({"type": MESSAGE, "data": params.payload}, separators=(",", ":")).encode()
        self._readings[key] = (answer.outcome, body)
        while len(self._readings) > 16:
            self._readings.pop(next(iter(self._readings)))
        return body

    def _message(self, answer: Any, *, private: bool, started: float,
                 rendered: dict[str, Any] | None = None) -> web.Response:
        params = _payload(rendered or render_answer(answer), private=private)
        self._ack_seconds.observe(time.monotonic() - started)
        return _json({"type": MESSAGE, "data": params.payload})

    async def _edit(self, application_id: str, token: str, work: asyncio.Future[Any], what: str,
                    user_id: str = "") -> None:
        """The answer, once ready, as the edit of ``@original`` (``PATCH /webhooks/{app}/{token}/messages/
        @original``, authorised by the interaction's token)."""
        try:
            answer = await work
        except Exception:  # Commands.run never raises; this is the last resort
            log.exception("Discord /%s failed unexpectedly", what)
            answer = Failure(Unexpected())
        params = _payload(render_answer(answer), private=False)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60))
        try:
            await async_context.get().edit_original_interaction_response(
                int(application_id), token, session=self._session, payload=params.payload,
                multipart=params.multipart, files=params.files)
        except discord.HTTPException as exc:
            log.warning("Discord /%s: the answer could not be sent (%s %s)", what, exc.status, exc.text[:200])
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("Discord /%s: the answer could not be sent (%s)", what, type(exc).__name__)
        finally:
            for file in params.files or ():
                file.close()
        if isinstance(answer, ModeSwitched):  # one public line for the channel: who switched what (pings nobody)
            try:
                await async_context.get().execute_webhook(
                    int(application_id), token, session=self._session,
                    payload={"content": answer.announcement(f"<@{user_id}>"), "allowed_mentions": {"parse": []}})
            except discord.HTTPException as exc:
                log.warning("Discord /%s: the public line could not be sent (%s %s)", what, exc.status, exc.text[:200])
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                log.warning("Discord /%s: the public line could not be sent (%s)", what, type(exc).__name__)
