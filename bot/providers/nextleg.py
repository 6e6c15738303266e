"""TheNextLeg "info" protocol and its clones: ask ``{method} {base}{prefix}/info``, then poll
``GET {base}{prefix}/message/{id}`` until the result is there (shared/upstream.md).

Every ask carries our own ``ref``; polling starts fast and backs off with jitter, or is timed by the
progress the upstream reports; ``"incomplete"`` stops polling. The built-in simulator speaks this
protocol too.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from ..errors import BadResponse, Expired, QuotaError, UpstreamUnavailable
from ..report import QuotaReport, parse_result, parse_timestamp
from .base import HttpProvider, PollPolicy, _DeadlineReached, _next_delay, _Retryable

log = logging.getLogger("bot.upstream")


class NextLegProvider(HttpProvider):
    """TheNextLeg protocol: ``{method} {base}{prefix}/info`` then ``GET {base}{prefix}/message/{id}``."""

    name = "nextleg"

    def __init__(self, *, path_prefix: str = "/v2", info_method: str = "GET", **options: Any) -> None:
        super().__init__(**options)
        prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self._root = self._base + prefix
        self._method = info_method.upper()

    def __repr__(self) -> str:  # never the token
        return f"NextLegProvider(root={self._root!r}, method={self._method}, simulated={self.simulated})"

    def error_for(self, status: int, data: Any, where: str, headers: Any) -> QuotaError | _Retryable | None:
        if 200 <= status < 300 and isinstance(data, dict) and data.get("success") is False:
            return UpstreamUnavailable(f"{where}: success=false msg={str(data.get('msg', ''))[:200]!r}",
                                       user_message=_refusal(data.get("msg")))
        return None

    async def _read(self, deadline: float) -> QuotaReport:
        ref = f"quota-bot-{uuid.uuid4().hex[:16]}"
        body: dict[str, Any] = {"ref": ref}
        pushed = self.webhook.expect(ref) if self.webhook is not None else None
        if pushed is not None:
            body["webhookOverride"] = self.webhook.url
        try:
            return await self._ask_and_wait(ref, body, deadline, pushed)
        finally:
            if pushed is not None:
                pushed.close()

    async def _ask_and_wait(self, ref: str, body: dict[str, Any], deadline: float, pushed: Any) -> QuotaReport:
        started = time.monotonic()
        receipt = await self._call(self._method, f"{self._root}/info", deadline, ask=True, json=body)
        message_id = _message_id(receipt)
        if pushed is not None:
            pushed.add(message_id)
        log.info("upstream accepted info ask ref=%s message=%s", ref, message_id)
        expire_mins = max(1, math.ceil(self.poll_timeout / 60))
        url = f"{self._root}/message/{message_id}"
        asked_at = time.monotonic()  # progress counts from (about) the upstream's receipt of the ask
        # the rhythm: with a webhook, slow polls as a safety net; else the learned plan (when there are
        # enough samples), then the backoff; a progress hint always wins
        backoff = (SAFETY_NET if pushed is not None else self._poll).delays(self._rng)
        plan = iter(await self.timing.plan_async() or ()) if pushed is None else iter(())
        delay = _next_delay(plan, asked_at, backoff)
        empty_at_100 = 0
        while True:
            try:
                callback = await self._sleep_until_next(delay, deadline, pushed)
            except _DeadlineReached:
                raise _DeadlineReached(f"{empty_at_100} said progress 100 without a result"
                                       if empty_at_100 else "") from None
            if callback is not None:
                message = callback  # the result object (or a message) the upstream posted to the webhook
                log.info("upstream called back for message %s after %.2fs", message_id, time.monotonic() - asked_at)
            else:
                message = await self._call("GET", url, deadline, params={"expireMins": str(expire_mins)})
            progress = message.get("progress") if isinstance(message, dict) else None
            if isinstance(progress, str) and progress.strip().lower() == "incomplete":
                raise Expired(f"message {message_id} progress incomplete after {self._polls} polls")
            result = poll_result(message)
            if result is not None and (progress is None or progress_is_done(progress)):
                report = parse_result(result, read_at=datetime.now(timezone.utc), simulated=self.simulated)
                self._learn(started, _job_seconds(result))
                return report
            if progress_is_done(progress):  # 100 with an empty or null response: not a result yet
                empty_at_100 += 1
            estimate = self._poll.after_progress(progress_number(progress), time.monotonic() - asked_at,
                                                 self._ask_rtt) if pushed is None else None
            delay = estimate if estimate is not None else _next_delay(plan, asked_at, backoff)
            log.debug("poll %d of message %s: progress=%r, next in %.2fs", self._polls, message_id, progress, delay)


SAFETY_NET = PollPolicy(initial=10.0, factor=1.5, cap=30.0, jitter=0.1, use_progress=False)


def _job_seconds(result: dict[str, Any]) -> float | None:
    """How long the upstream says the job took (``responseAt`` − ``createdAt``), when both are given."""
    created, responded = parse_timestamp(result.get("createdAt")), parse_timestamp(result.get("responseAt"))
    if created is None or responded is None:
        return None
    return (responded - created).total_seconds()


# --- the done rule (shared/upstream.md) ------------------------------------------------------------
# Done means progress 100 (a number or the string) with a result object that has ``content``; with no
# progress field at all, a result object with ``content`` alone is done. An empty or null
# ``response`` is never a result, whatever the progress says: keep polling until the deadline.

def _has_content(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("content") not in (None, "", {}, [])


def poll_result(message: Any) -> dict[str, Any] | None:
    """The result object of a poll answer, or None: under ``response`` (what real clients read,
    preferred) or flat beside ``progress`` (the docs' example), and only when it carries content."""
    if not isinstance(message, dict):
        return None
    nested = message.get("response")
    if _has_content(nested):
        return nested
    return message if _has_content(message) else None


def progress_number(progress: Any) -> float | None:
    """``42``, ``42.5``, ``"42"`` or ``"42%"`` → 42.0; anything else (``"incomplete"``, None) → None."""
    if isinstance(progress, bool):
        return None
    if isinstance(progress, (int, float)):
        return float(progress) if math.isfinite(progress) else None
    if isinstance(progress, str):
        try:
            value = float(progress.strip().rstrip("%"))
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def progress_is_done(progress: Any) -> bool:
    value = progress_number(progress)
    return value is not None and value >= 100


def _message_id(receipt: Any) -> str:
    if isinstance(receipt, dict):
        for key in ("messageId", "messageID", "message_id", "id"):
            value = receipt.get(key)
            if isinstance(value, (str, int)) and str(value).strip():
                text = str(value).strip()
                if all(ch.isalnum() or ch in "-_." for ch in text):
                    return text
    raise BadResponse(f"receipt without a usable messageId: {str(receipt)[:200]}")


def _refusal(msg: Any) -> str:
    text = " ".join(str(msg or "").split())[:160]
    return f"The Midjourney API refused the request: {text}" if text else UpstreamUnavailable.user_message


