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
harmless. `SQLiteLedger.append_many` commits a batch in one transaction of its own: the
batching writer (`LedgerWriter`, `open_ledger_writer`) uses it, so that settling an
invocation never waits for a commit.

Robustness: an entry is never trusted. Token counts are stored within 0 and
``MAX_STORED_COUNT`` (clamped), a time or a duration that is not a finite number is replaced,
and an entry the database still cannot take is refused alone: the other entries of its
transaction are committed. Each kind is logged once per ledger and counted in
`SQLiteLedger.statistics`.

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
runs the missing steps of its migrations in one transaction, and refuses a newer one.
"""

from __future__ import annotations

import logging
import math
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

from ._ledger_schema import (
    MAX_STORED_COUNT,
    SCHEMA_VERSION,
    SELECT,
    TABLE,
    LedgerError,
    migrate,
    storable_count,
    storable_seconds,
    write_rows,
)
from ._ledger_writer import LedgerWriter, WriterStatistics, open_ledger_writer
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
    "MAX_STORED_COUNT",
    "SCHEMA_VERSION",
    "LedgerEntry",
    "LedgerError",
    "LedgerStatistics",
    "LedgerWriter",
    "SQLiteLedger",
    "Status",
    "UsageReport",
    "UsageReportRow",
    "WriterStatistics",
    "new_entry_id",
    "open_ledger",
    "open_ledger_writer",
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
        appended: entries committed by `SQLiteLedger.append` and `SQLiteLedger.append_many`
            (an ``id`` already in the ledger included).
        commits: transactions committed for them (group commit makes it much smaller).
        largest_batch: the most entries committed in one transaction.
        pending: entries waiting for their commit now.
        closed: whether `SQLiteLedger.aclose` was called.
        refused: entries that could not be stored (an unknown status, a cost that is not a
            number, a row the database refused); each was refused alone.
        clamped: entries stored with a count, a time or a duration brought into range.
    """

    path: str | None
    appended: int
    commits: int
    largest_batch: int
    pending: int
    closed: bool
    refused: int = 0
    clamped: int = 0


_encode_tags: Final = msgspec.json.Encoder().encode
_decode_tags: Final = msgspec.json.Decoder(dict[str, str]).decode


