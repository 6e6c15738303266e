"""``DATABASE_URL`` read into what a store needs, with no driver imported (settings validate with it).

``sqlite:///path`` → the SQLite store; ``postgresql://…`` or ``postgres://…`` → PostgreSQL in libpq's URL
form, read by pydantic's ``MultiHostUrl``. asyncpg applies the query options itself (``dsn=``: sslmode,
sslrootcert, passfile, target_session_attrs…, others become server settings); only libpq's own options
are mapped here. Which: docs/architecture.md, "The store". No message here repeats the URL (it may hold a
password).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import unquote, urlencode

from pydantic import TypeAdapter, UrlConstraints, ValidationError
from pydantic_core import MultiHostUrl

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
URL_SHAPES = ("a SQLite URL such as sqlite:///quota-bot.sqlite3 (or sqlite:////abs/path.db) or a PostgreSQL URL "
              "with a database name such as postgresql://user:password@host:5432/dbname")
PORT = "the PostgreSQL URL's port must be a number from 1 to 65535"
# libpq's options that are no server setting and that asyncpg does not read: left out, with an info log
_DROPPED = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
            "gssencmode", "channel_binding", "requiressl", "pgbouncer", "schema", "connection_limit",
            "pool_timeout", "client_encoding", "replication", "servicefile", "hostaddr", "load_balance_hosts"}
DEFAULT_CONNECT_TIMEOUT = 10.0
_URL = TypeAdapter(Annotated[MultiHostUrl, UrlConstraints(host_required=False, allowed_schemes=list(POSTGRES_SCHEMES))])


def kind(url: str) -> str:
    """``sqlite`` or ``postgresql``; ValueError (one line) for anything else."""
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        return "sqlite"
    parse_postgres_url(url)
    return "postgresql"


@dataclass(frozen=True)
class PostgresTarget:
    """Where a PostgreSQL store connects. Its repr and ``describe()`` never show the password."""

    host: str | None
    port: int | None
    database: str
    user: str | None
    password: str | None = field(repr=False)
    timeout: float
    options: tuple[tuple[str, str], ...]  # for asyncpg's own DSN parser
    server_settings: tuple[tuple[str, str], ...]  # from libpq's options=-c name=value
    dropped: tuple[str, ...]

    @property
    def where(self) -> str:
        """``host:port`` for messages (``localhost:5432`` when the URL leaves them to the defaults)."""
        return f"{self.host or 'localhost'}:{self.port or 5432}"

    def describe(self) -> str:
        return f"PostgreSQL {self.where}/{self.database}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect``/``create_pool``: where to connect as explicit arguments
        (what ``describe()`` shows is where it goes), the query's options as a DSN asyncpg reads, and the
        password on its own, never inside a DSN that an error could quote."""
        given = {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                 "dsn": "postgresql://?" + urlencode(self.options) if self.options else None,
                 "server_settings": dict(self.server_settings) or None}
        return {"database": self.database, "timeout": self.timeout, **{k: v for k, v in given.items() if v is not None}}


def parse_postgres_url(url: str) -> PostgresTarget:
    """A ``postgresql://`` or ``postgres://`` URL → ``PostgresTarget``; ValueError with one line (without
    the URL) when it cannot be used."""
    try:
        parsed = _URL.validate_python(url.strip())
    except ValidationError as exc:  # its str() quotes the input: only the parser's own phrase is used
        error = exc.errors(include_url=False, include_input=False)[0]
        reason = error.get("ctx", {}).get("error", "") if error["type"] == "url_parsing" else ""
        if reason == "invalid port number":
            raise ValueError(PORT) from None
        if reason and not reason.startswith(("relative URL", "input is empty")):
            raise ValueError(f"the PostgreSQL URL cannot be read ({reason})") from None
        raise ValueError(f"must be {URL_SHAPES}") from None
    if not str(parsed).startswith(f"{parsed.scheme}://"):
        raise ValueError(f"must be {URL_SHAPES}")
    hosts = parsed.hosts() or [{"username": None, "password": None, "host": None, "port": None}]
    query = dict(parsed.query_params())  # the last of a repeated option counts, as in libpq
    first = hosts[0]
    host = query.pop("host", "") or unquote(first["host"] or "").strip("[]")
    if len(hosts) > 1 or "," in host:  # replicas must meet on one server (locks, LISTEN)
        raise ValueError("the PostgreSQL URL must name one host (several hosts are not supported)")
    port = query.pop("port", "") or ("" if first["port"] is None else str(first["port"]))
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(PORT)
    database = query.pop("dbname", "") or query.pop("database", "") or unquote((parsed.path or "")[1:])
    if not database:
        raise ValueError(f"must be {URL_SHAPES}")
    user = query.pop("user", "") or unquote(first["username"] or "") or None
    password = query.pop("password", "") or unquote(first["password"] or "") or None
    if query.get("sslmode", "disable") not in SSLMODES:  # as libpq and asyncpg: lower case
        raise ValueError(f"the PostgreSQL URL's sslmode must be one of {', '.join(SSLMODES)}")
    timeout = _seconds(query.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    settings = _options(query.pop("options", ""))
    fallback = query.pop("fallback_application_name", "")
    if fallback and "application_name" not in query:
        query["application_name"] = fallback
    dropped = tuple(sorted(name for name in query if name in _DROPPED))
    return PostgresTarget(host=host or None, port=int(port) if port else None, database=database, user=user,
                          password=password, timeout=timeout, options=tuple((k, v) for k, v in query.items() if k not in _DROPPED),
                          server_settings=tuple(settings.items()), dropped=dropped)


def _seconds(value: str | float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise ValueError("the PostgreSQL URL's connect_timeout must be a number of seconds above 0")
    return seconds


def _options(text: str) -> dict[str, str]:
    """libpq's ``options=-c name=value -c other=value`` (also ``--name=value``) → run-time parameters."""
    found = {name: re.sub(r"\\(.)", r"\1", value)
             for name, value in re.findall(r"(?:-c\s*|--)([A-Za-z_][A-Za-z0-9_.]*)=((?:\\.|[^\s\\])*)", text)}
    if text.strip() and not found:
        raise ValueError("the PostgreSQL URL's options must be -c name=value settings")
    return found
