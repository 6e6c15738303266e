"""What only the PostgreSQL store has: DATABASE_URL's PostgreSQL form, one-line start-up errors that
never show the password, migrations of an older database, and the server going away and coming back.
All against the session's real server (``pg_server``, tests/pg.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from bot.replicas import LEASE_RETRY
from bot.settings import SettingsError, load_settings
from bot.store import SCHEMA_VERSION, PostgresStore, StoreError, open_store
from bot.stores.schema import migration
from bot.stores.dsn import SSLMODES, parse_postgres_url
from tests.pg import PASSWORD, PASSWORD_USER, PostgresNotFound, find_bindir
from tests.ports import refusing_port


def _no_password_anywhere(password: str, caplog, *texts: str) -> None:
    for text in (*texts, caplog.text):
        assert password not in text


# --- start-up errors, one line each, never the password -----------------------------------------

async def test_an_unreachable_server_is_one_line_naming_host_and_port(caplog):
    with refusing_port() as port, pytest.raises(StoreError) as caught:
        await open_store(f"postgres://quota:{PASSWORD}@127.0.0.1:{port}/quota?connect_timeout=5")
    assert str(caught.value) == f"DATABASE_URL: cannot reach the PostgreSQL server at 127.0.0.1:{port} (connection refused)"
    _no_password_anywhere(PASSWORD, caplog, str(caught.value), repr(caught.value))


@pytest.mark.parametrize("user, password, dbname, reason", [
    (PASSWORD_USER, "wrong-" + PASSWORD, None, f'password authentication failed for user "{PASSWORD_USER}"'),
    (PASSWORD_USER, None, None, f'password authentication failed for user "{PASSWORD_USER}"'),
    ("nobody", PASSWORD, None, 'role "nobody" does not exist'),
    (PASSWORD_USER, PASSWORD, "no_such_db", 'database "no_such_db" does not exist'),
])
async def test_a_refused_login_is_one_line_without_the_password(pg_server, caplog, monkeypatch, tmp_path, user,
                                                                  password, dbname, reason):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    url = pg_server.url(dbname or pg_server.create_database(), user=user, password=password)
    with pytest.raises(StoreError) as caught:
        await open_store(url)
    assert str(caught.value) == f"DATABASE_URL: the server refused the login ({reason})"
    _no_password_anywhere(PASSWORD, caplog, str(caught.value), repr(caught.value))


async def test_the_password_user_logs_in_and_the_password_shows_nowhere(pg_server, caplog):
    url = pg_server.url(pg_server.create_database(), user=PASSWORD_USER, password=PASSWORD)
    store = await open_store(url)
    try:
        assert isinstance(store, PostgresStore)
        await store.add_schedule("slack", "C01", "every 1h", "UTC", "chat", 0.0)
        lock = await store.try_lock("leader")  # its own connection logs in too
        assert lock is not None and lock.held
        heard: list[str] = []
        await store.listen("changes", heard.append)
        await store.notify("changes", "hello")
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert heard == ["hello"]
        shown = [store.describe(), repr(store), repr(lock), str(await store.healthy())]
        assert store.describe() == f"PostgreSQL 127.0.0.1:{pg_server.port}/{url.rsplit('/', 1)[1].split('?')[0]}"
        assert PASSWORD_USER not in store.describe()
        settings = load_settings(None, database_url=url)
        shown += [repr(settings), str(settings), repr(settings.database_url), repr(parse_postgres_url(url))]
        _no_password_anywhere(PASSWORD, caplog, *shown)
        assert settings.database_url == url and f"{settings.database_url}" == url, "the value itself is whole"
    finally:
        await store.close()


@pytest.mark.parametrize("mode", SSLMODES)
async def test_every_sslmode_reaches_asyncpg_and_one_that_needs_tls_is_one_line(pg_server, mode):
    """asyncpg reads sslmode from the URL itself: this server has no TLS, so disable, allow and prefer
    connect without it, and require, verify-ca and verify-full stop in one line."""
    url = pg_server.url(pg_server.create_database(), query=f"sslmode={mode}")
    if mode in ("disable", "allow", "prefer"):
        store = await open_store(url)
        try:
            assert await store._pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is False
        finally:
            await store.close()
        return
    with pytest.raises(StoreError) as caught:
        await open_store(url)
    message = str(caught.value)
    assert message.startswith(f"DATABASE_URL: cannot reach the PostgreSQL server at 127.0.0.1:{pg_server.port} (")
    assert "\n" not in message
    if mode == "require":
        assert "SSL" in message


async def test_a_password_with_url_characters_logs_in_and_shows_nowhere(pg_server, caplog, monkeypatch, tmp_path):
    """A password holding @ : / % + # ? & = and a space, percent-encoded in the URL, reaches the server as
    it is (%41 stays %41), and neither it nor its encoded form shows in any message, repr or log."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    odd = "p@ss:w/rd%41+x #?&=y"
    pg_server.psql(f"ALTER ROLE {PASSWORD_USER} PASSWORD '{odd}'")
    try:
        url = pg_server.url(pg_server.create_database(), user=PASSWORD_USER, password=odd)
        store = await open_store(url)
        shown = [store.describe(), repr(store), repr(parse_postgres_url(url)), repr(load_settings(None, database_url=url))]
        await store.close()
        with pytest.raises(StoreError) as caught:
            await open_store(url.replace("%2541", "%2542"))
        assert str(caught.value) == f'DATABASE_URL: the server refused the login (password authentication failed for user "{PASSWORD_USER}")'
        for secret in (odd, url.split(":")[2].split("@")[0], "rd%41", "p@ss"):
            _no_password_anywhere(secret, caplog, *shown, str(caught.value), repr(caught.value))
    finally:
        pg_server.psql(f"ALTER ROLE {PASSWORD_USER} PASSWORD '{PASSWORD}'")