def _row(entry: LedgerEntry) -> tuple[tuple[Any, ...], bool]:
    """The row of ``entry``, and whether a value had to be brought into range.

    Raises:
        ValueError: the status is unknown, or the cost is not a finite number.
    """
    if entry.status not in _STATUSES:
        raise ValueError(f"status must be one of {sorted(_STATUSES)}, not {entry.status!r}")
    pico, text = encode_cost(entry.cost)
    counts = (
        int(entry.prompt_tokens),
        int(entry.completion_tokens),
        int(entry.cache_read_tokens),
        int(entry.cache_write_tokens),
        int(entry.reasoning_tokens),
    )
    stored = counts
    if min(counts) < 0 or max(counts) > MAX_STORED_COUNT:
        stored = tuple(storable_count(count) for count in counts)
    at = storable_seconds(float(entry.at), math.nan)
    if math.isnan(at):  # not storable: now (the clock is asked only then)
        at = time.time()
    duration = storable_seconds(float(entry.duration), 0.0)
    clamped = stored != counts or at != entry.at or duration != entry.duration
    row = (
        str(entry.id),
        at,
        str(entry.provider),
        str(entry.model),
        _encode_tags(entry.tags).decode(),
        *stored,
        pico,
        text,
        int(bool(entry.estimated)),
        entry.status,
        entry.error_code,
        duration,
        entry.request_id,
    )
    return row, clamped


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

    __slots__ = ("done", "error", "refused", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.refused: dict[int, Exception] = {}


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
        self._refused = 0
        self._clamped = 0
        self._refusal_logged = False
        self._clamp_logged = False

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
        is cancelled the entry may still be committed. Counts out of range are clamped.

        Raises:
            ValueError: the entry's status is unknown or its cost is not finite.
            trio.ClosedResourceError: the ledger was closed.
            LedgerError: the database failed, or refused this entry; it is not recorded.
        """
        row = self._checked(entry, raising=True)
        assert row is not None
        self._check_open()
        if self._conn is None:
            await self.open()
            self._check_open()
        batch = self._pending
        index = len(batch.rows)
        batch.rows.append(row)
        if index == 0:
            await self._lead(batch)
        else:
            await batch.done.wait()
        if batch.error is not None:
            raise LedgerError(
                f"could not write to the usage ledger: {batch.error}"
            ) from batch.error
        refusal = batch.refused.get(index)
        if refusal is not None:
            raise LedgerError(f"the usage ledger refused the entry: {refusal}") from refusal

    async def append_many(self, entries: Sequence[LedgerEntry]) -> int:
        """Record ``entries`` in one transaction of their own; return how many were stored.

        An entry that cannot be stored (an unknown status, a cost that is not a number, a row
        the database refuses) is refused alone: the others are committed. Refusals are
        logged once per ledger and counted in `statistics`. Entries whose ``id`` is already
        in the ledger count as stored. Cancellation does not interrupt it once it waits for
        the database (a worker thread cannot be interrupted).

        Raises:
            trio.ClosedResourceError: the ledger was closed.
            LedgerError: the database failed; none of the entries is recorded.
        """
        rows: list[tuple[Any, ...]] = []
        for entry in entries:
            row = self._checked(entry, raising=False)
            if row is not None:
                rows.append(row)
        self._check_open()
        if self._conn is None:
            await self.open()
            self._check_open()
        if not rows:
            await trio.lowlevel.checkpoint()
            return 0
        batch = _Batch()
        batch.rows = rows
        await self._lead(batch, alone=True)
        if batch.error is not None:
            raise LedgerError(
                f"could not write to the usage ledger: {batch.error}"
            ) from batch.error
        return len(rows) - len(batch.refused)

    def _checked(self, entry: LedgerEntry, *, raising: bool) -> tuple[Any, ...] | None:
        """The row of ``entry`` (counted, and logged once, when clamped); None if refused.

        Raises:
            ValueError: (with ``raising``) the entry cannot be stored.
        """
        try:
            row, clamped = _row(entry)
        except (ValueError, TypeError, OverflowError, msgspec.EncodeError) as exc:
            if raising:
                if isinstance(exc, ValueError):
                    raise
                raise ValueError(str(exc)) from exc
            self._refuse(exc)
            return None
        if clamped:
            self._clamped += 1
            if not self._clamp_logged:
                self._clamp_logged = True
                _log.warning(
                    "a usage ledger entry had a count, a time or a duration out of range: "
                    "it is stored clamped (further ones are only counted in statistics())"
                )
        return row

    def _refuse(self, exc: BaseException) -> None:
        self._refused += 1
        if not self._refusal_logged:
            self._refusal_logged = True
            _log.error(
                "the usage ledger refused an entry it cannot store (%s); the other entries "
                "are stored (further refusals are only counted in statistics())",
                exc,
            )

    async def _lead(self, batch: _Batch, *, alone: bool = False) -> None:
        # Shielded: a leader that left would strand its batch, and the wait is bounded by the
        # commit ahead of it (a worker thread cannot be interrupted anyway).
        with trio.CancelScope(shield=True):
            async with self._write_lock:
                if not alone:
                    self._pending = _Batch()
                try:
                    refused = await self._run(self._write, batch.rows)
                except BaseException as exc:
                    batch.error = exc
                    if not isinstance(exc, Exception):
                        raise
                else:
                    batch.refused = dict(refused)
                    for _, reason in refused:
                        self._refuse(reason)
                    self._commits += 1
                    self._appended += len(batch.rows) - len(refused)
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
        sql = f"{SELECT}{where} ORDER BY at {order}, seq {order}"
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
        fast = build_report_query(TABLE, keys, where, params, exact=False)
        exact = build_report_query(TABLE, keys, where, params, exact=True)
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
            refused=self._refused,
            clamped=self._clamped,
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
            migrate(conn)
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

    def _write(self, rows: list[tuple[Any, ...]]) -> list[tuple[int, Exception]]:
        return write_rows(self._connection(), rows)

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
