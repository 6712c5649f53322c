"""Governance figures: acquire-and-release per second (the stores alone and the governor
actor, in memory and through Redis, side by side in one run), settlement under load, and
fairness across processes sharing one Redis limit.

    python benchmarks/governance_bench.py [--n 3000] [--calls 10000] [--fairness 3]
                                          [--redis redis://127.0.0.1:6379/15]

* store: `RateStore.acquire` + `RateStore.settle` on three keys (global, provider, model),
  as one task and as 50 concurrent tasks;
* governor: `Acquire` (a call) + `Release` (a cast) through the governor actor; and as the
  invocation layer asks, at once first (`ActorRef.call_nowait`, `ActorRef.cast_nowait`:
  granted without a round trip by a governor in memory, never through Redis);
* budgets: `BudgetStore.reserve` + `BudgetStore.settle` on two budgets.

* settlement (`_settlement.py`): ``--calls`` concurrent invocations with a file ledger:
  settle throughput, ledger rows per second, and the p99 latency settlement adds to a call
  (target <= 1 ms);
* fairness (`_fairness.py`): four processes share one Redis concurrency limit for
  ``--fairness`` seconds: how much of it is in use (target >= 90%), each process's share,
  refusals and waits.

Redis numbers need a server (``LLM_REDIS_URL`` or ``--redis``); without one they are left out.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal

import trio
from _fairness import fairness_report
from _settlement import settlement_report

from llm_invocation.actors.governor import Acquire, Governor, RateLimitSettings, Release
from llm_invocation.runtime import ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.store._base import Budget, BudgetStore, RateLimit, RateStore
from llm_invocation.store.memory import MemoryBudgetStore, MemoryRateStore

LIMITS = [
    RateLimit(key="global", requests_per_minute=1e12, tokens_per_minute=1e15, concurrency=10**9),
    RateLimit(key="p:openai", requests_per_minute=1e12),
    RateLimit(key="m:openai:gpt-4o"),
]
BUDGETS = [
    Budget(scope="global", limit=Decimal(10**9)),
    Budget(scope="provider:openai", limit=Decimal(10**9)),
]


async def rate(n: int, tasks: int) -> Callable[[RateStore], Awaitable[float]]:
    async def run(store: RateStore) -> float:
        per_task = max(1, n // tasks)

        async def worker() -> None:
            for _ in range(per_task):
                lease = secrets.token_hex(6)
                await store.acquire(LIMITS, lease=lease, tokens=500, ttl=60)
                await store.settle(LIMITS, lease=lease, reserved=500, used=300)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)
        return per_task * tasks / (time.perf_counter() - start)

    return run


async def budgets(n: int, tasks: int, store: BudgetStore) -> float:
    per_task = max(1, n // tasks)

    async def worker() -> None:
        for _ in range(per_task):
            rid = secrets.token_hex(6)
            await store.reserve(BUDGETS, reservation=rid, amount=Decimal("0.01"), ttl=60)
            await store.settle(BUDGETS, reservation=rid, actual=Decimal("0.004"))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    return per_task * tasks / (time.perf_counter() - start)


async def governor(n: int, tasks: int, store: RateStore, *, at_once: bool = False) -> float:
    """Acquire + Release through the governor; ``at_once``: as the invocation layer does,
    asked at once first (`ActorRef.call_nowait`, `ActorRef.cast_nowait`), else a round
    trip."""
    spec = SupervisorSpec(
        children=[
            ChildSpec.actor(
                "gov",
                lambda: Governor(
                    store,
                    global_limits=RateLimitSettings(
                        requests_per_minute=1e12, tokens_per_minute=1e15
                    ),
                ),
            )
        ]
    )
    async with open_runtime(spec) as runtime:
        gov = runtime.ref("gov", Governor)
        per_task = max(1, n // tasks)

        async def worker() -> None:
            for _ in range(per_task):
                acquire = Acquire(
                    provider="openai", model="gpt-4o", tokens=500, lease=secrets.token_hex(8)
                )
                if at_once:
                    try:
                        lease = gov.call_nowait(acquire)
                    except trio.WouldBlock:
                        lease = await gov.call(acquire)
                    try:
                        gov.cast_nowait(Release(lease=lease, used=300))
                    except trio.WouldBlock:
                        await gov.send(Release(lease=lease, used=300))
                    await trio.lowlevel.checkpoint()  # as the call's own I/O would
                else:
                    lease = await gov.call(acquire)
                    await gov.send(Release(lease=lease, used=300))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)
        return per_task * tasks / (time.perf_counter() - start)


@asynccontextmanager
async def redis_stores(url: str | None) -> AsyncGenerator[tuple[RateStore, BudgetStore] | None]:
    if url is None:
        yield None
        return
    from llm_invocation.store._base import StoreUnavailable
    from llm_invocation.store.redis import open_redis_stores

    prefix = f"llmbench{secrets.token_hex(3)}:"
    try:
        async with open_redis_stores(url, prefix=prefix) as stores:
            await stores[0].levels(LIMITS[2])
            yield stores
    except StoreUnavailable as exc:
        print(f"(Redis at {url} unreachable: {exc}; Redis numbers left out)")
        yield None


async def main(n: int, url: str | None, calls: int, fairness: float) -> None:
    rows: list[tuple[str, float, float | None]] = []
    shared_available = False
    async with redis_stores(url) as shared:
        shared_available = shared is not None
        for tasks in (1, 50):
            memory_rate = await (await rate(n, tasks))(MemoryRateStore())
            redis_rate = (
                await (await rate(n // 5, tasks))(shared[0]) if shared is not None else None
            )
            rows.append((f"store acquire+settle, {tasks} task(s)", memory_rate, redis_rate))
            memory_gov = await governor(n, tasks, MemoryRateStore())
            redis_gov = await governor(n // 5, tasks, shared[0]) if shared is not None else None
            rows.append((f"governor Acquire+Release, {tasks} task(s)", memory_gov, redis_gov))
            at_once = await governor(n, tasks, MemoryRateStore(), at_once=True)
            redis_at_once = (
                await governor(n // 5, tasks, shared[0], at_once=True)
                if shared is not None
                else None
            )
            rows.append(
                (f"governor at once (else a call), {tasks} task(s)", at_once, redis_at_once)
            )
            memory_budget = await budgets(n, tasks, MemoryBudgetStore())
            redis_budget = await budgets(n // 5, tasks, shared[1]) if shared is not None else None
            rows.append((f"budget reserve+settle, {tasks} task(s)", memory_budget, redis_budget))
    print(f"{'per second':44}{'memory':>12}{'redis':>12}{'memory/redis':>14}")
    for name, memory, redis in rows:
        redis_text = f"{redis:12,.0f}" if redis is not None else f"{'-':>12}"
        ratio = f"{memory / redis:13.1f}x" if redis else f"{'-':>14}"
        print(f"{name:44}{memory:12,.0f}{redis_text}{ratio}")
    print()
    print("\n".join(await settlement_report(calls)))
    if url is not None and shared_available:
        print()
        print("\n".join(await fairness_report(url, duration=fairness)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument(
        "--redis", default=os.environ.get("LLM_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--calls", type=int, default=10_000, help="settlement: invocations")
    parser.add_argument("--fairness", type=float, default=3.0, help="fairness: seconds measured")
    args = parser.parse_args()
    trio.run(main, args.n, args.redis or None, args.calls, args.fairness)
