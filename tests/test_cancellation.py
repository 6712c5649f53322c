"""Cancellation at random points of real invocations leaves nothing behind.

Hundreds of invocations through `open_client`, each cancelled by its caller at a random
moment: after a random number of scheduler passes (which lands in the early awaits: counting,
`Reserve`, `Acquire`) or after a random time (which lands anywhere, streaming included).
Afterwards no reservation and no lease is left in the store, every reservation granted is
recorded exactly once, a call the caller cancelled is recorded ``cancelled`` (or ``ok`` had
it finished first) and never ``error``, and a call that finished is recorded ``ok``.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import trio

import llm_invocation as llm
from llm_invocation.actors.accountant import Accountant, AccountantStats
from llm_invocation.actors.governor import Governor, GovernorStats
from llm_invocation.client import _tree
from llm_invocation.store._base import Budget, RateLimit
from llm_invocation.store.memory import MemoryBudgetStore, MemoryRateStore
from llm_invocation.testing import Scenario, Scenarios, ScriptedUsage

from .store_worker import LONG_REDIS_TIMEOUT, redis_url_or_skip

CALLS = 300
AT_ONCE = 30
CONCURRENCY = 6  # fewer than AT_ONCE: some calls wait in the governor's queue
BUDGET = Budget(scope="global", limit=Decimal(100))
LIMIT = RateLimit(key="global", concurrency=CONCURRENCY)


def settings(store: str) -> dict[str, Any]:
    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    return {
        "provider": "mock",
        "model": "mock",
        "store": store,
        "cost_control": {"max_budget": str(BUDGET.limit)},
        "rate_limits": {"concurrent_calls": CONCURRENCY, "max_wait": 60},
    }


def scenarios() -> Scenarios:
    usage = ScriptedUsage(prompt_tokens=5, completion_tokens=20)
    return Scenarios(Scenario(text="abcdefgh" * 10, chunk_chars=8, interval=0.001, usage=usage))


def ask(number: int, streamed: bool) -> llm.Request:
    return llm.Request(
        model="mock",
        messages=[llm.user("count")],
        options=llm.ModelOptions(max_tokens=40),
        metadata={"call": str(number)},
        stream=streamed,
    )


class CancelOnFirstChunk(llm.Middleware):
    """Cancels the callers registered in `scopes` when their call's first chunk arrives:
    a cancellation certainly after admission, whatever the machine's speed."""

    def __init__(self) -> None:
        self.scopes: dict[str, trio.CancelScope] = {}

    async def on_chunk(self, call: llm.CallInfo, chunk: llm.StreamChunk) -> None:
        metadata = call.request.metadata or {}
        scope = self.scopes.pop(str(metadata.get("call")), None)
        if scope is not None:
            scope.cancel()


async def cancel_at_random(
    client: llm.Client, rng: random.Random, typical: float
) -> dict[str, bool]:
    """Run `CALLS` invocations, `AT_ONCE` at a time, each cancelled at a random point;
    return, per call tag, whether its caller's cancellation cut it.

    So that every kind of ending happens however fast the machine is, a tenth of the calls
    (streamed ones) are cancelled at their first chunk and a tenth are never cancelled."""
    cut: dict[str, bool] = {}
    pending = list(range(CALLS))
    at_first_chunk = CancelOnFirstChunk()
    client.add_middleware(at_first_chunk)

    async def one(number: int) -> None:
        by_passes = rng.random() < 0.5
        passes = rng.randrange(0, 40)
        delay = rng.uniform(0, 2 * typical)
        with trio.CancelScope() as scope:
            if number % 10 == 0:
                at_first_chunk.scopes[str(number)] = scope

            async def canceller() -> None:
                if number % 10 in (0, 5):
                    return
                if by_passes:
                    for _ in range(passes):
                        await trio.lowlevel.checkpoint()
                else:
                    await trio.sleep(delay)
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(canceller)
                request = ask(number, streamed=number % 2 == 0)
                await client.invoke_sync(request)
                nursery.cancel_scope.cancel()
        cut[str(number)] = scope.cancelled_caught

    while pending:
        batch, pending = pending[:AT_ONCE], pending[AT_ONCE:]
        async with trio.open_nursery() as nursery:
            for number in batch:
                nursery.start_soon(one, number)
    return cut


