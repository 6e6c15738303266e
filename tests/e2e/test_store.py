"""The stores: the same interface, migrations and claims on SQLite and on a real PostgreSQL server
(the ``store``/``store_url``/``open_stores`` fixtures run each test once per store); then what only
the SQLite file has (bad files are refused and left untouched)."""

from __future__ import annotations

import asyncio
import inspect
import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from bot.report import parse_result
from bot.store import (MIGRATIONS, SCHEMA_VERSION, migrations, AlertRow, LockHandle, PostgresStore, ScheduleRow, Store, StoreError,
                       open_store)
from bot.stores import sqlite as sqlite_store


def _report(text: str = "12.06/15.0 hours (80.37%)", *, ago: float = 0.0, simulated: bool = False, **extra):
    content = {"User ID": "1234", "Subscription": "Standard (Active monthly, renews next on <t:1893456000>)",
               "Job Mode": "Fast", "Visibility Mode": "Public", "Fast Time Remaining": text,
               "Lifetime Usage": "1,021 images (42.1 hours)", **extra}
    result = {"content": content, "originatingMessageId": "msg-77", "responseAt": "2026-11-27T14:16:03.120Z"}
    read_at = (datetime.now(timezone.utc) - timedelta(seconds=ago)).replace(microsecond=123456)
    return parse_result(result, read_at=read_at, simulated=simulated)


