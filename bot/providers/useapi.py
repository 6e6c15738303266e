"""useapi.net, Midjourney API v3: ask ``POST {base}/v3/midjourney/jobs/info``, then follow the job
(its Server-Sent Events by default, else polls of ``GET {base}/v3/midjourney/jobs/{jobid}``) until it
ends; also switches the speed mode (``/jobs/fast``, ``relax``, ``turbo``). The protocol and the
manners: shared/providers.md, "useapi.net", and docs/architecture.md, "Providers".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import quote

import aiohttp
import yarl

from ..errors import BadResponse, Expired, ModeRefused, QuotaError, RateLimited, UpstreamUnavailable, UsageError, shown
from ..report import MODES, QuotaReport, normalise_mode, parse_result, parse_timestamp
from .base import (MAX_REPLY_BYTES, HttpProvider, ModeSet, PollPolicy, _DeadlineReached, _next_delay, _read_capped,
                   _retry_after, _Retryable, unreachable_cause)
from .sse import EventStreamParser

log = logging.getLogger("bot.upstream")

END_STATES = frozenset({"completed", "failed", "moderated"})
# A job said "completed" with nothing to read this many times in a row: it will not get better.
# (Once is tolerated, in case useapi writes the status a moment before the response.)
EMPTY_DONE_LIMIT = 3
_CLIP = 160
END_EVENTS = {"midjourney_completed": "completed", "midjourney_failed": "failed",
              "midjourney_moderated": "moderated"}
MAX_EVENT_BYTES = MAX_REPLY_BYTES  # one event of the stream is read up to this much
MAX_STREAM_BYTES = 16 * MAX_REPLY_BYTES  # a whole stream (keep-alives included) up to this much
DELETE_TIMEOUT = 5.0  # a job given up is deleted within this, or left (logged)


# --- the sentences ---------------------------------------------------------------------------------

class NoSubscription(QuotaError):
    """402: the Midjourney account behind useapi has no (or an expired) subscription."""

    code = "no_subscription"
    user_message = "useapi.net says this account has no Midjourney subscription, or it expired."


class ModerationBlocked(QuotaError):
    """596: a pending moderation message blocks the account until the user clears it."""

    code = "moderation_blocked"
    user_message = ("The Midjourney account is blocked by a pending moderation message: clear it in the "
                    "useapi.net dashboard, then try again.")


class ChannelRequired(QuotaError):
    """400 ``channel parameter is required``: the useapi account has several Midjourney channels."""

    code = "channel_required"
    user_message = "useapi.net has several Midjourney channels: set USEAPI_CHANNEL to the one to read."

    def __init__(self, detail: str = "", setting: str = "USEAPI_CHANNEL") -> None:
        super().__init__(detail, user_message=f"useapi.net has several Midjourney channels: set {setting} to the "
                                              "one to read.")


class ChannelNotFound(QuotaError):
    """404 on the ask with a channel set: useapi knows no such channel."""

    code = "channel_not_found"

    def __init__(self, channel: str, detail: str = "", setting: str = "USEAPI_CHANNEL") -> None:
        super().__init__(detail, user_message=f"useapi.net has no Midjourney channel {_clip(channel, 40)}: "
                                              f"check {setting}.")


class JobGone(Expired):
    """404/410 on a poll: useapi no longer has the job."""

    code = "expired"

    def __init__(self, status: int, detail: str = "") -> None:
        sentence = ("The /info job expired at useapi.net before quota-bot could read it; try again."
                    if status == 410 else "useapi.net no longer knows the /info job (not found); try again.")
        super().__init__(detail, user_message=sentence)


class UseapiRefused(QuotaError):
    """Another 4xx: useapi's own ``error`` text, clipped, is the best sentence there is."""

    code = "refused"

    def __init__(self, error: str, detail: str = "") -> None:
        said = error.rstrip()
        super().__init__(detail, user_message=f"useapi.net refused the request: {said}"
                                              + ("" if said.endswith((".", "!", "?", "…")) else "."))


