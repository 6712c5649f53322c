"""Simple usage: a client from the environment (or the offline mock), one completion and
one chat. Seed 000's examples/simple.

    python examples/simple.py
"""

from __future__ import annotations

import trio

import llm_invocation as llm


async def main() -> None:
    # From LLM_* and provider variables; with no key, the built-in mock provider answers.
    config = llm.Config.load()
    async with llm.open_client(config) as client:
        completion = await client.complete(
            "Translate this to French: Hello, world!", max_tokens=100
        )
        print(f"Response: {completion.text}")
        print(f"Usage: {completion.usage}")

        chat = await client.chat(
            [llm.system("You are a helpful assistant."), llm.user("Say hello in three words.")]
        )
        print(f"Chat: {chat.messages[-1].content}")


if __name__ == "__main__":
    trio.run(main)
