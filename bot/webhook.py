"""The webhook fast path: providers that can call back (TheNextLeg's ``webhookOverride``, useapi.net's
``replyUrl``) are given ``{QUOTA_PUBLIC_URL}/upstream/webhook/<secret>``; the first of callback or poll
wins. The secret is random per process and never logged; anything that matches no ask in flight is
refused and changes nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from typing import Any, Iterable

from aiohttp import web

from . import metrics
from .inbound import BodyRefused, LogThrottle, read_body
from .logs import SECRETS

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
PATH = "/upstream/webhook"
# where a callback body names its ask: our ref (TheNextLeg `ref`, useapi `replyRef`), or the upstream's id
_KEYS = ("ref", "replyRef", "originatingMessageId", "messageId", "jobid", "jobId")


class Expectation:
    """The callbacks of one ask in flight, matched by any of its keys; ``get`` waits for the next one."""

    def __init__(self, hub: "WebhookHub", keys: Iterable[str]) -> None:
        self._hub = hub
        self.keys: set[str] = set()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.add(*keys)

    def add(self, *keys: str) -> None:
        for key in keys:
            if key:
                self.keys.add(key)
                self._hub._waiting[key] = self

    def close(self) -> None:
        for key in self.keys:
            if self._hub._waiting.get(key) is self:
                del self._hub._waiting[key]

    def __enter__(self) -> "Expectation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WebhookHub:
    def __init__(self, public_url: str) -> None:
        self._secret = secrets.token_urlsafe(32)
        SECRETS.add(self._secret)  # never logged by us; masked should a library log a URL that holds it
        self.public_url = public_url.rstrip("/")
        self._waiting: dict[str, Expectation] = {}
        self.accepted = 0
        self.refused = 0
        self._log = LogThrottle(log)  # refusals are caused from outside: a flood of them is a few lines

    def __repr__(self) -> str:  # never the secret
        return f"WebhookHub(public_url={self.public_url!r}, waiting={len(self._waiting)})"

    @property
    def url(self) -> str:
        """The callback URL handed to the providers (it holds the secret: never log it)."""
        return f"{self.public_url}{PATH}/{self._secret}"

    def expect(self, *keys: str) -> Expectation:
        return Expectation(self, keys)

    def mount(self, app: web.Application) -> None:
        app.router.add_post(PATH + "/{secret}", self.handle)
        app.router.add_get(PATH, self.probe)

    async def probe(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "service": "quota-bot upstream webhook"})

    async def handle(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info.get("secret", "").encode(), self._secret.encode()):
            return self._refuse(404, "not found")
        try:
            raw = await read_body(request, MAX_BODY)  # counted while reading (a chunked body has no length)
        except BodyRefused as refused:
            return self._refuse(refused.status, refused.reason, close=True)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # nested too deep to read is "could not read" too
            return self._refuse(400, "could not read the body (not JSON, or nested too deep)")
        target = self._match(body)
        if target is None:
            return self._refuse(404, "no ask in flight matches this callback")
        target.queue.put_nowait(body)
        self.accepted += 1
        metrics.CALLBACKS.labels("accepted").inc()
        log.info("upstream callback accepted for an ask in flight")
        return web.json_response({"ok": True}, status=202)

    def _match(self, body: Any) -> Expectation | None:
        for candidate in (body, body.get("response") if isinstance(body, dict) else None):
            if not isinstance(candidate, dict):
                continue
            for key in _KEYS:
                value = candidate.get(key)
                if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) in self._waiting:
                    return self._waiting[str(value)]
        return None

    def _refuse(self, status: int, reason: str, *, close: bool = False) -> web.Response:
        self.refused += 1
        metrics.CALLBACKS.labels("refused").inc()
        self._log(f"refused {status} {reason}", logging.INFO, "upstream callback refused (%d): %s", status, reason)
        response = web.json_response({"ok": False, "error": reason}, status=status)
        if close:  # the rest of the body is not waited for
            response.force_close()
        return response
