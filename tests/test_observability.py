"""OpenTelemetry spans and metrics under the GenAI semantic conventions.

Each client here gets its own SDK tracer and meter providers (an in-memory span exporter,
an in-memory metric reader), passed to `open_client`: nothing global is set. Calls go to
the fake provider server over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final

import pytest
import trio
import trio.testing
from mcp.server.mcpserver import MCPServer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import llm_invocation as llm
from llm_invocation.observability._telemetry import Telemetry
from llm_invocation.testing import (
    FakeServer,
    HttpError,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    ScriptedUsage,
    open_fake_server,
)

KEY: Final = "sk-test-OBSERVED-0123456789abcdef"
PROMPT: Final = "the secret recipe is 42 cloves of garlic"
ANSWER: Final = "mince them finely"


class Otel:
    """A tracer provider and a meter provider of the SDK, kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        """Every data point of every metric, by metric name."""
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out

    def units(self) -> dict[str, str]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: metric.unit or ""
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


@pytest.fixture
def otel() -> Iterator[Otel]:
    kit = Otel()
    yield kit
    kit.tracer_provider.shutdown()
    kit.meter_provider.shutdown()


def settings(server: FakeServer, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "provider": "openai",
        "retries": {"max_attempts": 3, "initial_delay": 0.01, "max_delay": 0.02},
        "timeouts": {"connect": 5, "first_chunk": 5, "idle_chunk": 5},
        "providers": {
            "openai": {"api_key": KEY, "base_url": server.base_url("openai")},
            "anthropic": {"api_key": KEY, "base_url": server.base_url("anthropic")},
        },
    }
    base.update(extra)
    return base


@asynccontextmanager
async def traced(
    otel: Otel, scenarios: Scenarios, **extra: Any
) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    async with open_fake_server(scenarios) as server:
        config = llm.Config.unlimited(**settings(server, **extra))
        async with llm.open_client(
            config, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
        ) as client:
            yield client, server


def request(model: str = "openai:m", **options: Any) -> llm.Request:
    return llm.Request(model=model, messages=[llm.user(PROMPT)], **options)


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def everything_recorded(otel: Otel) -> str:
    """Every attribute and event of every span, and every metric attribute, as text."""
    pieces: list[str] = []
    for span in otel.spans():
        pieces.append(span.name)
        pieces.append(json.dumps(attributes(span), default=str))
        pieces.extend(json.dumps(dict(e.attributes or {}), default=str) for e in span.events)
        pieces.append(str(span.status.description))
    for points in otel.metrics().values():
        pieces.extend(json.dumps(dict(p.attributes or {}), default=str) for p in points)
    return "\n".join(pieces)


# -- one invocation -----------------------------------------------------------------------------


async def test_a_streamed_call_is_one_client_span_named_by_operation_and_model(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m", Scenario(text=ANSWER, usage=ScriptedUsage(prompt_tokens=7, completion_tokens=3))
    )
    async with traced(otel, scenarios) as (client, server):
        options = llm.ModelOptions(max_tokens=50, temperature=0.5, top_p=0.9)
        async with client.invoke(request(options=options)) as stream:
            text = "".join([chunk.text async for chunk in stream])
        response = stream.response
    assert text == ANSWER
    (span,) = otel.named("chat m")
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    got = attributes(span)
    address = server.base_url("openai").split("//")[1].split("/")[0]
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.provider.name"] == "openai"
    assert got["gen_ai.request.model"] == "m"
    assert (got["gen_ai.request.max_tokens"], got["gen_ai.request.temperature"]) == (50, 0.5)
    assert got["gen_ai.request.top_p"] == 0.9
    assert got["gen_ai.response.model"] == response.model
    assert got["gen_ai.response.id"] == response.id
    assert list(got["gen_ai.response.finish_reasons"]) == ["stop"]
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (7, 3)
    assert f"{got['server.address']}:{got['server.port']}" == address
    assert "error.type" not in got


