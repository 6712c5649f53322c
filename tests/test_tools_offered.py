"""Which tools a request offers the model, and who runs them (``docs/tools.md``).

Registered and MCP tools are offered with every request that names none (seed 002:
"MCP tools are automatically included"); ``tools=[]`` offers none and ``tools=[...]``
exactly those; ``tools.offer: "none"`` turns the default off. The model's tool calls come
back to the caller unless ``tool_mode="auto"`` runs the loop. Offered schemas count toward
the prompt's tokens like explicit tools.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import trio

import llm_invocation as llm
from llm_invocation import client as llm_client
from llm_invocation.actors.websocket import DoneFrame, WebSocketFront
from llm_invocation.cli import main as cli_main
from llm_invocation.config import WebSocketConfig
from llm_invocation.testing import MockTransport, Scenario, Scenarios, ScriptedToolCall

from .test_websocket_front import connect

pytestmark = [
    # The MCP SDK's clients leave httpx2's async generators to the garbage collector (see
    # tests/test_mcp.py).
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

KEY: Final = "sk-test-OFFERED-0123456789abcdef"
DEMO: Final = Path(__file__).parent / "mcp_servers" / "demo_server.py"


class WeatherTool:
    """Seed 002's ``WeatherTool``, as a class implementing the `llm.Tool` protocol."""

    def __init__(self) -> None:
        self.executed = 0

    @property
    def name(self) -> str:
        return "get_weather"

    @property
    def description(self) -> str:
        return "Get current weather for a location"

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City and state"}},
            "required": ["location"],
        }

    async def execute(self, arguments: dict[str, Any]) -> Any:
        self.executed += 1
        return {"temperature": 72, "condition": "sunny"}


@llm.tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def make_config(**overrides: Any) -> llm.Config:
    settings: dict[str, Any] = {
        "provider": "openai",
        "rate_limits": {
            "requests_per_minute": None,
            "tokens_per_minute": None,
            "concurrent_calls": None,
        },
        "cost_control": {"max_cost_per_request": None, "max_budget": None},
        "providers": {name: {"api_key": KEY} for name in ("openai", "anthropic")},
    }
    settings.update(overrides)
    return llm.Config.from_dict(settings)


@asynccontextmanager
async def client_for(
    scenarios: Scenarios, config: llm.Config | None = None
) -> AsyncGenerator[tuple[llm.Client, dict[str, MockTransport]]]:
    transports = {name: MockTransport(scenarios, format=name) for name in ("openai", "anthropic")}
    factories = {name: (lambda t=t: t) for name, t in transports.items()}
    async with llm.open_client(config or make_config(), transports=factories) as client:
        client.register_tool(add)
        yield client, transports


def offered(transport: MockTransport, index: int = -1) -> list[str] | None:
    """The tool names the recorded request offered (None: no ``tools`` field at all)."""
    body = transport.requests[index].json
    assert body is not None
    if "tools" not in body:
        return None
    names: list[str] = []
    for tool in body["tools"]:
        names.append(tool["function"]["name"] if "function" in tool else tool["name"])
    return names


def ask(model: str = "openai:gpt-4o", **kw: Any) -> llm.Request:
    return llm.Request(
        model=model, messages=[llm.user("What's the weather in San Francisco?")], **kw
    )


def script(*steps: Scenario) -> Scenarios:
    """Scenarios answering ``gpt-4o`` with ``steps``, one per request."""
    scenarios = Scenarios()
    scenarios.add("gpt-4o", *steps)
    return scenarios


def weather_call() -> Scenario:
    return Scenario(
        tool_calls=[ScriptedToolCall(name="get_weather", arguments={"location": "San Francisco"})]
    )


# -- seed 002's examples -----------------------------------------------------------------------


async def test_seed_tool_usage_offers_the_named_registered_tool_and_returns_its_call() -> None:
    weather = WeatherTool()
    async with client_for(Scenarios(weather_call())) as (client, transports):
        client.register_tool(weather)
        request = llm.Request(
            model="openai:gpt-4-turbo-preview",
            messages=[llm.user("What's the weather in San Francisco?")],
            tools=[client.tools.spec("get_weather")],
        )
        async with client.invoke(request) as stream:
            async for _chunk in stream:
                pass
    assert offered(transports["openai"]) == ["get_weather"]
    (call,) = stream.response.tool_calls
    assert (call.name, msgspec.json.decode(call.arguments)) == (
        "get_weather",
        {"location": "San Francisco"},
    )
    assert weather.executed == 0  # the caller runs it: no tool_mode="auto"
    assert len(transports["openai"].requests) == 1