async def test_a_service_file_is_read_by_asyncpg(pg_server, monkeypatch, tmp_path):
    """service= is handed to asyncpg, which reads the service's settings (here the password) from
    PGSERVICEFILE, as libpq does; the URL's own values come first."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    (tmp_path / "pg_service.conf").write_text(f"[quota]\npassword={PASSWORD}\nsslmode=require\n")
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    url = pg_server.url(pg_server.create_database(), user=PASSWORD_USER, query="sslmode=disable&service=quota")
    store = await open_store(url)
    await store.close()


async def test_a_database_of_a_newer_quota_bot_is_refused_by_every_replica(pg_server, pg_url):
    await (await open_store(pg_url)).close()
    pg_server.psql(f"INSERT INTO quota_bot_schema (version) VALUES ({SCHEMA_VERSION + 3})", pg_url.rsplit("/", 1)[1].split("?")[0])
    results = await asyncio.gather(open_store(pg_url), open_store(pg_url), return_exceptions=True)
    for result in results:
        assert isinstance(result, StoreError)
        assert str(result) == (f"DATABASE_URL: the PostgreSQL database 127.0.0.1:{pg_server.port}/"
                               f"{pg_url.rsplit('/', 1)[1].split('?')[0]} was written by a newer quota-bot "
                               f"(schema {SCHEMA_VERSION + 3}, this one knows {SCHEMA_VERSION})")


async def test_a_database_at_schema_3_is_migrated_in_place_keeping_its_rows(pg_server, pg_url):
    dbname = pg_url.rsplit("/", 1)[1].split("?")[0]
    for number in (1, 2, 3):
        pg_server.psql(migration(number, "postgresql"), dbname)
    pg_server.psql("CREATE TABLE quota_bot_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL"
                   " DEFAULT now()); INSERT INTO quota_bot_schema (version) VALUES (1), (2), (3);"
                   " INSERT INTO readings (read_at, remaining, total, unit, account) VALUES (1.0, 3.5, 15, 'hours', 'x');"
                   " INSERT INTO alerts (platform, channel, condition, source, created_at) VALUES ('slack', 'C1', '20%',"
                   " 'chat', 1.0)", dbname)
    store = await open_store(pg_url)
    try:
        assert [(r["account"], r["remaining"], r["simulated"]) for r in await store.readings()] == [("x", 3.5, 0)]
        assert [a.condition for a in await store.alerts()] == ["20%"]
        assert await store.revision() == 0 and await store.latest_report("x", False, 1e12) is None
        await store.record_job_duration("x", "useapi", 12.5)
        assert await store.job_durations("x", "useapi") == [12.5]
    finally:
        await store.close()
    assert pg_server.psql("SELECT MAX(version) FROM quota_bot_schema", dbname) == str(SCHEMA_VERSION)


# --- DATABASE_URL's PostgreSQL form --------------------------------------------------------------

def test_the_url_options_become_asyncpg_arguments():
    """Where to connect and the password as arguments of their own (what describe() shows is where it
    goes); the rest of the query as a DSN that asyncpg reads itself; libpq's own options mapped or dropped."""
    target = parse_postgres_url(
        "postgres://bot%40team:p%2Fss%3Aword@db.example.com:6543/quota%20db?sslmode=verify-full&application_name=quota-bot"
        "&connect_timeout=3&options=-c%20statement_timeout%3D5000%20-c%20search_path%3Dquota&keepalives=1"
        "&sslrootcert=%2Fetc%2Fca%20file.pem&target_session_attrs=read-write")
    assert target.connect_kwargs() == {
        "host": "db.example.com", "port": 6543, "user": "bot@team", "password": "p/ss:word", "database": "quota db",
        "timeout": 3.0, "server_settings": {"statement_timeout": "5000", "search_path": "quota"},
        "dsn": "postgresql://?sslmode=verify-full&application_name=quota-bot&sslrootcert=%2Fetc%2Fca+file.pem"
               "&target_session_attrs=read-write"}
    assert target.dropped == ("keepalives",)
    assert target.describe() == "PostgreSQL db.example.com:6543/quota db"
    assert "p/ss:word" not in repr(target) and "p%2Fss" not in repr(target)
    plain = parse_postgres_url("postgresql://u@h/db").connect_kwargs()
    assert plain == {"host": "h", "user": "u", "database": "db", "timeout": 10.0}, "asyncpg's defaults otherwise"
    for socket_url in ("postgresql:///db?host=/run/postgresql&port=5433", "postgresql://%2Frun%2Fpostgresql:5433/db"):
        socket_target = parse_postgres_url(socket_url)
        assert socket_target.connect_kwargs() == {"host": "/run/postgresql", "port": 5433, "database": "db",
                                                  "timeout": 10.0}
        assert socket_target.describe() == "PostgreSQL /run/postgresql:5433/db"
    assert parse_postgres_url("postgresql://[::1]/db").connect_kwargs()["host"] == "::1"
    assert parse_postgres_url("postgresql://h/?dbname=q&fallback_application_name=a").connect_kwargs() == {
        "host": "h", "database": "q", "timeout": 10.0, "dsn": "postgresql://?application_name=a"}
    given = parse_postgres_url("postgresql://h/db?fallback_application_name=a&application_name=b&password=se%26cret")
    assert given.connect_kwargs()["dsn"] == "postgresql://?application_name=b" and given.password == "se&cret"


