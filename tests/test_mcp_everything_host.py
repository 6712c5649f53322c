"""The client as an MCP host, against the protocol's reference server (``server-everything``).

The server has tools that ask things of their client: a long-running operation that
reports progress, a roots list, a sampling request and forms (elicitation); it sends log
messages at the level the client sets. These tests run them over streamable HTTP (one
server for the module, a session per client), and over stdio where the transport matters.
Without node or without the server they skip (see ``tests/everything_server.py``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios, ScriptedUsage

from .everything_server import connected, find_node, http, serving, stdio

pytestmark = [
    # The SDK's streamable HTTP client leaves httpx2's async generators to the garbage
    # collector (see tests/test_mcp.py).
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

LOGGER = "llm_invocation.mcp.every"
LONG_RUNNING = "trigger-long-running-operation"
WAIT = 15  # seconds: a bound on waiting for what the server sends of its own accord

# MCP's log levels as Python's, as the documentation states them.
PYTHON_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}


@pytest.fixture(scope="module")
def node() -> str:
    return find_node()


@pytest.fixture(scope="module")
def http_url(node: str) -> Iterator[str]:
    """A streamable HTTP server shared by the module (each client has its own session)."""
    with serving(node, "streamableHttp") as url:
        yield url


async def call(client: llm.Client, tool: str, /, **arguments: Any) -> llm.ToolResult:
    """Run ``every__<tool>`` as a model's tool call is run."""
    found = client.tools.get(f"every__{tool}")
    assert found is not None, f"the server does not offer {tool}"
    return await found.execute(arguments)


class Heard(logging.Handler):
    """The records of the server's logger, and an event set by the first that matches."""

    def __init__(self, match: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.matched = trio.Event()
        self._match = match

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)  # the server's logs are handled in trio's thread
        if self._match(record):
            self.matched.set()


@contextmanager
def listening(match: Callable[[logging.LogRecord], bool]) -> Generator[Heard]:
    """`Heard` on the server's logger (``llm_invocation.mcp.every``), all levels on."""
    logger = logging.getLogger(LOGGER)
    heard = Heard(match)
    level = logger.level
    logger.addHandler(heard)
    logger.setLevel(logging.DEBUG)
    try:
        yield heard
    finally:
        logger.removeHandler(heard)
        logger.setLevel(level)


def saying(text: str) -> Callable[[logging.LogRecord], bool]:
    return lambda record: text in record.getMessage()


# -- progress -----------------------------------------------------------------------------------


async def test_a_calls_progress_arrives_in_order_with_the_servers_totals(http_url: str) -> None:
    events: list[llm.MCPProgress] = []
    async with connected(http(http_url)) as client:
        result = await client.mcp("every").call_tool(
            LONG_RUNNING, {"duration": 0.2, "steps": 4}, on_progress=events.append
        )
    assert result.content == "Long running operation completed. Duration: 0.2 seconds, Steps: 4."
    assert events == [
        llm.MCPProgress(server="every", tool=LONG_RUNNING, progress=float(step), total=4.0)
        for step in range(1, 5)
    ]


async def test_progress_over_stdio_reaches_the_callback_of_the_registration(node: str) -> None:
    events: list[llm.MCPProgress] = []
    async with connected(stdio(node), on_progress=events.append) as client:
        result = await call(client, LONG_RUNNING, duration=0.2, steps=3)  # as a model's call
    assert not result.is_error, result.content
    assert [(e.server, e.tool, e.progress, e.total) for e in events] == [
        ("every", LONG_RUNNING, float(step), 3.0) for step in range(1, 4)
    ]


async def test_a_callback_added_on_the_handle_hears_every_call_to_the_server(
    http_url: str,
) -> None:
    events: list[llm.MCPProgress] = []
    async with connected(http(http_url)) as client:
        client.mcp("every").on_progress(events.append)
        await call(client, LONG_RUNNING, duration=0.1, steps=2)
        await client.mcp("every").call_tool(LONG_RUNNING, {"duration": 0.1, "steps": 3})
    assert [(e.progress, e.total) for e in events] == [
        (1.0, 2.0),
        (2.0, 2.0),
        (1.0, 3.0),
        (2.0, 3.0),
        (3.0, 3.0),
    ]


# -- logs ---------------------------------------------------------------------------------------

# The server's simulated log messages name their level: "Debug-level message", "Alert
# level-message", ...
SIMULATED = re.compile(r"^(debug|info|notice|warning|error|critical|alert|emergency)\W", re.I)


