"""Wire-level fakes of the live `/info` providers, built only from /work/shared/providers.md.

Three aiohttp servers on 127.0.0.1, in the style of ``bot/simulator.py`` (``start()`` → base URL,
``stop()``, async context manager, ``ask_script``/``poll_script`` queues of one-shot ``Scripted``
answers that replace the normal ones, recorded ``Request``s, ``require_token``, ``latency``):

- ``UseapiFake``  — useapi.net Midjourney API v3 (ask → jobid → poll, or SSE) and the v2 form;
- ``LinkrFake``   — LinkrAPI, one blocking ``GET /api/v1/info``;
- ``MjproxyFake`` — trueai-org midjourney-proxy: trigger a (throttled, blocking) sync, read the account.

A scripted answer is served by the next request of its kind that passes the auth check (a wrong
token/secret is refused first and consumes nothing); ``Scripted.body`` dict/list → JSON, ``bytes`` → raw,
anything else → text/html unless ``headers`` set a Content-Type. Helpers: ``useapi_error``,
``linkr_error``, ``garbage``. A request still blocked when the fake stops gets 503 (never a success).

All three render the same ``FakeAccount``. Whatever providers.md does not show is marked *(inferred)*:
a client must treat those details leniently, and so the fakes can be switched to sloppy forms.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import aiohttp
from aiohttp import web

from bot.simulator import Request, Scripted

from .waiting import Changes

__all__ = [
    "FakeAccount", "Scripted", "Request", "UseapiFake", "UseapiJob", "LinkrFake", "MjproxyFake",
    "useapi_error", "linkr_error", "garbage", "render_info_text",
]

Seconds = float | Callable[[], float]


def _seconds(value: Seconds) -> float:
    return float(value() if callable(value) else value)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the account -------------------------------------------------------------------------------

_FAST = re.compile(r"^\s*(?P<left>\d+(?:\.\d+)?)\s*(?:/\s*(?P<total>\d+(?:\.\d+)?))?\s*"
                   r"(?P<unit>hours?|minutes?)\s*(?:\((?P<pct>[\d.]+)%\))?\s*$")
_RENEW = re.compile(r"<t:(\d+)>")


def _in_11_days() -> str:
    return f"Standard (Active monthly, renews next on <t:{int(time.time()) + 11 * 86400}>)"


@dataclass
class FakeAccount:
    """The facts of one Midjourney account, as its `/info` shows them (value formats: upstream.md).

    Every fake renders these in its provider's form. ``take_reading()`` is what a fake calls when it
    "runs /info": it returns the fields and, with ``drain_per_reading``, then spends ``drain_step``
    hours of fast time so successive readings differ.
    """

    user_id: str = "123456789012345678"
    subscription: str = field(default_factory=_in_11_days)
    job_mode: str | None = "Fast"  # None: the key is absent
    visibility: str = "Public"
    fast_time: str = "12.06/15.0 hours (80.37%)"
    lifetime_usage: str = "1234 images (56.78 hours)"
    relaxed_usage: str = "10 images (0.50 hours)"
    fast_usage: str = "1100 images (50.12 hours)"  # LinkrAPI / midjourney-proxy only
    turbo_usage: str = "124 images (6.16 hours)"  # LinkrAPI / midjourney-proxy only
    queued_fast: str = "0"
    queued_relax: str = "0"
    running_jobs: str = "None"
    extra: dict[str, str] = field(default_factory=dict)  # unknown /info keys, shown last
    drain_per_reading: bool = False
    drain_step: float = 0.07  # hours spent per reading when draining
    readings: int = 0  # how many times a fake has read this account

    @classmethod
    def basic(cls, **kw: Any) -> "FakeAccount":
        """Basic plan: counted in minutes."""
        renews = int(time.time()) + 11 * 86400
        kw.setdefault("subscription", f"Basic (Active monthly, renews next on <t:{renews}>)")
        kw.setdefault("fast_time", "199.00/200.0 minutes (99.50%)")
        return cls(**kw)

    @classmethod
    def trial(cls, **kw: Any) -> "FakeAccount":
        """Trial: no total, no percent, no renewal."""
        kw.setdefault("subscription", "None (Trial)")
        kw.setdefault("fast_time", "25.00 minutes")
        kw.setdefault("lifetime_usage", "12 images")
        return cls(**kw)

    # --- derived values ---
    def _fast(self) -> re.Match[str] | None:
        return _FAST.match(self.fast_time)

    def remaining_hours(self) -> float | None:
        """Remaining fast time in hours (minutes converted); None if ``fast_time`` is unparseable."""
        m = self._fast()
        if m is None:
            return None
        scale = 60.0 if m["unit"].startswith("minute") else 1.0
        return float(m["left"]) / scale

    def total_hours(self) -> float | None:
        m = self._fast()
        if m is None or m["total"] is None:
            return None
        return float(m["total"]) / (60.0 if m["unit"].startswith("minute") else 1.0)

    def remaining_hms(self) -> str:
        """LinkrAPI's form, ``H:MM:SS`` (``2:45:30``)."""
        secs = round((self.remaining_hours() or 0.0) * 3600)
        return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"

    def renews_at(self) -> int | None:
        m = _RENEW.search(self.subscription)
        return int(m.group(1)) if m else None

    def plan(self) -> str:
        return self.subscription.split("(")[0].strip()

    def billing(self) -> str | None:
        m = re.search(r"Active (\w+)", self.subscription)
        return m.group(1) if m else None

    def set_remaining(self, hours: float) -> None:
        """Set the remaining fast time, keeping the unit, the total and the percent form."""
        m = self._fast()
        if m is None:
            raise ValueError(f"cannot set the remaining time of {self.fast_time!r}")
        minutes = m["unit"].startswith("minute")
        left = max(0.0, hours) * (60.0 if minutes else 1.0)
        if m["total"] is None:
            self.fast_time = f"{left:.2f} {m['unit']}"
            return
        total = float(m["total"])
        percent = f" ({left / total * 100:.2f}%)" if m["pct"] is not None and total else ""
        self.fast_time = f"{left:.2f}/{m['total']} {m['unit']}{percent}"

    def drain(self, hours: float | None = None) -> None:
        """Spend ``hours`` (default ``drain_step``) of fast time; never below zero."""
        left = self.remaining_hours()
        if left is not None:
            self.set_remaining(left - (self.drain_step if hours is None else hours))

    # --- readings ---
    def fields(self) -> dict[str, str]:
        """The /info keys in the order Discord shows them (upstream.md's result object)."""
        out = {"User ID": self.user_id, "Subscription": self.subscription}
        if self.job_mode is not None:
            out["Job Mode"] = self.job_mode
        out.update({
            "Visibility Mode": self.visibility,
            "Fast Time Remaining": self.fast_time,
            "Lifetime Usage": self.lifetime_usage,
            "Relaxed Usage": self.relaxed_usage,
            "Queued Jobs (fast)": self.queued_fast,
            "Queued Jobs (relax)": self.queued_relax,
            "Running Jobs": self.running_jobs,
        })
        out.update(self.extra)
        return out

    def snapshot(self) -> "FakeAccount":
        return FakeAccount(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()})

    def take_reading(self) -> "FakeAccount":
        """A frozen copy of the account as /info shows it now; drains afterwards if asked to."""
        self.readings += 1
        shot = self.snapshot()
        if self.drain_per_reading:
            self.drain()
        return shot

    def info_text(self) -> str:
        return render_info_text(self.fields())


