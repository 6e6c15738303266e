"""The seam between the store's parts and a database: statements written once, in ``?`` style, run by
either backend.

The parts (``readings``, ``timings``, ``schedules``, ``alerts``, ``modes``, ``coordination``) write their
SQL once; a backend implements ``Database`` and turns that SQL into its dialect (PostgreSQL: ``$1…``
placeholders; SQLite: ``IS`` for ``IS NOT DISTINCT FROM``, no row locks to skip). What differs beyond the
dialect (opening, the schema version, locks, notifications) lives in the backend's own module.
"""

from __future__ import annotations

from typing import Any, AsyncContextManager, Iterable, Protocol, Sequence

Row = Sequence[Any]
# keys per statement in ``Database.keys`` (SQLite binds two parameters a key and allows 32,766)
KEYS_PER_STATEMENT = 5000


class Executor(Protocol):
    """Statements on one connection (a transaction's, or any of the backend's for a single statement)."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> int:
        """Runs one statement; returns how many rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Database(Executor, Protocol):
    """A backend's connection(s): single statements, and transactions (``async with db.transaction() as tx``:
    committed on the way out, rolled back on an exception; a write transaction from its first statement)."""

    dialect: str
    integrity_errors: tuple[type[BaseException], ...]  # a foreign key or unique index refused a row

    def transaction(self) -> AsyncContextManager[Executor]: ...

    def keys(self, keys: Sequence[tuple[int, float]]) -> tuple[str, list[Any]]:
        """A ``WITH`` item ``w (k_sid, k_due) AS (…)`` holding the (schedule id, due) keys, and its parameters
        (at most ``KEYS_PER_STATEMENT`` keys)."""
        ...


def marks(count: int) -> str:
    """``?, ?, ?`` for an ``IN (…)`` of ``count`` values."""
    return ", ".join("?" * count)


def chunks(items: Sequence[Any], size: int = KEYS_PER_STATEMENT) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def unique_keys(runs: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    """(schedule id, due) keys, each once, as the database stores them, sorted: two replicas writing the
    same rows at once (their offers of one moment's runs) meet them in one order, so neither waits for a
    row the other waits for (a deadlock PostgreSQL would end by failing one)."""
    return sorted({(int(sid), float(due)) for sid, due in runs})
