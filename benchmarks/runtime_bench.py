"""Actor calls and casts next to a bare trio memory channel, measured side by side in one run.

    python benchmarks/runtime_bench.py [--n 20000] [--rounds 5]

* call: ``await ref.call(msg)`` round trips, against a bare request/response pair (send a
  request on one memory channel, the peer task answers on another). Target: a call costs at
  most 3x the bare pair.
* cast: ``await ref.send(msg)`` into an actor that handles it, against ``await send(item)``
  into a task that receives it, both with a buffer of 1024.

Each measurement is the best of several rounds, so scheduler noise inflates neither side.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from llm_invocation.runtime import (
    Actor,
    Call,
    ChildSpec,
    Context,
    Msg,
    SupervisorSpec,
    open_runtime,
)


class Ping(Call[int], frozen=True, kw_only=True):
    n: int


class Tick(Msg, frozen=True, kw_only=True):
    pass


class Echo(Actor[Ping | Tick]):
    def __init__(self) -> None:
        self.ticks = 0

    async def handle(self, msg: Ping | Tick, ctx: Context) -> Any:
        if isinstance(msg, Ping):
            return msg.n
        self.ticks += 1
        return None


async def best_of(rounds: int, n: int, body: Callable[[int], Awaitable[None]]) -> float:
    """Seconds per operation: the best of ``rounds`` runs of ``n`` operations."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        await body(n)
        best = min(best, (time.perf_counter() - start) / n)
    return best


async def bare_pair(n: int) -> None:
    req_send, req_recv = trio.open_memory_channel[int](0)
    rep_send, rep_recv = trio.open_memory_channel[int](0)

    async def peer() -> None:
        async for item in req_recv:
            await rep_send.send(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        for i in range(n):
            await req_send.send(i)
            await rep_recv.receive()
        nursery.cancel_scope.cancel()


async def bare_casts(n: int) -> None:
    send, recv = trio.open_memory_channel[int](1024)
    done = trio.Event()

    async def consumer() -> None:
        seen = 0
        async for _ in recv:
            seen += 1
            if seen == n:
                done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        for i in range(n):
            await send.send(i)
        await done.wait()
        nursery.cancel_scope.cancel()


async def main(n: int, rounds: int) -> dict[str, float]:
    spec = SupervisorSpec(children=[ChildSpec.actor("echo", Echo, mailbox=1024)])
    async with open_runtime(spec) as runtime:
        echo = runtime.ref("echo", Echo)

        async def calls(count: int) -> None:
            for i in range(count):
                await echo.call(Ping(n=i))

        async def casts(count: int) -> None:
            tick = Tick()
            for _ in range(count):
                await echo.send(tick)
            await echo.call(Ping(n=0))  # every cast before it is handled

        return {
            "bare_pair": await best_of(rounds, n, bare_pair),
            "call": await best_of(rounds, n, calls),
            "bare_cast": await best_of(rounds, n, bare_casts),
            "cast": await best_of(rounds, n, casts),
        }


def report(results: dict[str, float]) -> str:
    call_ratio = results["call"] / results["bare_pair"]
    cast_ratio = results["cast"] / results["bare_cast"]
    lines = [
        f"{'':28}{'us/op':>10}{'ops/s':>12}",
        *(
            f"{name:28}{seconds * 1e6:>10.2f}{1 / seconds:>12,.0f}"
            for name, seconds in (
                ("bare channel request/reply", results["bare_pair"]),
                ("actor call", results["call"]),
                ("bare channel send", results["bare_cast"]),
                ("actor cast", results["cast"]),
            )
        ),
        "",
        (
            f"call / bare pair: {call_ratio:.2f}x (target <= 3.00x: "
            f"{'met' if call_ratio <= 3 else 'MISSED'})"
        ),
        f"cast / bare send: {cast_ratio:.2f}x",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(report(trio.run(main, args.n, args.rounds)))
