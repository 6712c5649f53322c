"""First come, first served across lines and across governors: lines of different models
that share a key, and governors (processes) that share a store, are served in the order
their callers arrived; a release anywhere wakes the waiter next in line at once."""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.actors import governor as governor_module
from llm_invocation.actors.governor import Acquire, Governor, RateLimitSettings, Release
from llm_invocation.runtime import ActorRef, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.store._base import RateStore
from llm_invocation.store.memory import MemoryRateStore
from llm_invocation.store.redis import open_redis_stores

from .store_worker import LONG_REDIS_TIMEOUT, redis_url_or_skip


@asynccontextmanager
async def governors(*stores: RateStore, **kwargs: Any) -> AsyncGenerator[list[ActorRef[Any]]]:
    """One governor per store (a process each, as far as the stores can tell)."""
    children = [
        ChildSpec.actor(f"gov{i}", lambda store=store: Governor(store, **kwargs))
        for i, store in enumerate(stores)
    ]
    async with open_runtime(SupervisorSpec(children=children)) as runtime:
        yield [runtime.ref(f"gov{i}", Governor) for i in range(len(stores))]


def acquire(model: str = "m") -> Acquire:
    return Acquire(provider="p", model=model, tokens=10)


async def test_lines_of_different_models_are_served_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governors(
        MemoryRateStore(),
        global_limits=RateLimitSettings(concurrency=1),
        max_wait=math.inf,
    ) as (gov,):
        first = await gov.call(acquire("a"))
        order: list[str] = []

        async def one(model: str, number: int) -> None:
            lease = await gov.call(acquire(model))
            order.append(f"{model}{number}")
            await trio.sleep(1)
            await gov.send(Release(lease=lease, used=0))

        async with trio.open_nursery() as nursery:
            for number, model in enumerate("abcbca"):
                nursery.start_soon(one, model, number)
                await trio.sleep(0.001)  # each arrives at its own time
            await gov.send(Release(lease=first, used=0))
    assert order == ["a0", "b1", "c2", "b3", "c4", "a5"]


async def test_a_newcomer_of_another_model_waits_behind_an_older_claim(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governors(
        MemoryRateStore(),
        global_limits=RateLimitSettings(tokens_per_minute=600),
        max_wait=math.inf,
    ) as (gov,):
        await gov.call(Acquire(provider="p", model="a", tokens=550, lease="drain"))
        order: list[str] = []

        async def ask(model: str, tokens: int) -> None:
            await gov.call(Acquire(provider="p", model=model, tokens=tokens))
            order.append(model)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "big", 500)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, "small", 10)  # fits now, but the big one came first
    assert order == ["big", "small"]


async def two_governors_take_turns(stores: tuple[RateStore, RateStore]) -> list[int]:
    """Governor 0 holds the only slot and has a waiter; governor 1's waiter came first. On
    each release the slot goes to the older waiter, wherever it is."""
    order: list[int] = []
    async with governors(
        *stores, global_limits=RateLimitSettings(concurrency=1), max_wait=60
    ) as govs:
        held = await govs[0].call(acquire())

        async def wait(which: int) -> None:
            lease = await govs[which].call(acquire())
            order.append(which)
            await govs[which].send(Release(lease=lease, used=0))

        with trio.fail_after(10):  # far less than the 60 s poll the test sets
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait, 1)
                await trio.testing.wait_all_tasks_blocked()
                await until_queued(stores[0])
                # Well after it (the governors' estimates of the store's clock are exact to
                # within half a round trip):
                await trio.sleep(0.1)
                nursery.start_soon(wait, 0)
                await trio.testing.wait_all_tasks_blocked()
                await govs[0].send(Release(lease=held, used=0))
    return order


async def until_queued(store: RateStore) -> None:
    from llm_invocation.store._base import RateLimit

    with trio.fail_after(5):
        while (await store.levels(RateLimit(key="global", concurrency=1)))["waiting"] < 1:
            await trio.sleep(0.01)


async def test_a_release_wakes_the_older_waiter_of_another_governor_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(governor_module, "POLL", 60.0)  # only a release notice can wake it
    store = MemoryRateStore()
    assert await two_governors_take_turns((store, store)) == [1, 0]


@pytest.mark.redis
async def test_a_release_wakes_the_older_waiter_of_another_process_on_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(governor_module, "POLL", 60.0)  # only a release notice can wake it
    url, prefix = redis_url_or_skip(), f"test-fair-{secrets.token_hex(4)}:"
    async with (
        open_redis_stores(url, prefix=prefix, timeout=LONG_REDIS_TIMEOUT) as (first, _),
        open_redis_stores(url, prefix=prefix, timeout=LONG_REDIS_TIMEOUT) as (second, _),
    ):
        try:
            assert await two_governors_take_turns((first, second)) == [1, 0]
        finally:
            script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
            await first._conn.run(  # pyright: ignore[reportPrivateUsage]
                "cleanup", lambda client: client.eval(script, [], [f"*{prefix}*"])
            )
