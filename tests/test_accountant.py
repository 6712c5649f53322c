"""Caps, budgets, alerts and the ledger, through the client on the mock provider."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.actors.accountant import BudgetAlert, budgets_for
from llm_invocation.store._base import Budget
from llm_invocation.testing import Disconnect, Scenario, Scenarios, ScriptedUsage

# The mock provider's price: $1 per million input tokens, $2 per million output tokens.
PROMPT_PRICE = Decimal(1) / 1_000_000
OUTPUT_PRICE = Decimal(2) / 1_000_000


@asynccontextmanager
async def client(
    scenarios: Scenarios | None = None, alerts: list[BudgetAlert] | None = None, **cost: Any
) -> AsyncGenerator[llm.Client]:
    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    config = llm.Config.unlimited(provider="mock", model="mock", cost_control=cost)
    callbacks = [alerts.append] if alerts is not None else []
    async with llm.open_client(config, scenarios=scenarios or Scenarios(), on_alert=callbacks) as c:
        yield c


def scripted(prompt: int = 100, completion: int = 50) -> Scenarios:
    return Scenarios(
        Scenario(text="ok", usage=ScriptedUsage(prompt_tokens=prompt, completion_tokens=completion))
    )


def ask(max_tokens: int = 100, **metadata: str) -> llm.Request:
    return llm.Request(
        model="mock",
        messages=[llm.user("count to three")],
        options=llm.ModelOptions(max_tokens=max_tokens),
        metadata=dict(metadata) or None,
    )


async def test_the_settled_cost_is_the_provider_usage_at_the_price() -> None:
    async with client(scripted(100, 50)) as c:
        response = await c.invoke_sync(ask())
        assert response.usage is not None
        assert response.usage.cost == 100 * PROMPT_PRICE + 50 * OUTPUT_PRICE
        assert c.get_usage().cost == response.usage.cost


async def test_a_request_whose_worst_case_exceeds_the_cap_is_refused_before_sending() -> None:
    scenarios = scripted()
    async with client(scenarios, max_cost_per_request="0.0001") as c:
        with pytest.raises(llm.CostExceeded) as info:
            await c.invoke_sync(ask(max_tokens=1000))  # 1000 output tokens = $0.002
        assert info.value.details["scope"] == "request"
        assert scenarios.calls("mock") == 0
        await c.invoke_sync(ask(max_tokens=10))  # within the cap


async def test_a_budget_refuses_once_spent_plus_reserved_would_exceed_it() -> None:
    # Each call reserves its worst case (prompt + 100 output tokens) and settles 150 tokens.
    async with client(scripted(100, 50), max_budget="0.001") as c:
        ok = 0
        with pytest.raises(llm.CostExceeded) as info:
            for _ in range(100):
                await c.invoke_sync(ask())
                ok += 1
        assert info.value.details["scope"] == "global"
        spent = (await c.budget_levels())[0].spent
        assert spent == ok * (100 * PROMPT_PRICE + 50 * OUTPUT_PRICE)
        assert spent <= Decimal("0.001")
        assert ok == 4  # $0.0002 each; the 5th's worst case no longer fits


async def test_concurrent_calls_cannot_overshoot_a_budget_together() -> None:
    async with client(scripted(100, 50), max_budget="0.01") as c:
        outcomes: list[str] = []

        async def one() -> None:
            try:
                await c.invoke_sync(ask())
            except llm.CostExceeded:
                outcomes.append("refused")
            else:
                outcomes.append("ok")

        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(one)
        levels = await c.budget_levels()
        assert levels[0].spent <= Decimal("0.01")
        assert outcomes.count("ok") >= 40  # 0.01 / 0.0002 = 50 at most
        assert outcomes.count("ok") <= 50


async def test_alerts_fire_once_per_threshold_and_period() -> None:
    alerts: list[BudgetAlert] = []
    async with client(
        scripted(100, 50), alerts, max_budget="0.002", alert_thresholds=[0.25, 0.5]
    ) as c:
        for _ in range(6):  # 6 x $0.0002 = 60% of the budget
            await c.invoke_sync(ask())
        await trio.testing.wait_all_tasks_blocked()
    assert [a.threshold for a in alerts] == [0.25, 0.5]
    assert all(a.scope == "global" for a in alerts)
    assert alerts[0].spent == Decimal("0.0006")


async def test_tag_budgets_apply_per_value_with_a_wildcard() -> None:
    budgets = [{"scope": "tag:user=*", "limit": "0.0005"}]
    async with client(scripted(100, 50), budgets=budgets) as c:
        for _ in range(2):
            await c.invoke_sync(ask(user="alice"))
        with pytest.raises(llm.CostExceeded) as info:
            await c.invoke_sync(ask(user="alice"))
        assert info.value.details["scope"] == "tag:user=alice"
        await c.invoke_sync(ask(user="bob"))  # bob has his own budget
        await c.invoke_sync(ask())  # untagged calls are not limited by it


def test_budgets_for_matches_scopes() -> None:
    budgets = [
        Budget(scope="global", limit=Decimal(1)),
        Budget(scope="provider:openai", limit=Decimal(1)),
        Budget(scope="model:openai:gpt-4o", limit=Decimal(1)),
        Budget(scope="tag:team=search", limit=Decimal(1)),
        Budget(scope="tag:user=*", limit=Decimal(1)),
    ]
    scopes = [b.scope for b in budgets_for(budgets, "openai", "gpt-4o", {"team": "search"})]
    assert scopes == ["global", "provider:openai", "model:openai:gpt-4o", "tag:team=search"]
    scopes = [b.scope for b in budgets_for(budgets, "anthropic", "x", {"user": "bo"})]
    assert scopes == ["global", "tag:user=bo"]


async def test_the_ledger_reports_by_provider_model_and_tag() -> None:
    async with client(scripted(100, 50)) as c:
        for team in ("a", "a", "b"):
            await c.invoke_sync(ask(team=team))
        report = await c.usage(group_by=["tag:team"])
        rows = {row.group["tag:team"]: row for row in report.rows}
        assert (rows["a"].calls, rows["b"].calls) == (2, 1)
        assert rows["a"].cost == 2 * (100 * PROMPT_PRICE + 50 * OUTPUT_PRICE)
        assert report.total.prompt_tokens == 300
        table = report.to_table()
        assert "TOTAL" in table


async def test_a_failed_stream_settles_what_it_consumed() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "mock",
        Scenario(text="abcdefghijkl" * 10, chunk_chars=4, failure=Disconnect(after_chunks=10)),
    )
    async with client(scenarios) as c:
        with pytest.raises(llm.StreamingFailed):
            async with c.invoke(ask()) as stream:
                async for _ in stream:
                    pass
        report = await c.usage(group_by=["status"])
        (row,) = report.rows
        assert row.group["status"] == "error"
        assert row.completion_tokens > 0  # counted from what was streamed
        assert row.estimated_calls == 1


async def test_a_cancelled_stream_settles_and_frees_its_reservation() -> None:
    scenarios = Scenarios(Scenario(text="x" * 400, chunk_chars=2, interval=0.01))
    async with client(scenarios, max_budget="1") as c:
        async with c.invoke(ask()) as stream:
            async for chunk in stream:
                if chunk.text:
                    break
        report = await c.usage(group_by=["status"])
        assert [r.group["status"] for r in report.rows] == ["cancelled"]
        levels = await c.budget_levels()
        assert levels[0].spent > 0
        assert stream.usage is not None
        assert stream.usage.cost is not None


async def test_an_unknown_price_gives_no_cost_and_never_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A plain compatible server (no preset: no price), and no cap or budget to refuse it.
    config = llm.Config.unlimited(
        provider="local",
        model="some-local-model",
        providers={"local": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}},
    )
    from llm_invocation.testing import MockTransport

    scenarios = scripted()
    async with llm.open_client(config, transports={"local": lambda: MockTransport(scenarios)}) as c:
        for _ in range(3):
            response = await c.invoke_sync(messages=[llm.user("hi")])
            assert response.usage is not None
            assert response.usage.cost is None
        assert c.get_usage().cost is None
    warnings = [r for r in caplog.records if "price" in r.getMessage().lower()]
    assert len(warnings) == 1


async def test_a_cached_request_is_answered_from_the_cache_without_cost() -> None:
    scenarios = Scenarios(Scenario(text="cached answer"))
    async with client(scenarios) as c:
        request = msgspec.structs.replace(ask(), cache=True)
        first = await c.invoke_sync(request)
        second = await c.invoke_sync(request)
        async with c.invoke(request) as stream:
            streamed = "".join([chunk.text async for chunk in stream])
        assert scenarios.calls("mock") == 1
        assert first.text == second.text == streamed == "cached answer"
        assert second.metadata is not None
        assert second.metadata["cache"] == "hit"
        assert second.usage is not None
        assert second.usage.cost == 0
        assert c.statistics().cache_hits == 2
        uncached = await c.invoke_sync(ask())  # without cache=True: sent again
        assert uncached.text == "cached answer"
        assert scenarios.calls("mock") == 2


# -- unknown prices -----------------------------------------------------------------------------

KEY = "sk-test-KEY-0123456789abcdef"


@asynccontextmanager
async def openai_client(**cost: Any) -> AsyncGenerator[llm.Client]:
    from llm_invocation.testing import MockTransport

    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    config = llm.Config.unlimited(
        provider="openai", providers={"openai": {"api_key": KEY}}, cost_control=cost
    )
    transport = MockTransport(scripted(100, 50), format="openai")
    async with llm.open_client(config, transports={"openai": lambda: transport}) as c:
        yield c


def finetune(max_tokens: int = 100) -> llm.Request:
    return llm.Request(
        model="openai:my-finetune-x",
        messages=[llm.user("hi")],
        options=llm.ModelOptions(max_tokens=max_tokens),
    )


@pytest.mark.parametrize("cost", [{"max_cost_per_request": "0.000001"}, {"max_budget": "0.000001"}])
async def test_a_model_of_unknown_price_is_refused_when_a_cap_or_a_budget_applies(
    cost: dict[str, str],
) -> None:
    async with openai_client(**cost) as c:
        for _ in range(3):
            with pytest.raises(llm.CostExceeded) as info:
                await c.invoke_sync(finetune())
            assert info.value.details["reason"] == "unknown_price"
        with pytest.raises(llm.CostExceeded) as known:
            await c.invoke_sync(model="openai:gpt-4", messages=[llm.user("hi")])
        assert known.value.details.get("reason") != "unknown_price"  # priced, and too dear
        report = await c.usage()
    assert report.total.calls == 0  # nothing was sent


async def test_an_allowed_model_of_unknown_price_goes_through_with_its_cost_unknown() -> None:
    async with openai_client(max_budget="1", unknown_price="allow") as c:
        for _ in range(3):
            response = await c.invoke_sync(finetune())
            assert response.usage is not None and response.usage.cost is None
        report = await c.usage()
    assert report.total.calls == 3
    assert report.total.unknown_cost_calls == 3  # never a made-up 0


async def test_a_price_override_prices_a_fine_tune_and_lets_it_through_a_cap() -> None:
    prices = {"openai:my-finetune-x": {"input_per_mtok": "3", "output_per_mtok": "6"}}
    async with openai_client(max_cost_per_request="0.01", prices=prices) as c:
        response = await c.invoke_sync(finetune())
    assert response.usage is not None
    assert response.usage.cost == Decimal(100 * 3 + 50 * 6) / 1_000_000


async def test_a_price_override_keyed_by_our_provider_name_prices_a_local_model() -> None:
    from llm_invocation.testing import MockTransport

    config = llm.Config.from_dict(
        {
            "provider": "local",
            "model": "llama3",
            "providers": {"local": {"kind": "ollama", "base_url": "http://127.0.0.1:9/v1"}},
            "cost_control": {
                "max_budget": "1",
                "prices": {"local:llama3": {"input_per_mtok": "0", "output_per_mtok": "0.5"}},
            },
        }
    )
    transport = MockTransport(scripted(100, 50))
    async with llm.open_client(config, transports={"local": lambda: transport}) as c:
        response = await c.invoke_sync(messages=[llm.user("hi")])
        (level,) = await c.budget_levels()
    assert response.usage is not None
    assert response.usage.cost == Decimal("0.000025")  # 50 completion tokens at $0.5/M
    assert level.spent == Decimal("0.000025")


def openrouter_answer(cost: str, *, streamed: bool) -> httpx.MockTransport:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": cost}
    body: dict[str, Any] = {
        "id": "gen-1",
        "object": "chat.completion",
        "created": 1,
        "model": "acme/unlisted-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if not streamed:
            return httpx.Response(200, json=body)
        chunk = {
            "id": "gen-1",
            "model": "acme/unlisted-model",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
        }
        tail = {"id": "gen-1", "model": "acme/unlisted-model", "choices": [], "usage": usage}
        events = b"".join(b"data: " + json.dumps(data).encode() + b"\n\n" for data in (chunk, tail))
        return httpx.Response(
            200, content=events + b"data: [DONE]\n\n", headers={"content-type": "text/event-stream"}
        )

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("streamed", [False, True])
async def test_the_cost_the_provider_reports_is_used_when_no_price_is_known(
    streamed: bool,
) -> None:
    config = llm.Config.from_dict(
        {
            "provider": "openrouter",
            "providers": {"openrouter": {"api_key": KEY}},
            "cost_control": {"max_budget": "1", "unknown_price": "allow"},
        }
    )
    transport = openrouter_answer("0.000042", streamed=streamed)
    async with llm.open_client(config, transports={"openrouter": lambda: transport}) as c:
        response = await c.invoke_sync(
            model="openrouter:acme/unlisted-model", messages=[llm.user("hi")], stream=streamed
        )
        report = await c.usage()
        (level,) = await c.budget_levels()
    assert response.usage is not None
    assert response.usage.cost == Decimal("0.000042")
    assert report.total.cost == Decimal("0.000042")
    assert report.total.unknown_cost_calls == 0
    assert level.spent == Decimal("0.000042")


# -- what a call without max_tokens reserves ----------------------------------------------------


def reserved_completion(error: llm.CostExceeded) -> int:
    """The completion tokens a call refused by the per-request cap reserved."""
    reserved: int = error.details["max_tokens"]
    return reserved


async def test_a_call_without_max_tokens_reserves_default_max_tokens() -> None:
    # The mock model's output limit is 16,384 tokens: above both defaults here.
    async with client(scripted(), max_cost_per_request="0.000001") as c:
        with pytest.raises(llm.CostExceeded) as default:
            await c.invoke_sync(messages=[llm.user("hi")], model="mock")
    async with client(scripted(), max_cost_per_request="0.000001", default_max_tokens=1000) as c:
        with pytest.raises(llm.CostExceeded) as configured:
            await c.invoke_sync(messages=[llm.user("hi")], model="mock")
    assert reserved_completion(default.value) == 4096
    assert reserved_completion(configured.value) == 1000


async def test_a_call_without_max_tokens_reserves_no_more_than_the_models_output_limit() -> None:
    async with client(scripted(), max_cost_per_request="0.000001", default_max_tokens=100_000) as c:
        with pytest.raises(llm.CostExceeded) as info:
            await c.invoke_sync(messages=[llm.user("hi")], model="mock")
    assert reserved_completion(info.value) == 16_384


async def test_a_low_tpm_limit_admits_calls_without_max_tokens_within_default_max_tokens() -> None:
    # 2,000 tokens a minute: a reserve of 4,096 completion tokens could never fit.
    settings = {
        "provider": "mock",
        "model": "mock",
        "rate_limits": {"tokens_per_minute": 2000, "max_wait": 1},
        "cost_control": {"default_max_tokens": 500},
    }
    async with llm.open_client(llm.Config.unlimited(**settings), scenarios=scripted()) as c:
        for _ in range(3):
            response = await c.invoke_sync(messages=[llm.user("hi")], model="mock")
            assert response.text == "ok"


async def test_a_dated_snapshot_reserves_the_output_limit_of_its_model() -> None:
    async with openai_client(max_cost_per_request="0.000001", default_max_tokens=100_000) as c:
        with pytest.raises(llm.CostExceeded) as info:
            await c.invoke_sync(model="openai:gpt-4o-2024-08-06", messages=[llm.user("hi")])
    assert reserved_completion(info.value) == 16_384  # gpt-4o's output limit
