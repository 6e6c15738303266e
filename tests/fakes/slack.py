"""A fake Slack on 127.0.0.1: the Web API (auth.test, chat.postMessage, apps.connections.open,
users.info, the external file upload (files.getUploadURLExternal, the upload URL,
files.completeUploadExternal), and a recorder for the rest), a Socket Mode WebSocket server (hello,
slash_commands envelopes, ack recording, drops and `disconnect` messages) and a response_url sink.
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

from aiohttp import BodyPartReader, WSMsgType, web

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
    url: str = ""  # the full URL the request went to (query string included)


@dataclass
class Upload:
    """One POST to an upload URL (each attempt, scripted failures included)."""
    file_id: str
    data: bytes  # the file's bytes (the raw body, or the file part of a multipart form)
    content_type: str
    headers: dict[str, str]
    url: str
    status: int  # what the fake answered
    at: float


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
        # --- external file upload ---
        self.files: dict[str, dict[str, Any]] = {}  # file id → filename, length, data, title, completed, channels
        self.uploads: list[Upload] = []  # every POST to an upload URL, in order
        self.completions: list[dict[str, Any]] = []  # files.completeUploadExternal: files, channel_id, channels, shared
        self.files_missing_scope = False  # True: both files.* methods answer missing_scope (needed: files:write)
        self.upload_base: str | None = None  # the host put in upload_url (default: the fake itself)
        # scripted answers, one per call, before the normal one: (status, payload, headers) / (status, text)
        self.get_upload_url_script: deque[tuple[int, dict[str, Any], dict[str, str]]] = deque()
        self.complete_upload_script: deque[tuple[int, dict[str, Any], dict[str, str]]] = deque()
        self.upload_script: deque[tuple[int, str]] = deque()
        self._file_ids = itertools.count(1)
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
        app.router.add_post("/_upload/{file_id}", self._upload)
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
        call = Call(method, body, time.monotonic(), dict(request.headers), url=str(request.url))
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
        if method in ("files.getUploadURLExternal", "files.completeUploadExternal"):
            return self._files_api(method, body)
        return web.json_response({"ok": True})

    # --- external file upload -------------------------------------------------------------------
    def _files_api(self, method: str, body: dict[str, Any]) -> web.Response:
        if self.files_missing_scope:
            return web.json_response({"ok": False, "error": "missing_scope", "needed": "files:write",
                                      "provided": "commands,chat:write,users:read"})
        script = self.get_upload_url_script if method == "files.getUploadURLExternal" else self.complete_upload_script
        if script:
            status, payload, headers = script.popleft()
            return web.json_response(payload, status=status, headers=headers)
        if method == "files.getUploadURLExternal":
            filename, length = body.get("filename"), str(body.get("length", ""))
            if not filename or not length.isdigit() or int(length) <= 0:
                return web.json_response({"ok": False, "error": "invalid_arguments"})
            file_id = f"F0FAKE{next(self._file_ids):04d}"
            self.files[file_id] = {"id": file_id, "filename": filename, "length": int(length), "data": None,
                                   "title": None, "completed": False, "channels": []}
            return web.json_response({"ok": True, "upload_url": f"{self.upload_base or self.base}/_upload/{file_id}",
                                      "file_id": file_id})
        files = body.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                files = None
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("id") for f in files):
            return web.json_response({"ok": False, "error": "invalid_arguments"})
        channel_id, channels = body.get("channel_id"), body.get("channels")
        shared_to = ([channel_id] if channel_id else []) + (channels.split(",") if channels else [])
        self.completions.append({"files": files, "channel_id": channel_id, "channels": channels,
                                 "shared": bool(shared_to)})
        answer = []
        for entry in files:
            known = self.files.get(entry["id"])
            if known is None or known["data"] is None:  # never issued, or its bytes never arrived
                return web.json_response({"ok": False, "error": "file_not_found"})
            known.update(title=entry.get("title") or known["filename"], completed=True, channels=shared_to)
            answer.append({"id": known["id"], "name": known["filename"], "title": known["title"],
                           "mimetype": "image/png", "filetype": "png", "size": len(known["data"]),
                           "is_public": False, "channels": shared_to, "groups": [], "ims": [],
                           "url_private": f"{self.base}/files-pri/{TEAM_ID}-{known['id']}/{known['filename']}"})
        return web.json_response({"ok": True, "files": answer})

    async def _upload(self, request: web.Request) -> web.Response:
        """An upload URL: takes the raw bytes, or a multipart form whose file part (`file`, `filename`, or
        any part with a filename) holds them; 200 `OK - <length>` as Slack answers."""
        file_id = request.match_info["file_id"]
        content_type = request.content_type
        data = b""
        if content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if isinstance(part, BodyPartReader) and (part.filename is not None or part.name in ("file", "filename")):
                    data = bytes(await part.read(decode=True))
                    break
        else:
            data = await request.read()
        status, text = 200, f"OK - {len(data)}"
        if self.upload_script:
            status, text = self.upload_script.popleft()
        elif file_id not in self.files:
            status, text = 404, "file_not_found"
        self.uploads.append(Upload(file_id, data, content_type, dict(request.headers), str(request.url), status,
                                   time.monotonic()))
        if status == 200 and file_id in self.files:
            self.files[file_id]["data"] = data
        self.changes.touch()
        return web.Response(status=status, text=text)

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

    async def envelope(self, command: str = "/quota", text: str = "", user_id: str = USER_ID,
                       socket: int = -1, without: tuple[str, ...] = ()) -> tuple[str, str]:
        """Send a slash_commands envelope over Socket Mode (on the newest connection, or on
        ``sockets[socket]``: Slack gives each event to one of an app's connections); returns (envelope
        id, response id). ``without``: payload keys left out (a sloppy or forged envelope)."""
        payload, rid = self.command_payload(command, text, user_id)
        for key in without:
            payload.pop(key, None)
        envelope_id = f"env-{rid}"
        self.sent_at[envelope_id] = self.sent_at[rid] = time.monotonic()
        await self.sockets[socket].send_str(json.dumps({"envelope_id": envelope_id, "type": "slash_commands",
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