async def test_the_invocation_span_is_a_child_of_the_callers_span(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, _):
        tracer = otel.tracer_provider.get_tracer("the application")
        with tracer.start_as_current_span("handle a user request") as outer:
            await client.invoke_sync(request())
    (invocation,) = otel.named("chat m")
    assert invocation.parent is not None
    assert invocation.parent.span_id == outer.get_span_context().span_id
    assert invocation.context is not None
    assert invocation.context.trace_id == outer.get_span_context().trace_id


async def test_each_http_attempt_is_a_child_span_of_the_invocation(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, _):
        await client.invoke_sync(request())
    (invocation,) = otel.named("chat m")
    (attempt,) = otel.named("POST")
    assert attempt.kind is SpanKind.CLIENT
    assert parent_id(attempt) == span_id(invocation)
    got = attributes(attempt)
    assert got["http.response.status_code"] == 200
    assert (got["llm_invocation.attempt"], got["gen_ai.request.model"]) == (1, "m")
    assert "http.request.resend_count" not in got


async def test_the_first_chunk_is_an_event_of_the_invocation_span(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER, chunk_chars=2))
    async with traced(otel, scenarios) as (client, _), client.invoke(request()) as stream:
        async for _ in stream:
            pass
    (invocation,) = otel.named("chat m")
    names = [event.name for event in invocation.events]
    assert names == ["gen_ai.first_chunk"]  # no rate-limit wait: nothing queued
    (first_chunk,) = otel.metrics()["gen_ai.client.operation.time_to_first_chunk"]
    assert first_chunk.count == 1


async def test_a_wait_for_rate_limit_capacity_is_an_event_and_a_measurement(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("first", Scenario(text=ANSWER, chunk_chars=1))
    scenarios.add("second", Scenario(text=ANSWER))
    limits = {"concurrent_calls": 1}
    async with (
        traced(otel, scenarios, rate_limits=limits) as (client, _),
        client.invoke(request("openai:first")) as holding,
        trio.open_nursery() as nursery,
    ):
        await holding.__anext__()  # the only lease is taken
        nursery.start_soon(client.invoke_sync, request("openai:second"))
        await trio.testing.wait_all_tasks_blocked()  # the second call is queued
        async for _ in holding:
            pass
    (first,) = otel.named("chat first")
    (second,) = otel.named("chat second")
    assert "llm_invocation.rate_limit.wait" not in [event.name for event in first.events]
    (wait,) = [e for e in second.events if e.name == "llm_invocation.rate_limit.wait"]
    seconds = dict(wait.attributes or {})["llm_invocation.wait.seconds"]
    assert isinstance(seconds, float)
    assert seconds > 0
    (measured,) = otel.metrics()["llm_invocation.rate_limit.wait"]
    assert (measured.count, measured.sum) == (1, pytest.approx(seconds))


async def test_a_retried_call_shows_the_failed_attempt_and_the_retry(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(failure=HttpError(status=500)), Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, _):
        response = await client.invoke_sync(request())
    assert response.text == ANSWER
    (invocation,) = otel.named("chat m")
    first, second = otel.named("POST")  # in the order they ended
    assert parent_id(first) == parent_id(second) == span_id(invocation)
    assert attributes(first)["http.response.status_code"] == 500
    assert attributes(first)["error.type"] == "provider_error"
    assert first.status.status_code is StatusCode.ERROR
    assert attributes(second)["http.request.resend_count"] == 1
    assert "error.type" not in attributes(second)
    assert "error.type" not in attributes(invocation)
    (retries,) = otel.metrics()["llm_invocation.retries"]
    assert retries.value == 1


async def test_a_fallback_shows_an_attempt_on_each_provider(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(failure=HttpError(status=500)))
    scenarios.add("backup", Scenario(text=ANSWER))
    async with open_fake_server(scenarios) as server:
        base = settings(server, retries={"max_attempts": 1})
        base["providers"]["openai"]["fallback"] = ["anthropic:backup"]
        config = llm.Config.unlimited(**base)
        async with llm.open_client(config, tracer_provider=otel.tracer_provider) as client:
            response = await client.invoke_sync(request())
    assert response.text == ANSWER
    (invocation,) = otel.named("chat m")
    attempts = otel.named("POST")  # in the order they ended
    assert [attributes(a)["gen_ai.provider.name"] for a in attempts] == ["openai", "anthropic"]
    assert [attributes(a)["gen_ai.request.model"] for a in attempts] == ["m", "backup"]
    assert all(parent_id(a) == span_id(invocation) for a in attempts)
    got = attributes(invocation)
    assert list(got["llm_invocation.attempted"]) == ["openai:m", "anthropic:backup"]
    assert "llm_invocation.fallback" in [event.name for event in invocation.events]


async def test_a_failed_call_sets_error_type_and_an_error_status(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(failure=HttpError(status=400)))
    async with traced(otel, scenarios) as (client, _):
        with pytest.raises(llm.InvalidRequest):
            await client.invoke_sync(request())
    (invocation,) = otel.named("chat m")
    assert attributes(invocation)["error.type"] == "invalid_request"
    assert invocation.status.status_code is StatusCode.ERROR
    (duration,) = otel.metrics()["gen_ai.client.operation.duration"]
    assert dict(duration.attributes)["error.type"] == "invalid_request"


async def test_a_call_the_caller_cancels_ends_its_spans_as_cancelled(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text="a" * 40, chunk_chars=1, interval=0.05))
    async with traced(otel, scenarios) as (client, _), client.invoke(request()) as stream:
        async for _ in stream:
            break  # leaving the block cancels the rest
    (invocation,) = otel.named("chat m")
    (attempt,) = otel.named("POST")
    assert attributes(invocation)["error.type"] == "cancelled"
    assert attributes(attempt)["error.type"] == "cancelled"
    (open_streams,) = otel.metrics()["llm_invocation.streams.open"]
    assert open_streams.value == 0