def _dbname(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


def _schema_version(request, url: str) -> int:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as db:
            return db.execute("PRAGMA user_version").fetchone()[0]
    return int(request.getfixturevalue("pg_server").psql("SELECT MAX(version) FROM quota_bot_schema", _dbname(url)))


def _set_newer_schema(request, url: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        request.getfixturevalue("pg_server").psql(
            f"INSERT INTO quota_bot_schema (version) VALUES ({SCHEMA_VERSION + 1})", _dbname(url))


# --- the one interface ---------------------------------------------------------------------------

def test_both_stores_have_the_same_public_methods_with_the_same_signatures():
    def public(cls):
        return {name: inspect.signature(getattr(cls, name)) for name in dir(cls) if not name.startswith("_")}

    sqlite_api, pg_api = public(Store), public(PostgresStore)
    assert sqlite_api.keys() == pg_api.keys()
    assert {"latest_report", "revision", "record_job_duration", "job_durations", "try_lock", "notify", "listen",
            "healthy", "can_write"} <= sqlite_api.keys()
    different = [n for n in sqlite_api if n != "open" and sqlite_api[n] != pg_api[n]]
    assert not different, f"signatures differ: {different}"


async def test_can_write_leaves_nothing_behind(store):
    before = await store.revision()
    assert await store.can_write() is None
    assert await store.can_write() is None  # the first one's transaction was ended
    assert await store.revision() == before
    await store.add_schedules([("slack", "C01", "every 1h", "UTC", "chat", 0.0)])  # and writing goes on
    assert await store.revision() == before + 1


async def test_a_store_survives_a_restart_with_schedules_and_readings(open_stores, service):
    store = await open_stores()
    row = await store.add_schedule("slack", "C01", "every 6h", "UTC", "chat", 0.0, "U1")
    await store.record_reading(await service.get_report())
    assert await store.claim([(row.id, 100.0)]) == {(row.id, 100.0)}
    await store.close()

    again = await open_stores()
    assert [(r.id, r.platform, r.channel, r.when_text, r.created_by) for r in await again.schedules()] == [
        (row.id, "slack", "C01", "every 6h", "U1")]
    readings = await again.readings()
    assert len(readings) == 1 and readings[0]["remaining"] == 12.06 and readings[0]["total"] == 15.0
    assert readings[0]["percent"] == 80.4 and readings[0]["unit"] == "hours" and readings[0]["job_mode"] == "Fast"
    assert readings[0]["plan"] == "Standard" and readings[0]["renewal"] > 0
    assert readings[0]["simulated"] == 0 and type(readings[0]["simulated"]) is int
    assert await again.claim([(row.id, 100.0)]) == set(), "a claimed run is never claimed again"
    assert await again.last_claimed() == {row.id: 100.0}


async def test_the_schema_is_versioned_and_a_newer_one_is_refused(request, store_url, open_stores):
    store = await open_stores()
    await store.close()
    assert _schema_version(request, store_url) == SCHEMA_VERSION == len(MIGRATIONS) == 8
    _set_newer_schema(request, store_url)
    with pytest.raises(StoreError) as caught:
        await open_store(store_url)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: ") and "\n" not in message
    assert f"written by a newer quota-bot (schema {SCHEMA_VERSION + 1}, this one knows {SCHEMA_VERSION})" in message


async def test_two_stores_opening_a_new_database_at_once_migrate_it_once(request, store_url, open_stores):
    first, second, third = await asyncio.gather(open_stores(), open_stores(), open_stores())
    assert _schema_version(request, store_url) == SCHEMA_VERSION
    if store_url.startswith("postgres"):
        applied = request.getfixturevalue("pg_server").psql("SELECT string_agg(version::text, ',' ORDER BY version)"
                                                            " FROM quota_bot_schema", _dbname(store_url))
        assert applied == ",".join(str(n) for n in range(1, SCHEMA_VERSION + 1))
    row = await first.add_schedule("discord", "1", "every 1h", "UTC", "config", 0.0)
    assert [r.id for r in await second.schedules()] == [r.id for r in await third.schedules()] == [row.id]


async def test_describe_names_the_store_and_healthy_answers(store, store_url):
    text = store.describe()
    if store_url.startswith("sqlite"):
        assert text == f"SQLite {store_url[len('sqlite:///'):]}"
    else:
        assert text == f"PostgreSQL 127.0.0.1:{urlsplit(store_url).port}/{_dbname(store_url)}"
    assert text in repr(store)
    assert await store.healthy() is None
    await store.close()
    problem = await store.healthy()
    assert problem and "closed" in problem and "\n" not in problem
    assert store.describe() == text, "describe() still answers after close (quota-bot check prints it then)"


# --- readings ------------------------------------------------------------------------------------

async def test_readings_history_and_pruning(store):
    now = time.time()
    await store.record_reading(_report("600/900 minutes"), account="basic")
    await store.record_reading(_report("3.5/15 hours", ago=7200), account="studio")
    await store.record_history("studio", [(now - 86400 * 3, 10.0, 15.0, None), (now - 86400 * 2, 8.0, 15.0, 1.9e9)],
                               simulated=True)
    assert [r["account"] for r in await store.readings()] == ["basic", "studio", "studio", "studio"]
    assert [r["remaining"] for r in await store.readings(limit=2, account="studio")] == [3.5, 8.0]
    assert [r["simulated"] for r in await store.readings(account="studio")] == [0, 1, 1]
    assert await store.history("basic", now - 60, simulated=False) == [
        (pytest.approx(now, abs=5), 10.0, 15.0, 1893456000.0)], "minutes are converted to hours"
    assert [(rem, tot, ren) for _, rem, tot, ren in await store.history("studio", 0, simulated=True)] == [
        (10.0, 15.0, None), (8.0, 15.0, 1.9e9)], "simulated and real readings never mix"
    assert await store.latest_reading_at("studio") == pytest.approx(now - 7200, abs=5)
    assert await store.latest_reading_at("nobody") is None
    assert await store.latest_reading_at("studio", simulated=True) == pytest.approx(now - 86400 * 2)
    assert await store.latest_reading_at("basic", simulated=True) is None, "a demo's past is not a real reading"
    assert await store.has_readings("studio", True) and await store.has_readings("studio", False)
    assert not await store.has_readings("basic", True)
    assert await store.prune_readings(now - 86400) == 2
    assert await store.prune_readings(now - 86400) == 0
    assert len(await store.readings()) == 2


async def test_a_write_cancelled_at_any_moment_is_cancelled_and_leaves_the_store_working(store):
    """A stopping bot cancels its loops wherever they are, COMMIT in flight included: the caller sees its
    cancellation (not an error the rollback met, which a loop would log and go round on: the stop waited
    forever), no write problem is reported and the next write works."""
    outcomes = set()
    for turns in range(60):
        task = asyncio.create_task(store.prune_readings(time.time() - 86400))
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
            outcomes.add("done")
        except asyncio.CancelledError:
            outcomes.add("cancelled")
        assert store.write_problem() is None, (turns, store.write_problem())
        await store.record_reading(_report(), account=f"a{turns}")
    assert "cancelled" in outcomes
    assert len({r["account"] for r in await store.readings()}) == 60
    assert await store.can_write() is None


async def test_latest_report_rebuilds_the_whole_report_a_replica_read(open_stores):
    writer, reader = await open_stores(), await open_stores()
    old, new = _report("9/15 hours", ago=300), _report("2:45:30", **{"Subscription": "Standard (Active monthly)"})
    assert new.total_derived and new.message_id == "msg-77" and new.responded_at is not None
    await writer.record_reading(old, account="studio")
    await writer.record_reading(new, account="studio")
    await writer.record_reading(_report("1/15 hours", simulated=True), account="studio")
    await writer.record_reading(_report("5/15 hours"), account="other")

    rebuilt = await reader.latest_report("studio", simulated=False, max_age=600)
    assert rebuilt == new, "every field parse_result gave, in upstream order, read_at to the microsecond"
    assert rebuilt.fields == new.fields and list(dict(rebuilt.fields)) == list(dict(new.fields))
    assert rebuilt.headline == "2.76 h of ~15 h left" and rebuilt.to_json() == new.to_json()
    assert (await reader.latest_report("studio", simulated=True, max_age=600)).remaining.value == 1.0
    assert await reader.latest_report("studio", simulated=False, max_age=60) == new
    await writer.prune_readings(new.read_at.timestamp() + 1e-3)
    assert await reader.latest_report("studio", simulated=False, max_age=60) is None
    await writer.record_reading(_report("4/15 hours", ago=120), account="studio")
    assert await reader.latest_report("studio", simulated=False, max_age=60) is None, "older than max_age"
    assert (await reader.latest_report("studio", simulated=False, max_age=600)).remaining.value == 4.0
    await writer.record_history("demo", [(time.time() - 10, 3.0, 15.0, None)], simulated=True)
    assert await reader.latest_report("demo", simulated=True, max_age=600) is None, "no fields: not a whole report"


async def test_job_durations_newest_first_per_account_and_provider_and_bounded(store, monkeypatch):
    import bot.stores.timings as timings

    monkeypatch.setattr(timings, "KEEP_JOB_DURATIONS", 4)
    assert await store.job_durations("studio", "useapi") == []
    for seconds in (31.5, 22.0, 47.25):
        await store.record_job_duration("studio", "useapi", seconds)
    await store.record_job_duration("studio", "linkr", 9.0)
    await store.record_job_duration("lab", "useapi", 60)
    assert await store.job_durations("studio", "useapi") == [47.25, 22.0, 31.5]
    assert await store.job_durations("studio", "useapi", limit=2) == [47.25, 22.0]
    assert await store.job_durations("studio", "linkr") == [9.0]
    assert await store.job_durations("lab", "useapi") == [60.0]
    for seconds in (1.0, 2.0, 3.0):
        await store.record_job_duration("studio", "useapi", seconds)
    assert await store.job_durations("studio", "useapi") == [3.0, 2.0, 1.0, 47.25], "only the newest are kept"
    assert await store.job_durations("studio", "linkr") == [9.0]


# --- schedules, runs, alerts, revision -----------------------------------------------------------

async def test_schedules_and_runs(store):
    one = await store.add_schedule("slack", "C01", "every 6h", "UTC", "chat", 0.0, "U1")
    assert isinstance(one, ScheduleRow) and one.failing is None and one.created_at == pytest.approx(time.time(), abs=5)
    await store.add_schedules([("discord", "42", "daily 09:00", "UTC", "config", 10.0),
                               ("slack", "C02", "every 1h", "UTC", "config", 20.0)])
    assert [r.channel for r in await store.schedules()] == ["C01", "42", "C02"]
    assert [r.channel for r in await store.schedules("slack")] == ["C01", "C02"]
    two = (await store.schedules("discord"))[0]
    await store.set_timezone(two.id, "Europe/Berlin")
    await store.set_failing(two.id, "missing_access")
    assert (await store.schedules("discord"))[0].timezone == "Europe/Berlin"
    assert (await store.schedules("discord"))[0].failing == "missing_access"
    await store.set_failing(two.id, None)
    assert (await store.schedules("discord"))[0].failing is None

    assert await store.claim([(one.id, 100.0), (one.id, 200.5), (two.id, 100.0), (9999, 1.0)]) == {
        (one.id, 100.0), (one.id, 200.5), (two.id, 100.0)}, "a run of an unknown schedule is never claimed"
    assert await store.claim([(one.id, 100.0), (one.id, 300.0)]) == {(one.id, 300.0)}
    assert await store.claim([]) == set()
    await store.finish([(one.id, 100.0, "posted"), (one.id, 200.5, "failed: missing_access")])
    runs = await store.runs(one.id)
    assert [(due, result) for due, _, result in runs] == [(100.0, "posted"), (200.5, "failed: missing_access"),
                                                          (300.0, "claimed")]
    assert runs[0][1] == pytest.approx(time.time(), abs=5) and runs[2][1] is None
    assert all(type(r) is tuple for r in runs)
    assert await store.last_claimed() == {one.id: 300.0, two.id: 100.0}

    assert not await store.remove_schedule(one.id, "discord"), "the platform must match"
    assert await store.remove_schedule(one.id, "slack")
    assert not await store.remove_schedule(one.id)
    assert await store.runs(one.id) == [] and await store.last_claimed() == {two.id: 100.0}, "runs go with it"


async def test_alerts_lifecycle(store):
    added = await store.add_alerts([("slack", "C01", "", "20%", "config", ""),
                                    ("discord", "42", "studio", "5h", "chat", "U9")])
    assert [type(a) for a in added] == [AlertRow, AlertRow] and added[0].id != added[1].id
    assert await store.alerts() == added
    assert await store.alerts("discord") == [added[1]]
    first, second = added
    assert await store.claim_alerts([(first.id, 1000.0, 1.9e9, '{"n": 1}'), (second.id, 1000.0, None, "m")]) == {
        first.id, second.id}
    assert await store.claim_alerts([(first.id, 1001.0, None, "again")]) == set(), "pending is not armed"
    await store.alerts_posted([(first.id, None), (second.id, "missing_access")])
    rows = {a.id: a for a in await store.alerts()}
    assert (rows[first.id].state, rows[first.id].fired_at, rows[first.id].fired_renewal, rows[first.id].message) == (
        "fired", 1000.0, 1.9e9, '{"n": 1}')
    assert (rows[second.id].state, rows[second.id].failing) == ("fired", "missing_access")
    await store.rearm_alerts([first.id])
    rows = {a.id: a for a in await store.alerts()}
    assert (rows[first.id].state, rows[first.id].message) == ("armed", None) and rows[second.id].state == "fired"
    assert await store.claim_alerts([(first.id, 2000.0, None, "twice")]) == {first.id}
    assert await store.add_alerts([]) == []
    assert not await store.remove_alert(first.id, "discord")
    assert await store.remove_alert(first.id, "slack") and not await store.remove_alert(first.id)
    assert [a.id for a in await store.alerts()] == [second.id]


async def test_revision_is_bumped_by_every_schedule_and_alert_change_and_seen_by_a_replica(open_stores):
    store, replica = await open_stores(), await open_stores()
    assert await store.revision() == 0
    seen = [await replica.revision()]

    async def changed() -> bool:
        now = await replica.revision()
        moved, seen[0] = now != seen[0], now
        return moved

    row = await store.add_schedule("slack", "C01", "every 6h", "UTC", "chat", 0.0)
    assert await changed()
    await store.add_schedules([("slack", "C02", "every 1h", "UTC", "config", 0.0)])
    assert await changed()
    await store.add_schedules([])
    await store.set_failing(row.id, "gone")
    await store.claim([(row.id, 1.0)])
    await store.record_reading(_report())
    assert not await changed(), "status, claims and readings are not configuration"
    await store.set_timezone(row.id, "Asia/Tokyo")
    assert await changed(), "a schedule whose times move"
    await store.set_timezone(row.id, "Asia/Tokyo")
    assert not await changed()
    [alert] = await store.add_alerts([("slack", "C01", "", "20%", "chat", "U1")])
    assert await changed()
    await store.claim_alerts([(alert.id, 1.0, None, "m")])
    assert not await changed()
    assert not await store.remove_alert(alert.id, "discord") and not await changed()
    assert await store.remove_alert(alert.id) and await changed()
    assert not await store.remove_schedule(12345) and not await changed()
    assert await store.remove_schedule(row.id) and await changed()
    assert await store.revision() == 6


async def test_claims_from_two_replicas_at_once_are_each_won_exactly_once(open_stores):
    first, second = await open_stores(), await open_stores()
    schedules = [await first.add_schedule("slack", f"C{i}", "every 1h", "UTC", "chat", 0.0) for i in range(3)]
    runs = [(s.id, 1_700_000_000.0 + 3600 * n) for s in schedules for n in range(40)]
    batches = [runs[i:i + 10] for i in range(0, len(runs), 10)]
    won = await asyncio.gather(*(store.claim(batch) for batch in batches for store in (first, second)),
                               *(store.claim(runs) for store in (second, first)))
    by_first = set().union(*won[0::2][:len(batches)], won[-1])
    by_second = set().union(*won[1::2][:len(batches)], won[-2])
    assert by_first | by_second == set(runs) and not by_first & by_second
    assert sum(len(w) for w in won) == len(runs), "no run is claimed twice"

    alerts = await first.add_alerts([("slack", "C01", "", f"{n}%", "config", "") for n in range(1, 21)])
    claims = [(a.id, 1.0, None, "m") for a in alerts]
    got = await asyncio.gather(*(store.claim_alerts(claims[i:i + 5]) for i in range(0, 20, 5)
                                 for store in (first, second)), second.claim_alerts(claims), first.claim_alerts(claims))
    ids = [alert_id for batch in got for alert_id in batch]
    assert sorted(ids) == sorted(a.id for a in alerts), "each alert claimed once, by one replica"


async def test_offered_runs_are_stored_once_and_each_taken_by_one_replica(open_stores):
    first, second = await open_stores(), await open_stores()
    schedules = [await first.add_schedule("slack", f"C{i}", "every 1h", "UTC", "chat", 0.0) for i in range(4)]
    due = 1_700_000_000.0
    runs = [(s.id, due + 3600 * n) for s in schedules for n in range(25)]
    await asyncio.gather(first.offer(runs), second.offer(runs), first.offer(runs[:10] + [(99999, due)]))
    offered = await second.unfinished_runs()
    assert sorted((sid, at) for sid, at, _, _ in offered) == sorted(runs), "stored once; a removed schedule's not"
    assert {(owner, state) for _, _, owner, state in offered} == {(None, "claimed")}, "owned by nobody yet"
    windows = [runs[i:i + 10] for i in range(0, len(runs), 10)]
    taken = await asyncio.gather(*(store.take(window, name) for window in windows
                                   for store, name in ((first, "a"), (second, "b"))))
    assert set().union(*taken) == set(runs) and sum(map(len, taken)) == len(runs), "each run taken once"
    assert await first.take(runs, "c") == set() and await first.claim(runs[:5], "c") == set()
    owners = {owner for _, _, owner, _ in await first.unfinished_runs()}
    assert owners <= {"a", "b"} and None not in owners
    mine = {key for key, name in zip(taken, ["a", "b"] * len(windows)) if name == "a" for key in key}
    assert await first.posting(sorted(mine), "a") == mine


async def test_two_replicas_offering_the_same_runs_in_opposite_orders_both_succeed(open_stores):
    first, second = await open_stores(), await open_stores()
    schedules = [await first.add_schedule("slack", f"C{i}", "every 1h", "UTC", "chat", 0.0) for i in range(50)]
    for round_ in range(3):
        runs = [(s.id, 1_700_000_000.0 + 3600 * (n + 100 * round_)) for s in schedules for n in range(40)]
        await asyncio.wait_for(asyncio.gather(first.offer(runs), second.offer(runs[::-1])), 30)
    assert len(await first.unfinished_runs()) == 3 * 2000


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_take_skips_the_runs_another_replica_is_taking_instead_of_waiting(open_stores, store_url):
    import asyncpg

    store = await open_stores()
    schedule = await store.add_schedule("slack", "C1", "every 1h", "UTC", "chat", 0.0)
    runs = [(schedule.id, 1_700_000_000.0 + 3600 * n) for n in range(10)]
    await store.offer(runs)
    other = await asyncpg.connect(store_url)  # another replica in the middle of its own take
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM runs WHERE due < $1 FOR UPDATE", runs[4][1])
            started = time.monotonic()
            taken = await asyncio.wait_for(store.take(runs, "me"), 5)
            assert time.monotonic() - started < 2, "it did not wait for the other replica's rows"
            assert taken == set(runs[4:]), "the rows being taken elsewhere are skipped"
    finally:
        await other.close()
    assert await store.take(runs, "me") == set(runs[:4]), "once the other let go, they are free again"


# --- replica primitives --------------------------------------------------------------------------

async def test_try_lock_is_exclusive_across_two_stores_and_released_on_release_or_close(open_stores):
    first, second = await open_stores(), await open_stores()
    lock = await first.try_lock("scheduler")
    assert isinstance(lock, LockHandle) and lock.held and lock.name == "scheduler"
    assert await second.try_lock("scheduler") is None
    assert await first.try_lock("scheduler") is None, "not re-entrant: one holder per name"
    other = await second.try_lock("alerts")
    assert other is not None and other.held, "another name is another lock"
    await lock.release()
    assert not lock.held
    await lock.release()  # twice is fine
    async with await second.try_lock("scheduler") as taken:
        assert taken.held and await first.try_lock("scheduler") is None
    assert not taken.held
    mine = await first.try_lock("scheduler")
    assert mine is not None
    await first.close()
    assert not mine.held
    assert await first.try_lock("scheduler") is None, "a closed store takes no lock"
    again = await second.try_lock("scheduler")
    assert again is not None and again.held, "closing a store lets go of its locks"
    await other.release()


async def test_notify_reaches_the_listeners_of_every_store_on_the_database(open_stores):
    first, second = await open_stores(), await open_stores()
    got: dict[str, list[str]] = {"first": [], "second": [], "async": []}
    done = asyncio.Event()

    async def slow(payload: str) -> None:
        got["async"].append(payload)
        done.set()

    listening = [await first.listen("quota_bot_changes", got["first"].append),
                 await second.listen("quota_bot_changes", got["second"].append),
                 await second.listen("quota_bot_changes", slow)]
    await second.listen("elsewhere", lambda payload: got["first"].append("wrong channel"))
    await first.notify("quota_bot_changes", "revision 7")
    await asyncio.wait_for(done.wait(), 5)
    await _until(lambda: got["first"] and got["second"])
    assert got == {"first": ["revision 7"], "second": ["revision 7"], "async": ["revision 7"]}

    await listening[1].close()
    await listening[1].close()
    await second.notify("quota_bot_changes", "")
    await _until(lambda: len(got["first"]) == 2 and len(got["async"]) == 2)
    assert got["second"] == ["revision 7"] and got["first"][1] == "" and got["async"][1] == ""
    with pytest.raises(ValueError):
        await first.notify("quota_bot_changes", "x" * 8000)


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# --- SQLite only: the file ------------------------------------------------------------------------

async def test_schema_is_versioned(tmp_path):
    path = tmp_path / "q.sqlite3"
    await (await Store.open(str(path))).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_old_schema_is_migrated_in_place(tmp_path):
    path = tmp_path / "q.sqlite3"
    sqlite3.connect(path).close()  # an empty database at schema 0, as a first version would leave it
    store = await Store.open(str(path))
    await store.add_schedule("discord", "1", "every 1h", "UTC", "config", 0.0)
    await store.close()


async def test_processes_racing_to_create_the_file_all_open_it(tmp_path):
    # SQLite answers "database is locked" at once (no busy wait) to the loser of the race to switch a new
    # file to WAL; before the open retried, about one round in ten failed, so 40 rounds would catch it
    for round_ in range(40):
        path = str(tmp_path / f"q{round_}.sqlite3")
        stores = await asyncio.gather(*(Store.open(path) for _ in range(3)), return_exceptions=True)
        failures = [s for s in stores if isinstance(s, BaseException)]
        for store in stores:
            if not isinstance(store, BaseException):
                await store.close()
        assert not failures, f"round {round_}: {failures[0]}"
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_file_another_process_keeps_locked_is_one_clear_line_after_waiting(tmp_path, monkeypatch):
    path = tmp_path / "q.sqlite3"
    sqlite3.connect(path).close()  # a file in SQLite's default (rollback) mode, as a first version left it
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT", 0.2)
    monkeypatch.setattr(sqlite_store, "OPEN_LOCKED_FOR", 0.5)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            await Store.open(str(path))
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(caught.value) == (f"DATABASE_URL: {path} cannot be used (database is locked); "
                                 "it was left untouched")
    assert 0.5 <= waited < 5.0
    # once the other process lets go, the file opens as usual
    await (await Store.open(str(path))).close()


@pytest.mark.parametrize("content", [b"this is not a database at all" * 10, b"SQLite format 3\x00" + b"\x00garbage" * 200])
async def test_corrupt_file_is_a_clear_error_and_left_untouched(tmp_path, content):
    path = tmp_path / "q.sqlite3"
    path.write_bytes(content)
    with pytest.raises(StoreError) as caught:
        await Store.open(str(path))
    message = str(caught.value)
    assert message.startswith(f"DATABASE_URL: {path}") and "\n" not in message
    assert path.read_bytes() == content and sorted(os.listdir(tmp_path)) == ["q.sqlite3"]


async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "q.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="written by a newer quota-bot"):
        await Store.open(str(path))


async def test_unwritable_places_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open(str(tmp_path / "missing" / "q.sqlite3"))
    with pytest.raises(StoreError, match="is a directory"):
        await Store.open(str(tmp_path))


async def test_a_removed_file_makes_the_store_unhealthy(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = await Store.open(str(path))
    try:
        assert await store.healthy() is None
        os.remove(path)
        problem = await store.healthy()
        assert problem == f"the SQLite database {path} was removed from the disk"
    finally:
        await store.close()


async def test_a_database_written_before_accounts_is_migrated_its_readings_become_the_single_account(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # exactly what quota-bot wrote at schema 1
        db.executescript(f"BEGIN; {';'.join(migrations('sqlite')[0])}; PRAGMA user_version = 1; COMMIT;")
        db.execute("INSERT INTO readings (read_at, remaining, total, percent, unit) VALUES (1.0, 3.5, 15, 23.3, 'hours')")
    store = await Store.open(str(path))
    try:
        [old] = await store.readings()
        assert old["account"] == "default" and old["remaining"] == 3.5
        new = parse_result({"content": {"Fast Time Remaining": "1/15 hours"}}, read_at=datetime.now(timezone.utc))
        await store.record_reading(new, account="studio")
        assert [r["account"] for r in await store.readings()] == ["studio", "default"]
        assert [r["remaining"] for r in await store.readings(account="studio")] == [1.0]
        assert await store.latest_report("default", False, 1e12) is None, "a reading of schema 1 is not whole"
        assert await store.revision() == 0 and await store.job_durations("default", "nextleg") == []
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8


def test_asyncpg_is_not_imported_when_the_database_is_sqlite(tmp_path):
    import ast
    import subprocess
    import sys

    code = ("import asyncio, sys\n"
            "from bot.settings import load_settings\n"
            "from bot.store import open_store\n"
            f"url = 'sqlite:///{tmp_path}/q.sqlite3'\n"
            "load_settings(None, database_url=url)\n"
            "async def main():\n"
            "    store = await open_store(url)\n"
            "    await store.add_schedule('slack', 'C1', 'every 1h', 'UTC', 'chat', 0.0)\n"
            "    await store.close()\n"
            "asyncio.run(main())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncpg', 'bot')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    loaded = ast.literal_eval(out)  # a list of module names
    assert "bot.stores.sqlite" in loaded and not [m for m in loaded if m.startswith(("asyncpg", "bot.stores.postgres"))]
