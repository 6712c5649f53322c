"""The accountant: prices, per-request caps, budgets, alerts, and the usage ledger.

Before a request is sent, `Reserve` prices its worst case (the prompt plus ``max_tokens``,
all uncached) and refuses it with `CostExceeded` when that exceeds ``max_cost_per_request``
or would push any budget that applies over its limit. Budgets reserve the worst case, so
concurrent calls cannot overshoot together. After the request (finished, failed or
cancelled), `Settle` prices what it actually consumed, replaces the reservation with that
cost, writes one ledger row, and fires each budget alert threshold once per period.

Budgets apply by scope: ``global``, ``provider:<name>``, ``model:<provider>:<model>`` and
``tag:<key>=<value>`` (matched against the request's metadata; ``tag:<key>=*`` gives each
value its own budget). An unknown price gives a cost of None and one warning per model:
never a made-up 0.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
import trio

from ..errors import CostExceeded, LLMError
from ..runtime import Actor, Call, Context
from ..store._base import Budget, BudgetLevel, BudgetStore, StoreUnavailable
from ..store._report import UsageReport
from ..types import Usage

if TYPE_CHECKING:
    from ..config import Config, CostConfig
    from ..pricing import PriceBook
    from ..store.ledger import SQLiteLedger

__all__ = [
    "Accountant",
    "AccountantMsg",
    "AccountantStatistics",
    "AccountantStats",
    "BudgetAlert",
    "BudgetLevels",
    "GetReport",
    "Reservation",
    "Reserve",
    "Settle",
    "Settled",
    "budgets_for",
    "budgets_of",
]

log = logging.getLogger("llm_invocation.accountant")

RESERVATION_TTL_FLOOR: Final = 600.0

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
    provider: str
    model: str
    prompt_tokens: int
    max_tokens: int
    tags: dict[str, str] = msgspec.field(default_factory=dict[str, str])


class Settled(msgspec.Struct, frozen=True, kw_only=True):
    """The settled usage with its cost, and the budgets' levels after it."""

    usage: Usage
    levels: list[BudgetLevel]


class Settle(Call[Settled], frozen=True, kw_only=True):
    reservation: Reservation
    usage: Usage
    status: Status = "ok"
    error_code: str | None = None
    duration: float = 0.0
    request_id: str | None = None


class GetReport(Call[UsageReport], frozen=True, kw_only=True):
    group_by: list[str] = msgspec.field(default_factory=lambda: ["provider", "model"])
    since: float | None = None
    until: float | None = None


class BudgetLevels(Call[list[BudgetLevel]], frozen=True, kw_only=True):
    """The levels of every configured budget (``tag:<key>=*`` ones are per value: omitted)."""


class AccountantStatistics(msgspec.Struct, frozen=True, kw_only=True):
    reserved: int
    refused: int
    settled: int
    alerts: int
    unknown_cost: int
    store_errors: int
    spent: Decimal


class AccountantStats(Call[AccountantStatistics], frozen=True, kw_only=True):
    pass


