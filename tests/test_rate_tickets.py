"""The line of waiters in a rate store: tickets, prior claims, release notices, observations.

One contract for both rate stores, like ``tests/test_store_contract.py``: each test runs on
`MemoryRateStore` (a fake clock) and on `RedisRateStore` (the server's clock, so times are
short). ``other`` is a second user of the same store: the same object in memory, a second
connection to the same prefix in Redis (another process, as far as the store can tell).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from llm_invocation.store._base import (
    MAX_OBSERVED_SECONDS,
    RateLimit,
    RateObservation,
    RateStore,
    Ticket,
    checked_observation,
)
from llm_invocation.store.memory import MemoryRateStore
from llm_invocation.store.redis import RedisRateStore, open_redis_stores

from .store_worker import LONG_REDIS_TIMEOUT, redis_url_or_skip


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Shared:
    kind: str
    rate: RateStore
    other: RateStore
    advance: Callable[[float], Awaitable[None]]


async def delete_prefixed(store: Any, prefix: str) -> None:
    script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
    await store._conn.run("cleanup", lambda client: client.eval(script, [], [f"*{prefix}*"]))


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Shared]:
    if request.param == "memory":
        clock = FakeClock(1_000.0)

        async def advance(seconds: float) -> None:
            clock.now += seconds
            await trio.lowlevel.checkpoint()

        store = MemoryRateStore(clock=clock)
        yield Shared("memory", store, store, advance)
        return
    url = redis_url_or_skip()
    prefix = f"test-{secrets.token_hex(6)}:"
    async with (
        open_redis_stores(url, prefix=prefix, timeout=LONG_REDIS_TIMEOUT) as (rate, _),
        open_redis_stores(url, prefix=prefix, timeout=LONG_REDIS_TIMEOUT) as (other, _),
    ):
        try:
            yield Shared("redis", rate, other, trio.sleep)
        finally:
            await delete_prefixed(rate, prefix)


ONE = RateLimit(key="c", concurrency=1)


async def waiting(store: RateStore, limit: RateLimit) -> float:
    return (await store.levels(limit))["waiting"]


# -- tickets ----------------------------------------------------------------------------------


async def test_a_refusal_without_a_ticket_leaves_nothing_behind(shared: Shared) -> None:
    assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
    assert not (await shared.rate.acquire([ONE], lease="l2", tokens=0, ttl=10)).granted
    assert await waiting(shared.rate, ONE) == 0


async def test_a_refusal_with_a_ticket_registers_it_where_the_request_does_not_fit(
    shared: Shared,
) -> None:
    roomy = RateLimit(key="roomy", requests_per_minute=600)
    assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
    grant = await shared.rate.acquire([ONE, roomy], lease="l2", tokens=0, ttl=10, ticket=Ticket())
    assert (grant.granted, grant.key, grant.reason) == (False, "c", "concurrency")
    assert (await waiting(shared.rate, ONE), await waiting(shared.rate, roomy)) == (1, 0)


async def test_an_older_ticket_takes_a_freed_slot_before_a_newcomer(shared: Shared) -> None:
    assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
    queued = await shared.other.acquire([ONE], lease="old", tokens=0, ttl=10, ticket=Ticket())
    assert not queued.granted
    await shared.rate.settle([ONE], lease="l1", reserved=0, used=0)
    newcomer = await shared.rate.acquire([ONE], lease="new", tokens=0, ttl=10, ticket=Ticket())
    assert (newcomer.granted, newcomer.reason) == (False, "concurrency")
    ticket = Ticket(since=queued.now)
    assert (await shared.other.acquire([ONE], lease="old", tokens=0, ttl=10, ticket=ticket)).granted
    assert await waiting(shared.rate, ONE) == 1  # the newcomer's ticket, no longer the old one


async def test_seniority_is_since_not_the_order_of_asking(shared: Shared) -> None:
    assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
    first = await shared.rate.acquire([ONE], lease="a", tokens=0, ttl=10, ticket=Ticket())
    second = await shared.rate.acquire([ONE], lease="b", tokens=0, ttl=10, ticket=Ticket())
    await shared.rate.settle([ONE], lease="l1", reserved=0, used=0)
    # The younger one asks first and is refused; the older one gets the slot.
    young = Ticket(since=second.now)
    assert not (await shared.rate.acquire([ONE], lease="b", tokens=0, ttl=10, ticket=young)).granted
    old = Ticket(since=first.now)
    assert (await shared.rate.acquire([ONE], lease="a", tokens=0, ttl=10, ticket=old)).granted


async def test_older_token_claims_keep_a_small_newcomer_out(shared: Shared) -> None:
    limit = RateLimit(key="t", tokens_per_minute=600)  # 10 tokens a second
    started = time.monotonic()
    assert (await shared.rate.acquire([limit], lease="drain", tokens=550, ttl=10)).granted
    big = await shared.other.acquire([limit], lease="big", tokens=500, ttl=10, ticket=Ticket())
    assert (big.granted, big.reason) == (False, "tokens")
    small = await shared.rate.acquire([limit], lease="small", tokens=10, ttl=10)
    assert (small.granted, small.reason) == (False, "tokens")
    # After the big one; on Redis the server's clock (and the refill) ran meanwhile.
    expected = (10 + 500 - 50) / 10
    assert expected - (time.monotonic() - started) - 0.01 <= small.wait <= expected + 1e-6


async def test_a_request_that_can_never_fit_registers_no_ticket(shared: Shared) -> None:
    limit = RateLimit(key="small", tokens_per_minute=100)
    grant = await shared.rate.acquire([limit], lease="huge", tokens=101, ttl=10, ticket=Ticket())
    assert (grant.granted, grant.wait) == (False, math.inf)
    assert await waiting(shared.rate, limit) == 0


async def test_a_grant_drops_the_ticket(shared: Shared) -> None:
    assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
    grant = await shared.rate.acquire([ONE], lease="l2", tokens=0, ttl=10, ticket=Ticket())
    await shared.rate.settle([ONE], lease="l1", reserved=0, used=0)
    again = Ticket(since=grant.now)
    assert (await shared.rate.acquire([ONE], lease="l2", tokens=0, ttl=10, ticket=again)).granted
    assert await waiting(shared.rate, ONE) == 0


async def test_leave_drops_the_ticket_and_frees_its_claim(shared: Shared) -> None:
    assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
    await shared.other.acquire([ONE], lease="gone", tokens=0, ttl=10, ticket=Ticket())
    await shared.other.leave([ONE], lease="gone")
    await shared.other.leave([ONE], lease="never-there")
    await shared.rate.settle([ONE], lease="l1", reserved=0, used=0)
    assert await waiting(shared.rate, ONE) == 0
    assert (await shared.rate.acquire([ONE], lease="l2", tokens=0, ttl=10)).granted


async def test_a_ticket_expires_unless_asked_again(shared: Shared) -> None:
    assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
    short = Ticket(ttl=0.2)
    await shared.other.acquire([ONE], lease="dead", tokens=0, ttl=10, ticket=short)
    await shared.rate.settle([ONE], lease="l1", reserved=0, used=0)
    assert not (await shared.rate.acquire([ONE], lease="l2", tokens=0, ttl=10)).granted
    await shared.advance(0.25)
    assert await waiting(shared.rate, ONE) == 0
    assert (await shared.rate.acquire([ONE], lease="l2", tokens=0, ttl=10)).granted


# -- release notices --------------------------------------------------------------------------


async def until_watching(shared: Shared) -> None:
    """Wait until the Redis store's subscription is in place (memory: at once)."""
    if not isinstance(shared.rate, RedisRateStore):
        await trio.testing.wait_all_tasks_blocked()
        return
    store = shared.rate
    with trio.fail_after(5):
        while True:
            reply: Any = await store._conn.run(  # pyright: ignore[reportPrivateUsage]
                "numsub", lambda client: client.pubsub_numsub(store.channel)
            )
            if int(next(iter(reply.values()))) >= 1:
                return
            await trio.sleep(0.01)


