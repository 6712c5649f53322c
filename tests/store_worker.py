"""Redis for the store tests: where it is, whether the tests may run, and a worker process.

Imported by the store test modules for `redis_url_or_skip`: Redis tests use
``LLM_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``); when nothing listens there they
skip, saying why, unless ``LLM_REQUIRE_REDIS=1``, when they fail.

Run as a script by ``tests/test_store_multiprocess.py``, it is one of several processes
sharing one Redis::

    python tests/store_worker.py hammer '<json config>'   # many tasks acquire, reserve, settle
    python tests/store_worker.py hold '<json config>'     # take capacity, say so, never return

Each prints one JSON line on stdout (``hold`` prints it once it holds everything).
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def redis_url() -> str:
    """The Redis URL the tests use."""
    return os.environ.get("LLM_REDIS_URL") or DEFAULT_REDIS_URL


def redis_reachable(url: str, timeout: float = 0.5) -> str | None:
    """None when something accepts TCP connections at ``url``; else why not."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


LONG_REDIS_TIMEOUT = 30.0
"""Seconds one Redis operation may take in tests that are about limits, fairness or
cancellation, not outages: a busy machine can hold a round trip past the default second."""


def redis_url_or_skip() -> str:
    """The Redis URL, or skip the test (fail it when ``LLM_REQUIRE_REDIS=1``)."""
    import pytest

    url = redis_url()
    problem = redis_reachable(url)
    if problem is not None:
        message = f"Redis is not reachable ({problem}); set LLM_REDIS_URL to run the Redis tests"
        if os.environ.get("LLM_REQUIRE_REDIS") == "1":
            pytest.fail(f"LLM_REQUIRE_REDIS=1 but {message}")
        pytest.skip(message)
    return url


# -- the worker process ------------------------------------------------------------------------


async def _hammer(config: dict[str, Any]) -> dict[str, Any]:
    """Many tasks: acquire the shared rate key, reserve, work briefly, settle; count."""
    import trio

    from llm_invocation.store._base import Budget, RateLimit
    from llm_invocation.store.redis import open_redis_stores

    limit = RateLimit(
        key=config["key"],
        requests_per_minute=config["rpm"],
        concurrency=config.get("concurrency"),
    )
    budget = Budget(scope=config["scope"], limit=Decimal(config["budget"]))
    reserve, actual = Decimal(config["reserve"]), Decimal(config["actual"])
    counts = {"admitted": 0, "refused": 0, "budget_refused": 0, "settled": Decimal(0)}
    worker = os.getpid()
    async with open_redis_stores(config["url"], prefix=config["prefix"], timeout=5.0) as (
        rate,
        budgets,
    ):
        await trio.sleep(max(0.0, config["start_at"] - time.time()))
        deadline = trio.current_time() + config["duration"]

        async def task(number: int) -> None:
            serial = 0
            while trio.current_time() < deadline:
                serial += 1
                lease = f"{worker}-{number}-{serial}"
                grant = await rate.acquire([limit], lease=lease, tokens=0, ttl=10.0)
                if not grant.granted:
                    counts["refused"] += 1
                    await trio.sleep(min(max(grant.wait, 0.005), 0.05))  # wait 0: on a release
                    continue
                counts["admitted"] += 1
                check = await budgets.reserve([budget], reservation=lease, amount=reserve, ttl=10)
                if check.ok:
                    await trio.sleep(config["work"])
                    await budgets.settle([budget], reservation=lease, actual=actual)
                    counts["settled"] += actual
                else:
                    counts["budget_refused"] += 1
                await rate.settle([limit], lease=lease, reserved=0, used=0)
                await trio.sleep(random.uniform(0, config["work"]))  # let the others in

        async with trio.open_nursery() as nursery:
            for number in range(config["tasks"]):
                nursery.start_soon(task, number)
    return {**counts, "settled": str(counts["settled"]), "pid": worker}


async def _hold(config: dict[str, Any]) -> None:
    """Take every concurrency slot and the whole budget, say so, then wait to be killed."""
    import trio

    from llm_invocation.store._base import Budget, RateLimit
    from llm_invocation.store.redis import open_redis_stores

    limit = RateLimit(key=config["key"], concurrency=config["concurrency"])
    budget = Budget(scope=config["scope"], limit=Decimal(config["budget"]))
    async with open_redis_stores(config["url"], prefix=config["prefix"], timeout=5.0) as (
        rate,
        budgets,
    ):
        held = 0
        for number in range(config["concurrency"]):
            grant = await rate.acquire([limit], lease=f"hold-{number}", tokens=0, ttl=config["ttl"])
            held += grant.granted
        check = await budgets.reserve(
            [budget], reservation="hold", amount=Decimal(config["budget"]), ttl=config["ttl"]
        )
        print(json.dumps({"leases": held, "reserved": check.ok, "pid": os.getpid()}), flush=True)
        await trio.sleep_forever()


def main(argv: list[str]) -> int:
    import trio

    role, config = argv[1], json.loads(argv[2])
    if role == "hammer":
        result = trio.run(_hammer, config)
        print(json.dumps(result), flush=True)
    elif role == "hold":
        trio.run(_hold, config)
    else:
        print(f"unknown role {role!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main(sys.argv))
