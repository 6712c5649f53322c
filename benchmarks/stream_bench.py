"""CPU per request and per streamed chunk: our client against bare httpx, the vendor SDKs and
aiohttp, over plain HTTP, over TLS and through a proxy.

    python benchmarks/stream_bench.py [--quick] [--scaling-only] [--streams N ...]

The fake provider server (one plain instance, one over TLS) and the proxy run in processes of
their own, so only the client's CPU (``time.process_time`` of this process) is measured. Every
target is a ratio of two costs measured side by side in one run, never an absolute time: the
machine's speed and load cancel out. Each measurement is preceded by a short warm-up of the
same contender (its connections open, so no connection set-up or TLS handshake is counted),
each is taken in two rounds (one with ``--quick``), and the lower figure is kept (noise only
ever adds CPU). Every
contender divides its CPU by the same unit: the chunks of text it delivered (200 per stream;
the role and finish events are not counted), or the requests it completed.

The workload: streams of 200 chunks of 4 characters, one every 2 ms, so that each server-sent
event arrives in a network read of its own, 10 streams at a time; non-streamed requests 8 at
a time. Sections of the report:

* plain HTTP, per non-streamed request: bare httpx (post, read, ``json.loads``), our client
  (``invoke_sync(stream=False)``), openai-python and anthropic-python, each on its own format;
  per streamed chunk: bare httpx (``aiter_raw`` plus a minimal SSE split and ``json.loads``),
  our client (``invoke``), and the SDKs' streams;
* over TLS: the fake server with a certificate issued at run time by a ``trustme`` CA (its
  ``--tls-cert`` option). Our client trusts the CA through the provider setting ``verify:
  <CA PEM>``; bare httpx gets ``verify=ssl.create_default_context(cafile=<CA PEM>)``; aiohttp
  gets the same kind of context on its ``TCPConnector``. aiohttp (with the same minimal SSE
  split and a typed ``msgspec`` decode: the fastest Python client we know) runs on asyncio,
  so its rounds run in ``asyncio.run(...)`` in this same process, alternating with the trio
  rounds (``trio.run(...)``) of bare httpx and ours: never both loops at once, so
  ``process_time`` around a measurement counts that client alone. Same server process, same
  workload, same number of streams and chunks, same concurrency, a warm-up in each round. If
  aiohttp is not installed, the report says so and skips that comparison. The report also
  counts network reads per event for bare httpx and aiohttp: trio's TLS stream hands over one
  TLS record per read, while asyncio's drains every record already received, so when events
  queue up (a busy machine) aiohttp reads several in one go, less than one read per event;
* through a local proxy: ``benchmarks/_proxy.py``, a small forwarding proxy in its own process
  (its CPU is not the client's): absolute-form forwarding for ``http://`` and ``CONNECT``
  tunnels for ``https://``. Our client reaches it through the provider setting ``proxy``
  (the global ``proxy`` would do the same), bare httpx through ``AsyncClient(proxy=...)``;
  both are measured through the proxy and directly, side by side, against the plain server
  and (not with ``--quick``) the TLS one;
* concurrency scaling (not with ``--quick``): 1,000 concurrent streams of 40 chunks at 20 Hz
  (ideal wall 2 s) against 10 such streams, as CPU per chunk and wall time; ``--streams N``
  (repeatable) measures other counts instead of 1,000, and ``--scaling-only`` runs this phase
  alone. The largest count is also run by aiohttp (when installed, on asyncio after ours,
  the same streams), so the report gives our CPU per chunk and wall against it side by side;
* tracing: our client with OpenTelemetry on (the SDK's tracer provider, its spans handed to
  an exporter that discards them, and a meter provider with an in-memory reader) against the
  same client with it off, side by side on the plain server. Skipped, and said so, without
  ``opentelemetry-sdk``.

Targets: plain HTTP, per chunk at most 1.0x bare httpx and 0.35x openai-python, per request
at most 1.1x bare httpx and 0.6x openai-python; over TLS, per chunk at most 1.0x bare httpx
over TLS and 1.2x aiohttp over TLS; at 1,000 streams at most 2x the CPU per chunk of 10
streams, finishing within 3 s; with tracing on, per chunk at most 1.05x tracing off (spans
are per invocation and per attempt, never per chunk). The proxy figures are reported without
targets. A missed
target is printed as MISSED; the process still exits 0.

Environment proxy and CA variables are ignored by every client here (``trust_env`` off), so
the routes measured are exactly the ones named.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import msgspec
import trio
import trustme

import llm_invocation as llm

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

KEY = "sk-bench-0000000000000000000000"
PROMPT = [{"role": "user", "content": "Say something."}]
HAVE_AIOHTTP = importlib.util.find_spec("aiohttp") is not None
SERVER_ARGS = ("--chunks", "200", "--chunk-chars", "4", "--interval", "0.002")
EVENTS_PER_STREAM = 203  # the role, 200 chunks of text, the finish, [DONE]


@contextlib.contextmanager
def process_ready(command: list[str]) -> Generator[str]:
    """Run ``command`` (which prints ``READY <url>`` once it serves); yield the URL."""
    process = subprocess.Popen(  # noqa: S603 - our own modules, run with this interpreter
        command, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"{command[1]} did not start: {line!r}")
        yield line.removeprefix("READY ")
    finally:
        process.terminate()
        process.wait(10)


def fake_server(*args: str) -> contextlib.AbstractContextManager[str]:
    """Run the fake server in another process; yield its URL."""
    module = "llm_invocation.testing.fake_server"
    return process_ready([sys.executable, "-m", module, "--port", "0", *args])


def forwarding_proxy() -> contextlib.AbstractContextManager[str]:
    """Run ``_proxy.py`` in another process; yield its URL."""
    return process_ready([sys.executable, str(Path(__file__).with_name("_proxy.py"))])


class Certificates:
    """A CA made by trustme now, and a server certificate for 127.0.0.1, as PEM files."""

    def __init__(self, folder: Path) -> None:
        ca = trustme.CA()
        self.ca_file = str(folder / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self.server_file = str(folder / "server.pem")  # the chain and its key
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(self.server_file)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


# -- measuring ---------------------------------------------------------------------------------


class Contender(Protocol):
    async def request(self) -> int: ...
    async def stream(self) -> int: ...


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


async def run_concurrently_asyncio(
    total: int, concurrency: int, one: Callable[[], Awaitable[int]]
) -> int:
    """`run_concurrently` on asyncio."""
    counts: list[int] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            counts.append(await one())

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return sum(counts)


Runner = Callable[[int, int, Callable[[], Awaitable[int]]], Awaitable[int]]


async def measure(
    total: int,
    concurrency: int,
    one: Callable[[], Awaitable[int]],
    runner: Runner = run_concurrently,
) -> tuple[float, int, float]:
    """(CPU seconds, units, wall seconds) of running ``one`` ``total`` times."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    units = await runner(total, concurrency, one)
    return time.process_time() - cpu0, units, time.perf_counter() - wall0


