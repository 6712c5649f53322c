"""Containment: nothing one provider answer holds can crash its session or touch another call.

Real recorded answers (the conformance corpus named by ``LLM_CONFORMANCE_DIR``, read at test
time and never copied here) are mutated by Hypothesis: flipped bits, cuts at any offset,
repeated or missing lines, numbers out of range, values of the wrong JSON type, invalid UTF-8,
broken SSE framing, giant and deeply nested fields, and random values in the rate-limit and
retry headers. Each mutated answer goes to one invocation through the public client while
other streams run on the same provider session, held open until the mutated call is over.

Per example: the mutated call succeeds or raises an `LLMError` (nothing else, no hang); every
other stream ends with exactly its text; no actor crashed or restarted; the session's counters
add up (one attempt per HTTP request, a failure or a success for each, every malformed answer
counted and logged once). The same mutations fed to the codecs alone must come out as typed
errors or as values in range (counts, resets, delays, usage), never as an exception.

Then regressions (answers that once crashed an actor or blocked a model) and codecs given a
bug on purpose: the session contains whatever a codec raises, and retries only before content.

The OpenAI Responses API has no codec yet: its recordings are left out.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.actors.provider_session import SessionStatistics
from llm_invocation.errors import error_from_info
from llm_invocation.invocation._invoker import SESSION_PREFIX
from llm_invocation.providers._base import (
    MAX_COUNT,
    MAX_RESET,
    ProviderCodec,
    RateLimitInfo,
    StreamDecoder,
    checked_usage,
    datetime_from_unix,
)
from llm_invocation.providers._registry import make_codec
from llm_invocation.runtime import ActorStatistics, RuntimeStatistics
from llm_invocation.testing import GeminiRenderer, Renderer, Scenario, renderer_for

from .conftest import load_index

KEY = "sk-test-KEY-0123456789abcdef"
OTHERS = 3
"""Streams running beside the mutated call in every example."""
IN_FLIGHT = 10
"""Streams running beside the mutated call in the regression tests."""
EXAMPLE_LIMIT = 10.0
"""Seconds one example may take: far more than it needs, far less than any timeout it sets."""

# -- the providers under test ---------------------------------------------------------------------

PROVIDERS: Final[dict[str, dict[str, Any]]] = {
    "openai": {"api_key": KEY},
    "groq": {"api_key": KEY},
    "openrouter": {"api_key": KEY},
    "together": {"api_key": KEY},
    "ollama": {},
    "deepseek": {"api_key": KEY},
    "anthropic": {"api_key": KEY},
    "gemini": {"api_key": KEY},
    "gemini-array": {"kind": "gemini", "api_key": KEY, "options": {"stream_format": "json-array"}},
}
MODELS: Final = {"anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
# The compatible presets a recording belongs to, by its file name's prefix.
FILE_PRESETS: Final = ("groq", "openrouter", "together", "ollama", "deepseek")
# Recorded exchanges the codecs do not take part in an invocation of: the Responses API (no
# codec yet), the model lists and the token counts.
SKIPPED_APIS: Final = ("responses", "models.list", "count_tokens", "countTokens")


def model_of(provider: str) -> str:
    return MODELS.get(provider.removesuffix("-array"), "gpt-4o-mini")


def renderer_of(provider: str) -> Renderer:
    """The wire format the other streams are rendered in (the test kit's oracle)."""
    if provider == "gemini-array":
        return GeminiRenderer(sse=False)
    if provider in ("anthropic", "gemini"):
        return renderer_for(provider)
    return renderer_for("openai")


def config_for(provider: str) -> llm.Config:
    # Not about limits or costs (the scripted models have no price): nothing is limited.
    return llm.Config.unlimited(
        provider=provider,
        timeout=60,
        retries={
            "max_attempts": 2,
            "initial_delay": 0.001,
            "max_delay": 0.01,
            "jitter": False,
            "max_retry_after": 0.05,
        },
        rate_limits={"max_wait": 1},
        providers={provider: PROVIDERS[provider]},
    )


# -- the corpus -----------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Recording:
    """One recorded answer, as it arrives on the wire."""

    name: str
    provider: str
    body: bytes
    status: int
    headers: dict[str, str]
    streamed: bool | None
    """Whether it answers a streamed request (None: an error body, which answers either)."""

    def __repr__(self) -> str:
        return f"<recording {self.name}>"


def _provider(folder: str, file: str, api: str) -> str:
    if folder == "anthropic":
        return "anthropic"
    if folder == "gemini":
        return "gemini-array" if "no alt=sse" in api else "gemini"
    if folder == "openai-compatible":
        for preset in FILE_PRESETS:
            if file.startswith(preset + "-"):
                return preset
    return "openai"


def _body(path: Path, provider: str) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        end = b"\r\n\r\n" if provider.startswith("gemini") else b"\n\n"
        return b"".join(b"data: " + line + end for line in data.splitlines() if line)
    if path.name.endswith(".data.json"):  # an in-stream event quoted without its framing
        return b"event: error\ndata: " + data.strip() + b"\n\n"
    return data


def load_recordings(root: Path, folders: tuple[str, ...]) -> list[Recording]:
    out: list[Recording] = []
    for folder in folders:
        for entry in load_index(root / folder):
            api: str = entry["api"]
            if api.startswith(SKIPPED_APIS):
                continue
            file: str = entry["file"]
            provider = _provider(folder, file, api)
            response: dict[str, Any] = entry.get("response") or {}
            status: int = response.get("status") or entry.get("implied_status") or 200
            headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
            path = root / folder / file
            framed = path.suffix in (".sse", ".jsonl") or path.name.endswith(".data.json")
            streamed = True if framed or "no alt=sse" in api else None if status >= 300 else False
            if not headers:
                headers = {"content-type": "text/event-stream" if framed else "application/json"}
            out.append(
                Recording(
                    f"{folder}/{file}", provider, _body(path, provider), status, headers, streamed
                )
            )
    assert out, f"no recordings found in {folders}"
    return out


# -- mutations ------------------------------------------------------------------------------------

OUT_OF_RANGE: Final = (
    b"1e300",
    b"-1e999",
    b"1e999",
    str(10**40).encode(),
    b"NaN",
    b"-1",
    b"Infinity",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e-400",
    b"0.5",
)
WRONG_TYPES: Final[tuple[Any, ...]] = (
    None,
    "a string",
    "7",
    1e300,
    -1,
    10**40,
    [],
    {},
    True,
    [1, "two", None],
    {"unexpected": {"nested": [1]}},
)
BAD_UTF8: Final = (b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xfe\xff")
FRAMING: Final = (
    (b"\n\n", b"\n"),
    (b"\r\n\r\n", b"\r\n"),
    (b"\n\n", b"\n\n\n\n"),
    (b"data: ", b"data"),
    (b"data: ", b"dat: "),
    (b"data: ", b": "),
    (b"data: ", b"event: error\ndata: "),
    (b"data: ", b"data: data: "),
    (b"\n", b"\r"),
    (b"\n", b"\r\n"),
    (b"event: ", b"event: ping\nevent: "),
    (b",", b",\n\n"),
    (b"}", b"}]"),
    (b"[", b"[["),
)
NUMBER: Final = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
offsets = st.integers(min_value=0, max_value=1 << 20)


def _json_segments(body: bytes) -> list[tuple[int, int]]:
    """Where the JSON documents of a body are: the whole body, or each ``data:`` payload."""
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        pass
    else:
        return [(0, len(body))]
    out: list[tuple[int, int]] = []
    for match in re.finditer(rb"(?m)^ ?data: ?(.*?)\r?$", body):
        start, end = match.span(1)
        try:
            json.loads(body[start:end])
        except (ValueError, RecursionError):
            continue
        out.append((start, end))
    return out


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():  # pyright: ignore[reportUnknownVariableType]
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):  # pyright: ignore[reportUnknownVariableType]
            yield from _paths(item, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    value[head] = _replace(value[head], rest, new)
    return value


_SLOT: Final = "\u0000containment-slot\u0000"


def _restructure(data: st.DataObject, body: bytes, make: Callable[[Any], bytes]) -> bytes:
    """Replace one value of one JSON document in ``body`` with the JSON ``make(old value)``."""
    segments = _json_segments(body)
    if not segments:
        return body
    start, end = segments[data.draw(offsets) % len(segments)]
    document = json.loads(body[start:end])
    paths = list(_paths(document))
    path = paths[data.draw(offsets) % len(paths)]
    old: Any = document
    for step in path:
        old = old[step]
    text = json.dumps(_replace(document, path, _SLOT), separators=(",", ":")).encode()
    new = text.replace(json.dumps(_SLOT).encode(), make(old), 1)
    return body[:start] + new + body[end:]


def _wrong_type(value: Any) -> Callable[[Any], bytes]:
    return lambda _: json.dumps(value).encode()


def _giant(old: Any) -> bytes:
    """A string of 200,000 characters, or a list of 20,000 small elements (like the old ones)."""
    if isinstance(old, str):
        return json.dumps("\u00e9" * 200_000, ensure_ascii=False).encode()
    element = json.dumps(old[0]).encode() if isinstance(old, list) and old else b"[[[0]]]"
    if len(element) > 64:  # keep the growth bounded when giants meet giants
        element = b"0"
    return b"[" + b",".join([element] * 20_000) + b"]"


def _nested(old: Any) -> bytes:
    depth = 5_000
    return b"[" * depth + json.dumps(old).encode() + b"]" * depth


def mutate(data: st.DataObject, body: bytes) -> bytes:
    """One mutation of ``body``, drawn by Hypothesis."""
    kind = data.draw(
        st.sampled_from(
            [
                "flip",
                "truncate",
                "duplicate line",
                "remove line",
                "number",
                "wrong type",
                "giant",
                "nested",
                "utf-8",
                "framing",
            ]
        ),
        label="mutation",
    )
    if not body:
        return body
    at = data.draw(offsets) % len(body)
    if kind == "flip":
        return body[:at] + bytes([body[at] ^ (1 << data.draw(st.integers(0, 7)))]) + body[at + 1 :]
    if kind == "truncate":
        return body[:at]
    if kind in ("duplicate line", "remove line"):
        lines = body.splitlines(keepends=True)
        index = at % len(lines)
        copies = 2 if kind == "duplicate line" else 0
        return b"".join(lines[:index] + [lines[index]] * copies + lines[index + 1 :])
    if kind == "number":
        numbers = list(NUMBER.finditer(body))
        if not numbers:
            return body
        match = numbers[at % len(numbers)]
        return (
            body[: match.start()] + data.draw(st.sampled_from(OUT_OF_RANGE)) + body[match.end() :]
        )
    if kind == "wrong type":
        return _restructure(data, body, _wrong_type(data.draw(st.sampled_from(WRONG_TYPES))))
    if kind == "giant":
        return _restructure(data, body, _giant)
    if kind == "nested":
        return _restructure(data, body, _nested)
    if kind == "utf-8":
        return body[:at] + data.draw(st.sampled_from(BAD_UTF8)) + body[at:]
    old, new = data.draw(st.sampled_from(FRAMING))
    places = [m.start() for m in re.finditer(re.escape(old), body)]
    if not places:
        return body
    place = places[at % len(places)]
    return body[:place] + new + body[place + len(old) :]


HEADER_NAMES: Final = (
    "content-type",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "x-request-id",
    "request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    *(
        f"anthropic-ratelimit-{kind}-{field}"
        for kind in ("requests", "tokens", "input-tokens", "output-tokens")
        for field in ("limit", "remaining", "reset")
    ),
)
HEADER_VALUES: Final = (
    "1e999",
    "-1e999",
    "1e300",
    "-1",
    "0",
    "NaN",
    "inf",
    "",
    " ",
    "1" + "0" * 40,
    "1" + "0" * 400,
    "9" * 5000,
    "18446744073709551616",
    "\u00fcn\u00efc\u00f6d\u00e9",
    "\u0663",
    "12ms",
    "1e999s",
    "9" * 400 + "ms",
    "99999999h",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Mon, 01 Jan 0001 00:00:00 +0100",
    "true",
    "false",
    "maybe",
    "text/html",
    "application/json; charset=latin-1",
)
header_values = st.one_of(
    st.sampled_from(HEADER_VALUES),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(repr),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
)
header_mutations = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=4)
statuses = st.sampled_from([200, 400, 401, 404, 408, 409, 429, 500, 502, 503, 504, 529])


