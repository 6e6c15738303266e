"""The store's schema: one migration history for SQLite and PostgreSQL, written once.

Each migration is SQL both databases understand, with the few words they spell differently in braces:
``{id}`` (an identity primary key), ``{real}``, ``{bigint}``, ``{bool}`` with ``{false}``, ``{json}``.
``migrations(dialect)`` renders them. Step N brings a database from schema N-1 to N; the version is kept
where each database keeps such things (SQLite's ``PRAGMA user_version``, PostgreSQL's table
``quota_bot_schema``), and both backends run the same steps in the same order, so a database of any
released version upgrades in place (tests/e2e/test_store_upgrade.py opens one of each).

Why not SQLAlchemy tables with Alembic: the two dialects differ in these six words only; the queries are
plain SQL both accept (SQLite >= 3.35 has RETURNING, ON CONFLICT and UPDATE … FROM), and the two drivers
(aiosqlite, asyncpg) already give what the store needs. A second connection layer and a folder of
Alembic scripts would cost more than the dictionary below.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["sqlite", "postgresql"]

WORDS: dict[str, dict[str, str]] = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "bigint": "INTEGER", "bool": "INTEGER",
               "false": "0", "json": "TEXT"},
    "postgresql": {"id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "real": "DOUBLE PRECISION",
                   "bigint": "BIGINT", "bool": "BOOLEAN", "false": "FALSE", "json": "JSONB"},
}

MIGRATIONS: list[str] = [
    # 1: schedules, runs (claims), readings
    """
    CREATE TABLE schedules (
        id {id},
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        when_text TEXT NOT NULL,
        timezone TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('config', 'chat')),
        anchor {real} NOT NULL,
        created_by TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        failing TEXT
    );
    CREATE INDEX schedules_platform ON schedules (platform);
    CREATE TABLE runs (
        schedule_id {bigint} NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        due {real} NOT NULL,
        claimed_at {real} NOT NULL,
        posted_at {real},
        result TEXT,
        PRIMARY KEY (schedule_id, due)
    );
    CREATE TABLE readings (
        id {id},
        read_at {real} NOT NULL,
        remaining {real},
        total {real},
        percent {real},
        unit TEXT,
        job_mode TEXT,
        plan TEXT,
        renewal {real},
        simulated {bool} NOT NULL DEFAULT {false}
    );
    CREATE INDEX readings_read_at ON readings (read_at);
    """,
    # 2: readings carry the account they are of (QUOTA_ACCOUNTS_FILE); rows written before are the
    # single account's, which is called "default"
    """
    ALTER TABLE readings ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX readings_account_read_at ON readings (account, read_at);
    """,
    # 3: low-quota alerts; state armed → pending (claimed, its message stored) → fired → armed again
    """
    CREATE TABLE alerts (
        id {id},
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        condition TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('config', 'chat')),
        created_by TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        state TEXT NOT NULL DEFAULT 'armed' CHECK (state IN ('armed', 'pending', 'fired')),
        fired_at {real},
        fired_renewal {real},
        message TEXT,
        failing TEXT
    );
    """,
    # 4: readings keep the whole report (the /info fields as a JSON list of [name, value] in upstream
    # order, and what parse_result adds), so latest_report() rebuilds what another replica read;
    # rows written before have no fields and are never rebuilt
    """
    ALTER TABLE readings ADD COLUMN fields {json};
    ALTER TABLE readings ADD COLUMN plan_status TEXT;
    ALTER TABLE readings ADD COLUMN message_id TEXT;
    ALTER TABLE readings ADD COLUMN responded_at {real};
    ALTER TABLE readings ADD COLUMN total_derived {bool} NOT NULL DEFAULT {false};
    """,
    # 5: counters; 'revision' is bumped with every schedule or alert added or removed
    """
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value {bigint} NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('revision', 0) ON CONFLICT DO NOTHING;
    """,
    # 6: how long each provider's readings took, per account (learned timing)
    """
    CREATE TABLE job_durations (
        id {id},
        account TEXT NOT NULL,
        provider TEXT NOT NULL,
        seconds {real} NOT NULL,
        recorded_at {real} NOT NULL
    );
    CREATE INDEX job_durations_account_provider ON job_durations (account, provider, id);
    """,
    # 7: a claimed run names its owner (the scheduler that claimed it: a run whose owner stopped before
    # posting it is delivered by another, bot.scheduler); result 'posting' while its post is being sent;
    # a QUOTA_SCHEDULES item is stored once, whatever the replicas starting together do (duplicates that
    # an older version let in are dropped, the oldest kept)
    """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    CREATE INDEX runs_unfinished ON runs (result) WHERE result IN ('claimed', 'posting');
    DELETE FROM schedules WHERE source = 'config' AND id NOT IN
        (SELECT MIN(id) FROM schedules WHERE source = 'config' GROUP BY platform, channel, when_text);
    CREATE UNIQUE INDEX schedules_config_item ON schedules (platform, channel, when_text) WHERE source = 'config';
    """,
    # 8: every switch of an account's speed mode (from chat or by an alert), whatever came of it
    """
    CREATE TABLE mode_switches (
        id {id},
        at {real} NOT NULL,
        account TEXT NOT NULL,
        platform TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL DEFAULT '',
        who TEXT NOT NULL DEFAULT '',
        cause TEXT NOT NULL CHECK (cause IN ('person', 'alert')),
        from_mode TEXT,
        to_mode TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX mode_switches_account_at ON mode_switches (account, at);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrations(dialect: Dialect) -> list[list[str]]:
    """Each migration as its statements in ``dialect`` (no statement holds a ';' of its own)."""
    words = WORDS[dialect]
    return [[part.strip() for part in script.format(**words).split(";") if part.strip()] for script in MIGRATIONS]


def migration(number: int, dialect: Dialect) -> str:
    """Migration ``number`` (1-based) as one script in ``dialect``."""
    return ";\n".join(migrations(dialect)[number - 1]) + ";"
