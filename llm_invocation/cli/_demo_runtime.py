"""A small supervised fan-out on the bare runtime: a crash, a restart and a clean shutdown.

Run it with ``python -m llm_invocation demo --runtime``.
"""

from __future__ import annotations

import random
import time
from typing import Any, TextIO

import trio

from ..runtime import (
    Actor,
    ActorCrashed,
    Call,
    ChildSpec,
    Context,
    ReplyError,
    SupervisorSpec,
    open_runtime,
)

__all__ = ["run_runtime_demo"]


class Square(Call[int], frozen=True, kw_only=True):
    n: int


class Squarer(Actor[Square]):
    """Squares numbers, slowly; crashes on a poisoned input, refuses negative ones."""

    max_concurrency = 8

    def __init__(self, poison: int) -> None:
        self.poison = poison

    async def handle(self, msg: Square, ctx: Context) -> int:
        await trio.sleep(random.uniform(0.001, 0.01))  # noqa: S311 - demo timing jitter
        if msg.n == self.poison:
            raise RuntimeError(f"poisoned input {msg.n}")
        if msg.n < 0:
            raise ReplyError(f"refusing negative input {msg.n}")
        return msg.n * msg.n


async def _fan_out(out: TextIO, jobs: int) -> dict[str, Any]:
    poison = jobs // 2
    spec = SupervisorSpec(
        max_restarts=5,
        within=10,
        children=[ChildSpec.actor("squarer", lambda: Squarer(poison), shutdown=2)],
    )
    results: dict[str, Any] = {"ok": 0, "crashed": 0, "refused": 0}
    started = time.perf_counter()
    async with open_runtime(spec) as runtime:
        squarer = runtime.ref("squarer", Squarer)

        async def one(n: int) -> None:
            try:
                await squarer.call(Square(n=n))
            except ActorCrashed:
                results["crashed"] += 1
            except ReplyError:
                results["refused"] += 1
            else:
                results["ok"] += 1

        async with trio.open_nursery() as nursery:
            for n in range(-2, jobs - 2):
                nursery.start_soon(one, n)
        # The crash can take the last calls in hand with it, so every caller may have its
        # answer before the supervisor has restarted the actor. One more call waits in the
        # mailbox (which survives restarts) and is answered by the new incarnation, so the
        # figures below are read after the restart, never in the middle of it.
        after = await squarer.call(Square(n=jobs))
        stats = runtime.statistics()
        actor = stats.actors[0]
        print(
            f"fan-out of {jobs} calls: {results['ok']} answered, {results['refused']} refused, "
            f"{results['crashed']} in hand when the actor crashed",
            file=out,
        )
        print(
            f"actor {actor.name!r}: {actor.crashes} crash, {actor.restarts} restart, "
            f"state {actor.state}, {actor.handled} messages handled",
            file=out,
        )
        print(f"a call after the restart: {jobs}\u00b2 = {after}", file=out)
    print(f"runtime shut down cleanly in {time.perf_counter() - started:.2f}s", file=out)
    results["restarts"] = actor.restarts
    return results


def run_runtime_demo(out: TextIO, *, jobs: int = 200) -> dict[str, Any]:
    """Run the fan-out demo, printing to ``out``; returns the counts for tests."""
    return trio.run(_fan_out, out, jobs)
