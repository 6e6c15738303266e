"""Databases written by the released quota-bots upgrade in place, on both stores (issue #26).

Each fixture (tests/fixtures/stores/, made by make_fixtures.py from the real older code of each schema
version: SQLite 1, 2, 3, 6, 7, 8; PostgreSQL 6, 7, 8 — 4 and 5 were never released) is copied or restored,
then opened with today's ``open_store``: it is migrated to ``SCHEMA_VERSION``, every row the old code wrote
reads back through today's API as the old code read it (``*.json``), the store then works, and its schema
is the schema of a database that today's code creates. (A database newer than the code is refused:
tests/e2e/test_store.py and tests/e2e/test_store_postgres.py.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from bot.report import Amount, QuotaReport
from bot.store import SCHEMA_VERSION, open_store

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "stores")
SQLITE_VERSIONS = (1, 2, 3, 6, 7, 8)
POSTGRES_VERSIONS = (6, 7, 8)
CASES = [pytest.param("sqlite", v, id=f"sqlite-{v}") for v in SQLITE_VERSIONS] + \
        [pytest.param("postgres", v, id=f"postgres-{v}") for v in POSTGRES_VERSIONS]
DUE = 1795165200.0  # make_fixtures.DUE[0]: the first run of every schedule in the fixtures
_fresh_schemas: dict[str, dict] = {}  # backend -> the schema today's code creates (once per process)


def _expected(backend: str, version: int) -> dict:
    with open(os.path.join(FIXTURES, f"{backend}_schema_{version}.json")) as handle:
        return json.load(handle)


def _restore_postgres(pg_server, version: int) -> str:
    """A fresh database holding the fixture's dump; returns its name. The dump's ``\\restrict`` lines
    (pg_dump 15.14+ and newer) are left out, so an older psql restores it too."""
    name = pg_server.create_database()
    with open(os.path.join(FIXTURES, f"postgres_schema_{version}.sql")) as handle:
        script = "".join(line for line in handle if not line.startswith(("\\restrict", "\\unrestrict")))
    done = subprocess.run([os.path.join(pg_server.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-h", pg_server.host, "-p", str(pg_server.port), "-U", "postgres", "-d", name],
                          input=script, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return name


def _old_database(request, tmp_path, backend: str, version: int) -> str:
    """DATABASE_URL of a copy of the fixture of ``version``."""
    if backend == "sqlite":
        path = tmp_path / "old.sqlite3"
        shutil.copyfile(os.path.join(FIXTURES, f"sqlite_schema_{version}.sqlite3"), path)
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == version
        return f"sqlite:///{path}"
    pg_server = request.getfixturevalue("pg_server")
    return pg_server.url(_restore_postgres(pg_server, version))


def _fields(row, expected: dict) -> dict:
    """The fields of today's row that the old version had (a field added since is not compared)."""
    plain = dataclasses.asdict(row) if dataclasses.is_dataclass(row) else dict(row)
    return {key: plain.get(key, "<missing>") for key in expected}


def _duplicates(expected: dict) -> set[int]:
    """Schema 7 keeps one stored QUOTA_SCHEDULES item of each (the oldest): the ids it drops."""
    kept: dict[tuple, int] = {}
    dropped = set()
    for row in expected["schedules"]:
        if row["source"] == "config":
            key = (row["platform"], row["channel"], row["when_text"])
            if key in kept:
                dropped.add(row["id"])
            else:
                kept[key] = row["id"]
    return dropped


def _history(readings: list[dict], account: str, simulated: bool) -> list[list]:
    """What history() answers for readings (newest first, as readings() lists them)."""
    rows = []
    for r in reversed(readings):
        if r.get("account", "default") == account and bool(r["simulated"]) == simulated and r["remaining"] is not None:
            scale = 1 / 60 if r["unit"] == "minutes" else 1.0
            rows.append([r["read_at"], r["remaining"] * scale, None if r["total"] is None else r["total"] * scale,
                         r["renewal"]])
    return rows


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