class JobFailed(QuotaError):
    """The job ended ``failed`` (or ``moderated``: ``code`` says which)."""

    code = "job_failed"

    def __init__(self, status: str, error: str, details: str, detail: str = "") -> None:
        said = _join(error, details)
        if status == "moderated":
            self.code = "moderated"
            sentence = "Midjourney moderation stopped the /info job at useapi.net"
        else:
            sentence = "useapi.net could not read the Midjourney account"
        sentence += f": {said}" if said else "; try again later."
        super().__init__(detail, user_message=sentence)


RATE_LIMITED = "useapi.net is rate limiting quota requests right now; try again in a minute."
UNAVAILABLE = "useapi.net is unavailable right now; try again in a few minutes."


# --- the provider ----------------------------------------------------------------------------------

class UseapiProvider(HttpProvider):
    """useapi.net v3: ``POST {base}/v3/midjourney/jobs/info`` then ``GET {base}/v3/midjourney/jobs/{jobid}``."""

    name = "useapi"
    label = "useapi.net"
    switches_mode = True
    # One ask per 3 s per account. useapi publishes no request rate for v3, but every ask makes it type
    # /info into the account's Discord channel, where bursts of commands risk Midjourney's own
    # throttling; 3 s keeps retried and concurrent asks apart without a chat user ever noticing.
    default_interval = 3.0

    def __init__(self, *, base_url: str = "https://api.useapi.net", token: str, channel: str | None = None,
                 channel_setting: str = "USEAPI_CHANNEL", stream: bool = True, **options: Any) -> None:
        options.setdefault("token_setting", "USEAPI_API_TOKEN")
        super().__init__(base_url=base_url, token=token, **options)
        self.stream = stream  # read the job's events as they come (else poll, as before)
        self._unfinished: dict[str, yarl.URL] = {}  # jobs asked for and not seen to end: deleted if given up
        self._deleting: set[asyncio.Task[None]] = set()
        self.channel_setting = channel_setting  # how sentences name the channel setting
        self._channel = str(channel).strip() if channel is not None and str(channel).strip() else None
        self._ask_url = f"{self._base}/v3/midjourney/jobs/info"
        self._jobs_root = str(yarl.URL(f"{self._base}/v3/midjourney/jobs/"))

    def default_poll(self) -> PollPolicy:
        """The first poll about 13 s after the ask, then every ~10.5 s (±4 %): never under 10 s.

        useapi reads Discord every 15–60 s and its docs ask for 10–30 s between polls; a job's status
        (``created``/``started``/``progress``) says nothing about when useapi's next look will find the
        answer, so after a first poll just before the earliest likely answer, one even rhythm at the
        floor of the advice: the extra wait stays under ~11 s, with a poll fewer per reading than a
        client polling every 10 s from the ask (bench/bench_providers.py).
        useapi reports no numeric progress, so no progress estimate. Retries of a failed request
        (5xx, timeouts) back off on the same scale; a 429's ``Retry-After`` is honoured as given.
        """
        return PollPolicy(initial=13.0, factor=1.0, cap=10.5, jitter=0.04, use_progress=False, min_delay=10.0)

    def __repr__(self) -> str:  # never the token
        return f"UseapiProvider(base={self._base!r}, channel={self._channel!r}, simulated={self.simulated})"

    def _verb_url(self, verb: str) -> str:
        """Where a job is asked for: ``/v3/midjourney/jobs/info`` (a reading), ``…/fast``, ``…/relax``, ``…/turbo``."""
        return self._ask_url if verb == "info" else f"{self._base}/v3/midjourney/jobs/{verb}"

    def job_url(self, jobid: str) -> yarl.URL:
        """The poll URL; the jobid is one path segment, every unsafe character (``:``, ``/``, ``?``…) quoted."""
        return yarl.URL(self._jobs_root + quote(jobid, safe=""), encoded=True)

    # --- errors ----------------------------------------------------------------------------------
    def error_for(self, status: int, data: Any, where: str, headers: Any) -> QuotaError | _Retryable | None:
        if 200 <= status < 300:
            return None
        body = data if isinstance(data, dict) else {}
        error, details = self._clip(body.get("error")), self._clip(body.get("errorDetails"))
        detail = f"{where}: error={error!r} errorDetails={details!r} code={body.get('code')!r}"
        on_ask = where.startswith("POST ")
        if status in (401, 403):
            return self.bad_token(detail)
        if status == 402:
            return NoSubscription(detail)
        if status == 596:
            return ModerationBlocked(detail)
        if status == 400 and "channel" in error.lower() and "required" in error.lower():
            return ChannelRequired(detail, self.channel_setting)
        if status == 404 and on_ask and self._channel and "channel" in error.lower():
            return ChannelNotFound(self._channel, detail, self.channel_setting)
        if status in (404, 410) and not on_ask:
            return JobGone(status, detail)
        if status == 429:
            return _Retryable(RateLimited(detail, user_message=RATE_LIMITED), _retry_after(headers))
        if status >= 500:
            return _Retryable(UpstreamUnavailable(detail, user_message=UNAVAILABLE), _retry_after(headers))
        if 400 <= status < 500:
            return UseapiRefused(error or f"HTTP {status}.", detail)
        return None

    def _clip(self, value: Any) -> str:
        text = _clip(value)
        if self._token and len(self._token) >= 4 and self._token in text:
            text = text.replace(self._token, "***")
        return text

    # --- one reading, one switch ------------------------------------------------------------------
    async def _read(self, deadline: float) -> QuotaReport:
        report = await self._job(deadline, "info")
        assert isinstance(report, QuotaReport)
        return report

    async def switch_mode(self, mode: str) -> ModeSet:
        """``POST {base}/v3/midjourney/jobs/{fast|relax|turbo}``, followed like an info job (streamed or
        polled, within ``poll_timeout``): the mode set is in the finished job's ``response.settings``.
        Midjourney's refusals (no Relax on Basic, no Turbo on the plan) raise ``ModeRefused``."""
        verb = normalise_mode(mode)
        if verb is None:
            raise UsageError(f"There is no speed mode '{shown(mode, 20)}': say fast, relax or turbo.",
                             echo=shown(mode, 20))

        async def job(deadline: float) -> ModeSet:
            done = await self._job(deadline, verb)
            assert isinstance(done, ModeSet)
            return done

        result: ModeSet = await self._within_deadline(job)
        return result

    async def _job(self, deadline: float, verb: str) -> QuotaReport | ModeSet:
        body: dict[str, Any] = {"stream": self.stream}
        if self._channel:
            body["channel"] = self._channel
        ref = f"quota-bot-{uuid.uuid4().hex[:16]}"
        pushed = self.webhook.expect(ref) if self.webhook is not None else None
        if pushed is not None:  # useapi posts the finished job there (replyUrl), tagged with our replyRef
            body.update(replyUrl=self.webhook.url, replyRef=ref)
        watch = _Watch(verb)
        try:
            if self.stream:
                return await self._stream_and_wait(body, deadline, pushed, watch)
            return await self._ask_and_wait(body, deadline, pushed, watch)
        except BaseException as exc:
            if watch.jobid is not None and watch.jobid in self._unfinished:
                why = ("shutdown" if isinstance(exc, asyncio.CancelledError)
                       else "deadline" if isinstance(exc, _DeadlineReached) else type(exc).__name__)
                await self._settle_give_up(watch.jobid, why)
            raise
        finally:
            if watch.jobid is not None:
                self._unfinished.pop(watch.jobid, None)
            if pushed is not None:
                pushed.close()

    async def _ask_and_wait(self, body: dict[str, Any], deadline: float, pushed: Any,
                            watch: "_Watch") -> QuotaReport | ModeSet:
        asked = time.monotonic()
        url = self._verb_url(watch.verb)
        log.info("useapi ask: POST %s channel=%s", yarl.URL(url).path, self._channel or "-")
        receipt = await self._call("POST", url, deadline, ask=True, json=body)
        self._started(watch, _jobid(receipt), pushed)
        return await self._poll_until_done(watch, receipt, asked, deadline, pushed)

    async def _poll_until_done(self, watch: "_Watch", job: Any, asked: float, deadline: float, pushed: Any, *,
                               poll_now: bool = False) -> QuotaReport | ModeSet:
        jobid = watch.jobid
        assert jobid is not None
        url = self.job_url(jobid)
        log.info("useapi %s the info job %s: status=%r", "follows" if poll_now else "accepted", jobid, _status(job))
        floor = self._poll.min_delay
        plan: Iterator[float]
        if pushed is not None:  # with a callback, polls are only a safety net
            backoff, plan = SAFETY_NET.delays(self._rng), iter(())
        else:
            learned = await self.timing.plan_async(floor, gap=floor, first=floor)
            backoff, plan = self._poll.delays(self._rng), iter(_spaced(learned or (), floor))
        last: str | None = watch.status
        empty_done = 0
        if poll_now:
            self._polls += 1
            job = await self._poll_job(watch, url, deadline)
        while True:
            status = _status(job)
            if status != last:
                log.info("useapi job %s: status %r after %.1fs (%d polls)", jobid, status,
                         time.monotonic() - asked, self._polls)
                last = status
            if status in ("failed", "moderated"):
                self._ended(watch)
                raise self._failure(jobid, status, job, watch.verb)
            if status == "completed":
                self._ended(watch)
                result: QuotaReport | ModeSet | None = self._finished(watch, jobid, job, asked)
                if result is not None:
                    return result
                empty_done += 1
                log.warning("useapi job %s: completed without content (%d)", jobid, empty_done)
                if empty_done >= EMPTY_DONE_LIMIT:
                    raise BadResponse(f"job {jobid} completed {empty_done} times without content: "
                                      f"{self._clip(job)}")
            else:
                empty_done = 0
                if status not in ("created", "started", "progress"):
                    log.warning("useapi job %s: unknown status %r; polling on", jobid, self._clip(status))
            delay = _next_delay(plan, asked, backoff)
            log.debug("useapi job %s: next poll in %.2fs", jobid, delay)
            try:
                callback = await self._sleep_until_next(delay, deadline, pushed)
            except _DeadlineReached:
                raise _DeadlineReached(f"job {jobid} last status {last!r}") from None
            if callback is not None:
                log.info("useapi called back for job %s after %.2fs", jobid, time.monotonic() - asked)
                job = _unwrap(callback)
            else:
                job = await self._poll_job(watch, url, deadline)

    async def _poll_job(self, watch: "_Watch", url: yarl.URL, deadline: float) -> Any:
        try:
            return await self._call("GET", url, deadline)
        except JobGone:
            self._ended(watch)  # nothing left to delete
            raise

    # --- the streamed reading --------------------------------------------------------------------
    async def _stream_and_wait(self, body: dict[str, Any], deadline: float, pushed: Any,
                               watch: "_Watch") -> QuotaReport | ModeSet:
        asked = time.monotonic()
        url = self._verb_url(watch.verb)
        log.info("useapi ask: POST %s channel=%s, streamed", yarl.URL(url).path, self._channel or "-")

        async def follow(resp: aiohttp.ClientResponse) -> Any:
            return await self._follow(resp, watch, asked, deadline, pushed)

        outcome = await self._call("POST", url, deadline, ask=True, json=body, opened=follow)
        if isinstance(outcome, (QuotaReport, ModeSet)):
            return outcome
        if outcome is _DEADLINE:
            raise _DeadlineReached(f"job {watch.jobid} streamed, last status {watch.status!r}")
        if isinstance(outcome, dict):  # answered without a stream (a receipt): polls as without one
            self._started(watch, _jobid(outcome), pushed)
            return await self._poll_until_done(watch, outcome, asked, deadline, pushed)
        if watch.jobid is not None:  # the stream ended without an end event: polls finish the reading
            return await self._poll_until_done(watch, watch.job or {}, asked, deadline, pushed, poll_now=True)
        log.warning("useapi: the stream ended before naming its job; asking once more, without a stream")
        try:
            await self._limiter.wait(deadline)  # a second ask takes its turn like any other
        except _DeadlineReached:
            raise _DeadlineReached("the stream ended before naming its job") from None
        return await self._ask_and_wait({**body, "stream": False}, deadline, pushed, watch)

    async def _follow(self, resp: aiohttp.ClientResponse, watch: "_Watch", asked: float, deadline: float,
                      pushed: Any) -> Any:
        """Read the stream until an end event: a report, a raised job failure, ``_STREAM_ENDED`` (it
        ended or broke without one), or ``_DEADLINE``. Never raises a connection error or a timeout
        (``_once`` would take those for a failed ask and ask again)."""
        parser = EventStreamParser(MAX_EVENT_BYTES)
        floor = max(self._poll.min_delay, 0.01)
        quiet_limit, checks = floor, 0
        heard = time.monotonic()  # the last byte of the stream, or the last silence check
        total = 0
        reading: asyncio.Task[bytes] | None = None
        called: asyncio.Task[Any] | None = None
        try:
            while True:
                now = time.monotonic()
                if now >= deadline - 0.05:
                    return _DEADLINE
                if reading is None:
                    reading = asyncio.ensure_future(resp.content.readany())
                if pushed is not None and called is None:
                    called = asyncio.ensure_future(pushed.queue.get())
                waiting = {t for t in (reading, called) if t is not None}
                done, _ = await asyncio.wait(waiting, timeout=max(0.0, min(deadline - 0.05, heard + quiet_limit) - now),
                                             return_when=asyncio.FIRST_COMPLETED)
                if called is not None and called in done:
                    job, called = _unwrap(called.result()), None
                    log.info("useapi called back for job %s after %.2fs", watch.jobid, time.monotonic() - asked)
                    outcome = self._settle(watch, job, asked, pushed)
                    if outcome is not None:
                        return outcome
                if reading in done:
                    finished, reading = reading, None
                    try:
                        chunk = finished.result()
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                        log.warning("useapi: the stream of job %s broke after %.1fs: %s", watch.jobid,
                                    time.monotonic() - asked, unreachable_cause(exc))
                        return _STREAM_ENDED
                    if not chunk:
                        log.log(logging.WARNING if watch.jobid is None or not watch.ended else logging.DEBUG,
                                "useapi: the stream of job %s ended without an end event after %.1fs",
                                watch.jobid, time.monotonic() - asked)
                        return _STREAM_ENDED
                    total += len(chunk)
                    heard, quiet_limit, checks = time.monotonic(), floor, 0
                    if total > MAX_STREAM_BYTES:
                        log.warning("useapi: the stream of job %s went past %d bytes and is read no further",
                                    watch.jobid, MAX_STREAM_BYTES)
                        return _STREAM_ENDED
                    dropped = parser.dropped
                    events = parser.feed(chunk)
                    if parser.dropped > dropped:
                        log.warning("useapi: an event of job %s's stream went past %d bytes and was skipped",
                                    watch.jobid, parser.max_event)
                    for event in events:
                        outcome = self._on_event(watch, event.type, event.data, asked, pushed)
                        if outcome is not None:
                            return outcome
                elif not done and watch.jobid is not None and time.monotonic() >= heard + quiet_limit - 0.001:
                    checks += 1
                    log.info("useapi: the stream of job %s is silent for %.1fs; checking with a poll", watch.jobid,
                             time.monotonic() - heard)
                    self._polls += 1
                    try:
                        job = await self._poll_job(watch, self.job_url(watch.jobid), deadline)
                    except _DeadlineReached:
                        return _DEADLINE
                    outcome = self._settle(watch, job, asked, pushed)
                    if outcome is not None:
                        return outcome
                    heard, quiet_limit = time.monotonic(), floor * min(1 + checks, 3)
                elif not done and time.monotonic() >= heard + quiet_limit - 0.001:
                    heard = time.monotonic()  # no job to poll yet: wait for the stream, up to the deadline
        finally:
            for task in (reading, called):
                if task is not None and not task.done():
                    task.cancel()

    def _on_event(self, watch: "_Watch", kind: str, raw: str, asked: float, pushed: Any) -> Any:
        """One event of the stream: None to read on, else what ``_follow`` returns (or a raised failure)."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read: skipped, never a crash
            data = None
        if not isinstance(data, dict):
            log.debug("useapi: a stream event that is not a JSON object, skipped: %s", self._clip(raw))
            return None
        event = data.get("event")
        name = (event if isinstance(event, str) else (kind if kind != "message" else "")).strip().lower()
        job = data.get("job") if isinstance(data.get("job"), dict) else (data if "status" in data else None)
        if watch.jobid is None:
            for holder in (data, job):
                try:
                    self._started(watch, _jobid(holder), pushed)
                    break
                except BadResponse:
                    continue
        if name == "error" and _status(job) not in END_STATES:
            self._ended(watch)
            error, details = self._clip(data.get("error") or data.get("message")), self._clip(data.get("errorDetails"))
            raise self._failure(watch.jobid or "?", "failed", {"error": error or "the stream reported an error",
                                                               "errorDetails": details, "code": data.get("code")},
                                watch.verb)
        if name in END_EVENTS and _status(job) not in END_STATES:  # leniently: an end event without its job
            job = {**data, **(job or {}), "status": END_EVENTS[name]}
        if job is None:
            if name not in ("initialized", ""):
                log.debug("useapi: stream event %r of job %s skipped", self._clip(name), watch.jobid)
            return None
        progress = job.get("response", {}).get("progress_percent") if isinstance(job.get("response"), dict) else None
        if progress is not None:
            log.debug("useapi job %s: progress %s%%", watch.jobid, self._clip(progress))
        return self._settle(watch, job, asked, pushed)

    def _settle(self, watch: "_Watch", job: Any, asked: float, pushed: Any) -> Any:
        """A job object from the stream, a callback or a silence check: a report when it is done with
        content, a raised failure, ``_STREAM_ENDED`` when it completed without content (polls go on),
        else None."""
        if not isinstance(job, dict):
            return None
        if watch.jobid is None:
            try:
                self._started(watch, _jobid(job), pushed)
            except BadResponse:
                pass
        status = _status(job)
        watch.job = job
        if status != watch.status:
            log.info("useapi job %s: status %r after %.1fs (streamed, %d polls)", watch.jobid, status,
                     time.monotonic() - asked, self._polls)
            watch.status = status
        if status in ("failed", "moderated"):
            self._ended(watch)
            raise self._failure(watch.jobid or "?", status, job, watch.verb)
        if status == "completed":
            self._ended(watch)
            result = self._finished(watch, watch.jobid or "?", job, asked)
            if result is None:
                log.warning("useapi job %s: completed without content; polling for it", watch.jobid)
                return _STREAM_ENDED
            return result
        return None

    def _finished(self, watch: "_Watch", jobid: str, job: dict[str, Any], asked: float) -> Any:
        """What a completed job answers: the reading (info), the mode set (fast/relax/turbo; a refusal
        raises ``ModeRefused``), or None when it holds nothing to read yet."""
        if watch.verb != "info":
            return self._mode_set(jobid, job, watch.verb)
        content = _content(job)
        if content is None:
            return None
        self._learn(asked, _job_seconds(job))
        return self._report(jobid, job, content)

    def _mode_set(self, jobid: str, job: dict[str, Any], verb: str) -> ModeSet | None:
        """A completed mode job: ``response.settings`` says which mode is on (booleans); Midjourney's
        sentence is ``response.content``. Settings that do not turn ``verb`` on, or no settings and a
        sentence that refuses, are a refusal; no settings and no sentence: nothing to read yet."""
        response: dict[str, Any] = job["response"] if isinstance(job.get("response"), dict) else {}
        said = self._clip(response.get("content") if _usable(response.get("content")) else job.get("content")
                          if _usable(job.get("content")) else "")
        settings = response.get("settings")
        on = _modes_on(settings)
        log.info("useapi job %s (%s) completed: modes on %s, said %r", jobid, verb, sorted(on) if on is not None else "?",
                 said)
        if on is not None and verb in on:
            return ModeSet(verb, said)
        if on is not None:
            raise ModeRefused(verb, said or "the mode was not turned on", f"job {jobid}: settings {self._clip(settings)}")
        if not said:
            return None
        if _REFUSAL.search(said):
            raise ModeRefused(verb, said, f"job {jobid}: completed with a refusal")
        return ModeSet(verb, said)

    # --- jobs given up ---------------------------------------------------------------------------
    def _started(self, watch: "_Watch", jobid: str, pushed: Any) -> None:
        watch.jobid = jobid
        self._unfinished[jobid] = self.job_url(jobid)
        if pushed is not None:
            pushed.add(jobid)

    def _ended(self, watch: "_Watch") -> None:
        watch.ended = True
        if watch.jobid is not None:
            self._unfinished.pop(watch.jobid, None)

    async def _settle_give_up(self, jobid: str, why: str) -> None:
        """Delete the job (once, bounded); a second cancellation meanwhile does not stop the delete."""
        task = self._give_up(jobid, why)
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass

    def _give_up(self, jobid: str, why: str) -> asyncio.Task[None] | None:
        url = self._unfinished.pop(jobid, None)
        if url is None:
            return None
        task = asyncio.get_running_loop().create_task(self._delete(jobid, url, why), name="useapi-delete-job")
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)
        return task

    async def _delete(self, jobid: str, url: yarl.URL, why: str) -> None:
        """``DELETE /v3/midjourney/jobs/{jobid}``: frees the account's job slot. Best effort: one try
        within ``DELETE_TIMEOUT``, the outcome logged, never raised."""
        try:
            async with self._client().delete(url, timeout=aiohttp.ClientTimeout(total=DELETE_TIMEOUT)) as resp:
                await _read_capped(resp, f"DELETE {url.path} -> HTTP {resp.status}", self.label, cap=64 * 1024)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, QuotaError) as exc:
            cause = exc.detail if isinstance(exc, QuotaError) else unreachable_cause(exc)
            log.warning("useapi: gave up job %s (%s) and could not delete it: %s; it may hold one of the account's "
                        "job slots for up to 14 minutes", jobid, why, cause)
            return
        if 200 <= status < 300 or status in (404, 410):
            log.info("useapi: gave up job %s (%s) before it ended; deleted it (HTTP %d)", jobid, why, status)
        else:
            log.warning("useapi: gave up job %s (%s); deleting it answered HTTP %d", jobid, why, status)

    async def close(self) -> None:
        """Delete the jobs still unfinished (a shutdown gives them up), then close the session."""
        for jobid in list(self._unfinished):
            self._give_up(jobid, "shutdown")
        if self._deleting:
            await asyncio.wait(set(self._deleting), timeout=DELETE_TIMEOUT + 1)
        await super().close()

    def _failure(self, jobid: str, status: str, job: dict[str, Any], verb: str = "info") -> QuotaError:
        error, details = self._clip(job.get("error")), self._clip(job.get("errorDetails"))
        code = job.get("code")
        detail = f"job {jobid} {status}: error={error!r} errorDetails={details!r} code={code!r}"
        log.warning("useapi %s", detail)
        if code in (596, "596"):
            return ModerationBlocked(detail)
        if code in (402, "402"):
            return NoSubscription(detail)
        if verb != "info":
            return ModeRefused(verb, _join(error, details).rstrip("."), detail)
        return JobFailed(status, error, details, detail)

    def _report(self, jobid: str, job: dict[str, Any], content: Any) -> QuotaReport:
        now = datetime.now(timezone.utc)
        read_at = _read_time(job.get("updated"), now)
        report = parse_result({"content": content}, read_at=read_at, simulated=self.simulated)
        log.info("useapi job %s read: remaining=%s read_at=%s", jobid, report.remaining, read_at.isoformat())
        return replace(report, message_id=jobid)


class _Watch:
    """What one job knows of itself: its verb (info, fast, relax, turbo), its id, the last job object and
    status, whether it ended."""

    __slots__ = ("verb", "jobid", "job", "status", "ended")

    def __init__(self, verb: str = "info") -> None:
        self.verb = verb
        self.jobid: str | None = None
        self.job: dict[str, Any] | None = None
        self.status: str | None = None
        self.ended = False


_STREAM_ENDED = object()  # marker: the stream ended without an end event
_DEADLINE = object()  # marker: the deadline came while the stream was open


def _unwrap(body: Any) -> Any:
    """A callback or event body → the job: the ``job`` object of an event, else the body itself."""
    if isinstance(body, dict) and isinstance(body.get("job"), dict) and "status" not in body:
        return body["job"]
    return body


SAFETY_NET = PollPolicy(initial=20.0, factor=1.5, cap=30.0, jitter=0.1, use_progress=False, min_delay=10.0)


def _spaced(plan: Any, floor: float) -> list[float]:
    """The learned poll times, never closer together than useapi's floor between polls."""
    out: list[float] = []
    for offset in plan:
        if not out or offset - out[-1] >= floor:
            out.append(max(offset, floor))
    return out