# -- the provider's side --------------------------------------------------------------------------


@dataclass
class Answer:
    """What the transport answers the mutated call (every attempt gets the same)."""

    status: int
    headers: dict[str, str]
    pieces: list[bytes]


class Pieces(httpx.AsyncByteStream):
    """A body sent piece by piece; with a gate, it stops after ``hold`` pieces until it opens."""

    def __init__(self, pieces: list[bytes], *, gate: trio.Event | None = None, hold: int = 0):
        self._pieces = pieces
        self._gate = gate
        self._hold = hold
        self._next = 0

    def __aiter__(self) -> Pieces:
        return self

    async def __anext__(self) -> bytes:
        if self._next >= len(self._pieces):
            raise StopAsyncIteration
        if self._gate is not None and self._next == self._hold:
            await self._gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        piece = self._pieces[self._next]
        self._next += 1
        return piece

    async def aclose(self) -> None:
        self._next = len(self._pieces)


BAD: Final = "containment: the mutated call"
OTHER: Final = re.compile(rb"containment: other stream (\d+)")


def other_text(number: int) -> str:
    return f"Other stream {number} finishes its sentence, unharmed by its neighbour."


class Provider(httpx.AsyncBaseTransport):
    """Answers the mutated call with ``answer`` once every other stream has started, and holds
    each other stream open (after its first events) until the mutated call is over."""

    def __init__(self, provider: str, answer: Answer, others: int) -> None:
        self.model = model_of(provider)
        self.renderer = renderer_of(provider)
        self.answer = answer
        self.others = others
        self.arrived = 0
        self.all_arrived = trio.Event()
        self.settled = trio.Event()
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = request.content
        if BAD.encode() in content:
            self.attempts += 1
            await self.all_arrived.wait()
            answer = self.answer
            raw = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
            return httpx.Response(answer.status, headers=raw, stream=Pieces(answer.pieces))
        match = OTHER.search(content)
        assert match is not None, "a request the test did not send"
        self.arrived += 1
        if self.arrived == self.others:
            self.all_arrived.set()
        scenario = Scenario(text=other_text(int(match.group(1))), chunk_chars=6)
        events = self.renderer.render_stream(scenario, json.loads(content), model=self.model)
        pieces = [event for event in events if isinstance(event, bytes)]
        headers = self.renderer.stream_headers(scenario)
        return httpx.Response(
            200, headers=headers, stream=Pieces(pieces, gate=self.settled, hold=2)
        )


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    """``body`` in network reads, cut at ``cuts`` (taken modulo its length)."""
    points = sorted({cut % len(body) for cut in cuts} | {0, len(body)}) if body else [0, 0]
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]


