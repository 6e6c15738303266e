"""A real local HTTP server that speaks the upstream "info" protocol.

``quota-bot run`` starts it when no ``NEXTLEG_API_TOKEN`` is set, so the whole path (ask, poll,
parse, render) runs on a fresh machine; every reading it gives is labelled simulated. The tests and
benchmarks drive the same server, scripted through queued → running → done / failed / expired,
with scripted HTTP answers (401, 429 + Retry-After, 5xx, non-JSON) and recorded requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

Content = dict[str, Any] | str


def default_content(reading: int) -> dict[str, Any]:
    """A plausible Standard-plan account whose fast time drops a little with each reading."""
    remaining = max(0.0, 12.06 - 0.07 * reading)
    renews = int(time.time()) + 11 * 86400
    return {
        "User ID": "000000000000000000",
        "Subscription": f"Standard (Active monthly, renews next on <t:{renews}>)",
        "Job Mode": "Fast",
        "Visibility Mode": "Public",
        "Fast Time Remaining": f"{remaining:.2f}/15.0 hours ({remaining / 15 * 100:.2f}%)",
        "Lifetime Usage": "1234 images (56.78 hours)",
        "Relaxed Usage": "10 images (0.50 hours)",
        "Queued Jobs (fast)": "0",
        "Queued Jobs (relax)": "0",
        "Running Jobs": "None",
    }


# --- the demo account: a plausible past and present for `quota-bot run` with no credentials --------
# A Standard plan (15 h) that renews every 30 days and is spent in bursts (about every 3 days) at
# ~0.42 h/day on average: the seeded history and the live simulator follow the same curve, so the
# first `/quota` already shows a pace line and `/quota history` a chart.
DEMO_TOTAL = 15.0
DEMO_CYCLE = 30 * 86400.0
DEMO_ANCHOR = 1794096000.0  # 2026-11-08T00:00Z: renewals fall every DEMO_CYCLE from here (and before)
DEMO_RATE = 0.42  # hours a day
_BURST = 2 * math.pi / 3.0  # one burst of use about every 3 days


def demo_cycle(at: float) -> tuple[float, float]:
    """(start of the cycle ``at`` falls in, its renewal)."""
    start = DEMO_ANCHOR + math.floor((at - DEMO_ANCHOR) / DEMO_CYCLE) * DEMO_CYCLE
    return start, start + DEMO_CYCLE


def demo_remaining(at: float) -> float:
    """Hours left at ``at``: monotone within a cycle (d − sin(ωd)/ω never decreases), reset at renewal."""
    days = (at - demo_cycle(at)[0]) / 86400
    used = DEMO_RATE * (days - math.sin(_BURST * days) / _BURST)
    return round(max(0.0, DEMO_TOTAL - used), 2)


def demo_history(now: float, days: int = 30, every: float = 2 * 3600) -> list[tuple[float, float, float, float]]:
    """(read_at, remaining, total, renewal) every ``every`` seconds (jittered, deterministic) up to now."""
    rows = []
    at = now - days * 86400
    step = 0
    while at < now - 60:
        jitter = ((step * 7919) % 1000) / 1000 * 0.3 * every
        moment = at + jitter
        rows.append((moment, demo_remaining(moment), DEMO_TOTAL, demo_cycle(moment)[1]))
        at += every
        step += 1
    return rows


def demo_content(reading: int) -> dict[str, Any]:
    """The demo account now (``reading`` is unused: the figures follow the clock, not the count)."""
    now = time.time()
    remaining = demo_remaining(now)
    return {
        "User ID": "000000000000000000",
        "Subscription": f"Standard (Active monthly, renews next on <t:{int(demo_cycle(now)[1])}>)",
        "Job Mode": "Fast",
        "Visibility Mode": "Public",
        "Fast Time Remaining": f"{remaining:.2f}/{DEMO_TOTAL:.1f} hours ({remaining / DEMO_TOTAL * 100:.2f}%)",
        "Lifetime Usage": "1234 images (56.78 hours)",
        "Relaxed Usage": "10 images (0.50 hours)",
        "Queued Jobs (fast)": "0",
        "Queued Jobs (relax)": "0",
        "Running Jobs": "None",
    }


@dataclass
class Scripted:
    """One scripted HTTP answer that replaces the normal one (for failure scenarios)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Job:
    id: str
    ref: str
    created: float
    started: float  # monotonic time it leaves the queue and starts running
    done_at: float  # monotonic time the result becomes available (inf: never)
    content: Content