async def test_a_settle_on_a_key_with_waiters_notifies_the_other_users(shared: Shared) -> None:
    roomy = RateLimit(key="roomy")
    heard: list[frozenset[str]] = []
    notified = trio.Event()

    def on_release(keys: frozenset[str]) -> None:
        heard.append(keys)
        notified.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shared.rate.watch, on_release)
        await until_watching(shared)
        assert (await shared.other.acquire([ONE, roomy], lease="l1", tokens=0, ttl=10)).granted
        await shared.other.settle([ONE, roomy], lease="l1", reserved=0, used=0)  # nobody waits
        assert (await shared.other.acquire([ONE, roomy], lease="l2", tokens=0, ttl=10)).granted
        await shared.rate.acquire([ONE, roomy], lease="w", tokens=0, ttl=10, ticket=Ticket())
        await shared.other.settle([ONE, roomy], lease="l2", reserved=0, used=0)
        with trio.fail_after(5):
            await notified.wait()
        nursery.cancel_scope.cancel()
    assert heard == [frozenset({"c"})]


async def test_a_waiter_leaving_notifies_the_other_users(shared: Shared) -> None:
    heard: list[frozenset[str]] = []
    notified = trio.Event()

    def on_release(keys: frozenset[str]) -> None:
        heard.append(keys)
        notified.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shared.rate.watch, on_release)
        await until_watching(shared)
        assert (await shared.rate.acquire([ONE], lease="l1", tokens=0, ttl=10)).granted
        old = await shared.other.acquire([ONE], lease="old", tokens=0, ttl=10, ticket=Ticket())
        await shared.rate.acquire([ONE], lease="young", tokens=0, ttl=10, ticket=Ticket())
        await shared.other.acquire(
            [ONE], lease="old", tokens=0, ttl=10, ticket=Ticket(since=old.now)
        )
        await shared.other.leave([ONE], lease="old")
        with trio.fail_after(5):
            await notified.wait()
        nursery.cancel_scope.cancel()
    assert heard == [frozenset({"c"})]