# -- the caller's side ----------------------------------------------------------------------------


class MalformedLog(logging.Handler):
    """Counts the session's "malformed response" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "malformed response" in record.getMessage():
            self.count += 1


@contextmanager
def counting_malformed() -> Iterator[MalformedLog]:
    handler = MalformedLog()
    logger = logging.getLogger("llm_invocation.providers")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def has_content(chunk: llm.StreamChunk) -> bool:
    return bool(
        chunk.text
        or chunk.reasoning
        or chunk.tool_calls
        or chunk.finish_reason
        or chunk.reasoning_signature
    )


@dataclass
class Outcome:
    error: BaseException | None = None
    delivered: bool = False


def request(provider: str, text: str, *, stream: bool) -> llm.Request:
    return llm.Request(
        model=f"{provider}:{model_of(provider)}", messages=[llm.user(text)], stream=stream
    )


async def call_mutated(
    client: llm.Client, provider: str, streamed: bool, settled: trio.Event, outcome: Outcome
) -> None:
    try:
        if streamed:
            async with client.invoke(request(provider, BAD, stream=True)) as stream:
                async for chunk in stream:
                    outcome.delivered = outcome.delivered or has_content(chunk)
        else:
            await client.invoke_sync(request(provider, BAD, stream=False))
    except Exception as exc:
        outcome.error = exc
    finally:
        settled.set()


async def call_other(client: llm.Client, provider: str, number: int, texts: dict[int, str]) -> None:
    pieces: list[str] = []
    async with client.invoke(
        request(provider, f"containment: other stream {number}", stream=True)
    ) as stream:
        async for chunk in stream:
            pieces.append(chunk.text)
    texts[number] = "".join(pieces)


@dataclass
class Run:
    outcome: Outcome
    texts: dict[int, str]
    statistics: SessionStatistics
    runtime: RuntimeStatistics
    session: ActorStatistics
    transport_attempts: int
    logged_malformed: int


async def run_beside_others(
    provider: str,
    answer: Answer,
    *,
    streamed: bool,
    others: int,
    sabotage: Callable[[ProviderCodec], None] | None = None,
) -> Run:
    """The mutated call and ``others`` streams on one provider session; what came out.

    ``sabotage`` may change the session's codec first (to give it a bug).
    """
    transport = Provider(provider, answer, others)
    outcome = Outcome()
    texts: dict[int, str] = {}
    with counting_malformed() as log:
        async with llm.open_client(
            config_for(provider), transports={provider: lambda: transport}
        ) as client:
            if sabotage is not None:
                sabotage(client.codec(provider))
            with trio.fail_after(EXAMPLE_LIMIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        call_mutated, client, provider, streamed, transport.settled, outcome
                    )
                    for number in range(others):
                        nursery.start_soon(call_other, client, provider, number, texts)
                statistics = (await client.session_statistics())[provider]
            runtime = client.runtime.statistics()
            session = client.runtime.ref(SESSION_PREFIX + provider).statistics()
    return Run(outcome, texts, statistics, runtime, session, transport.attempts, log.count)


def check_contained(run: Run, others: int) -> None:
    """Everything this module promises about one run (see the module documentation)."""
    error = run.outcome.error
    assert error is None or isinstance(error, llm.LLMError), repr(error)
    assert run.texts == {n: other_text(n) for n in range(others)}
    assert run.runtime.restarts == 0
    assert [
        (a.name, a.crashes, a.restarts) for a in run.runtime.actors if a.crashes or a.restarts
    ] == []
    assert (run.session.restarts, run.session.crashes) == (0, 0)
    stats = run.statistics
    assert stats.requests == others + 1
    assert stats.attempts == stats.requests + stats.retries == others + run.transport_attempts
    succeeded = others + (error is None)
    assert sum(stats.failures.values()) == stats.attempts - succeeded
    # A malformed answer fails as a ProviderError, or a StreamingFailed when a codec finds
    # it in a stream.
    assert stats.malformed <= stats.failures.get(
        llm.ProviderError.code.value, 0
    ) + stats.failures.get(llm.StreamingFailed.code.value, 0)
    assert run.logged_malformed == stats.malformed
    assert stats.pool.active == 0
    if isinstance(error, llm.ProviderError) and error.details.get("reason") == "malformed response":
        assert stats.malformed >= 1
        if run.outcome.delivered:
            assert not error.retryable


# -- the properties -------------------------------------------------------------------------------

GROUPS: Final = {
    "openai": ("openai",),
    "openai-compatible": ("openai-compatible",),
    "anthropic": ("anthropic",),
    "gemini": ("gemini",),
}


@functools.cache
def recordings_of(root: Path, group: str) -> tuple[Recording, ...]:
    return tuple(load_recordings(root, GROUPS[group]))


def draw_answer(data: st.DataObject, recordings: list[Recording]) -> tuple[Recording, Answer]:
    """A recording, mutated (body, headers, maybe status) and cut into network reads."""
    recording = data.draw(st.sampled_from(recordings), label="recording")
    body = recording.body
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):
        body = mutate(data, body)
    headers = {**recording.headers, **data.draw(header_mutations, label="headers")}
    status = data.draw(st.one_of(st.just(recording.status), statuses), label="status")
    pieces = split(body, data.draw(st.lists(offsets, max_size=8), label="cuts"))
    return recording, Answer(status=status, headers=headers, pieces=pieces)


def describe(error: BaseException | None) -> str:
    """The outcome of a mutated call, for Hypothesis's statistics."""
    if error is None:
        return "answered"
    if isinstance(error, llm.LLMError) and error.details.get("reason") == "malformed response":
        return f"malformed response ({error.details.get('exception')})"
    return type(error).__name__