async def test_a_legacy_completion_is_a_text_completion_span(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, _):
        await client.complete("Once upon a time", model="openai:m")
    (span,) = otel.named("text_completion m")
    assert attributes(span)["gen_ai.operation.name"] == "text_completion"


# -- tools and MCP ------------------------------------------------------------------------------


async def test_a_tool_loop_has_a_span_per_step_and_per_tool_call(otel: Otel) -> None:
    @llm.tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(tool_calls=[ScriptedToolCall(name="get_weather", arguments={"city": "Oslo"})]),
        Scenario(text="It is sunny."),
    )
    async with traced(otel, scenarios) as (client, _):
        client.register_tool(get_weather)
        tracer = otel.tracer_provider.get_tracer("the application")
        with tracer.start_as_current_span("agent") as outer:
            async with client.invoke(request(), tool_mode="auto") as loop:
                async for _ in loop:
                    pass
    steps = otel.named("chat m")
    (tool,) = otel.named("execute_tool get_weather")
    assert len(steps) == 2
    caller = outer.get_span_context().span_id
    assert all(parent_id(step) == caller for step in steps)
    assert parent_id(tool) == caller
    assert tool.kind is SpanKind.INTERNAL
    got = attributes(tool)
    assert (got["gen_ai.operation.name"], got["gen_ai.tool.name"]) == (
        "execute_tool",
        "get_weather",
    )
    assert got["gen_ai.tool.call.id"]
    assert "gen_ai.tool.call.arguments" not in got
    ended = [span.name for span in otel.spans() if span.name not in ("POST", "agent")]
    assert ended == ["chat m", "execute_tool get_weather", "chat m"]


async def test_a_failing_tool_has_an_error_span(otel: Otel) -> None:
    @llm.tool
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("no")

    async with traced(otel, Scenarios()) as (client, _):
        client.register_tool(broken)
        (result,) = await client.execute_tools(
            [llm.ToolCall(id="c1", name="broken", arguments="{}")]
        )
    assert result.is_error
    (span,) = otel.named("execute_tool broken")
    assert attributes(span)["error.type"] == result.error_code
    assert span.status.status_code is StatusCode.ERROR