def render_info_text(fields: dict[str, str]) -> str:
    """The /info text form: ``**Key**: value`` lines, a blank line before the queues (providers.md)."""
    lines = []
    for key, value in fields.items():
        if key == "Queued Jobs (fast)" and lines:
            lines.append("")
        lines.append(f"**{key}**: {value}")
    return "\n".join(lines)


# --- scripted answers --------------------------------------------------------------------------

def garbage(status: int = 200, text: str = "<html><body>502 Bad Gateway</body></html>") -> Scripted:
    """A non-JSON body (text/html), e.g. a proxy's error page."""
    return Scripted(status, text)


_USEAPI_ERRORS = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Account has no subscription or subscription expired",
    404: "Job not found",
    410: "Job expired",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    596: "Pending moderation message",
}
_MODERATION_DETAILS = ("Midjourney account is blocked by a pending moderation message: clear it in the "
                       "useapi.net dashboard or POST /v2/account/midjourney/<channel>/reset")


def useapi_error(code: int, error: str | None = None, details: str | None = None, *,
                 retry_after: float | None = None, delay: float = 0.0) -> Scripted:
    """A useapi error answer: body ``{"error", "errorDetails"?, "code"}`` (providers.md, Errors)."""
    body: dict[str, Any] = {"error": error or _USEAPI_ERRORS.get(code, f"Error {code}")}
    if details is None and code == 596:
        details = _MODERATION_DETAILS
    if details is not None:
        body["errorDetails"] = details
    body["code"] = code
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return Scripted(code, body, headers, delay)


def linkr_error(code: int, message: str | None = None, *, retry_after: float | None = None,
                delay: float = 0.0) -> Scripted:
    """A LinkrAPI error answer. Body shape ``{"status": "ERROR", "message"}`` is *(inferred)*."""
    default = {401: "Invalid API key", 502: "Discord or Midjourney timed out, please retry",
               429: "Too many requests"}.get(code, f"Error {code}")
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return Scripted(code, {"status": "ERROR", "message": message or default}, headers, delay)


# --- the shared server -------------------------------------------------------------------------