@pytest.mark.conformance
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "whole body"])
@pytest.mark.parametrize("group", sorted(GROUPS))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_a_mutated_recording_fails_only_its_own_call(
    conformance_dir: Path, group: str, streamed: bool, data: st.DataObject
) -> None:
    recordings = [
        r for r in recordings_of(conformance_dir, group) if r.streamed in (None, streamed)
    ]
    recording, answer = draw_answer(data, recordings)
    run = await run_beside_others(recording.provider, answer, streamed=streamed, others=OTHERS)
    event(f"outcome: {describe(run.outcome.error)}")
    check_contained(run, OTHERS)


def check_rate_limits(info: RateLimitInfo | None) -> None:
    if info is None:
        return
    for field in info.__struct_fields__:
        value = getattr(info, field)
        if value is None:
            continue
        if field == "retry_after":
            assert 0 <= value <= 3600, (field, value)
        elif field.endswith("_reset"):
            assert 0 <= value <= MAX_RESET, (field, value)
        else:
            assert 0 <= value <= MAX_COUNT, (field, value)


def check_usage(usage: llm.Usage | None) -> None:
    if usage is None:
        return
    counts = (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )
    assert all(0 <= count <= MAX_COUNT for count in counts), usage
    assert usage.cost is None or 0 <= usage.cost <= MAX_COUNT, usage


