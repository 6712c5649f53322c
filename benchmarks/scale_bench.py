"""Scale: our client against aiohttp (with a typed msgspec decode: the fastest Python client
doing the same work) at thousands of concurrent streams, per request, over TLS, and at
start-up.

    python benchmarks/scale_bench.py [--quick]

The fake provider server runs in a process of its own (``stream_bench.fake_server``), so
``time.process_time`` of this process is the client's CPU alone. aiohttp runs on asyncio in
this same process, in ``asyncio.run(...)`` between our ``trio.run(...)`` rounds, never both at
once. Every comparison is a ratio of two figures measured side by side in one run; the
start-up figures and the memory and lag of the largest run are absolute, each printed next to
its target with "met" or "not met" (the process exits 0 either way).

Sections of the report:

* concurrent streams (5,000; 200 with ``--quick``) of 40 chunks at 20 Hz (10 chunks with
  ``--quick``): CPU per chunk and wall time, ours / aiohttp (targets 1.3x and 1.5x);
* a non-streamed request, CPU per request, ours / aiohttp (target 1.5x), and per streamed
  chunk at 10 streams at a time (``stream_bench.compare``);
* over TLS (a ``trustme`` CA made at run time, as in ``stream_bench``), CPU per chunk at 10
  streams at a time, ours / aiohttp (target 1.2x);
* ``open_client`` in a fresh process (``Config.unlimited()`` on the mock provider): the time
  it takes and the process's resident memory when it returns (targets 0.15 s and 80 MB; the
  median of 5 processes, 1 with ``--quick``);
* many concurrent streams (10,000; 400 with ``--quick``), each client in a fresh process of
  its own: resident memory per stream (the peak while they are open, less the figure before
  they started, over the streams; target 24 KiB) and the event loop's lag (a task that
  sleeps 1 ms in a loop records how late it wakes; target p99 5 ms), for us and for
  aiohttp, with the time each spent in Python's cyclic garbage collector and its longest
  pause (``--gc-tuned`` runs both after ``gc.freeze()`` and
  ``gc.set_threshold(100_000, 50, 1000)``, what an application holding that many streams
  may choose). The same number of streams then runs once more at 1 chunk a second (10
  chunks; 1 with ``--quick``), a rate the process keeps up with, reported without a target.
  At 20 chunks a second the process has more to do than one core does: a client that runs
  every ready read in one pass of its loop keeps the sleeper waiting for the backlog.

The wall of the largest runs depends on the fake server keeping up (a Python server in one
process): both clients face the same server, so the ratio still compares the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio
from stream_bench import (
    HAVE_AIOHTTP,
    SERVER_ARGS,
    Aiohttp,
    Certificates,
    Ours,
    Sizes,
    client_config,
    compare,
    fake_server,
    keep_best,
    run_concurrently,
    run_concurrently_asyncio,
    sizes_for,
)

import llm_invocation as llm

PACKAGE_ROOT = str(Path(llm.__file__).resolve().parent.parent)

TARGETS = {
    "streams/cpu": 1.3,
    "streams/wall": 1.5,
    "request": 1.5,
    "tls/chunk": 1.2,
    "open/seconds": 0.15,
    "open/mb": 80.0,
    "many/kib": 24.0,
    "many/lag_ms": 5.0,
}


class Size(msgspec.Struct, frozen=True):
    streams: int  # the concurrent streams run
    many: int  # the concurrent streams of the memory and lag run
    chunks: int  # chunks per stream, at 20 Hz
    opens: int  # fresh processes that open a client
    paced: int  # chunks per stream, at 1 Hz, of the paced run of ``many`` streams


def size_for(quick: bool) -> Size:
    if quick:
        return Size(streams=200, many=400, chunks=6, opens=1, paced=1)
    return Size(streams=5000, many=10000, chunks=40, opens=5, paced=10)


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Probe:
    """Samples resident memory (the peak) and how late a 1 ms sleep wakes, while it runs."""

    def __init__(self) -> None:
        self.peak = 0
        self.lags: list[float] = []

    def tick(self, late: float) -> None:
        self.lags.append(max(0.0, late))
        if len(self.lags) % 10 == 0:
            self.peak = max(self.peak, rss_bytes())

    def p99_ms(self) -> float:
        if not self.lags:
            return 0.0
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def probe_trio(probe: Probe, done: trio.Event) -> None:
    while not done.is_set():
        start = time.perf_counter()
        await trio.sleep(0.001)
        probe.tick(time.perf_counter() - start - 0.001)


async def probe_asyncio(probe: Probe, done: asyncio.Event) -> None:
    while not done.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        probe.tick(time.perf_counter() - start - 0.001)


def our_config(base: str, connections: int) -> llm.Config:
    return client_config(
        {"openai": {"base_url": base + "/openai/v1", "max_connections": connections}}
    )


class WideAiohttp(Aiohttp):
    """`stream_bench.Aiohttp` (plain HTTP) with room for ``connections`` at once, as ours."""

    def __init__(self, base: str, connections: int) -> None:
        import aiohttp  # optional: see HAVE_AIOHTTP

        self.url = base + "/openai/v1/chat/completions"
        self.session = aiohttp.ClientSession(  # made in the running asyncio loop
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=120),
            trust_env=False,
        )
        self.reads = 0


def aiohttp_client(base: str, connections: int) -> Aiohttp:
    return WideAiohttp(base, connections)


async def streams_trio(base: str, streams: int, *, probe: bool) -> dict[str, float]:
    """CPU per chunk and wall of ``streams`` concurrent streams through our client; with
    ``probe``, the memory per stream and the loop's lag too."""
    async with llm.open_client(our_config(base, streams + 100)) as client:
        ours = Ours(client, "openai")
        await run_concurrently(20, 20, ours.stream)  # code paths, tokenizer, price lookups
        return await _measure_trio(streams, ours.stream, probe=probe)


