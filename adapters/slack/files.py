"""Upload a PNG chart to Slack privately, for a Block Kit image block to show.

Slack's external upload flow (getUploadURLExternal, the bytes to the pre-signed URL,
completeUploadExternal shared with no channel), so a private answer stays private. ``upload_png``
never raises for Slack or the network: it returns None and logs one line. The steps:
docs/architecture.md, "Slack".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import Any

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

UPLOAD_TIMEOUT = 30.0  # seconds for one POST of the bytes to the upload URL
UPLOAD_RETRY_DELAY = 0.5  # seconds before the one retry of that POST
MISSING_SCOPE_LOG_INTERVAL = 3600.0  # the files:write warning, at most once an hour per client
MAX_TEXT = 2000  # image block: alt_text and title are at most 2000 characters each
SCOPE_HINT = ("Slack chart upload: the app lacks the files:write scope (missing_scope); add files:write to "
              "the bot scopes and reinstall the app from slack-app-manifest.yml. Answers are text-only until then.")

# client → when its missing_scope warning was last logged (weak: a client that goes away is forgotten)
_scope_warned: "weakref.WeakKeyDictionary[AsyncWebClient, float]" = weakref.WeakKeyDictionary()


class _UploadFailed(Exception):
    """The POST to the upload URL failed; the message is the short reason for the log."""


async def upload_png(client: AsyncWebClient, png: bytes, *, filename: str, title: str,
                     session: aiohttp.ClientSession | None = None) -> str | None:
    """Upload `png` privately (shared in no channel) and return its file id (`F…`), or None when it
    could not be uploaded (logged; the caller answers without the picture). `session` is used for the
    POST of the bytes; without it the client's session, or else a short-lived one."""
    if not png:
        log.warning("Slack chart upload: nothing to upload (an empty PNG); answering text-only")
        return None
    step = "files.getUploadURLExternal"
    try:
        got = await client.files_getUploadURLExternal(filename=filename, length=len(png))
        upload_url, file_id = got.get("upload_url"), got.get("file_id")
        if not isinstance(upload_url, str) or not upload_url or not isinstance(file_id, str) or not file_id:
            log.warning("Slack chart upload failed at %s (no upload_url or file_id in the answer); answering text-only", step)
            return None
        step = "the upload URL"
        await _post_bytes(upload_url, png, _open_session(session) or _open_session(getattr(client, "session", None)))
        step = "files.completeUploadExternal"
        done = await client.files_completeUploadExternal(files=[{"id": file_id, "title": title}])
    except asyncio.CancelledError:
        raise
    except _UploadFailed as exc:
        log.warning("Slack chart upload failed at %s (%s); answering text-only", step, exc)
        return None
    except (SlackClientError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        reason = _slack_error(exc)
        if reason == "missing_scope":
            _warn_missing_scope(client, exc)
        else:
            log.warning("Slack chart upload failed at %s (%s); answering text-only", step, reason)
        return None
    files = done.get("files")
    if isinstance(files, list) and files and not any(isinstance(f, dict) and f.get("id") == file_id for f in files):
        log.warning("Slack chart upload: files.completeUploadExternal did not return file %s; answering text-only", file_id)
        return None
    log.debug("Slack chart upload: %s (%d bytes) is %s", filename, len(png), file_id)
    return file_id


def image_block(file_id: str, alt_text: str, title: str | None = None) -> dict[str, Any]:
    """A Block Kit image block showing an uploaded (private) Slack file."""
    block: dict[str, Any] = {"type": "image", "slack_file": {"id": file_id}, "alt_text": _clip(alt_text) or "chart"}
    if title:
        block["title"] = {"type": "plain_text", "text": _clip(title)}
    return block


async def _post_bytes(url: str, png: bytes, session: aiohttp.ClientSession | None) -> None:
    """POST the raw bytes to the pre-signed upload URL (no Authorization header): one retry on a 5xx or a
    connection error, a timeout on each attempt. Raises `_UploadFailed` with the short reason."""
    own = session is None
    if own:
        session = aiohttp.ClientSession()
    assert session is not None
    try:
        for attempt in (1, 2):
            retry = attempt == 1
            try:
                async with session.post(url, data=png, headers={"Content-Type": "application/octet-stream"},
                                        timeout=aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT)) as resp:
                    body = (await resp.text(errors="replace")).strip()
                    if resp.status == 200:
                        return
                    reason = f"HTTP {resp.status}" + (f": {_clip(body, 80)}" if body else "")
                    if resp.status < 500:
                        retry = False
            except aiohttp.ClientConnectionError as exc:  # refused, reset, or no answer in time (sock read)
                reason = type(exc).__name__
            except asyncio.TimeoutError:
                reason = f"no answer within {UPLOAD_TIMEOUT:g} s"
                retry = False  # the whole timeout again would hold the answer too long
            if not retry:
                break
            log.info("Slack chart upload: the upload URL failed (%s); retrying once", reason)
            await asyncio.sleep(UPLOAD_RETRY_DELAY)
        raise _UploadFailed(reason)
    finally:
        if own:
            await session.close()


def _open_session(session: Any) -> aiohttp.ClientSession | None:
    return session if isinstance(session, aiohttp.ClientSession) and not session.closed else None


def _warn_missing_scope(client: AsyncWebClient, exc: BaseException) -> None:
    now = time.monotonic()
    last = _scope_warned.get(client)
    if last is not None and now - last < MISSING_SCOPE_LOG_INTERVAL:
        log.debug("Slack chart upload: missing_scope again (files:write); answering text-only")
        return
    _scope_warned[client] = now
    log.warning(SCOPE_HINT)


def _slack_error(exc: BaseException) -> str:
    """Slack's word for a failure (`missing_scope`, `ratelimited`…), else the HTTP status, else the
    exception's type name: never its text, which may carry a request."""
    response = getattr(exc, "response", None)
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    if isinstance(exc, json.JSONDecodeError):
        return "unreadable answer"
    return f"HTTP {getattr(response, 'status_code', '?')}" if response is not None else type(exc).__name__


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
