"""The accountant: per-request caps, budgets, alerts, and the usage ledger.

Before a request is sent, `Reserve` prices its worst case (the prompt plus ``max_tokens``,
all uncached) and refuses it with `CostExceeded` when that exceeds ``max_cost_per_request``
or would push any budget that applies over its limit. Budgets reserve the worst case, so
concurrent calls cannot overshoot together. A model whose price is unknown is refused
(``details["reason"] == "unknown_price"``) when a cap or a budget applies, unless
``unknown_price="allow"``: an unknown cost is never counted as zero.

After the request (finished, failed or cancelled), the caller prices what it consumed and
casts `Settle`: nobody waits for it. The accountant applies settlements in the order they
arrive: it replaces each reservation with the actual cost in the budget store, hands the
ledger row to the batching writer (`llm_invocation.store.ledger.LedgerWriter`, which commits many
rows per transaction) and fires each budget alert threshold once per period. A report
(`GetReport`), the budget levels (`BudgetLevels`) and a `Reserve` first wait for every
settlement that arrived before them, so a caller always sees its own settled calls.

A `Reserve` is answered at once on the caller's task (`ActorRef.call_nowait`,
`Accountant.handle_nowait`) when no budget applies, or when the budget store is in memory and
every settlement taken is applied; a `Settle` is taken at once when the budget store's queue
and the ledger writer have room, and applied at once to a budget store in memory with
nothing before it still to apply. Both only while the accountant has nothing else in hand,
so arrival order is kept; anything else goes through the mailbox.

Reservations are named by the caller (``Reserve.reservation``): a caller cancelled while it
waits for the answer casts `Abandon` with that id, and the accountant gives the reservation
back whether the answer was still on its way or not. The budget store is asked from tasks of
the accountant's own, which a caller's cancellation never interrupts half-way.

If the budget store is unreachable when a settlement is applied, the settlement is kept and
applied when the store is back (with backoff; a `BudgetLevels` or a `Flush` tries at once).
Until then the reservation keeps its worst case charged: a cost never silently becomes zero.
Store errors are counted in `AccountantStatistics` (the store connection logs the outage).

Budgets apply by scope: ``global``, ``provider:<name>``, ``model:<provider>:<model>`` and
``tag:<key>=<value>`` (matched against the request's metadata; ``tag:<key>=*`` gives each
value its own budget).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
import trio

from .._ids import new_id
from ..errors import CostExceeded, LLMError
from ..runtime import Actor, Call, Context, Msg, ReplyHandle
from ..store._base import Budget, BudgetCheck, BudgetLevel, BudgetStore, StoreUnavailable
from ..store._ledger_schema import LedgerError
from ..store._ledger_writer import WriterStatistics
from ..store._report import UsageReport
from ..types import Usage
from ._budget_book import BudgetBook

if TYPE_CHECKING:
    from ..config import Config, CostConfig
    from ..pricing import PriceBook
    from ..store._ledger_writer import LedgerWriter
    from ..store.ledger import LedgerEntry, SQLiteLedger

__all__ = [
    "Abandon",
    "Accountant",
    "AccountantMsg",
    "AccountantStatistics",
    "AccountantStats",
    "BudgetAlert",
    "BudgetLevels",
    "Flush",
    "GetReport",
    "Reservation",
    "Reserve",
    "Settle",
    "budgets_for",
    "budgets_of",
]

log = logging.getLogger("llm_invocation.accountant")

RESERVATION_TTL_FLOOR: Final = 600.0
MAX_CLAIMS_KEPT: Final = 10_000
"""Alert claims remembered (so that a claimed threshold costs no more store calls)."""

Status = Literal["ok", "error", "cancelled"]


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """What `Reserve` set aside; hand it back to `Settle`."""

    id: str
    provider: str
    model: str
    worst_case: Decimal | None
    scopes: list[str]
    tags: dict[str, str]
    degraded: bool = False


class Reserve(Call[Reservation], frozen=True, kw_only=True):
    """Price the worst case of a request and reserve it against every budget that applies.

    ``reservation`` is the reservation's id, chosen by the caller so that it can `Abandon`
    the reservation when it is cancelled before the answer reaches it (None: the accountant
    picks one).
    """

    provider: str
    model: str
    prompt_tokens: int
    max_tokens: int
    tags: dict[str, str] = msgspec.field(default_factory=dict[str, str])
    reservation: str | None = None


class Abandon(Msg, frozen=True, kw_only=True):
    """The caller of `Reserve` with this ``reservation`` id gave up (it was cancelled): give
    the reservation back, whether it was granted, is being granted or is unknown."""

    reservation: str
    provider: str
    model: str
    tags: dict[str, str] = msgspec.field(default_factory=dict[str, str])


class Settle(Msg, frozen=True, kw_only=True):
    """A cast: the call of ``reservation`` is over; ``usage`` is what it consumed, priced by
    the caller (``usage.cost`` None: unknown)."""

    reservation: Reservation
    usage: Usage
    status: Status = "ok"
    error_code: str | None = None
    duration: float = 0.0
    request_id: str | None = None
    at: float | None = None
    """When the call settled (unix time); None: when the accountant takes it."""


class GetReport(Call[UsageReport], frozen=True, kw_only=True):
    """A usage report from the ledger, once every earlier settlement is committed."""

    group_by: list[str] = msgspec.field(default_factory=lambda: ["provider", "model"])
    since: float | None = None
    until: float | None = None


class BudgetLevels(Call[list[BudgetLevel]], frozen=True, kw_only=True):
    """The levels of every configured budget (``tag:<key>=*`` ones are per value: omitted),
    once every earlier settlement is applied."""


class Flush(Call[None], frozen=True, kw_only=True):
    """Answered once every earlier settlement is applied and its ledger row committed (a
    budget store that is down keeps its settlements pending: see the module)."""


class AccountantStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The accountant's counters.

    Attributes:
        reserved: reservations granted (and delivered to their caller).
        refused: requests refused (cap, budget, unknown price, store unreachable).
        settled: settlements received.
        alerts: budget alerts fired.
        unknown_cost: settlements whose cost is unknown.
        store_errors: budget store operations that failed (the store was unreachable).
        spent: the known cost of every settlement.
        held: reservations granted and not yet settled or given back now.
        released: reservations given back unused (abandoned by a cancelled caller).
        queued: settlements waiting for the budget store now.
        pending: settlements kept for a budget store that is down now.
        dropped: settlements given up because too many were pending (their reservations
            keep the worst case until they expire).
        ledger_errors: ledger rows that could not be handed to the ledger writer.
        ledger: the ledger writer's counters (None without a ledger).
    """

    reserved: int
    refused: int
    settled: int
    alerts: int
    unknown_cost: int
    store_errors: int
    spent: Decimal
    held: int = 0
    released: int = 0
    queued: int = 0
    pending: int = 0
    dropped: int = 0
    ledger_errors: int = 0
    ledger: WriterStatistics | None = None


