"""CPU per request and per streamed chunk: bare httpx, our client, and the vendor SDKs.

    python benchmarks/stream_bench.py [--quick]

The fake provider server runs in its own process, so only the client's CPU
(``time.process_time``) is measured here. In one run, side by side:

* per non-streamed request: bare httpx (post, read, ``json.loads``), our client
  (``invoke_sync(stream=False)``), openai-python and anthropic-python, each on its own format;
* per streamed chunk, with one event per network read (the server paces the events): bare
  httpx (``aiter_raw`` plus a minimal SSE split), our client (``invoke``), and the SDKs'
  streams;
* concurrency scaling: 1,000 concurrent streams of 40 chunks at 20 Hz (ideal wall 2 s)
  against 10 such streams, as CPU per chunk and wall time.

Targets: per chunk at most 1.3x bare httpx and 0.35x openai-python; per request at most
1.25x bare httpx and 0.6x openai-python; at 1,000 streams at most 2x the CPU per chunk of 10
streams, finishing within 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import trio

import llm_invocation as llm

KEY = "sk-bench-0000000000000000000000"
PROMPT = [{"role": "user", "content": "Say something."}]


@contextlib.contextmanager
def fake_server(*args: str) -> Iterator[str]:
    """Run the fake server in another process; yield its URL."""
    process = subprocess.Popen(  # noqa: S603 - our own module, run with this interpreter
        [sys.executable, "-m", "llm_invocation.testing.fake_server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.removeprefix("READY ")
    finally:
        process.terminate()
        process.wait(10)


async def run_concurrently(total: int, concurrency: int, one: Callable[[], Awaitable[int]]) -> int:
    """Run ``one`` ``total`` times, ``concurrency`` at a time; return the sum of its results."""
    counts: list[int] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            counts.append(await one())

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return sum(counts)


async def measure(
    total: int, concurrency: int, one: Callable[[], Awaitable[int]]
) -> tuple[float, int, float]:
    """(CPU seconds, units, wall seconds) of running ``one`` ``total`` times."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    units = await run_concurrently(total, concurrency, one)
    return time.process_time() - cpu0, units, time.perf_counter() - wall0


# -- the contenders ----------------------------------------------------------------------------


def openai_body(*, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": "bench", "messages": PROMPT}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


class Bare:
    """httpx with nothing on top: what our overhead is measured against."""

    def __init__(self, base: str) -> None:
        self.url = base + "/openai/v1/chat/completions"
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1100), timeout=60)
        self.headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        self.reads = 0

    async def request(self) -> int:
        response = await self.client.post(
            self.url, content=openai_body(stream=False), headers=self.headers
        )
        json.loads(response.content)
        return 1

    async def stream(self) -> int:
        events = 0
        buffer = b""
        async with self.client.stream(
            "POST", self.url, content=openai_body(stream=True), headers=self.headers
        ) as response:
            async for data in response.aiter_raw():
                self.reads += 1
                buffer += data
                *complete, buffer = buffer.split(b"\n\n")
                for event in complete:
                    if event.startswith(b"data: ") and event != b"data: [DONE]":
                        json.loads(event[6:])
                        events += 1
        return events


class Ours:
    def __init__(self, client: llm.Client, provider: str) -> None:
        self.client = client
        self.request_ = llm.Request(
            model=f"{provider}:bench", messages=[llm.user("Say something.")], stream=False
        )
        self.stream_request = llm.Request(
            model=f"{provider}:bench", messages=[llm.user("Say something.")]
        )

    async def request(self) -> int:
        await self.client.invoke_sync(self.request_)
        return 1

    async def stream(self) -> int:
        chunks = 0
        async with self.client.invoke(self.stream_request) as stream:
            async for chunk in stream:
                chunks += bool(chunk.text)
        return chunks


class OpenAISDK:
    def __init__(self, base: str) -> None:
        import openai

        self.client = openai.AsyncOpenAI(
            api_key=KEY,
            base_url=base + "/openai/v1",
            max_retries=0,
            http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=1100)),
        )

    async def request(self) -> int:
        await self.client.chat.completions.create(model="bench", messages=PROMPT)  # type: ignore[arg-type]
        return 1

    async def stream(self) -> int:
        chunks = 0
        stream = await self.client.chat.completions.create(
            model="bench",
            messages=PROMPT,  # type: ignore[arg-type]
            stream=True,
        )
        async for chunk in stream:
            chunks += bool(chunk.choices and chunk.choices[0].delta.content)
        return chunks


class AnthropicSDK:
    def __init__(self, base: str) -> None:
        import anthropic
        import httpx2  # this SDK builds on pydantic's fork of httpx

        self.client = anthropic.AsyncAnthropic(
            api_key=KEY,
            base_url=base + "/anthropic",
            max_retries=0,
            http_client=httpx2.AsyncClient(limits=httpx2.Limits(max_connections=1100)),
        )

    async def request(self) -> int:
        await self.client.messages.create(
            model="bench",
            max_tokens=256,
            messages=PROMPT,  # type: ignore[arg-type]
        )
        return 1

    async def stream(self) -> int:
        chunks = 0
        async with self.client.messages.stream(
            model="bench",
            max_tokens=256,
            messages=PROMPT,  # type: ignore[arg-type]
        ) as stream:
            async for event in stream:
                chunks += event.type == "content_block_delta"
        return chunks