async def test_seed_mcp_integration_includes_the_servers_tools_automatically() -> None:
    server = {"transport": "stdio", "command": sys.executable, "args": [str(DEMO)], "timeout": 10}
    async with client_for(Scenarios(Scenario(text="searching"))) as (client, transports):
        names = await client.register_mcp_server("demo", server)
        request = llm.Request(
            model="anthropic:claude-3-opus",
            messages=[llm.user("Search for recent papers on quantum computing")],
        )
        response = await client.invoke_sync(request)
    assert response.text == "searching"
    sent = offered(transports["anthropic"])
    assert sent is not None
    assert set(names) <= set(sent)
    assert "add" in sent  # the local tool as well


# -- the rule ----------------------------------------------------------------------------------


async def test_registered_tools_are_offered_to_a_request_that_names_none() -> None:
    async with client_for(Scenarios(Scenario(text="ok"))) as (client, transports):
        client.register_tool(WeatherTool())
        await client.invoke_sync(ask())
        await client.chat([llm.user("hi")], model="openai:gpt-4o")
        async with client.invoke(ask()) as stream:
            await stream.aggregate()
    for index in range(3):
        assert offered(transports["openai"], index) == ["add", "get_weather"]


async def test_the_tool_calls_of_a_plain_request_come_back_to_the_caller() -> None:
    weather = WeatherTool()
    async with client_for(Scenarios(weather_call())) as (client, transports):
        client.register_tool(weather)
        response = await client.invoke_sync(ask())
    assert [c.name for c in response.tool_calls] == ["get_weather"]
    assert response.finish_reason == "tool_calls"
    assert weather.executed == 0
    assert len(transports["openai"].requests) == 1


async def test_an_empty_tools_list_offers_none() -> None:
    async with client_for(Scenarios(Scenario(text="ok"))) as (client, transports):
        await client.invoke_sync(ask(tools=[]))
        await client.invoke_sync(ask(), tools=[])
    assert offered(transports["openai"], 0) is None
    assert offered(transports["openai"], 1) is None


async def test_a_tools_list_offers_exactly_those() -> None:
    async with client_for(Scenarios(Scenario(text="ok"))) as (client, transports):
        client.register_tool(WeatherTool())
        own = llm.ToolSpec(name="lookup", description="Look something up")
        await client.invoke_sync(ask(tools=[own]))
        await client.invoke_sync(ask(), tools=["get_weather"])
        await client.invoke_sync(ask(tools=[own]), tools=[add])
    assert offered(transports["openai"], 0) == ["lookup"]
    assert offered(transports["openai"], 1) == ["get_weather"]
    assert offered(transports["openai"], 2) == ["lookup", "add"]


async def test_offer_none_in_the_configuration_offers_nothing_but_the_loop_still_runs() -> None:
    scenarios = script(
        Scenario(text="plain"),
        Scenario(tool_calls=[ScriptedToolCall(name="add", arguments={"a": 1, "b": 2})]),
        Scenario(text="3"),
    )
    config = make_config(tools={"offer": "none"})
    async with client_for(scenarios, config) as (client, transports):
        await client.invoke_sync(ask())
        looped = await client.invoke_sync(ask(), tool_mode="auto")
    assert offered(transports["openai"], 0) is None
    assert offered(transports["openai"], 1) == ["add"]
    assert looped.text == "3"


async def test_tool_mode_auto_runs_the_offered_tools() -> None:
    weather = WeatherTool()
    scenarios = script(weather_call(), Scenario(text="72 and sunny"))
    async with client_for(scenarios) as (client, _):
        client.register_tool(weather)
        response = await client.invoke_sync(ask(), tool_mode="auto")
    assert response.text == "72 and sunny"
    assert weather.executed == 1


async def test_a_request_naming_an_unknown_tool_is_an_invalid_request() -> None:
    async with client_for(Scenarios(Scenario(text="never"))) as (client, transports):
        with pytest.raises(llm.InvalidRequest) as by_name:
            client.invoke(ask(), tools=["nope"])
        with pytest.raises(llm.InvalidRequest) as by_choice:
            await client.invoke_sync(ask(tool_choice=llm.NamedToolChoice(name="nope")))
        with pytest.raises(llm.InvalidRequest):
            client.tools.spec("nope")
    assert by_name.value.details["name"] == "nope"
    assert by_name.value.details["available"] == ["add"]
    assert by_choice.value.details["field"] == "tool_choice"
    assert not transports["openai"].requests


async def test_a_named_tool_choice_may_force_a_registered_tool() -> None:
    async with client_for(Scenarios(Scenario(text="ok"))) as (client, transports):
        await client.invoke_sync(ask(tool_choice=llm.NamedToolChoice(name="add")))
    body = transports["openai"].requests[0].json
    assert offered(transports["openai"]) == ["add"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}


async def test_a_model_without_function_calling_is_offered_no_registered_tools(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="llm_invocation.invocation")
    async with client_for(Scenarios(Scenario(text="ok"))) as (client, transports):
        await client.invoke_sync(ask("openai:o1-mini"))
        await client.invoke_sync(ask("openai:o1-mini"))
    assert offered(transports["openai"], 0) is None
    notes = [r for r in caplog.records if "not offered" in r.getMessage()]
    assert len(notes) == 1  # said once per model