async def _schema_version(url: str, backend: str) -> int | list[int]:
    if backend == "sqlite":
        return sqlite3.connect(url[len("sqlite:///"):]).execute("PRAGMA user_version").fetchone()[0]
    conn = await asyncpg.connect(url)
    try:
        return [row[0] for row in await conn.fetch("SELECT version FROM quota_bot_schema ORDER BY version")]
    finally:
        await conn.close()


# --- the rows the old code wrote ------------------------------------------------------------------

@pytest.mark.parametrize("backend, version", CASES)
async def test_an_old_database_is_migrated_and_every_row_reads_back_as_the_old_code_read_it(request, tmp_path,
                                                                                             backend, version):
    expected = _expected(backend, version)
    url = _old_database(request, tmp_path, backend, version)
    store = await open_store(url)
    try:
        dropped = _duplicates(expected)
        assert bool(dropped) == (version < 7), "the fixtures before schema 7 hold a duplicate QUOTA_SCHEDULES item"
        # schedules (duplicates of a QUOTA_SCHEDULES item dropped by migration 7, the oldest kept)
        kept = [row for row in expected["schedules"] if row["id"] not in dropped]
        schedules = await store.schedules()
        assert [_fields(row, want) for row, want in zip(schedules, kept)] == kept and len(schedules) == len(kept)
        for platform in ("discord", "slack"):
            assert [s.id for s in await store.schedules(platform)] == [r["id"] for r in kept if r["platform"] == platform]
        # runs: each schedule's, and none left of a dropped one (they go with it)
        for sid, runs in expected["runs"].items():
            assert [list(r) for r in await store.runs(int(sid))] == ([] if int(sid) in dropped else runs)
        assert await store.last_claimed() == {int(k): v for k, v in expected["last_claimed"].items()
                                              if int(k) not in dropped}
        unfinished = expected.get("unfinished_runs") or sorted(
            [int(sid), due, None, result] for sid, runs in expected["runs"].items() if int(sid) not in dropped
            for due, _, result in runs if result in ("claimed", "posting"))
        assert [list(r) for r in await store.unfinished_runs()] == unfinished
        assert [r[2:] for r in unfinished] == ([[None, "claimed"]] if version < 7 else
                                              [["replica-a", "claimed"], ["replica-b", "posting"], [None, "claimed"]])

        # readings: all of them; rows from before accounts (schema 2) are the single account's, "default"
        readings = await store.readings(limit=1000)
        want = [{**r, "account": r.get("account", "default")} for r in expected["readings"]]
        assert [_fields(r, w) for r, w in zip(readings, want)] == want and len(readings) == len(want)
        accounts = sorted({r["account"] for r in want})
        for account in accounts:
            assert await store.readings(limit=1000, account=account) == [r for r in readings if r["account"] == account]
            for simulated in (False, True):
                answer = [list(row) for row in await store.history(account, 0.0, simulated)]
                assert answer == expected.get("history", {}).get(f"{account}/{int(simulated)}",
                                                                 _history(expected["readings"], account, simulated))
                assert await store.has_readings(account, simulated) == any(
                    bool(r["simulated"]) == simulated for r in want if r["account"] == account)
                # whole reports from schema 4 on; rows written before it have no fields and are never rebuilt
                report = await store.latest_report(account, simulated, 1e12)
                old = expected.get("latest_report", {}).get(f"{account}/{int(simulated)}")
                assert (_fields(_plain(report), old) if report else None) == old
            assert await store.latest_reading_at(account) == max(r["read_at"] for r in want if r["account"] == account)

        # alerts (schema 3): armed, pending, fired, fired whose post failed, re-armed
        alerts = await store.alerts()
        old_alerts = expected.get("alerts", [])
        assert [_fields(a, w) for a, w in zip(alerts, old_alerts)] == old_alerts and len(alerts) == len(old_alerts)
        if version >= 3:
            assert sorted({a.state for a in alerts}) == ["armed", "fired", "pending"]
        # the revision counter (schema 5: it starts at 0), learned durations (6), mode switches (8)
        assert await store.revision() == expected.get("revision", 0)
        for key, seconds in expected.get("job_durations", {"default/useapi": []}).items():
            assert await store.job_durations(*key.split("/")) == seconds
        switches = await store.mode_switches(limit=100)
        old_switches = expected.get("mode_switches", [])
        assert [_fields(s, w) for s, w in zip(switches, old_switches)] == old_switches
        assert len(switches) == len(old_switches)
    finally:
        await store.close()
    assert await _schema_version(url, backend) == (SCHEMA_VERSION if backend == "sqlite"
                                                   else list(range(1, SCHEMA_VERSION + 1)))