async def test_an_mcp_tool_call_is_a_client_span_under_its_tool_span(otel: Otel) -> None:
    server = MCPServer("calculator", version="0.1.0", log_level="WARNING")

    @server.tool()
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(tool_calls=[ScriptedToolCall(name="calc__multiply", arguments={"a": 6, "b": 7})]),
        Scenario(text="42"),
    )
    async with traced(otel, scenarios) as (client, _):
        await client.register_mcp_server("calc", server)
        async with client.invoke(request(), tool_mode="auto") as loop:
            async for _ in loop:
                pass
    (tool,) = otel.named("execute_tool calc__multiply")
    (call,) = otel.named("tools/call multiply")
    assert call.kind is SpanKind.CLIENT
    assert parent_id(call) == span_id(tool)
    got = attributes(call)
    assert (got["mcp.method.name"], got["gen_ai.tool.name"]) == ("tools/call", "multiply")
    assert got["llm_invocation.mcp.server"] == "calc"


# -- content and keys ---------------------------------------------------------------------------


async def test_no_prompt_answer_or_key_is_recorded_by_default(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, _):
        await client.invoke_sync(request())
    recorded = everything_recorded(otel)
    assert "chat m" in recorded  # the spans are there
    assert PROMPT not in recorded
    assert ANSWER not in recorded
    assert KEY not in recorded


async def test_captured_content_has_the_prompt_and_the_answer_but_never_the_key(
    otel: Otel,
) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    logging_section = {"capture_content": True}
    async with traced(otel, scenarios, logging=logging_section) as (client, _):
        secret_prompt = llm.Request(
            model="openai:m", messages=[llm.user(f"{PROMPT}; my key is {KEY}")]
        )
        await client.invoke_sync(secret_prompt)
    (span,) = otel.named("chat m")
    got = attributes(span)
    (message,) = json.loads(got["gen_ai.input.messages"])
    assert message["role"] == "user"
    assert PROMPT in message["parts"][0]["content"]
    (output,) = json.loads(got["gen_ai.output.messages"])
    assert output["parts"][0]["content"] == ANSWER
    assert output["finish_reason"] == "stop"
    assert KEY not in everything_recorded(otel)


async def test_the_standard_variable_turns_content_capture_on(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, _):
        await client.invoke_sync(request())
    (span,) = otel.named("chat m")
    assert PROMPT in attributes(span)["gen_ai.input.messages"]


# -- trace context to the providers --------------------------------------------------------------


async def test_no_traceparent_is_sent_to_providers_by_default(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, server):
        await client.invoke_sync(request())
    (sent,) = server.requests
    assert "traceparent" not in sent.headers


async def test_with_propagation_each_attempt_sends_its_own_span_as_traceparent(
    otel: Otel,
) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(failure=HttpError(status=500)), Scenario(text=ANSWER))
    async with traced(otel, scenarios, logging={"trace_propagation": True}) as (client, server):
        await client.invoke_sync(request())
    attempts = otel.named("POST")  # in the order they ended
    expected: list[str] = []
    for attempt in attempts:
        assert attempt.context is not None
        trace_id, own = attempt.context.trace_id, attempt.context.span_id
        flags = int(attempt.context.trace_flags)
        assert flags & 1  # sampled
        expected.append(f"00-{trace_id:032x}-{own:016x}-{flags:02x}")
    assert [sent.headers["traceparent"] for sent in server.requests] == expected


# -- metrics ------------------------------------------------------------------------------------


async def test_token_usage_is_a_histogram_per_token_type(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m", Scenario(text=ANSWER, usage=ScriptedUsage(prompt_tokens=7, completion_tokens=3))
    )
    async with traced(otel, scenarios) as (client, _):
        await client.invoke_sync(request())
    points = otel.metrics()["gen_ai.client.token.usage"]
    by_type = {dict(p.attributes)["gen_ai.token.type"]: p.sum for p in points}
    assert by_type == {"input": 7, "output": 3}
    attrs = dict(points[0].attributes)
    assert (attrs["gen_ai.operation.name"], attrs["gen_ai.provider.name"]) == ("chat", "openai")
    assert attrs["gen_ai.request.model"] == "m"
    assert otel.units()["gen_ai.client.token.usage"] == "{token}"


