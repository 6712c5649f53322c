"""Admission without a round trip: the governor grants a lease at once when nobody waits and
there is room (rate limits in memory), the accountant reserves at once when no budget applies,
and both take releases and settlements at once; anything else goes through the mailbox, in
order, as before."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, cast

import pytest
import trio
import trio.testing

from llm_invocation.actors.accountant import (
    Accountant,
    AccountantStats,
    BudgetAlert,
    BudgetLevels,
    Reservation,
    Reserve,
    Settle,
)
from llm_invocation.actors.governor import (
    Acquire,
    Governor,
    GovernorStats,
    Lease,
    RateLimitSettings,
    Release,
)
from llm_invocation.config import PriceOverride
from llm_invocation.errors import CostExceeded
from llm_invocation.pricing import PriceBook
from llm_invocation.runtime import ActorRef, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.store._base import Budget, RateLimit
from llm_invocation.store._ledger_writer import LedgerWriter
from llm_invocation.store.memory import MemoryBudgetStore, MemoryRateStore
from llm_invocation.types import Usage

PRICES = {"m": PriceOverride(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))}


class RemoteLikeStore(MemoryRateStore):
    """A memory store that says it is not synchronous, as a remote one (Redis)."""

    synchronous = False


@asynccontextmanager
async def governor(store: MemoryRateStore | None = None, **kwargs: Any) -> AsyncGenerator[Any]:
    store = store or MemoryRateStore()
    spec = SupervisorSpec(children=[ChildSpec.actor("gov", lambda: Governor(store, **kwargs))])
    async with open_runtime(spec) as runtime:
        yield runtime.ref("gov", Governor), store


def acquire(lease: str, model: str = "m") -> Acquire:
    return Acquire(provider="p", model=model, tokens=10, lease=lease)


async def statistics(gov: ActorRef[Any]) -> Any:
    return await gov.call(GovernorStats())


async def test_a_free_governor_grants_a_lease_at_once() -> None:
    async with governor(global_limits=RateLimitSettings(concurrency=2)) as (gov, _):
        lease = gov.call_nowait(acquire("a"))
        assert isinstance(lease, Lease)
        assert (lease.id, lease.keys, lease.waited) == ("a", ["global", "m:p:m"], 0.0)
        stats = await statistics(gov)
        assert (stats.granted, stats.active, stats.waiting) == (1, 1, 0)


async def test_a_release_taken_at_once_frees_the_capacity_at_once() -> None:
    async with governor(global_limits=RateLimitSettings(concurrency=1)) as (gov, _):
        lease = gov.call_nowait(acquire("a"))
        gov.cast_nowait(Release(lease=lease, used=5))
        assert gov.call_nowait(acquire("b")).id == "b"


async def test_without_room_the_lease_is_not_granted_at_once_and_nothing_is_left_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = RateLimitSettings(concurrency=1)
    async with governor(global_limits=limit, max_wait=math.inf) as (gov, store):
        first = gov.call_nowait(acquire("a"))
        with pytest.raises(trio.WouldBlock):
            gov.call_nowait(acquire("b"))
        levels = await store.levels(RateLimit(key="global", concurrency=1))
        assert (levels["leases"], levels["waiting"]) == (1, 0)  # no ticket of "b" kept
        stats = await statistics(gov)
        assert (stats.granted, stats.refused, stats.waiting) == (1, 0, 0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gov.call, acquire("b"))  # through the mailbox: it waits
            await trio.testing.wait_all_tasks_blocked()
            assert (await statistics(gov)).waiting == 1
            gov.cast_nowait(Release(lease=first, used=0))
        assert (await statistics(gov)).granted == 2


async def test_a_newcomer_is_not_granted_at_once_past_callers_waiting_in_its_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    granted: list[str] = []
    limit = RateLimitSettings(concurrency=1)
    async with governor(global_limits=limit, max_wait=math.inf) as (gov, _):
        first = gov.call_nowait(acquire("a"))

        async def take(lease: str) -> None:
            granted.append((await gov.call(acquire(lease))).id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, "b")
            await trio.testing.wait_all_tasks_blocked()
            gov.cast_nowait(Release(lease=first, used=0))  # room for one: "b" is first in line
            with pytest.raises(trio.WouldBlock):
                gov.call_nowait(acquire("c"))
        assert granted == ["b"]


async def test_a_remote_store_is_never_asked_at_once() -> None:
    async with governor(RemoteLikeStore()) as (gov, _):
        with pytest.raises(trio.WouldBlock):
            gov.call_nowait(acquire("a"))
        with pytest.raises(trio.WouldBlock):
            gov.cast_nowait(Release(lease=Lease(id="a", keys=["m:p:m"], tokens=10), used=0))
        lease = await gov.call(acquire("a"))  # through the mailbox and the pump, as before
        assert lease.id == "a"


async def test_an_acquire_without_a_lease_id_goes_through_the_mailbox() -> None:
    async with governor() as (gov, _):
        with pytest.raises(trio.WouldBlock):
            gov.call_nowait(Acquire(provider="p", model="m", tokens=10))


# -- the accountant --------------------------------------------------------------------------


class RemoteLikeBudgets(MemoryBudgetStore):
    """A memory budget store that says it is not synchronous, as a remote one (Redis)."""

    synchronous = False


@asynccontextmanager
async def accountant(**kwargs: Any) -> AsyncGenerator[Any]:
    prices = PriceBook(overrides=PRICES)
    store = kwargs.pop("store", None) or MemoryBudgetStore()
    spec = SupervisorSpec(
        children=[ChildSpec.actor("acc", lambda: Accountant(store, prices, **kwargs))]
    )
    async with open_runtime(spec) as runtime:
        yield runtime.ref("acc", Accountant)


def reserve(rid: str) -> Reserve:
    return Reserve(provider="p", model="m", prompt_tokens=1000, max_tokens=1000, reservation=rid)


async def test_without_a_budget_a_reservation_is_made_at_once() -> None:
    async with accountant() as acc:
        reservation = acc.call_nowait(reserve("r1"))
        assert isinstance(reservation, Reservation)
        assert (reservation.id, reservation.worst_case) == ("r1", Decimal("0.003"))
        assert (await acc.call(AccountantStats())).reserved == 1


async def test_the_cap_refuses_at_once() -> None:
    async with accountant(max_cost_per_request=Decimal("0.001")) as acc:
        with pytest.raises(CostExceeded):
            acc.call_nowait(reserve("r1"))
        stats = await acc.call(AccountantStats())
        assert (stats.reserved, stats.refused) == (0, 1)


async def test_a_budget_in_memory_is_reserved_at_once_when_every_settlement_is_applied() -> None:
    budget = Budget(scope="global", limit=Decimal(1))
    async with accountant(budgets=[budget]) as acc:
        reservation = acc.call_nowait(reserve("r1"))
        assert reservation.scopes == ["global"]
        stats = await acc.call(AccountantStats())
        assert (stats.reserved, stats.held) == (1, 1)


async def test_a_budget_refuses_at_once() -> None:
    budget = Budget(scope="global", limit=Decimal("0.004"))
    async with accountant(budgets=[budget]) as acc:
        acc.call_nowait(reserve("r1"))  # 0.003 of 0.004
        with pytest.raises(CostExceeded) as refused:
            acc.call_nowait(reserve("r2"))
        assert refused.value.details["scope"] == "global"
        stats = await acc.call(AccountantStats())
        assert (stats.reserved, stats.refused, stats.held) == (1, 1, 1)


async def test_a_remote_budget_store_is_reserved_through_the_mailbox() -> None:
    budget = Budget(scope="global", limit=Decimal(1))
    async with accountant(budgets=[budget], store=RemoteLikeBudgets()) as acc:
        with pytest.raises(trio.WouldBlock):
            acc.call_nowait(reserve("r1"))
        assert (await acc.call(AccountantStats())).held == 0
        reservation = await acc.call(reserve("r1"))
        assert reservation.scopes == ["global"]


async def test_a_settlement_is_taken_at_once_and_charged_to_its_budget() -> None:
    budget = Budget(scope="global", limit=Decimal(1))
    async with accountant(budgets=[budget]) as acc:
        reservation = await acc.call(reserve("r1"))
        usage = Usage(prompt_tokens=1000, completion_tokens=500, cost=Decimal("0.002"))
        acc.cast_nowait(Settle(reservation=reservation, usage=usage))
        stats = await acc.call(AccountantStats())
        assert (stats.settled, stats.spent, stats.held) == (1, Decimal("0.002"), 0)
        [level] = await acc.call(BudgetLevels())
        assert level.spent == Decimal("0.002")


async def test_a_settlement_is_not_taken_at_once_while_the_ledger_writer_is_full() -> None:
    writer = LedgerWriter(cast("Any", None), max_batch=1)  # nobody writes: one entry fills it
    async with accountant(writer=writer) as acc:
        reservation = acc.call_nowait(reserve("r1"))
        acc.cast_nowait(Settle(reservation=reservation, usage=Usage(cost=Decimal(0))))
        with pytest.raises(trio.WouldBlock):
            acc.cast_nowait(Settle(reservation=reservation, usage=Usage(cost=Decimal(1))))
        stats = await acc.call(AccountantStats())
        assert (stats.settled, stats.spent) == (1, Decimal(0))
        assert writer.statistics().accepted == 1


async def test_an_alert_of_a_settlement_applied_at_once_fires_before_later_reads() -> None:
    alerts: list[BudgetAlert] = []
    budget = Budget(scope="global", limit=Decimal("0.004"))
    async with accountant(budgets=[budget], on_alert=[alerts.append]) as acc:
        reservation = acc.call_nowait(reserve("r1"))
        usage = Usage(prompt_tokens=1000, completion_tokens=1000, cost=Decimal("0.003"))
        acc.cast_nowait(Settle(reservation=reservation, usage=usage))
        await acc.call(BudgetLevels())  # waits for the settlements before it, alerts included
        assert (await acc.call(AccountantStats())).alerts == 1
        await trio.testing.wait_all_tasks_blocked()
        assert [(a.scope, a.threshold) for a in alerts] == [("global", 0.5)]