def keep_best(results: dict[str, float], new: Mapping[str, float]) -> None:
    """Merge the costs of another round into ``results``: the lower is kept; counts (keys
    starting with ``count/``) add up."""
    for key, value in new.items():
        if key.startswith("count/"):
            results[key] = results.get(key, 0) + value
        else:
            results[key] = min(results.get(key, float("inf")), value)


class Sizes(msgspec.Struct, frozen=True):
    requests: int  # measured per contender and round
    streams: int  # measured per contender and round
    rounds: int


async def compare(
    contenders: Mapping[str, Contender],
    sizes: Sizes,
    *,
    prefix: str = "",
    rounds: int | None = None,
    runner: Runner = run_concurrently,
) -> dict[str, float]:
    """CPU per request and per chunk of each contender, best of ``rounds`` rounds (by
    default ``sizes.rounds``)."""
    results: dict[str, float] = {}
    for contender in contenders.values():  # code paths, caches, connections
        await runner(20, 10, contender.request)
        await runner(4, 4, contender.stream)
    for _ in range(sizes.rounds if rounds is None else rounds):
        for name, contender in contenders.items():
            await runner(10, 10, contender.request)  # connections open (none expired idle)
            cpu, units, _ = await measure(sizes.requests, 8, contender.request, runner)
            request = cpu / units
            cpu, units, _ = await measure(sizes.streams, 10, contender.stream, runner)
            keep_best(
                results, {f"{prefix}request/{name}": request, f"{prefix}chunk/{name}": cpu / units}
            )
    return results