def check_error(codec: ProviderCodec, error: llm.LLMError, headers: dict[str, str]) -> None:
    advice = codec.retry_advice(error, headers)
    assert advice.delay is None or 0 <= advice.delay <= 3600, advice
    assert error.retry_after is None or 0 <= error.retry_after <= MAX_RESET, error.retry_after


@pytest.mark.conformance
@pytest.mark.parametrize("group", sorted(GROUPS))
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_codec_answers_a_mutated_recording_with_values_in_range(
    conformance_dir: Path, group: str, data: st.DataObject
) -> None:
    recording, answer = draw_answer(data, list(recordings_of(conformance_dir, group)))
    provider = recording.provider
    codec = make_codec(provider, config_for(provider).providers[provider])
    streamed = recording.streamed
    if streamed is None:
        streamed = data.draw(st.booleans(), label="streamed")
    request = llm.Request(model=model_of(provider), messages=[llm.user("x")], stream=streamed)
    headers = answer.headers
    body = b"".join(answer.pieces)
    check_rate_limits(codec.parse_rate_limits(headers))
    try:
        if answer.status >= 300:
            raise codec.map_error(answer.status, headers, body)
        if not streamed:
            response = codec.decode_response(request, body)
            check_usage(response.usage)
            return
        decoder = codec.stream_decoder(request)
        chunks = [chunk for piece in answer.pieces for chunk in decoder.feed(piece)]
        chunks.extend(decoder.close())
        for chunk in chunks:
            check_usage(chunk.usage)
            if chunk.error is not None:
                check_error(codec, error_from_info(chunk.error), headers)
    except llm.LLMError as error:
        check_error(codec, error, headers)


