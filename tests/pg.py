"""A throwaway PostgreSQL server for the store's tests, started from the machine's own binaries.

``PostgresServer.start_new()`` finds ``initdb``/``pg_ctl`` (on PATH, else in
``/usr/lib/postgresql/*/bin``, Debian's place), makes a cluster in a temporary folder, and starts it on
127.0.0.1 at a free port: trust authentication for everyone but ``PASSWORD_USER``, who must give
``PASSWORD`` (for the login tests). PostgreSQL refuses to run as root: as root, the folder belongs to
the ``postgres`` user (created with ``useradd`` if missing) and the binaries run through
``runuser -u postgres --``. Durability is off (fsync, synchronous_commit): it is thrown away.

``PostgresNotFound`` says what to install when there are no binaries; the tests fail with it, they are
never skipped (CI installs Debian's ``postgresql`` package, see ``.ci/run``).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from urllib.parse import quote

SUPERUSER = "postgres"
PASSWORD_USER = "quota_pw"
PASSWORD = "pg-test-password-6c1f0e9b"  # the login tests check it never shows


class PostgresNotFound(RuntimeError):
    pass


def find_bindir(path: str | None = None, roots: tuple[str, ...] = ("/usr/lib/postgresql/*/bin",)) -> str:
    """The folder holding initdb and pg_ctl: PATH first, then the newest of ``roots``."""
    on_path = shutil.which("pg_ctl", path=path)
    if on_path and shutil.which("initdb", path=path):
        return os.path.dirname(os.path.realpath(on_path))
    found = [folder for pattern in roots for folder in glob.glob(pattern)
             if os.access(os.path.join(folder, "pg_ctl"), os.X_OK) and os.access(os.path.join(folder, "initdb"), os.X_OK)]
    if found:
        return max(found, key=_version_key)
    raise PostgresNotFound(
        "PostgreSQL's server binaries (initdb, pg_ctl) were found neither on PATH nor in "
        f"{', '.join(roots)}: the PostgreSQL store tests need them. Install them, e.g. "
        "`apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql` (macOS); .ci/run does it on CI.")


def _version_key(folder: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in folder.rstrip("/").split("/")[-2].split("."))


def _fast_folder() -> str | None:
    """/dev/shm when it is a roomy memory file system (each test database is a ~8 MB copy), else the
    usual temporary folder."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = stats.f_bavail * stats.f_frsize > 2 * 1024**3 and os.access("/dev/shm", os.W_OK)
    return "/dev/shm" if roomy else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One running cluster. ``url(dbname)``, ``create_database()``, ``stop()``/``start()``, ``destroy()``."""

    def __init__(self, bindir: str, root: str, port: int, as_postgres: bool) -> None:
        self.bindir, self.root, self.port, self._as_postgres = bindir, root, port, as_postgres
        self.data = os.path.join(root, "data")
        self.logfile = os.path.join(root, "server.log")
        self.host = "127.0.0.1"
        self._names = itertools.count(1)
        self.running = False
        self.version = 0  # server_version_num, e.g. 150018

    # --- life -----------------------------------------------------------------------------------
    @classmethod
    def start_new(cls) -> "PostgresServer":
        bindir = find_bindir()
        as_postgres = os.geteuid() == 0
        root = tempfile.mkdtemp(prefix="quota-bot-pg-", dir=_fast_folder())
        if as_postgres:
            _ensure_postgres_user()
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = cls(bindir, root, free_port(), as_postgres)
        try:
            server._initdb()
            server.start()
            server.psql(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
            server.version = int(server.psql("SHOW server_version_num"))
        except BaseException:
            server.destroy()
            raise
        return server

    def _initdb(self) -> None:
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C",
                  "--no-sync")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as hba:
            hba.write(f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
                      "host all all 127.0.0.1/32 trust\n")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
                       "shared_buffers = 32MB\npassword_encryption = 'scram-sha-256'\n")

    def start(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "30", "start")
        except RuntimeError:
            self.port = free_port()  # taken meanwhile by someone else: once more elsewhere
            with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
                conf.write(f"\nport = {self.port}\n")
            self._run("pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "30", "start")
        self.running = True

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: every session is cut, as when a managed database restarts."""
        if self.running:
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop")
            self.running = False

    def destroy(self) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- use ------------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres", *, user: str = SUPERUSER, password: str | None = None,
            scheme: str = "postgresql", query: str = "sslmode=disable") -> str:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
        return f"{scheme}://{auth}@{self.host}:{self.port}/{dbname}" + (f"?{query}" if query else "")

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database (a copy of template0, owned by ``PASSWORD_USER`` so that the login
        tests can create tables in it); returns its name."""
        name = name or f"t{os.getpid()}_{next(self._names)}"
        strategy = " STRATEGY FILE_COPY" if self.version >= 150000 else ""  # ~30 ms instead of ~150 ms
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0 OWNER {PASSWORD_USER}{strategy}')
        return name

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser; its output (tuples only, unaligned)."""
        done = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", dbname, "-c", sql],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def _run(self, tool: str, *args: str) -> None:
        command = [os.path.join(self.bindir, tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            tail = ""
            if os.path.exists(self.logfile):
                with open(self.logfile, errors="replace") as log:
                    tail = log.read()[-2000:]
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def _ensure_postgres_user() -> None:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "postgres"], check=True, capture_output=True)