class AccountantStats(Call[AccountantStatistics], frozen=True, kw_only=True):
    pass


AccountantMsg = Reserve | Abandon | Settle | GetReport | BudgetLevels | Flush | AccountantStats


class BudgetAlert(msgspec.Struct, frozen=True, kw_only=True):
    """A budget crossed an alert threshold (delivered once per period per threshold)."""

    scope: str
    threshold: float
    spent: Decimal
    limit: Decimal
    period_id: str


AlertCallback = Callable[[BudgetAlert], Awaitable[None] | None]


def budgets_of(cost: CostConfig) -> list[Budget]:
    """The budgets ``cost`` configures: ``max_budget`` (global) and ``budgets``."""
    budgets: list[Budget] = []
    if cost.max_budget is not None:
        budgets.append(
            Budget(
                scope="global",
                limit=cost.max_budget,
                period=cost.budget_period or 86400.0,
                calendar=cost.budget_calendar,
            )
        )
    budgets.extend(
        Budget(scope=b.scope, limit=b.limit, period=b.period, calendar=b.calendar)
        for b in cost.budgets
    )
    return budgets


def budgets_for(
    budgets: Sequence[Budget], provider: str, model: str, tags: Mapping[str, str]
) -> list[Budget]:
    """The budgets that apply to a request (``tag:<key>=*`` made concrete per value)."""
    out: list[Budget] = []
    for budget in budgets:
        scope = budget.scope
        if scope == "global":
            out.append(budget)
        elif scope.startswith("provider:"):
            if scope[len("provider:") :] == provider:
                out.append(budget)
        elif scope.startswith("model:"):
            if scope[len("model:") :] == f"{provider}:{model}":
                out.append(budget)
        elif scope.startswith("tag:"):
            key, _, value = scope[len("tag:") :].partition("=")
            actual = tags.get(key)
            if actual is None:
                continue
            if value == "*":
                out.append(msgspec.structs.replace(budget, scope=f"tag:{key}={actual}"))
            elif value == actual:
                out.append(budget)
    return out