# --- the upgraded store works ---------------------------------------------------------------------

@pytest.mark.parametrize("backend, version", CASES)
async def test_an_upgraded_database_takes_new_schedules_runs_readings_alerts_and_switches(request, tmp_path,
                                                                                          backend, version):
    expected = _expected(backend, version)
    store = await open_store(_old_database(request, tmp_path, backend, version))
    try:
        assert await store.can_write() is None
        revision = await store.revision()
        # a new schedule: its id follows the highest ever given (the fixture removed its last one)
        highest = max(row["id"] for row in expected["schedules"]) + 1
        row = await store.add_schedule("slack", "C09", "every 2h", "UTC", "chat", 1795000000.0, created_by="U9")
        assert row.id == highest + 1
        assert await store.revision() == revision + 1
        # a QUOTA_SCHEDULES item already stored is not stored again (schema 7's unique index)
        before = await store.schedules()
        await store.add_schedules([("discord", "111", "every 6h", "UTC", "config", 0.0)])
        assert await store.schedules() == before
        # a run claimed once, by one owner, posted
        assert await store.claim([(row.id, DUE)], owner="today") == {(row.id, DUE)}
        assert await store.claim([(row.id, DUE)], owner="other") == set()
        assert await store.posting([(row.id, DUE)], "today") == {(row.id, DUE)}
        await store.finish([(row.id, DUE, "posted")])
        [(due, posted_at, result)] = await store.runs(row.id)
        assert (due, result) == (DUE, "posted") and posted_at is not None
        # the run an old version claimed and never posted (no owner before schema 7) is taken and posted
        first = expected["schedules"][0]["id"]
        old_owner = "replica-a" if version >= 7 else None
        [(stuck_due, _, _)] = [r for r in await store.runs(first) if r[2] == "claimed"]
        assert await store.take_runs([(first, stuck_due)], old_owner, "today") == {(first, stuck_due)}
        assert await store.posting([(first, stuck_due)], "today") == {(first, stuck_due)}
        await store.finish([(first, stuck_due, "posted")])
        assert (first, stuck_due) not in {(r[0], r[1]) for r in await store.unfinished_runs()}
        # a whole reading, rebuilt as it was
        now = datetime.now(timezone.utc).replace(microsecond=0)
        report = QuotaReport(remaining=Amount(7.5, "hours"), total=Amount(15.0, "hours"), percent=50.0, job_mode="Fast",
                             plan="Standard", plan_status="active", renewal=now + timedelta(days=9),
                             fields=(("Fast Time Remaining", "7.5/15.0 hours (50.00%)"),), read_at=now,
                             message_id="1190000000000000001", responded_at=now + timedelta(seconds=3))
        await store.record_reading(report, "default")
        assert await store.latest_report("default", False, 3600.0) == report
        assert (await store.readings(limit=1))[0]["read_at"] == now.timestamp()
        # an alert added, claimed, posted; an old fired one re-armed
        [alert] = await store.add_alerts([("slack", "C09", "", "10%", "chat", "U9")])
        assert await store.claim_alerts([(alert.id, now.timestamp(), None, "pool: 9 % left")]) == {alert.id}
        await store.alerts_posted([(alert.id, None)])
        fired = [a["id"] for a in expected.get("alerts", []) if a["state"] == "fired"]
        assert await store.rearm_alerts(fired) == set(fired)
        assert {a.id: a.state for a in await store.alerts()}[alert.id] == "fired"
        # learned durations and a speed-mode switch
        await store.record_job_duration("default", "useapi", 6.5)
        assert (await store.job_durations("default", "useapi"))[0] == 6.5
        switch = await store.record_mode_switch(now.timestamp(), "default", "slack", "C09", "U9", "person", "fast",
                                                "relax", "ok", "Relax mode turned on")
        assert await store.mode_switches(limit=1) == [switch]
    finally:
        await store.close()


