"""The automatic tool loop on the mock transport, for each provider's wire format."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.testing import (
    MockTransport,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    ScriptedUsage,
)
from llm_invocation.tools import tool

FORMATS = ("openai", "anthropic", "gemini")
KEY = "sk-test-TOOLS-0123456789abcdef"


@tool
async def weather(city: str, unit: str = "C") -> dict[str, Any]:
    """The current weather in a city.

    Args:
        city: the city's name.
        unit: C or F.
    """
    return {"city": city, "temperature": 21, "unit": unit}


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def broken(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"broken on purpose: {reason}")


@tool(timeout=0.5)
async def sleepy() -> str:
    """Never finishes in time."""
    await trio.sleep(60)
    return "too late"


@asynccontextmanager
async def client_for(
    scenarios: Scenarios, **tools_config: Any
) -> AsyncGenerator[tuple[llm.Client, dict[str, MockTransport]]]:
    transports = {name: MockTransport(scenarios, format=name) for name in FORMATS}
    # Not about limits, and the scripted models have no price: nothing is limited.
    config = llm.Config.unlimited(
        provider="openai",
        providers={name: {"api_key": KEY} for name in FORMATS},
        tools={"max_steps": 4, **tools_config},
    )
    async with llm.open_client(
        config, transports={name: (lambda t=t: t) for name, t in transports.items()}
    ) as client:
        for t in (weather, add, broken, sleepy):
            client.register_tool(t)
        yield client, transports


def usage(prompt: int, completion: int) -> ScriptedUsage:
    return ScriptedUsage(prompt_tokens=prompt, completion_tokens=completion)


def calls(*pairs: tuple[str, dict[str, Any]]) -> list[ScriptedToolCall]:
    return [ScriptedToolCall(name=name, arguments=args) for name, args in pairs]


def tool_results_sent(fmt: str, body: dict[str, Any]) -> list[Any]:
    """The tool results a recorded request body carries, in each provider's own format."""
    if fmt == "openai":
        return [m for m in body["messages"] if m["role"] == "tool"]
    if fmt == "anthropic":
        return [
            block
            for m in body["messages"]
            if m["role"] == "user" and isinstance(m["content"], list)
            for block in m["content"]
            if block.get("type") == "tool_result"
        ]
    return [
        part["functionResponse"]
        for content in body["contents"]
        for part in content["parts"]
        if "functionResponse" in part
    ]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_one_call_then_an_answer(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(tool_calls=calls(("weather", {"city": "Paris"})), usage=usage(50, 10)),
        Scenario(text="It is 21 degrees in Paris.", usage=usage(80, 12)),
    )
    async with client_for(scenarios) as (client, transports):
        request = llm.Request(model=f"{fmt}:m", messages=[llm.user("Weather in Paris?")])
        response = await client.invoke_sync(request, tool_mode="auto")
        assert response.text == "It is 21 degrees in Paris."
        assert response.usage is not None
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (130, 22)
        assert response.metadata is not None
        assert (response.metadata["steps"], response.metadata["tool_calls"]) == (2, 1)
        second = transports[fmt].requests[-1].json
        (sent,) = tool_results_sent(fmt, second)
        assert "21" in str(sent)
        assert "weather" in str(second) or fmt == "openai"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_parallel_calls_are_run_and_answered_together(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(
            tool_calls=calls(("add", {"a": 1, "b": 2}), ("weather", {"city": "Oslo"})),
        ),
        Scenario(text="3, and mild in Oslo."),
    )
    async with client_for(scenarios) as (client, transports):
        request = llm.Request(model=f"{fmt}:m", messages=[llm.user("Do both")])
        events: list[Any] = []
        async with client.invoke(request, tool_mode="auto") as loop:
            async for item in loop:
                if not isinstance(item, llm.StreamChunk):
                    events.append(item)
        calls_event, results_event = events
        assert [c.name for c in calls_event.calls] == ["add", "weather"]
        assert results_event.results[0].content == "3"
        assert loop.response.text == "3, and mild in Oslo."
        sent = tool_results_sent(fmt, transports[fmt].requests[-1].json)
        assert len(sent) == 2
        if fmt == "anthropic":  # parallel results travel in one user message
            last_user = [
                m for m in transports[fmt].requests[-1].json["messages"] if m["role"] == "user"
            ][-1]
            assert len(last_user["content"]) == 2


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_failing_tool_is_reported_to_the_model_which_carries_on(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(tool_calls=calls(("broken", {"reason": "test"}))),
        Scenario(text="The tool failed, sorry."),
    )
    async with client_for(scenarios) as (client, transports):
        request = llm.Request(model=f"{fmt}:m", messages=[llm.user("try")])
        async with client.invoke(request, tool_mode="auto") as loop:
            items = [item async for item in loop]
        results = next(i for i in items if isinstance(i, llm.ToolResultsEvent)).results
        assert results[0].is_error
        assert results[0].error_code == "tool_execution_failed"
        assert "broken on purpose" in results[0].content
        assert loop.response.text == "The tool failed, sorry."
        sent = str(tool_results_sent(fmt, transports[fmt].requests[-1].json))
        assert "broken on purpose" in sent


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_tool_timeout_becomes_an_error_result(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(tool_calls=calls(("sleepy", {}))), Scenario(text="gave up"))
    async with client_for(scenarios) as (client, transports):
        request = llm.Request(model=f"{fmt}:m", messages=[llm.user("wait")])
        async with client.invoke(request, tool_mode="auto") as loop:
            items = [item async for item in loop]
        (results,) = [i for i in items if isinstance(i, llm.ToolResultsEvent)]
        assert results.results[0].error_code == "timeout"
        assert loop.response.text == "gave up"
        assert len(tool_results_sent(fmt, transports[fmt].requests[-1].json)) == 1