async def _measure_trio(
    streams: int, one: Callable[[], Awaitable[int]], *, probe: bool
) -> dict[str, float]:
    watch = Probe()
    done = trio.Event()
    before = rss_bytes()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        if probe:
            nursery.start_soon(probe_trio, watch, done)
        chunks = await run_concurrently(streams, streams, one)
        done.set()
    return _figures(cpu0, wall0, chunks, before, watch, streams, probe=probe)


async def streams_asyncio(base: str, streams: int, *, probe: bool) -> dict[str, float]:
    """`streams_trio` for aiohttp."""
    client = aiohttp_client(base, streams + 100)
    async with client.session:
        await run_concurrently_asyncio(20, 20, client.stream)
        watch = Probe()
        done = asyncio.Event()
        before = rss_bytes()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        task = asyncio.create_task(probe_asyncio(watch, done)) if probe else None
        chunks = await run_concurrently_asyncio(streams, streams, client.stream)
        done.set()
        if task is not None:
            await task
        return _figures(cpu0, wall0, chunks, before, watch, streams, probe=probe)


def _figures(
    cpu0: float,
    wall0: float,
    chunks: int,
    before: int,
    watch: Probe,
    streams: int,
    *,
    probe: bool,
) -> dict[str, float]:
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    figures = {"cpu": cpu / max(chunks, 1), "wall": wall, "chunks": chunks}
    if probe:
        figures["kib"] = max(0, watch.peak - before) / streams / 1024
        figures["lag_ms"] = watch.p99_ms()
    return figures


def plain_sizes(quick: bool) -> Sizes:
    return Sizes(requests=100, streams=5, rounds=1) if quick else sizes_for(quick)


async def request_round(base: str, quick: bool) -> dict[str, float]:
    async with llm.open_client(our_config(base, 200)) as client:
        return await compare({"ours": Ours(client, "openai")}, plain_sizes(quick), rounds=1)


async def request_round_aiohttp(base: str, quick: bool) -> dict[str, float]:
    client = aiohttp_client(base, 200)
    async with client.session:
        return await compare(
            {"aiohttp": client}, plain_sizes(quick), rounds=1, runner=run_concurrently_asyncio
        )


