"""What the bot's HTTP server takes from outside, bounded: ``read_body`` reads a request body with a cap
counted while reading and within a deadline, and the log lines outside clients cause are throttled.
adapters/server.py holds the rest of the server's defences.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

BODY_TIMEOUT = 10.0  # seconds for a whole request body to arrive once its headers did
LOG_INTERVAL = 60.0  # at most one line a minute for each kind of refusal (the first one at once)


class BodyRefused(Exception):
    """A body that is not read to the end: ``status`` (413 too large, 408 too slow, 400 the client hung
    up or sent a broken body) and ``reason``, the short text answered and logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_body(request: web.BaseRequest, limit: int, *, timeout: float = BODY_TIMEOUT) -> bytes:
    """The body, at most ``limit`` bytes, read within ``timeout`` seconds; else BodyRefused. Reading
    stops at the cap (no more than one buffer beyond it is ever held), so a body without
    Content-Length costs no more than one that declares its size."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyRefused(413, "request body too large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, "request body too large")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRefused(408, "the request body did not arrive in time") from None
    except ConnectionError:
        raise BodyRefused(400, "the client hung up before the end of the body") from None
    except HttpProcessingError:  # a broken chunked encoding, a body shorter than its Content-Length
        raise BodyRefused(400, "malformed request body") from None
    return b"".join(chunks)


def refusal_response(refused: BodyRefused) -> web.Response:
    """The answer to a refused body; the connection is closed after it (the rest of the body is not
    waited for)."""
    response = web.json_response({"ok": False, "error": refused.reason}, status=refused.status)
    response.force_close()
    return response


class LogThrottle:
    """Log lines caused from outside, at most one per kind per ``interval``: the first at once, the
    next one after the interval says how many were left out meanwhile. Kinds are fixed strings chosen
    by the caller (never text from the request), so the table stays small."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self._logger = logger
        self.interval = interval
        self._kinds: dict[str, list[float]] = {}  # kind -> [last logged at, left out since]

    def __call__(self, kind: str, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        entry = self._kinds.get(kind)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        if entry is not None and entry[1]:
            message += " (%d more like it in the last %d s)"
            args = (*args, int(entry[1]), int(now - entry[0]))
        self._kinds[kind] = [now, 0]
        self._logger.log(level, message, *args)
