"""The durable usage ledger: one SQLite row per settled invocation, and reports over them.

::

    async with open_ledger("usage.sqlite") as ledger:      # None: in memory
        await ledger.append(LedgerEntry.from_usage(usage, provider="openai", model="gpt-4o"))
        rows = await ledger.entries(since=time.time() - 3600, tags={"team": "search"})
        report = await ledger.report(("provider", "model"), since=start_of_month)
        print(report.to_table())

Durability: `SQLiteLedger.append` returns only once the row is committed. The database runs in
WAL mode with ``synchronous=NORMAL``: a committed row survives the process being killed
(SIGKILL included) because the WAL is written before the commit returns; only a power loss or
an OS crash can lose the last commits. Pass ``synchronous="FULL"`` to survive those too, at
the price of an fsync per commit.

Group commit: appends that arrive while a commit is in progress wait for it and then go into
the next transaction together, so 1,000 concurrent appends cost two or three commits, not
1,000. The first append of a batch leads it: it waits (shielded from cancellation, as the
thread doing the work cannot be interrupted anyway) for the previous commit, takes every
entry that joined meanwhile and commits them in one transaction; the others wait for that
commit. A cancelled append may therefore still be committed. Appending an entry whose
``id`` is already in the ledger does nothing (``INSERT OR IGNORE``): a retried append is
harmless.

Threads: sqlite3 blocks, so all database work runs in trio's worker threads through
`trio.to_thread.run_sync`, each connection behind its own ``CapacityLimiter(1)``. trio may
pick a different cached thread each time, so connections are opened with
``check_same_thread=False``; the limiter guarantees that only one thread uses a connection at
any moment. This was chosen over a dedicated thread with a queue because it needs no thread
lifecycle of its own, cancels cleanly and reuses trio's thread cache (a hop costs about the
same). A file database has two connections: one commits, the other runs `SQLiteLedger.entries`
and `SQLiteLedger.report`, so a long report never holds up the commits that settling
invocations wait for (WAL lets a reader and a writer run at once). An in-memory database is
private to its one connection, so there queries queue behind commits in arrival order.

Storage: one table, ``usage_entries``, with indexes on ``at`` and on ``(provider, model,
at)``. Tags are a JSON object in a ``tags`` column, read with ``json_extract``: every row is
written in one ``INSERT`` (no side table to keep in step inside the group commit), filters on
time and provider use the indexes first, and a report reads every row of its range anyway,
where ``json_extract`` costs well under a microsecond per row. (An expression index such as
``CREATE INDEX ... ON usage_entries(json_extract(tags, '$."team"'))`` would speed up
filtering on one hot tag.) Costs are stored exactly, as integer 10**-12 units or, when a cost
is finer than that, as decimal text (see `llm_invocation.store._report`); sums are exact
`~decimal.Decimal` values. The schema version is SQLite's ``user_version``; opening a database
runs the missing steps of ``_MIGRATIONS`` in one transaction, and refuses a newer one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar, cast, final, get_args

import msgspec
import trio

from ._report import (
    ExactSum,
    UsageReport,
    UsageReportRow,
    build_report_query,
    decode_cost,
    encode_cost,
    is_overflow,
    report_rows,
    where_clause,
)

if TYPE_CHECKING:
    from ..types import Usage

__all__ = [
    "SCHEMA_VERSION",
    "LedgerEntry",
    "LedgerError",
    "LedgerStatistics",
    "SQLiteLedger",
    "Status",
    "UsageReport",
    "UsageReportRow",
    "new_entry_id",
    "open_ledger",
]

_log = logging.getLogger("llm_invocation.store.ledger")

Status = Literal["ok", "error", "cancelled"]
_STATUSES: Final = frozenset(get_args(Status))

_T = TypeVar("_T")


def new_entry_id() -> str:
    """Return a new entry id: 32 hex digits that sort by creation time (like a UUIDv7).

    The first 12 digits are the unix time in milliseconds, the other 20 are random.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@final
class LedgerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One settled invocation.

    Attributes:
        id: unique; appending an id that is already in the ledger does nothing.
        at: when the invocation settled, in unix time.
        provider: our provider name.
        model: the model name.
        tags: free-form labels (team, user, feature) that reports can group by.
        prompt_tokens: input tokens, cache reads and writes included.
        completion_tokens: output tokens, reasoning included.
        cache_read_tokens / cache_write_tokens / reasoning_tokens: the parts above.
        cost: the exact cost; None when unknown.
        estimated: the token counts were estimated locally.
        status: ``"ok"``, ``"error"`` or ``"cancelled"``.
        error_code: the `~llm_invocation.errors.ErrorCode` value of a failed call.
        duration: how long the invocation took, in seconds.
        request_id: the provider's request id, when it sent one.
    """

    id: str = msgspec.field(default_factory=new_entry_id)
    at: float = msgspec.field(default_factory=time.time)
    provider: str
    model: str
    tags: dict[str, str] = {}
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal | None = None
    estimated: bool = False
    status: Status = "ok"
    error_code: str | None = None
    duration: float = 0.0
    request_id: str | None = None

    @classmethod
    def from_usage(
        cls,
        usage: Usage,
        *,
        provider: str,
        model: str,
        tags: Mapping[str, str] | None = None,
        status: Status = "ok",
        error_code: str | None = None,
        duration: float = 0.0,
        request_id: str | None = None,
        at: float | None = None,
        entry_id: str | None = None,
    ) -> LedgerEntry:
        """Return the entry of an invocation with this usage (its tokens, cost, estimated)."""
        return cls(
            id=entry_id or new_entry_id(),
            at=time.time() if at is None else at,
            provider=provider,
            model=model,
            tags=dict(tags or {}),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost=usage.cost,
            estimated=usage.estimated,
            status=status,
            error_code=error_code,
            duration=duration,
            request_id=request_id,
        )


@final
class LedgerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What a ledger has done since it was opened.

    Attributes:
        path: the database file; None in memory.
        appended: entries committed by `SQLiteLedger.append`.
        commits: transactions committed for them (group commit makes it much smaller).
        largest_batch: the most entries committed in one transaction.
        pending: entries waiting for their commit now.
        closed: whether `SQLiteLedger.aclose` was called.
    """

    path: str | None
    appended: int
    commits: int
    largest_batch: int
    pending: int
    closed: bool


class LedgerError(Exception):
    """The ledger's database failed (cannot be opened, is newer than this code, a disk error).

    The SQLite error is the ``__cause__``.
    """


