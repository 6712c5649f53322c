"""The second specification's tool usage example, in Python: a tool defined as a class,
registered with the client and named in a request. The model's tool calls come back to the
caller (``tool_mode="auto"`` would run them).

    OPENAI_API_KEY=sk-... python examples/spec/seed002_tools.py
"""

from __future__ import annotations

from typing import Any

import trio

import llm_invocation as llm


# Define a custom tool
class WeatherTool:
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
            "properties": {
                "location": {"type": "string", "description": "City and state"},
            },
            "required": ["location"],
        }

    async def execute(self, arguments: dict[str, Any]) -> Any:
        location = arguments["location"]
        # Implementation...
        return {"location": location, "temperature": 72, "condition": "sunny"}


async def main() -> None:
    async with llm.open_client() as client:
        # Register and use tool
        client.register_tool(WeatherTool())

        request = llm.Request(
            model="gpt-4-turbo-preview",
            messages=[llm.user("What's the weather in San Francisco?")],
            tools=[client.tools.spec("get_weather")],
        )
        response = await client.invoke_sync(request)
        for call in response.message.tool_calls or []:
            arguments = call.parsed_arguments()
            print(f"tool call: {call.name}({arguments})")
            # Run it ourselves: without tool_mode="auto" the caller runs the tools.
            print(f"result: {await WeatherTool().execute(arguments)}")
        if response.text:
            print(f"answer: {response.text}")


if __name__ == "__main__":
    trio.run(main)
