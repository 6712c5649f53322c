"""`LedgerWriter`: ledger entries committed in batches by one task, behind a bounded queue.

The accountant hands each settled invocation's entry to the writer and never waits for a
commit::

    async with open_ledger_writer(ledger) as writer:
        writer.put_nowait(entry)        # or: await writer.put(entry) (waits when full)
        await writer.flush()            # every entry put before is committed

The writer's task takes every entry queued, commits them in one transaction
(`SQLiteLedger.append_many`) and starts again, so the batches grow with the load. Before a
commit it lingers up to ``linger`` seconds (20 ms by default) for more entries to join the
batch, unless someone waits for it (`LedgerWriter.flush`), the batch is half of ``max_batch``,
or the writer is closing: a transaction costs about the same for one entry as for a hundred,
so settlements that trickle in at a steady rate share one commit instead of paying one each.

Bounds: at most ``max_batch`` entries are accepted and not yet committed at any moment.
`LedgerWriter.put` waits while that many are (backpressure up to the accountant, and from it
to the callers); `LedgerWriter.put_nowait` raises `trio.WouldBlock` instead. Nothing accepted
is ever dropped from the queue. Each transaction commits every entry accepted before it
started, so when the process dies (SIGKILL included) what is lost is at most one batch: the
entries accepted and not yet committed, never more than ``max_batch``, accepted within the
last ``linger`` seconds or during the commit in progress.

Read-your-writes: `LedgerWriter.flush` returns once every entry accepted before it was called
is committed (or refused, or given up: see below). Batches commit in the order their entries
were accepted.

Failures: an entry the ledger cannot store is refused alone by the ledger (logged once there);
the others of its batch are committed. A transaction that fails as a whole (the database is
locked by another process past its busy timeout, a disk error) is tried again with backoff,
``max_attempts`` times in all; then its entries are given up: counted in
`LedgerWriter.statistics` as ``failed`` and logged once per run of failures, at ERROR.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, final

import msgspec
import trio

from ._ledger_schema import LedgerError

if TYPE_CHECKING:
    from .ledger import LedgerEntry, SQLiteLedger

__all__ = [
    "DEFAULT_LINGER",
    "DEFAULT_MAX_BATCH",
    "DRAIN_LIMIT",
    "LedgerWriter",
    "WriterStatistics",
    "open_ledger_writer",
]

_log = logging.getLogger("llm_invocation.store.ledger")

DEFAULT_MAX_BATCH: Final = 1024
"""Entries accepted and not yet committed, at most (and so the largest transaction)."""
DEFAULT_LINGER: Final = 0.02
"""Seconds the writer waits for more entries to join a batch before it commits it."""
DRAIN_LIMIT: Final = 10.0
"""Seconds `open_ledger_writer` waits, when its block ends, for the queued entries to commit."""
_RETRY_DELAY: Final = 0.05
_MAX_RETRY_DELAY: Final = 1.0


@final
class WriterStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What a `LedgerWriter` has done.

    Attributes:
        accepted: entries accepted by `LedgerWriter.put` and `LedgerWriter.put_nowait`.
        committed: entries committed (an id already in the ledger included).
        refused: entries the ledger refused alone (it cannot store them).
        failed: entries given up after their transaction failed every attempt.
        batches: transactions committed.
        largest_batch: the most entries in one transaction.
        pending: entries accepted and not yet committed now.
        commit_seconds: time spent committing, in total.
        closed: whether the writer refuses new entries.
    """

    accepted: int
    committed: int
    refused: int
    failed: int
    batches: int
    largest_batch: int
    pending: int
    commit_seconds: float
    closed: bool