class UpstreamSimulator:
    """Scriptable upstream. ``complete_after`` may be a number of seconds or a callable giving one."""

    def __init__(
        self,
        *,
        prefix: str = "/v2",
        complete_after: float | Callable[[], float] = 1.2,
        content: Content | Callable[[int], Content] = default_content,
        nested: bool = True,
        firestore_times: bool = False,
        expire_after: float | None = None,
        queue_time: float = 0.0,
        report_progress: bool = True,
        latency: float = 0.0,
        require_token: str | None = None,
        pending_response: str = "absent",
        progress_field: bool = True,
        progress_as_string: bool = False,
        empty_at_100: float = 0.0,
        callback: bool = True,
        callback_delay: float = 0.0,
        hide_from_polls: bool = False,
        timestamps: bool = True,
    ) -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.complete_after = complete_after
        self.content = content
        self.nested = nested
        self.firestore_times = firestore_times
        self.timestamps = timestamps  # False: a sloppy clone whose results carry no createdAt/responseAt
        self.expire_after = expire_after
        self.queue_time = queue_time  # seconds a job reports progress 0 (queued) before it runs
        self.report_progress = report_progress  # False: progress stays 0 until done (no hint)
        self.latency = latency
        self.require_token = require_token
        # The pending and done shapes shared/upstream.md lists, for servers other than TheNextLeg:
        # pending_response: "absent" ({"progress": 42}), "empty" (+ "response": {}) or "null" (+ null);
        # progress_field=False: no progress at all (pending is {} or the empty response, done is the
        # result alone); progress_as_string: "42" and "100"; empty_at_100: seconds during which a
        # finished job already says progress 100 while its response is still empty.
        self.pending_response = pending_response
        self.progress_field = progress_field
        self.progress_as_string = progress_as_string
        self.empty_at_100 = empty_at_100
        # webhooks: an ask with webhookOverride gets the result POSTed there when done (callback_delay
        # late); hide_from_polls: polls never show the result (only the callback brings it)
        self.callback = callback
        self.callback_delay = callback_delay
        self.hide_from_polls = hide_from_polls
        self.callbacks: list[dict[str, Any]] = []
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self.ask_script: deque[Scripted] = deque()
        self.poll_script: deque[Scripted] = deque()
        self.asks: list[Request] = []
        self.polls: list[Request] = []
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- lifecycle ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", f"{self.prefix}/info", self._info)
        app.router.add_route("POST", f"{self.prefix}/info", self._info)
        app.router.add_route("POST", "/api", self._legacy)
        app.router.add_route("GET", f"{self.prefix}/message/{{id}}", self._message)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started: the server is there
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        for task in list(self._callback_tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "UpstreamSimulator":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # --- handlers -------------------------------------------------------------------------------
    async def _record(self, request: web.Request, into: list[Request]) -> Request:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Request(request.method, request.path, dict(request.query), dict(request.headers), body,
                      time.monotonic())
        into.append(rec)
        if self.latency:
            await asyncio.sleep(self.latency)
        return rec

    def _authorised(self, rec: Request) -> bool:
        return self.require_token is None or rec.headers.get("Authorization") == f"Bearer {self.require_token}"

    async def _scripted(self, script: deque[Scripted]) -> web.Response | None:
        if not script:
            return None
        answer = script.popleft()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if isinstance(answer.body, (dict, list)):
            text, ctype = json.dumps(answer.body), "application/json"
        else:
            text, ctype = str(answer.body or ""), "text/html"
        return web.Response(status=answer.status, text=text, content_type=ctype, headers=answer.headers)

    async def _info(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.asks)
        return await self._accept(rec)

    async def _legacy(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.asks)
        if not isinstance(rec.body, dict) or rec.body.get("cmd") != "info":
            return web.json_response({"success": False, "msg": "unknown cmd"}, status=400)
        return await self._accept(rec)

    async def _accept(self, rec: Request) -> web.Response:
        if not self._authorised(rec):
            return web.json_response({"success": False, "msg": "Unauthorized"}, status=401)
        scripted = await self._scripted(self.ask_script)
        if scripted is not None:
            return scripted
        job_id = f"sim{next(self._ids):06d}"
        delay = self.complete_after() if callable(self.complete_after) else self.complete_after
        content = self.content(len(self.jobs)) if callable(self.content) else self.content
        ref = rec.body.get("ref", "") if isinstance(rec.body, dict) else ""
        now = time.monotonic()
        queued = min(self.queue_time, delay)
        self.jobs[job_id] = Job(job_id, str(ref), now, now + queued, now + delay, content)
        hook = rec.body.get("webhookOverride") if isinstance(rec.body, dict) else None
        if self.callback and isinstance(hook, str) and hook.startswith(("http://", "https://")) and math.isfinite(delay):
            task = asyncio.get_running_loop().create_task(self._call_back(hook, self.jobs[job_id]))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)
        return web.json_response({"success": True, "messageId": job_id, "createdAt": self._stamp(0)})

    async def _call_back(self, url: str, job: Job) -> None:
        """POST the result object to the ask's webhookOverride when the job is done (upstream.md, "Or be
        told"), ``callback_delay`` seconds late; every try is recorded in ``callbacks``.

        A try is recorded as it is sent (``sent_at``), before the bot can hold the reading it carries;
        its ``status`` (or ``error``) and ``at`` are filled in when the bot's answer is back, which may be
        after the bot has already used the reading: ``await callbacks_answered()`` before reading them."""
        import aiohttp

        await asyncio.sleep(max(0.0, job.done_at + self.callback_delay - time.monotonic()))
        body = self._result(job)
        entry: dict[str, Any] = {"url": url, "job": job.id, "sent_at": time.monotonic()}
        self.callbacks.append(entry)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    entry.update(status=resp.status, at=time.monotonic())
        except Exception as exc:  # noqa: BLE001 - the bot is gone or unreachable: recorded, as a real upstream logs it
            entry.update(error=type(exc).__name__, at=time.monotonic())

    async def callbacks_answered(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait (at most ``timeout`` s) until every callback due so far has been sent and answered (or
        has failed), then return ``callbacks``."""
        pending = set(self._callback_tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            if late:
                raise TimeoutError(f"{len(late)} callback(s) still unanswered after {timeout} s")
        return self.callbacks

    async def _message(self, request: web.Request) -> web.Response:
        rec = await self._record(request, self.polls)
        if not self._authorised(rec):
            return web.json_response({"success": False, "msg": "Unauthorized"}, status=401)
        scripted = await self._scripted(self.poll_script)
        if scripted is not None:
            return scripted
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"success": False, "msg": "message not found"}, status=404)
        now = time.monotonic()
        if self.expire_after is not None and now - job.created >= self.expire_after and now < job.done_at:
            return web.json_response({"progress": "incomplete"})
        if now < job.done_at:
            span = job.done_at - job.started
            running = now - job.started
            hidden = not self.report_progress or math.isinf(span) or running <= 0
            return web.json_response(self._pending(0 if hidden else int(min(99, running / span * 100))))
        if now < job.done_at + self.empty_at_100 or self.hide_from_polls:
            return web.json_response(self._pending(100, empty=True))
        result = self._result(job)
        body = {"response": result} if self.nested else dict(result)
        if self.progress_field:
            body = {"progress": self._progress(100), **body}
        return web.json_response(body)

    def _result(self, job: Job) -> dict[str, Any]:
        now = time.monotonic()
        result = {"originatingMessageId": job.id, "type": "info", "ref": job.ref, "content": job.content}
        if self.timestamps:
            result.update(createdAt=self._stamp(job.created - now), responseAt=self._stamp(job.done_at - now))
        return result

    def _progress(self, value: int) -> int | str:
        return str(value) if self.progress_as_string else value

    def _pending(self, progress: int, empty: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.progress_field:
            body = {"progress": self._progress(progress), "progressImageUrl": None}
        shape = "empty" if empty and self.pending_response == "absent" else self.pending_response
        if shape == "empty":
            body["response"] = {}
        elif shape == "null":
            body["response"] = None
        return body

    def _stamp(self, offset: float) -> Any:
        at = time.time() + offset
        if self.firestore_times:
            return {"_seconds": int(at), "_nanoseconds": int((at % 1) * 1e9)}
        return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