# -- regressions ----------------------------------------------------------------------------------


async def test_a_rate_limit_header_out_of_range_is_ignored_and_no_other_stream_fails() -> None:
    renderer = renderer_for("openai")
    scenario = Scenario(text="Still answered.")
    events = renderer.render_stream(scenario, {"model": "gpt-4o-mini", "messages": []})
    headers = {**renderer.stream_headers(scenario), "x-ratelimit-remaining-requests": "1e999"}
    answer = Answer(200, headers, [e for e in events if isinstance(e, bytes)])
    run = await run_beside_others("openai", answer, streamed=True, others=IN_FLIGHT)
    check_contained(run, IN_FLIGHT)
    assert run.outcome.error is None
    assert run.statistics.failures == {}


async def test_a_created_time_out_of_range_is_no_error_and_no_other_stream_fails() -> None:
    body = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1e300,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Still answered."},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()
    answer = Answer(200, {"content-type": "application/json"}, [body])
    run = await run_beside_others("openai", answer, streamed=False, others=IN_FLIGHT)
    check_contained(run, IN_FLIGHT)
    assert run.outcome.error is None
    assert run.statistics.failures == {}


async def test_a_rate_limit_count_too_large_for_a_float_crashes_no_actor() -> None:
    renderer = renderer_for("openai")
    scenario = Scenario(text="Still answered.")
    events = renderer.render_stream(scenario, {"model": "gpt-4o-mini", "messages": []})
    headers = {**renderer.stream_headers(scenario), "x-ratelimit-limit-requests": "1" + "0" * 400}
    answer = Answer(200, headers, [e for e in events if isinstance(e, bytes)])
    run = await run_beside_others("openai", answer, streamed=True, others=IN_FLIGHT)
    check_contained(run, IN_FLIGHT)
    assert run.outcome.error is None


