"""CPU per non-streamed request: our client against aiohttp (with a typed msgspec decode) and
bare httpx, over plain HTTP.

    python benchmarks/request_bench.py [--quick] [--rounds N]

The fake provider server runs in a process of its own (``stream_bench.py``'s helpers), so
only the client's CPU (``time.process_time`` of this process) is measured. aiohttp runs on
asyncio, so its rounds run in ``asyncio.run(...)`` in this same process, alternating with the
trio rounds (``trio.run(...)``) of bare httpx and ours: never both loops at once. Each round
is preceded by a warm-up of the same contender (its connections open), and the lowest figure
of the rounds is kept (noise only ever adds CPU). Requests run 8 at a time.

Our client runs as `stream_bench.py` configures it (no rate limit, budget or cap), and once
more with a rate limit and a budget configured (both generous enough never to refuse or
wait): what admission costs when it has work to do.

Target: ours at most 1.5x aiohttp per non-streamed request. The figures are ratios measured
side by side in one run, never absolute times. A missed target is printed as MISSED; the
process still exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

import trio
from stream_bench import (
    HAVE_AIOHTTP,
    SERVER_ARGS,
    Aiohttp,
    Bare,
    Ours,
    Runner,
    client_config,
    fake_server,
    keep_best,
    measure,
    run_concurrently,
    run_concurrently_asyncio,
)

import llm_invocation as llm

TARGET = 1.5
CONCURRENCY = 8


async def _measure(
    contenders: Mapping[str, Any], total: int, runner: Runner = run_concurrently
) -> dict[str, float]:
    results: dict[str, float] = {}
    for name, contender in contenders.items():
        await runner(40, CONCURRENCY, contender.request)  # code paths, connections
        cpu, units, _ = await measure(total, CONCURRENCY, contender.request, runner)
        results[name] = cpu / units
    return results


def governed_config(base: str) -> llm.Config:
    """`client_config` with a rate limit and a budget that never refuse nor wait."""
    config = client_config({"openai": {"base_url": base + "/openai/v1"}})
    return llm.Config.unlimited(
        provider="openai",
        timeout=120,
        trust_env=False,
        rate_limits={"requests_per_minute": 10**9, "tokens_per_minute": 10**12},
        cost_control={
            "prices": {"bench": {"input_per_mtok": 1, "output_per_mtok": 2}},
            "max_budget": 10**9,
        },
        providers={"openai": config.providers["openai"]},
    )


async def trio_round(base: str, total: int) -> dict[str, float]:
    bare = Bare(base)
    providers = {"openai": {"base_url": base + "/openai/v1"}}
    async with (
        llm.open_client(client_config(providers)) as client,
        llm.open_client(governed_config(base)) as governed,
        bare.client,
    ):
        return await _measure(
            {
                "bare httpx": bare,
                "ours": Ours(client, "openai"),
                "ours, rate limit and budget": Ours(governed, "openai"),
            },
            total,
        )


async def aiohttp_round(base: str, total: int) -> dict[str, float]:
    aiohttp = Aiohttp(base, ssl.create_default_context())
    async with aiohttp.session:
        return await _measure({"aiohttp": aiohttp}, total, run_concurrently_asyncio)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one round")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    total = 400 if args.quick else 1500
    rounds = args.rounds or (1 if args.quick else 3)
    results: dict[str, float] = {}
    with fake_server(*SERVER_ARGS) as base:
        for _ in range(rounds):
            keep_best(results, trio.run(trio_round, base, total))
            if HAVE_AIOHTTP:
                keep_best(results, asyncio.run(aiohttp_round(base, total)))
    print("per non-streamed request (CPU, client process, plain HTTP, 8 at a time)")
    for name, value in results.items():
        print(f"  {name:32}{value * 1e6:9.0f} us")
    ours = results["ours"]
    print(f"  {'ours / bare httpx:':32}{ours / results['bare httpx']:9.2f}x")
    governed = results["ours, rate limit and budget"]
    print(f"  {'governed / ours:':32}{governed / ours:9.2f}x")
    if not HAVE_AIOHTTP:
        print(f"  {'ours / aiohttp:':32}skipped (aiohttp is not installed)")
        return
    for label, value in (("ours", ours), ("governed", governed)):
        ratio = value / results["aiohttp"]
        met = "met" if ratio <= TARGET else "MISSED"
        print(f"  {label + ' / aiohttp:':32}{ratio:9.2f}x (target <= {TARGET}x: {met})")


if __name__ == "__main__":
    main()