@pytest.mark.parametrize("url, message", [
    ("postgres://u:secret-pw@h:5432", "must be a SQLite URL such as sqlite:///quota-bot.sqlite3"),
    ("postgres://u:secret-pw@h:port/db", "the PostgreSQL URL's port must be a number from 1 to 65535"),
    ("postgres://u:secret-pw@h:70000/db", "the PostgreSQL URL's port must be a number from 1 to 65535"),
    ("postgres://u:secret-pw@h/db?sslmode=maybe", "the PostgreSQL URL's sslmode must be one of disable, allow, prefer,"),
    ("postgres://u:secret-pw@h/db?connect_timeout=soon", "the PostgreSQL URL's connect_timeout must be a number"),
    ("postgres://u:secret-pw@h1:5432,h2:5432/db", "the PostgreSQL URL must name one host"),
    ("postgres://u:secret-pw@h/db?host=h1,h2", "the PostgreSQL URL must name one host"),
    ("mysql://u:secret-pw@h/db", "must be a SQLite URL"),
    ("postgres:/u:secret-pw@h/db", "must be a SQLite URL"),
    ("postgres://u:secret-pw@h:0/db", "the PostgreSQL URL's port must be a number from 1 to 65535"),
    ("postgres://u:secret-pw@h/db?port=5432x", "the PostgreSQL URL's port must be a number from 1 to 65535"),
    ("postgres://u:secret-pw@h/db?sslmode=REQUIRE", "the PostgreSQL URL's sslmode must be one of disable, allow,"),
    ("postgres://u:secret-pw@db host/db", "the PostgreSQL URL cannot be read (invalid domain character)"),
    ("postgres://u:secret-pw@h/db?options=statement_timeout", "the PostgreSQL URL's options must be -c name=value"),
])
async def test_a_malformed_url_is_one_line_without_the_password_in_settings_and_store(url, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(None, database_url=url)
    assert str(caught.value).startswith(f"DATABASE_URL: {message}")
    assert "secret-pw" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StoreError) as opened:
        await open_store(url)
    assert "secret-pw" not in str(opened.value) and str(opened.value).startswith("DATABASE_URL: ")