class Repeating(httpx.AsyncBaseTransport):
    """Answers every request with the same rendered stream and headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        renderer = renderer_for("openai")
        scenario = Scenario(text="Answered.")
        events = renderer.render_stream(scenario, json.loads(request.content))
        headers = {**renderer.stream_headers(scenario), **self.headers}
        pieces = [event for event in events if isinstance(event, bytes)]
        return httpx.Response(200, headers=headers, stream=Pieces(pieces))


async def test_a_rate_limit_reset_out_of_range_blocks_no_later_call() -> None:
    exhausted = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1e999"}
    transport = Repeating(exhausted)
    async with llm.open_client(
        config_for("openai"), transports={"openai": lambda: transport}
    ) as client:
        with trio.fail_after(EXAMPLE_LIMIT):
            first = await client.invoke_sync(request("openai", "first", stream=True))
            second = await client.invoke_sync(request("openai", "second", stream=True))
    assert (first.text, second.text) == ("Answered.", "Answered.")


# -- a codec with a bug ---------------------------------------------------------------------------

MARK: Final = "containment-mutated-answer"
"""The request id on the mutated call's answer: how a sabotaged codec tells it by its headers."""


class CodecBug(OverflowError):
    """What a codec with a bug raises (an OverflowError, as a timestamp out of range once did)."""


def is_mutated(request: llm.Request) -> bool:
    return BAD in request.messages[-1].text


class BuggyDecoder(StreamDecoder):
    """A decoder that raises in ``feed`` or in ``close``."""

    def __init__(self, inner: StreamDecoder, where: str) -> None:
        self.inner = inner
        self.where = where

    def feed(self, data: bytes) -> list[llm.StreamChunk]:
        if self.where == "feed":
            raise CodecBug("a bug in feed")
        return self.inner.feed(data)

    def close(self) -> list[llm.StreamChunk]:
        if self.where == "close":
            raise CodecBug("a bug in close")
        return self.inner.close()

    @property
    def done(self) -> bool:
        return self.inner.done


def bug_in(where: str) -> Callable[[ProviderCodec], None]:
    """Give a codec a bug in ``where``, for the mutated call only."""

    name = "stream_decoder" if where in ("feed", "close") else where

    def sabotage(codec: ProviderCodec) -> None:
        original: Any = getattr(codec, name)

        def stream_decoder(request: llm.Request) -> StreamDecoder:
            decoder: StreamDecoder = original(request)
            return BuggyDecoder(decoder, where) if is_mutated(request) else decoder

        def decode_response(request: llm.Request, body: bytes) -> llm.Response:
            if is_mutated(request):
                raise CodecBug("a bug in decode_response")
            response: llm.Response = original(request, body)
            return response

        def by_headers(*args: Any) -> Any:
            headers = next(a for a in args if isinstance(a, dict))
            if headers.get("x-request-id") == MARK:
                raise CodecBug(f"a bug in {where}")
            return original(*args)

        replacements = {"stream_decoder": stream_decoder, "decode_response": decode_response}
        setattr(codec, name, replacements.get(name, by_headers))

    return sabotage


def mutated_answer(status: int, *, streamed: bool) -> Answer:
    """An answer as the provider meant it, marked as the mutated call's."""
    renderer = renderer_for("openai")
    scenario = Scenario(text="Answered in full.")
    wire = {"model": "gpt-4o-mini", "messages": [], "stream": streamed}
    if status >= 300:
        body = b'{"error": {"message": "try again", "type": "server_error"}}'
        headers = {"content-type": "application/json"}
    elif streamed:
        events = renderer.render_stream(scenario, wire)
        body = b"".join(event for event in events if isinstance(event, bytes))
        headers = renderer.stream_headers(scenario)
    else:
        _, headers, body = renderer.render_body(scenario, wire)
    return Answer(status, {**headers, "x-request-id": MARK}, split(body, [7, 60, 200]))


@pytest.mark.parametrize(
    ("where", "streamed", "status", "outcome", "malformed"),
    [
        ("parse_rate_limits", True, 200, "answered", 0),
        ("retry_advice", True, 429, "RateLimited", 0),
        ("map_error", False, 500, "malformed response (CodecBug)", 2),
        ("feed", True, 200, "malformed response (CodecBug)", 2),
        ("close", True, 200, "malformed response (CodecBug)", 1),
        ("decode_response", False, 200, "malformed response (CodecBug)", 2),
    ],
)
async def test_a_codec_bug_fails_only_its_own_call_retried_only_before_content(
    where: str, streamed: bool, status: int, outcome: str, malformed: int
) -> None:
    run = await run_beside_others(
        "openai",
        mutated_answer(status, streamed=streamed),
        streamed=streamed,
        others=IN_FLIGHT,
        sabotage=bug_in(where),
    )
    check_contained(run, IN_FLIGHT)
    assert describe(run.outcome.error) == outcome
    assert run.statistics.malformed == malformed


