"""Tools: a typed Python function the model can call, in the automatic tool loop.

    python examples/tools.py

Offline, the mock provider is scripted to call the tool once and then answer.
"""

from __future__ import annotations

from typing import Literal

import trio

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios, ScriptedToolCall


@llm.tool
async def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """Get the current weather for a location.

    Args:
        city: City and country, e.g. "Paris, France".
        unit: Temperature unit.
    """
    return {"city": city, "temperature": 21 if unit == "C" else 70, "condition": "sunny"}


async def main() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "mock",
        Scenario(tool_calls=[ScriptedToolCall(name="get_weather", arguments={"city": "Paris"})]),
        Scenario(text="It is sunny and 21 degrees in Paris."),
    )
    async with llm.open_mock_client(scenarios) as client:
        client.register_tool(get_weather)
        request = llm.Request(model="mock", messages=[llm.user("What's the weather in Paris?")])
        async with client.invoke(request, tool_mode="auto") as loop:
            async for item in loop:
                match item:
                    case llm.ToolCallsEvent(calls=calls):
                        print(f"-> calling {[c.name for c in calls]}")
                    case llm.ToolResultsEvent(results=results):
                        print(f"<- {[r.content for r in results]}")
                    case llm.StreamChunk(text=text):
                        print(text, end="", flush=True)
        print()
        print(f"steps: {loop.response.metadata['steps'] if loop.response.metadata else 1}")


if __name__ == "__main__":
    trio.run(main)
