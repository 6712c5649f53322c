"""Observability: OpenTelemetry spans on the console, and the audit log as JSON lines.

    python examples/observability.py

Needs ``opentelemetry-sdk``. Offline: the mock provider answers a streamed call, fails a
call once (it is retried: two attempt spans under one invocation span) and runs a tool
loop (a span per step and one per tool call), all under one span of the application's.
"""

from __future__ import annotations

import sys

import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import llm_invocation as llm
from llm_invocation.observability import configure_logging
from llm_invocation.testing import HttpError, Scenario, Scenarios, ScriptedToolCall


@llm.tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: City and country, e.g. "Paris, France".
    """
    return f"sunny in {city}"


def scripted() -> Scenarios:
    scenarios = Scenarios()
    scenarios.add("mock", Scenario(text="Hello from a traced stream."))
    scenarios.add("flaky", Scenario(failure=HttpError(status=503)), Scenario(text="Second try."))
    scenarios.add(
        "agent",
        Scenario(tool_calls=[ScriptedToolCall(name="get_weather", arguments={"city": "Paris"})]),
        Scenario(text="It is sunny in Paris."),
    )
    return scenarios


async def main() -> None:
    provider = TracerProvider()
    # Simple: each span is printed when it ends (a service would batch and export them).
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
    trace.set_tracer_provider(provider)
    # One JSON object per line: the audit record of each invocation, among others.
    configure_logging(level="info", format="json", stream=sys.stdout)
    tracer = trace.get_tracer("example")

    retries = {"initial_delay": 0.01, "max_delay": 0.02}
    async with llm.open_mock_client(scripted(), retries=retries) as client:
        client.register_tool(get_weather)
        with tracer.start_as_current_span("handle a user request"):
            # A streamed call: one `chat mock` span, one `POST` attempt under it.
            request = llm.Request(model="mock", messages=[llm.user("Say hello.")])
            async with client.invoke(request) as stream:
                text = "".join([chunk.text async for chunk in stream])
            print(text)
            # A retried call: one `chat flaky` span, two `POST` attempts under it.
            reply = await client.invoke_sync(
                llm.Request(model="mock:flaky", messages=[llm.user("Try twice.")])
            )
            print(reply.text)
            # A tool loop: a `chat agent` span per step, `execute_tool get_weather` between.
            ask = llm.Request(model="mock:agent", messages=[llm.user("Weather in Paris?")])
            async with client.invoke(ask, tool_mode="auto") as loop:
                answer = await loop.aggregate()
            print(answer.text)
    provider.shutdown()


if __name__ == "__main__":
    trio.run(main)