async def test_server_logs_arrive_on_the_servers_logger_at_the_mapped_level(
    http_url: str,
) -> None:
    # The server sends one message of a random level at once, then one every 5 s: the
    # first is checked (every level is checked with the SDK's server in
    # tests/test_mcp_host_features.py).
    with listening(lambda record: SIMULATED.match(record.getMessage()) is not None) as heard:
        async with connected(http(http_url)) as client:
            await client.mcp("every").set_log_level("debug")  # every level is sent
            await call(client, "toggle-simulated-logging")  # on
            with trio.fail_after(WAIT):
                await heard.matched.wait()
            await call(client, "toggle-simulated-logging")  # off
    record = next(r for r in heard.records if SIMULATED.match(r.getMessage()))
    found = SIMULATED.match(record.getMessage())
    assert found is not None
    assert record.levelno == PYTHON_LEVELS[found.group(1).lower()]
    assert (record.mcp_server, record.mcp_data) == ("every", record.getMessage())  # type: ignore[attr-defined]


async def test_the_level_set_reaches_the_server_which_sends_nothing_below_it(
    http_url: str,
) -> None:
    # The server logs every subscription at the info level, before it answers.
    below, at = "demo://resource/dynamic/text/11", "demo://resource/dynamic/text/12"
    with listening(saying(at)) as heard:
        async with connected(http(http_url)) as client:
            handle = client.mcp("every")
            await handle.set_log_level("warning")
            await handle.subscribe_resource(below)
            await handle.set_log_level("info")
            await handle.subscribe_resource(at)
            with trio.fail_after(WAIT):
                await heard.matched.wait()
    subscribed = [r for r in heard.records if "Subscribe Resource" in r.getMessage()]
    assert [(r.levelno, at in r.getMessage()) for r in subscribed] == [(logging.INFO, True)]


async def test_the_configured_log_level_is_set_when_the_client_connects(http_url: str) -> None:
    below, at = "demo://resource/dynamic/text/13", "demo://resource/dynamic/text/14"
    with listening(saying(at)) as heard:
        async with connected({**http(http_url), "log_level": "error"}) as client:
            handle = client.mcp("every")
            await handle.subscribe_resource(below)
            await handle.set_log_level("info")
            await handle.subscribe_resource(at)
            with trio.fail_after(WAIT):
                await heard.matched.wait()
    subscribed = [r.getMessage() for r in heard.records if "Subscribe Resource" in r.getMessage()]
    assert [at in message for message in subscribed] == [True]


# -- roots --------------------------------------------------------------------------------------


def listed_roots(result: llm.ToolResult) -> list[tuple[str, str]]:
    """The (name, URI) pairs the server's get-roots-list reports."""
    assert not result.is_error, result.content
    return re.findall(r"^\d+\. (.+)\n   URI: (\S+)$", result.content, re.MULTILINE)


async def test_the_server_lists_the_roots_the_client_declares(
    http_url: str, tmp_path: Path
) -> None:
    roots = [{"uri": str(tmp_path), "name": "work"}, {"uri": "file:///srv/data"}]
    async with llm.open_mock_client(mcp={"roots": roots}) as client:
        await client.register_mcp_server("every", http(http_url))
        result = await call(client, "get-roots-list")
    assert listed_roots(result) == [
        ("work", tmp_path.as_uri()),
        ("Unnamed Root", "file:///srv/data"),
    ]


