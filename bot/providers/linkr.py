"""LinkrAPI: one blocking ``GET {base}/api/v1/info`` (shared/providers.md, "LinkrAPI").

The call runs /info in Discord and answers after 5–15 s with the facts in snake_case; there is no
polling (a reading counts 0 polls). 502 is retried within the deadline, 401 is a bad key.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from ..errors import ACCOUNT_CODES, AccountProblem, BadResponse, QuotaError, RateLimited, UpstreamUnavailable
from ..report import QuotaReport, parse_info
from .base import HttpProvider, _retry_after, _Retryable

log = logging.getLogger("bot.upstream")

# The call blocks 5–15 s while LinkrAPI runs /info in Discord; a request timeout must let the slowest
# one finish with room for the network (the transport still cuts every request at the deadline).
DEFAULT_REQUEST_TIMEOUT = 30.0
SUCCESS = frozenset({"success", "succeeded", "ok"})
TIMED_OUT_SENTENCE = "LinkrAPI says Discord or Midjourney timed out; try again in a minute."


class LinkrProvider(HttpProvider):
    """LinkrAPI: ``GET {base}/api/v1/info`` with ``Authorization: Bearer lkr_…``, answered in one call."""

    name = "linkr"
    label = "LinkrAPI"
    # default_interval stays the base's 3 s: LinkrAPI documents no rate limit, and every call makes it
    # run /info in Discord, so readings keep TheNextLeg's pace (the service caches between them).

    def __init__(self, *, base_url: str = "https://linkrapi.com", token: str, **options: Any) -> None:
        options.setdefault("request_timeout", DEFAULT_REQUEST_TIMEOUT)
        options.setdefault("token_setting", "LINKR_API_KEY")
        super().__init__(base_url=base_url, token=token, **options)
        self._url = f"{self._base}/api/v1/info"

    def __repr__(self) -> str:  # never the token
        return f"LinkrProvider(base={self._base!r}, simulated={self.simulated})"

    async def _read(self, deadline: float) -> QuotaReport:
        # No polls: self._polls stays 0 (the one call is the ask; retries after a 502 are asks too).
        sent = time.monotonic()
        answer = await self._call("GET", self._url, deadline, ask=True)
        read_at = datetime.now(timezone.utc)  # the call blocks while LinkrAPI reads /info: now is its time
        info = _info_of(answer)
        report = parse_info(info, read_at=read_at, simulated=self.simulated)
        log.info("linkr /info answered in %.1fs: fast_time_remaining=%r plan=%r job_mode=%r%s",
                 time.monotonic() - sent, _field(info, "fast_time_remaining"), report.plan, report.job_mode,
                 " (total derived from the plan)" if report.total_derived else "")
        return report

    def error_for(self, status: int, data: Any, where: str, headers: Any) -> QuotaError | _Retryable | None:
        message = self._message(data)
        detail = f"{where}: message={message!r}" if message else where
        if status in (401, 403):
            return self.bad_token(detail)
        if status == 502:  # Discord or Midjourney timed out (providers.md): worth another try
            return _Retryable(UpstreamUnavailable(detail, user_message=TIMED_OUT_SENTENCE), _retry_after(headers))
        if status == 429:
            return _Retryable(RateLimited(detail), _retry_after(headers))
        if status >= 500:
            return _Retryable(UpstreamUnavailable(detail, user_message=self._refusal(message)) if message
                              else UpstreamUnavailable(detail), _retry_after(headers))
        if not 200 <= status < 300:
            return self._refused(detail, message, status)
        if isinstance(data, dict) and not _succeeded(data):
            return self._refused(detail + f" status={str(data.get('status'))[:40]!r}", message, status)
        return None

    # --- LinkrAPI's own error bodies ---------------------------------------------------------------
    def _message(self, data: Any) -> str:
        """LinkrAPI's message from an error body, one line, clipped, never carrying the key."""
        if not isinstance(data, dict):
            return ""
        raw = next((data[k] for k in ("message", "error", "msg", "detail") if isinstance(data.get(k), str)), "")
        text = " ".join(raw.split())
        if self._token:
            text = text.replace(self._token, "***")
        return text[:160]

    def _refusal(self, message: str) -> str:
        return f"LinkrAPI refused the request: {message}"

    def _refused(self, detail: str, message: str, status: int) -> QuotaError:
        if message.strip().upper() in ACCOUNT_CODES:  # a Midjourney failure code: its own sentence
            return AccountProblem(message.strip().upper())
        if message:
            return UpstreamUnavailable(detail, user_message=self._refusal(message))
        return UpstreamUnavailable(detail, user_message=f"LinkrAPI refused the request (HTTP {status}); "
                                                         "it has been logged.")


def _succeeded(body: dict[str, Any]) -> bool:
    """``status`` SUCCESS in any case (or true); with no status, anything but ``success: false`` (the
    reader then wants the facts, else BadResponse)."""
    status = body.get("status")
    if status is None:
        return body.get("success") is not False
    return status is True or (isinstance(status, str) and status.strip().lower() in SUCCESS)


def _info_of(answer: Any) -> dict[str, Any] | str:
    """The /info facts of a successful answer: ``data`` (an object, or the /info text), else the
    fields flat beside ``status``."""
    if isinstance(answer, dict):
        data = answer.get("data")
        if isinstance(data, dict) and data:
            return data
        if isinstance(data, str) and data.strip():
            return data
        if "fast_time_remaining" in answer or "fastTimeRemaining" in answer:
            return {k: v for k, v in answer.items() if k not in ("status", "success", "message", "data")}
    raise BadResponse(f"GET /api/v1/info: no data object in {str(answer)[:200]}")


def _field(info: Any, key: str) -> Any:
    return info.get(key) if isinstance(info, dict) else None
