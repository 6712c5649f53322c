"""A caller cancelled around `Acquire` leaves nothing behind: no lease, no place in line, no
ticket in the store - in memory and on Redis, whichever await the cancellation hit."""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.actors.governor import (
    Abandon,
    Acquire,
    Governor,
    GovernorStats,
    Lease,
    RateLimitSettings,
    Release,
)
from llm_invocation.runtime import ActorRef, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.store._base import Grant, RateLimit, RateObservation, RateStore, Ticket
from llm_invocation.store.memory import MemoryRateStore
from llm_invocation.store.redis import open_redis_stores

from .store_worker import LONG_REDIS_TIMEOUT, redis_url_or_skip

LIMIT = RateLimitSettings(concurrency=3, tokens_per_minute=100_000)
GLOBAL = RateLimit(key="global", concurrency=3, tokens_per_minute=100_000)


@asynccontextmanager
async def governor(store: RateStore, **kwargs: Any) -> AsyncGenerator[ActorRef[Any]]:
    kwargs.setdefault("global_limits", LIMIT)
    spec = SupervisorSpec(children=[ChildSpec.actor("gov", lambda: Governor(store, **kwargs))])
    async with open_runtime(spec) as runtime:
        yield runtime.ref("gov", Governor)


def acquire(lease: str, tokens: int = 100) -> Acquire:
    return Acquire(provider="p", model="m", tokens=tokens, lease=lease)


async def settled(gov: ActorRef[Any], store: RateStore) -> None:
    """Wait until the governor and the store hold nothing (fails after 10 s)."""
    state: tuple[object, ...] = ()
    with trio.move_on_after(10):
        while True:
            stats = await gov.call(GovernorStats())
            levels = await store.levels(GLOBAL)
            state = (stats.waiting, stats.active, levels["leases"], levels["waiting"])
            if state == (0, 0, 0, 0):
                return
            await trio.sleep(0.01)
    pytest.fail(f"left behind (waiting, active, leases, tickets): {state}; {stats}")


# -- one cancellation at a time ----------------------------------------------------------------


async def test_abandon_drops_a_queued_caller_and_its_ticket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryRateStore()
    async with governor(store) as gov:
        held = [await gov.call(acquire(f"h{i}")) for i in range(3)]
        with trio.move_on_after(0.75):  # between two of its asks
            await gov.call(acquire("queued"))
        await gov.send(Abandon(lease="queued"))
        stats = await gov.call(GovernorStats())
        assert (stats.waiting, stats.abandoned) == (0, 1)
        assert (await store.levels(GLOBAL))["waiting"] == 0
        await gov.send(Release(lease=held[0], used=0))
        assert (await store.levels(GLOBAL))["leases"] == 2  # nobody took the freed slot


async def test_abandon_after_the_grant_gives_the_lease_back() -> None:
    store = MemoryRateStore()
    async with governor(store) as gov:
        await gov.call(acquire("granted"))
        await gov.send(Abandon(lease="granted"))
        await settled(gov, store)


async def test_a_cancelled_caller_without_abandon_leaves_nothing_once_its_turn_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryRateStore()
    async with governor(store) as gov:
        held = [await gov.call(acquire(f"h{i}")) for i in range(3)]
        with trio.move_on_after(1):
            await gov.call(acquire("gone"))
        for lease in held:
            await gov.send(Release(lease=lease, used=0))
        await settled(gov, store)
        assert (await gov.call(GovernorStats())).abandoned == 1


async def test_abandon_of_an_unknown_lease_is_ignored() -> None:
    store = MemoryRateStore()
    async with governor(store) as gov:
        await gov.send(Abandon(lease="never-asked"))
        assert (await gov.call(GovernorStats())).abandoned == 0


