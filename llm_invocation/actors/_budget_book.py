"""The accountant's side of the budget store: settlements applied in arrival order, kept
while the store is down, and reads that wait for the settlements before them.

Each settlement gets a number when the accountant takes it; a pool of tasks applies them to
the store (round trips overlap), and a read asks `BudgetBook.wait_applied` for every number
up to its own arrival first. A settlement the store cannot take (it is unreachable) is kept
and applied, in order, once the store answers again; until then its reservation keeps the
worst case charged. Store calls are shielded from cancellation (a call is never interrupted
half-way, leaving a reservation nobody knows of), bounded by `STORE_CALL_LIMIT`.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Final, TypeVar, final

import trio

from ..store._base import Budget, BudgetCheck, BudgetLevel, BudgetStore, StoreUnavailable

__all__ = [
    "MAX_AMOUNT",
    "MAX_PENDING",
    "STORE_CALL_LIMIT",
    "STORE_CONCURRENCY",
    "STORE_QUEUE",
    "STORE_WORKERS",
    "BudgetBook",
    "storable",
]

log = logging.getLogger("llm_invocation.accountant")

STORE_CONCURRENCY: Final = 32
"""Budget store operations in flight at once, at most: their round trips overlap, and a
burst of thousands of calls queues here rather than inside the store's own timeout."""
STORE_WORKERS: Final = STORE_CONCURRENCY
"""Tasks applying settlements to the budget store."""
STORE_QUEUE: Final = 4096
"""Settlements waiting for the budget store, at most (then taking one waits: backpressure)."""
STORE_CALL_LIMIT: Final = 30.0
"""A budget store call is shielded from cancellation for at most this long."""
MAX_PENDING: Final = 100_000
"""Settlements kept for a budget store that is down, at most (the oldest go first)."""
RETRY_INITIAL: Final = 0.5
RETRY_MAX: Final = 30.0
MAX_AMOUNT: Final = Decimal(9_000_000_000)
"""The most one call can reserve or spend, in dollars (the stores hold 63-bit nano-dollars)."""

_T = TypeVar("_T")
LevelsHook = Callable[[list[BudgetLevel], list[Budget]], Awaitable[None]]


def storable(amount: Decimal) -> Decimal:
    """``amount`` within 0 and `MAX_AMOUNT` (a number that is not finite: the most)."""
    if not amount.is_finite():
        return MAX_AMOUNT
    return Decimal(0) if amount < 0 else min(amount, MAX_AMOUNT)


async def _bounded(limiter: trio.Semaphore, operation: Callable[[], Awaitable[_T]]) -> _T:
    """Run a budget store operation, once ``limiter`` lets it, shielded from cancellation
    (it is never interrupted half-way) for at most `STORE_CALL_LIMIT` seconds.

    Raises:
        StoreUnavailable: the store failed or did not answer in time.
    """
    async with limiter:
        with trio.move_on_after(STORE_CALL_LIMIT, shield=True):
            return await operation()
    raise StoreUnavailable("the budget store did not answer in time")


@final
class _Progress:
    """Work numbered in arrival order and finished in any order: wait for a prefix of it."""

    __slots__ = ("_heap", "_open", "_ticket", "_waiters", "issued")

    def __init__(self) -> None:
        self.issued = 0
        self._open: set[int] = set()
        self._heap: list[int] = []
        self._waiters: list[tuple[int, int, trio.Event]] = []
        self._ticket = 0

    def issue(self) -> int:
        self.issued += 1
        self._open.add(self.issued)
        heapq.heappush(self._heap, self.issued)
        return self.issued

    @property
    def idle(self) -> bool:
        """Whether everything issued is finished."""
        return self._lowest_open() > self.issued

    def _lowest_open(self) -> int:
        heap = self._heap
        while heap and heap[0] not in self._open:
            heapq.heappop(heap)
        return heap[0] if heap else self.issued + 1

    def finish(self, number: int) -> None:
        self._open.discard(number)
        lowest = self._lowest_open()
        waiters = self._waiters
        while waiters and waiters[0][0] < lowest:
            heapq.heappop(waiters)[2].set()

    async def wait(self, upto: int) -> None:
        """Return once everything numbered ``upto`` or less is finished."""
        if self._lowest_open() > upto:
            await trio.lowlevel.checkpoint()
            return
        self._ticket += 1
        event = trio.Event()
        heapq.heappush(self._waiters, (upto, self._ticket, event))
        await event.wait()


