"""The ledger's table: its schema and migrations, and the transaction that writes rows.

`write_rows` commits a batch of rows in one transaction. A row the database cannot take (a
value of the wrong type, an integer SQLite cannot hold, a constraint) is refused alone: the
transaction is started again row by row and every other row is committed. A failure of the
database itself (locked past the busy timeout, a disk error, a missing table) fails the
whole batch, and nothing of it is committed.

Counts are stored within `MAX_STORED_COUNT` (`storable_count` clamps them): a larger count
cannot be true, and the report's sums must stay exact.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final

__all__ = [
    "COLUMNS",
    "INSERT",
    "LedgerError",
    "MAX_STORED_COUNT",
    "MIGRATIONS",
    "ROW_ERRORS",
    "SCHEMA_VERSION",
    "SELECT",
    "TABLE",
    "migrate",
    "storable_count",
    "storable_seconds",
    "write_rows",
]

TABLE: Final = "usage_entries"
COLUMNS: Final = (
    "id",
    "at",
    "provider",
    "model",
    "tags",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_pico",
    "cost_text",
    "estimated",
    "status",
    "error_code",
    "duration",
    "request_id",
)
INSERT: Final = (
    f"INSERT OR IGNORE INTO {TABLE} ({', '.join(COLUMNS)}) "  # noqa: S608 - constants only
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)
SELECT: Final = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - constants only

MAX_STORED_COUNT: Final = 2**53 - 1
"""The largest token count stored: no provider reports more (the largest integer a JSON
number carries exactly), and 1,024 such rows still sum within SQLite's 64-bit integers
(beyond that a report sums exactly in Python)."""

ROW_ERRORS: Final = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    OverflowError,
    ValueError,
    TypeError,
)
"""What one row can cause (as opposed to the database failing): that row is refused alone."""


class LedgerError(Exception):
    """The ledger's database failed (cannot be opened, is newer than this code, a disk error).

    The SQLite error is the ``__cause__``.
    """


def storable_count(value: int) -> int:
    """``value`` within 0 and `MAX_STORED_COUNT`."""
    if value < 0:
        return 0
    return MAX_STORED_COUNT if value > MAX_STORED_COUNT else value


def storable_seconds(value: float, default: float) -> float:
    """``value`` if it is a finite, non-negative number of seconds, else ``default``."""
    return value if math.isfinite(value) and value >= 0 else default


def _schema_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"""CREATE TABLE {TABLE} (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            at REAL NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '{{}}',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            cost_pico INTEGER,
            cost_text TEXT,
            estimated INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            error_code TEXT,
            duration REAL NOT NULL DEFAULT 0,
            request_id TEXT
        )"""
    )
    conn.execute(f"CREATE INDEX {TABLE}_at ON {TABLE} (at)")
    conn.execute(f"CREATE INDEX {TABLE}_provider_model ON {TABLE} (provider, model, at)")


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (_schema_1,)
"""Step ``i`` takes the schema from version ``i`` to ``i + 1`` (version 0: an empty file).
Add a step to change the schema; never edit a released one."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this code writes (SQLite's ``PRAGMA user_version``)."""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to `SCHEMA_VERSION` in one transaction.

    Raises:
        LedgerError: the database's schema is newer than this code's.
        sqlite3.Error: the database failed.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger's schema version {version} is newer than this code's "
                f"({SCHEMA_VERSION}); upgrade llm-invocation to open it"
            )
        for step in MIGRATIONS[version:]:
            step(conn)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def write_rows(
    conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]
) -> list[tuple[int, Exception]]:
    """Commit ``rows`` in one transaction; return the rows refused, by index, with why.

    Raises:
        sqlite3.Error: the database failed; nothing was committed.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        refused: list[tuple[int, Exception]] = []
        try:
            conn.executemany(INSERT, rows)
        except ROW_ERRORS:
            # One row cannot be stored: start again row by row, so that it is refused alone.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            for index, row in enumerate(rows):
                try:
                    conn.execute(INSERT, row)
                except ROW_ERRORS as exc:
                    refused.append((index, exc))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return refused
