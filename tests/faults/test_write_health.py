"""Issue 20, fault 7: /healthz says ``degraded`` (with the reason) while nothing can be written, and ``ok``
again once a write succeeds.

The fault is real: a `quota-bot run` process logs in to the session's PostgreSQL server as an ordinary
login (the owner of its tables), and the test REVOKEs that login's write permission while it runs, as a
managed database does when its disk is full or it is switched to read-only, then GRANTs it back.
"""

from __future__ import annotations

import asyncio
import time

from tests.faults.test_scheduled_runs import SCHEDULED, rig, schedule_runs, slack_only  # noqa: F401 - fixture
from tests.pg import PASSWORD, PASSWORD_USER

TABLES = "ALL TABLES IN SCHEMA public"


async def wait_health(rig, replica, status: str, timeout: float = 20.0) -> dict:  # noqa: F811
    deadline = time.monotonic() + timeout
    while True:
        health = await rig.healthz(replica)
        if health["status"] == status:
            return health
        assert time.monotonic() < deadline, f"/healthz did not turn {status} within {timeout} s: {health}"
        await asyncio.sleep(0.2)


async def test_a_revoked_write_permission_turns_healthz_degraded_until_a_write_succeeds(rig, pg_server):  # noqa: F811
    dbname = pg_server.create_database()
    rig.url = pg_server.url(dbname, user=PASSWORD_USER, password=PASSWORD)
    [bot] = await rig.start(1, **slack_only(QUOTA_SCHEDULES=f"slack:{SCHEDULED}=every 2s"))
    await rig.slack.wait(lambda: True if rig.posts(SCHEDULED) else None, timeout=15)
    assert (await rig.healthz(bot))["status"] == "ok"

    await asyncio.to_thread(pg_server.psql, f"REVOKE INSERT, UPDATE, DELETE ON {TABLES} FROM {PASSWORD_USER}", dbname)
    revoked = time.time()
    health = await wait_health(rig, bot, "degraded")
    assert "write" in health["reason"] and "permission denied" in health["reason"], health
    assert PASSWORD not in str(health)
    await asyncio.sleep(3)  # runs fall due while nothing can be written: none is posted (none claimed)
    assert [at for at in rig.posts(SCHEDULED) if at > revoked + 1.0] == []
    assert (await rig.healthz(bot))["status"] == "degraded"

    await asyncio.to_thread(pg_server.psql, f"GRANT INSERT, UPDATE, DELETE ON {TABLES} TO {PASSWORD_USER}", dbname)
    granted = time.time()
    await wait_health(rig, bot, "ok")
    # the scheduled posts resume (the run that waited on its claim is posted late rather than lost)
    await rig.slack.wait(lambda: True if [at for at in rig.posts(SCHEDULED) if at > granted] else None, timeout=15)
    await rig.terminate(bot)
    text = bot.text()
    assert "the database cannot be written" in text and "the database is written again" in text
    _, runs = await schedule_runs(rig.url)
    assert [r for r in runs if r[2] in ("claimed", "posting")] == [], runs
