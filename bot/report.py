"""The neutral result every adapter renders: ``QuotaReport``, and the parser that builds it.

The parser is lenient: any field may be missing or odd, and then shows as unknown; it never raises
on upstream text. Figures keep the unit the upstream used (the Basic plan counts in minutes) and
expose hours for arithmetic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from .errors import AccountProblem, BadResponse

Unit = Literal["hours", "minutes"]
Level = Literal["ok", "low", "critical", "unknown"]

FAST_TIME_KEY = "Fast Time Remaining"
SUBSCRIPTION_KEY = "Subscription"
JOB_MODE_KEY = "Job Mode"
# Fields the headline already shows; renderers list the rest under "other fields".
HEADLINE_KEYS = frozenset({FAST_TIME_KEY, SUBSCRIPTION_KEY, JOB_MODE_KEY})

# Thresholds of the colour level, on the percentage of fast time left.
LOW_PERCENT = 40.0
CRITICAL_PERCENT = 15.0


@dataclass(frozen=True)
class Amount:
    value: float
    unit: Unit

    @property
    def hours(self) -> float:
        return self.value / 60.0 if self.unit == "minutes" else self.value

    def __str__(self) -> str:
        short = "min" if self.unit == "minutes" else "h"
        return f"{_num(self.value)} {short}"


@dataclass(frozen=True)
class QuotaReport:
    """One reading of the account, platform-neutral."""

    remaining: Amount | None
    total: Amount | None
    percent: float | None
    job_mode: str | None
    plan: str | None
    plan_status: str | None
    renewal: datetime | None
    fields: tuple[tuple[str, str], ...]
    read_at: datetime
    simulated: bool = False
    message_id: str | None = None
    responded_at: datetime | None = None

    @property
    def other_fields(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self.fields if k not in HEADLINE_KEYS)

    @property
    def level(self) -> Level:
        if self.percent is not None:
            if self.percent < CRITICAL_PERCENT:
                return "critical"
            if self.percent < LOW_PERCENT:
                return "low"
            return "ok"
        if self.remaining is not None and self.remaining.value <= 0:
            return "critical"
        return "unknown"

    @property
    def headline(self) -> str:
        """E.g. ``12.06 h of 15 h left``; ``25 min left`` for a trial; ``Fast time unknown``."""
        if self.remaining is None:
            return "Fast time left: unknown"
        if self.total is None:
            return f"{self.remaining} left"
        return f"{self.remaining} of {self.total} left"

    def progress_bar(self, width: int = 20, full: str = "█", empty: str = "░") -> str:
        if self.percent is None:
            return ""
        filled = round(max(0.0, min(100.0, self.percent)) / 100 * width)
        return full * filled + empty * (width - filled)

    def to_json(self) -> dict[str, Any]:
        def amount(a: Amount | None) -> float | None:
            return None if a is None else a.value

        return {
            "remaining": amount(self.remaining),
            "total": amount(self.total),
            "unit": (self.remaining or self.total).unit if (self.remaining or self.total) else None,
            "remaining_hours": None if self.remaining is None else round(self.remaining.hours, 4),
            "total_hours": None if self.total is None else round(self.total.hours, 4),
            "percent": self.percent,
            "level": self.level,
            "job_mode": self.job_mode,
            "plan": self.plan,
            "plan_status": self.plan_status,
            "renewal": None if self.renewal is None else int(self.renewal.timestamp()),
            "renewal_iso": None if self.renewal is None else self.renewal.isoformat(),
            "read_at": self.read_at.isoformat(),
            "simulated": self.simulated,
            "fields": dict(self.fields),
        }


def _num(value: float) -> str:
    """12.06 → '12.06', 15.0 → '15', 0.5 → '0.5'."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


# --- parsing -------------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:[.,]\d+)?)"
_FAST_TIME = re.compile(
    rf"^\s*{_NUMBER}\s*(?:/\s*{_NUMBER})?\s*([A-Za-z]+)?\.?\s*(?:\(\s*{_NUMBER}\s*%\s*\))?",
)
_TIMESTAMP = re.compile(r"<t:(-?\d{1,12})(?::[a-zA-Z])?>")
_UNITS: dict[str, Unit] = {
    "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
    "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
}


