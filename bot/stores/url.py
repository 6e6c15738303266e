"""``DATABASE_URL`` read into what a store needs, with no driver imported (settings validate with it).

``sqlite:///path`` → the SQLite store; ``postgresql://…`` or ``postgres://…`` → PostgreSQL in libpq's
URL form. Which query options are honoured, dropped or passed on: docs/architecture.md, "The store".
No message here repeats the URL (it may hold a password).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("bot.store")

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
URL_SHAPES = ("a SQLite URL such as sqlite:///quota-bot.sqlite3 (or sqlite:////abs/path.db) or a PostgreSQL URL "
              "with a database name such as postgresql://user:password@host:5432/dbname")
# passed to asyncpg inside the DSN it parses itself (password excluded)
_DSN_OPTIONS = {"sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "ssl_min_protocol_version",
                "ssl_max_protocol_version", "target_session_attrs", "passfile", "krbsrvname", "gsslib",
                "sslnegotiation"}
_DROPPED = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
            "gssencmode", "channel_binding", "requiressl", "pgbouncer", "schema", "connection_limit",
            "pool_timeout", "client_encoding", "replication", "service", "servicefile", "hostaddr"}
DEFAULT_CONNECT_TIMEOUT = 10.0


def kind(url: str) -> str:
    """``sqlite`` or ``postgresql``; ValueError for anything else."""
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        return "sqlite"
    if url.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in url:
        parse_postgres_url(url)
        return "postgresql"
    raise ValueError(f"must be {URL_SHAPES}")


@dataclass(frozen=True)
class PostgresTarget:
    """Where a PostgreSQL store connects. Its repr and ``describe()`` never show the password."""

    host: str | None
    port: int | None
    database: str
    user: str | None
    password: str | None = field(repr=False)
    sslmode: str | None
    timeout: float
    dsn_options: tuple[tuple[str, str], ...]
    server_settings: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...]

    @property
    def where(self) -> str:
        """``host:port`` for messages (``localhost:5432`` when the URL leaves them to the defaults)."""
        return f"{self.host or 'localhost'}:{self.port or 5432}"

    def describe(self) -> str:
        return f"PostgreSQL {self.where}/{self.database}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect``/``create_pool``; the password travels as its own
        argument, never inside a DSN that an error could quote."""
        from urllib.parse import urlencode

        kwargs: dict[str, Any] = {"database": self.database, "timeout": self.timeout}
        if self.dsn_options:  # the options asyncpg reads from a DSN only (certificates and the like)
            kwargs["dsn"] = "postgresql://?" + urlencode(self.dsn_options)
        if self.host is not None:
            kwargs["host"] = self.host
        if self.port is not None:
            kwargs["port"] = self.port
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslmode is not None:
            kwargs["ssl"] = self.sslmode  # asyncpg takes libpq's sslmode names as its ssl argument
        if self.server_settings:
            kwargs["server_settings"] = dict(self.server_settings)
        return kwargs


def parse_postgres_url(url: str) -> PostgresTarget:
    """A ``postgresql://`` or ``postgres://`` URL → ``PostgresTarget``; ValueError with one line (without
    the URL) when it cannot be used."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in POSTGRES_SCHEMES:
        raise ValueError(f"must be {URL_SHAPES}")
    try:
        parts = urlsplit(url.strip())
        if "," in parts.netloc.rpartition("@")[2]:
            raise ValueError("the PostgreSQL URL must name one host (several hosts are not supported)")
        port = parts.port
    except ValueError as exc:
        if "one host" in str(exc):
            raise
        raise ValueError("the PostgreSQL URL's port must be a number from 1 to 65535") from None
    query: dict[str, str] = {}
    try:
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
            query[key] = value
    except ValueError:
        raise ValueError("the PostgreSQL URL's options (after ?) are malformed; write them as name=value&name=value") from None
    host = unquote(parts.hostname) if parts.hostname else None
    if "host" in query:
        host = query.pop("host") or host
    if "port" in query:
        text = query.pop("port")
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError("the PostgreSQL URL's port must be a number from 1 to 65535")
        port = int(text)
    if port is not None and not 0 < port < 65536:
        raise ValueError("the PostgreSQL URL's port must be a number from 1 to 65535")
    database = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    database = query.pop("dbname", "") or query.pop("database", "") or database
    if not database:
        raise ValueError(f"must be {URL_SHAPES}")
    user = unquote(parts.username) if parts.username else None
    user = query.pop("user", None) or user
    password = unquote(parts.password) if parts.password is not None else None
    password = query.pop("password", None) or password
    sslmode = query.pop("sslmode", None)
    if sslmode is not None and sslmode.lower() not in SSLMODES:
        raise ValueError(f"the PostgreSQL URL's sslmode must be one of {', '.join(SSLMODES)}")
    timeout = DEFAULT_CONNECT_TIMEOUT
    if "connect_timeout" in query:
        text = query.pop("connect_timeout")
        try:
            timeout = float(text)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 3600:
            raise ValueError("the PostgreSQL URL's connect_timeout must be a number of seconds above 0")
    dsn_options = tuple((k, query.pop(k)) for k in sorted(_DSN_OPTIONS & query.keys()))
    settings: dict[str, str] = {}
    if "options" in query:
        settings.update(_options(query.pop("options")))
    fallback = query.pop("fallback_application_name", None)
    dropped = tuple(sorted(k for k in list(query) if k in _DROPPED and query.pop(k) is not None))
    settings.update(query)  # application_name and run-time parameters such as statement_timeout
    if fallback and "application_name" not in settings:
        settings["application_name"] = fallback
    return PostgresTarget(host=host, port=port, database=database, user=user, password=password,
                          sslmode=sslmode.lower() if sslmode else None, timeout=timeout, dsn_options=dsn_options,
                          server_settings=tuple(settings.items()), dropped=dropped)


def _options(text: str) -> dict[str, str]:
    """libpq's ``options=-c name=value -c other=value`` (also ``--name=value``) → run-time parameters."""
    found: dict[str, str] = {}
    for match in re.finditer(r"(?:-c\s*|--)([A-Za-z_][A-Za-z0-9_.]*)=((?:\\.|[^\s\\])*)", text):
        found[match.group(1)] = re.sub(r"\\(.)", r"\1", match.group(2))
    if text.strip() and not found:
        raise ValueError("the PostgreSQL URL's options must be -c name=value settings")
    return found