def test_settings_tell_the_kind_of_database():
    sqlite = load_settings(None, database_url="sqlite:///q.sqlite3")
    assert (sqlite.database_kind, sqlite.database_path) == ("sqlite", "q.sqlite3")
    for url in ("postgres://u:pw@h/db", "postgresql://h:5432/db?sslmode=require"):
        pg = load_settings(None, database_url=url)
        assert (pg.database_kind, pg.database_path, pg.database_url) == ("postgresql", None, url)


async def test_query_options_reach_the_server(pg_server, pg_url):
    store = await open_store(pg_url.replace("postgresql://", "postgres://") + "&application_name=quota-bot-replica-7"
                             "&options=-c%20statement_timeout%3D4321")
    try:
        seen = pg_server.psql("SELECT DISTINCT application_name FROM pg_stat_activity"
                              " WHERE application_name = 'quota-bot-replica-7'")
        assert seen == "quota-bot-replica-7"
        assert await store._pool.fetchval("SHOW statement_timeout") == "4321ms"
    finally:
        await store.close()


async def test_check_says_the_store_can_write_and_a_read_only_login_fails_in_one_line(pg_server, pg_url, tmp_path):
    from tests.fakes.cli import clean_env, run_cli

    store = await open_store(pg_url)  # migrated: the database a running bot leaves behind
    assert await store.can_write() is None
    await store.close()
    code, out, err = await run_cli("check", cwd=tmp_path, env=clean_env(DATABASE_URL=pg_url))
    assert code == 0 and "[ok  ] database PostgreSQL 127.0.0.1:" in out and ": can write; 0 schedule(s)" in out, out + err
    # a login whose transactions are read-only (as on a read replica): one line, and check fails
    read_only = pg_url + "&options=-c%20default_transaction_read_only%3Don"
    code, out, err = await run_cli("check", cwd=tmp_path, env=clean_env(DATABASE_URL=read_only))
    [line] = [line for line in out.splitlines() if "DATABASE_URL" in line]
    assert code == 1 and line.startswith("[FAIL] DATABASE_URL: cannot write to PostgreSQL 127.0.0.1:"), out + err
    assert "read-only transaction" in line, line
    # and `run` does not start on it: the same line, on stderr
    code, out, err = await run_cli("run", cwd=tmp_path, env=clean_env(DATABASE_URL=read_only, PORT="0"))
    assert code != 0 and line.removeprefix("[FAIL] ") in err, out + err