async def test_operation_duration_and_time_to_first_chunk_are_recorded_in_seconds(
    otel: Otel,
) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER))
    async with traced(otel, scenarios) as (client, _):
        for _ in range(3):
            await client.invoke_sync(request())
    metrics = otel.metrics()
    (duration,) = metrics["gen_ai.client.operation.duration"]
    (first_chunk,) = metrics["gen_ai.client.operation.time_to_first_chunk"]
    assert duration.count == first_chunk.count == 3
    assert 0 < first_chunk.sum <= duration.sum
    units = otel.units()
    assert units["gen_ai.client.operation.duration"] == "s"
    assert units["gen_ai.client.operation.time_to_first_chunk"] == "s"


async def test_open_streams_count_up_while_a_stream_runs_and_back_down(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER, chunk_chars=1))
    async with traced(otel, scenarios) as (client, _):
        async with client.invoke(request()) as stream:
            await stream.__anext__()
            (during,) = otel.metrics()["llm_invocation.streams.open"]
            assert during.value == 1
            async for _ in stream:
                pass
        (after,) = otel.metrics()["llm_invocation.streams.open"]
    assert after.value == 0


async def test_budget_spend_counts_the_settled_cost(otel: Otel) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m", Scenario(text=ANSWER, usage=ScriptedUsage(prompt_tokens=1000, completion_tokens=500))
    )
    prices = {"openai:m": {"input_per_mtok": "1", "output_per_mtok": "2"}}
    async with traced(otel, scenarios, cost_control={"prices": prices}) as (client, _):
        response = await client.invoke_sync(request())
    assert response.usage is not None and response.usage.cost is not None
    (spend,) = otel.metrics()["llm_invocation.budget.spend"]
    assert spend.value == pytest.approx(float(response.usage.cost))
    assert spend.value == pytest.approx(0.002)


async def test_actor_restarts_are_observed_from_the_supervision_tree(otel: Otel) -> None:
    async with traced(otel, Scenarios()) as (client, _):
        (restarts,) = otel.metrics()["llm_invocation.actor.restarts"]
        assert restarts.value == client.runtime.statistics().restarts == 0


def test_the_restart_count_is_what_the_runtime_says_until_the_client_closes(otel: Otel) -> None:
    telemetry = Telemetry.open(meter_provider=otel.meter_provider)
    assert telemetry is not None

    class Statistics:
        restarts = 3

    telemetry.watch_restarts(Statistics)
    (restarts,) = otel.metrics()["llm_invocation.actor.restarts"]
    assert restarts.value == 3
    telemetry.watch_restarts(None)
    assert "llm_invocation.actor.restarts" not in otel.metrics()


# -- off ----------------------------------------------------------------------------------------


def test_without_a_provider_set_telemetry_is_off() -> None:
    assert Telemetry.open() is None


class BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the tracer is broken")


class BrokenTracerProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> BrokenTracer:
        return BrokenTracer()


async def test_a_failing_tracer_never_fails_a_call_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text=ANSWER), Scenario(text=ANSWER))
    async with open_fake_server(scenarios) as server:
        config = llm.Config.unlimited(**settings(server))
        async with llm.open_client(config, tracer_provider=BrokenTracerProvider()) as client:
            answers = [await client.invoke_sync(request()) for _ in range(2)]
    assert [answer.text for answer in answers] == [ANSWER, ANSWER]
    said = [r for r in caplog.records if r.name == "llm_invocation.observability"]
    assert len(said) == 1
    assert "the tracer is broken" in said[0].getMessage()


def test_a_client_of_a_program_without_opentelemetry_never_imports_it() -> None:
    program = (
        "import sys, trio, llm_invocation as llm\n"
        "async def main():\n"
        "    async with llm.open_mock_client() as client:\n"
        "        await client.invoke_sync(llm.Request(model='mock', messages=[llm.user('hi')]))\n"
        "trio.run(main)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
