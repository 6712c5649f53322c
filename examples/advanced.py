"""Advanced configuration: retries, rate limits, cost control, a deadline, usage and cost.
Seed 000's examples/advanced.

    python examples/advanced.py
"""

from __future__ import annotations

import trio

import llm_invocation as llm


async def main() -> None:
    config = llm.Config.load(
        timeout=30,
        retries={"max_attempts": 3, "initial_delay": "100ms", "max_delay": "2s", "multiplier": 2},
        rate_limits={
            "requests_per_minute": 60,
            "tokens_per_minute": 100_000,
            "concurrent_calls": 10,
        },
        cost_control={
            "max_cost_per_request": "0.50",
            "max_budget": "100.00",
            "budget_period": "24h",
        },
    )
    alerts: list[llm.BudgetAlert] = []
    async with llm.open_client(config, on_alert=[alerts.append]) as client:
        with trio.fail_after(30):  # the deadline travels into every actor on the way
            response = await client.chat(
                [
                    llm.system("You are a helpful assistant."),
                    llm.user("Write a story about a brave knight."),
                ],
                max_tokens=1000,
            )
        print(f"Response: {response.messages[-1].content}")
        print(f"Token usage: {response.usage.total_tokens} tokens")
        cost = response.usage.cost
        print(f"Cost: ${cost:.6f}" if cost is not None else "Cost: unknown (no price)")
        print(await client.budget_levels())
        report = await client.usage(group_by=["provider", "model"])
        print(report.to_table())


if __name__ == "__main__":
    trio.run(main)
