"""The first specification's simple example (examples/simple/main.go), in Python.

Three ways to make a client, then one completion. It talks to OpenAI with the key in
``OPENAI_API_KEY`` (and to ``OPENAI_BASE_URL`` when set):

    OPENAI_API_KEY=sk-... python examples/spec/seed000_simple.py
"""

from __future__ import annotations

import os

import trio

import llm_invocation as llm
from llm_invocation.types import CompletionRequest


async def main() -> None:
    # Create client with direct configuration (Config.load also reads OPENAI_BASE_URL, so
    # that the example can run against a local server)
    direct = llm.Config.load(
        api_key=llm.Secret(os.environ.get("OPENAI_API_KEY", "sk-your-api-key")),
        provider="openai",
        model="gpt-4",
        timeout=30,
    )
    # Or create client from environment variables: LLM_API_KEY, LLM_PROVIDER, LLM_MODEL...
    from_env = llm.Config.load()
    print(f"from the environment: provider {from_env.default_provider}")

    async with llm.open_client(direct) as client:
        print(f"direct: provider {client.config.default_provider}, model {client.config.model}")

    # Or use provider-specific constructor
    async with llm.open_openai_client(os.environ.get("OPENAI_API_KEY"), model="gpt-4") as client:
        # Create completion request
        request = CompletionRequest(
            prompt="Translate this to French: Hello, world!",
            max_tokens=100,
        )
        # Get completion
        response = await client.complete(request)
        print(f"Response: {response.text}")
        print(f"Usage: {response.usage}")


if __name__ == "__main__":
    trio.run(main)
