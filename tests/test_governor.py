"""The rate-limit governor on the memory store: buckets, FIFO, bounds, adaptivity, fail modes."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.actors.governor import (
    Acquire,
    Governor,
    GovernorStats,
    Lease,
    Observe,
    RateLimitSettings,
    Release,
)
from llm_invocation.errors import RateLimited
from llm_invocation.runtime import ActorRef, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.store._base import (
    Grant,
    RateLimit,
    RateObservation,
    StoreUnavailable,
    Ticket,
)
from llm_invocation.store.memory import MemoryRateStore


@asynccontextmanager
async def governor(**kwargs: Any) -> AsyncGenerator[ActorRef[Any]]:
    store = kwargs.pop("store", None) or MemoryRateStore()
    spec = SupervisorSpec(children=[ChildSpec.actor("gov", lambda: Governor(store, **kwargs))])
    async with open_runtime(spec) as runtime:
        yield runtime.ref("gov", Governor)


def acquire(tokens: int = 10, provider: str = "p", model: str = "m") -> Acquire:
    return Acquire(provider=provider, model=model, tokens=tokens)


async def test_a_free_governor_grants_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with governor(global_limits=RateLimitSettings(requests_per_minute=60)) as gov:
        lease = await gov.call(acquire())
        assert lease.keys == ["global", "m:p:m"]
        assert lease.waited == 0
        assert trio.current_time() == 0


async def test_requests_per_minute_make_the_next_caller_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(global_limits=RateLimitSettings(requests_per_minute=60)) as gov:
        for _ in range(60):
            await gov.call(acquire())
        assert trio.current_time() == 0
        lease = await gov.call(acquire())
        assert trio.current_time() == pytest.approx(1.0, abs=0.01)
        assert lease.waited == pytest.approx(1.0, abs=0.01)


async def test_tokens_per_minute_and_settling_gives_back_unused_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(global_limits=RateLimitSettings(tokens_per_minute=1000)) as gov:
        first = await gov.call(acquire(tokens=800))
        await gov.send(Release(lease=first, used=100))  # 700 back
        await gov.call(acquire(tokens=800))  # 900 were there: 100 left
        assert trio.current_time() == 0
        await gov.call(acquire(tokens=500))  # 400 more at 1000/60 per second
        assert trio.current_time() == pytest.approx(24.0, abs=0.05)


async def test_a_request_larger_than_the_bucket_is_refused_at_once() -> None:
    async with governor(global_limits=RateLimitSettings(tokens_per_minute=1000)) as gov:
        with pytest.raises(RateLimited) as info:
            await gov.call(acquire(tokens=5000))
        assert not info.value.retryable
        assert info.value.details["reason"] == "tokens"


async def test_waiters_are_served_first_come_first_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(
        global_limits=RateLimitSettings(requests_per_minute=6), max_wait=math.inf
    ) as gov:
        for _ in range(6):
            await gov.call(acquire())
        order: list[int] = []

        async def one(i: int) -> None:
            await gov.call(acquire())
            order.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(one, i)
                await trio.testing.wait_all_tasks_blocked()
        assert order == [0, 1, 2, 3, 4]
        assert trio.current_time() == pytest.approx(50.0, abs=0.1)  # one every 10 s


async def test_a_newcomer_queues_behind_waiters_even_if_it_would_fit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(
        global_limits=RateLimitSettings(tokens_per_minute=600), max_wait=math.inf
    ) as gov:
        await gov.call(acquire(tokens=550))  # 50 left
        order: list[str] = []

        async def ask(name: str, tokens: int) -> None:
            await gov.call(acquire(tokens=tokens))
            order.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "big", 500)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, "small", 10)  # fits now, but the big one was first
        assert order == ["big", "small"]


async def test_concurrency_leases_wait_for_a_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(global_limits=RateLimitSettings(concurrency=2)) as gov:
        a = await gov.call(acquire())
        await gov.call(acquire())
        got: list[Lease] = []

        async def third() -> None:
            got.append(await gov.call(acquire()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            stats = await gov.call(GovernorStats())
            assert stats.waiting == 1
            await trio.sleep(5)
            await gov.send(Release(lease=a, used=10))
        assert len(got) == 1
        assert trio.current_time() == pytest.approx(5, abs=0.01)


async def test_a_concurrency_waiter_gives_up_after_max_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(global_limits=RateLimitSettings(concurrency=1), max_wait=4) as gov:
        await gov.call(acquire())
        with pytest.raises(RateLimited) as info:
            await gov.call(acquire())
        assert info.value.details["reason"] == "concurrency"
        assert trio.current_time() == pytest.approx(4, abs=0.01)


async def test_max_wait_refuses_with_a_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(global_limits=RateLimitSettings(requests_per_minute=1), max_wait=10) as gov:
        await gov.call(acquire())
        with pytest.raises(RateLimited) as info:
            await gov.call(acquire())
        assert info.value.retry_after == pytest.approx(60, abs=0.1)
        assert info.value.retryable
        assert trio.current_time() == 0  # refused at once: waiting could not help


async def test_max_queue_refuses_newcomers(autojump_clock: trio.testing.MockClock) -> None:
    async with governor(
        global_limits=RateLimitSettings(requests_per_minute=1), max_queue=2, max_wait=1000
    ) as gov:
        await gov.call(acquire())
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(gov.call, acquire())
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(RateLimited) as info:
                await gov.call(acquire())
            assert info.value.details["reason"] == "queue_full"
            nursery.cancel_scope.cancel()


async def test_a_waiter_that_gives_up_is_skipped(autojump_clock: trio.testing.MockClock) -> None:
    async with governor(
        global_limits=RateLimitSettings(requests_per_minute=1), max_wait=math.inf
    ) as gov:
        await gov.call(acquire())
        with trio.move_on_after(5):
            await gov.call(acquire())
        lease = await gov.call(acquire())  # the abandoned one did not take the slot
        assert lease.waited == pytest.approx(55, abs=0.1)
        stats = await gov.call(GovernorStats())
        assert stats.granted == 2


async def test_provider_headers_tighten_the_model_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor() as gov:
        await gov.send(
            Observe(
                provider="p",
                model="m",
                observation=RateObservation(
                    requests_limit=100, requests_remaining=0, requests_reset=7
                ),
            )
        )
        await gov.call(acquire(model="other"))  # another model is not affected
        assert trio.current_time() == 0
        await gov.call(acquire())
        assert trio.current_time() == pytest.approx(7, abs=0.01)


async def test_a_429_retry_after_blocks_the_model_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor() as gov:
        await gov.send(Observe(provider="p", model="m", observation=RateObservation(retry_after=3)))
        await gov.call(acquire())
        assert trio.current_time() == pytest.approx(3, abs=0.01)


async def test_provider_limits_apply_to_that_provider_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(
        provider_limits={"slow": RateLimitSettings(requests_per_minute=1)}, max_wait=math.inf
    ) as gov:
        await gov.call(acquire(provider="slow"))
        for _ in range(5):
            await gov.call(acquire(provider="fast"))
        assert trio.current_time() == 0
        await gov.call(acquire(provider="slow"))
        assert trio.current_time() == pytest.approx(60, abs=0.1)


class BrokenStore(MemoryRateStore):
    synchronous = False  # a remote store that is down

    async def acquire(
        self,
        limits: Sequence[RateLimit],
        *,
        lease: str,
        tokens: int,
        ttl: float,
        ticket: Ticket | None = None,
    ) -> Grant:
        raise StoreUnavailable("redis is down")


async def test_fail_closed_refuses_when_the_store_is_unreachable() -> None:
    async with governor(
        store=BrokenStore(), global_limits=RateLimitSettings(requests_per_minute=10)
    ) as gov:
        with pytest.raises(RateLimited) as info:
            await gov.call(acquire())
        assert info.value.details["reason"] == "store_unavailable"


async def test_fail_open_admits_when_the_store_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with governor(
        store=BrokenStore(),
        global_limits=RateLimitSettings(requests_per_minute=10),
        fail_mode="open",
    ) as gov:
        for _ in range(3):
            lease = await gov.call(acquire())
            assert lease.degraded
        stats = await gov.call(GovernorStats())
        assert (stats.degraded, stats.store_errors) == (3, 3)
    outage_logs = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage_logs) == 1  # logged once per outage, not per call


async def test_a_thousand_concurrent_acquires_never_exceed_the_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rpm, tpm, concurrency = 120, 20_000, 25
    async with governor(
        global_limits=RateLimitSettings(
            requests_per_minute=rpm, tokens_per_minute=tpm, concurrency=concurrency
        ),
        max_wait=math.inf,
    ) as gov:
        grants: list[tuple[float, int]] = []
        in_flight = 0
        peak = 0

        async def one(i: int) -> None:
            nonlocal in_flight, peak
            tokens = 50 + (i * 37) % 200
            lease = await gov.call(acquire(tokens=tokens))
            grants.append((trio.current_time(), tokens))
            in_flight += 1
            peak = max(peak, in_flight)
            await trio.sleep(0.5 + (i % 7) / 10)
            in_flight -= 1
            await gov.send(Release(lease=lease, used=tokens))

        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(one, i)
        assert len(grants) == 1000
        assert peak <= concurrency
        # Any window of L seconds admits at most capacity + rate * L.
        times = sorted(t for t, _ in grants)
        for i, start in enumerate(times):
            for j in range(i, len(times), 97):
                span = times[j] - start
                assert j - i + 1 <= rpm + rpm * span / 60 + 1e-6
        by_time = sorted(grants)
        for i in range(0, len(by_time), 50):
            start = by_time[i][0]
            window = [tok for t, tok in by_time[i:] if t - start <= 30]
            assert sum(window) <= tpm + tpm * 30 / 60 + 1e-6


# -- observations out of range ------------------------------------------------------------------


@pytest.mark.parametrize(
    "observation",
    [
        RateObservation(requests_limit=10**400),
        RateObservation(requests_remaining=0, requests_reset=math.inf),
        RateObservation(tokens_limit=-1, tokens_remaining=-5),
        RateObservation(retry_after=math.nan),
        RateObservation(retry_after=1e12),
    ],
)
async def test_an_out_of_range_observation_is_ignored_and_counted(
    observation: RateObservation, caplog: pytest.LogCaptureFixture
) -> None:
    async with governor() as gov:
        for _ in range(3):
            await gov.send(Observe(provider="p", model="m", observation=observation))
        with trio.fail_after(1):
            lease = await gov.call(acquire())  # not blocked, and the governor lives on
        assert lease.waited == 0
        stats = await gov.call(GovernorStats())
        assert stats.ignored_observations == 3
    warnings = [r for r in caplog.records if r.name == "llm_invocation.governor"]
    assert len(warnings) == 1
    assert "out-of-range" in warnings[0].getMessage()


async def test_a_store_that_cannot_record_an_observation_is_counted_not_fatal() -> None:
    class Unreachable(MemoryRateStore):
        def observe_nowait(self, limit: RateLimit, observation: RateObservation) -> None:
            raise StoreUnavailable("down")

    async with governor(store=Unreachable()) as gov:
        await gov.send(Observe(provider="p", model="m", observation=RateObservation(retry_after=1)))
        stats = await gov.call(GovernorStats())
        assert stats.store_errors == 1
        await gov.call(acquire())
