"""A fan-out agent: hundreds of concurrent streaming calls, bounded by shared rate limits and a
budget, each answer summarised as it arrives.

    python examples/fan_out.py [N]
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal

import trio

import llm_invocation as llm
from llm_invocation.config import CostConfig, RateLimitConfig
from llm_invocation.testing import Scenario, Scenarios


async def main(n: int) -> None:
    # Offline: a mock provider that takes 20 ms per chunk, like a real model would.
    scenarios = Scenarios(Scenario(completion_words=20, chunk_chars=8, interval=0.02))
    config = llm.Config(
        provider="mock",
        model="mock",
        rate_limits=RateLimitConfig(requests_per_minute=6000, concurrent_calls=200),
        cost_control=CostConfig(max_budget=Decimal("1.00")),
    )
    async with llm.open_client(config, scenarios=scenarios) as client:
        started = time.perf_counter()
        answers: dict[int, str] = {}

        async def ask(i: int) -> None:
            request = llm.Request(
                model="mock",
                messages=[llm.user(f"Summarise document {i}.")],
                options=llm.ModelOptions(max_tokens=64),  # also what each call reserves
                metadata={"job": "fan-out"},
            )
            async with client.invoke(request) as stream:
                answers[i] = "".join([chunk.text async for chunk in stream])

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(ask, i)
        elapsed = time.perf_counter() - started
        usage = client.get_usage()
        print(
            f"{len(answers)} answers in {elapsed:.2f}s; {usage.total_tokens} tokens, ${usage.cost}"
        )
        print((await client.usage(group_by=["tag:job"])).to_table())


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 300)
