"""The neutral result every adapter renders: ``QuotaReport``, and the one parser that builds it.

``parse_info`` reads Midjourney's ``/info`` facts in every form a provider gives them through one table
of key aliases. It is lenient (an odd field shows as unknown) and raises only ``BadResponse`` and
``AccountProblem``. Figures keep the upstream's unit and expose hours.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Iterable, Literal, TypeVar

from .errors import AccountProblem, BadResponse

Unit = Literal["hours", "minutes"]
Level = Literal["ok", "low", "critical", "unknown"]

FAST_TIME_KEY = "Fast Time Remaining"
SUBSCRIPTION_KEY = "Subscription"
JOB_MODE_KEY = "Job Mode"
# Fields the headline already shows; renderers list the rest under "other fields".
HEADLINE_KEYS = frozenset({FAST_TIME_KEY, SUBSCRIPTION_KEY, JOB_MODE_KEY})

# A reading older than this shows its age in every reply (seconds).
STALE_AFTER = 600.0

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
    """One reading of the account, platform-neutral.

    ``total_derived``: the source gave no total (LinkrAPI's ``H:MM:SS``, a trial-style figure) and
    ``total`` is the plan's monthly fast time (Basic 200 min, Standard 15 h, Pro 30 h, Mega 60 h),
    in the unit of ``remaining``; ``percent`` is then computed from it. Never set when the source
    gave a total of its own.
    """

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
    total_derived: bool = False
    forecast: Any = None  # bot.forecast.Forecast, put on by bot.history (pace and run-out)
    pace: str | None = None  # the forecast's one line, shown under the headline

    @property
    def mode(self) -> str | None:
        """The speed mode, normalised: ``fast``, ``relax`` or ``turbo`` (``Relaxed`` is ``relax``); None
        when the provider did not report it or reported something else (``job_mode`` keeps its words)."""
        return normalise_mode(self.job_mode)

    @property
    def other_fields(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self.fields if k not in HEADLINE_KEYS)

    @property
    def level(self) -> Level:
        return _level(self.percent, None if self.remaining is None else self.remaining.value)

    @property
    def headline(self) -> str:
        """E.g. ``12.06 h of 15 h left``; ``25 min left`` for a trial; ``unknown``
        (renderers put ``Midjourney fast time:`` before it).

        A total derived from the plan (``total_derived``) is marked with a ``~`` and nothing more,
        to keep the headline short: ``2.76 h of ~15 h left``. Renderers that want to say where it
        came from can add ``(from the {plan} plan)`` themselves.
        """
        if self.remaining is None:
            return "unknown"
        if self.total is None:
            return f"{self.remaining} left"
        return f"{self.remaining} of {'~' if self.total_derived else ''}{self.total} left"

    def progress_bar(self, width: int = 20, full: str = "█", empty: str = "░") -> str:
        return _bar(self.percent, width, full, empty)

    def age_seconds(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or datetime.now(timezone.utc)) - self.read_at).total_seconds())

    def age_text(self, now: datetime | None = None) -> str | None:
        """``"read 25 min ago"`` when the figures are older than ``STALE_AFTER`` (a provider's stored
        reading, e.g. a throttled midjourney-proxy sync); None while they are fresh."""
        age = self.age_seconds(now)
        if age < STALE_AFTER:
            return None
        if age < 5400:
            return f"read {round(age / 60)} min ago"
        if age < 2 * 86400:
            return f"read {age / 3600:.0f} h ago"
        return f"read {age / 86400:.0f} days ago"

    def to_json(self) -> dict[str, Any]:
        def amount(a: Amount | None) -> float | None:
            return None if a is None else a.value

        return {
            "remaining": amount(self.remaining),
            "total": amount(self.total),
            "unit": shown.unit if (shown := self.remaining or self.total) else None,
            "remaining_hours": None if self.remaining is None else round(self.remaining.hours, 4),
            "total_hours": None if self.total is None else round(self.total.hours, 4),
            "total_derived": self.total_derived,
            "percent": self.percent,
            "level": self.level,
            "job_mode": self.job_mode,
            "mode": self.mode,
            "plan": self.plan,
            "plan_status": self.plan_status,
            "renewal": None if self.renewal is None else int(self.renewal.timestamp()),
            "renewal_iso": None if self.renewal is None else self.renewal.isoformat(),
            "read_at": self.read_at.isoformat(),
            "age_seconds": round(self.age_seconds()),
            **forecast_json(self.forecast, self.renewal),
            "simulated": self.simulated,
            "fields": dict(self.fields),
        }


MODES = ("fast", "relax", "turbo")
MODE_NAMES = {"fast": "Fast", "relax": "Relax", "turbo": "Turbo"}


def normalise_mode(text: object) -> str | None:
    """``Fast``, ``Relaxed``, ``relax mode``, ``TURBO`` → ``fast``, ``relax``, ``turbo``; else None."""
    if not isinstance(text, str):
        return None
    word = re.sub(r"[^a-z]+", " ", text.lower()).split()
    first = word[0] if word else ""
    if first.startswith("relax"):
        return "relax"
    return first if first in ("fast", "turbo") else None


def _level(percent: float | None, remaining: float | None) -> Level:
    if percent is not None:
        if percent < CRITICAL_PERCENT:
            return "critical"
        if percent < LOW_PERCENT:
            return "low"
        return "ok"
    if remaining is not None and remaining <= 0:
        return "critical"
    return "unknown"


def _bar(percent: float | None, width: int, full: str, empty: str) -> str:
    if percent is None:
        return ""
    filled = round(max(0.0, min(100.0, percent)) / 100 * width)
    return full * filled + empty * (width - filled)


@dataclass(frozen=True)
class AccountReading:
    """One account's part of a pooled answer: its reading, or the error that kept it out of the sum."""

    name: str
    provider: str
    report: QuotaReport | None = None
    error: BaseException | None = None  # a QuotaError (its sentence is shown), or an unexpected error


@dataclass(frozen=True)
class PoolReport:
    """The pooled answer over several accounts (QUOTA_ACCOUNTS_FILE): the sum of the accounts that
    answered, in hours (so Basic plans in minutes and Standard plans in hours add up), and one line
    per account. An account that failed is shown with its reason and left out of the sum."""

    accounts: tuple[AccountReading, ...]
    read_at: datetime
    forecast: Any = None  # the pool's forecast (bot.forecast.combine)
    pace: str | None = None

    @property
    def answered(self) -> tuple[AccountReading, ...]:
        return tuple(a for a in self.accounts if a.report is not None)

    @property
    def remaining_hours(self) -> float | None:
        values = [a.report.remaining.hours for a in self.answered if a.report and a.report.remaining is not None]
        return round(sum(values), 4) if values else None

    @property
    def total_hours(self) -> float | None:
        """The sum of the totals, only when every account in the sum has one (else it would mislead)."""
        counted = [a.report for a in self.answered if a.report and a.report.remaining is not None]
        totals = [r.total for r in counted if r.total is not None]
        if not counted or len(totals) < len(counted):
            return None
        return round(sum(t.hours for t in totals), 4)

    @property
    def percent(self) -> float | None:
        remaining, total = self.remaining_hours, self.total_hours
        return None if remaining is None or not total else round(remaining / total * 100, 2)

    @property
    def level(self) -> Level:
        return _level(self.percent, self.remaining_hours)

    @property
    def simulated(self) -> bool:
        return any(a.report is not None and a.report.simulated for a in self.answered)

    def progress_bar(self, width: int = 20, full: str = "█", empty: str = "░") -> str:
        return _bar(self.percent, width, full, empty)

    @property
    def scope(self) -> str:
        """``across 3 accounts`` or, when some failed, ``across 2 of 3 accounts``."""
        n, ok = len(self.accounts), len([a for a in self.answered if a.report and a.report.remaining is not None])
        noun = "account" if n == 1 else "accounts"
        return f"across {ok} of {n} {noun}" if ok < n else f"across {n} {noun}"

    @property
    def headline(self) -> str:
        """``31.2 h of 45 h left across 3 accounts``; ``… across 2 of 3 accounts`` when one failed."""
        remaining, total = self.remaining_hours, self.total_hours
        if remaining is None:
            return f"unknown ({len(self.answered)} of {len(self.accounts)} accounts answered)"
        if total is None:
            return f"{_num(remaining)} h left {self.scope}"
        return f"{_num(remaining)} h of {_num(total)} h left {self.scope}"

    def to_json(self) -> dict[str, Any]:
        accounts = []
        for a in self.accounts:
            entry: dict[str, Any] = {"name": a.name, "provider": a.provider}
            if a.report is not None:
                entry.update(a.report.to_json())
                entry["error"] = None
            else:
                entry["error"] = {"code": getattr(a.error, "code", "error"), "message": _sentence(a.error)}
            accounts.append(entry)
        return {"remaining": self.remaining_hours, "total": self.total_hours, "percent": self.percent,
                "unit": "hours", "level": self.level, **forecast_json(self.forecast, None),
                "accounts_answered": len(self.answered),
                "accounts_total": len(self.accounts), "read_at": self.read_at.isoformat(),
                "simulated": self.simulated, "accounts": accounts}


# one reading or a pooled one: what ``History.annotate`` puts a forecast on and hands back, the same kind
Answered = TypeVar("Answered", QuotaReport, PoolReport)


def forecast_json(forecast: Any, renewal: datetime | None) -> dict[str, Any]:
    """The forecast fields of the JSON answer: numbers and Unix seconds, null when unknown."""
    enough = forecast is not None and getattr(forecast, "enough", False)

    def seconds(value: Any) -> int | None:
        return None if value is None else int(value)

    known = seconds(getattr(forecast, "renewal", None)) if forecast is not None else None
    return {"pace_per_day": round(forecast.pace_per_day, 3) if enough and forecast.pace_per_day is not None else None,
            "runs_out_at": seconds(forecast.runs_out_at) if enough else None,
            "renewal": known if known is not None else (None if renewal is None else int(renewal.timestamp())),
            "lasts_to_renewal": forecast.lasts_to_renewal if enough else None}


def _sentence(exc: BaseException | None) -> str:
    from .errors import user_sentence

    return user_sentence(exc) if exc is not None else ""


def _num(value: float) -> str:
    """12.06 → '12.06', 15.0 → '15', 0.5 → '0.5'."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


# --- parsing -------------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:[.,]\d+)?)"
_FAST_TIME = re.compile(
    rf"^\s*{_NUMBER}\s*(?:/\s*{_NUMBER})?\s*([A-Za-z]+)?\.?\s*(?:\(\s*{_NUMBER}\s*%\s*\))?",
)
# LinkrAPI's ``2:45:30`` (hours:minutes:seconds) or ``2:45``; nothing may follow that extends it.
_CLOCK = re.compile(r"\s*(\d+):([0-5]\d)(?::([0-5]\d(?:[.,]\d+)?))?(?![\d:.,])")
_CLOCK_START = re.compile(r"\s*\d+\s*:")
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
    """``12.06/15.0 hours (80.37%)`` → (12.06 h, 15 h, 80.37). Unknown parts are None.

    ``2:45:30`` (H:MM:SS, LinkrAPI) and ``2:45`` (H:MM) → (2.7583 h, None, None): hours rounded to
    4 places, no total and no percent (the source gives none; see ``QuotaReport.total_derived``).
    """
    if not isinstance(text, str):
        return None, None, None
    if _CLOCK_START.match(text):  # a clock, or nothing: never read "2:45" as 2 hours
        clock = _CLOCK.match(text)
        if not clock:
            return None, None, None
        hours_s, minutes_s, seconds_s = clock.groups()
        hours = _to_float(hours_s)  # None when the figure is too large to be one
        if hours is None:
            return None, None, None
        value = hours + int(minutes_s) / 60 + (_to_float(seconds_s) or 0.0) / 3600
        return Amount(round(value, 4), "hours"), None, None
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
    head, _, rest = text.partition("(")
    plan = head.strip() or None
    inside = _TIMESTAMP.sub("", rest.rsplit(")", 1)[0] if rest else "")
    status = re.sub(r",?\s*renews next on\s*$", "", inside.strip(), flags=re.I).strip(" ,") or None
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
    """Build a report from a TheNextLeg-style result object; its ``content`` goes to ``parse_info``
    (an object, or the ``**Key**: value`` text useapi.net sends under ``response.content``).

    A failure code raises ``AccountProblem``, and so does any other string content that is not the
    /info text (upstream.md: show an unknown code as it is); a result with no usable content raises
    ``BadResponse``; odd fields never raise, they show as unknown.
    """
    if not isinstance(result, dict):
        raise BadResponse(f"result is {type(result).__name__}, not an object")
    content = result.get("content")
    if not isinstance(content, (dict, str)):
        raise BadResponse(f"content is {type(content).__name__}")
    try:
        report = parse_info(content, read_at=read_at, simulated=simulated)
    except BadResponse:
        if isinstance(content, str):
            raise AccountProblem(content) from None
        raise
    message_id = result.get("originatingMessageId") or result.get("messageId")
    return replace(
        report,
        message_id=str(message_id) if message_id is not None else None,
        responded_at=parse_timestamp(result.get("responseAt")),
    )


# --- the /info facts, in every form ---------------------------------------------------------------

# The /info fields, as Midjourney names them. A key of any form matches one when it is equal after
# lower-casing and dropping everything but letters and digits: "Fast Time Remaining",
# "fast_time_remaining" and "fastTimeRemaining" are all "fasttimeremaining".
DISPLAY_NAMES = (
    "User ID", "Subscription", "Job Mode", "Visibility Mode", FAST_TIME_KEY, "Lifetime Usage",
    "Fast Usage", "Turbo Usage", "Relaxed Usage", "Queued Jobs (fast)", "Queued Jobs (relax)",
    "Running Jobs",
)


def _squash(key: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", key.lower())


_KNOWN_KEYS: dict[str, str] = {_squash(name): name for name in DISPLAY_NAMES} | {
    "queuedjobsrelaxed": "Queued Jobs (relax)",
    "relaxusage": "Relaxed Usage",
}
# Keys never shown, whatever form they come in (a midjourney-proxy account carries its Discord token).
_SECRET_KEY = re.compile(r"token|passw|secret|apikey|cookie|2fa|authoriz")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_+[A-Za-z0-9]+)*_*")
_MARKDOWN = re.compile(r"\*\*|__|`")
_LINE_LEAD = re.compile(r"^[\s>•*-]+")
_CODE = re.compile(r"[A-Z][A-Z0-9_]+")
# The keys that tell a midjourney-proxy account object from a flat info object.
_PROXY_KEYS = frozenset({"properties", "displays", "infoUpdated"})
# Plans' monthly fast time (upstream.md), for a total the source did not give.
_PLAN_MINUTES = {"basic": 200.0, "standard": 900.0, "pro": 1800.0, "mega": 3600.0}
_PLAN_NAME = re.compile(r"\s*(basic|standard|pro|mega)\b", re.I)


def _display_name(key: Any) -> str | None:
    """The field name shown for a source key: the /info name when known; else snake_case and
    camelCase made readable ("niji_job_mode" → "Niji Job Mode", "channelId" → "Channel ID"), other
    keys as they are. None for a blank key or one that names a secret."""
    text = str(key).strip()
    squashed = _squash(text)
    if not text or _SECRET_KEY.search(squashed):
        return None
    if squashed in _KNOWN_KEYS:
        return _KNOWN_KEYS[squashed]
    if not _IDENTIFIER.fullmatch(text):
        return text
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text).replace("_", " ").split()
    return " ".join("ID" if w.lower() == "id" else w[:1].upper() + w[1:] for w in words)


def _text_pairs(text: str) -> list[tuple[str, str]]:
    """``**Key**: value`` / ``Key: value`` lines → pairs in order; markdown stripped, other lines
    ignored. A bare failure code (``NO_FAST_HOURS``) raises ``AccountProblem``."""
    plain = _MARKDOWN.sub("", text)
    if _CODE.fullmatch(plain.strip()):
        raise AccountProblem(plain.strip())
    pairs = []
    for line in plain.splitlines():
        key, colon, value = _LINE_LEAD.sub("", line).partition(":")
        if colon and key.strip():
            pairs.append((key, value.strip()))
    return pairs


def _proxy_pairs(account: dict[Any, Any]) -> tuple[list[tuple[Any, Any]], datetime | None, datetime | None]:
    """A midjourney-proxy account → (pairs, when the proxy read /info, renewal hint).

    Its ``properties`` are the /info fields, in order; its top-level copies (``fastTimeRemaining``,
    ``lifetimeUsage``…) and ``displays`` (``subscribePlan``, ``billedWay``, ``mode``) fill what
    ``properties`` lacks. Other top-level keys are the proxy's own settings (tokens among them) and
    are not /info facts: they are left out. ``displays.renewDate`` ("yyyy-MM-dd HH:mm:ss", the
    proxy's local time; read as UTC when it carries no offset) is the renewal when the
    Subscription text has no ``<t:N>``.
    """
    props, displays = account.get("properties"), account.get("displays")
    props = props if isinstance(props, dict) else {}
    displays = displays if isinstance(displays, dict) else {}
    plan, billed = displays.get("subscribePlan"), displays.get("billedWay")
    subscription = None
    if isinstance(plan, str) and plan.strip():
        subscription = f"{plan.strip()} ({billed.strip()})" if isinstance(billed, str) and billed.strip() else plan
    fallbacks = [(k, v) for k, v in account.items() if _squash(str(k)) in _KNOWN_KEYS]
    fallbacks += [(SUBSCRIPTION_KEY, subscription), (JOB_MODE_KEY, displays.get("mode"))]
    pairs = [*props.items(), *((k, v) for k, v in fallbacks if v not in (None, "", [], {}))]
    return pairs, _sane(parse_timestamp(account.get("infoUpdated"))), _sane(parse_timestamp(displays.get("renewDate")))


def _sane(when: datetime | None) -> datetime | None:
    """The time in UTC when every renderer can convert it (to local time, to epoch), else None."""
    if when is None:
        return None
    try:
        when.astimezone(), when.timestamp()
        return when.astimezone(timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None


def _plan_total(plan: str | None, unit: Unit) -> Amount | None:
    match = _PLAN_NAME.match(plan or "")
    if not match:
        return None
    minutes = _PLAN_MINUTES[match.group(1).lower()]
    return Amount(minutes if unit == "minutes" else minutes / 60, unit)


def parse_info(payload: Any, *, read_at: datetime, simulated: bool = False) -> QuotaReport:
    """The account facts of Midjourney's /info, from any provider's form, as a ``QuotaReport``.

    Forms, told apart by shape:

    - a ``str``: the /info text (useapi.net), ``**Key**: value`` or ``Key: value`` lines; ``**``,
      ``__`` and backticks are stripped, other lines ignored. A bare code such as ``NO_FAST_HOURS``
      raises ``AccountProblem(code)``.
    - a ``dict`` with ``properties``, ``displays`` or ``infoUpdated``: a midjourney-proxy account
      (see ``_proxy_pairs``); ``infoUpdated``, when parseable, is the report's ``read_at``.
    - any other ``dict``: the /info fields as keys, with display names (TheNextLeg ``content``),
      snake_case (LinkrAPI ``data``, fast time as ``H:MM:SS``) or camelCase.

    Fields keep the source's order, under the /info display names; unknown keys are kept (made
    readable), the first of two keys that mean the same field wins, keys naming secrets are dropped.
    With no total in the source, the plan's monthly fast time becomes the total, labelled
    ``total_derived`` (only when the remaining figure fits in it). ``BadResponse`` when none of
    the /info fields is there (an empty object, a text with no ``Key: value`` line, another type).
    """
    read_hint: datetime | None = None
    renewal_hint: datetime | None = None
    if isinstance(payload, str):
        pairs: Iterable[tuple[Any, Any]] = _text_pairs(payload)
    elif isinstance(payload, dict) and _PROXY_KEYS.intersection(payload):
        pairs, read_hint, renewal_hint = _proxy_pairs(payload)
    elif isinstance(payload, dict):
        pairs = payload.items()
    else:
        raise BadResponse(f"info is {type(payload).__name__}, neither an object nor text")

    fields: dict[str, str] = {}
    for key, value in pairs:
        name = _display_name(key)
        if name is not None and name not in fields:
            fields[name] = _as_text(value)
    if not any(name in fields for name in DISPLAY_NAMES):
        raise BadResponse("no /info field in the answer")

    remaining, total, percent = parse_fast_time(fields.get(FAST_TIME_KEY))
    plan, status, renewal = parse_subscription(fields.get(SUBSCRIPTION_KEY))
    derived = False
    if remaining is not None and total is None:
        plan_total = _plan_total(plan, remaining.unit)
        if plan_total is not None and 0 <= remaining.value <= plan_total.value:
            total, derived = plan_total, True
            percent = round(remaining.value / plan_total.value * 100, 2)
    return QuotaReport(
        remaining=remaining,
        total=total,
        percent=percent,
        job_mode=(fields.get(JOB_MODE_KEY) or "").strip() or None,
        plan=plan,
        plan_status=status,
        renewal=_sane(renewal) or renewal_hint,
        fields=tuple(fields.items()),
        read_at=read_hint or read_at,
        simulated=simulated,
        total_derived=derived,
    )