# -- the contenders ----------------------------------------------------------------------------


def openai_body(*, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": "bench", "messages": PROMPT}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}


class Bare:
    """httpx with nothing on top: what our overhead is measured against."""

    def __init__(
        self, base: str, *, verify: ssl.SSLContext | None = None, proxy: str | None = None
    ) -> None:
        self.url = base + "/openai/v1/chat/completions"
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1100),
            timeout=60,
            trust_env=False,
            verify=verify if verify is not None else True,
            proxy=proxy,
        )
        self.reads = 0

    async def request(self) -> int:
        response = await self.client.post(
            self.url, content=openai_body(stream=False), headers=HEADERS
        )
        json.loads(response.content)
        return 1

    async def stream(self) -> int:
        chunks = 0
        buffer = b""
        async with self.client.stream(
            "POST", self.url, content=openai_body(stream=True), headers=HEADERS
        ) as response:
            async for data in response.aiter_raw():
                self.reads += 1
                buffer += data
                *complete, buffer = buffer.split(b"\n\n")
                for event in complete:
                    if event.startswith(b"data: ") and event != b"data: [DONE]":
                        choices = json.loads(event[6:])["choices"]
                        chunks += bool(choices and choices[0]["delta"].get("content"))
        return chunks


class Delta(msgspec.Struct):
    content: str | None = None


class Choice(msgspec.Struct):
    delta: Delta


class ChunkEvent(msgspec.Struct):
    choices: list[Choice]


CHUNK_DECODER = msgspec.json.Decoder(ChunkEvent)