# -- observations -----------------------------------------------------------------------------

ABSURD = [
    RateObservation(requests_limit=10**400),
    RateObservation(tokens_limit=-5, tokens_remaining=10**13),
    RateObservation(requests_remaining=0, requests_reset=math.inf),
    RateObservation(requests_remaining=0, requests_reset=math.nan),
    RateObservation(retry_after=-1.0),
    RateObservation(retry_after=MAX_OBSERVED_SECONDS * 2),
    RateObservation(tokens_reset=1e400),
]
FIELDS = RateObservation.__struct_fields__


def test_checked_observation_drops_every_out_of_range_value() -> None:
    for observation in ABSURD:
        cleaned, dropped = checked_observation(observation)
        assert dropped, observation
        given = {name for name in FIELDS if getattr(observation, name) is not None}
        assert {name for name in FIELDS if getattr(cleaned, name) is not None} == given - set(
            dropped
        )
    fine = RateObservation(requests_limit=500, requests_remaining=0, requests_reset=1.5)
    assert checked_observation(fine) == (fine, [])


async def test_out_of_range_observations_are_ignored_with_one_warning(
    shared: Shared, caplog: pytest.LogCaptureFixture
) -> None:
    limit = RateLimit(key="o")
    with caplog.at_level(logging.WARNING, logger="llm_invocation.store"):
        for observation in ABSURD:
            await shared.rate.observe(limit, observation)
    levels = await shared.rate.levels(limit)
    assert (levels["requests"], levels["tokens"], levels["blocked_for"]) == (math.inf, math.inf, 0)
    assert (await shared.rate.acquire([limit], lease="l1", tokens=0, ttl=10)).granted
    warnings = [r for r in caplog.records if "out-of-range" in r.getMessage()]
    assert len(warnings) == 1
