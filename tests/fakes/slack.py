"""A fake Slack on 127.0.0.1: the Web API (auth.test, chat.postMessage, apps.connections.open,
users.info, and a recorder for the rest), a Socket Mode WebSocket server (hello, slash_commands
envelopes, ack recording, drops and `disconnect` messages) and a response_url sink.
Also signs HTTP slash-command requests as Slack does (v0 HMAC-SHA256)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSMsgType, web

from .waiting import Changes

TEAM_ID = "T0FAKE01"
CHANNEL_ID = "C0FAKE01"
USER_ID = "U0MEMBER1"
ADMIN_ID = "U0ADMIN01"


@dataclass
class Call:
    path: str
    body: Any
    at: float
    headers: dict[str, str]
    peer: Any = None  # (host, port) of the client's connection


class FakeSlack:
    def __init__(self, bot_token: str, app_token: str | None = None) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.calls: list[Call] = []
        self.posts: list[Call] = []
        self.responses: dict[str, list[Call]] = {}  # response id → bodies posted to its response_url
        self.acks: dict[str, float] = {}  # envelope id → time the bot acked
        self.ack_payloads: dict[str, Any] = {}
        self.sent_at: dict[str, float] = {}  # envelope or response id → time sent
        self.response_refusal: tuple[int, str] | None = None  # e.g. (404, "expired_url"): every response_url refuses
        self.post_script: deque[tuple[int, dict[str, Any], dict[str, str]]] = deque()
        self.users: dict[str, dict[str, Any]] = {ADMIN_ID: {"id": ADMIN_ID, "is_admin": True},
                                                 USER_ID: {"id": USER_ID, "is_admin": False}}
        self.users_info_error: str | None = None  # e.g. "missing_scope": every users.info fails so
        self.sockets: list[web.WebSocketResponse] = []
        self.connections = 0  # apps.connections.open calls
        self.accepted = 0  # WebSocket connections accepted
        self.connected = asyncio.Event()
        self.changes = Changes()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> "FakeSlack":
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/link", self._socket)
        app.router.add_post("/response/{rid}", self._response)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- Web API --------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.content_type == "application/json":
            body = json.loads(raw or b"{}")
        else:
            body = dict(parse_qsl(raw.decode()))
        body.update(request.query)
        method = request.match_info["method"]
        call = Call(method, body, time.monotonic(), dict(request.headers))
        self.calls.append(call)
        self.changes.touch()
        auth = request.headers.get("Authorization", "")
        if method == "apps.connections.open":
            if not self.app_token or auth != f"Bearer {self.app_token}":
                return web.json_response({"ok": False, "error": "invalid_auth"})
            self.connections += 1
            return web.json_response({"ok": True, "url": f"ws://{self.base.split('://', 1)[1]}/link"})
        if auth != f"Bearer {self.bot_token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response({"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "quota-bot",
                                      "team_id": TEAM_ID, "user_id": "U0BOT0001", "bot_id": "B0BOT0001"})
        if method == "chat.postMessage":
            self.posts.append(call)
            if self.post_script:
                status, payload, headers = self.post_script.popleft()
                return web.json_response(payload, status=status, headers=headers)
            return web.json_response({"ok": True, "channel": body.get("channel"), "ts": f"{time.time():.6f}"})
        if method == "users.info":
            if self.users_info_error:
                return web.json_response({"ok": False, "error": self.users_info_error})
            user = self.users.get(body.get("user", ""))
            return web.json_response({"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"})
        return web.json_response({"ok": True})

    async def _response(self, request: web.Request) -> web.Response:
        call = Call(request.match_info["rid"], await request.json(), time.monotonic(), dict(request.headers),
                    request.transport.get_extra_info("peername") if request.transport else None)
        self.responses.setdefault(call.path, []).append(call)
        self.changes.touch()
        if self.response_refusal is not None:
            status, text = self.response_refusal
            return web.Response(status=status, text=text)
        return web.Response(text="ok")

    # --- Socket Mode ----------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        self.accepted += 1
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake",
                                      "approximate_connection_time": 3600}, "connection_info": {"app_id": "A0FAKE01"}}))
        self.connected.set()
        self.changes.touch()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if "envelope_id" in data:
                        self.acks[data["envelope_id"]] = time.monotonic()
                        self.ack_payloads[data["envelope_id"]] = data.get("payload")
                        self.changes.touch()
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
            if not self.sockets:
                self.connected.clear()
        return ws

    async def drop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        for ws in list(self.sockets):
            await ws.send_str(json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}}))

    # --- slash commands -------------------------------------------------------------------------
    def command_payload(self, command: str = "/quota", text: str = "", user_id: str = USER_ID) -> tuple[dict[str, str], str]:
        rid = f"r{next(self._ids)}"
        return {
            "token": "legacy-verification-token", "team_id": TEAM_ID, "team_domain": "fake", "channel_id": CHANNEL_ID,
            "channel_name": "general", "user_id": user_id, "user_name": "member", "command": command, "text": text,
            "api_app_id": "A0FAKE01", "is_enterprise_install": "false",
            "response_url": f"{self.base}/response/{rid}", "trigger_id": f"trigger-{rid}",
        }, rid

    async def envelope(self, command: str = "/quota", text: str = "", user_id: str = USER_ID) -> tuple[str, str]:
        """Send a slash_commands envelope over Socket Mode; returns (envelope id, response id)."""
        payload, rid = self.command_payload(command, text, user_id)
        envelope_id = f"env-{rid}"
        self.sent_at[envelope_id] = self.sent_at[rid] = time.monotonic()
        await self.sockets[-1].send_str(json.dumps({"envelope_id": envelope_id, "type": "slash_commands",
                                                    "payload": payload, "accepts_response_payload": True}))
        return envelope_id, rid

    async def wait(self, probe, timeout: float = 10.0):
        return await self.changes.wait(probe, timeout)

    async def wait_response(self, rid: str, timeout: float = 10.0) -> Call:
        return await self.wait(lambda: (self.responses.get(rid) or [None])[-1], timeout)

    async def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> float:
        return await self.wait(lambda: self.acks.get(envelope_id), timeout)


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack puts on an HTTP request: X-Slack-Request-Timestamp and X-Slack-Signature."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def form(payload: dict[str, str]) -> str:
    return urlencode(payload)