AccountantMsg = Reserve | Settle | GetReport | BudgetLevels | AccountantStats


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
    """The accountant actor; see the module documentation."""

    max_concurrency = 64  # settles wait on ledger commits: let them overlap
    reply_errors = (LLMError,)

    def __init__(
        self,
        store: BudgetStore,
        prices: PriceBook,
        *,
        ledger: SQLiteLedger | None = None,
        budgets: Sequence[Budget] = (),
        max_cost_per_request: Decimal | None = None,
        thresholds: Sequence[float] = (0.5, 0.8, 1.0),
        on_alert: Sequence[AlertCallback] = (),
        fail_mode: Literal["open", "closed"] = "closed",
        reservation_ttl: float = RESERVATION_TTL_FLOOR,
    ) -> None:
        self.store = store
        self.prices = prices
        self.ledger = ledger
        self.budgets = list(budgets)
        self.max_cost_per_request = max_cost_per_request
        self.thresholds = sorted(thresholds)
        self.on_alert = list(on_alert)
        self.fail_mode = fail_mode
        self.reservation_ttl = max(reservation_ttl, RESERVATION_TTL_FLOOR)
        self.reserved = 0
        self.refused = 0
        self.settled = 0
        self.alerts = 0
        self.unknown_cost = 0
        self.store_errors = 0
        self.spent = Decimal(0)
        self._nursery: trio.Nursery | None = None
        self._outage_logged = False

    @classmethod
    def from_config(
        cls,
        store: BudgetStore,
        prices: PriceBook,
        config: Config,
        *,
        ledger: SQLiteLedger | None = None,
        on_alert: Sequence[AlertCallback] = (),
    ) -> Accountant:
        """The accountant of ``config``'s ``cost_control``."""
        cost = config.cost_control
        return cls(
            store,
            prices,
            ledger=ledger,
            budgets=budgets_of(cost),
            max_cost_per_request=cost.max_cost_per_request,
            thresholds=cost.alert_thresholds,
            on_alert=on_alert,
            fail_mode=config.store_fail_mode,
            reservation_ttl=max(RESERVATION_TTL_FLOOR, config.timeout * 2),
        )

    def lifespan(self, ctx: Context) -> Any:
        self._nursery = ctx.nursery
        return super().lifespan(ctx)

    async def handle(self, msg: AccountantMsg, ctx: Context) -> Any:
        match msg:
            case Reserve():
                return await self._reserve(msg)
            case Settle():
                return await self._settle(msg)
            case GetReport(group_by=group_by, since=since, until=until):
                if self.ledger is None:
                    raise CostExceeded("no usage ledger is configured")
                return await self.ledger.report(group_by=tuple(group_by), since=since, until=until)
            case BudgetLevels():
                return await self.store.levels(
                    [b for b in self.budgets if not b.scope.endswith("=*")]
                )
            case AccountantStats():
                return AccountantStatistics(
                    reserved=self.reserved,
                    refused=self.refused,
                    settled=self.settled,
                    alerts=self.alerts,
                    unknown_cost=self.unknown_cost,
                    store_errors=self.store_errors,
                    spent=self.spent,
                )

    # -- reserve -------------------------------------------------------------------------------

    async def _reserve(self, msg: Reserve) -> Reservation:
        worst = self.prices.worst_case(
            msg.prompt_tokens, msg.max_tokens, provider=msg.provider, model=msg.model
        )
        cap = self.max_cost_per_request
        if cap is not None and worst is not None and worst > cap:
            self.refused += 1
            raise CostExceeded(
                f"the worst case of this request (${worst:.6f} for {msg.prompt_tokens} prompt "
                f"and up to {msg.max_tokens} completion tokens) exceeds max_cost_per_request "
                f"${cap}",
                provider=msg.provider,
                details={"worst_case": str(worst), "cap": str(cap), "scope": "request"},
            )
        budgets = budgets_for(self.budgets, msg.provider, msg.model, msg.tags)
        reservation = Reservation(
            id=secrets.token_hex(8),
            provider=msg.provider,
            model=msg.model,
            worst_case=worst,
            scopes=[b.scope for b in budgets],
            tags=dict(msg.tags),
        )
        if not budgets:
            self.reserved += 1
            return reservation
        try:
            check = await self.store.reserve(
                budgets,
                reservation=reservation.id,
                amount=worst if worst is not None else Decimal(0),
                ttl=self.reservation_ttl,
            )
        except StoreUnavailable as exc:
            self.store_errors += 1
            if not self._outage_logged:
                self._outage_logged = True
                log.error("budget store unreachable (fail_mode=%s): %s", self.fail_mode, exc)
            if self.fail_mode == "closed":
                self.refused += 1
                raise CostExceeded(
                    "the budget store is unreachable and fail_mode is 'closed'",
                    provider=msg.provider,
                    retryable=True,
                    details={"reason": "store_unavailable"},
                ) from exc
            return msgspec.structs.replace(reservation, degraded=True)
        if self._outage_logged:
            self._outage_logged = False
            log.warning("budget store reachable again")
        if not check.ok:
            self.refused += 1
            raise CostExceeded(
                f"budget {check.scope} would be exceeded: spent ${check.spent:.6f} and "
                f"reserved ${check.reserved:.6f} of ${check.limit}, this request may cost "
                f"${worst or 0:.6f}",
                provider=msg.provider,
                details={
                    "scope": check.scope,
                    "spent": str(check.spent),
                    "reserved": str(check.reserved),
                    "limit": str(check.limit),
                },
            )
        self.reserved += 1
        return reservation

    # -- settle --------------------------------------------------------------------------------

    async def _settle(self, msg: Settle) -> Settled:
        reservation = msg.reservation
        usage = msg.usage
        cost = self.prices.cost(usage, provider=reservation.provider, model=reservation.model)
        if cost is None:
            self.unknown_cost += 1
        else:
            self.spent += cost
        usage = msgspec.structs.replace(usage, cost=cost)
        levels: list[BudgetLevel] = []
        budgets = budgets_for(
            self.budgets, reservation.provider, reservation.model, reservation.tags
        )
        if budgets and not reservation.degraded:
            try:
                levels = await self.store.settle(
                    budgets, reservation=reservation.id, actual=cost or Decimal(0)
                )
            except StoreUnavailable as exc:
                self.store_errors += 1
                log.error("could not settle budgets (the reservation will expire): %s", exc)
        if self.ledger is not None:
            await self._record(msg, usage)
        self.settled += 1
        if levels:
            await self._alerts(levels, budgets)
        return Settled(usage=usage, levels=levels)

    async def _record(self, msg: Settle, usage: Usage) -> None:
        from ..store.ledger import LedgerEntry

        assert self.ledger is not None
        reservation = msg.reservation
        entry = LedgerEntry(
            id=reservation.id,
            at=time.time(),
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
        await self.ledger.append(entry)

    async def _alerts(self, levels: list[BudgetLevel], budgets: list[Budget]) -> None:
        periods = {b.scope: b.period for b in budgets}
        for level in levels:
            fraction = level.fraction
            for threshold in self.thresholds:
                if fraction < threshold:
                    break
                try:
                    first = await self.store.claim_alert(
                        level.scope, threshold, level.period_id, periods.get(level.scope, 86400)
                    )
                except StoreUnavailable:
                    self.store_errors += 1
                    continue
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
