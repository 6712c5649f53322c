"""The first specification's advanced configuration example (examples/advanced/main.go).

OPENAI_API_KEY=sk-... python examples/spec/seed000_advanced.py
"""

from __future__ import annotations

import os
from decimal import Decimal

import trio

import llm_invocation as llm
from llm_invocation.config import CostConfig, RateLimitConfig, RetryConfig
from llm_invocation.types import ChatRequest


async def main() -> None:
    # Create client with advanced configuration (Config.load: keywords over LLM_* and
    # OPENAI_* variables such as OPENAI_BASE_URL)
    config = llm.Config.load(
        api_key=llm.Secret(os.environ.get("OPENAI_API_KEY", "")),
        provider="openai",
        model="gpt-4",
        timeout=30,
        retries=RetryConfig(max_attempts=3, initial_delay=0.1, max_delay=2.0, multiplier=2.0),
        rate_limits=RateLimitConfig(
            requests_per_minute=60, tokens_per_minute=100_000, concurrent_calls=10
        ),
        cost_control=CostConfig(
            max_cost_per_request=Decimal("0.50"),
            max_budget=Decimal("100.00"),
            budget_period=24 * 3600,
        ),
    )
    async with llm.open_client(config) as client:
        # Use the client with advanced features
        request = ChatRequest(
            messages=[
                llm.system("You are a helpful assistant."),
                llm.user("Write a story about a brave knight."),
            ],
            max_tokens=1000,
        )
        # Get response with a 30 s deadline (the context timeout)
        with trio.fail_after(30):
            response = await client.chat(request)

        # Access usage statistics
        print(f"Response: {response.messages[-1].content}")
        print(f"Token usage: {response.usage.total_tokens} tokens")
        print(f"Cost: ${response.usage.cost or 0:.4f}")


if __name__ == "__main__":
    trio.run(main)
