"""The specifications' examples, translated to Python in examples/spec, run as written:
against OpenAI and Anthropic configured by their usual variables, here pointed at the fake
provider server, so they run offline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from llm_invocation.testing import (
    FakeServer,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    open_fake_server,
)

SPEC = Path(__file__).parent.parent / "examples" / "spec"
OPENAI_KEY = "sk-spec-example-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-spec-example-0123456789"


def provider_env(server: FakeServer, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith(("LLM_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=server.base_url("openai"),
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        ANTHROPIC_BASE_URL=server.base_url("anthropic"),
        **extra,
    )
    return env


async def run_example(name: str, server: FakeServer, **extra: str) -> str:
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(SPEC / name)],
            env=provider_env(server, **extra),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        assert key not in stdout + stderr
    return stdout


def test_every_spec_example_is_tested() -> None:
    tested = {
        "seed000_simple.py",
        "seed000_streaming.py",
        "seed000_advanced.py",
        "seed002_basic.py",
        "seed002_tools.py",
        "seed002_mcp.py",
    }
    assert {p.name for p in SPEC.glob("*.py")} == tested


async def test_seed000_simple_makes_clients_three_ways_and_completes() -> None:
    async with open_fake_server() as server:
        out = await run_example("seed000_simple.py", server)
        assert "from the environment: provider openai" in out
        assert "direct: provider openai, model gpt-4" in out
        assert "Response: You said:" in out
        assert "Usage: " in out
        (request,) = server.requests
        assert request.headers["authorization"] == "present"
        assert request.json is not None
        assert (request.model, request.json["max_tokens"]) == ("gpt-4", 100)


async def test_seed000_streaming_prints_the_story_as_it_comes() -> None:
    async with open_fake_server() as server:
        out = await run_example("seed000_streaming.py", server)
        assert "You said: Write a story about a brave knight." in out
        (request,) = server.requests
        assert request.json is not None
        assert request.json["stream"] is True
        assert (request.model, request.json["max_tokens"]) == ("gpt-4", 1000)


async def test_seed000_advanced_reports_tokens_and_cost() -> None:
    async with open_fake_server() as server:
        out = await run_example("seed000_advanced.py", server)
        assert "Response: You said:" in out
        assert "Token usage: " in out
        cost = out.split("Cost: $", 1)[1].split()[0]
        assert float(cost) > 0


async def test_seed002_basic_streams_from_the_configured_provider() -> None:
    async with open_fake_server() as server:
        out = await run_example("seed002_basic.py", server)
        assert "You said: Explain quantum computing in simple terms" in out
        (request,) = server.requests
        assert request.path.endswith("/chat/completions")
        assert request.json is not None
        assert request.json["temperature"] == 0.7
        assert request.model == "gpt-4-turbo-preview"


async def test_seed002_tools_offers_the_registered_tool_and_returns_its_call() -> None:
    scenarios = Scenarios()
    call = ScriptedToolCall(name="get_weather", arguments={"location": "San Francisco, CA"})
    scenarios.add("gpt-4-turbo-preview", Scenario(tool_calls=[call]))
    async with open_fake_server(scenarios) as server:
        out = await run_example("seed002_tools.py", server)
        assert "tool call: get_weather({'location': 'San Francisco, CA'})" in out
        assert "'temperature': 72" in out
        (request,) = server.requests
        assert request.json is not None
        tools = [tool["function"]["name"] for tool in request.json["tools"]]
        assert tools == ["get_weather"]


async def test_seed002_mcp_offers_the_servers_tools_without_being_asked(
    mcp_http_port: int,
) -> None:
    async with open_fake_server() as server:
        out = await run_example(
            "seed002_mcp.py", server, MCP_SERVER_ADDRESS=f"127.0.0.1:{mcp_http_port}"
        )
        assert "research__add" in out
        assert "answer: You said: Search for recent papers on quantum computing" in out
        (request,) = server.requests
        assert request.path.endswith("/v1/messages")
        assert request.json is not None
        offered = sorted(tool["name"] for tool in request.json["tools"])
        assert "research__add" in offered
        assert offered == sorted(
            json.loads(out.split("offered: ", 1)[1].split("\n")[0].replace("'", '"'))
        )
