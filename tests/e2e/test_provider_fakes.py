"""Sanity tests of the provider fakes (tests/fakes/providers.py), driven with plain aiohttp requests:
each documented status and shape of providers.md is served."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.providers import (
    FakeAccount, LinkrFake, MjproxyFake, Scripted, UseapiFake, garbage, linkr_error, useapi_error,
)

USEAPI_TOKEN = "useapi-test-token-5c1d"
LINKR_TOKEN = "lkr_test_0b7e2f"
MJ_SECRET = "mj-admin-secret-test-77"
UA = {"Authorization": f"Bearer {USEAPI_TOKEN}"}


async def call(method: str, url: str, **kw: Any) -> tuple[int, Any, Any]:
    """(status, headers, JSON body or text)."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kw) as resp:
            text = await resp.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            return resp.status, resp.headers, body


async def poll_until_done(fake: UseapiFake, jobid: str, timeout: float = 3.0) -> list[dict[str, Any]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = await call("GET", f"{fake.base_url}/v3/midjourney/jobs/{jobid}", headers=UA)
        assert status == 200
        seen.append(body)
        if body["status"] in ("completed", "failed", "moderated"):
            return seen
        await asyncio.sleep(0.03)
    raise AssertionError("job never ended")


# --- the account -------------------------------------------------------------------------------

def test_account_forms_and_drain():
    std = FakeAccount(drain_per_reading=True)
    assert std.remaining_hours() == pytest.approx(12.06) and std.remaining_hms() == "12:03:36"
    first, second = std.take_reading(), std.take_reading()
    assert first.fast_time == "12.06/15.0 hours (80.37%)" and second.fast_time == "11.99/15.0 hours (79.93%)"
    basic = FakeAccount.basic()
    assert basic.remaining_hours() == pytest.approx(199 / 60) and basic.total_hours() == pytest.approx(200 / 60)
    trial = FakeAccount.trial()
    assert trial.remaining_hms() == "0:25:00" and trial.total_hours() is None and trial.renews_at() is None
    assert "\n\n**Queued Jobs (fast)**: 0" in std.info_text()


# --- useapi.net --------------------------------------------------------------------------------

async def test_useapi_ask_poll_completed():
    async with UseapiFake(require_token=USEAPI_TOKEN, complete_after=0.2) as fake:
        status, _, receipt = await call("POST", f"{fake.base_url}/v3/midjourney/jobs/info", headers=UA,
                                        json={"stream": False})
        assert status == 201
        assert receipt["verb"] == "info" and receipt["status"] == "created" and receipt["jobid"].startswith("j")
        assert receipt["request"] == {"stream": False} and receipt["created"].endswith("Z")
        seen = await poll_until_done(fake, receipt["jobid"])
        statuses = [b["status"] for b in seen]
        assert statuses[-1] == "completed" and "progress" in statuses
        assert all("response" not in b for b in seen[:-1])
        content = seen[-1]["response"]["content"]
        assert "**Fast Time Remaining**: 12.06/15.0 hours (80.37%)" in content
        assert "**Job Mode**: Fast" in content
        assert len(fake.asks) == 1 and len(fake.polls) == len(seen) and fake.request_count == 1 + len(seen)


async def test_useapi_defaults_to_sse():
    async with UseapiFake(complete_after=0.15) as fake:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{fake.base_url}/v3/midjourney/jobs/info", json={}) as resp:
                assert resp.status == 200 and resp.content_type == "text/event-stream"
                raw = (await resp.read()).decode()
        events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
        assert events[0]["event"] == "initialized" and events[0]["jobId"] in fake.jobs
        assert [e["event"] for e in events[1:]] == ["midjourney_created", "midjourney_started", "midjourney_progress",
                                                    "midjourney_completed"]
        assert events[1]["job"]["status"] == "created" and events[-1]["job"]["status"] == "completed"
        assert "Fast Time Remaining" in events[-1]["job"]["response"]["content"]


async def test_useapi_auth_channel_and_unknown_job():
    async with UseapiFake(require_token=USEAPI_TOKEN, channels=2) as fake:
        url = f"{fake.base_url}/v3/midjourney/jobs/info"
        status, _, body = await call("POST", url, headers={"Authorization": "Bearer wrong"}, json={"stream": False})
        assert status == 401 and body["code"] == 401 and body["error"]
        status, _, body = await call("POST", url, headers=UA, json={"stream": False})
        assert status == 400
        assert body["error"] == "channel parameter is required when multiple channels (2) are configured"
        status, _, body = await call("POST", url, headers=UA, json={"stream": False, "channel": "42"})
        assert status == 201 and "-c42-" in body["jobid"]
        status, _, body = await call("GET", f"{fake.base_url}/v3/midjourney/jobs/jnope", headers=UA)
        assert status == 404 and body["code"] == 404


async def test_useapi_scripted_errors():
    async with UseapiFake() as fake:
        url = f"{fake.base_url}/v3/midjourney/jobs/info"
        fake.ask_script.extend([useapi_error(402), useapi_error(429, retry_after=7), useapi_error(596),
                                useapi_error(503), garbage()])
        status, _, body = await call("POST", url, json={"stream": False})
        assert status == 402 and body == {"error": "Account has no subscription or subscription expired",
                                          "code": 402}
        status, headers, body = await call("POST", url, json={"stream": False})
        assert status == 429 and headers["Retry-After"] == "7"
        status, _, body = await call("POST", url, json={"stream": False})
        assert status == 596 and "moderation" in body["errorDetails"]
        status, _, body = await call("POST", url, json={"stream": False})
        assert status == 503
        status, headers, body = await call("POST", url, json={"stream": False})
        assert status == 200 and headers["Content-Type"].startswith("text/html") and isinstance(body, str)
        status, _, receipt = await call("POST", url, json={"stream": False})
        assert status == 201
        fake.poll_script.extend([useapi_error(410), useapi_error(404), Scripted(502, "Bad Gateway")])
        poll = f"{fake.base_url}/v3/midjourney/jobs/{receipt['jobid']}"
        assert [(await call("GET", poll))[0] for _ in range(4)] == [410, 404, 502, 200]


async def test_useapi_sloppy_shapes_and_end_states():
    async with UseapiFake(complete_after=0.1, done_shape="top", pending_response="null",
                          job_outcome=lambda n: ["completed", "failed", "moderated"][n]) as fake:
        url = f"{fake.base_url}/v3/midjourney/jobs/info"
        ids = [(await call("POST", url, json={"stream": False}))[2]["jobid"] for _ in range(3)]
        _, _, pending = await call("GET", f"{fake.base_url}/v3/midjourney/jobs/{ids[0]}")
        assert pending["status"] != "completed" and pending["response"] is None
        done = (await poll_until_done(fake, ids[0]))[-1]
        assert "response" not in done and "12.06/15.0 hours" in done["content"]
        failed = (await poll_until_done(fake, ids[1]))[-1]
        assert failed["status"] == "failed" and {"error", "errorDetails", "code"} <= failed.keys()
        moderated = (await poll_until_done(fake, ids[2]))[-1]
        assert moderated["status"] == "moderated" and moderated["error"]
    async with UseapiFake(complete_after=float("inf"), pending_response="empty", expire_after=0.1) as fake:
        _, _, receipt = await call("POST", f"{fake.base_url}/v3/midjourney/jobs/info", json={"stream": False})
        poll = f"{fake.base_url}/v3/midjourney/jobs/{receipt['jobid']}"
        _, _, pending = await call("GET", poll)
        assert pending["response"] == {}
        await asyncio.sleep(0.12)
        assert (await call("GET", poll))[0] == 410


async def test_useapi_v2_and_callback():
    got: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    try:
        async with UseapiFake(account=FakeAccount.basic(), complete_after=0.05, callback=True) as fake:
            status, _, job = await call("POST", f"{fake.base_url}/v2/jobs/info", json={})
            assert status == 200 and job["status"] == "completed"
            assert "199.00/200.0 minutes (99.50%)" in job["content"]
            status, _, again = await call("GET", f"{fake.base_url}/v2/jobs/", params={"jobid": job["jobid"]})
            assert status == 200 and again["content"] == job["content"]
            await call("POST", f"{fake.base_url}/v3/midjourney/jobs/info",
                       json={"stream": False, "replyUrl": hook_url, "replyRef": "r1"})
            await fake.changes.wait(lambda: fake.callbacks or None, timeout=3)
            assert fake.callbacks[0]["status"] == 200
            assert got[0]["status"] == "completed" and got[0]["request"]["replyRef"] == "r1"
    finally:
        await runner.cleanup()


# --- LinkrAPI ----------------------------------------------------------------------------------

async def test_linkr_success_and_errors():
    async with LinkrFake(require_token=LINKR_TOKEN, delay=0.1) as fake:
        url = f"{fake.base_url}/api/v1/info"
        auth = {"Authorization": f"Bearer {LINKR_TOKEN}"}
        started = time.monotonic()
        status, _, body = await call("GET", url, headers=auth)
        assert time.monotonic() - started >= 0.1
        assert status == 200 and body["status"] == "SUCCESS"
        data = body["data"]
        assert data["fast_time_remaining"] == "12:03:36" and data["queued_jobs_fast"] == 0
        assert set(data) == {"user_id", "subscription", "job_mode", "visibility_mode", "fast_time_remaining",
                             "lifetime_usage", "fast_usage", "turbo_usage", "relaxed_usage",
                             "queued_jobs_fast", "queued_jobs_relax", "running_jobs"}
        assert (await call("GET", url, headers={"Authorization": "Bearer lkr_wrong"}))[0] == 401
        fake.ask_script.extend([linkr_error(502), garbage(200)])
        assert (await call("GET", url, headers=auth))[0] == 502
        status, _, body = await call("GET", url, headers=auth)
        assert status == 200 and isinstance(body, str)
        assert len(fake.asks) == 4
    async with LinkrFake(account=FakeAccount.trial(), delay=0, sloppy=True, latency=0.05) as fake:
        started = time.monotonic()
        _, _, body = await call("GET", f"{fake.base_url}/api/v1/info")
        assert time.monotonic() - started >= 0.05
        assert body["status"] == "success" and body["data"]["fast_time_remaining"] == "0:25:00"
        assert body["data"]["queued_jobs_fast"] == "0" and body["data"]["running_jobs"] == "None"


# --- midjourney-proxy --------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_mjproxy_read_sync_and_auth():
    clock = FakeClock()
    async with MjproxyFake(require_secret=MJ_SECRET, sync_delay=0.05, info_age=3600, clock=clock) as fake:
        acc = f"{fake.base_url}/mj/admin/account/{fake.account_id}"
        sync = f"{fake.base_url}/mj/admin/account-sync/{fake.account_id}"
        secret = {"Mj-Api-Secret": MJ_SECRET}
        status, headers, body = await call("GET", acc)
        assert status == 401 and headers["Content-Type"].startswith("text/plain") and body == "Unauthorized"
        assert (await call("POST", sync, headers={"Mj-Api-Secret": "nope"}))[0] == 401
        status, _, old = await call("GET", acc, headers=secret)
        assert status == 200 and old["fastTimeRemaining"] == "12.06/15.0 hours (80.37%)"
        assert datetime.fromisoformat(old["infoUpdated"]).timestamp() == pytest.approx(clock.now - 3600)
        assert old["properties"]["Job Mode"] == "Fast" and old["displays"]["subscribePlan"] == "Standard"
        assert {"id", "channelId", "relaxedUsage", "lifetimeUsage", "fastUsage", "turboUsage"} <= old.keys()
        fake.account.set_remaining(10.5)
        clock.now += 10
        status, _, body = await call("POST", sync, headers=secret)
        assert status == 200 and body["success"] is True and body["code"] == 1
        _, _, new = await call("GET", acc, headers=secret)
        assert new["fastTimeRemaining"] == "10.50/15.0 hours (70.00%)"
        assert datetime.fromisoformat(new["infoUpdated"]).timestamp() == pytest.approx(clock.now)
        status, _, body = await call("GET", f"{fake.base_url}/mj/admin/account/999", headers=secret)
        assert status == 404 and body["success"] is False
        fake.set_info_updated(age=7200)
        _, _, aged = await call("GET", acc, headers=secret)
        assert datetime.fromisoformat(aged["infoUpdated"]).timestamp() == pytest.approx(clock.now - 7200)
        fake.poll_script.append(garbage(500))
        assert (await call("GET", acc, headers=secret))[0] == 500


async def test_mjproxy_throttle_concurrency_and_refusal():
    clock = FakeClock()
    async with MjproxyFake(sync_delay=0.0, clock=clock) as fake:
        sync = f"{fake.base_url}/mj/admin/account-sync/{fake.account_id}"

        async def ok_after(seconds: float) -> bool:
            clock.now += seconds
            return (await call("POST", sync))[2]["success"]

        # 1 per 5 min, 2 per 10 min, 3 per 30 min, 5 per hour (t = seconds since the first sync)
        plan = [(0, True), (299, False), (1, True), (300, True), (300, False),  # t=900: 3 in 30 min
                (900, True), (300, True), (300, False),  # t=2400: 5 in the hour
                (1200, True)]  # t=3600: the first sync left the hour
        assert [await ok_after(step) for step, _ in plan] == [ok for _, ok in plan]
        assert len(fake.accounts[fake.account_id].syncs) == 6
        fake.throttle = False
        assert await ok_after(0) is True
        fake.refuse_sync = "Account is disabled"
        _, _, body = await call("POST", sync)
        assert body == {"success": False, "message": "Account is disabled"}
    async with MjproxyFake(sync_delay=0.2, throttle=False) as fake:
        sync = f"{fake.base_url}/mj/admin/account-sync/{fake.account_id}"
        first = asyncio.create_task(call("POST", sync))
        await fake.changes.wait(lambda: fake.asks or None, timeout=2)
        await asyncio.sleep(0.02)
        _, _, second = await call("POST", sync)
        assert second["success"] is False and "already" in second["message"]
        assert (await first)[2]["success"] is True
    async with MjproxyFake(sync_delay=0.0, throttle_scale=0.001) as fake:  # 5 min → 0.3 s
        sync = f"{fake.base_url}/mj/admin/account-sync/{fake.account_id}"
        assert (await call("POST", sync))[2]["success"] is True
        refused = (await call("POST", sync))[2]
        assert refused["success"] is False and "5 minutes" in refused["message"]
        await asyncio.sleep(0.31)
        assert (await call("POST", sync))[2]["success"] is True


async def test_mjproxy_never_read_and_time_styles():
    async with MjproxyFake(info_age=None, time_style="epoch_ms") as fake:
        _, _, body = await call("GET", f"{fake.base_url}/mj/admin/account/{fake.account_id}")
        assert body["infoUpdated"] is None and body["fastTimeRemaining"] is None
        await call("POST", f"{fake.base_url}/mj/admin/account-sync/{fake.account_id}")
        _, _, body = await call("GET", f"{fake.base_url}/mj/admin/account/{fake.account_id}")
        assert isinstance(body["infoUpdated"], int) and body["fastTimeRemaining"]
    async with MjproxyFake(time_style="offset") as fake:
        _, _, body = await call("GET", f"{fake.base_url}/mj/admin/account/{fake.account_id}")
        assert body["infoUpdated"].endswith("+08:00") and len(body["infoUpdated"].split(".")[1]) == 13