class GatedStore(RateStore):
    """A remote-like store (it awaits) whose acquire waits at a gate the test opens."""

    def __init__(self) -> None:
        self.inner = MemoryRateStore()
        self.gate = trio.Event()
        self.asking = trio.Event()

    async def acquire(
        self,
        limits: Sequence[RateLimit],
        *,
        lease: str,
        tokens: int,
        ttl: float,
        ticket: Ticket | None = None,
    ) -> Grant:
        self.asking.set()
        await self.gate.wait()
        return await self.inner.acquire(limits, lease=lease, tokens=tokens, ttl=ttl, ticket=ticket)

    async def settle(
        self, limits: Sequence[RateLimit], *, lease: str, reserved: int, used: int
    ) -> None:
        await self.inner.settle(limits, lease=lease, reserved=reserved, used=used)

    async def leave(self, limits: Sequence[RateLimit], *, lease: str) -> None:
        await self.inner.leave(limits, lease=lease)

    async def watch(self, on_release: Callable[[frozenset[str]], None]) -> None:
        await self.inner.watch(on_release)

    async def renew(self, limits: Sequence[RateLimit], *, lease: str, ttl: float) -> None:
        await self.inner.renew(limits, lease=lease, ttl=ttl)

    async def observe(self, limit: RateLimit, observation: RateObservation) -> None:
        await self.inner.observe(limit, observation)

    async def levels(self, limit: RateLimit) -> dict[str, float]:
        return await self.inner.levels(limit)


@pytest.mark.parametrize("send_abandon", [True, False])
async def test_a_grant_the_caller_left_during_gives_the_lease_back(send_abandon: bool) -> None:
    store = GatedStore()
    async with governor(store) as gov:
        with trio.CancelScope() as scope:

            async def cancel_once_asking() -> None:
                await store.asking.wait()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_once_asking)
                await gov.call(acquire("late"))
        assert scope.cancelled_caught
        if send_abandon:
            await gov.send(Abandon(lease="late"))
        store.gate.set()  # the store grants now, to a caller that has left
        await settled(gov, store)


# -- hundreds of random cancellations ----------------------------------------------------------


async def cancel_at_random(gov: ActorRef[Any], seed: int, callers: int) -> dict[str, int]:
    """``callers`` tasks ask, hold and release; most are cancelled at a random moment (and
    then send `Abandon`, as the invocation layer does), a fifth never are."""
    rng = random.Random(seed)
    outcomes = {"cancelled_waiting": 0, "cancelled_holding": 0, "finished": 0, "patient": 0}
    prefix = secrets.token_hex(3)

    async def caller(number: int, patience: float, hold: float) -> None:
        lease_id = f"{prefix}-{number}"
        lease: Lease | None = None
        with trio.move_on_after(patience):
            lease = await gov.call(acquire(lease_id))
            await trio.sleep(hold)
            gov.send_nowait(Release(lease=lease, used=50))
            outcomes["finished"] += 1
            return
        if lease is None:
            outcomes["cancelled_waiting"] += 1
            gov.send_nowait(Abandon(lease=lease_id))
        else:
            outcomes["cancelled_holding"] += 1
            gov.send_nowait(Release(lease=lease, used=0))

    async with trio.open_nursery() as nursery:
        for number in range(callers):
            patience = rng.choice(
                [math.inf, 0.0, rng.uniform(0, 0.002), rng.uniform(0, 0.01), rng.uniform(0, 0.03)]
            )
            outcomes["patient"] += patience == math.inf
            nursery.start_soon(caller, number, patience, rng.uniform(0, 0.01))
            if rng.random() < 0.3:
                await trio.sleep(rng.uniform(0, 0.002))
    return outcomes


def check_outcomes(outcomes: dict[str, int]) -> None:
    assert outcomes["finished"] >= outcomes["patient"] > 0, outcomes
    assert outcomes["cancelled_waiting"] > 0, outcomes


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_cancellations_in_memory_leave_nothing_behind(seed: int) -> None:
    store = MemoryRateStore()
    async with governor(store, max_wait=60) as gov:
        outcomes = await cancel_at_random(gov, seed, callers=300)
        await settled(gov, store)
    check_outcomes(outcomes)


@pytest.mark.redis
@pytest.mark.parametrize("seed", [1, 2])
async def test_random_cancellations_on_redis_leave_nothing_behind(seed: int) -> None:
    prefix = f"test-cancel-{secrets.token_hex(4)}:"
    async with open_redis_stores(
        redis_url_or_skip(), prefix=prefix, timeout=LONG_REDIS_TIMEOUT
    ) as (store, _):
        try:
            async with governor(store, max_wait=60) as gov:
                outcomes = await cancel_at_random(gov, seed, callers=300)
                await settled(gov, store)
        finally:
            script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
            await store._conn.run(  # pyright: ignore[reportPrivateUsage]
                "cleanup", lambda client: client.eval(script, [], [f"*{prefix}*"])
            )
    check_outcomes(outcomes)