async def test_after_set_mcp_roots_the_server_lists_the_new_roots(
    http_url: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    # The server reads the roots again when told they changed, and then logs their count.
    with listening(saying("Roots updated: 2 root(s)")) as heard:
        async with llm.open_mock_client(mcp={"roots": [{"uri": str(first)}]}) as client:
            await client.register_mcp_server("every", http(http_url))
            before = await call(client, "get-roots-list")
            await client.set_mcp_roots([llm.MCPRoot(uri=second.as_uri(), name="second"), first])
            with trio.fail_after(WAIT):
                await heard.matched.wait()
            after = await call(client, "get-roots-list")
    assert listed_roots(before) == [("Unnamed Root", first.as_uri())]
    assert listed_roots(after) == [("second", second.as_uri()), ("Unnamed Root", first.as_uri())]


# -- sampling -----------------------------------------------------------------------------------


def scripted(text: str) -> Scenarios:
    return Scenarios(Scenario(text=text, usage=ScriptedUsage(prompt_tokens=5, completion_tokens=7)))


def sampled(result: llm.ToolResult) -> Any:
    """The server's report of the answer it got (the JSON after its heading)."""
    heading, _, answer = result.content.partition("\n")
    assert heading.startswith("LLM sampling result:"), result.content
    return json.loads(answer)


async def test_without_sampling_the_server_does_not_offer_its_sampling_tool(
    http_url: str,
) -> None:
    # The capability is not declared: the server adds the tool only for clients that do.
    async with connected(http(http_url)) as client:
        names = set(client.tools.names())
    assert "every__trigger-sampling-request" not in names
    assert "every__get-roots-list" in names


async def test_a_refused_sampling_request_is_an_error_result_of_the_servers_tool(
    http_url: str,
) -> None:
    sampling = llm.MCPSampling(model="mock", policy=lambda asked: None)
    async with connected(http(http_url), scripted("never"), sampling=sampling) as client:
        result = await call(client, "trigger-sampling-request", prompt="hello")
        after = await call(client, "echo", message="still here")
        stats = client.statistics()
    assert (result.is_error, result.error_code) == (True, "tool_execution_failed")
    assert "refused by the sampling policy" in result.content
    assert stats.invocations == 0
    assert after.content == "Echo: still here"


async def test_sampling_is_answered_by_the_clients_model_and_tagged_with_the_server(
    http_url: str,
) -> None:
    sampling = llm.MCPSampling(model="mock")
    async with connected(http(http_url), scripted("a sampled answer"), sampling=sampling) as client:
        result = await call(client, "trigger-sampling-request", prompt="hello")
        report = await client.usage(group_by=["tag:mcp_server"])
    assert sampled(result) == {
        "model": "mock",
        "stopReason": "endTurn",
        "role": "assistant",
        "content": {"type": "text", "text": "a sampled answer"},
    }
    assert [(row.group, row.calls) for row in report.rows] == [({"tag:mcp_server": "every"}, 1)]


async def test_the_servers_sampling_request_reaches_the_model_as_it_asked(
    http_url: str,
) -> None:
    sent: list[llm.Request] = []

    class Record(llm.Middleware):
        async def before_request(self, call: llm.CallInfo, request: llm.Request) -> None:
            sent.append(request)

    sampling = llm.MCPSampling(model="mock", max_tokens=50)
    async with connected(http(http_url), scripted("ok"), sampling=sampling) as client:
        client.add_middleware(Record())
        await call(client, "trigger-sampling-request", prompt="hello", maxTokens=80)
    (request,) = sent
    assert [(m.role, m.text) for m in request.messages] == [
        ("system", "You are a helpful test server."),
        ("user", "Resource trigger-sampling-request context: hello"),
    ]
    assert (request.options.max_tokens, request.options.temperature) == (50, 0.7)  # capped
    assert request.metadata == {"mcp_server": "every"}


# -- forms (elicitation) ------------------------------------------------------------------------


async def test_a_form_is_declined_without_a_callback(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await call(client, "trigger-elicitation-request")
    assert result.content.startswith("❌ User declined to provide the requested information.")
    assert '"action": "decline"' in result.content


async def test_a_form_accepted_by_the_callback_is_echoed_by_the_server(http_url: str) -> None:
    asked: list[llm.MCPElicitation] = []

    def answer(form: llm.MCPElicitation) -> llm.MCPElicitationAnswer:
        asked.append(form)
        return llm.MCPElicitationAnswer.accept({"name": "Ada", "check": True, "integer": 36})

    async with connected(http(http_url), elicitation=answer) as client:
        result = await call(client, "trigger-elicitation-request")
    assert result.content.splitlines()[:4] == [
        "✅ User provided the requested information!",
        "User inputs:",
        "- Name: Ada",
        "- Agreed to terms: true",
    ]
    assert "- Favorite Integer: 36" in result.content
    (form,) = asked
    assert (form.server, form.message) == (
        "every",
        "Please provide inputs for the following fields:",
    )
    assert form.schema["required"] == ["name"]


async def test_a_url_form_is_declined_even_with_a_callback(http_url: str) -> None:
    asked: list[llm.MCPElicitation] = []

    def answer(form: llm.MCPElicitation) -> llm.MCPElicitationAnswer:
        asked.append(form)
        return llm.MCPElicitationAnswer.accept({})

    async with connected(http(http_url)) as client:
        client.mcp("every").on_elicitation(answer)
        result = await call(client, "trigger-url-elicitation", url="https://example.com/verify")
    assert result.content.startswith("❌ User declined to open the URL")
    assert asked == []
