"""Replicas: several `quota-bot run` processes on one PostgreSQL database (bot/replicas.py).

The end-to-end tests run three real `quota-bot run` subprocesses (``python -m bot run``) on one fresh
database of the session's PostgreSQL server (tests/pg.py), each on its own port as a load balancer would
see them, all talking to one fake Slack (HTTP mode: signed slash commands sent to any replica), one fake
Discord (REST + gateway) and one fake upstream, all served by this test's event loop. Subprocesses, not
in-process ``serve()``: a replica is really killed (SIGKILL, its database connections die with it) and
nothing is shared between the replicas but the database.

The shorter tests drive ``SharedReadings`` directly: two services on two store instances of one
database (on SQLite too: there the locks and notifications are in-process).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.errors import BadToken
from bot.replicas import SharedReadings
from bot.service import QuotaService
from bot.simulator import UpstreamSimulator
from bot.store import open_store
from tests.conftest import TEST_TOKEN
from tests.fakes.discord import FakeDiscord
from tests.fakes.posters import eventually
from tests.fakes.slack import ADMIN_ID, CHANNEL_ID, FakeSlack, form, sign
from tests.secrets import ALL_TEST_SECRETS

DISCORD_TOKEN = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
SLACK_BOT = ALL_TEST_SECRETS["SLACK_BOT_TOKEN"]
SLACK_APP = ALL_TEST_SECRETS["SLACK_APP_TOKEN"]
SLACK_SECRET = ALL_TEST_SECRETS["SLACK_SIGNING_SECRET"]
SCHEDULED = "C0SCHED01"  # the channel QUOTA_SCHEDULES posts into
ANSWER = "12.06 h of 15 h left"  # what the fake upstream's default reading says
READY = re.compile(r" ready: provider=.*http://127\.0\.0\.1:(\d+)/healthz")  # the replica's log line
EPOCH = time.time() - time.monotonic()  # the fakes record time.monotonic(); the store, Unix time


# --- the replicas ---------------------------------------------------------------------------------------

@dataclass
class Replica:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """The fakes, the database, and the replicas started on them."""

    tmp: Path
    url: str
    upstream: UpstreamSimulator
    slack: FakeSlack
    discord: FakeDiscord
    replicas: list[Replica] = field(default_factory=list)
    http: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)

    def env(self, port: int, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
        env.update(NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL=self.upstream.base_url, HOST="127.0.0.1",
                   PORT=str(port), DATABASE_URL=self.url, LOG_LEVEL="INFO",
                   SLACK_BOT_TOKEN=SLACK_BOT, SLACK_SIGNING_SECRET=SLACK_SECRET, SLACK_API_URL=self.slack.api_url,
                   DISCORD_BOT_TOKEN=DISCORD_TOKEN, DISCORD_API_BASE_URL=self.discord.api_url,
                   DISCORD_GATEWAY_URL=self.discord.gateway_url, QUOTA_SCHEDULE_MIN_EVERY="1s")  # `every 3s`
        env.update(extra)
        return env

    async def start(self, n: int, **settings: str) -> list[Replica]:
        """Start ``n`` replicas at once (as a deploy does) and wait until each is ready (its log says so)."""
        started = []
        for _ in range(n):
            name = f"r{len(self.replicas) + 1}"
            log = self.tmp / f"{name}.log"
            with open(log, "wb") as out:
                # PORT=0: the replica takes a port of its own and its ready line names it (a port picked
                # here and handed over could be taken meanwhile by another test's server)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", "run", cwd=self.tmp, env=self.env(0, **settings),
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True)
            replica = Replica(name, 0, proc, log)
            self.replicas.append(replica)
            started.append(replica)
        await asyncio.gather(*(self._ready(r) for r in started))
        return started

    async def _ready(self, replica: Replica, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if replica.proc.returncode is not None:
                raise AssertionError(f"{replica.name} exited with {replica.proc.returncode}:\n{replica.text()[-3000:]}")
            ready = READY.search(replica.text())  # the line comes once the adapters have started
            if ready:
                replica.port = int(ready.group(1))
                await self.healthz(replica)
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{replica.name} was not ready within {timeout} s:\n{replica.text()[-3000:]}")

    async def healthz(self, replica: Replica) -> dict[str, Any]:
        async with self.http.get(f"http://127.0.0.1:{replica.port}/healthz",
                                 timeout=aiohttp.ClientTimeout(total=10)) as resp:
            assert resp.status == 200
            return await resp.json()

    async def slack_command(self, replica: Replica, text: str = "", command: str = "/quota",
                            user: str | None = None) -> str:
        """A signed Slack slash command sent to ``replica`` (HTTP mode); returns its response id."""
        payload, rid = self.slack.command_payload(command, text, **({"user_id": user} if user else {}))
        body = form(payload)
        async with self.http.post(f"http://127.0.0.1:{replica.port}/slack/events", data=body,
                                  headers=sign(SLACK_SECRET, body)) as resp:
            assert resp.status == 200, await resp.text()
        return rid

    async def slack_answer(self, replica: Replica, text: str = "", command: str = "/quota",
                           user: str | None = None, timeout: float = 20) -> str:
        rid = await self.slack_command(replica, text, command, user)
        return json.dumps((await self.slack.wait_response(rid, timeout)).body)

    def posts(self, channel: str) -> list[float]:
        """Unix times of the messages posted into ``channel``."""
        return [EPOCH + p.at for p in self.slack.posts if p.body.get("channel") == channel]

    async def held(self) -> list[Replica]:
        """The live replicas whose /healthz says they hold the Discord gateway."""
        live = [r for r in self.replicas if r.proc.returncode is None]
        states = await asyncio.gather(*(self.healthz(r) for r in live))
        return [r for r, h in zip(live, states) if h.get("discord_gateway") == "held"]

    async def terminate(self, replica: Replica) -> None:
        """SIGTERM, as a platform stops a replica; it must be gone within 10 s."""
        if replica.proc.returncode is None:
            replica.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(replica.proc.wait(), 15)

    async def close(self) -> None:
        for replica in self.replicas:
            if replica.proc.returncode is None:
                replica.proc.kill()
                await replica.proc.wait()
        await self.http.close()

    def logs(self, tail: int = 6000) -> str:
        return "\n".join(f"===== {r.name} (port {r.port}) =====\n{r.text()[-tail:]}" for r in self.replicas)


@pytest.fixture
async def cluster(tmp_path, pg_url):
    upstream = UpstreamSimulator(complete_after=0.2, require_token=TEST_TOKEN)
    await upstream.start()
    slack = await FakeSlack(SLACK_BOT, SLACK_APP).start()
    discord = await FakeDiscord(DISCORD_TOKEN).start()
    rig = Cluster(tmp_path, pg_url, upstream, slack, discord)
    try:
        yield rig
    finally:
        await rig.close()
        logs = rig.logs(tail=10**7)
        print(rig.logs())  # shown by pytest when the test failed
        await discord.stop()
        await slack.stop()
        await upstream.stop()
    leaked = [name for name, value in ALL_TEST_SECRETS.items() if value in logs]
    assert not leaked, f"secret(s) {leaked} appeared in a replica's log"


async def _runs(url: str, channel: str) -> list[tuple[float, float | None, str | None]]:
    """(due, posted_at, result) of every run of the one schedule posting into ``channel``."""
    store = await open_store(url)
    try:
        [schedule] = [s for s in await store.schedules() if s.channel == channel]
        return await store.runs(schedule.id)
    finally:
        await store.close()


def _check_each_run_posted_once(runs: list[tuple[float, float | None, str | None]], posts: list[float],
                                every: float) -> list[float]:
    """Every due time from the first to the last was posted, each by exactly one message (posted
    between its due time and 2.5 s later) and no message was posted for anything else. Returns the dues."""
    dues = [due for due, _, result in runs if result == "posted"]
    assert [r for r in runs if r[2] != "posted"] == [], runs
    assert dues and all(abs(b - a - every) < 0.01 for a, b in zip(dues, dues[1:])), f"a run is missing: {dues}"
    assert len(posts) == len(dues), f"{len(posts)} posts for {len(dues)} runs"
    for due in dues:
        near = [at for at in posts if due - 0.1 <= at <= due + 2.5]
        assert len(near) == 1, f"run due at {due:.1f}: {len(near)} posts ({[round(a - due, 2) for a in near]})"
    return dues


# --- end to end: three replicas -------------------------------------------------------------------------

async def test_three_replicas_post_each_run_once_share_one_reading_and_hand_over_the_gateway(cluster):
    cluster.upstream.complete_after = 1.0  # the burst below lands while the one reading is under way
    replicas = await cluster.start(3, QUOTA_SCHEDULES=f"slack:{SCHEDULED}=every 3s", QUOTA_CACHE_SECONDS="60")
    began = time.time()

    # started together, the three synced QUOTA_SCHEDULES one after the other: one schedule, not three
    store = await open_store(cluster.url)
    try:
        assert [(s.channel, s.when_text) for s in await store.schedules()] == [(SCHEDULED, "every 3s")]
    finally:
        await store.close()

    # 60 /quota spread over the three replicas: one upstream ask between them, every one answered
    rids = await asyncio.gather(*(cluster.slack_command(replicas[i % 3]) for i in range(60)))
    answers = await asyncio.gather(*(cluster.slack.wait_response(rid, 20) for rid in rids))
    assert all(ANSWER in json.dumps(a.body) for a in answers), [a.body for a in answers if ANSWER not in json.dumps(a.body)][:2]
    assert len(cluster.upstream.asks) == 1

    # one replica holds the Discord gateway (and registered the commands); it answers /quota
    await asyncio.wait_for(cluster.discord.ready.wait(), 15)
    [holder] = await cluster.held()
    assert len(cluster.discord.sockets) == 1 and cluster.discord.identifies == 1
    assert len(cluster.discord.command_puts) == 1
    _, token = await cluster.discord.slash("quota")
    assert ANSWER in str((await cluster.discord.wait_edit(token, 15)).body)

    # the holder dies (SIGKILL, between two scheduled runs so none is half done): another replica
    # connects the gateway and answers a Discord /quota well within 30 s
    posted = len(cluster.posts(SCHEDULED))
    await cluster.slack.wait(lambda: True if len(cluster.posts(SCHEDULED)) > posted else None, timeout=10)
    await asyncio.sleep(0.5)  # its result recorded too; the next run is 2.5 s away
    holder.proc.kill()
    await holder.proc.wait()
    killed = time.monotonic()
    identifies = cluster.discord.identifies
    while not (cluster.discord.identifies > identifies and cluster.discord.sockets):  # the gateway touches no Changes
        assert time.monotonic() - killed < 30, "no replica connected the gateway within 30 s"
        await asyncio.sleep(0.1)
    _, token = await cluster.discord.slash("quota")
    assert ANSWER in str((await cluster.discord.wait_edit(token, 15)).body)
    took_over = time.monotonic() - killed
    assert took_over < 30, took_over
    [new_holder] = await cluster.held()
    assert new_holder is not holder and len(cluster.discord.sockets) == 1
    assert len(cluster.discord.command_puts) == 2  # the new holder registered once

    # the schedule ran all along: ~18 s of `every 3s`, each run posted exactly once by one replica
    while time.time() - began < 18:
        await asyncio.sleep(0.5)
    for replica in cluster.replicas:
        await cluster.terminate(replica)
    dues = _check_each_run_posted_once(await _runs(cluster.url, SCHEDULED), cluster.posts(SCHEDULED), 3.0)
    assert len(dues) >= 5, dues
    assert len(cluster.upstream.asks) == 1  # the cache (60 s) was shared by every post and answer
    print(f"gateway taken over {took_over:.1f} s after the kill; {len(dues)} runs posted once each")


async def test_three_replicas_share_the_posting_of_300_runs_each_posted_once(cluster):
    """300 schedules due at the same moments: every replica posts some of each moment's runs (they take
    them window by window from the store), each run is posted by exactly one message, with one ask."""
    channels = [f"C0SHARE{n:03d}" for n in range(300)]
    await cluster.start(3, QUOTA_SCHEDULES=";".join(f"slack:{c}=every 5s" for c in channels),
                        QUOTA_CACHE_SECONDS="60")
    shared = set(channels)
    await cluster.slack.wait(lambda: True if len([p for p in cluster.slack.posts
                                                  if p.body.get("channel") in shared]) >= 600 else None, timeout=40)
    for replica in cluster.replicas:
        await cluster.terminate(replica)
    store = await open_store(cluster.url)
    try:
        ids = {s.id for s in await store.schedules()}
        rows = await store.db.fetch("SELECT due, owner, result FROM runs WHERE schedule_id IN "
                                    f"({', '.join(str(i) for i in ids)})")
    finally:
        await store.close()
    assert len(ids) == 300
    moments: dict[float, list[tuple[str | None, str]]] = {}
    for due, owner, result in rows:
        moments.setdefault(due, []).append((owner, result))
    whole = {due: runs for due, runs in moments.items() if len(runs) == 300}
    assert len(whole) >= 2, {due: len(runs) for due, runs in moments.items()}
    for due, runs in whole.items():
        assert {result for _, result in runs} == {"posted"}, (due, runs[:3])
        shares = sorted(Counter(owner for owner, _ in runs).values())
        assert len(shares) == 3, f"the runs due at {due} were posted by {len(shares)} replica(s): {shares}"
    posts = Counter(p.body.get("channel") for p in cluster.slack.posts if p.body.get("channel") in shared)
    posted_runs = sum(1 for runs in moments.values() for _, result in runs if result == "posted")
    assert sum(posts.values()) == posted_runs, "one message per posted run, none twice"
    assert len(cluster.upstream.asks) == 1


async def test_a_replica_killed_while_holding_its_windows_loses_none_of_the_300_runs(cluster):
    """SIGKILL one replica while every replica holds windows of one moment's runs: the other two post the
    rest and take the dead one's runs over. Every run ends posted once, or, if the dead one was sending
    it, recorded as skipped (it may have gone out: never sent twice); none is left unfinished."""
    cluster.upstream.complete_after = 3.0  # the windows are held while the reading is under way
    channels = [f"C0KILL{n:03d}" for n in range(300)]
    victim, *_ = await cluster.start(3, QUOTA_SCHEDULES=";".join(f"slack:{c}=every 20s" for c in channels),
                                     QUOTA_CACHE_SECONDS="60")
    sending = "skipped: its process stopped while posting it (it may have gone out; never sent twice)"
    store = await open_store(cluster.url)
    try:
        deadline = time.monotonic() + 40
        while await store.db.fetchval("SELECT COUNT(DISTINCT owner) FROM runs WHERE owner IS NOT NULL") < 3:
            assert time.monotonic() < deadline, "the replicas did not all take windows of the first moment"
            await asyncio.sleep(0.05)
        [due] = [row[0] for row in await store.db.fetch("SELECT DISTINCT due FROM runs")]
        victim.proc.kill()
        await victim.proc.wait()
        deadline = time.monotonic() + 18  # the next moment is 20 s after this one
        while (unfinished := await store.db.fetchval(
                "SELECT COUNT(*) FROM runs WHERE due = ? AND result IN ('claimed', 'posting')", due)) > 0:
            assert time.monotonic() < deadline, f"{unfinished} run(s) of the moment were left unfinished"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # a late double post would show
        results = Counter(result for (result,) in await store.db.fetch("SELECT result FROM runs WHERE due = ?", due))
        posted = {channel for (channel,) in await store.db.fetch(
            "SELECT s.channel FROM runs r JOIN schedules s ON s.id = r.schedule_id WHERE r.due = ?"
            " AND r.result = 'posted'", due)}
    finally:
        await store.close()
    assert sum(results.values()) == 300 and set(results) <= {"posted", sending}, results
    assert results["posted"] >= 150, results  # most were still waiting for the reading when it died
    posts = Counter(p.body.get("channel") for p in cluster.slack.posts
                    if p.body.get("channel") in set(channels) and EPOCH + p.at < due + 19.5)
    assert set(posts.values()) <= {1}, "never sent twice"
    assert posted <= set(posts), "every run recorded as posted went out"


async def test_slack_socket_mode_runs_in_every_replica_and_each_answers_the_events_it_is_given(cluster):
    """Socket Mode in three replicas: each opens its connection; Slack gives each event to one of them,
    and whichever gets it acks and answers (one upstream ask between them)."""
    cluster.upstream.complete_after = 1.0
    await cluster.start(3, SLACK_APP_TOKEN=SLACK_APP, QUOTA_CACHE_SECONDS="60")
    await cluster.slack.wait(lambda: True if len(cluster.slack.sockets) == 3 else None, timeout=20)
    sent = [await cluster.slack.envelope(socket=i) for i in range(3) for _ in range(4)]
    for envelope_id, rid in sent:
        await cluster.slack.wait_ack(envelope_id, timeout=10)
        assert ANSWER in json.dumps((await cluster.slack.wait_response(rid, 20)).body)
    assert len(cluster.slack.acks) == 12 and len(cluster.upstream.asks) == 1
    assert all(len(cluster.slack.responses[rid]) == 1 for _, rid in sent)  # each answered once
    assert len(cluster.slack.sockets) == 3 and cluster.slack.connections == 3


async def test_a_schedule_added_on_one_replica_is_posted_by_the_others(cluster):
    a, b, c = await cluster.start(3, QUOTA_CACHE_SECONDS="60")
    answer = await cluster.slack_answer(a, "add every 3s", "/quota-schedule", user=ADMIN_ID)
    assert "every 3s" in answer and "#1" in answer, answer
    added = time.time()
    await cluster.terminate(a)  # the replica that added it is gone: b and c must have armed it

    await cluster.slack.wait(lambda: True if len(cluster.posts(CHANNEL_ID)) >= 3 else None, timeout=20)
    first = cluster.posts(CHANNEL_ID)[0]
    assert first - added < 3.0 + 2.5, first - added  # the first run after the add already went out
    listed = await cluster.slack_answer(b, "list", "/quota-schedule", user=ADMIN_ID)
    assert "#1" in listed and "every 3s" in listed, listed

    # removed on c: b stops posting it too, within a few seconds
    removed = await cluster.slack_answer(c, "remove 1", "/quota-schedule", user=ADMIN_ID)
    assert "Removed schedule #1" in removed, removed
    gone = time.time()
    await asyncio.sleep(7)
    late = [at for at in cluster.posts(CHANNEL_ID) if at > gone + 2.5]
    assert late == [], f"posted {[round(at - gone, 1) for at in late]} s after the removal"
    for replica in (b, c):
        await cluster.terminate(replica)
    posts = [at for at in cluster.posts(CHANNEL_ID)]
    # each due time was posted once (the runs are gone with the schedule; the posts sit on its 3 s grid)
    # (a post may come late on a busy machine, so each is matched to its nearest slot of the grid)
    slots = [round((at - posts[0]) / 3.0) for at in posts]
    assert len(slots) == len(set(slots)), [round(at - posts[0], 1) for at in posts]


async def test_the_database_going_away_does_not_stop_quota_and_schedules_resume_without_doubles(cluster, pg_server):
    replicas = await cluster.start(3, QUOTA_SCHEDULES=f"slack:{SCHEDULED}=every 3s", QUOTA_CACHE_SECONDS="0")
    await cluster.slack.wait(lambda: True if cluster.posts(SCHEDULED) else None, timeout=15)
    await asyncio.wait_for(cluster.discord.ready.wait(), 15)
    gateways: list[int] = []  # how many gateway connections there are, sampled all along

    async def sample() -> None:
        while True:
            gateways.append(len(cluster.discord.sockets))
            await asyncio.sleep(0.1)

    sampler = asyncio.ensure_future(sample())
    try:
        await asyncio.to_thread(pg_server.stop)
        down = time.time()
        # /quota still answers, in every replica, from the upstream; /healthz says degraded and why
        asks = len(cluster.upstream.asks)
        answers = await asyncio.gather(*(cluster.slack_answer(r) for r in replicas))
        assert all(" h of 15 h left" in a for a in answers), answers  # each a fresh reading (the figures move)
        assert len(cluster.upstream.asks) >= asks + 3
        for replica in replicas:
            health = await cluster.healthz(replica)
            assert health["status"] == "degraded", health
            assert "PostgreSQL" in health["reason"] and "127.0.0.1" in health["reason"], health
        while time.time() - down < 8:  # a few runs fall due while it is away
            await asyncio.sleep(0.5)
        await asyncio.to_thread(pg_server.start)
        back = time.time()

        # the schedule resumes; healthz is ok again
        await cluster.slack.wait(lambda: True if len([at for at in cluster.posts(SCHEDULED) if at > back]) >= 2
                                 else None, timeout=20)
        for replica in replicas:
            assert (await cluster.healthz(replica))["status"] == "ok"
    finally:
        sampler.cancel()
    for replica in replicas:
        await cluster.terminate(replica)

    runs = await _runs(cluster.url, SCHEDULED)
    posts = cluster.posts(SCHEDULED)
    posted = [(due, at) for due, at, result in runs if result == "posted"]
    # nothing posted twice: one message per posted run (a run is claimed once: the runs table's key)
    assert len(posts) == len(posted), (posts, runs)
    # the first run that fell due while the database was away was posted once it came back (late, within
    # the grace window), not lost
    in_outage = [due for due, at in posted if down < due < back]
    assert in_outage and all(at >= back for due, at in posted if due in in_outage), runs
    assert [at for at in posts if down + 0.5 < at < back] == [], "posted while the runs could not be claimed"
    assert max(gateways) == 1, "two replicas held the Discord gateway at once"
    logs = cluster.logs(tail=10**7)
    assert "is read from the upstream directly until it answers again" in logs
    assert "the reading was not stored" in logs and "after the database came back" in logs


# --- shared readings, driven directly -------------------------------------------------------------------

@pytest.fixture
async def two_services(open_stores, make_provider, upstream):
    """Two services of one account on two store instances of one database (two replicas), each reading
    the fake upstream and recording its readings, as the runtime wires them."""
    made: list[tuple[QuotaService, SharedReadings]] = []

    async def factory(cache_seconds: float = 0.0, **provider: Any) -> list[QuotaService]:
        services = []
        for _ in range(2):
            store = await open_stores()
            shared = SharedReadings(store)
            await shared.start()
            service = QuotaService(make_provider(**provider), cache_seconds=cache_seconds, shared=shared)
            service.subscribe(lambda report, store=store: store.record_reading(report, account="default"))
            made.append((service, shared))
            services.append(service)
        return services

    yield factory
    for _, shared in made:
        await shared.stop()


async def test_concurrent_readings_on_two_replicas_make_one_upstream_ask(two_services, upstream):
    upstream.complete_after = 0.5
    a, b = await two_services(cache_seconds=0)
    reports = await asyncio.gather(*(s.get_report() for s in (a, b) for _ in range(10)))
    assert len(upstream.asks) == 1
    assert {r.remaining.value for r in reports} == {12.06}
    counts = [a.shared_readings.counts, b.shared_readings.counts]
    assert sorted((c["asked"], c["shared"]) for c in counts) == [(0, 1), (1, 0)]


async def test_a_fresh_stored_reading_is_used_without_asking(two_services, upstream):
    a, b = await two_services(cache_seconds=60)
    first = await a.get_report()
    second = await b.get_report()
    assert len(upstream.asks) == 1
    assert second.remaining == first.remaining and second.fields == first.fields
    assert b.shared_readings.counts["stored"] == 1
    assert len(await b.shared_readings.store.readings(account="default")) == 1  # not recorded again


async def test_when_the_holder_fails_the_waiting_replica_reads_itself(two_services, upstream, make_provider):
    upstream.complete_after = 0.3
    a, b = await two_services(cache_seconds=0)
    a.provider = make_provider(token="not-the-token")  # a's ask is refused by the upstream
    first = asyncio.ensure_future(a.get_report())
    await asyncio.sleep(0.05)  # a holds the lock
    second = asyncio.ensure_future(b.get_report())
    with pytest.raises(BadToken):
        await first
    report = await second
    assert report.remaining.value == 12.06 and len(upstream.asks) == 2


async def test_a_database_that_cannot_be_used_never_fails_a_reading(pg_url, make_provider, upstream, caplog):
    store = await open_store(pg_url)
    shared = SharedReadings(store)
    service = QuotaService(make_provider(), cache_seconds=60, shared=shared)
    await store.close()  # every store call fails from now on
    report = await service.get_report()
    assert report.remaining.value == 12.06 and len(upstream.asks) == 1
    assert shared.counts["direct"] == 1
    assert "the database cannot be used" in caplog.text and "from the upstream directly" in caplog.text


# --- alerts on two replicas -----------------------------------------------------------------------------

LOW = {"User ID": "000000000000000000", "Subscription": "Standard (Active monthly, renews next on <t:1900000000>)",
       "Job Mode": "Fast", "Visibility Mode": "Public", "Fast Time Remaining": "1.00/15.0 hours (6.67%)",
       "Lifetime Usage": "1234 images (56.78 hours)", "Queued Jobs (fast)": "0", "Running Jobs": "None"}


class BlockingPoster:
    """A chat that never answers: the replica stops while its post is in flight."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def post(self, channel: str, outcome: Any) -> None:
        self.entered.set()
        await asyncio.Event().wait()