@pytest.mark.parametrize("fmt", FORMATS)
async def test_max_steps_stops_a_model_that_keeps_calling_tools(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(tool_calls=calls(("add", {"a": 1, "b": 1})), usage=usage(10, 5)))
    async with client_for(scenarios) as (client, _):
        request = llm.Request(model=f"{fmt}:m", messages=[llm.user("loop")])
        response = await client.invoke_sync(request, tool_mode="auto", max_steps=3)
        assert scenarios.calls("m") == 3
        assert response.metadata is not None
        assert response.metadata["max_steps_reached"] is True
        assert response.usage is not None
        assert response.usage.prompt_tokens == 30


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_chunks_of_every_step_stream_through_with_events_between(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(text="Let me look.", chunk_chars=4, tool_calls=calls(("add", {"a": 2, "b": 3}))),
        Scenario(text="The sum is 5.", chunk_chars=4),
    )
    async with client_for(scenarios) as (client, _):
        request = llm.Request(model=f"{fmt}:m", messages=[llm.user("2+3?")])
        order: list[str] = []
        async with client.invoke(request, tool_mode="auto") as loop:
            async for item in loop:
                if isinstance(item, llm.StreamChunk):
                    if item.text:
                        order.append(item.text)
                else:
                    order.append(item.type)
        assert order.index("tool_call") < order.index("tool_result")
        before = "".join(order[: order.index("tool_call")])
        after = "".join(order[order.index("tool_result") + 1 :])
        assert (before, after) == ("Let me look.", "The sum is 5.")
        assert len(loop.steps) == 2
        assert [m.role for m in loop.messages] == ["user", "assistant", "tool"]


async def test_only_the_offered_tools_are_sent_and_unknown_names_are_errors() -> None:
    scenarios = Scenarios(Scenario(text="ok"))
    async with client_for(scenarios) as (client, transports):
        request = llm.Request(model="openai:m", messages=[llm.user("hi")])
        await client.invoke_sync(request, tools=["add"], tool_mode="auto")
        sent = transports["openai"].requests[-1].json
        assert [t["function"]["name"] for t in sent["tools"]] == ["add"]
        with pytest.raises(llm.InvalidRequest) as info:
            client.invoke(request, tools=["nope"], tool_mode="auto")
        assert info.value.details["name"] == "nope"
        assert "add" in info.value.details["available"]


async def test_without_tool_mode_tool_calls_come_back_to_the_caller() -> None:
    scenarios = Scenarios(Scenario(tool_calls=calls(("add", {"a": 1, "b": 2}))))
    async with client_for(scenarios) as (client, _):
        request = llm.Request(model="openai:m", messages=[llm.user("hi")])
        response = await client.invoke_sync(request, tools=[add])
        assert [c.name for c in response.tool_calls] == ["add"]
        assert scenarios.calls("m") == 1


async def test_every_registered_tool_is_offered_in_auto_mode() -> None:
    scenarios = Scenarios(Scenario(text="ok"))
    async with client_for(scenarios) as (client, transports):
        await client.invoke_sync(
            llm.Request(model="openai:m", messages=[llm.user("hi")]), tool_mode="auto"
        )
        names = {t["function"]["name"] for t in transports["openai"].requests[-1].json["tools"]}
        assert names == {"add", "broken", "sleepy", "weather"}