async def typical_duration(client: llm.Client) -> float:
    """The median duration of a call among `AT_ONCE` concurrent ones, on this machine (the
    second round: the first one warms up connections and scripts)."""
    durations: list[float] = []

    async def one(number: int) -> None:
        started = trio.current_time()
        await client.invoke_sync(ask(number, streamed=number % 2 == 0))
        durations.append(trio.current_time() - started)

    for _ in range(2):
        durations.clear()
        async with trio.open_nursery() as nursery:
            for number in range(AT_ONCE):
                nursery.start_soon(one, -1 - number)
    return sorted(durations)[len(durations) // 2]


async def check_records(client: llm.Client, cut: dict[str, bool]) -> None:
    report = await client.usage(group_by=["tag:call", "status"])
    statuses: dict[str, list[str]] = {}
    for row in report.rows:
        call, status = row.group["tag:call"], row.group["status"]
        assert call is not None and status is not None
        statuses.setdefault(call, []).extend([status] * row.calls)
    stats = await client.runtime.ref("accountant", Accountant).call(AccountantStats())
    kinds = Counter(status for records in statuses.values() for status in records)
    assert kinds["error"] == 0, statuses
    assert report.total.calls == stats.reserved  # every granted reservation, recorded once
    assert stats.held == 0
    for call, was_cut in cut.items():
        records = statuses.get(call, [])
        if was_cut:
            assert records in ([], ["cancelled"], ["ok"]), (call, records)
        else:
            assert records == ["ok"], (call, records)
    cancelled = sum(1 for was_cut in cut.values() if was_cut)
    # The test exercised cancellation, after admission too, and calls that finished.
    assert all(cut[str(number)] for number in range(0, CALLS, 10))
    assert not any(cut[str(number)] for number in range(5, CALLS, 10))
    assert cancelled >= CALLS // 10
    assert kinds["cancelled"] >= CALLS // 10
    assert len(cut) - cancelled >= CALLS // 10


@asynccontextmanager
async def recording_stores(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncGenerator[tuple[list[MemoryRateStore], list[MemoryBudgetStore]]]:
    """The memory stores `open_client` makes, kept for inspection."""
    rates: list[MemoryRateStore] = []
    budgets: list[MemoryBudgetStore] = []

    def keep(kind: type[Any], into: list[Any]) -> Callable[..., Any]:
        def make(*args: Any, **kwargs: Any) -> Any:
            store = kind(*args, **kwargs)
            into.append(store)
            return store

        return make

    monkeypatch.setattr(_tree, "MemoryRateStore", keep(MemoryRateStore, rates))
    monkeypatch.setattr(_tree, "MemoryBudgetStore", keep(MemoryBudgetStore, budgets))
    yield rates, budgets


@pytest.mark.wall_limit(60)
async def test_random_cancellations_leave_nothing_behind_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20261202)
    async with recording_stores(monkeypatch) as (rates, budgets):
        config = llm.Config.unlimited(**settings("memory"))
        async with llm.open_client(config, scenarios=scenarios()) as client:
            cut = await cancel_at_random(client, rng, await typical_duration(client))
            await check_records(client, cut)
            governor = await client.runtime.ref("governor", Governor).call(GovernorStats())
            levels = await rates[0].levels(LIMIT)
    assert (governor.active, governor.waiting) == (0, 0)
    assert levels["leases"] == 0
    assert budgets[0].reserved(BUDGET) == 0


async def redis_leftovers(url: str, prefix: str) -> dict[str, int]:
    """Members of the lease and reservation sets under ``prefix`` (settled ones are gone)."""
    from llm_invocation.store.redis import open_redis_stores

    script = (
        "local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
        "if redis.call('TYPE', k)['ok'] == 'zset' then "
        "out[#out + 1] = k; out[#out + 1] = redis.call('ZCARD', k) end end return out"
    )
    async with open_redis_stores(url, prefix=prefix, timeout=LONG_REDIS_TIMEOUT) as (rate, _):
        conn: Any = rate._conn  # pyright: ignore[reportPrivateUsage]
        flat = await conn.run("test", lambda client: client.eval(script, [], [f"*{prefix}*"]))
        await conn.run(
            "test",
            lambda client: client.eval(
                "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end",
                [],
                [f"*{prefix}*"],
            ),
        )
    return {
        flat[i].decode(): int(flat[i + 1])
        for i in range(0, len(flat), 2)
        if ":lease:" in flat[i].decode() or ":reservations:" in flat[i].decode()
    }


@pytest.mark.redis
@pytest.mark.wall_limit(120)
async def test_random_cancellations_leave_nothing_behind_in_redis() -> None:
    url = redis_url_or_skip()
    prefix = f"llmcancel{secrets.token_hex(4)}:"
    rng = random.Random(7_20261202)
    # A long operation timeout: this test is about cancellation, not Redis outages, and a
    # busy machine can hold one Redis round trip past the default second.
    store = f"{url}{'&' if '?' in url else '?'}prefix={prefix}&timeout=30"
    config = llm.Config.unlimited(**settings(store))
    async with llm.open_client(config, scenarios=scenarios()) as client:
        cut = await cancel_at_random(client, rng, await typical_duration(client))
        await check_records(client, cut)
        governor = await client.runtime.ref("governor", Governor).call(GovernorStats())
    assert (governor.active, governor.waiting) == (0, 0)
    left = await redis_leftovers(url, prefix)
    assert not any(left.values()), left


async def test_a_client_cancelled_from_outside_still_records_its_calls_as_it_closes(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller's cancellation reaches the block first; the tree stays up while the client
    unwinds, so its last settlements are applied (not left to the flush's time limit).

    On the real clock: the ledger works in threads, and a virtual clock would jump to the
    flush's limit while they run."""
    ledger = tmp_path / "ledger.sqlite3"
    with trio.CancelScope() as scope:
        async with llm.open_client(llm.Config.unlimited(ledger_path=str(ledger))) as client:
            await client.complete("hello")
            scope.cancel()
            await trio.sleep_forever()
    assert "settlements" not in caplog.text
    async with llm.open_client(llm.Config.unlimited(ledger_path=str(ledger))) as client:
        records = await client.usage()
    assert records.total.calls == records.total.ok == 1