async def tls_round(base: str, certificates: Certificates, quick: bool) -> dict[str, float]:
    providers = {"openai": {"base_url": base + "/openai/v1", "verify": certificates.ca_file}}
    async with llm.open_client(client_config(providers)) as client:
        ours = Ours(client, "openai")
        return await compare({"ours": ours}, plain_sizes(quick), prefix="tls/", rounds=1)


async def tls_round_aiohttp(base: str, certificates: Certificates, quick: bool) -> dict[str, float]:
    client = Aiohttp(base, certificates.client_context())
    async with client.session:
        return await compare(
            {"aiohttp": client},
            plain_sizes(quick),
            prefix="tls/",
            rounds=1,
            runner=run_concurrently_asyncio,
        )


def package_env() -> dict[str, str]:
    """The environment of a child process: the package this benchmark imports, no keys."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    env.pop("LLM_PROVIDER", None)
    return env


class GCWatch:
    """Time spent in the cyclic garbage collector, and its longest pause."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.longest = 0.0
        self._start = 0.0
        gc.callbacks.append(self._event)

    def _event(self, phase: str, info: dict[str, int]) -> None:
        del info
        if phase == "start":
            self._start = time.perf_counter()
        else:
            pause = time.perf_counter() - self._start
            self.seconds += pause
            self.longest = max(self.longest, pause)