# --- the server goes away and comes back --------------------------------------------------------

async def test_a_restarted_server_degrades_health_drops_locks_and_listening_resumes(pg_server, pg_url):
    store, other = await open_store(pg_url), await open_store(pg_url)
    heard: list[str] = []
    try:
        await store.listen("changes", heard.append)
        lock = await store.try_lock("leader")
        assert lock.held and await store.healthy() is None
        pg_server.stop()
        try:
            problem = await store.healthy()
            assert problem and problem.startswith(f"the PostgreSQL server at 127.0.0.1:{pg_server.port} ")
            assert "\n" not in problem
            await _until(lambda: not lock.held)
            with pytest.raises(StoreError, match=r"^DATABASE_URL: cannot reach the PostgreSQL server at 127\.0\.0\.1:"):
                await store.try_lock("leader")
        finally:
            pg_server.start()
        assert await store.healthy() is None, "the pool reconnects"
        again = await other.try_lock("leader")
        assert again is not None, "a lock dies with its connection"
        await lock.release()
        await _until(lambda: store._listen_conn is not None and not store._listen_conn.is_closed()
                     and "changes" in store._listening, timeout=15)
        await other.notify("changes", "after the restart")
        await _until(lambda: heard == ["after the restart"])
    finally:
        await store.close()
        await other.close()


async def test_a_lock_is_let_go_when_its_process_dies(pg_url):
    holder = textwrap.dedent(f"""
        import asyncio, sys
        from bot.store import open_store
        async def main():
            store = await open_store({pg_url!r})
            lock = await store.try_lock("scheduler")
            print("held" if lock else "refused", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    child = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == "held"
        store = await open_store(pg_url)
        try:
            assert await store.try_lock("scheduler") is None
            child.kill()
            child.wait(10)
            deadline = time.monotonic() + 10
            while (lock := await store.try_lock("scheduler")) is None:
                assert time.monotonic() < deadline, "the dead process's lock was never let go"
                await asyncio.sleep(0.05)
            assert lock.held
        finally:
            await store.close()
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.wait()


async def test_lock_connections_ask_the_server_for_tcp_keepalives(pg_url):
    """A replica whose host vanishes never closes its connections: the server must find out by itself
    (keepalive probes) to free that replica's locks within 30 s. The lock and LISTEN connections ask
    for probes after 8 s idle, every 4 s, 3 misses; the pool's connections keep the server's defaults."""
    store = await open_store(pg_url)
    try:
        conn = await store._connect()  # what try_lock and listen open
        try:
            shown = [await conn.fetchval(f"SHOW {name}") for name in
                     ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")]
        finally:
            await conn.close()
        assert shown == ["8", "4", "3"], shown
        idle, interval, count = (int(v) for v in shown)
        assert idle + interval * count + LEASE_RETRY < 30  # a standby then tries within LEASE_RETRY: < 30 s
    finally:
        await store.close()


# --- the helper itself ---------------------------------------------------------------------------

def test_without_postgresql_binaries_the_helper_says_what_to_install(tmp_path):
    with pytest.raises(PostgresNotFound) as caught:
        find_bindir(path=str(tmp_path), roots=(str(tmp_path / "*" / "bin"),))
    assert "initdb, pg_ctl" in str(caught.value) and "apt-get install postgresql" in str(caught.value)
    (tmp_path / "16" / "bin").mkdir(parents=True)
    for tool in ("initdb", "pg_ctl"):
        (tmp_path / "16" / "bin" / tool).write_text("#!/bin/sh\n")
        (tmp_path / "16" / "bin" / tool).chmod(0o755)
    assert find_bindir(path=str(tmp_path), roots=(str(tmp_path / "*" / "bin"),)) == str(tmp_path / "16" / "bin")


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