# -- what any codec decodes is checked before the governor and the accountant see it -------------


async def test_impossible_values_from_any_codec_never_reach_the_governor_or_the_accountant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A codec of one's own may parse what the built-in ones refuse: the session and the
    # invocation check its rate limits and usage before they travel on.
    from llm_invocation.providers._base import RateLimitInfo
    from llm_invocation.providers.openai import OpenAICodec
    from llm_invocation.testing import MockTransport, Scenario, Scenarios

    def wild_limits(self: OpenAICodec, headers: Any) -> RateLimitInfo:
        return RateLimitInfo(
            requests_limit=10**400,
            requests_remaining=0,
            requests_reset=float("inf"),
            tokens_remaining=-5,
            retry_after=float("nan"),
        )

    real_decode = OpenAICodec.decode_response

    def wild_usage(self: OpenAICodec, request: llm.Request, body: bytes) -> llm.Response:
        response = real_decode(self, request, body)
        usage = llm.Usage(prompt_tokens=10**40, completion_tokens=-3)
        return msgspec.structs.replace(response, usage=usage)

    monkeypatch.setattr(OpenAICodec, "parse_rate_limits", wild_limits)
    monkeypatch.setattr(OpenAICodec, "decode_response", wild_usage)
    scenarios = Scenarios(Scenario(text="fine"))
    config = llm.Config.from_dict(
        {"provider": "openai", "providers": {"openai": {"api_key": "sk-test-WILD-0000000000"}}}
    )
    transport = MockTransport(scenarios, format="openai")
    async with llm.open_client(config, transports={"openai": lambda: transport}) as client:
        for _ in range(3):
            response = await client.invoke_sync(
                model="gpt-4o-mini", messages=[llm.user("hi")], stream=False
            )
            assert response.text == "fine"
            assert response.usage is not None and response.usage.estimated
        report = await client.usage()
        runtime = client.runtime.statistics()
    assert report.total.ok == 3
    assert runtime.restarts == 0
    assert not [a.name for a in runtime.actors if a.crashes or a.restarts]


_COUNTS = st.one_of(st.integers(0, 10**6), st.integers(-(2**70), 2**70))
_COSTS = st.one_of(
    st.none(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=0, max_value=10, places=6),
)


@given(counts=st.lists(_COUNTS, min_size=6, max_size=6), cost=_COSTS, reported=_COSTS)
def test_a_usage_that_cannot_be_true_is_none_and_an_impossible_cost_is_unknown(
    counts: list[int], cost: Decimal | None, reported: Decimal | None
) -> None:
    names = (
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    )
    usage = msgspec.structs.replace(llm.Usage(), **dict(zip(names, counts, strict=True)))
    usage = msgspec.structs.replace(usage, cost=cost, reported_cost=reported)
    counts = [getattr(usage, name) for name in names]  # the total may be derived
    checked = checked_usage(usage)
    if not all(0 <= count <= MAX_COUNT for count in counts):
        assert checked is None
        return
    assert checked is not None
    assert [getattr(checked, name) for name in names] == counts

    def kept(value: Decimal | None) -> Decimal | None:
        possible = value is not None and value.is_finite() and 0 <= value <= MAX_COUNT
        return value if possible else None

    assert (checked.cost, checked.reported_cost) == (kept(cost), kept(reported))
    if checked == usage:
        assert checked is usage  # nothing to change: the same object


@given(
    st.lists(
        st.one_of(st.none(), st.floats(), st.integers(-(2**70), 2**70), st.just(10**400)),
        max_size=8,
    )
)
def test_a_providers_timestamp_is_a_utc_datetime_or_none_whatever_came_before(
    values: list[float | None],
) -> None:
    """Conversions follow each other (the last one is reused): each is what it would be
    alone."""
    for value in values:
        when = datetime_from_unix(value)
        if value is None or value == 10**400 or not math.isfinite(value) or value <= 0:
            assert when is None
            continue
        try:
            expected: datetime | None = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            expected = None
        assert when == expected
