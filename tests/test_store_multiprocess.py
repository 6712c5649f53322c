"""Several OS processes share one Redis rate key and one budget: the limits hold across them.

Each process is ``tests/store_worker.py`` under ``sys.executable``, with many trio tasks.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from llm_invocation.store._base import Budget, RateLimit, period_id
from llm_invocation.store.redis import RedisBudgetStore, RedisRateStore, open_redis_stores

from .store_worker import LONG_REDIS_TIMEOUT, redis_url_or_skip

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WORKER = Path(__file__).with_name("store_worker.py")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


@pytest.fixture
def prefix() -> str:
    return f"test-mp-{secrets.token_hex(6)}:"


@pytest.fixture
async def stores(
    redis_url: str, prefix: str
) -> AsyncIterator[tuple[RedisRateStore, RedisBudgetStore]]:
    async with open_redis_stores(redis_url, prefix=prefix, timeout=LONG_REDIS_TIMEOUT) as (
        rate,
        budget,
    ):
        try:
            yield rate, budget
        finally:
            script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
            await rate._conn.run(  # pyright: ignore[reportPrivateUsage]
                "cleanup", lambda client: client.eval(script, [], [f"*{prefix}*"])
            )


def worker_command(role: str, config: dict[str, Any]) -> list[str]:
    return [sys.executable, str(WORKER), role, json.dumps(config)]


def worker_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


async def redis_time(store: RedisRateStore) -> float:
    """The Redis server's clock, which the scripts use."""
    reply: Any = await store._conn.run(  # pyright: ignore[reportPrivateUsage]
        "time", lambda client: client.eval("return redis.call('TIME')", [], [])
    )
    seconds, micros = reply
    return int(seconds) + int(micros) / 1_000_000


@pytest.mark.wall_limit(60)
async def test_four_processes_never_exceed_the_shared_limits(
    redis_url: str, prefix: str, stores: tuple[RedisRateStore, RedisBudgetStore]
) -> None:
    rate, budget = stores
    rpm, limit = 50, Decimal("1.00")
    config = {
        "url": redis_url,
        "prefix": prefix,
        "key": "shared",
        "rpm": rpm,
        "concurrency": 8,
        "scope": "team:mp",
        "budget": str(limit),
        "reserve": "0.03",
        "actual": "0.02",
        "tasks": 12,
        "work": 0.05,
        "duration": 2.0,
        "start_at": time.time() + 1.0,
    }
    started = await redis_time(rate)
    results: list[dict[str, Any]] = []

    async def one() -> None:
        done = await trio.run_process(
            worker_command("hammer", config), capture_stdout=True, env=worker_env()
        )
        results.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(one)
    ended = await redis_time(rate)

    print(f"span {ended - started:.2f}s, workers: {results}")
    assert len({result["pid"] for result in results}) == 4
    admitted = sum(result["admitted"] for result in results)
    bound = math.floor(rpm + (ended - started) * rpm / 60)
    assert rpm <= admitted <= bound, results
    settled = sum(Decimal(result["settled"]) for result in results)
    assert 0 < settled <= limit
    scope = Budget(scope="team:mp", limit=limit)
    assert (await budget.levels([scope]))[0].spent == settled
    days = {period_id("day", started, 0), period_id("day", ended, 0)}
    reported = [(await budget.spend_report(day)).get("team:mp", Decimal(0)) for day in days]
    assert sum(reported) == settled
    leases = (await rate.levels(RateLimit(key="shared", requests_per_minute=rpm)))["leases"]
    assert leases == 0


@pytest.mark.wall_limit(60)
async def test_a_killed_process_gives_its_capacity_back_after_the_ttl(
    redis_url: str, prefix: str, stores: tuple[RedisRateStore, RedisBudgetStore]
) -> None:
    rate, budget = stores
    config = {
        "url": redis_url,
        "prefix": prefix,
        "key": "held",
        "concurrency": 3,
        "scope": "team:held",
        "budget": "1.00",
        "ttl": 1.0,
    }
    limit = RateLimit(key="held", concurrency=3)
    scope = Budget(scope="team:held", limit=Decimal("1.00"))
    process = await trio.lowlevel.open_process(
        worker_command("hold", config), stdout=subprocess.PIPE, env=worker_env()
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the worker ended before holding anything"
                line += chunk
        assert json.loads(line) == {"leases": 3, "reserved": True, "pid": process.pid}
    finally:
        process.kill()  # SIGKILL: no cleanup of any kind
        await process.wait()
    assert process.returncode == -9

    grant = await rate.acquire([limit], lease="mine-0", tokens=0, ttl=10)
    assert (grant.granted, grant.reason) == (False, "concurrency")
    check = await budget.reserve([scope], reservation="mine", amount=Decimal("0.01"), ttl=10)
    assert (check.ok, check.reserved) == (False, Decimal("1.00"))

    # The held leases and the reservation expire together, at most a TTL from now.
    await trio.sleep(config["ttl"] + 0.05)
    for number in range(3):
        assert (await rate.acquire([limit], lease=f"mine-{number}", tokens=0, ttl=10)).granted
    assert (await budget.reserve([scope], reservation="mine", amount=Decimal(1), ttl=10)).ok