def _to_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_fast_time(text: Any) -> tuple[Amount | None, Amount | None, float | None]:
    """``12.06/15.0 hours (80.37%)`` → (12.06 h, 15 h, 80.37). Unknown parts are None."""
    if not isinstance(text, str):
        return None, None, None
    match = _FAST_TIME.match(text)
    if not match:
        return None, None, None
    rem_s, tot_s, unit_s, pct_s = match.groups()
    unit = _UNITS.get(unit_s.lower()) if unit_s else "hours"
    if unit is None:  # a word we do not know (e.g. "credits"): the figure is not fast time
        return None, None, None
    remaining_v, total_v, percent = _to_float(rem_s), _to_float(tot_s), _to_float(pct_s)
    remaining = Amount(remaining_v, unit) if remaining_v is not None else None
    total = Amount(total_v, unit) if total_v is not None else None
    if percent is None and remaining is not None and total is not None and total.value > 0:
        percent = round(remaining.value / total.value * 100, 2)
    return remaining, total, percent


def parse_subscription(text: Any) -> tuple[str | None, str | None, datetime | None]:
    """``Pro (Active yearly, renews next on <t:1715321361>)`` → ("Pro", "Active yearly", renewal)."""
    if not isinstance(text, str) or not text.strip():
        return None, None, None
    renewal = None
    stamp = _TIMESTAMP.search(text)
    if stamp:
        renewal = _from_epoch(stamp.group(1))
    plan, _, rest = text.partition("(")
    plan = plan.strip() or None
    status = rest.rsplit(")", 1)[0] if rest else ""
    status = _TIMESTAMP.sub("", status)
    status = re.sub(r",?\s*renews next on\s*$", "", status.strip(), flags=re.I).strip(" ,") or None
    return plan, status, renewal


def _from_epoch(value: Any) -> datetime | None:
    try:
        seconds = float(value)
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def parse_timestamp(value: Any) -> datetime | None:
    """ISO-8601 string or Firestore ``{"_seconds": …, "_nanoseconds": …}``; anything else → None."""
    if isinstance(value, dict):
        seconds = value.get("_seconds", value.get("seconds"))
        nanos = value.get("_nanoseconds", value.get("nanoseconds", 0))
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return None
        if isinstance(nanos, bool) or not isinstance(nanos, (int, float)):
            nanos = 0
        return _from_epoch(seconds + nanos / 1e9)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_as_text(v) for v in value) if value else "None"
    return str(value)


def result_object(message: Any) -> dict[str, Any] | None:
    """The result of a finished poll: under ``response`` (real clients) or flat (the docs' example)."""
    if not isinstance(message, dict):
        return None
    nested = message.get("response")
    if isinstance(nested, dict):
        return nested
    if "content" in message:
        return message
    return None


def parse_result(
    result: Any,
    *,
    read_at: datetime,
    simulated: bool = False,
) -> QuotaReport:
    """Build a report from the result object. A failure code raises ``AccountProblem``; a result
    with no usable content raises ``BadResponse``; odd fields never raise, they show as unknown."""
    if not isinstance(result, dict):
        raise BadResponse(f"result is {type(result).__name__}, not an object")
    content = result.get("content")
    if isinstance(content, str):
        raise AccountProblem(content)
    if not isinstance(content, dict):
        raise BadResponse(f"content is {type(content).__name__}")
    fields = tuple((str(k), _as_text(v)) for k, v in content.items())
    lookup = {k.strip().lower(): v for k, v in fields}
    remaining, total, percent = parse_fast_time(lookup.get(FAST_TIME_KEY.lower()))
    plan, status, renewal = parse_subscription(lookup.get(SUBSCRIPTION_KEY.lower()))
    job_mode = (lookup.get(JOB_MODE_KEY.lower()) or "").strip() or None
    message_id = result.get("originatingMessageId") or result.get("messageId")
    return QuotaReport(
        remaining=remaining,
        total=total,
        percent=percent,
        job_mode=job_mode,
        plan=plan,
        plan_status=status,
        renewal=renewal,
        fields=fields,
        read_at=read_at,
        simulated=simulated,
        message_id=str(message_id) if message_id is not None else None,
        responded_at=parse_timestamp(result.get("responseAt")),
    )