def _job_seconds(job: dict[str, Any]) -> float | None:
    created, updated = parse_timestamp(job.get("created")), parse_timestamp(job.get("updated"))
    return None if created is None or updated is None else (updated - created).total_seconds()


# --- the job object --------------------------------------------------------------------------------

def _jobid(receipt: Any) -> str:
    """The receipt's job id (``jobid``; leniently ``jobId``/``job_id``/``id``), as given: it may hold
    ``:`` and other characters a URL must quote (``job_url`` does)."""
    if isinstance(receipt, dict):
        for key in ("jobid", "jobId", "jobID", "job_id", "id"):
            value = receipt.get(key)
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                continue
            text = str(value).strip()
            if text and len(text) <= 500 and text.isprintable():
                return text
    raise BadResponse(f"receipt without a usable jobid: {_clip(receipt, 200)}")


def _status(job: Any) -> str | None:
    if not isinstance(job, dict):
        return None
    value = job.get("status")
    return value.strip().lower() if isinstance(value, str) else None


def _usable(content: Any) -> bool:
    return isinstance(content, (str, dict)) and content not in ("", {}) and not (
        isinstance(content, str) and not content.strip())


def _content(job: dict[str, Any]) -> Any:
    """The /info of a completed job: ``response.content`` (the job model), else a top-level
    ``content`` (the v2 form); None when neither holds anything."""
    response = job.get("response")
    if isinstance(response, dict) and _usable(response.get("content")):
        return response["content"]
    if _usable(job.get("content")):
        return job["content"]
    return None