# --- the schema is today's --------------------------------------------------------------------------

def _sql(text: str | None) -> str | None:
    """A schema statement without its layout: comments, spacing, case and IF NOT EXISTS do not count."""
    if text is None:
        return None
    text = re.sub(r"--[^\n]*", " ", text).lower()
    text = re.sub(r"\s+", " ", text).replace(" if not exists", "")
    return re.sub(r"\s*([(),])\s*", r"\1", text).strip()


def _sqlite_schema(url: str) -> dict:
    db = sqlite3.connect(url[len("sqlite:///"):])
    try:
        objects = sorted((kind, name, table, _sql(sql)) for kind, name, table, sql in
                         db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name <> 'sqlite_sequence'"))
        tables = [name for kind, name, _, _ in objects if kind == "table"]
        return {"objects": objects,
                "columns": {t: db.execute(f"PRAGMA table_info('{t}')").fetchall() for t in tables},
                "foreign_keys": {t: db.execute(f"PRAGMA foreign_key_list('{t}')").fetchall() for t in tables},
                "user_version": db.execute("PRAGMA user_version").fetchone()[0]}
    finally:
        db.close()


async def _postgres_schema(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        columns = [(r["table_name"], r["column_name"], r["data_type"], r["is_nullable"],
                    re.sub(r"nextval\('[^']*'::regclass\)", "nextval(<sequence>)", r["column_default"] or ""),
                    r["is_identity"], r["identity_generation"])
                   for r in await conn.fetch("SELECT * FROM information_schema.columns WHERE table_schema = 'public'"
                                             " ORDER BY table_name, ordinal_position")]
        indexes = sorted(tuple(r) for r in await conn.fetch(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
        constraints = sorted(tuple(r) for r in await conn.fetch(
            "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace"))
        sequences = sorted(tuple(r) for r in await conn.fetch(
            "SELECT sequencename, data_type::text, start_value, increment_by, max_value, cycle FROM pg_sequences"
            " WHERE schemaname = 'public'"))
        versions = [r[0] for r in await conn.fetch("SELECT version FROM quota_bot_schema ORDER BY version")]
        return {"columns": columns, "indexes": indexes, "constraints": constraints, "sequences": sequences,
                "versions": versions}
    finally:
        await conn.close()


async def _schema(url: str, backend: str) -> dict:
    return _sqlite_schema(url) if backend == "sqlite" else await _postgres_schema(url)


async def _fresh_schema(request, tmp_path, backend: str) -> dict:
    if backend not in _fresh_schemas:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path}/fresh.sqlite3"
        else:
            pg_server = request.getfixturevalue("pg_server")
            url = pg_server.url(pg_server.create_database())
        await (await open_store(url)).close()
        _fresh_schemas[backend] = await _schema(url, backend)
    return _fresh_schemas[backend]


@pytest.mark.parametrize("backend, version", CASES)
async def test_an_upgraded_database_has_the_schema_of_a_new_one(request, tmp_path, backend, version):
    url = _old_database(request, tmp_path, backend, version)
    await (await open_store(url)).close()
    upgraded, fresh = await _schema(url, backend), await _fresh_schema(request, tmp_path, backend)
    for part in fresh:
        assert upgraded[part] == fresh[part], f"{part} differ after upgrading from schema {version}"