def many_phase(base: str, streams: int, client: str, *, gc_tuned: bool) -> dict[str, float]:
    """The memory and lag run of ``client`` (``ours`` or ``aiohttp``) in a fresh process of
    its own: memory freed by an earlier run would otherwise be reused and hide the growth."""
    done = subprocess.run(  # noqa: S603 - this interpreter, this script
        [
            sys.executable,
            __file__,
            "--many-child",
            client,
            "--base",
            base,
            "--streams",
            str(streams),
            *(["--gc-tuned"] if gc_tuned else []),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=package_env(),
        timeout=900,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def many_child(client: str, base: str, streams: int, *, gc_tuned: bool) -> None:
    raise_open_files(streams + 1000)
    if gc_tuned:
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)
    watch = GCWatch()
    if client == "ours":
        figures = trio.run(functools.partial(streams_trio, base, streams, probe=True))
    else:
        figures = asyncio.run(streams_asyncio(base, streams, probe=True))
    figures["gc_s"] = watch.seconds
    figures["gc_max_ms"] = watch.longest * 1000
    print(json.dumps(figures))


OPEN_CLIENT = """
import json, os, time
import trio
import llm_invocation as llm

async def main():
    start = time.perf_counter()
    async with llm.open_client(llm.Config.unlimited(provider="mock", model="mock")):
        seconds = time.perf_counter() - start
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(json.dumps({"seconds": seconds, "mb": rss / 2**20}))

trio.run(main)
"""


def open_client_phase(opens: int) -> dict[str, float]:
    """``open_client`` in fresh processes (the package this benchmark imports): medians."""
    env = package_env()
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(opens):
            done = subprocess.run(  # noqa: S603 - this interpreter, our own code
                [sys.executable, "-c", OPEN_CLIENT],
                capture_output=True,
                text=True,
                check=True,
                env=env,
                cwd=folder,
                timeout=120,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        "open/seconds": statistics.median(r["seconds"] for r in runs),
        "open/mb": statistics.median(r["mb"] for r in runs),
    }


# -- the report --------------------------------------------------------------------------------


def verdict(value: float, target: float, unit: str) -> str:
    met = "met" if value <= target else "not met"
    return f"(target <= {target:g}{unit}: {met})"


def ratio_line(label: str, ours: float, theirs: float | None, target: float) -> str:
    if theirs is None:
        return f"  {label + ':':48}skipped (aiohttp is not installed)"
    value = ours / theirs
    return f"  {label + ':':48}{value:6.2f}x {verdict(value, target, 'x')}"


def report(results: dict[str, dict[str, float]], size: Size, *, tuned: bool = False) -> str:
    ours, theirs = results["streams/ours"], results.get("streams/aiohttp")
    out = [
        (
            f"{size.streams:,} concurrent streams of {size.chunks} chunks at 20 Hz "
            f"(ideal wall {size.chunks / 20:g} s)"
        ),
        f"  ours:    {ours['cpu'] * 1e6:7.1f} us CPU per chunk, wall {ours['wall']:.2f} s",
    ]
    if theirs is not None:
        out.append(
            f"  aiohttp: {theirs['cpu'] * 1e6:7.1f} us CPU per chunk, wall {theirs['wall']:.2f} s"
        )
    out += [
        ratio_line(
            "streams, CPU per chunk, ours / aiohttp",
            ours["cpu"],
            theirs["cpu"] if theirs else None,
            TARGETS["streams/cpu"],
        ),
        ratio_line(
            "streams, wall, ours / aiohttp",
            ours["wall"],
            theirs["wall"] if theirs else None,
            TARGETS["streams/wall"],
        ),
    ]
    plain = results["plain"]
    has = HAVE_AIOHTTP and "request/aiohttp" in plain
    out += [
        "plain HTTP, 8 requests or 10 streams at a time (CPU, client process)",
        (
            f"  ours:    {plain['request/ours'] * 1e6:7.0f} us per request, "
            f"{plain['chunk/ours'] * 1e6:6.1f} us per chunk"
        ),
    ]
    if has:
        out.append(
            f"  aiohttp: {plain['request/aiohttp'] * 1e6:7.0f} us per request, "
            f"{plain['chunk/aiohttp'] * 1e6:6.1f} us per chunk"
        )
    out += [
        ratio_line(
            "non-streamed request CPU, ours / aiohttp",
            plain["request/ours"],
            plain["request/aiohttp"] if has else None,
            TARGETS["request"],
        ),
        ratio_line(
            "streamed chunk CPU, ours / aiohttp",
            plain["chunk/ours"],
            plain["chunk/aiohttp"] if has else None,
            TARGETS["streams/cpu"],
        ),
    ]
    tls = results["tls"]
    has = HAVE_AIOHTTP and "tls/chunk/aiohttp" in tls
    out += [
        "over TLS, 10 streams at a time (CPU, client process)",
        f"  ours:    {tls['tls/chunk/ours'] * 1e6:6.1f} us per chunk",
    ]
    if has:
        out.append(f"  aiohttp: {tls['tls/chunk/aiohttp'] * 1e6:6.1f} us per chunk")
    out.append(
        ratio_line(
            "TLS CPU per chunk, ours / aiohttp",
            tls["tls/chunk/ours"],
            tls["tls/chunk/aiohttp"] if has else None,
            TARGETS["tls/chunk"],
        )
    )
    opened = results["open"]
    seconds, mb = opened["open/seconds"], opened["open/mb"]
    out += [
        (
            f"open_client in a fresh process (mock provider, Config.unlimited(); median of "
            f"{size.opens})"
        ),
        (
            f"  {'open_client time:':48}{seconds:6.3f} s "
            f"{verdict(seconds, TARGETS['open/seconds'], ' s')}"
        ),
        f"  {'open_client RSS:':48}{mb:6.1f} MB {verdict(mb, TARGETS['open/mb'], ' MB')}",
    ]
    tuning = ", garbage collector tuned" if tuned else ""
    out += _many_lines(
        f"{size.many:,} concurrent streams (memory at the peak, 1 ms sleeper's lag){tuning}",
        results["many/ours"],
        results.get("many/aiohttp"),
        judged=True,
    )
    out += _many_lines(
        (
            f"the same {size.many:,} streams at 1 chunk a second ({size.paced} chunks: a rate "
            f"the process keeps up with){tuning}"
        ),
        results["paced/ours"],
        results.get("paced/aiohttp"),
        judged=False,
    )
    return "\n".join(out)


def _many_lines(
    title: str, ours: dict[str, float], theirs: dict[str, float] | None, *, judged: bool
) -> list[str]:
    """A many-streams run: memory, lag, wall and collector, ours (against the targets when
    ``judged``) and aiohttp's."""
    kib, lag = ours["kib"], ours["lag_ms"]
    lines = [
        title,
        f"  {'ours, memory per stream:':48}{kib:6.1f} KiB"
        + (f" {verdict(kib, TARGETS['many/kib'], ' KiB')}" if judged else ""),
        f"  {'ours, event-loop lag p99:':48}{lag:6.1f} ms"
        + (f" {verdict(lag, TARGETS['many/lag_ms'], ' ms')}" if judged else ""),
        f"  {'ours, wall:':48}{ours['wall']:6.2f} s",
        _gc_line("ours", ours),
    ]
    if theirs is not None:
        lines += [
            f"  {'aiohttp, memory per stream:':48}{theirs['kib']:6.1f} KiB",
            f"  {'aiohttp, event-loop lag p99:':48}{theirs['lag_ms']:6.1f} ms",
            f"  {'aiohttp, wall:':48}{theirs['wall']:6.2f} s",
            _gc_line("aiohttp", theirs),
        ]
    return lines


def _gc_line(who: str, figures: dict[str, float]) -> str:
    cpu = figures["cpu"] * figures["chunks"]
    share = figures["gc_s"] / cpu if cpu > 0 else 0.0
    return (
        f"  {who + ', garbage collector:':48}{figures['gc_s']:6.2f} s ({share:.0%} of CPU), "
        f"longest pause {figures['gc_max_ms']:.0f} ms"
    )


def raise_open_files(needed: int) -> None:
    """Room for ``needed`` sockets here and in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small size of everything")
    parser.add_argument("--many-child", choices=["ours", "aiohttp"], help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--gc-tuned",
        action="store_true",
        help="run the many-streams clients after gc.freeze() and a higher gc threshold",
    )
    args = parser.parse_args()
    gc_tuned: bool = args.gc_tuned
    if args.many_child:
        many_child(args.many_child, args.base, args.streams, gc_tuned=gc_tuned)
        return
    quick: bool = args.quick
    size = size_for(quick)
    raise_open_files(2 * size.many + 1000)
    results: dict[str, dict[str, float]] = {}
    results["open"] = open_client_phase(size.opens)
    stream_args = ("--chunks", str(size.chunks), "--chunk-chars", "4", "--interval", "0.05")
    with contextlib.ExitStack() as stack:
        certificates = Certificates(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        base = stack.enter_context(fake_server(*stream_args))
        plain = stack.enter_context(fake_server(*SERVER_ARGS))
        tls = stack.enter_context(fake_server(*SERVER_ARGS, "--tls-cert", certificates.server_file))
        results["streams/ours"] = trio.run(
            functools.partial(streams_trio, base, size.streams, probe=False)
        )
        if HAVE_AIOHTTP:
            results["streams/aiohttp"] = asyncio.run(
                streams_asyncio(base, size.streams, probe=False)
            )
        results["many/ours"] = many_phase(base, size.many, "ours", gc_tuned=gc_tuned)
        if HAVE_AIOHTTP:
            results["many/aiohttp"] = many_phase(base, size.many, "aiohttp", gc_tuned=gc_tuned)
        paced_args = ("--chunks", str(size.paced), "--chunk-chars", "4", "--interval", "1.0")
        with fake_server(*paced_args) as paced:
            results["paced/ours"] = many_phase(paced, size.many, "ours", gc_tuned=gc_tuned)
            if HAVE_AIOHTTP:
                results["paced/aiohttp"] = many_phase(
                    paced, size.many, "aiohttp", gc_tuned=gc_tuned
                )
        rounds: dict[str, float] = {}
        for _ in range(plain_sizes(quick).rounds):
            keep_best(rounds, trio.run(request_round, plain, quick))
            if HAVE_AIOHTTP:
                keep_best(rounds, asyncio.run(request_round_aiohttp(plain, quick)))
        results["plain"] = rounds
        rounds = {}
        for _ in range(plain_sizes(quick).rounds):
            keep_best(rounds, trio.run(tls_round, tls, certificates, quick))
            if HAVE_AIOHTTP:
                keep_best(rounds, asyncio.run(tls_round_aiohttp(tls, certificates, quick)))
        results["tls"] = rounds
    if not HAVE_AIOHTTP:
        print("aiohttp is not installed: the comparisons with it are skipped", file=sys.stderr)
    print(report(results, size, tuned=gc_tuned))


if __name__ == "__main__":
    main()