class _FakeServer:
    """Lifecycle, recording, latency and scripted answers shared by the three fakes."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.ask_script: deque[Scripted] = deque()
        self.poll_script: deque[Scripted] = deque()
        self.asks: list[Request] = []
        self.polls: list[Request] = []
        self.requests: list[Request] = []  # every request, in order, whatever the route
        self.changes = Changes()  # touched on every recorded request / callback
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def app(self) -> web.Application:  # pragma: no cover - each fake adds its routes
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the server stops (so ``stop()`` never waits on a long block)."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._closing.wait(), None if math.isinf(seconds) else seconds)
        except asyncio.TimeoutError:
            pass

    async def _record(self, request: web.Request, into: list[Request] | None) -> Request:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Request(request.method, request.path, dict(request.query), dict(request.headers), body,
                      time.monotonic())
        self.requests.append(rec)
        if into is not None:
            into.append(rec)
        self.changes.touch()
        await self._pause(self.latency)
        return rec

    async def _scripted(self, script: deque[Scripted]) -> web.StreamResponse | None:
        if not script:
            return None
        answer = script.popleft()
        await self._pause(answer.delay)
        return _render(answer)


def _render(answer: Scripted) -> web.Response:
    """dict/list → JSON; bytes → as is; anything else → text (text/html unless headers say otherwise)."""
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
    ctype = next((v for k, v in answer.headers.items() if k.lower() == "content-type"), None)
    body = answer.body
    if isinstance(body, (dict, list)):
        raw, ctype = json.dumps(body).encode(), ctype or "application/json"
    elif isinstance(body, bytes):
        raw, ctype = body, ctype or "application/octet-stream"
    else:
        raw, ctype = str("" if body is None else body).encode(), ctype or "text/html"
    headers["Content-Type"] = ctype
    return web.Response(status=answer.status, body=raw, headers=headers)


def _stopped() -> web.Response:
    """What a request blocked while the fake stops gets (never a success)."""
    return web.Response(status=503, text="fake server stopped", content_type="text/plain")


def _bearer(rec: Request, token: str | None) -> bool:
    return token is None or rec.headers.get("Authorization") == f"Bearer {token}"


# --- useapi.net --------------------------------------------------------------------------------

@dataclass
class UseapiJob:
    """One useapi job. Mutable: a test may change ``outcome``/``error`` or the times after the ask."""

    jobid: str
    request: dict[str, Any]
    created: float  # wall time (epoch)
    born: float  # monotonic time of the ask
    started_at: float  # monotonic: status "started" from here
    progress_at: float  # monotonic: status "progress" from here
    done_at: float  # monotonic: end state from here (inf: never)
    outcome: str = "completed"  # completed | failed | moderated
    error: dict[str, Any] | None = None  # error / errorDetails / code of a failed or moderated job
    reading: FakeAccount | None = None  # taken when the job is first seen done
    version: str = "v3"
    deleted_at: float | None = None  # monotonic: when a DELETE freed it
    stuck: bool = False  # its stream's client left before the end: useapi holds it in "progress" (14 min)
    verb: str = "info"  # info, or a speed mode: fast | relax | turbo
    refusal: str | None = None  # a mode job Midjourney refuses: its sentence
    applied: bool = False  # a mode job's mode was set on the account (once, when first seen done)

    def status(self, now: float) -> str:
        if self.stuck:
            return "progress"
        if now >= self.done_at:
            return "failed" if self.outcome == "error" else self.outcome
        if now >= self.progress_at:
            return "progress"
        if now >= self.started_at:
            return "started"
        return "created"

    def updated(self, now: float) -> str:
        last = max((t for t in (self.born, self.started_at, self.progress_at, self.done_at) if t <= now),
                   default=self.born)
        return _iso(self.created + (last - self.born))


# The speed-mode jobs (providers.md, "switching the account's speed mode"): Midjourney's sentences
# *(inferred)*. Relax is not on the Basic plan; Turbo only on plans that have it.
MODE_SAID = {"fast": "Done! Fast mode enabled: your jobs use your fast hours again.",
             "relax": "Done! Your jobs now do not consume fast-hours, but might take a little longer. You can "
                      "always switch back with /fast",
             "turbo": "Done! Turbo mode enabled: jobs run faster and use twice the fast hours."}
RELAX_REFUSAL = "Sorry, Relax mode is not available on the Basic plan. Upgrade to the Standard plan or higher to use it."
TURBO_REFUSAL = "Sorry, Turbo mode is not available on your plan."
MODE_WORDS = {"fast": "Fast", "relax": "Relax", "turbo": "Turbo"}

_END_EVENTS = ("midjourney_completed", "midjourney_failed", "midjourney_moderated", "error")

_JOB_ERRORS = {
    "failed": {"error": "Midjourney /info failed", "errorDetails": "Discord did not answer the /info command",
               "code": 500},
    "moderated": {"error": "Moderated", "errorDetails": "Midjourney moderation blocked the command",
                  "code": 422},
}


class UseapiFake(_FakeServer):
    """useapi.net Midjourney API v3 (providers.md, "useapi.net, Midjourney API v3"), plus the v2 form.

    Routes (all need ``Authorization: Bearer <require_token>`` when ``require_token`` is set; a wrong
    token → 401 ``{"error": "Unauthorized", "code": 401}``):

    - ``POST /v3/midjourney/jobs/info`` body ``{"stream"?, "channel"?, "replyUrl"?, "replyRef"?}``.
      ``stream`` defaults to true → a Server-Sent Events answer; ``"stream": false`` → 201 receipt
      ``{"jobid", "verb": "info", "status": "created", "created", "updated", "request"}``.
      With ``channels`` > 1 and no ``channel`` → 400 ``channel parameter is required when multiple
      channels (N) are configured``. A ``channel`` not in ``channel_ids`` (when given) → 404 *(inferred)*.
    - ``GET /v3/midjourney/jobs/{jobid}``: created → started → progress → completed|failed|moderated
      over ``complete_after`` s (stage times at 20 % and 40 % of it, capped at 1 s and 2 s *(inferred)*).
      Done: ``response.content`` = the /info text (``done_shape="nested"``, providers.md "inferred from the
      job model") or a top-level ``content`` (``done_shape="top"``, sloppy). Pending: no ``response``
      (``pending_response="absent"``), ``{}`` ("empty") or ``null`` ("null"). Failed/moderated jobs carry
      ``error``, ``errorDetails``, ``code`` (values *(inferred)*). Unknown jobid → 404; a job older than
      ``expire_after`` s → 410.
    - ``POST /v2/jobs/info`` → 200, the finished job at once (``status: "completed"``, top-level
      ``content``); ``GET /v2/jobs/?jobid=…`` → the same object (400 without ``jobid`` *(inferred)*).

    - ``DELETE /v3/midjourney/jobs/{jobid}`` frees the job's slot: 200 ``{"jobid", "status": "deleted"}``
      *(inferred)*, recorded in ``deletes``; the job is then gone (polls 404). ``unfinished()`` lists the
      jobs neither ended nor deleted (a test that leaves one has left a job stuck at useapi).

    - ``POST /v3/midjourney/jobs/fast``, ``/relax``, ``/turbo`` (the speed modes): asked, streamed and
      polled like info (``ask_script`` applies, so a scripted 596 refuses a switch too). Done: ``response``
      ``{"content": Midjourney's sentence, "settings": {"fast", "relax", "turbo" booleans, "stealth",
      "remix"}}``, and the account's ``job_mode`` is the new mode from then on (later info jobs show it).
      Relax on a Basic plan, or Turbo with ``turbo=False``, is refused with Midjourney's sentence: the
      job ends ``failed`` with it as ``error`` (``mode_refusal="failed"``), or ``completed`` with it as
      ``response.content`` and the settings unchanged (``mode_refusal="completed"``). ``mode_asks``
      records these asks.

    SSE form (providers.md, "results in real time"): HTTP 200 ``text/event-stream``, one ``data:`` line
    per event then a blank line: ``{"event": "initialized", "message", "jobId", "seq", "ts"}``, then
    ``midjourney_created``/``_started``/``_progress`` (``job.response.progress_percent``), each with
    ``"job"`` (the job as a poll shows it), at the job's stage times, and one end event:
    ``midjourney_completed``/``_failed``/``_moderated``, or ``error`` (``job_outcome="error"``: ``{"event":
    "error", "error", "code", "jobId"}``; polls then say ``failed``); closed after it. Shapes, set per
    fake or per stream (``stream_script``, a queue of option dicts, one per streamed ask):
    ``sse_style`` a set of ``"event_lines"`` (an ``event: <name>`` line too), ``"crlf"``, ``"cr"``,
    ``"split"`` (the JSON over several ``data:`` lines), ``"bom"``, ``"unknown"`` (events of a kind no
    document lists, and a ``retry:``/``id:`` line); ``sse_keepalive`` seconds between ``: keep-alive``
    comments; ``cut_after`` an event name (the connection is dropped after it, the job goes on);
    ``silent_after`` an event name (nothing more is sent, the connection stays open, the job goes on);
    ``events`` a list of ``(seconds after the ask, event name | raw bytes)`` replacing the job's own
    timeline. A client that closes the stream before the end event leaves the job stuck (providers.md):
    it stays ``progress`` until deleted.
    With ``callback=True`` and a ``replyUrl``, the finished job JSON is POSTed there when the job ends
    (``callbacks`` records each try). Asks (v3 and v2 info) go to ``asks``/``ask_script``; polls (v3 and
    v2 GET) to ``polls``/``poll_script``. The jobid looks like useapi's
    ``j<MMDDHHMMSSmmm>i-u<n>-c<channel>-bot:midjourney`` *(inferred)*, colon included.
    """

    def __init__(
        self,
        *,
        account: FakeAccount | None = None,
        require_token: str | None = None,
        complete_after: Seconds = 0.3,
        channels: int = 1,
        channel_ids: list[str] | None = None,
        done_shape: str = "nested",  # "nested" (response.content) | "top" (top-level content)
        pending_response: str = "absent",  # "absent" | "empty" ({}) | "null"
        job_outcome: str | Callable[[int], str] = "completed",  # or a function of the job's index
        job_error: dict[str, Any] | None = None,  # overrides error/errorDetails/code of failed jobs
        expire_after: float | None = None,
        callback: bool = False,
        sse_interval: float = 0.05,
        sse_style: frozenset[str] | set[str] = frozenset(),
        sse_keepalive: float | None = None,
        latency: float = 0.0,
        turbo: bool = True,
        mode_refusal: str = "failed",  # "failed" | "completed": how a refused mode job ends
    ) -> None:
        super().__init__(latency=latency)
        self.account = account or FakeAccount()
        self.turbo = turbo
        self.mode_refusal = mode_refusal
        self.mode_asks: list[Request] = []
        self.require_token = require_token
        self.complete_after = complete_after
        self.channel_ids = channel_ids
        self.channels = len(channel_ids) if channel_ids else channels
        self.done_shape = done_shape
        self.pending_response = pending_response
        self.job_outcome = job_outcome
        self.job_error = job_error
        self.expire_after = expire_after
        self.callback = callback
        self.sse_interval = sse_interval
        self.sse_style = frozenset(sse_style)
        self.sse_keepalive = sse_keepalive
        self.stream_script: deque[dict[str, Any]] = deque()  # per streamed ask: sse_style, cut_after, …
        self.streams: list[dict[str, Any]] = []  # per stream: {"jobid", "sent": [names], "closed_by"}
        self.deletes: list[Request] = []
        self.jobs: dict[str, UseapiJob] = {}
        self.callbacks: list[dict[str, Any]] = []  # {"url", "body", "status" | "error", "at"}
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/midjourney/jobs/info", self._ask_v3)
        for verb in MODE_WORDS:
            app.router.add_post(f"/v3/midjourney/jobs/{verb}", self._ask_mode_v3)
        app.router.add_get("/v3/midjourney/jobs/{jobid}", self._poll_v3)
        app.router.add_delete("/v3/midjourney/jobs/{jobid}", self._delete_v3)
        app.router.add_post("/v2/jobs/info", self._ask_v2)
        app.router.add_get("/v2/jobs/", self._poll_v2)
        app.router.add_get("/v2/jobs", self._poll_v2)
        return app

    @staticmethod
    def _error(code: int, error: str) -> web.Response:
        return web.json_response({"error": error, "code": code}, status=code)

    # --- asks ---
    async def _precheck(self, rec: Request) -> web.StreamResponse | None:
        if not _bearer(rec, self.require_token):
            return self._error(401, "Unauthorized")
        scripted = await self._scripted(self.ask_script)
        if scripted is not None:
            return scripted
        if rec.body is not None and not isinstance(rec.body, dict):
            return self._error(400, "Request body must be a JSON object")
        body = rec.body or {}
        channel = body.get("channel")
        if self.channels > 1 and not channel:
            return self._error(400, f"channel parameter is required when multiple channels ({self.channels}) "
                                    "are configured")
        if channel and self.channel_ids is not None and str(channel) not in self.channel_ids:
            return self._error(404, f"Channel {channel} not found")
        return None

    def _new_job(self, body: dict[str, Any], version: str, delay: float | None = None, verb: str = "info") -> UseapiJob:
        n = next(self._ids)
        now_wall, now = time.time(), time.monotonic()
        channel = str(body.get("channel") or (self.channel_ids or ["1234567890123456789"])[0])
        stamp = datetime.now(timezone.utc).strftime("%m%d%H%M%S%f")[:13]
        jobid = f"j{stamp}i-u{n}-c{channel}-bot:midjourney"
        delay = _seconds(self.complete_after) if delay is None else delay
        outcome = self.job_outcome(n - 1) if callable(self.job_outcome) else self.job_outcome
        job = UseapiJob(jobid, dict(body), now_wall, now, now + min(0.2 * delay, 1.0),
                        now + min(0.4 * delay, 2.0), now + delay, outcome, version=version, verb=verb)
        if verb != "info":
            job.refusal = self._mode_refusal(verb)
            if job.refusal is not None and self.mode_refusal == "failed":
                job.outcome = "failed"
                job.error = {"error": job.refusal, "errorDetails": None, "code": 422}
        self.jobs[jobid] = job
        if self.callback and body.get("replyUrl") and not math.isinf(delay):
            self._spawn(self._call_back(job, str(body["replyUrl"])))
        return job

    async def _ask_v3(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, self.asks)
        refused = await self._precheck(rec)
        if refused is not None:
            return refused
        body = rec.body or {}
        job = self._new_job(body, "v3")
        if body.get("stream", True) in (False, "false", 0):
            return web.json_response(self.render(job), status=201)
        return await self._stream(request, job)

    async def _ask_mode_v3(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, self.mode_asks)
        refused = await self._precheck(rec)
        if refused is not None:
            return refused
        body = rec.body or {}
        verb = request.path.rsplit("/", 1)[1]
        job = self._new_job(body, "v3", verb=verb)
        if body.get("stream", True) in (False, "false", 0):
            return web.json_response(self.render(job), status=201)
        return await self._stream(request, job)

    def _mode_refusal(self, verb: str) -> str | None:
        if verb == "relax" and self.account.plan().lower().startswith("basic"):
            return RELAX_REFUSAL
        if verb == "turbo" and not self.turbo:
            return TURBO_REFUSAL
        return None

    def settings(self) -> dict[str, bool]:
        """The account's settings as a mode job's ``response.settings`` shows them."""
        on = (self.account.job_mode or "").lower()
        return {"fast": on.startswith("fast"), "relax": on.startswith("relax"), "turbo": on.startswith("turbo"),
                "stealth": False, "remix": False}

    async def _ask_v2(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, self.asks)
        refused = await self._precheck(rec)
        if refused is not None:
            return refused
        job = self._new_job(rec.body or {}, "v2", delay=0.0)
        return web.json_response(self.render(job))

    async def _stream(self, request: web.Request, job: UseapiJob) -> web.StreamResponse:
        opts: dict[str, Any] = {"sse_style": self.sse_style, "sse_keepalive": self.sse_keepalive}
        if self.stream_script:
            opts.update(self.stream_script.popleft())
        style = frozenset(opts.get("sse_style") or ())
        eol = "\r\n" if "crlf" in style else "\r" if "cr" in style else "\n"
        keepalive = opts.get("sse_keepalive")
        record: dict[str, Any] = {"jobid": job.jobid, "sent": [], "closed_by": None}
        self.streams.append(record)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache"})
        await resp.prepare(request)
        seq = itertools.count()

        def gone() -> bool:
            transport = request.transport
            return transport is None or transport.is_closing()

        async def send(raw: bytes) -> bool:
            if gone():
                return False
            try:
                await resp.write(raw)
                return True
            except (ConnectionResetError, RuntimeError, aiohttp.ClientConnectionResetError):
                return False

        async def wait_until(at: float) -> bool:
            """Sleep until ``at`` (keep-alives meanwhile); False when the client left or the fake stops."""
            next_ping = time.monotonic() + keepalive if keepalive else math.inf
            while True:
                now = time.monotonic()
                if gone() or self._closing.is_set():
                    return False
                if now >= at:
                    return True
                if now >= next_ping:
                    if not await send(f": keep-alive{eol}{eol}".encode()):
                        return False
                    next_ping = now + keepalive
                await self._pause(min(at, next_ping, now + 0.02) - now)

        if "bom" in style and not await send(b"\xef\xbb\xbf"):
            return resp
        timeline = opts.get("events") or self._timeline(job)
        ended = False
        for at, item in timeline:
            if not await wait_until(job.born + at if "events" in opts else at):
                break
            if isinstance(item, bytes):
                if not await send(item):
                    break
                continue
            if "unknown" in style and item == "midjourney_started":
                await send(f"retry: 3000{eol}id: 7{eol}event: account_heartbeat{eol}"
                           f"data: {json.dumps({'event': 'account_heartbeat', 'seq': -1})}{eol}{eol}".encode())
            if not await send(self._event(item, job, next(seq), style, eol)):
                break
            record["sent"].append(item)
            if item in _END_EVENTS:
                ended = True
                break
            if item == opts.get("cut_after"):
                record["closed_by"] = "server cut"
                if request.transport is not None:
                    request.transport.abort()
                return resp
            if item == opts.get("silent_after"):
                await wait_until(math.inf)  # until the client leaves or the fake stops
                break
        if not ended and gone() and not self._closing.is_set():
            record["closed_by"] = "client"
            now = time.monotonic()
            if job.status(now) not in ("completed", "failed", "moderated") and job.deleted_at is None:
                job.stuck = True  # providers.md: the job stays "progress" for 14 minutes
            self.changes.touch()
            return resp
        record["closed_by"] = record["closed_by"] or ("end" if ended else "stop")
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError, aiohttp.ClientConnectionResetError):
            pass
        return resp

    def _timeline(self, job: UseapiJob) -> list[tuple[float, str]]:
        """The job's own events at its stage times (monotonic)."""
        end = {"completed": "midjourney_completed", "failed": "midjourney_failed",
               "moderated": "midjourney_moderated", "error": "error"}.get(job.outcome, "midjourney_failed")
        return [(job.born, "initialized"), (job.born, "midjourney_created"), (job.started_at, "midjourney_started"),
                (job.progress_at, "midjourney_progress"), (job.done_at, end)]

    def _event(self, name: str, job: UseapiJob, seq: int, style: frozenset[str], eol: str) -> bytes:
        now = time.monotonic()
        ts = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:12]
        body: dict[str, Any] = {"event": name, "seq": seq, "ts": ts}
        if name == "initialized":
            body.update(message="Stream initialized", jobId=job.jobid)
        elif name == "error":
            error = job.error or self.job_error or {"error": "Midjourney did not answer", "code": 500}
            body.update(jobId=job.jobid, error=error.get("error"), code=error.get("code"))
        elif name.startswith("midjourney_"):
            stage = name.removeprefix("midjourney_")
            # the job as a poll shows it, at least at this event's stage (a scripted timeline may run ahead)
            at = {"created": job.born, "started": job.started_at, "progress": job.progress_at}.get(stage, job.done_at)
            if stage in ("completed", "failed", "moderated") and job.outcome != stage:
                job.outcome = stage
            if stage in ("created", "started", "progress", "completed", "failed", "moderated"):
                if now < at:  # a scripted event ahead of the job's own times moves the job along
                    setattr(job, {"created": "born", "started": "started_at", "progress": "progress_at"}.get(
                        stage, "done_at"), now)
                job_body = self.render(job, max(now, at))
                if stage == "progress":
                    job_body.setdefault("response", {})
                    job_body["response"] = {**(job_body["response"] or {}), "progress_percent": 40}
                body["job"] = job_body
            else:
                body["jobId"] = job.jobid
        else:
            body["jobId"] = job.jobid  # an event kind no document lists
        text = json.dumps(body, indent=1) if "split" in style else json.dumps(body)
        lines = [f"event: {name}"] if "event_lines" in style else []
        lines += [f"data: {line}" for line in text.split("\n")]
        return (eol.join(lines) + eol + eol).encode()

    async def _delete_v3(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.deletes)
        if not _bearer(rec, self.require_token):
            return self._error(401, "Unauthorized")
        job = self.jobs.get(request.match_info["jobid"])
        if job is None or job.deleted_at is not None:
            return self._error(404, f"Job {request.match_info['jobid']} not found")
        job.deleted_at = time.monotonic()
        return web.json_response({"jobid": job.jobid, "status": "deleted"})

    def unfinished(self) -> list[str]:
        """The jobs neither ended nor deleted: each would hold one of the account's job slots."""
        now = time.monotonic()
        return [j.jobid for j in self.jobs.values()
                if j.deleted_at is None and j.status(now) not in ("completed", "failed", "moderated")]

    # --- polls ---
    async def _poll_v3(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.polls)
        return await self._poll(rec, request.match_info["jobid"])

    async def _poll_v2(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.polls)
        return await self._poll(rec, rec.query.get("jobid", ""), v2=True)

    async def _poll(self, rec: Request, jobid: str, v2: bool = False) -> web.Response:
        if not _bearer(rec, self.require_token):
            return self._error(401, "Unauthorized")
        scripted = await self._scripted(self.poll_script)
        if scripted is not None:
            return scripted
        if v2 and not jobid:
            return self._error(400, "jobid parameter is required")
        job = self.jobs.get(jobid)
        if job is None or job.deleted_at is not None:
            return self._error(404, f"Job {jobid} not found")
        now = time.monotonic()
        if self.expire_after is not None and now - job.born >= self.expire_after:
            return self._error(410, f"Job {jobid} expired")
        return web.json_response(self.render(job, now, v2=v2))

    # --- the job object ---
    def render(self, job: UseapiJob, now: float | None = None, *, v2: bool | None = None) -> dict[str, Any]:
        """The job as the server shows it at ``now`` (monotonic)."""
        now = time.monotonic() if now is None else now
        v2 = job.version == "v2" if v2 is None else v2
        status = job.status(now)
        out: dict[str, Any] = {"jobid": job.jobid, "verb": job.verb, "status": status,
                               "created": _iso(job.created), "updated": job.updated(now),
                               "request": job.request}
        if status == "completed" and job.verb != "info":
            if job.refusal is None and not job.applied:
                job.applied = True
                self.account.job_mode = MODE_WORDS[job.verb]
            out["response"] = {"content": job.refusal or MODE_SAID[job.verb], "settings": self.settings()}
        elif status == "completed":
            if job.reading is None:
                job.reading = self.account.take_reading()
            text = job.reading.info_text()
            if v2 or self.done_shape == "top":
                out["content"] = text
            else:
                out["response"] = {"content": text}
        elif status in ("failed", "moderated"):
            error = job.error or self.job_error or _JOB_ERRORS.get(status, _JOB_ERRORS["failed"])
            out.update({"error": error.get("error"), "errorDetails": error.get("errorDetails"),
                        "code": error.get("code")})
        elif self.pending_response == "empty":
            out["response"] = {}
        elif self.pending_response == "null":
            out["response"] = None
        return out

    async def _call_back(self, job: UseapiJob, url: str) -> None:
        await self._pause(job.done_at - time.monotonic())
        if self._closing.is_set():
            return
        body = self.render(job)
        entry: dict[str, Any] = {"url": url, "body": body, "at": time.monotonic()}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                async with session.post(url, json=body) as resp:
                    entry["status"] = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            entry["error"] = repr(exc)
        self.callbacks.append(entry)
        self.changes.touch()


