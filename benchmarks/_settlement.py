"""Settlement figures: many concurrent calls through the client, a file ledger, a budget.

`settlement_report` runs ``calls`` concurrent streamed invocations on the in-process mock
provider (no sockets), with a budget (so every settlement goes to the budget store) and the
usage ledger in a file of a temporary folder, and returns report lines:

* settle throughput: settlements applied to the budget store per second, from the first
  stream's end until `Client.budget_levels` (which waits for all of them) returns;
* ledger rows per second: rows committed per second over the same span, until
  `Client.usage` (which waits for every row) returns; and per second of commit time;
* the latency settling adds to a call: from the end of the stream (the last chunk read) to
  the return of the settle step in the caller, p50 / p99 / max.

It measures the settle step by timing `InvocationStream` 's end-of-stream step, which does
exactly that (close the attempt, aggregate, price, cast the settlement), patched for the run.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from unittest.mock import patch

import msgspec
import trio

import llm_invocation as llm
from llm_invocation.actors.accountant import (
    Accountant,
    AccountantStats,
    Flush,
    Reservation,
    Settle,
)
from llm_invocation.invocation import InvocationStream
from llm_invocation.store.ledger import LedgerEntry, open_ledger, open_ledger_writer
from llm_invocation.testing import Scenario, Scenarios, ScriptedUsage

__all__ = ["settlement_report"]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


async def settlement_report(calls: int = 10_000) -> list[str]:
    """Run ``calls`` concurrent invocations and return the settlement figures as lines."""
    scenarios = Scenarios(
        Scenario(text="settled", usage=ScriptedUsage(prompt_tokens=12, completion_tokens=3))
    )
    request = llm.Request(
        model="mock", messages=[llm.user("hi")], options=llm.ModelOptions(max_tokens=16)
    )
    ends: list[float] = []
    added: list[float] = []
    original: Callable[[InvocationStream], Awaitable[None]] = InvocationStream._end  # pyright: ignore[reportPrivateUsage] - timed below

    async def timed_end(stream: InvocationStream) -> None:
        started = time.perf_counter()
        ends.append(started)
        await original(stream)
        added.append(time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as folder:
        # No rate limits or cap: the settlement path is measured, not the admission's waits.
        config = llm.Config.unlimited(
            provider="mock",
            model="mock",
            ledger_path=str(Path(folder) / "usage.sqlite"),
            cost_control={"max_budget": "1000000"},
        )
        with patch.object(InvocationStream, "_end", timed_end):
            async with llm.open_client(config, scenarios=scenarios) as client:
                await client.invoke_sync(request)  # warm up: tokenizer, prices, pools
                ends.clear()
                added.clear()

                async def one() -> None:
                    await client.invoke_sync(request)

                started = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(calls):
                        nursery.start_soon(one)
                returned = time.perf_counter()
                await client.budget_levels()
                applied = time.perf_counter()
                report = await client.usage(group_by=[])
                committed = time.perf_counter()
                accountant = client.runtime.ref("accountant", Accountant)
                stats = await accountant.call(AccountantStats())
                writer = stats.ledger
    first = min(ends) if ends else started
    rows = report.total.calls - 1  # the warm-up call
    settled = stats.settled - 1
    lines = [
        (
            f"{calls:,} concurrent calls in {returned - started:.2f}s "
            f"({calls / (returned - started):,.0f} calls/s), file ledger, one budget"
        ),
        (
            f"settle throughput: {settled:,} settlements applied in {applied - first:.2f}s "
            f"from the first stream's end: {settled / (applied - first):,.0f}/s (the last "
            f"{(applied - returned) * 1e3:.1f} ms after the last call returned)"
        ),
        (
            f"ledger rows per second: {rows:,} rows committed in {committed - first:.2f}s: "
            f"{rows / (committed - first):,.0f}/s"
        ),
    ]
    if writer is not None and writer.commit_seconds > 0:
        lines.append(
            f"ledger commits: {writer.batches:,} transactions, largest {writer.largest_batch:,} "
            f"rows, {writer.committed / writer.commit_seconds:,.0f} rows per second of commit "
            "time"
        )
    lines.append(
        "latency settling adds to a call (end of stream to the settle step's return): "
        f"p50 {_percentile(added, 0.5) * 1e3:.3f} ms, p99 {_percentile(added, 0.99) * 1e3:.3f} "
        f"ms, max {max(added, default=math.nan) * 1e3:.3f} ms (target p99 <= 1 ms)"
    )
    lines.append(await _accountant_alone(calls))
    lines.append(await _ledger_alone(calls))
    return lines


async def _ledger_alone(count: int) -> str:
    """Put ``count`` entries into a file ledger's batching writer, nothing else running."""
    entries = [
        LedgerEntry(provider="mock", model="mock", prompt_tokens=12, cost=Decimal("0.000018"))
        for _ in range(count)
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "usage.sqlite"
        async with open_ledger(path) as ledger, open_ledger_writer(ledger) as writer:
            started = time.perf_counter()
            for entry in entries:
                await writer.put(entry)
            await writer.flush()
            elapsed = time.perf_counter() - started
            stats = writer.statistics()
    return (
        f"ledger rows per second, the writer alone: {stats.committed:,} rows in "
        f"{stats.batches:,} transactions in {elapsed:.2f}s: {stats.committed / elapsed:,.0f}/s"
    )


async def _accountant_alone(count: int) -> str:
    """Cast ``count`` settlements at once straight to a client's accountant (a file ledger,
    one budget): how fast they are applied and committed, with nothing else running."""
    reservation = Reservation(
        id="", provider="mock", model="mock", worst_case=Decimal("0.001"), scopes=[], tags={}
    )
    usage = llm.Usage(prompt_tokens=12, completion_tokens=3, cost=Decimal("0.000018"))
    with tempfile.TemporaryDirectory() as folder:
        # No rate limits or cap: the settlement path is measured, not the admission's waits.
        config = llm.Config.unlimited(
            provider="mock",
            model="mock",
            ledger_path=str(Path(folder) / "usage.sqlite"),
            cost_control={"max_budget": "1000000"},
        )
        async with llm.open_client(config) as client:
            accountant = client.runtime.ref("accountant", Accountant)
            messages = [
                Settle(
                    reservation=msgspec.structs.replace(reservation, id=f"bench-{n}"),
                    usage=usage,
                )
                for n in range(count)
            ]
            started = time.perf_counter()
            for message in messages:
                await accountant.send(message)
            await accountant.call(Flush())
            elapsed = time.perf_counter() - started
    return (
        f"settle throughput, the accountant alone: {count:,} settlements cast at once, "
        f"applied and committed in {elapsed:.2f}s: {count / elapsed:,.0f}/s"
    )


if __name__ == "__main__":
    for line in trio.run(settlement_report):
        print(line)
