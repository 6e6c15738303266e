"""The SQLite store: versioned schema, survives restarts, refuses bad files without touching them."""

from __future__ import annotations

import os
import sqlite3

import pytest

from bot.store import SCHEMA_VERSION, Store, StoreError


async def test_store_survives_a_restart_with_schedules_and_readings(tmp_path, service):
    path = str(tmp_path / "q.sqlite3")
    store = await Store.open(path)
    row = await store.add_schedule("slack", "C01", "every 6h", "UTC", "chat", 0.0, "U1")
    await store.record_reading(await service.get_report())
    assert await store.claim([(row.id, 100.0)]) == {(row.id, 100.0)}
    await store.close()

    again = await Store.open(path)
    try:
        assert [(r.id, r.platform, r.channel, r.when_text, r.created_by) for r in await again.schedules()] == [
            (row.id, "slack", "C01", "every 6h", "U1")]
        readings = await again.readings()
        assert len(readings) == 1 and readings[0]["remaining"] == 12.06 and readings[0]["total"] == 15.0
        assert readings[0]["percent"] == 80.4 and readings[0]["unit"] == "hours" and readings[0]["job_mode"] == "Fast"
        assert readings[0]["plan"] == "Standard" and readings[0]["renewal"] > 0
        assert await again.claim([(row.id, 100.0)]) == set(), "a claimed run is never claimed again"
        assert await again.last_claimed() == {row.id: 100.0}
    finally:
        await again.close()


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


async def test_a_database_written_before_accounts_is_migrated_its_readings_become_the_single_account(tmp_path):
    from bot.store import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # exactly what quota-bot wrote at schema 1
        db.executescript(f"BEGIN; {MIGRATIONS[0]} PRAGMA user_version = 1; COMMIT;")
        db.execute("INSERT INTO readings (read_at, remaining, total, percent, unit) VALUES (1.0, 3.5, 15, 23.3, 'hours')")
    store = await Store.open(str(path))
    try:
        [old] = await store.readings()
        assert old["account"] == "default" and old["remaining"] == 3.5
        from bot.report import parse_result
        from datetime import datetime, timezone

        new = parse_result({"content": {"Fast Time Remaining": "1/15 hours"}}, read_at=datetime.now(timezone.utc))
        await store.record_reading(new, account="studio")
        assert [r["account"] for r in await store.readings()] == ["studio", "default"]
        assert [r["remaining"] for r in await store.readings(account="studio")] == [1.0]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