async def test_a_legacy_completion_is_offered_no_tools() -> None:
    async with client_for(Scenarios(Scenario(text="once upon a time"))) as (client, transports):
        completion = await client.complete("Once", model="openai:gpt-3.5-turbo-instruct")
    assert completion.text == "once upon a time"
    assert transports["openai"].requests[0].path.endswith("/completions")
    assert offered(transports["openai"]) is None


async def test_offered_tool_schemas_count_toward_the_prompt_like_explicit_tools() -> None:
    # A cap nothing passes: each refusal says how many prompt tokens were counted.
    config = make_config(
        cost_control={
            "max_cost_per_request": 0.000000001,
            "max_budget": None,
            "prices": {"openai:gpt-4o": {"input_per_mtok": 1000, "output_per_mtok": 1000}},
        }
    )

    async def counted(client: llm.Client, **kw: Any) -> int:
        with pytest.raises(llm.CostExceeded) as info:
            await client.invoke_sync(ask(**kw).with_options(max_tokens=1))
        return int(info.value.details["prompt_tokens"])

    async with client_for(Scenarios(Scenario(text="never")), config) as (client, transports):
        client.register_tool(WeatherTool())
        by_default = await counted(client)
        explicit = await counted(client, tools=client.tools.specs())
        none = await counted(client, tools=[])
    assert by_default == explicit > none
    assert not transports["openai"].requests


# -- the WebSocket front -------------------------------------------------------------------------


@asynccontextmanager
async def front_for(
    scenarios: Scenarios, **options: Any
) -> AsyncGenerator[tuple[llm.Client, WebSocketFront, MockTransport]]:
    async with client_for(scenarios) as (client, transports), trio.open_nursery() as nursery:
        front = WebSocketFront(client, WebSocketConfig(port=0), grace=1.0, **options)
        await nursery.start(front.serve)
        yield client, front, transports["openai"]
        nursery.cancel_scope.cancel()


def frame(id: str, request: llm.Request, **extra: Any) -> dict[str, Any]:
    return {"type": "invoke", "id": id, "request": msgspec.to_builtins(request), **extra}


async def test_a_remote_plain_invoke_offers_only_its_own_tools_never_the_servers() -> None:
    scenarios = script(Scenario(text="no tools"), Scenario(text="its own"))
    async with front_for(scenarios) as (_, front, transport), connect(front) as peer:
        await peer.send(frame("a", ask()))
        _, first = await peer.finish("a")
        own = llm.ToolSpec(name="client_side", description="Runs on the remote client")
        await peer.send(frame("b", ask(tools=[own])))
        _, second = await peer.finish("b")
    assert isinstance(first, DoneFrame) and isinstance(second, DoneFrame)
    assert offered(transport, 0) is None
    assert offered(transport, 1) == ["client_side"]


async def test_a_remote_tool_loop_offers_and_runs_the_servers_tools() -> None:
    scenarios = script(
        Scenario(tool_calls=[ScriptedToolCall(name="add", arguments={"a": 2, "b": 3})]),
        Scenario(text="5"),
    )
    async with (
        front_for(scenarios, allow_tool_loop=True) as (_, front, transport),
        connect(front) as peer,
    ):
        await peer.send(frame("t", ask(), tool_mode="auto"))
        _, end = await peer.finish("t")
    assert isinstance(end, DoneFrame)
    assert end.response.text == "5"
    assert offered(transport, 0) == ["add"]


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No keys from the environment, and the package's logger as it was afterwards (the
    command line configures it)."""
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name.startswith("LLM_"):
            monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("llm_invocation")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_cli_chat_runs_the_registered_tools_the_model_calls(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command line's client gets a registered tool (as configured MCP servers give
    # it theirs) and a scripted model that calls it: the chat runs it and answers.
    scenarios = Scenarios()
    scenarios.add(
        "adder",
        Scenario(tool_calls=[ScriptedToolCall(name="add", arguments={"a": 2, "b": 3})]),
        Scenario(text="2 + 3 = 5"),
    )
    real_open_client = llm_client.open_client

    @asynccontextmanager
    async def open_with_tools(config: llm.Config, **_: Any) -> AsyncGenerator[llm.Client]:
        async with real_open_client(config, scenarios=scenarios) as client:
            client.register_tool(add)
            yield client

    monkeypatch.setattr(llm_client, "open_client", open_with_tools)
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["chat", "--model", "mock:adder", "what is 2 + 3?"], out=out, err=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().strip() == "2 + 3 = 5"
    assert "[tools: add]" in err.getvalue()
    assert scenarios.calls("adder") == 2