def client_config(base: str) -> llm.Config:
    return llm.Config.from_dict(
        {
            "provider": "openai",
            "timeout": 120,
            # The fake model has no public price: give it one so costs are computed.
            "cost_control": {"prices": {"bench": {"input_per_mtok": 1, "output_per_mtok": 2}}},
            "providers": {
                "openai": {
                    "api_key": KEY,
                    "base_url": base + "/openai/v1",
                    "max_connections": 1100,
                },
                "anthropic": {
                    "api_key": KEY,
                    "base_url": base + "/anthropic/v1",
                    "max_connections": 1100,
                },
            },
        }
    )


# -- phases ------------------------------------------------------------------------------------


async def per_request_and_chunk(base: str, quick: bool) -> dict[str, float]:
    requests = 300 if quick else 1500
    streams = 10 if quick else 40
    results: dict[str, float] = {}
    bare = Bare(base)
    async with llm.open_client(client_config(base)) as client:
        contenders: dict[str, Any] = {
            "bare httpx": bare,
            "ours (openai format)": Ours(client, "openai"),
            "openai-python": OpenAISDK(base),
            "ours (anthropic format)": Ours(client, "anthropic"),
            "anthropic-python": AnthropicSDK(base),
        }
        for contender in contenders.values():  # warm up connections and code paths
            await run_concurrently(20, 10, contender.request)
            await run_concurrently(4, 4, contender.stream)
        for _ in range(2):  # two rounds, keep the best: noise only ever adds CPU
            for name, contender in contenders.items():
                cpu, units, _ = await measure(requests, 8, contender.request)
                key = f"request/{name}"
                results[key] = min(results.get(key, float("inf")), cpu / units)
                cpu, units, _ = await measure(streams, 10, contender.stream)
                key = f"chunk/{name}"
                results[key] = min(results.get(key, float("inf")), cpu / units)
        results["reads per event (bare)"] = bare.reads / max(1, (streams * 2 + 4) * 200)
    return results


async def scaling(base: str) -> dict[str, float]:
    results: dict[str, float] = {}
    async with llm.open_client(client_config(base)) as client:
        ours = Ours(client, "openai")
        await run_concurrently(10, 10, ours.stream)
        for streams in (10, 1000):
            cpu, chunks, wall = await measure(streams, streams, ours.stream)
            results[f"scale/{streams}/cpu_per_chunk"] = cpu / chunks
            results[f"scale/{streams}/wall"] = wall
    return results


def report(results: dict[str, float]) -> str:
    out = ["per non-streamed request (CPU, client process)"]
    bare_request = results["request/bare httpx"]
    bare_chunk = results["chunk/bare httpx"]
    openai_request = results["request/openai-python"]
    openai_chunk = results["chunk/openai-python"]
    for name in (
        "bare httpx",
        "ours (openai format)",
        "openai-python",
        "ours (anthropic format)",
        "anthropic-python",
    ):
        value = results[f"request/{name}"]
        out.append(f"  {name:26}{value * 1e6:9.0f} us  {value / bare_request:5.2f}x bare")
    out.append("per streamed chunk (CPU, one event per network read)")
    for name in (
        "bare httpx",
        "ours (openai format)",
        "openai-python",
        "ours (anthropic format)",
        "anthropic-python",
    ):
        value = results[f"chunk/{name}"]
        out.append(f"  {name:26}{value * 1e6:9.1f} us  {value / bare_chunk:5.2f}x bare")
    ours_request = results["request/ours (openai format)"]
    ours_chunk = results["chunk/ours (openai format)"]
    ant_request = results["request/ours (anthropic format)"]
    ant_chunk = results["chunk/ours (anthropic format)"]

    def verdict(value: float, target: float) -> str:
        return f"{value:.2f}x (target <= {target}x: {'met' if value <= target else 'MISSED'})"

    out += [
        "ratios",
        f"  ours / bare httpx, per chunk:       {verdict(ours_chunk / bare_chunk, 1.3)}",
        f"  ours / bare httpx, per request:     {verdict(ours_request / bare_request, 1.25)}",
        f"  ours / openai-python, per chunk:    {verdict(ours_chunk / openai_chunk, 0.35)}",
        f"  ours / openai-python, per request:  {verdict(ours_request / openai_request, 0.6)}",
        (
            "  ours / anthropic-python, per chunk: "
            f"{ant_chunk / results['chunk/anthropic-python']:.2f}x"
        ),
        (
            "  ours / anthropic-python, per request: "
            f"{ant_request / results['request/anthropic-python']:.2f}x"
        ),
        f"  network reads per event (bare):    {results['reads per event (bare)']:.2f}",
    ]
    if "scale/10/wall" in results:
        small = results["scale/10/cpu_per_chunk"]
        large = results["scale/1000/cpu_per_chunk"]
        wall = results["scale/1000/wall"]
        out += [
            "concurrency scaling: streams of 40 chunks at 20 Hz (ideal wall 2 s)",
            f"  10 streams:    {small * 1e6:6.1f} us/chunk, wall {results['scale/10/wall']:.2f} s",
            f"  1,000 streams: {large * 1e6:6.1f} us/chunk, wall {wall:.2f} s",
            f"  CPU per chunk, 1,000 / 10: {verdict(large / small, 2.0)}",
            (
                f"  wall at 1,000 streams: {wall:.2f} s "
                f"(target <= 3 s: {'met' if wall <= 3 else 'MISSED'})"
            ),
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, no scaling run")
    args = parser.parse_args()
    with fake_server("--chunks", "200", "--chunk-chars", "4", "--interval", "0.002") as base:
        results = trio.run(per_request_and_chunk, base, args.quick)
    if not args.quick:
        with fake_server("--chunks", "40", "--chunk-chars", "4", "--interval", "0.05") as base:
            results.update(trio.run(scaling, base))
    print(report(results))


if __name__ == "__main__":
    main()
