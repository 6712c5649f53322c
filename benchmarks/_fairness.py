"""Cross-process fairness of the governor on Redis: several processes share one concurrency
limit; how much of it is in use, and how fairly it is shared.

    python benchmarks/_fairness.py [--redis redis://127.0.0.1:6379/15] [--processes 4]

Each process runs the real governor (`Governor` over `RedisRateStore`) with several tasks;
each task asks for a lease, holds it for ``hold`` seconds, gives it back and asks again,
until ``duration`` has passed. The processes start together (on the wall clock) and report
every interval a task held a slot. From those intervals, over the window where all of them
run:

* utilisation: the time-average of slots in use over the limit (100% = always full);
* calls and refusals per process (a refusal means a caller waited ``max_wait`` in vain);
* the wait for a slot, p50 and p99.

`fairness_report` returns these as report lines; `measure` returns the numbers. With
``notices=False`` the processes ignore Redis's release notices and rely on polling alone,
for comparison. Run as ``_fairness.py worker <json>`` it is one of the processes: it prints
``READY`` once its governor runs, reads the common start time (wall clock) from stdin, and
prints its intervals as one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FairnessResult:
    """What `measure` found."""

    processes: int
    tasks: int
    concurrency: int
    hold: float
    window: float
    utilisation: float
    peak: int
    calls: list[int]
    refused: list[int]
    waits: list[float]

    def percentile(self, fraction: float) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- one process -------------------------------------------------------------------------------


async def _worker(config: dict[str, Any]) -> dict[str, Any]:
    from llm_invocation.actors.governor import Acquire, Governor, RateLimitSettings, Release
    from llm_invocation.errors import RateLimited
    from llm_invocation.runtime import ChildSpec, SupervisorSpec, open_runtime
    from llm_invocation.store._base import RateLimit
    from llm_invocation.store.redis import open_redis_stores

    holds: list[tuple[float, float]] = []
    waits: list[float] = []
    refused = 0
    pid = os.getpid()
    async with open_redis_stores(config["url"], prefix=config["prefix"], timeout=5.0) as (rate, _):
        if not config["notices"]:

            async def deaf(on_release: Any) -> None:
                await trio.sleep_forever()

            rate.watch = deaf  # type: ignore[method-assign]  # polling alone, for comparison
        await rate.levels(RateLimit(key="global"))  # connect and load the scripts first

        def governor() -> Governor:
            return Governor(
                rate,
                global_limits=RateLimitSettings(concurrency=config["concurrency"]),
                max_wait=config["max_wait"],
            )

        spec = SupervisorSpec(children=[ChildSpec.actor("governor", governor)])
        async with open_runtime(spec) as runtime:
            gov = runtime.ref("governor", Governor)
            print("READY", flush=True)  # then the start time comes on stdin
            start_at = float(await trio.to_thread.run_sync(sys.stdin.readline))
            await trio.sleep(max(0.0, start_at - time.time()))
            end = start_at + config["duration"]

            async def task(number: int) -> None:
                nonlocal refused
                serial = 0
                while time.time() < end:
                    serial += 1
                    asked = time.time()
                    try:
                        lease = await gov.call(
                            Acquire(
                                provider="bench",
                                model="m",
                                tokens=0,
                                lease=f"{pid}-{number}-{serial}",
                            )
                        )
                    except RateLimited:
                        refused += 1
                        continue
                    got = time.time()
                    waits.append(got - asked)
                    await trio.sleep(config["hold"])
                    holds.append((got, time.time()))
                    await gov.send(Release(lease=lease, used=0))

            async with trio.open_nursery() as nursery:
                for number in range(config["tasks"]):
                    nursery.start_soon(task, number)
    return {"pid": pid, "holds": holds, "waits": waits, "refused": refused}


# -- the measurement -------------------------------------------------------------------------


class _Lines:
    """The lines a worker prints."""

    def __init__(self, worker: trio.Process) -> None:
        assert worker.stdout is not None
        self._stream = worker.stdout
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise RuntimeError("a fairness worker ended early")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()


def _utilisation(
    holds: list[tuple[float, float]], start: float, end: float, concurrency: int
) -> tuple[float, int]:
    """Time-average of slots in use over [start, end), divided by the limit; and the peak."""
    events: list[tuple[float, int]] = []
    for got, released in holds:
        events += [(got, 1), (released, -1)]
    events.sort()
    busy = 0.0
    in_use = peak = 0
    previous = start
    for at, change in events:
        if at > start:
            clipped = min(at, end)
            if clipped > previous:
                busy += in_use * (clipped - previous)
                previous = clipped
        in_use += change
        peak = max(peak, in_use)
    if end > previous:
        busy += in_use * (end - previous)
    return busy / (concurrency * (end - start)), peak


async def measure(
    url: str,
    *,
    processes: int = 4,
    tasks: int = 4,
    concurrency: int = 4,
    hold: float = 0.2,
    duration: float = 3.0,
    max_wait: float = 10.0,
    notices: bool = True,
    warmup: float = 0.3,
) -> FairnessResult:
    """Run the processes against Redis at ``url`` (under a prefix of their own, removed
    afterwards) and measure.

    Raises:
        RuntimeError: a process failed.
    """
    from llm_invocation.store.redis import RedisRateStore

    prefix = f"fairness-{secrets.token_hex(4)}:"
    config = {
        "url": url,
        "prefix": prefix,
        "concurrency": concurrency,
        "tasks": tasks,
        "hold": hold,
        "duration": duration,
        "max_wait": max_wait,
        "notices": notices,
    }
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    command = [sys.executable, str(Path(__file__)), "worker", json.dumps(config)]
    workers: list[trio.Process] = []
    results: list[dict[str, Any]] = []
    try:
        for _ in range(processes):
            workers.append(
                await trio.lowlevel.open_process(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
                )
            )
        outputs = [_Lines(worker) for worker in workers]
        with trio.fail_after(60):
            for lines in outputs:  # every process connected, its governor running
                if await lines.next() != "READY":
                    raise RuntimeError("a fairness worker failed to start")
        start_at = time.time() + 0.2
        for worker in workers:
            assert worker.stdin is not None
            await worker.stdin.send_all(f"{start_at!r}\n".encode())
        with trio.fail_after(duration + max_wait + 60):
            for lines in outputs:
                results.append(json.loads(await lines.next()))
            for worker in workers:
                if await worker.wait() != 0:
                    raise RuntimeError("a fairness worker failed")
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        async with RedisRateStore(url, prefix=prefix) as store:
            script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
            await store._conn.run(  # pyright: ignore[reportPrivateUsage]
                "cleanup", lambda client: client.eval(script, [], [f"*{prefix}*"])
            )
    start, end = start_at + warmup, start_at + duration
    holds = [(got, released) for r in results for got, released in r["holds"]]
    utilisation, peak = _utilisation(holds, start, end, concurrency)
    return FairnessResult(
        processes=processes,
        tasks=tasks,
        concurrency=concurrency,
        hold=hold,
        window=end - start,
        utilisation=utilisation,
        peak=peak,
        calls=[len(r["holds"]) for r in results],
        refused=[r["refused"] for r in results],
        waits=[w for r in results for w in r["waits"]],
    )


def report(result: FairnessResult, label: str = "") -> list[str]:
    """The report lines of one measurement."""
    head = (
        f"{result.processes} processes x {result.tasks} tasks, one Redis concurrency limit of "
        f"{result.concurrency}, slots held {result.hold * 1000:.0f} ms{label}"
    )
    spread = ""
    if result.calls and min(result.calls) > 0:
        spread = f" (max/min {max(result.calls) / min(result.calls):.2f})"
    return [
        head,
        (
            f"  shared concurrency in use: {result.utilisation:.1%} of {result.window:.1f} s "
            f"(peak {result.peak} of {result.concurrency})"
        ),
        f"  calls per process: {', '.join(map(str, result.calls))}{spread}",
        f"  refused: {sum(result.refused)}",
        (
            f"  wait for a slot: p50 {result.percentile(0.5) * 1000:.0f} ms, "
            f"p99 {result.percentile(0.99) * 1000:.0f} ms, "
            f"mean {statistics.fmean(result.waits) * 1000 if result.waits else 0:.0f} ms"
        ),
    ]


async def fairness_report(url: str, *, compare_polling: bool = False, **options: Any) -> list[str]:
    """`measure`, as report lines; with ``compare_polling`` also without release notices."""
    lines = report(await measure(url, **options), " (release notices)")
    if compare_polling:
        lines += report(await measure(url, notices=False, **options), " (polling only)")
    return lines


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "worker":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(trio.run(_worker, json.loads(sys.argv[2]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis", default=os.environ.get("LLM_REDIS_URL") or "redis://127.0.0.1:6379/15"
    )
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--hold", type=float, default=0.2)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--compare-polling", action="store_true")
    args = parser.parse_args()
    lines = trio.run(
        lambda: fairness_report(
            args.redis,
            compare_polling=args.compare_polling,
            processes=args.processes,
            tasks=args.tasks,
            concurrency=args.concurrency,
            hold=args.hold,
            duration=args.duration,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