# --- LinkrAPI ----------------------------------------------------------------------------------

class LinkrFake(_FakeServer):
    """LinkrAPI (providers.md, "LinkrAPI"): one synchronous ``GET /api/v1/info``.

    Needs ``Authorization: Bearer <require_token>`` (an ``lkr_…`` key) when ``require_token`` is set;
    otherwise → 401 ``{"status": "ERROR", "message": "Invalid API key"}`` (body *(inferred)*). The call
    blocks ``delay`` s (number or callable; the real one 5–15 s), then answers
    ``{"status": "SUCCESS", "data": {user_id, subscription, job_mode, visibility_mode,
    fast_time_remaining "H:MM:SS", lifetime_usage, fast_usage, turbo_usage, relaxed_usage,
    queued_jobs_fast, queued_jobs_relax, running_jobs}}``. Value types beyond ``fast_time_remaining``
    are *(inferred)*: usage strings as Discord shows them, queues and running jobs as integers.
    ``sloppy=True``: ``"status": "success"``, numbers as strings, ``running_jobs`` as Discord's text,
    and an unknown key. 502 (Discord/Midjourney timed out, retryable): ``ask_script.append(linkr_error(502))``.
    Every request goes to ``asks``/``ask_script``.
    """

    def __init__(self, *, account: FakeAccount | None = None, require_token: str | None = None,
                 delay: Seconds = 0.1, sloppy: bool = False, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.account = account or FakeAccount()
        self.require_token = require_token
        self.delay = delay
        self.sloppy = sloppy

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/info", self._info)
        return app

    async def _info(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, self.asks)
        if not _bearer(rec, self.require_token):
            return web.json_response({"status": "ERROR", "message": "Invalid API key"}, status=401)
        scripted = await self._scripted(self.ask_script)
        if scripted is not None:
            return scripted
        await self._pause(_seconds(self.delay))
        if self._closing.is_set():
            return _stopped()
        return web.json_response(self.render(self.account.take_reading()))

    def render(self, acc: FakeAccount) -> dict[str, Any]:
        def count(text: str) -> int | str:
            if self.sloppy:
                return text
            if text.strip() in ("None", ""):
                return 0
            return int(text) if text.strip().isdigit() else text

        data: dict[str, Any] = {
            "user_id": acc.user_id,
            "subscription": acc.subscription,
            "job_mode": acc.job_mode,
            "visibility_mode": acc.visibility,
            "fast_time_remaining": acc.remaining_hms(),
            "lifetime_usage": acc.lifetime_usage,
            "fast_usage": acc.fast_usage,
            "turbo_usage": acc.turbo_usage,
            "relaxed_usage": acc.relaxed_usage,
            "queued_jobs_fast": count(acc.queued_fast),
            "queued_jobs_relax": count(acc.queued_relax),
            "running_jobs": count(acc.running_jobs),
        }
        if self.sloppy:
            data["stealth_mode"] = "false"
        return {"status": "success" if self.sloppy else "SUCCESS", "data": data}


# --- midjourney-proxy (trueai-org) --------------------------------------------------------------

# (window seconds, most syncs allowed in it), providers.md: 1 per 5 min, 2 per 10, 3 per 30, 5 per hour
SYNC_LIMITS: tuple[tuple[float, int], ...] = ((300, 1), (600, 2), (1800, 3), (3600, 5))


@dataclass
class _Stored:
    """What the proxy holds for one account: its last reading and when it was taken (clock time)."""

    account: FakeAccount
    reading: FakeAccount | None
    info_updated: float | None
    syncs: list[float] = field(default_factory=list)  # clock times of accepted syncs
    syncing: bool = False


class MjproxyFake(_FakeServer):
    """trueai-org midjourney-proxy (providers.md, "midjourney-proxy, trueai-org fork").

    - ``POST /mj/admin/account-sync/{accountId}`` (header ``Mj-Api-Secret``): blocks ``sync_delay`` s,
      takes a fresh reading (``infoUpdated`` = now) and answers ``{"success": true, "code": 1,
      "message": "Success"}`` (code/message values *(inferred)*). Refusals answer HTTP 200
      ``{"success": false, "message": …}``: a sync already running for the account, the throttle
      (``SYNC_LIMITS``: 1 per 5 min, 2 per 10, 3 per 30, 5 per hour, windows × ``throttle_scale``,
      counted on ``clock``), or ``refuse_sync`` (True or a message: refuse every sync).
    - ``GET /mj/admin/account/{accountId}``: the stored account, camelCase: ``id, channelId,
      fastTimeRemaining, relaxedUsage, lifetimeUsage, fastUsage, turboUsage, infoUpdated, properties
      {"Fast Time Remaining", "Job Mode", "Subscription", …}, displays {subscribePlan, billedWay, renewDate,
      mode}``. Extra keys (``guildId``, ``enable``, ``remark``) and the ``displays`` values are *(inferred)*.
      An account never read has ``infoUpdated: null`` and null figures (``info_age=None``).
    - Wrong/missing secret (when ``require_secret`` is set) → 401, plain-text body ``Unauthorized``.
    - Unknown accountId (chosen here, *(inferred)*): HTTP 404 with ``{"success": false, "code": 404,
      "message": "Account not found"}``, on both routes.

    ``clock`` (epoch seconds, default ``time.time``) drives the throttle and ``infoUpdated``; tests can
    inject a fake one or scale the windows. ``time_style`` renders ``infoUpdated``: "iso"
    (``…Z``), "offset" (C#-like ``2025-06-01T20:00:00.1234567+08:00``) or "epoch_ms" (a number), the last
    two *(inferred)* sloppy forms. Syncs go to ``asks``/``ask_script``, reads to ``polls``/``poll_script``.
    """

    def __init__(
        self,
        *,
        account: FakeAccount | None = None,
        account_id: str = "1820000000000000001",
        channel_id: str = "1234567890123456789",
        require_secret: str | None = None,
        sync_delay: Seconds = 0.1,
        info_age: float | None = 600.0,  # age of the stored reading at start (None: never read)
        throttle: bool = True,
        throttle_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
        refuse_sync: bool | str = False,
        time_style: str = "iso",
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.require_secret = require_secret
        self.sync_delay = sync_delay
        self.throttle = throttle
        self.throttle_scale = throttle_scale
        self.clock = clock
        self.refuse_sync = refuse_sync
        self.time_style = time_style
        self.channel_ids: dict[str, str] = {}
        self.accounts: dict[str, _Stored] = {}
        self.add_account(account_id, account or FakeAccount(), channel_id=channel_id, info_age=info_age)

    @property
    def account_id(self) -> str:
        return next(iter(self.accounts))

    @property
    def account(self) -> FakeAccount:
        return self.accounts[self.account_id].account

    def add_account(self, account_id: str, account: FakeAccount, *, channel_id: str = "1234567890123456789",
                    info_age: float | None = 600.0) -> None:
        reading = account.snapshot() if info_age is not None else None
        at = self.clock() - info_age if info_age is not None else None
        self.accounts[account_id] = _Stored(account, reading, at)
        self.channel_ids[account_id] = channel_id

    def set_info_updated(self, *, age: float | None = None, at: float | None = None,
                         account_id: str | None = None) -> None:
        """Make the stored reading ``age`` seconds old (or taken at clock time ``at``)."""
        stored = self.accounts[account_id or self.account_id]
        if stored.reading is None:
            stored.reading = stored.account.snapshot()
        stored.info_updated = at if at is not None else self.clock() - (age or 0.0)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/mj/admin/account-sync/{id}", self._sync)
        app.router.add_get("/mj/admin/account/{id}", self._read)
        return app

    def _authorised(self, rec: Request) -> bool:
        return self.require_secret is None or rec.headers.get("Mj-Api-Secret") == self.require_secret

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.Response(status=401, text="Unauthorized", content_type="text/plain")

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"success": False, "code": 404, "message": "Account not found"}, status=404)

    def _throttled(self, stored: _Stored, now: float) -> str | None:
        if not self.throttle:
            return None
        for window, most in SYNC_LIMITS:
            span = window * self.throttle_scale
            if sum(1 for t in stored.syncs if now - t < span) >= most:
                return (f"Sync too frequent: at most {most} per {window / 60:g} minutes, "
                        "please try again later")
        return None

    async def _sync(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.asks)
        if not self._authorised(rec):
            return self._unauthorised()
        scripted = await self._scripted(self.ask_script)
        if scripted is not None:
            return scripted
        stored = self.accounts.get(request.match_info["id"])
        if stored is None:
            return self._not_found()
        if self.refuse_sync:
            message = self.refuse_sync if isinstance(self.refuse_sync, str) else "Sync refused"
            return web.json_response({"success": False, "message": message})
        if stored.syncing:
            return web.json_response({"success": False, "message": "A sync of this account is already running"})
        now = self.clock()
        throttled = self._throttled(stored, now)
        if throttled:
            return web.json_response({"success": False, "message": throttled})
        stored.syncs.append(now)
        stored.syncing = True
        try:
            await self._pause(_seconds(self.sync_delay))
            if self._closing.is_set():
                return _stopped()
            stored.reading = stored.account.take_reading()
            stored.info_updated = self.clock()
        finally:
            stored.syncing = False
        return web.json_response({"success": True, "code": 1, "message": "Success", "result": None})

    async def _read(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.polls)
        if not self._authorised(rec):
            return self._unauthorised()
        scripted = await self._scripted(self.poll_script)
        if scripted is not None:
            return scripted
        account_id = request.match_info["id"]
        if account_id not in self.accounts:
            return self._not_found()
        return web.json_response(self.render(account_id))

    def _time(self, at: float | None) -> Any:
        if at is None:
            return None
        if self.time_style == "epoch_ms":
            return int(at * 1000)
        if self.time_style == "offset":
            local = datetime.fromtimestamp(at, timezone(timedelta(hours=8)))
            return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+08:00"
        return _iso(at)

    def render(self, account_id: str) -> dict[str, Any]:
        stored = self.accounts[account_id]
        r = stored.reading
        out: dict[str, Any] = {"id": account_id, "channelId": self.channel_ids[account_id],
                               "guildId": "1234567890123456780", "enable": True, "remark": ""}
        if r is None:
            out.update({"fastTimeRemaining": None, "relaxedUsage": None, "lifetimeUsage": None,
                        "fastUsage": None, "turboUsage": None, "infoUpdated": None,
                        "properties": {}, "displays": {}})
            return out
        renews = r.renews_at()
        out.update({
            "fastTimeRemaining": r.fast_time,
            "relaxedUsage": r.relaxed_usage,
            "lifetimeUsage": r.lifetime_usage,
            "fastUsage": r.fast_usage,
            "turboUsage": r.turbo_usage,
            "infoUpdated": self._time(stored.info_updated),
            "properties": r.fields(),
            "displays": {
                "subscribePlan": r.plan(),
                "billedWay": r.billing(),
                "renewDate": _iso(renews) if renews else None,
                "mode": r.job_mode,
            },
        })
        return out