@pytest.fixture
async def alert_replicas(open_stores, make_service, upstream):
    """``await alert_replicas(poster)``: an ``Alerts`` as serve() builds it, on its own store instance
    of the shared database, with its own service reading the fake upstream (which says 1 h of 15 h)."""
    from bot.accounts import QuotaPool
    from bot.alerts import Alerts

    upstream.complete_after = 0.02
    upstream.content = LOW
    made: list[Alerts] = []

    async def factory(poster: Any) -> Alerts:
        store = await open_stores()
        pool = QuotaPool({"default": make_service(cache_seconds=0)}, pooled=False)
        alerts = Alerts(store, pool, {"slack": poster})
        made.append(alerts)
        return alerts

    yield factory
    for alerts in made:
        await alerts.stop()


async def test_an_alert_crossed_on_two_replicas_is_added_once_and_posted_once(alert_replicas):
    from bot.alerts import parse_config
    from tests.fakes.posters import RecordingPoster

    posters = [RecordingPoster(), RecordingPoster()]
    a, b = [await alert_replicas(p) for p in posters]
    items = parse_config("slack:C01=10%")
    await asyncio.gather(a.sync_config(items), b.sync_config(items))  # started together: one row
    assert len(await a.store.alerts()) == 1
    await asyncio.gather(a.start(), b.start())
    await asyncio.gather(a.pool.get_report(), b.pool.get_report())  # each replica's own reading: both check
    await eventually(lambda: a.evaluations and b.evaluations and not a._deliveries and not b._deliveries
                     and sum(len(p.posts) for p in posters))
    [row] = await a.store.alerts()
    assert row.state == "fired"
    for alerts in (a, b):  # the replica that lost the claim took the stored state: nothing more to fire
        assert await alerts.evaluate() == 0
        [view] = await alerts.list("slack")
        assert view.state != "armed"
    assert sum(len(p.posts) for p in posters) == 1


