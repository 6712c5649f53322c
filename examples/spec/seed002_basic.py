"""The second specification's basic usage example, in Python: two providers configured,
one streamed invocation.

    OPENAI_API_KEY=sk-... ANTHROPIC_API_KEY=sk-ant-... python examples/spec/seed002_basic.py
"""

from __future__ import annotations

import os

import trio

import llm_invocation as llm


async def main() -> None:
    # Create client with configuration (Config.load merges these entries with the
    # OPENAI_* and ANTHROPIC_* variables, such as OPENAI_BASE_URL)
    config = llm.Config.load(
        providers={
            "openai": {"enabled": True, "api_key": os.environ.get("OPENAI_API_KEY", "")},
            "anthropic": {"enabled": True, "api_key": os.environ.get("ANTHROPIC_API_KEY", "")},
        }
    )
    async with llm.open_client(config) as client:
        # Create request
        request = llm.Request(
            model="gpt-4-turbo-preview",
            messages=[llm.user("Explain quantum computing in simple terms")],
            options=llm.ModelOptions(temperature=0.7, max_tokens=500),
        )
        # Stream response (closed when the block ends)
        async with client.invoke(request) as stream:
            # Process stream
            async for chunk in stream:
                print(chunk.text, end="", flush=True)
        print()


if __name__ == "__main__":
    trio.run(main)