@final
class LedgerWriter:
    """Commits ledger entries in batches from a bounded queue: see the module documentation.

    Run `serve` in a task (`open_ledger_writer` does) for the entries to be written.

    Args:
        ledger: the ledger to write to.
        max_batch: the most entries accepted and not yet committed (at least 1).
        max_attempts: how many times a failing transaction is tried before its entries are
            given up (at least 1).
        linger: the most seconds a batch waits for more entries before it is committed (0:
            never; see the module documentation).

    Raises:
        ValueError: ``max_batch`` or ``max_attempts`` is below 1, or ``linger`` is negative
            or not finite.
    """

    def __init__(
        self,
        ledger: SQLiteLedger,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_attempts: int = 5,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        if max_batch < 1 or max_attempts < 1:
            raise ValueError("max_batch and max_attempts must be at least 1")
        if not 0 <= linger < math.inf:
            raise ValueError(f"linger must be a finite number of seconds >= 0, got {linger!r}")
        self.ledger = ledger
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.linger = linger
        self._enough = max(1, max_batch // 2)  # a batch this large commits without lingering
        self._hurry: trio.Event | None = None  # set to end a linger now
        self._slots = trio.Semaphore(max_batch)
        self._queue: list[LedgerEntry] = []
        self._kick = trio.Event()
        self._accepted = 0
        self._done = 0  # entries finished (committed, refused or given up), in order
        self._waiters: deque[tuple[int, trio.Event]] = deque()
        self._closed = False
        self._serving = False
        self._committed = 0
        self._refused = 0
        self._failed = 0
        self._batches = 0
        self._largest = 0
        self._seconds = 0.0
        self._failure_logged = False
        self._stopped = 0  # entries not written because the writing task was cancelled

    # -- producers -----------------------------------------------------------------------------

    def put_nowait(self, entry: LedgerEntry) -> None:
        """Queue ``entry`` to be committed, without waiting.

        Raises:
            trio.WouldBlock: ``max_batch`` entries wait for their commit already.
            trio.ClosedResourceError: the writer is closed.
        """
        self._check_open()
        self._slots.acquire_nowait()
        self._accept(entry)

    async def put(self, entry: LedgerEntry) -> None:
        """Queue ``entry`` to be committed, waiting while ``max_batch`` entries wait already.

        Raises:
            trio.ClosedResourceError: the writer is closed.
        """
        self._check_open()
        await self._slots.acquire()
        if self._closed:
            self._slots.release()
            self._check_open()
        self._accept(entry)

    async def flush(self) -> None:
        """Wait until every entry accepted before this call is committed (or refused, or
        given up after its transaction failed every attempt).

        It waits for `serve` to write them: with no task serving the writer it waits until
        one does.
        """
        target = self._accepted
        if self._done >= target:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        self._waiters.append((target, event))
        self._end_linger()
        await event.wait()

    def close(self) -> None:
        """Refuse new entries; `serve` returns once the entries already accepted are written."""
        self._closed = True
        self._kick.set()
        self._end_linger()

    def _end_linger(self) -> None:
        if self._hurry is not None:
            self._hurry.set()

    def statistics(self) -> WriterStatistics:
        """Return counters of what the writer has done."""
        return WriterStatistics(
            accepted=self._accepted,
            committed=self._committed,
            refused=self._refused,
            failed=self._failed,
            batches=self._batches,
            largest_batch=self._largest,
            pending=self._accepted - self._done,
            commit_seconds=self._seconds,
            closed=self._closed,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the usage ledger writer is closed")

    def _accept(self, entry: LedgerEntry) -> None:
        self._queue.append(entry)
        self._accepted += 1
        self._kick.set()
        if len(self._queue) >= self._enough:
            self._end_linger()

    # -- the writing task ----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until the writer is closed and every accepted entry is written.

        Entries still unwritten when this task is cancelled count as ``failed``.

        Raises:
            RuntimeError: another task serves this writer already.
        """
        if self._serving:
            raise RuntimeError("a ledger writer is served by one task at a time")
        self._serving = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        return
                    self._kick = trio.Event()
                    await self._kick.wait()
                    continue
                await self._gather()
                batch, self._queue = self._queue, []
                await self._write(batch)
        finally:
            self._serving = False
            left, self._queue = self._queue, []
            if left:
                self._failed += len(left)
                self._stopped += len(left)
                self._finish(len(left))

    async def _gather(self) -> None:
        """Linger for more entries to join the queued ones, unless there is a reason not to
        (see the module documentation)."""
        if self.linger <= 0 or self._closed or self._waiters or len(self._queue) >= self._enough:
            return
        hurry = self._hurry = trio.Event()
        try:
            with trio.move_on_after(self.linger):
                await hurry.wait()
        finally:
            self._hurry = None

    async def _write(self, batch: list[LedgerEntry]) -> None:
        started = time.perf_counter()
        delay = _RETRY_DELAY
        resolved = False
        try:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    stored = await self.ledger.append_many(batch)
                except (LedgerError, trio.ClosedResourceError) as exc:
                    if attempt < self.max_attempts and isinstance(exc, LedgerError):
                        await trio.sleep(delay)
                        delay = min(delay * 2, _MAX_RETRY_DELAY)
                        continue
                    self._give_up(batch, exc)
                    resolved = True
                    return
                self._committed += stored
                self._refused += len(batch) - stored
                self._batches += 1
                self._largest = max(self._largest, len(batch))
                resolved = True
                if self._failure_logged:
                    self._failure_logged = False
                    _log.info("the usage ledger is written again")
                return
        finally:
            self._seconds += time.perf_counter() - started
            if not resolved:  # the task was cancelled: these entries are not written
                self._failed += len(batch)
                self._stopped += len(batch)
            self._finish(len(batch))

    def _give_up(self, batch: list[LedgerEntry], exc: BaseException) -> None:
        self._failed += len(batch)
        if not self._failure_logged:
            self._failure_logged = True
            _log.error(
                "could not write %d usage ledger entries after %d attempts: %s (further "
                "failures are counted in the writer's statistics until a write succeeds)",
                len(batch),
                self.max_attempts,
                exc,
            )

    def _finish(self, count: int) -> None:
        self._done += count
        for _ in range(count):
            self._slots.release()
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._done:
            waiters.popleft()[1].set()


@asynccontextmanager
async def open_ledger_writer(
    ledger: SQLiteLedger,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    drain_limit: float = DRAIN_LIMIT,
    linger: float = DEFAULT_LINGER,
) -> AsyncGenerator[LedgerWriter]:
    """Run a `LedgerWriter` on ``ledger`` for the block.

    When the block ends (even cancelled), the writer is closed and the entries already
    accepted are committed, waiting at most ``drain_limit`` seconds; entries still unwritten
    then are logged (once) as lost. An exception from the block comes out as itself.

    Raises:
        ValueError: ``max_batch`` is below 1, or ``linger`` is not a number of seconds.
    """
    writer = LedgerWriter(ledger, max_batch=max_batch, linger=linger)
    # The writing task runs shielded, so that cancelling the block does not stop it before it
    # has written what was accepted; it is cancelled explicitly once drained (or given up).
    serving = trio.CancelScope(shield=True)

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        with serving:
            await writer.serve(task_status=task_status)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            try:
                yield writer
            finally:
                writer.close()
                with trio.move_on_after(drain_limit, shield=True):
                    await writer.flush()
                serving.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context
    finally:
        if writer._stopped:  # pyright: ignore[reportPrivateUsage]
            _log.error(
                "%d usage ledger entries were not written before the writer closed",
                writer._stopped,  # pyright: ignore[reportPrivateUsage]
            )
