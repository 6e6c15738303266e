"""A fake Discord on 127.0.0.1: the REST routes discord.py calls and a gateway WebSocket
(HELLO / heartbeat ACK / IDENTIFY → READY / RESUME → RESUMED / dispatch), recording what the bot sends;
and, for the HTTP mode, the sender of interactions: it holds its own Ed25519 key pair (made per instance)
and POSTs each interaction signed, as Discord does, to the bot's Interactions Endpoint URL (round robin
over several, skipping one that refuses connections, as a load balancer does).

Facts it follows are in shared/platforms.md: exact ``Content-Type: application/json``, the callback
answer ``{"interaction": {...}}``, a Message object for edits and posts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from nacl.signing import SigningKey

from .waiting import Changes

APP_ID = "1100000000000000001"
BOT_USER_ID = "1100000000000000002"
GUILD_ID = "1200000000000000001"
CHANNEL_ID = "1300000000000000001"
USER_ID = "1400000000000000001"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py compares the content type exactly; aiohttp's json_response would add a charset
    return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json", **(headers or {})})


@dataclass
class Call:
    method: str
    path: str
    body: Any
    at: float
    query: dict[str, str] = field(default_factory=dict)


class FakeDiscord:
    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.command_puts: list[Call] = []
        self.callbacks: dict[str, Call] = {}  # interaction id → callback
        self.edits: dict[str, list[Call]] = {}  # interaction token → edits of @original
        self.channel_posts: list[Call] = []
        self.post_script: deque[tuple[int, Any, dict[str, str]]] = deque()  # answers for channel posts
        self.put_script: deque[tuple[int, Any, dict[str, str]]] = deque()  # answers for command syncs
        self.sockets: list[web.WebSocketResponse] = []
        self.identifies = 0
        self.refuse_resume = False  # answer RESUME with INVALID_SESSION (d: false): the client must IDENTIFY again
        self.resumes = 0
        self.sequence = 0
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()
        self._ids = itertools.count(1500000000000000001)
        self._runner: web.AppRunner | None = None
        self.base = ""
        self.dispatched_at: dict[str, float] = {}
        self.interaction_types: dict[str, int] = {}  # interaction id → its type, when not 2 (a command)
        self.changes = Changes()
        # HTTP mode: the application's key pair; the endpoints interactions are POSTed to (round robin)
        self.signing_key = SigningKey.generate()
        self.endpoints: list[str] = []
        self.responses: dict[str, "Answered"] = {}  # interaction id → the endpoint's HTTP answer
        self._turn = 0
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> "FakeDiscord":
        app = web.Application()
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/gateway", self._gateway)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.base.split('://', 1)[1]}/gateway"

    @property
    def public_key(self) -> str:
        """The app's Public Key as the Developer Portal shows it (hex): DISCORD_PUBLIC_KEY."""
        return self.signing_key.verify_key.encode().hex()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- REST -----------------------------------------------------------------------------------
    def _message(self, channel_id: str, body: Any) -> dict[str, Any]:
        return {"id": str(next(self._ids)), "type": 0, "channel_id": channel_id, "content": (body or {}).get("content") or "",
                "author": {"id": BOT_USER_ID, "username": "quota-bot", "discriminator": "0", "avatar": None, "bot": True},
                "embeds": (body or {}).get("embeds", []), "attachments": [], "mentions": [], "mention_roles": [],
                "pinned": False, "mention_everyone": False, "tts": False, "timestamp": "2026-01-01T00:00:00+00:00",
                "edited_timestamp": None, "flags": (body or {}).get("flags", 0), "components": []}

    async def _rest(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: Any = None
        if raw:
            if request.content_type == "multipart/form-data":
                body = await self._multipart(raw, request)
            else:
                body = json.loads(raw)
        path = "/" + request.match_info["tail"]
        call = Call(request.method, path, body, time.monotonic(), dict(request.query))
        self.calls.append(call)
        self.changes.touch()
        parts = path.strip("/").split("/")
        interaction_route = parts[0] in ("interactions", "webhooks")
        if not interaction_route and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        if path == "/users/@me":
            return _json({"id": BOT_USER_ID, "username": "quota-bot", "discriminator": "0", "avatar": None, "bot": True,
                          "global_name": None, "flags": 0})
        if path == "/oauth2/applications/@me":
            return _json({"id": APP_ID, "name": "quota-bot", "description": "", "icon": None, "bot_public": True,
                          "bot_require_code_grant": False, "verify_key": "00" * 32, "flags": 0,
                          "owner": {"id": USER_ID, "username": "owner", "discriminator": "0", "avatar": None}})
        if request.method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            self.command_puts.append(call)
            if self.put_script:
                status, payload, headers = self.put_script.popleft()
                return _json(payload, status, headers)
            out = [dict(c, id=str(next(self._ids)), application_id=APP_ID, version="1") for c in body]
            return _json(out)
        if parts[0] == "interactions" and parts[-1] == "callback":
            self.callbacks[parts[1]] = call
            return _json({"interaction": {"id": parts[1], "type": self.interaction_types.get(parts[1], 2),
                                          "response_message_loading": body.get("type") == 5,
                                          "response_message_ephemeral": bool(body.get("data", {}).get("flags", 0) & 64)}})
        if parts[0] == "webhooks" and parts[-2:] == ["messages", "@original"]:
            self.edits.setdefault(parts[2], []).append(call)
            return _json(self._message(CHANNEL_ID, body))
        if parts[0] == "webhooks" and len(parts) == 3 and request.method == "POST":
            self.edits.setdefault(parts[2], []).append(call)
            return _json(self._message(CHANNEL_ID, body))
        if parts[0] == "channels" and parts[-1] == "messages" and request.method == "POST":
            self.channel_posts.append(call)
            if self.post_script:
                status, payload, headers = self.post_script.popleft()
                return _json(payload, status, headers)
            return _json(self._message(parts[1], body))
        return _json({"message": "404: Not Found", "code": 0}, 404)

    async def _multipart(self, raw: bytes, request: web.Request) -> Any:
        """The ``payload_json`` part as the body, with the file parts under ``"_files"`` (name → bytes),
        parsed by part as Discord does (a binary file part may hold any byte)."""
        import email.parser
        import email.policy

        head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        body: Any = None
        files: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            if name == "payload_json":
                body = json.loads(data)
            elif part.get_filename():
                files[part.get_filename()] = data
        if isinstance(body, dict):
            body["_files"] = files
        return body

    # --- gateway --------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None}))
                elif op == 2:
                    self.identifies += 1
                    assert frame["d"]["token"] == self.token
                    await self._send(ws, "READY", {
                        "v": 10, "user": {"id": BOT_USER_ID, "username": "quota-bot", "discriminator": "0", "avatar": None, "bot": True},
                        "guilds": [], "session_id": "fake-session", "resume_gateway_url": self.gateway_url,
                        "application": {"id": APP_ID, "flags": 0}, "private_channels": [], "relationships": []})
                    self.ready.set()
                elif op == 6:
                    self.resumes += 1
                    if self.refuse_resume:
                        await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
                        continue
                    await self._send(ws, "RESUMED", {})
                    self.resumed.set()
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
        return ws

    async def _send(self, ws: web.WebSocketResponse, event: str, data: Any) -> None:
        self.sequence += 1
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": self.sequence, "d": data}))

    async def dispatch(self, event: str, data: Any) -> None:
        assert self.sockets, "no gateway connection"
        await self._send(self.sockets[-1], event, data)

    async def drop(self, code: int = 4000) -> None:
        """Close the gateway connection as Discord does on a hiccup; the client should RESUME."""
        self.resumed.clear()
        for ws in list(self.sockets):
            await ws.close(code=code, message=b"fake drop")

    # --- interactions ---------------------------------------------------------------------------
    async def slash_burst(self, name: str, n: int) -> list[tuple[str, str]]:
        """Dispatch n INTERACTION_CREATEs back to back: frames are built first, then sent in one go."""
        frames = [self._interaction(name, None, "2147483647", None) for _ in range(n)]
        ws = self.sockets[-1]
        out = []
        for interaction_id, token, payload in frames:
            self.sequence += 1
            text = json.dumps({"op": 0, "t": "INTERACTION_CREATE", "s": self.sequence, "d": payload})
            self.dispatched_at[interaction_id] = time.monotonic()
            await ws.send_str(text)
            out.append((interaction_id, token))
        return out

    async def slash(self, name: str, options: list[dict[str, Any]] | None = None, *, permissions: str = "2147483647",
                    subcommand: str | None = None) -> tuple[str, str]:
        """Dispatch an INTERACTION_CREATE for a guild slash command; returns (interaction id, token)."""
        interaction_id, token, payload = self._interaction(name, options, permissions, subcommand)
        self.dispatched_at[interaction_id] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction_id, token

    async def autocomplete(self, name: str, options: list[dict[str, Any]]) -> str:
        """Dispatch an APPLICATION_COMMAND_AUTOCOMPLETE interaction (type 4) while a user types an option:
        ``options`` are the command's options so far, the one being typed with ``"focused": True``.
        Returns the interaction id; the bot's answer (callback type 8, ``data.choices``) lands in ``callbacks``."""
        interaction_id, _, payload = self._interaction(name, options, "2147483647", None)
        payload["type"] = 4
        self.interaction_types[interaction_id] = 4
        self.dispatched_at[interaction_id] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction_id

    def _interaction(self, name: str, options: list[dict[str, Any]] | None, permissions: str,
                     subcommand: str | None) -> tuple[str, str, dict[str, Any]]:
        interaction_id = str(next(self._ids))
        token = f"itoken-{interaction_id}"
        data: dict[str, Any] = {"id": str(next(self._ids)), "name": name, "type": 1, "guild_id": GUILD_ID}
        if subcommand:
            data["options"] = [{"type": 1, "name": subcommand, "options": options or []}]
        elif options:
            data["options"] = options
        payload = {
            "id": interaction_id, "application_id": APP_ID, "type": 2, "token": token, "version": 1,
            "attachment_size_limit": 26214400, "guild_id": GUILD_ID, "channel_id": CHANNEL_ID,
            "channel": {"id": CHANNEL_ID, "type": 0, "guild_id": GUILD_ID, "name": "general", "position": 0,
                        "permission_overwrites": [], "nsfw": False, "parent_id": None},
            "member": {"user": {"id": USER_ID, "username": "member", "discriminator": "0", "avatar": None},
                       "roles": [], "flags": 0, "permissions": permissions, "joined_at": "2024-01-01T00:00:00+00:00",
                       "deaf": False, "mute": False},
            "app_permissions": "2147483647", "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD_ID}, "context": 0,
            "data": data,
        }
        return interaction_id, token, payload

    async def wait_callback(self, interaction_id: str, timeout: float = 5.0) -> Call:
        return await self.changes.wait(lambda: self.callbacks.get(interaction_id), timeout)

    async def wait_edit(self, token: str, timeout: float = 10.0) -> Call:
        return await self.changes.wait(lambda: (self.edits.get(token) or [None])[-1], timeout)

    # --- HTTP mode: interactions POSTed, signed, to the Interactions Endpoint URL ------------------------
    def sign(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        stamp = timestamp if timestamp is not None else str(int(time.time()))
        signature = self.signing_key.sign(stamp.encode() + body).signature.hex()
        return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stamp, "Content-Type": "application/json"}

    async def post_raw(self, body: bytes, headers: dict[str, str], url: str | None = None) -> "Answered":
        """POST ``body`` with ``headers`` to ``url`` or the next endpoint (round robin); an endpoint that
        refuses the connection is skipped, as a load balancer's health check would."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        targets = [url] if url else [self.endpoints[(self._turn + i) % len(self.endpoints)]
                                     for i in range(len(self.endpoints))]
        self._turn += 1
        error: Exception | None = None
        for target in targets:
            started = time.monotonic()
            try:
                async with self._http.post(target, data=body, headers=headers) as resp:
                    raw = await resp.read()
                    at = time.monotonic()
                    try:
                        data = json.loads(raw) if raw else None
                    except ValueError:
                        data = raw.decode(errors="replace")
                    return Answered(resp.status, data, started, at, target)
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
                error = exc  # a dead replica: the next one
        raise AssertionError(f"no endpoint answered: {error!r}")

    async def send(self, payload: dict[str, Any], url: str | None = None) -> "Answered":
        """Sign and POST one interaction; its answer is kept in ``responses`` (and as its callback)."""
        body = json.dumps(payload).encode()
        interaction_id = str(payload.get("id"))
        self.dispatched_at[interaction_id] = time.monotonic()
        answered = await self.post_raw(body, self.sign(body), url)
        self.responses[interaction_id] = answered
        self.callbacks[interaction_id] = Call("POST", answered.url, answered.body, answered.at)
        self.changes.touch()
        return answered

    def command_payload(self, name: str, options: list[dict[str, Any]] | None = None, *,
                        permissions: str = "2147483647", subcommand: str | None = None) -> tuple[str, str, dict[str, Any]]:
        """(interaction id, token, payload) of a guild slash command, as Discord POSTs it."""
        return self._interaction(name, options, permissions, subcommand)

    async def http_slash(self, name: str, options: list[dict[str, Any]] | None = None, *,
                         permissions: str = "2147483647", subcommand: str | None = None,
                         url: str | None = None) -> tuple[str, str, "Answered"]:
        """A slash command POSTed to the endpoint: (interaction id, token, the HTTP answer)."""
        interaction_id, token, payload = self._interaction(name, options, permissions, subcommand)
        return interaction_id, token, await self.send(payload, url)

    async def http_autocomplete(self, name: str, options: list[dict[str, Any]], *,
                                subcommand: str | None = None, url: str | None = None) -> "Answered":
        interaction_id, _, payload = self._interaction(name, options, "2147483647", subcommand)
        payload["type"] = 4
        return await self.send(payload, url)

    async def http_ping(self, url: str | None = None) -> "Answered":
        payload = {"id": str(next(self._ids)), "application_id": APP_ID, "type": 1, "token": "itoken-ping",
                   "version": 1, "user": {"id": USER_ID, "username": "discord", "discriminator": "0", "avatar": None}}
        return await self.send(payload, url)


@dataclass
class Answered:
    """The endpoint's answer to one POSTed interaction."""

    status: int
    body: Any
    sent: float
    at: float
    url: str

    @property
    def seconds(self) -> float:
        return self.at - self.sent


async def start_http_mode(service: Any, *, api_url: str, public_key: str, token: str) -> tuple[Any, Any, str]:
    """The bot's side: the Discord adapter in HTTP mode (DISCORD_PUBLIC_KEY) over ``service``, on the bot's
    own HTTP server (adapters/server.py), pointed at a fake's REST API. (adapter, server, the interactions
    URL the fake posts to); the caller stops the adapter, then the server."""
    from adapters.discord.bot import DiscordAdapter
    from adapters.server import HttpServer
    from bot.settings import load_settings

    settings = load_settings(None, discord_bot_token=token, discord_public_key=public_key, discord_api_base_url=api_url)
    adapter = DiscordAdapter(settings, service)
    app = web.Application()
    adapter.mount(app)
    server = HttpServer(app, "127.0.0.1", 0)
    port = await server.start()
    await adapter.start()
    return adapter, server, f"http://127.0.0.1:{port}/discord/interactions"