@final
class _Settlement:
    """One reservation to replace by its actual cost (0: given back) in the budget store."""

    __slots__ = ("alerts", "amount", "budgets", "number", "reservation")

    def __init__(
        self, budgets: list[Budget], reservation: str, amount: Decimal, *, alerts: bool
    ) -> None:
        self.budgets = budgets
        self.reservation = reservation
        self.amount = storable(amount)
        self.alerts = alerts
        self.number = 0


@final
class BudgetBook:
    """Settlements on their way to the budget store; see the module documentation.

    Args:
        store: the budget store.
        on_levels: called with a budget's levels after a settlement (the accountant's
            alerts).
        alerts_due: whether ``on_levels`` has anything to do with these levels (a
            settlement applied at once calls it only then).
    """

    def __init__(
        self,
        store: BudgetStore,
        on_levels: LevelsHook,
        alerts_due: Callable[[list[BudgetLevel]], bool] = lambda _: True,
    ) -> None:
        self.store = store
        self._on_levels = on_levels
        self._alerts_due = alerts_due
        self._nursery: trio.Nursery | None = None
        self._progress = _Progress()
        self.store_errors = 0
        """Store operations that failed (the store was unreachable or too slow)."""
        self.dropped = 0
        """Settlements given up because more than `MAX_PENDING` were kept."""
        self._pending: deque[_Settlement] = deque()
        self._pending_kick = trio.Event()
        self._pending_lock = trio.Lock()
        self._send, self._receive = trio.open_memory_channel[_Settlement](STORE_QUEUE)
        self._limiter = trio.Semaphore(STORE_CONCURRENCY)
        self._drop_logged = False

    @property
    def arrived(self) -> int:
        """The number of the last settlement taken (what a read arriving now waits for)."""
        return self._progress.issued

    @property
    def queued(self) -> int:
        """Settlements waiting for the store now."""
        return self._receive.statistics().current_buffer_used

    @property
    def pending(self) -> int:
        """Settlements kept for a store that is down now."""
        return len(self._pending)

    def start(self, nursery: trio.Nursery) -> None:
        """Start the tasks that apply settlements (in the accountant's nursery)."""
        self._nursery = nursery
        for _ in range(STORE_WORKERS):
            nursery.start_soon(self._worker)
        nursery.start_soon(self._retry_loop)

    # -- what the accountant calls -------------------------------------------------------------

    async def reserve(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        """`BudgetStore.reserve`, shielded and bounded; a failure is counted, and the
        reservation is kept to be given back (the store may have taken it before failing).

        Raises:
            StoreUnavailable: the store failed or did not answer in time.
        """
        try:
            return await _bounded(
                self._limiter,
                lambda: self.store.reserve(
                    budgets, reservation=reservation, amount=storable(amount), ttl=ttl
                ),
            )
        except StoreUnavailable:
            self.store_errors += 1
            self._keep(_Settlement(list(budgets), reservation, Decimal(0), alerts=False))
            raise

    async def settle(
        self, budgets: list[Budget], reservation: str, amount: Decimal, *, alerts: bool
    ) -> None:
        """Take one settlement (``amount`` 0 gives the reservation back), to be applied in
        turn; waits only while `STORE_QUEUE` settlements wait already."""
        item = _Settlement(budgets, reservation, amount, alerts=alerts)
        item.number = self._progress.issue()
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            await self._send.send(item)

    def has_room(self) -> bool:
        """Whether `settle_nowait` can take a settlement now: an `idle` book applies it at
        once (its queue is empty), another queues it if `STORE_QUEUE` leaves room."""
        return self.idle or self._send.statistics().current_buffer_used < STORE_QUEUE

    @property
    def idle(self) -> bool:
        """Whether the store is synchronous and every settlement taken is applied: it can
        then be asked at once, and sees every settlement taken before."""
        return self.store.synchronous and self._progress.idle and not self._pending

    def reserve_nowait(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        """`reserve` at once, for an `idle` book.

        Raises:
            trio.WouldBlock: the book is not idle, or the store failed (nothing reserved).
        """
        if not self.idle:
            raise trio.WouldBlock
        try:
            return self.store.reserve_nowait(
                budgets, reservation=reservation, amount=storable(amount), ttl=ttl
            )
        except StoreUnavailable:
            self.store_errors += 1
            raise trio.WouldBlock from None

    def settle_nowait(
        self, budgets: list[Budget], reservation: str, amount: Decimal, *, alerts: bool
    ) -> None:
        """`settle` without waiting: applied at once when the book is `idle` (its alerts,
        if any are due, are checked by a task of the book's, before later reads), else
        taken to be applied in turn.

        Raises:
            trio.WouldBlock: `STORE_QUEUE` settlements wait already (nothing was taken).
        """
        if not self.has_room():
            raise trio.WouldBlock
        item = _Settlement(budgets, reservation, amount, alerts=alerts)
        if self.idle and self._nursery is not None:
            try:
                levels = self.store.settle_nowait(
                    budgets, reservation=reservation, actual=item.amount
                )
            except StoreUnavailable:
                pass  # taken to be applied in turn (and kept while the store is down)
            else:
                if alerts and levels and self._alerts_due(levels):
                    number = self._progress.issue()
                    self._nursery.start_soon(self._alert, levels, budgets, number)
                return
        item.number = self._progress.issue()
        self._send.send_nowait(item)

    async def _alert(self, levels: list[BudgetLevel], budgets: list[Budget], number: int) -> None:
        try:
            await self._on_levels(levels, budgets)
        finally:
            self._progress.finish(number)

    async def wait_applied(self, upto: int) -> None:
        """Wait until every settlement numbered ``upto`` or less was applied (or kept for
        later), then try the kept ones once."""
        await self._progress.wait(upto)
        if self._pending:
            await self._apply_pending()

    async def levels(self, budgets: Sequence[Budget]) -> list[BudgetLevel]:
        """`BudgetStore.levels`, counting a failure.

        Raises:
            StoreUnavailable: the store failed.
        """
        try:
            return await _bounded(self._limiter, lambda: self.store.levels(budgets))
        except StoreUnavailable:
            self.store_errors += 1
            raise

    async def claim_alert(self, scope: str, threshold: float, period_id: str, ttl: float) -> bool:
        """`BudgetStore.claim_alert`, counting a failure.

        Raises:
            StoreUnavailable: the store failed.
        """
        try:
            return await _bounded(
                self._limiter,
                lambda: self.store.claim_alert(scope, threshold, period_id, ttl),
            )
        except StoreUnavailable:
            self.store_errors += 1
            raise

    async def drain(self) -> None:
        """On the way out (the tasks are stopped): apply what is still queued, try the kept
        settlements once, and log what is left (their reservations keep the worst case)."""
        while True:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            try:
                await self._apply(item)
            finally:
                self._progress.finish(item.number)
        if self._pending and not await self._apply_pending():
            log.error(
                "%d settlements could not reach the budget store before the accountant "
                "stopped: their reservations keep the worst case until they expire",
                len(self._pending),
            )

    # -- applying ------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            item = await self._receive.receive()
            try:
                await self._apply(item)
            finally:
                self._progress.finish(item.number)

    async def _apply(self, item: _Settlement, *, keep: bool = True) -> bool:
        """Apply one settlement; when the store is unreachable, keep it for later
        (``keep``) and return False."""
        try:
            levels = await _bounded(
                self._limiter,
                lambda: self.store.settle(
                    item.budgets, reservation=item.reservation, actual=item.amount
                ),
            )
        except StoreUnavailable as exc:
            self.store_errors += 1
            log.debug("budget store unreachable while settling: %s", exc)
            if keep:
                self._keep(item)
            return False
        if item.alerts and levels:
            await self._on_levels(levels, item.budgets)
        return True

    def _keep(self, item: _Settlement) -> None:
        self._pending.append(item)
        if len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
            if not self._drop_logged:
                self._drop_logged = True
                log.error(
                    "more than %d settlements wait for the budget store: the oldest are "
                    "given up (their reservations keep the worst case until they expire)",
                    MAX_PENDING,
                )
        self._pending_kick.set()

    async def _apply_pending(self) -> bool:
        """Apply the kept settlements in order; False when the store is still unreachable."""
        async with self._pending_lock:
            pending = self._pending
            while pending:
                if not await self._apply(pending[0], keep=False):
                    return False
                pending.popleft()
            self._drop_logged = False
            return True

    async def _retry_loop(self) -> None:
        delay = RETRY_INITIAL
        while True:
            if not self._pending:
                self._pending_kick = trio.Event()
                await self._pending_kick.wait()
                delay = RETRY_INITIAL
                continue
            await trio.sleep(delay)
            delay = RETRY_INITIAL if await self._apply_pending() else min(delay * 2, RETRY_MAX)
