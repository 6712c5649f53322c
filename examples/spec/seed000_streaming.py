"""The first specification's streaming example (examples/streaming/main.go), in Python.

The client comes from the environment (a key in ``OPENAI_API_KEY`` or ``LLM_API_KEY``):

    OPENAI_API_KEY=sk-... python examples/spec/seed000_streaming.py
"""

from __future__ import annotations

import trio

import llm_invocation as llm
from llm_invocation.types import ChatRequest


async def main() -> None:
    config = llm.Config.load(model="gpt-4", timeout=30)
    async with llm.open_client(config) as client:
        request = ChatRequest(
            messages=[llm.user("Write a story about a brave knight.")],
            max_tokens=1000,
        )
        async with client.stream_chat(request) as stream:
            async for response in stream:
                if response.error is not None:
                    print(f"Error: {response.error}")
                    continue
                print(response.messages[0].content, end="", flush=True)
        print()


if __name__ == "__main__":
    trio.run(main)