# Midjourney's refusals of /relax, /turbo, /fast, as a completed job may carry them (no settings to tell).
_REFUSAL = re.compile(r"\b(sorry|not available|only available|unavailable|not allowed|cannot|can't|unable|upgrade|"
                      r"not subscribed|don't have|do not have|requires?|pending|moderation)\b", re.I)


def _modes_on(settings: Any) -> set[str] | None:
    """The speed modes ``response.settings`` turns on (``{"relax": true, "fast": false}``; leniently keys
    such as ``"Relax mode"``, and ``true``/``"on"``/``1`` as on); None when it names none of them."""
    if not isinstance(settings, dict):
        return None
    named: dict[str, bool] = {}
    for key, value in settings.items():
        words = re.findall(r"[a-z]+", str(key).lower())
        mode = normalise_mode(str(key))
        if mode is None or words[0] not in (*MODES, "relaxed") or words[1:] not in ([], ["mode"]):
            continue
        on = value is True or value == 1 or (isinstance(value, str) and value.strip().lower() in ("true", "on", "1"))
        named[mode] = named.get(mode, False) or on
    return {m for m, on in named.items() if on} if named else None


def _read_time(updated: Any, now: datetime) -> datetime:
    """When useapi last changed the job (it saw the answer in Discord then); ``now`` when missing or
    odd. A time ahead of ours (clock skew) is taken as now: a reading cannot be newer than that."""
    when = parse_timestamp(updated)
    if when is None:
        return now
    try:
        when = when.astimezone(timezone.utc)
        when.timestamp()
    except (OverflowError, ValueError, OSError):
        return now
    return min(when, now)


def _clip(value: Any, limit: int = _CLIP) -> str:
    if value is None:
        return ""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _join(error: str, details: str) -> str:
    """``error`` and ``errorDetails`` as one sentence's end (the details only when they add something)."""
    parts = [p.rstrip(".") for p in (error, details) if p]
    if len(parts) == 2 and parts[0].lower() in parts[1].lower():
        parts = parts[1:]
    return " — ".join(parts) + "." if parts else ""
