"""Governance end to end: many concurrent invocations through the client never exceed the
budget, the RPM or the TPM - in memory, through Redis, and across four processes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.testing import MockTransport, Scenario, Scenarios, ScriptedUsage

from .store_worker import redis_url_or_skip

# The mock provider: $1 per million prompt tokens, $2 per million completion tokens. The
# scripted usage stays within what each call reserves (its prompt estimate + max_tokens).
PRICE = Decimal(1) / 1_000_000 * 5 + Decimal(2) / 1_000_000 * 50


class Stamping(httpx.AsyncBaseTransport):
    """The mock transport, recording when each request reached the provider."""

    def __init__(self, inner: MockTransport, stamps: list[float]) -> None:
        self.inner = inner
        self.stamps = stamps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            self.stamps.append(trio.current_time())
        return await self.inner.handle_async_request(request)


@asynccontextmanager
async def governed(stamps: list[float], **settings: Any) -> AsyncGenerator[llm.Client]:
    usage = ScriptedUsage(prompt_tokens=5, completion_tokens=50)
    scenarios = Scenarios(Scenario(text="ok", usage=usage, interval=0.01))
    transport = Stamping(MockTransport(scenarios), stamps)
    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    config = llm.Config.unlimited(**{"provider": "mock", "model": "mock", **settings})
    async with llm.open_client(config, transports={"mock": lambda: transport}) as client:
        yield client


def request() -> llm.Request:
    return llm.Request(
        model="mock", messages=[llm.user("hello")], options=llm.ModelOptions(max_tokens=50)
    )


def max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best, start = 0, 0
    for end in range(len(stamps)):
        while stamps[end] - stamps[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def fire(client: llm.Client, calls: int) -> dict[str, int]:
    counts = {"ok": 0, "rate_limited": 0, "cost_exceeded": 0}

    async def one() -> None:
        try:
            await client.invoke_sync(request())
        except llm.RateLimited:
            counts["rate_limited"] += 1
        except llm.CostExceeded:
            counts["cost_exceeded"] += 1
        else:
            counts["ok"] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(one)
    return counts


async def test_a_thousand_concurrent_invocations_respect_rpm_tpm_and_concurrency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stamps: list[float] = []
    rpm, tpm, concurrency = 200, 60_000, 40
    async with governed(
        stamps,
        rate_limits={
            "requests_per_minute": rpm,
            "tokens_per_minute": tpm,
            "concurrent_calls": concurrency,
            "max_wait": 3600,
        },
    ) as client:
        counts = await fire(client, 1000)
        assert counts == {"ok": 1000, "rate_limited": 0, "cost_exceeded": 0}
        stats = client.runtime.statistics()
        assert stats.in_flight == 0
    assert len(stamps) == 1000
    # Any minute admits at most the bucket (rpm) plus what refills meanwhile.
    assert max_in_window(stamps, 60) <= rpm + rpm
    assert max_in_window(stamps, 0.5) <= rpm + rpm / 60 * 0.5  # no burst beyond the bucket
    # Each call reserves about 110 tokens (prompt estimate + max_tokens 50): TPM binds
    # at most 60000 / 110 = 545 per minute, rpm binds first at 200.
    elapsed = max(stamps) - min(stamps)
    assert elapsed >= (1000 - rpm) / (rpm / 60) * 0.99


async def test_a_thousand_concurrent_invocations_never_exceed_the_budget() -> None:
    stamps: list[float] = []
    budget = Decimal("0.05")
    async with governed(stamps, cost_control={"max_budget": str(budget)}) as client:
        counts = await fire(client, 1000)
        levels = await client.budget_levels()
    assert levels[0].spent <= budget
    assert levels[0].spent == counts["ok"] * PRICE
    assert counts["ok"] + counts["cost_exceeded"] == 1000
    assert counts["ok"] >= 300  # $0.05 / $0.0002 = 250 settled... plus refunds of reservations
    assert len(stamps) == counts["ok"]


async def test_through_redis_a_thousand_invocations_respect_rpm_and_budget() -> None:
    url = redis_url_or_skip()
    prefix = f"llmtest{secrets.token_hex(4)}:"
    store = _with_prefix(url, prefix)
    stamps: list[float] = []
    rpm = 600
    async with governed(
        stamps,
        store=store,
        rate_limits={"requests_per_minute": rpm, "max_wait": 1.5},
        cost_control={"max_budget": "0.1"},
    ) as client:
        started = trio.current_time()
        counts = await fire(client, 1000)
        span = trio.current_time() - started
        levels = await client.budget_levels()
    assert counts["ok"] + counts["rate_limited"] + counts["cost_exceeded"] == 1000
    assert counts["ok"] <= rpm + rpm / 60 * span
    assert counts["rate_limited"] > 0
    assert levels[0].spent <= Decimal("0.1")


def _with_prefix(url: str, prefix: str) -> str:
    """The store URL with a key prefix of its own, so runs never see each other's state,
    and an operation timeout well above the 1 s default: these tests are about limits and
    budgets, not outages (tests/test_governor_outage.py), and a busy machine can starve the
    Redis server for a second."""
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}&timeout=30"


@pytest.mark.slow
def test_four_processes_share_one_redis_rpm_and_budget() -> None:
    url = redis_url_or_skip()
    settings = {
        "store": _with_prefix(url, f"llmtest{secrets.token_hex(4)}:"),
        "rpm": 100,
        "max_wait": 1.5,
        "budget": "0.012",
        "calls": 60,
    }
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(os.path.dirname(__file__), "client_worker.py"),
                json.dumps(settings),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    span = time.monotonic() - started
    admitted = sum(r["admitted"] for r in results)
    spent = sum(Decimal(r["spent"]) for r in results)
    assert sum(r["other"] for r in results) == 0
    assert admitted <= 100 + 100 / 60 * span  # one RPM bucket for all four processes
    assert spent <= Decimal("0.012")  # one budget for all four
    assert admitted >= 50  # the limits bind, they do not starve everyone


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_redis_down_behaves_as_configured(
    fail_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    stamps: list[float] = []
    # Nothing listens on port 1: every store operation fails fast.
    async with governed(
        stamps,
        store="redis://127.0.0.1:1/0",
        store_fail_mode=fail_mode,
        rate_limits={"requests_per_minute": 60},
        cost_control={"max_budget": "1"},
    ) as client:
        if fail_mode == "closed":
            with pytest.raises((llm.CostExceeded, llm.RateLimited)) as info:
                await client.invoke_sync(request())
            assert info.value.details["reason"] == "store_unavailable"
            assert "unreachable" in str(info.value)
            assert stamps == []  # nothing was sent
        else:
            for _ in range(3):
                response = await client.invoke_sync(request())
                assert response.text == "ok"
            assert len(stamps) == 3
    assert any("unreachable" in r.getMessage() for r in caplog.records)