_TABLE: Final = "usage_entries"
_COLUMNS: Final = (
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
_INSERT: Final = (
    f"INSERT OR IGNORE INTO {_TABLE} ({', '.join(_COLUMNS)}) "  # noqa: S608 - constants only
    f"VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE}"  # noqa: S608 - constants only


def _schema_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"""CREATE TABLE {_TABLE} (
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
    conn.execute(f"CREATE INDEX {_TABLE}_at ON {_TABLE} (at)")
    conn.execute(f"CREATE INDEX {_TABLE}_provider_model ON {_TABLE} (provider, model, at)")


_MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (_schema_1,)
"""Step ``i`` takes the schema from version ``i`` to ``i + 1`` (version 0: an empty file).
Add a step to change the schema; never edit a released one."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The schema version this code writes (SQLite's ``PRAGMA user_version``)."""


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger's schema version {version} is newer than this code's "
                f"({SCHEMA_VERSION}); upgrade llm-invocation to open it"
            )
        for step in _MIGRATIONS[version:]:
            step(conn)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_encode_tags: Final = msgspec.json.Encoder().encode
_decode_tags: Final = msgspec.json.Decoder(dict[str, str]).decode


def _row(entry: LedgerEntry) -> tuple[Any, ...]:
    if entry.status not in _STATUSES:
        raise ValueError(f"status must be one of {sorted(_STATUSES)}, not {entry.status!r}")
    pico, text = encode_cost(entry.cost)
    return (
        entry.id,
        entry.at,
        entry.provider,
        entry.model,
        _encode_tags(entry.tags).decode(),
        entry.prompt_tokens,
        entry.completion_tokens,
        entry.cache_read_tokens,
        entry.cache_write_tokens,
        entry.reasoning_tokens,
        pico,
        text,
        int(entry.estimated),
        entry.status,
        entry.error_code,
        entry.duration,
        entry.request_id,
    )


def _entry(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(
        id=row[0],
        at=row[1],
        provider=row[2],
        model=row[3],
        tags=_decode_tags(row[4]),
        prompt_tokens=row[5],
        completion_tokens=row[6],
        cache_read_tokens=row[7],
        cache_write_tokens=row[8],
        reasoning_tokens=row[9],
        cost=decode_cost(row[10], row[11]),
        estimated=bool(row[12]),
        status=row[13],
        error_code=row[14],
        duration=row[15],
        request_id=row[16],
    )


def _unix(value: float | datetime | None) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else value


class _Batch:
    """Entries committed together; the first one's append leads the commit."""

    __slots__ = ("done", "error", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


@final
class SQLiteLedger:
    """The usage ledger in one SQLite database, with group commit.

    Opening is lazy (the first operation opens the database) or explicit with `open`;
    `open_ledger` or ``async with`` open it and close it. See the module docstring for
    durability, threads and storage.

    Args:
        path: the database file (created with its table when missing); None or
            ``":memory:"``: a private in-memory database, gone when the ledger closes.
        busy_timeout: how long, in seconds, a commit waits for another process's write
            lock before failing.
        synchronous: ``"NORMAL"`` (survives a crash of the process) or ``"FULL"`` (survives
            a power loss too, with an fsync per commit).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = 5.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        target = None if path is None else os.fspath(path)
        self._path = None if target in (None, ":memory:") else target
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        # A file database has a second connection for queries (WAL lets it read while the
        # first commits); an in-memory one has only the one.
        self._read_limiter = self._limiter if self._path is None else trio.CapacityLimiter(1)
        self._open_lock = trio.Lock()
        self._write_lock = trio.Lock()
        self._pending = _Batch()
        self._closed = False
        self._appended = 0
        self._commits = 0
        self._largest_batch = 0

    @property
    def path(self) -> str | None:
        """The database file; None in memory."""
        return self._path

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open the database now: create or migrate its schema. Does nothing when open.

        Raises:
            trio.ClosedResourceError: the ledger was closed.
            LedgerError: the database cannot be opened, or its schema is newer than this
                code's.
        """
        if self._conn is not None:
            await trio.lowlevel.checkpoint()
            return
        async with self._open_lock:
            self._check_open()
            if self._conn is None:
                self._conn, self._reader = await self._run(self._connect)

    async def append(self, entry: LedgerEntry) -> None:
        """Record one entry; return once it is committed.

        Concurrent appends are committed together (see the module docstring). If this call
        is cancelled the entry may still be committed.

        Raises:
            ValueError: the entry's status is unknown or its cost is not finite.
            trio.ClosedResourceError: the ledger was closed.
            LedgerError: the database failed; the entry is not recorded.
        """
        row = _row(entry)
        self._check_open()
        if self._conn is None:
            await self.open()
            self._check_open()
        batch = self._pending
        batch.rows.append(row)
        if len(batch.rows) == 1:
            await self._lead(batch)
        else:
            await batch.done.wait()
        if batch.error is not None:
            raise LedgerError(
                f"could not write to the usage ledger: {batch.error}"
            ) from batch.error

    async def _lead(self, batch: _Batch) -> None:
        # Shielded: a leader that left would strand its batch, and the wait is bounded by the
        # commit ahead of it (a worker thread cannot be interrupted anyway).
        with trio.CancelScope(shield=True):
            async with self._write_lock:
                self._pending = _Batch()
                try:
                    await self._run(self._write, batch.rows)
                except BaseException as exc:
                    batch.error = exc
                    if not isinstance(exc, Exception):
                        raise
                else:
                    self._commits += 1
                    self._appended += len(batch.rows)
                    self._largest_batch = max(self._largest_batch, len(batch.rows))
                finally:
                    batch.done.set()

    async def entries(
        self,
        *,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        provider: str | None = None,
        model: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[LedgerEntry]:
        """Return the entries that match, oldest first (or newest first).

        Args:
            since: the earliest ``at`` (inclusive), a unix time or an aware datetime.
            until: the end (exclusive).
            provider: only this provider's.
            model: only this model's.
            tags: only entries with every one of these tag values.
            limit: at most this many.
            newest_first: order by ``at`` descending.

        Raises:
            ValueError: a tag name cannot be queried (it contains ``"`` or ``\\``).
            trio.ClosedResourceError: the ledger was closed.
            LedgerError: the database failed.
        """
        where, params = where_clause(
            since=_unix(since), until=_unix(until), provider=provider, model=model, tags=tags
        )
        order = "DESC" if newest_first else "ASC"
        sql = f"{_SELECT}{where} ORDER BY at {order}, seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return await self._query(self._select_entries, sql, params)

    async def report(
        self,
        group_by: Sequence[str] = ("provider", "model"),
        *,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        provider: str | None = None,
        model: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> UsageReport:
        """Return calls, tokens and cost grouped by ``group_by``, summed in SQL.

        Args:
            group_by: group keys in order: ``"provider"``, ``"model"``, ``"status"``,
                ``"error_code"``, ``"tag:<name>"``, ``"period:hour"``, ``"period:day"``,
                ``"period:month"`` (UTC); empty: one total.
            since: the earliest ``at`` (inclusive).
            until: the end (exclusive).
            provider: only this provider's calls.
            model: only this model's calls.
            tags: only calls with every one of these tag values.

        Each row's ``cost`` is the exact sum of the *known* costs and ``unknown_cost_calls``
        counts the calls whose cost is unknown, so one unpriced model does not hide the
        spend of the others.

        Raises:
            ValueError: a group key is not one of those above, or a tag name cannot be
                queried.
            trio.ClosedResourceError: the ledger was closed.
            LedgerError: the database failed.
        """
        keys = (group_by,) if isinstance(group_by, str) else tuple(group_by)
        start, end = _unix(since), _unix(until)
        where, params = where_clause(
            since=start, until=end, provider=provider, model=model, tags=tags
        )
        fast = build_report_query(_TABLE, keys, where, params, exact=False)
        exact = build_report_query(_TABLE, keys, where, params, exact=True)
        rows = await self._query(self._select_report, keys, fast, exact)
        return UsageReport.build(keys, rows, since=start, until=end)

    def statistics(self) -> LedgerStatistics:
        """Return counters of what the ledger has done."""
        return LedgerStatistics(
            path=self._path,
            appended=self._appended,
            commits=self._commits,
            largest_batch=self._largest_batch,
            pending=len(self._pending.rows),
            closed=self._closed,
        )

    async def aclose(self) -> None:
        """Refuse new work, let appends already made commit, then close the database.

        Idempotent. Cancellation does not interrupt it (it waits at most for the commits
        already queued, bounded by the busy timeout).
        """
        self._closed = True
        with trio.move_on_after(2 * self._busy_timeout + 10, shield=True) as scope:
            async with self._open_lock, self._write_lock:
                conn, reader = self._conn, self._reader
                self._conn = self._reader = None
                if reader is not None and reader is not conn:
                    await trio.to_thread.run_sync(reader.close, limiter=self._read_limiter)
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close, limiter=self._limiter)
        if scope.cancelled_caught:  # pragma: no cover - a wedged disk
            _log.warning("the usage ledger %s did not close in time", self._path or ":memory:")

    # -- worker-thread side ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the usage ledger is closed")

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._path is None:
            # In memory nothing waits on a disk: a worker thread would only add the handoff
            # (and its latency) to work that takes microseconds.
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _query(self, fn: Callable[..., _T], *args: Any) -> _T:
        self._check_open()
        if self._conn is None:
            await self.open()
        try:
            if self._path is None:
                await trio.lowlevel.checkpoint()
                return fn(*args)
            return await trio.to_thread.run_sync(fn, *args, limiter=self._read_limiter)
        except sqlite3.Error as exc:
            raise LedgerError(f"could not read the usage ledger: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise trio.ClosedResourceError("the usage ledger is closed")
        return conn

    def _reading(self) -> sqlite3.Connection:
        reader = self._reader
        if reader is None:
            raise trio.ClosedResourceError("the usage ledger is closed")
        return reader

    def _connect(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        """Open the writing connection (and migrate) then, for a file, the reading one."""
        conn = self._new_connection()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            _migrate(conn)
            reader = conn if self._path is None else self._new_connection()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise LedgerError(f"could not open the usage ledger {self._path!r}: {exc}") from exc
            raise
        return conn, reader

    def _new_connection(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path or ":memory:",
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN and COMMIT ourselves
                check_same_thread=False,  # one thread at a time: see the module docstring
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"could not open the usage ledger {self._path!r}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            # typeshed wants finalize() -> int; SQLite takes any value (we return text).
            conn.create_aggregate("exact_sum", 1, cast("Any", ExactSum))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise LedgerError(f"could not open the usage ledger {self._path!r}: {exc}") from exc
            raise
        return conn

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _select_entries(self, sql: str, params: list[Any]) -> list[LedgerEntry]:
        rows = cast("list[tuple[Any, ...]]", self._reading().execute(sql, params).fetchall())
        return [_entry(row) for row in rows]

    def _select_report(
        self,
        keys: tuple[str, ...],
        fast: tuple[str, list[Any]],
        exact: tuple[str, list[Any]],
    ) -> list[UsageReportRow]:
        conn = self._reading()
        try:
            rows = conn.execute(*fast).fetchall()
        except sqlite3.OperationalError as exc:
            if not is_overflow(exc):
                raise
            rows = conn.execute(*exact).fetchall()
        return report_rows(keys, cast("list[tuple[Any, ...]]", rows))


@asynccontextmanager
async def open_ledger(
    path: str | os.PathLike[str] | None = None,
    *,
    busy_timeout: float = 5.0,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
) -> AsyncGenerator[SQLiteLedger]:
    """Open a `SQLiteLedger` and close it on exit (see `SQLiteLedger` for the arguments).

    Raises:
        LedgerError: the database cannot be opened, or its schema is newer than this code's.
    """
    ledger = SQLiteLedger(path, busy_timeout=busy_timeout, synchronous=synchronous)
    await ledger.open()
    try:
        yield ledger
    finally:
        await ledger.aclose()
