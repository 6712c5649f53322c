"""A client process for the multi-process governance test: ``python tests/client_worker.py JSON``.

It opens a client on the shared Redis store with the mock provider, fires many concurrent
invocations, and prints one JSON line: how many were admitted, refused by the rate limit,
refused by the budget, and what they cost.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

import trio

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios, ScriptedUsage


async def main(settings: dict[str, Any]) -> dict[str, Any]:
    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    config = llm.Config.unlimited(
        provider="mock",
        model="mock",
        store=settings["store"],
        store_fail_mode=settings.get("fail_mode", "closed"),
        rate_limits={"requests_per_minute": settings["rpm"], "max_wait": settings["max_wait"]},
        cost_control={"max_budget": settings["budget"]},
    )
    usage = ScriptedUsage(prompt_tokens=5, completion_tokens=50)
    scenarios = Scenarios(Scenario(text="ok", usage=usage))
    counts = {"admitted": 0, "rate_limited": 0, "cost_exceeded": 0, "other": 0}
    spent = Decimal(0)
    request = llm.Request(
        model="mock",
        messages=[llm.user("hello")],
        options=llm.ModelOptions(max_tokens=50),
    )
    async with llm.open_client(config, scenarios=scenarios) as client:

        async def one() -> None:
            nonlocal spent
            try:
                response = await client.invoke_sync(request)
            except llm.RateLimited:
                counts["rate_limited"] += 1
            except llm.CostExceeded:
                counts["cost_exceeded"] += 1
            except llm.LLMError:
                counts["other"] += 1
            else:
                counts["admitted"] += 1
                if response.usage is not None and response.usage.cost is not None:
                    spent += response.usage.cost

        async with trio.open_nursery() as nursery:
            for _ in range(settings["calls"]):
                nursery.start_soon(one)
    return {**counts, "spent": str(spent)}


if __name__ == "__main__":
    result = trio.run(main, json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(result) + "\n")