async def test_a_pending_alert_is_posted_by_another_replica_only_once_its_owner_stopped(alert_replicas):
    from bot.alerts import parse_config
    from tests.fakes.posters import RecordingPoster

    blocked, poster = BlockingPoster(), RecordingPoster()
    a = await alert_replicas(blocked)
    await a.sync_config(parse_config("slack:C01=10%"))
    await a.start()
    await a.pool.get_report()
    await asyncio.wait_for(blocked.entered.wait(), 5)  # a claimed it and is posting (a 429 wait, say)
    b = await alert_replicas(poster)
    await b.start()  # a runs: its pending alert is its own to post
    await b.reload()
    if b._recovering is not None:
        await b._recovering
    assert poster.posts == []
    await a.stop()  # a stops before its post went out: the alert is still pending, its owner gone
    [row] = await b.store.alerts()
    assert row.state == "pending"
    await b.reload()
    await b._recovering
    assert [(channel, notice.headline) for channel, notice, _ in poster.posts] == [
        ("C01", "Fast time below 10 %: 1 h of 15 h left")]
    [row] = await b.store.alerts()
    assert row.state == "fired"
    await b.reload()
    if b._recovering is not None:
        await b._recovering
    assert len(poster.posts) == 1


async def test_an_alert_claimed_by_an_older_version_is_posted_once_by_replicas_starting_together(alert_replicas):
    """A pending claim without an owner (made before claims named theirs, e.g. a rolling deploy from
    that version): each new replica posts such claims at its start; only one of them may."""
    import json as _json

    from bot.alerts import parse_config
    from tests.fakes.posters import RecordingPoster

    blocked = BlockingPoster()
    old = await alert_replicas(blocked)
    await old.sync_config(parse_config("slack:C01=10%"))
    await old.start()
    await old.pool.get_report()
    await asyncio.wait_for(blocked.entered.wait(), 5)
    await old.stop()
    [row] = await old.store.alerts()
    message = _json.loads(row.message)
    del message["owner"]  # the claim as the older version stored it
    await old.store.alerts_posted([(row.id, None)])  # pending → fired → armed → claimed again, ownerless
    await old.store.rearm_alerts([row.id])
    assert await old.store.claim_alerts([(row.id, row.fired_at, row.fired_renewal, _json.dumps(message))]) == {row.id}

    posters = [RecordingPoster() for _ in range(3)]
    replicas = [await alert_replicas(p) for p in posters]
    await asyncio.gather(*(r.start() for r in replicas))
    await eventually(lambda: not any(r._deliveries for r in replicas) and sum(len(p.posts) for p in posters))
    [row] = await old.store.alerts()
    assert row.state == "fired"
    await asyncio.gather(*(r.reload() for r in replicas))
    await asyncio.gather(*(r._recovering for r in replicas if r._recovering is not None))
    assert sum(len(p.posts) for p in posters) == 1, [p.posts for p in posters]


async def test_a_change_made_while_a_replica_starts_is_reloaded(open_stores):
    from bot.replicas import ChangeWatcher

    store, other = await open_stores(), await open_stores()
    watcher = ChangeWatcher(store, every=0.05)
    reloads: list[int] = []

    async def reload() -> None:
        reloads.append(await store.revision())

    watcher.watch(reload)
    await watcher.baseline()  # before this replica loads its schedules …
    await other.add_schedule("slack", "C01", "every 1h", "UTC", "chat", time.time())  # … one is added elsewhere
    await watcher.start()
    try:
        await eventually(lambda: reloads, message="the change was not reloaded")
        await asyncio.sleep(0.2)
        assert len(reloads) == 1  # once per change
    finally:
        await watcher.stop()
