"""The client as an MCP host: progress, server logs, roots, sampling and forms.

Servers are the SDK's, in process (`tests/mcp_servers/host_server.py`'s `build`), and the
same server over stdio where the transport matters (progress and logs cross a pipe).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios, ScriptedUsage

from .mcp_servers.host_server import build

HOST_SERVER = Path(__file__).parent / "mcp_servers" / "host_server.py"


def stdio_server() -> dict[str, object]:
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(HOST_SERVER)],
        "timeout": 20,
    }


def scripted(text: str = "sampled answer") -> Scenarios:
    return Scenarios(Scenario(text=text, usage=ScriptedUsage(prompt_tokens=5, completion_tokens=7)))


async def call(client: llm.Client, server: str, tool: str, **arguments: Any) -> str:
    result = await client.mcp(server).call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.content


# -- progress -----------------------------------------------------------------------------------


async def test_a_direct_call_hears_its_progress_in_order_before_its_result() -> None:
    events: list[llm.MCPProgress] = []
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        result = await client.mcp("host").call_tool(
            "work", {"steps": 20}, on_progress=events.append
        )
    assert result.content == "done"
    assert [e.progress for e in events] == [float(n) for n in range(1, 21)]
    assert events[0] == llm.MCPProgress(
        server="host", tool="work", progress=1.0, total=20.0, message="step 1"
    )


async def test_progress_of_a_stdio_server_reaches_the_callback_of_its_registration() -> None:
    events: list[llm.MCPProgress] = []

    async def hear(event: llm.MCPProgress) -> None:
        await trio.lowlevel.checkpoint()  # an async callback is awaited in order too
        events.append(event)

    async with llm.open_mock_client() as client:
        await client.register_mcp_server("pipe", stdio_server(), on_progress=hear)
        result = await client.tools.get("pipe__work").execute({"steps": 5})  # as a model's call
    assert result.content == "done"
    assert [(e.server, e.tool, e.progress, e.message) for e in events] == [
        ("pipe", "work", float(n), f"step {n}") for n in range(1, 6)
    ]


async def test_progress_of_concurrent_calls_stays_in_order_per_call() -> None:
    events: list[llm.MCPProgress] = []
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        client.mcp("host").on_progress(events.append)
        per_call: dict[int, list[float]] = {5: [], 8: []}
        async with trio.open_nursery() as nursery:
            for steps, seen in per_call.items():

                def note(event: llm.MCPProgress, seen: list[float] = seen) -> None:
                    seen.append(event.progress)

                nursery.start_soon(
                    lambda steps=steps, note=note: client.mcp("host").call_tool(
                        "work", {"steps": steps}, on_progress=note
                    )
                )
    assert per_call == {5: [1.0, 2.0, 3.0, 4.0, 5.0], 8: [float(n) for n in range(1, 9)]}
    assert sorted(e.progress for e in events if e.total == 8.0) == per_call[8]
    assert len(events) == 13


async def test_a_progress_callback_that_raises_is_logged_once_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: llm.MCPProgress) -> None:
        raise RuntimeError("boom")

    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        result = await client.mcp("host").call_tool("work", {"steps": 4}, on_progress=broken)
    assert result.content == "done"
    failures = [r for r in caplog.records if "progress callback" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


async def test_calls_carry_a_progress_token_only_while_a_callback_listens() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        assert await call(client, "host", "token") == "no token"
        stop = client.mcp("host").on_progress(lambda event: None)
        assert await call(client, "host", "token") == "token"
        stop()
        assert await call(client, "host", "token") == "no token"


# -- logging ------------------------------------------------------------------------------------


async def test_server_logs_reach_python_logging_at_the_mapped_levels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="llm_invocation.mcp.pipe")
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("pipe", stdio_server())
        await client.mcp("pipe").set_log_level("debug")
        assert await call(client, "pipe", "chatter") == "ok"
    records = [r for r in caplog.records if r.name == "llm_invocation.mcp.pipe"]
    assert [(r.levelno, r.mcp_data["level"]) for r in records] == [  # type: ignore[attr-defined]
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.INFO, "notice"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "critical"),
        (logging.CRITICAL, "alert"),
    ]
    assert records[0].mcp_logger == "chatter"  # type: ignore[attr-defined]
    assert records[0].getMessage() == 'chatter: {"level": "debug"}'


async def test_set_log_level_reaches_the_server() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        await client.mcp("host").set_log_level("warning")
        assert await call(client, "host", "level") == "warning"


async def test_the_configured_log_level_is_set_at_connect() -> None:
    server = {**stdio_server(), "log_level": "error"}
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("pipe", server)
        assert await call(client, "pipe", "level") == "error"


async def test_the_log_level_set_is_set_again_after_a_reconnection() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("pipe", stdio_server())
        await client.mcp("pipe").set_log_level("critical")
        changed = trio.Event()
        stop = client.tools.on_change(changed.set)
        with pytest.raises(llm.ToolExecutionFailed):
            await client.mcp("pipe").call_tool("exit")  # a new process: its level is unset
        with trio.fail_after(30):
            while (await client.mcp_server_info("pipe")).reconnects < 1 or (
                "pipe__level" not in client.tools
            ):
                await changed.wait()
                changed = trio.Event()
                stop()
                stop = client.tools.on_change(changed.set)
        stop()
        assert await call(client, "pipe", "level") == "critical"


async def test_set_log_level_is_refused_for_a_server_without_logging() -> None:
    from mcp.server.mcpserver import MCPServer

    plain = MCPServer("plain", log_level="WARNING")

    @plain.tool()
    def ping() -> str:
        return "pong"

    async with llm.open_mock_client() as client:
        await client.register_mcp_server("plain", plain)
        with pytest.raises(llm.ToolExecutionFailed) as info:
            await client.mcp("plain").set_log_level("info")
    assert info.value.details["reason"] == "not_supported"


async def test_set_log_level_refuses_a_level_mcp_does_not_have() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        with pytest.raises(llm.InvalidRequest):
            await client.mcp("host").set_log_level("verbose")  # type: ignore[arg-type]


# -- roots --------------------------------------------------------------------------------------


async def test_the_configured_roots_are_listed_as_file_uris(tmp_path: Path) -> None:
    roots = [{"uri": str(tmp_path), "name": "work"}, {"uri": "file:///srv/data"}]
    async with llm.open_mock_client(mcp={"roots": roots}) as client:
        await client.register_mcp_server("host", build())
        listed = await call(client, "host", "roots")
    assert listed.splitlines() == [f"{tmp_path.as_uri()} work", "file:///srv/data None"]


async def test_set_mcp_roots_tells_a_connected_server_which_lists_them_again(
    tmp_path: Path,
) -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("pipe", stdio_server())
        assert await call(client, "pipe", "roots") == "none"
        await client.set_mcp_roots([llm.MCPRoot(uri=tmp_path.as_uri(), name="tmp")])
        assert await call(client, "pipe", "roots_changed", count=1) == "1"
        assert await call(client, "pipe", "roots") == f"{tmp_path.as_uri()} tmp"


async def test_a_server_with_roots_of_its_own_is_not_told_the_clients(tmp_path: Path) -> None:
    own = tmp_path / "own"
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("mine", build("mine"), roots=[own])
        await client.register_mcp_server("shared", build("shared"))
        await client.set_mcp_roots([tmp_path])
        assert await call(client, "shared", "roots_changed", count=1) == "1"
        assert await call(client, "mine", "roots") == f"{own.as_uri()} None"
        assert await call(client, "shared", "roots") == f"{tmp_path.as_uri()} None"


@pytest.mark.parametrize("root", ["https://example.com/", llm.MCPRoot(uri="ftp://host/x"), ""])
async def test_a_root_that_is_not_a_file_uri_or_a_path_is_refused(root: str | llm.MCPRoot) -> None:
    async with llm.open_mock_client() as client:
        with pytest.raises(llm.ConfigurationError):
            await client.set_mcp_roots([root])


# -- sampling -----------------------------------------------------------------------------------


async def test_sampling_is_refused_with_an_error_when_it_is_off() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        answer = await call(client, "host", "ask", question="hi")
        info = await client.mcp_server_info("host")
    assert answer == "error -32600: Sampling not supported"  # the SDK's refusal
    assert info.state == "ready"


async def test_sampling_is_answered_by_the_clients_model_and_tagged_with_the_server() -> None:
    async with llm.open_mock_client(scripted("sampled answer")) as client:
        await client.register_mcp_server("host", build(), sampling=llm.MCPSampling(model="mock"))
        answer = await call(client, "host", "ask", question="hi")
        report = await client.usage(group_by=["tag:mcp_server"])
    assert answer == "mock|endTurn|sampled answer"
    assert [row.group for row in report.rows] == [{"tag:mcp_server": "host"}]


async def test_a_budget_on_the_servers_tag_refuses_its_sampling_when_spent() -> None:
    budgets = [{"scope": "tag:mcp_server=host", "limit": "0.0000001"}]
    async with llm.open_mock_client(scripted(), cost_control={"budgets": budgets}) as client:
        await client.register_mcp_server("host", build(), sampling=llm.MCPSampling(model="mock"))
        answer = await call(client, "host", "ask", question="hi")
        # Calls without the tag are not limited by it.
        reply = await client.invoke_sync(llm.Request(model="mock", messages=[llm.user("hi")]))
    assert answer == "error -32603: sampling failed: cost_exceeded"  # no amounts told
    assert reply.text == "sampled answer"


async def test_the_policy_sees_the_converted_request_and_may_edit_it() -> None:
    seen: list[llm.MCPSamplingRequest] = []

    sent: list[llm.Request] = []

    def policy(asked: llm.MCPSamplingRequest) -> llm.Request:
        seen.append(asked)
        return asked.request.with_options(max_tokens=10)

    class Record(llm.Middleware):
        async def before_request(self, call: llm.CallInfo, request: llm.Request) -> None:
            sent.append(request)

    sampling = llm.MCPSampling(model="mock", max_tokens=100, policy=policy)
    async with llm.open_mock_client(scripted()) as client:
        client.add_middleware(Record())
        await client.register_mcp_server("host", build(), sampling=sampling)
        assert await call(client, "host", "ask", question="hi") == "mock|endTurn|sampled answer"
    assert [request.options.max_tokens for request in sent] == [10]  # as the policy edited it
    (asked,) = seen
    request = asked.request
    assert (asked.server, asked.max_tokens, asked.model_hints) == ("host", 500, ["small"])
    assert asked.speed_priority == 0.8
    assert [(m.role, m.text) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "hi"),
    ]
    assert request.options.max_tokens == 100  # capped
    assert (request.options.temperature, request.options.stop) == (0.5, ["END"])
    assert request.metadata == {"mcp_server": "host"}


async def test_a_policy_that_returns_none_refuses(caplog: pytest.LogCaptureFixture) -> None:
    sampling = llm.MCPSampling(model="mock", policy=lambda asked: None)
    async with llm.open_mock_client(scripted()) as client:
        await client.register_mcp_server("host", build(), sampling=sampling)
        answer = await call(client, "host", "ask", question="hi")
        stats = client.statistics()
    assert answer == "error -1: refused by the sampling policy"
    assert stats.invocations == 0
    assert len([r for r in caplog.records if "sampling request" in r.getMessage()]) == 1


async def test_an_async_policy_refuses_by_raising_with_its_reason() -> None:
    async def policy(asked: llm.MCPSamplingRequest) -> llm.Request:
        await trio.lowlevel.checkpoint()
        raise llm.MCPSamplingRefused("not during office hours")

    sampling = llm.MCPSampling(model="mock", policy=policy)
    async with llm.open_mock_client(scripted()) as client:
        await client.register_mcp_server("host", build(), sampling=sampling)
        answer = await call(client, "host", "ask", question="hi")
    assert answer == "error -1: refused by the sampling policy: not during office hours"


async def test_sampling_from_the_configuration_and_a_policy_set_on_the_handle() -> None:
    servers = {"pipe": {**stdio_server(), "sampling": {"model": "mock", "max_tokens": 50}}}
    seen: list[int | None] = []

    def policy(asked: llm.MCPSamplingRequest) -> llm.Request:
        seen.append(asked.request.options.max_tokens)
        return asked.request

    async with llm.open_mock_client(scripted(), mcp={"servers": servers}) as client:
        with trio.fail_after(30):
            while "pipe__ask" not in client.tools:
                changed = trio.Event()
                stop = client.tools.on_change(changed.set)
                try:
                    if "pipe__ask" not in client.tools:
                        await changed.wait()
                finally:
                    stop()
        client.mcp("pipe").set_sampling_policy(policy)
        answer = await call(client, "pipe", "ask", question="hi")
    assert answer == "mock|endTurn|sampled answer"
    assert seen == [50]


# -- elicitation --------------------------------------------------------------------------------


async def test_a_form_is_declined_without_a_callback() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        assert await call(client, "host", "form") == "decline null"


async def test_a_callback_accepts_a_form_with_its_content() -> None:
    asked: list[llm.MCPElicitation] = []

    async def answer(form: llm.MCPElicitation) -> llm.MCPElicitationAnswer:
        asked.append(form)
        return llm.MCPElicitationAnswer.accept({"name": "Ada", "age": 36})

    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build(), elicitation=answer)
        reply = await call(client, "host", "form")
    assert reply == "accept " + json.dumps({"name": "Ada", "age": 36})
    (form,) = asked
    assert (form.server, form.message) == ("host", "Who are you?")
    assert form.schema["properties"]["age"]["type"] == "integer"


async def test_an_answer_that_does_not_match_the_schema_is_declined(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("host", build())
        client.mcp("host").on_elicitation(
            lambda form: llm.MCPElicitationAnswer.accept({"name": "Ada", "age": "old"})
        )
        reply = await call(client, "host", "form")
    assert reply == "decline null"
    warnings = [r for r in caplog.records if "does not match its schema" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_callback_may_cancel_a_form() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server(
            "host", build(), elicitation=lambda form: llm.MCPElicitationAnswer.cancel()
        )
        assert await call(client, "host", "form") == "cancel null"


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "size": {"type": "string", "enum": ["S", "M", "L"]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "ok": {"type": "boolean"},
    },
    "required": ["name"],
}


@pytest.mark.parametrize(
    "content",
    [
        {"age": 3},  # the required name is missing
        {"name": "x", "colour": "red"},  # not asked for
        {"name": "x", "age": 3.5},
        {"name": "x", "age": True},
        {"name": "x", "size": "XL"},
        {"name": "x", "tags": ["a", "c"]},
        {"name": "x", "ok": "yes"},
        {"name": None},
    ],
)
def test_an_answer_is_checked_against_the_requested_schema(content: dict[str, Any]) -> None:
    from llm_invocation.actors.mcp._bridge import check_answer

    assert check_answer(SCHEMA, content) is not None
    assert (
        check_answer(SCHEMA, {"name": "x", "age": 3, "size": "M", "tags": ["b"], "ok": False})
        is None
    )


def test_sampled_images_become_image_parts_and_audio_is_refused() -> None:
    import mcp_types

    from llm_invocation.actors.mcp._sampling import _Unsupported, sampling_request

    image = mcp_types.ImageContent(data="aGk=", mime_type="image/png")
    params = mcp_types.CreateMessageRequestParams(
        messages=[mcp_types.SamplingMessage(role="user", content=[image])], max_tokens=5
    )
    asked = sampling_request("s", params, llm.MCPSampling(model="m"), None)
    (message,) = asked.request.messages
    assert message.content == [llm.ImagePart(data="aGk=", media_type="image/png")]
    audio = mcp_types.AudioContent(data="aGk=", mime_type="audio/wav")
    params = mcp_types.CreateMessageRequestParams(
        messages=[mcp_types.SamplingMessage(role="user", content=audio)], max_tokens=5
    )
    with pytest.raises(_Unsupported, match="audio"):
        sampling_request("s", params, llm.MCPSampling(model="m"), None)


def test_a_response_cut_at_its_token_limit_stops_for_max_tokens() -> None:
    from datetime import UTC, datetime

    from llm_invocation.actors.mcp._sampling import sampling_result

    response = llm.Response(
        id="r",
        provider="mock",
        model="mock-1",
        created=datetime.now(UTC),
        choices=[llm.Choice(message=llm.assistant("part"), finish_reason="length")],
    )
    result = sampling_result(response)
    assert (result.role, result.model, result.stop_reason) == ("assistant", "mock-1", "maxTokens")
    assert result.content.type == "text" and result.content.text == "part"