class Aiohttp:
    """aiohttp on asyncio, a minimal SSE split and a typed msgspec decode."""

    def __init__(self, base: str, context: ssl.SSLContext, *, limit: int = 1100) -> None:
        import aiohttp  # optional: see HAVE_AIOHTTP

        self.url = base + "/openai/v1/chat/completions"
        self.session = aiohttp.ClientSession(  # made in the running asyncio loop
            connector=aiohttp.TCPConnector(limit=limit, ssl=context),
            timeout=aiohttp.ClientTimeout(total=60),
            trust_env=False,
        )
        self.reads = 0

    async def request(self) -> int:
        async with self.session.post(
            self.url, data=openai_body(stream=False), headers=HEADERS
        ) as response:
            msgspec.json.decode(await response.read())
        return 1

    async def stream(self) -> int:
        chunks = 0
        buffer = b""
        async with self.session.post(
            self.url, data=openai_body(stream=True), headers=HEADERS
        ) as response:
            async for data in response.content.iter_any():
                self.reads += 1
                buffer += data
                *complete, buffer = buffer.split(b"\n\n")
                for event in complete:
                    if event.startswith(b"data: ") and event != b"data: [DONE]":
                        choices = CHUNK_DECODER.decode(event[6:]).choices
                        chunks += bool(choices and choices[0].delta.content)
        return chunks


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
        import httpx2  # this SDK builds on pydantic's fork of httpx
        import openai

        self.client = openai.AsyncOpenAI(
            api_key=KEY,
            base_url=base + "/openai/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(
                limits=httpx2.Limits(max_connections=1100), trust_env=False
            ),
        )
        self.messages: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "Say something."}
        ]

    async def request(self) -> int:
        await self.client.chat.completions.create(model="bench", messages=self.messages)
        return 1

    async def stream(self) -> int:
        chunks = 0
        stream = await self.client.chat.completions.create(
            model="bench", messages=self.messages, stream=True
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
            http_client=httpx2.AsyncClient(
                limits=httpx2.Limits(max_connections=1100), trust_env=False
            ),
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


def client_config(
    providers: Mapping[str, Mapping[str, Any]], *, max_connections: int = 1100
) -> llm.Config:
    """Our client's configuration: ``providers`` (name -> settings), the first the default.

    No rate limits, cap or budget: the benchmark measures the overhead of a call, not how
    long the first specification's 60 requests a minute make it wait.
    """
    return llm.Config.unlimited(
        provider=next(iter(providers)),
        timeout=120,
        trust_env=False,
        # The fake model has no public price: give it one so costs are computed.
        cost_control={"prices": {"bench": {"input_per_mtok": 1, "output_per_mtok": 2}}},
        providers={
            name: {"api_key": KEY, "max_connections": max_connections, **settings}
            for name, settings in providers.items()
        },
    )


# -- phases ------------------------------------------------------------------------------------

HAVE_OTEL_SDK = importlib.util.find_spec("opentelemetry.sdk") is not None


def tracing_providers() -> tuple[Any, Any]:
    """An SDK tracer provider whose spans go to an exporter that discards them, and an SDK
    meter provider with an in-memory reader: the whole cost of recording, nothing of I/O."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            del spans
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return tracer_provider, meter_provider


def sizes_for(quick: bool) -> Sizes:
    if quick:
        return Sizes(requests=300, streams=10, rounds=1)
    return Sizes(requests=1500, streams=40, rounds=2)


async def plain_phase(base: str, quick: bool) -> dict[str, float]:
    bare = Bare(base)
    providers = {
        "openai": {"base_url": base + "/openai/v1"},
        "anthropic": {"base_url": base + "/anthropic/v1"},
    }
    async with llm.open_client(client_config(providers)) as client, bare.client:
        contenders: dict[str, Contender] = {
            "bare httpx": bare,
            "ours (openai format)": Ours(client, "openai"),
            "openai-python": OpenAISDK(base),
            "ours (anthropic format)": Ours(client, "anthropic"),
            "anthropic-python": AnthropicSDK(base),
        }
        results = await compare(contenders, sizes_for(quick))
    sizes = sizes_for(quick)
    streams = 4 + sizes.rounds * sizes.streams  # warm-up and measured
    results["reads per event (bare)"] = bare.reads / (streams * EVENTS_PER_STREAM)
    return results


async def tracing_phase(base: str, quick: bool) -> dict[str, float]:
    """Our client with tracing and metrics on against the same client with them off."""
    providers = {"openai": {"base_url": base + "/openai/v1"}}
    tracer_provider, meter_provider = tracing_providers()
    try:
        async with (
            llm.open_client(client_config(providers)) as off,
            llm.open_client(
                client_config(providers),
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            ) as on,
        ):
            contenders: dict[str, Contender] = {
                "tracing off": Ours(off, "openai"),
                "tracing on": Ours(on, "openai"),
            }
            # A difference of a few percent: more rounds than elsewhere, the best of each kept.
            sizes = sizes_for(quick)
            return await compare(contenders, sizes, prefix="otel/", rounds=sizes.rounds + 2)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


async def tls_round_trio(base: str, certificates: Certificates, quick: bool) -> dict[str, float]:
    bare = Bare(base, verify=certificates.client_context())
    providers = {"openai": {"base_url": base + "/openai/v1", "verify": certificates.ca_file}}
    async with llm.open_client(client_config(providers)) as client, bare.client:
        contenders: dict[str, Contender] = {"bare httpx": bare, "ours": Ours(client, "openai")}
        results = await compare(contenders, sizes_for(quick), prefix="tls/", rounds=1)
    return results | read_counts("bare httpx", bare.reads, quick)


async def tls_round_aiohttp(base: str, certificates: Certificates, quick: bool) -> dict[str, float]:
    aiohttp = Aiohttp(base, certificates.client_context())
    async with aiohttp.session:
        results = await compare(
            {"aiohttp": aiohttp},
            sizes_for(quick),
            prefix="tls/",
            rounds=1,
            runner=run_concurrently_asyncio,
        )
    return results | read_counts("aiohttp", aiohttp.reads, quick)


def read_counts(name: str, reads: int, quick: bool) -> dict[str, float]:
    """The network reads of one round's streams over TLS, and the events they carried."""
    events = (4 + sizes_for(quick).streams) * EVENTS_PER_STREAM  # warm-up and measured
    return {f"count/tls/reads/{name}": reads, f"count/tls/events/{name}": events}


def tls_phase(base: str, certificates: Certificates, quick: bool) -> dict[str, float]:
    """Rounds of trio (bare httpx, ours) and asyncio (aiohttp), alternating, best kept."""
    results: dict[str, float] = {}
    for _ in range(sizes_for(quick).rounds):
        keep_best(results, trio.run(tls_round_trio, base, certificates, quick))
        if HAVE_AIOHTTP:
            keep_best(results, asyncio.run(tls_round_aiohttp(base, certificates, quick)))
    return results


async def proxy_phase(
    plain: str, tls: str, certificates: Certificates, proxy: str, quick: bool
) -> dict[str, float]:
    routes = {"http": plain} if quick else {"http": plain, "https": tls}
    contenders: dict[str, Contender] = {}
    providers: dict[str, dict[str, Any]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for scheme, base in routes.items():
            settings = {"kind": "openai", "base_url": base + "/openai/v1"}
            context: ssl.SSLContext | None = None
            if scheme == "https":
                settings["verify"] = certificates.ca_file
                context = certificates.client_context()
            providers[f"{scheme}-direct"] = settings
            providers[f"{scheme}-proxied"] = {**settings, "proxy": proxy}
            for route, via in (("direct", None), ("via proxy", proxy)):
                bare = Bare(base, verify=context, proxy=via)
                await stack.enter_async_context(bare.client)
                contenders[f"{scheme}/bare httpx, {route}"] = bare
        client = await stack.enter_async_context(llm.open_client(client_config(providers)))
        for scheme in routes:
            contenders[f"{scheme}/ours, direct"] = Ours(client, f"{scheme}-direct")
            contenders[f"{scheme}/ours, via proxy"] = Ours(client, f"{scheme}-proxied")
        return await compare(contenders, sizes_for(quick), prefix="proxy/")


async def scaling(base: str, counts: list[int]) -> dict[str, float]:
    results: dict[str, float] = {}
    providers = {"openai": {"base_url": base + "/openai/v1"}}
    config = client_config(providers, max_connections=max(1100, *counts) + 100)
    async with llm.open_client(config) as client:
        ours = Ours(client, "openai")
        await run_concurrently(10, 10, ours.stream)
        for streams in (10, *counts):
            cpu, chunks, wall = await measure(streams, streams, ours.stream)
            results[f"scale/{streams}/cpu_per_chunk"] = cpu / chunks
            results[f"scale/{streams}/wall"] = wall
    return results


async def scaling_aiohttp(base: str, streams: int) -> dict[str, float]:
    """aiohttp running ``streams`` streams at once (after a warm-up of 10)."""
    aiohttp = Aiohttp(base, ssl.create_default_context(), limit=streams + 100)
    async with aiohttp.session:
        await run_concurrently_asyncio(10, 10, aiohttp.stream)
        cpu, chunks, wall = await measure(
            streams, streams, aiohttp.stream, run_concurrently_asyncio
        )
    return {f"scale/aiohttp/{streams}/cpu_per_chunk": cpu / chunks, "scale/aiohttp/wall": wall}


# -- the report --------------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    return f"{value:.2f}x (target <= {target}x: {'met' if value <= target else 'MISSED'})"


def ratio_line(label: str, value: float, target: float | None = None) -> str:
    shown = f"{value:.2f}x" if target is None else verdict(value, target)
    return f"  {label + ':':42}{shown}"


def report_plain(results: dict[str, float]) -> list[str]:
    names = (
        "bare httpx",
        "ours (openai format)",
        "openai-python",
        "ours (anthropic format)",
        "anthropic-python",
    )
    bare_request = results["request/bare httpx"]
    bare_chunk = results["chunk/bare httpx"]
    out = ["per non-streamed request (CPU, client process, plain HTTP)"]
    for name in names:
        value = results[f"request/{name}"]
        out.append(f"  {name:26}{value * 1e6:9.0f} us  {value / bare_request:5.2f}x bare")
    out.append("per streamed chunk (CPU, one event per network read, plain HTTP)")
    for name in names:
        value = results[f"chunk/{name}"]
        out.append(f"  {name:26}{value * 1e6:9.1f} us  {value / bare_chunk:5.2f}x bare")

    def ratio(ours: str, other: str, unit: str) -> float:
        return results[f"{unit}/{ours}"] / results[f"{unit}/{other}"]

    openai, anthropic = "ours (openai format)", "ours (anthropic format)"
    out += [
        "ratios (plain HTTP)",
        ratio_line("ours / bare httpx, per chunk", ratio(openai, "bare httpx", "chunk"), 1.0),
        ratio_line("ours / bare httpx, per request", ratio(openai, "bare httpx", "request"), 1.1),
        ratio_line(
            "ours / openai-python, per chunk", ratio(openai, "openai-python", "chunk"), 0.35
        ),
        ratio_line(
            "ours / openai-python, per request", ratio(openai, "openai-python", "request"), 0.6
        ),
        ratio_line(
            "ours / anthropic-python, per chunk", ratio(anthropic, "anthropic-python", "chunk")
        ),
        ratio_line(
            "ours / anthropic-python, per request",
            ratio(anthropic, "anthropic-python", "request"),
        ),
        f"  {'network reads per event (bare):':42}{results['reads per event (bare)']:.2f}",
    ]
    return out


def report_tls(results: dict[str, float]) -> list[str]:
    out = ["over TLS (CA made by trustme at run time; CPU, client process)"]
    out.append(f"  {'':26}{'per request':>12}{'per chunk':>12}{'network reads per event':>26}")
    names = ["bare httpx", "ours"] + (["aiohttp"] if HAVE_AIOHTTP else [])
    for name in names:
        request, chunk = results[f"tls/request/{name}"], results[f"tls/chunk/{name}"]
        line = f"  {name:26}{request * 1e6:9.0f} us{chunk * 1e6:9.1f} us"
        if f"count/tls/reads/{name}" in results:
            reads = results[f"count/tls/reads/{name}"] / results[f"count/tls/events/{name}"]
            line += f"{reads:26.2f}"
        out.append(line)
    ours_chunk, ours_request = results["tls/chunk/ours"], results["tls/request/ours"]
    bare_chunk, bare_request = results["tls/chunk/bare httpx"], results["tls/request/bare httpx"]
    out += [
        ratio_line("ours / bare httpx over TLS, per chunk", ours_chunk / bare_chunk, 1.0),
        ratio_line("ours / bare httpx over TLS, per request", ours_request / bare_request),
    ]
    if HAVE_AIOHTTP:
        aiohttp_chunk, aiohttp_request = (
            results["tls/chunk/aiohttp"],
            results["tls/request/aiohttp"],
        )
        out += [
            ratio_line("ours / aiohttp over TLS, per chunk", ours_chunk / aiohttp_chunk, 1.2),
            ratio_line("ours / aiohttp over TLS, per request", ours_request / aiohttp_request),
        ]
    else:
        skipped = "skipped (aiohttp is not installed)"
        out.append(f"  {'ours / aiohttp over TLS, per chunk:':42}{skipped}")
    return out


def report_proxy(results: dict[str, float]) -> list[str]:
    out = ["through a local proxy (its own process; CPU, client process)"]
    routes = {"http": "http:// (absolute-form forwarding)", "https": "https:// (CONNECT tunnel)"}
    names = ("bare httpx, direct", "bare httpx, via proxy", "ours, direct", "ours, via proxy")
    for scheme, title in routes.items():
        if f"proxy/chunk/{scheme}/ours, direct" not in results:
            continue
        request = {name: results[f"proxy/request/{scheme}/{name}"] for name in names}
        chunk = {name: results[f"proxy/chunk/{scheme}/{name}"] for name in names}
        out.append(f"  {title:38}{'per request':>12}{'per chunk':>12}")
        for name in names:
            out.append(f"    {name:36}{request[name] * 1e6:9.0f} us{chunk[name] * 1e6:9.1f} us")
        for label, over, under in (
            ("ours via proxy / ours direct", "ours, via proxy", "ours, direct"),
            ("bare via proxy / bare direct", "bare httpx, via proxy", "bare httpx, direct"),
            ("ours / bare httpx, both via proxy", "ours, via proxy", "bare httpx, via proxy"),
        ):
            out.append(
                f"    {label + ':':36}{request[over] / request[under]:10.2f}x"
                f"{chunk[over] / chunk[under]:11.2f}x"
            )
    return out


def report_scaling(results: dict[str, float], counts: list[int]) -> list[str]:
    small = results["scale/10/cpu_per_chunk"]
    out = [
        "concurrency scaling: streams of 40 chunks at 20 Hz (ideal wall 2 s)",
        f"  10 streams:    {small * 1e6:6.1f} us/chunk, wall {results['scale/10/wall']:.2f} s",
    ]
    for streams in counts:
        large = results[f"scale/{streams}/cpu_per_chunk"]
        wall = results[f"scale/{streams}/wall"]
        out.append(f"  {streams:,} streams: {large * 1e6:6.1f} us/chunk, wall {wall:.2f} s")
        if streams == 1000:
            met = "met" if wall <= 3 else "MISSED"
            out += [
                f"  CPU per chunk, 1,000 / 10: {verdict(large / small, 2.0)}",
                f"  wall at 1,000 streams: {wall:.2f} s (target <= 3 s: {met})",
            ]
        else:
            out.append(f"  CPU per chunk, {streams:,} / 10: {large / small:.2f}x")
    largest = max(counts)
    if f"scale/aiohttp/{largest}/cpu_per_chunk" in results:
        theirs = results[f"scale/aiohttp/{largest}/cpu_per_chunk"]
        wall = results["scale/aiohttp/wall"]
        ours = results[f"scale/{largest}/cpu_per_chunk"]
        walls = results[f"scale/{largest}/wall"] / wall
        versus = f"{ours / theirs:.2f}x CPU per chunk, {walls:.2f}x wall"
        out += [
            f"  aiohttp, {largest:,} streams: {theirs * 1e6:6.1f} us/chunk, wall {wall:.2f} s",
            f"  ours / aiohttp at {largest:,} streams: {versus}",
        ]
    return out


def report_tracing(results: dict[str, float]) -> list[str]:
    out = ["tracing (OpenTelemetry SDK, spans discarded; CPU, client process, plain HTTP)"]
    if "otel/chunk/tracing on" not in results:
        skipped = "skipped: opentelemetry-sdk is not installed"
        return [*out, f"  {'tracing on / off, per chunk:':42}{skipped}"]
    for name in ("tracing off", "tracing on"):
        request, chunk = results[f"otel/request/{name}"], results[f"otel/chunk/{name}"]
        out.append(f"  {name:26}{request * 1e6:9.0f} us/request {chunk * 1e6:9.1f} us/chunk")
    on, off = "otel/{}/tracing on", "otel/{}/tracing off"
    out += [
        ratio_line(
            "tracing on / off, per chunk",
            results[on.format("chunk")] / results[off.format("chunk")],
            1.05,
        ),
        ratio_line(
            "tracing on / off, per request",
            results[on.format("request")] / results[off.format("request")],
        ),
    ]
    return out


def report(results: dict[str, float], counts: list[int]) -> str:
    out: list[str] = []
    if "chunk/bare httpx" in results:
        out += (
            report_plain(results)
            + report_tls(results)
            + report_proxy(results)
            + report_tracing(results)
        )
    if "scale/10/wall" in results:
        out += report_scaling(results, counts)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, no scaling run")
    parser.add_argument(
        "--scaling-only", action="store_true", help="run the concurrency scaling phase alone"
    )
    parser.add_argument(
        "--streams",
        type=int,
        action="append",
        metavar="N",
        help="concurrent streams of the scaling phase (repeatable; default 1000)",
    )
    args = parser.parse_args()
    quick: bool = args.quick
    counts: list[int] = args.streams or [1000]
    results: dict[str, float] = {}
    if not args.scaling_only:
        results = other_phases(quick)
    if not quick or args.scaling_only:
        with fake_server("--chunks", "40", "--chunk-chars", "4", "--interval", "0.05") as base:
            results.update(trio.run(scaling, base, counts))
            if HAVE_AIOHTTP:
                results.update(asyncio.run(scaling_aiohttp(base, max(counts))))
    if not HAVE_AIOHTTP:
        print("aiohttp is not installed: the comparison with it is skipped", file=sys.stderr)
    print(report(results, counts))


def other_phases(quick: bool) -> dict[str, float]:
    """Every phase but the concurrency scaling."""
    with contextlib.ExitStack() as stack:
        certificates = Certificates(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        plain = stack.enter_context(fake_server(*SERVER_ARGS))
        tls = stack.enter_context(fake_server(*SERVER_ARGS, "--tls-cert", certificates.server_file))
        proxy = stack.enter_context(forwarding_proxy())
        results = trio.run(plain_phase, plain, quick)
        results.update(tls_phase(tls, certificates, quick))
        results.update(trio.run(proxy_phase, plain, tls, certificates, proxy, quick))
        if HAVE_OTEL_SDK:
            results.update(trio.run(tracing_phase, plain, quick))
    return results


if __name__ == "__main__":
    main()