class Accountant(Actor[AccountantMsg]):
    """The accountant actor; see the module documentation.

    Its handler never waits on the budget store or the ledger: messages are taken one at a
    time in arrival order, which is what orders settlements before later reads; the store
    calls and the reads run in tasks of its own.
    """

    max_concurrency = 1
    reply_errors = (LLMError,)

    def __init__(
        self,
        store: BudgetStore,
        prices: PriceBook,
        *,
        ledger: SQLiteLedger | None = None,
        writer: LedgerWriter | None = None,
        budgets: Sequence[Budget] = (),
        max_cost_per_request: Decimal | None = None,
        thresholds: Sequence[float] = (0.5, 0.8, 1.0),
        on_alert: Sequence[AlertCallback] = (),
        fail_mode: Literal["open", "closed"] = "closed",
        reservation_ttl: float = RESERVATION_TTL_FLOOR,
        unknown_price: Literal["refuse", "allow"] = "refuse",
    ) -> None:
        self.store = store
        self.prices = prices
        self.ledger = ledger
        self.writer = writer
        self._entry_type: type[LedgerEntry] | None = None  # imported with the first entry
        self.budgets = list(budgets)
        self.max_cost_per_request = max_cost_per_request
        self.thresholds = sorted(thresholds)
        self.on_alert = list(on_alert)
        self.fail_mode = fail_mode
        self.reservation_ttl = max(reservation_ttl, RESERVATION_TTL_FLOOR)
        self.unknown_price = unknown_price
        self.reserved = 0
        self.refused = 0
        self.settled = 0
        self.alerts = 0
        self.unknown_cost = 0
        self.released = 0
        self.ledger_errors = 0
        self.spent = Decimal(0)
        self.book = BudgetBook(store, self._alerts, self._alerts_due)
        self._nursery: trio.Nursery | None = None
        self._reserving: dict[str, bool] = {}  # id -> abandoned while the store answers
        self._held: dict[str, Reservation] = {}
        self._claimed: set[tuple[str, float, str]] = set()  # alert claims already decided
        self._ledger_logged = False

    @classmethod
    def from_config(
        cls,
        store: BudgetStore,
        prices: PriceBook,
        config: Config,
        *,
        ledger: SQLiteLedger | None = None,
        writer: LedgerWriter | None = None,
        on_alert: Sequence[AlertCallback] = (),
    ) -> Accountant:
        """The accountant of ``config``'s ``cost_control``."""
        cost = config.cost_control
        return cls(
            store,
            prices,
            ledger=ledger,
            writer=writer,
            budgets=budgets_of(cost),
            max_cost_per_request=cost.max_cost_per_request,
            thresholds=cost.alert_thresholds,
            on_alert=on_alert,
            fail_mode=config.store_fail_mode,
            reservation_ttl=max(RESERVATION_TTL_FLOOR, config.timeout * 2),
            unknown_price=cost.unknown_price,
        )

    def lifespan(self, ctx: Context) -> Any:
        return self._lifespan(ctx)

    @asynccontextmanager
    async def _lifespan(self, ctx: Context) -> AsyncGenerator[None]:
        from ..store._ledger_writer import open_ledger_writer

        self._nursery = ctx.nursery
        async with AsyncExitStack() as stack:
            if self.writer is None and self.ledger is not None:
                self.writer = await stack.enter_async_context(open_ledger_writer(self.ledger))
            self.book.start(ctx.nursery)
            try:
                yield
            finally:
                await self.book.drain()

    async def handle(self, msg: AccountantMsg, ctx: Context) -> Any:
        match msg:
            case Reserve():
                if not self.prices.ready(msg.provider, msg.model):
                    await self.prices.load()  # once per process, in a worker thread
                return self._reserve(msg, ctx)
            case Abandon():
                await self._abandon(msg)
                return None
            case Settle():
                await self._settle(msg)
                return None
            case GetReport():
                if self.ledger is None:
                    raise CostExceeded("no usage ledger is configured")
                ctx.nursery.start_soon(self._report, ctx.defer(msg), msg)
                return None
            case BudgetLevels():
                ctx.nursery.start_soon(self._levels, ctx.defer(msg), self.book.arrived)
                return None
            case Flush():
                ctx.nursery.start_soon(self._flush, ctx.defer(msg), self.book.arrived)
                return None
            case AccountantStats():
                return self.statistics()

    def statistics(self) -> AccountantStatistics:
        """The accountant's counters now."""
        book = self.book
        return AccountantStatistics(
            reserved=self.reserved,
            refused=self.refused,
            settled=self.settled,
            alerts=self.alerts,
            unknown_cost=self.unknown_cost,
            store_errors=book.store_errors,
            spent=self.spent,
            held=len(self._held) + len(self._reserving),
            released=self.released,
            queued=book.queued,
            pending=book.pending,
            dropped=book.dropped,
            ledger_errors=self.ledger_errors,
            ledger=self.writer.statistics() if self.writer is not None else None,
        )

    # -- reserve -------------------------------------------------------------------------------

    def handle_nowait(self, msg: AccountantMsg) -> Any:
        """Reserve at once when no budget applies (the cap is checked, nothing is held in a
        store) or the budget store is in memory with every settlement taken applied, and
        take a settlement at once when the budget store's queue and the ledger writer have
        room. Anything else goes through the mailbox (`trio.WouldBlock`), before anything
        changes.

        Raises:
            CostExceeded: the cap or a budget refuses the request, or its price is unknown.
            trio.WouldBlock: the message must go through the mailbox.
        """
        if isinstance(msg, Settle):
            self._settle_nowait(msg)
            return None
        if isinstance(msg, Reserve):
            if not self.prices.ready(msg.provider, msg.model):
                raise trio.WouldBlock  # the handler loads the price table first
            reservation, budgets = self._priced(msg)
            if budgets:
                return self._reserve_nowait(reservation, budgets)
            self.reserved += 1
            return reservation
        raise trio.WouldBlock

    def _reserve_nowait(self, reservation: Reservation, budgets: list[Budget]) -> Reservation:
        """Reserve in a synchronous budget store at once when every settlement taken is
        applied (`BudgetBook.idle`); otherwise `trio.WouldBlock` (a task of ours asks).

        Raises:
            CostExceeded: a budget would be exceeded.
            trio.WouldBlock: the store must be asked by a task of ours.
        """
        rid = reservation.id
        if rid in self._reserving or rid in self._held:
            raise trio.WouldBlock
        check = self.book.reserve_nowait(
            budgets,
            reservation=rid,
            amount=reservation.worst_case or Decimal(0),
            ttl=self.reservation_ttl,
        )
        if not check.ok:
            self.refused += 1
            raise self._over_budget(reservation, check)
        self.reserved += 1
        self._held[rid] = reservation
        return reservation

    def _reserve(self, msg: Reserve, ctx: Context) -> Reservation | None:
        reservation, budgets = self._priced(msg)
        if not budgets:  # nothing is held in a store: nothing to give back
            self.reserved += 1
            return reservation
        self._reserving[reservation.id] = False
        ctx.nursery.start_soon(
            self._reserve_in_store, ctx.defer(msg), reservation, budgets, self.book.arrived
        )
        return None

    def _priced(self, msg: Reserve) -> tuple[Reservation, list[Budget]]:
        """The reservation of ``msg`` and the budgets it is to be held against.

        Raises:
            CostExceeded: the cap refuses it, or its price is unknown while a cap or a
                budget applies (counted as refused).
        """
        worst = self.prices.worst_case(
            msg.prompt_tokens, msg.max_tokens, provider=msg.provider, model=msg.model
        )
        budgets = budgets_for(self.budgets, msg.provider, msg.model, msg.tags)
        cap = self.max_cost_per_request
        if worst is None and (cap is not None or budgets) and self.unknown_price == "refuse":
            self.refused += 1
            raise CostExceeded(
                f"no price is known for {msg.provider}:{msg.model}, and a cap or a budget "
                "applies: its cost cannot be checked (price it in cost_control.prices, or "
                "set cost_control.unknown_price to 'allow')",
                provider=msg.provider,
                details={"reason": "unknown_price", "model": f"{msg.provider}:{msg.model}"},
            )
        if cap is not None and worst is not None and worst > cap:
            self.refused += 1
            raise CostExceeded(
                f"the worst case of this request (${worst:.6f} for {msg.prompt_tokens} prompt "
                f"and up to {msg.max_tokens} completion tokens) exceeds max_cost_per_request "
                f"${cap}",
                provider=msg.provider,
                details={
                    "worst_case": str(worst),
                    "cap": str(cap),
                    "scope": "request",
                    "prompt_tokens": msg.prompt_tokens,
                    "max_tokens": msg.max_tokens,
                },
            )
        reservation = Reservation(
            id=msg.reservation or new_id(),
            provider=msg.provider,
            model=msg.model,
            worst_case=worst,
            scopes=[b.scope for b in budgets],
            tags=dict(msg.tags),
        )
        return reservation, budgets

    async def _reserve_in_store(
        self,
        handle: ReplyHandle[Reservation],
        reservation: Reservation,
        budgets: list[Budget],
        after: int,
    ) -> None:
        # Settlements that arrived before this request count first (read-your-writes).
        await self.book.wait_applied(after)
        rid = reservation.id
        if handle.abandoned or self._reserving[rid]:  # its caller left: nothing was taken
            del self._reserving[rid]
            return
        try:
            check = await self.book.reserve(
                budgets,
                reservation=rid,
                amount=reservation.worst_case or Decimal(0),
                ttl=self.reservation_ttl,
            )
        except StoreUnavailable as exc:
            abandoned = self._reserving.pop(rid, False)
            log.debug("budget store unreachable while reserving: %s", exc)
            if self.fail_mode == "closed":
                self.refused += 1
                handle.fail(
                    CostExceeded(
                        "the budget store is unreachable and fail_mode is 'closed'",
                        provider=reservation.provider,
                        retryable=True,
                        details={"reason": "store_unavailable"},
                    )
                )
                return
            degraded = msgspec.structs.replace(reservation, degraded=True)
            if not abandoned and handle.reply(degraded):
                self.reserved += 1
                self._held[rid] = degraded
            return
        if not check.ok:
            self._reserving.pop(rid, None)
            self.refused += 1
            handle.fail(self._over_budget(reservation, check))
            return
        abandoned = self._reserving.pop(rid, False)
        if abandoned or not handle.reply(reservation):
            await self._give_back(rid, budgets)  # its caller left: nobody will settle it
            return
        self.reserved += 1
        self._held[rid] = reservation

    def _over_budget(self, reservation: Reservation, check: BudgetCheck) -> CostExceeded:
        return CostExceeded(
            f"budget {check.scope} would be exceeded: spent ${check.spent:.6f} and "
            f"reserved ${check.reserved:.6f} of ${check.limit}, this request may cost "
            f"${reservation.worst_case or 0:.6f}",
            provider=reservation.provider,
            details={
                "scope": check.scope,
                "spent": str(check.spent),
                "reserved": str(check.reserved),
                "limit": str(check.limit),
            },
        )

    async def _abandon(self, msg: Abandon) -> None:
        rid = msg.reservation
        if rid in self._reserving:  # the store is answering: given back once it has
            self._reserving[rid] = True
            return
        self._held.pop(rid, None)
        budgets = budgets_for(self.budgets, msg.provider, msg.model, msg.tags)
        if budgets:
            # Whether it was granted or not (an earlier incarnation may have taken it):
            # giving back an id that holds nothing changes nothing.
            await self._give_back(rid, budgets)

    async def _give_back(self, reservation: str, budgets: list[Budget]) -> None:
        self.released += 1
        await self.book.settle(budgets, reservation, Decimal(0), alerts=False)

    # -- settle --------------------------------------------------------------------------------

    def _costed(
        self, msg: Settle, *, priceable: bool = True
    ) -> tuple[Usage, list[Budget], Decimal]:
        """The settlement's usage with its cost, the budgets it applies to and the amount
        they are charged (an unknown cost is never counted as zero: the worst case stays).

        The price table must be loaded when the caller did not price the usage (see
        `_priceable`); ``priceable=False`` says it could not be: the cost is unknown."""
        reservation = msg.reservation
        usage = msg.usage
        cost = _given_cost(usage)
        if cost is None:  # not priced by the caller
            if priceable:
                cost = self.prices.cost(
                    usage, provider=reservation.provider, model=reservation.model
                )
            usage = msgspec.structs.replace(usage, cost=cost)
        budgets = budgets_for(
            self.budgets, reservation.provider, reservation.model, reservation.tags
        )
        actual = Decimal(0)
        if budgets:
            if cost is not None:
                actual = Decimal(cost)
            elif reservation.worst_case is not None:
                actual = Decimal(reservation.worst_case)
        return usage, budgets, actual

    def _count(self, msg: Settle, usage: Usage) -> None:
        self._held.pop(msg.reservation.id, None)
        if usage.cost is None:
            self.unknown_cost += 1
        else:
            self.spent += usage.cost
        self.settled += 1

    def _needs_table(self, msg: Settle) -> bool:
        """Whether pricing ``msg`` needs the price table, which is not loaded yet."""
        reservation = msg.reservation
        return _given_cost(msg.usage) is None and not self.prices.ready(
            reservation.provider, reservation.model
        )

    async def _priceable(self, msg: Settle) -> bool:
        """Load the price table if pricing ``msg`` needs it (once per process, in a worker
        thread); False when it cannot be loaded (the load logs why): the cost is unknown and
        the worst case stays charged."""
        if not self._needs_table(msg):
            return True
        try:
            await self.prices.load()
        except LLMError:
            return False
        return True

    async def _settle(self, msg: Settle) -> None:
        usage, budgets, actual = self._costed(msg, priceable=await self._priceable(msg))
        self._count(msg, usage)
        if budgets:
            await self.book.settle(budgets, msg.reservation.id, actual, alerts=True)
        if self.writer is not None:
            await self._record(msg, usage)

    def _settle_nowait(self, msg: Settle) -> None:
        """`_settle` at once, or `trio.WouldBlock` with nothing changed (the budget store's
        queue or the ledger writer is full)."""
        if self._needs_table(msg):
            raise trio.WouldBlock  # the handler loads the price table first
        usage, budgets, actual = self._costed(msg)
        if budgets and not self.book.has_room():
            raise trio.WouldBlock
        writer = self.writer
        if writer is not None:
            try:
                writer.put_nowait(self._entry(msg, usage))  # WouldBlock: nothing taken
            except trio.ClosedResourceError:
                self._ledger_closed()
        self._count(msg, usage)
        if budgets:
            self.book.settle_nowait(budgets, msg.reservation.id, actual, alerts=True)

    def _entry(self, msg: Settle, usage: Usage) -> LedgerEntry:
        entry_type = self._entry_type
        if entry_type is None:
            from ..store.ledger import LedgerEntry

            entry_type = self._entry_type = LedgerEntry
        reservation = msg.reservation
        return entry_type(
            id=reservation.id,
            at=time.time() if msg.at is None else msg.at,
            provider=reservation.provider,
            model=reservation.model,
            tags=reservation.tags,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost=usage.cost,
            estimated=usage.estimated,
            status=msg.status,
            error_code=msg.error_code,
            duration=msg.duration,
            request_id=msg.request_id,
        )

    async def _record(self, msg: Settle, usage: Usage) -> None:
        writer = self.writer
        assert writer is not None
        entry = self._entry(msg, usage)
        try:
            try:
                writer.put_nowait(entry)
            except trio.WouldBlock:
                await writer.put(entry)  # backpressure: the ledger is behind
        except trio.ClosedResourceError:
            self._ledger_closed()

    def _ledger_closed(self) -> None:
        self.ledger_errors += 1
        if not self._ledger_logged:
            self._ledger_logged = True
            log.error("the usage ledger writer is closed: settled calls are not recorded")

    # -- reads ---------------------------------------------------------------------------------

    async def _report(self, handle: ReplyHandle[UsageReport], msg: GetReport) -> None:
        ledger = self.ledger
        assert ledger is not None
        if self.writer is not None:
            await self.writer.flush()
        try:
            report = await ledger.report(tuple(msg.group_by), since=msg.since, until=msg.until)
        except (LedgerError, ValueError, trio.ClosedResourceError) as exc:
            handle.fail(exc)
            return
        handle.reply(report)

    async def _levels(self, handle: ReplyHandle[list[BudgetLevel]], after: int) -> None:
        await self.book.wait_applied(after)
        try:
            levels = await self.book.levels([b for b in self.budgets if not b.scope.endswith("=*")])
        except StoreUnavailable as exc:
            error = CostExceeded(
                "the budget store is unreachable: budget levels are unknown",
                retryable=True,
                details={"reason": "store_unavailable"},
            )
            error.__cause__ = exc
            handle.fail(error)
            return
        handle.reply(levels)

    async def _flush(self, handle: ReplyHandle[None], after: int) -> None:
        await self.book.wait_applied(after)
        if self.writer is not None:
            await self.writer.flush()
        handle.reply(None)

    # -- alerts --------------------------------------------------------------------------------

    def _alerts_due(self, levels: list[BudgetLevel]) -> bool:
        """Whether `_alerts` has a threshold to decide for these levels."""
        for level in levels:
            fraction = level.fraction
            for threshold in self.thresholds:
                if fraction < threshold:
                    break
                if (level.scope, threshold, level.period_id) not in self._claimed:
                    return True
        return False

    async def _alerts(self, levels: list[BudgetLevel], budgets: list[Budget]) -> None:
        periods = {b.scope: b.period for b in budgets}
        for level in levels:
            fraction = level.fraction
            for threshold in self.thresholds:
                if fraction < threshold:
                    break
                claim = (level.scope, threshold, level.period_id)
                if claim in self._claimed:  # decided already (here or by another process)
                    continue
                try:
                    first = await self.book.claim_alert(*claim, periods.get(level.scope, 86400))
                except StoreUnavailable:
                    continue
                if len(self._claimed) >= MAX_CLAIMS_KEPT:
                    self._claimed.clear()
                self._claimed.add(claim)
                if not first:
                    continue
                self.alerts += 1
                alert = BudgetAlert(
                    scope=level.scope,
                    threshold=threshold,
                    spent=level.spent,
                    limit=level.limit,
                    period_id=level.period_id,
                )
                log.warning(
                    "budget alert: %s reached %d%% (spent $%s of $%s, period %s)",
                    level.scope,
                    round(threshold * 100),
                    level.spent,
                    level.limit,
                    level.period_id,
                )
                for callback in self.on_alert:
                    if self._nursery is not None:
                        self._nursery.start_soon(_deliver, callback, alert)


async def _deliver(callback: AlertCallback, alert: BudgetAlert) -> None:
    try:
        result = callback(alert)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("budget alert callback failed")


def _given_cost(usage: Usage) -> Decimal | None:
    """The cost the caller priced, if it can be true (a negative or infinite one is none)."""
    cost = usage.cost
    if cost is not None and not (cost.is_finite() and cost >= 0):
        return None
    return cost
