"""Scripted answers for the fake provider: what to say, how fast, and how to fail.

A `Scenario` describes one answer independently of the wire format; the renderers turn it
into OpenAI, Anthropic or Gemini bytes. `Scenarios` is the registry the mock transport and
the fake server consult: a request for model ``"fail-then-ok"`` takes the next step of the
script registered under that name, and every other model gets the default scenario::

    scenarios = Scenarios()
    scenarios.add("fail-then-ok", Scenario(failure=HttpError(status=429, retry_after=1)),
                  Scenario(text="recovered"))

Failures are a tagged union (`Failure`): an HTTP error status (`HttpError`), an error event
inside a 200 stream (`ErrorEvent`), a stream that stops sending (`Stall`), a connection
closed mid-body (`Disconnect`) and a data line that is not JSON (`Malformed`). Those that
happen mid-stream take ``after_chunks``: the number of output chunks (events that carry text,
reasoning or tool-call data) delivered first. A value past the end of the answer puts the
failure just before the stream's terminal event, so the client never sees a clean end.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Literal, final

import msgspec

__all__ = [
    "Disconnect",
    "ErrorEvent",
    "Failure",
    "HttpError",
    "Malformed",
    "Scenario",
    "Scenarios",
    "ScriptedToolCall",
    "ScriptedUsage",
    "Stall",
    "tokens_per_second",
]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@final
class ScriptedUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts to report, normalised as in ``llm_invocation.types.Usage``.

    ``prompt_tokens`` includes the cache reads and writes, ``cache_write_tokens`` includes
    the ``cache_write_1h_tokens`` written for an hour (Anthropic reports them apart) and
    ``completion_tokens`` includes the reasoning tokens; each renderer splits them the way its
    provider reports them.

    Raises:
        ValueError: a count is negative, or a part exceeds the total it belongs to.
    """

    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        _check(
            min(
                self.prompt_tokens,
                self.completion_tokens,
                self.cache_read_tokens,
                self.cache_write_tokens,
                self.cache_write_1h_tokens,
                self.reasoning_tokens,
            )
            >= 0,
            "token counts must not be negative",
        )
        _check(
            self.cache_read_tokens + self.cache_write_tokens <= self.prompt_tokens,
            "cache tokens are part of prompt_tokens and cannot exceed it",
        )
        _check(
            self.cache_write_1h_tokens <= self.cache_write_tokens,
            "1-hour cache writes are part of cache_write_tokens and cannot exceed it",
        )
        _check(
            self.reasoning_tokens <= self.completion_tokens,
            "reasoning tokens are part of completion_tokens and cannot exceed it",
        )


@final
class ScriptedToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call the model makes.

    Attributes:
        name: the tool's name.
        arguments: the arguments; a string is sent verbatim (it may be invalid JSON on
            purpose), a dict as compact JSON. Streamed in fragments of ``chunk_chars``.
        id: the call id; None makes one up in the provider's style (Gemini sends no id
            unless one is given here, as Vertex does).
    """

    name: str
    arguments: dict[str, Any] | str = {}
    id: str | None = None


@final
class HttpError(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Answer with an HTTP error status and the provider's own error body.

    Attributes:
        status: the HTTP status (400-599). Anthropic renders 503 as its 529 overloaded
            error; OpenAI and Gemini render 529 as 503.
        retry_after: seconds for the ``retry-after`` header (OpenAI, Anthropic) or the
            ``RetryInfo.retryDelay`` of the body (Gemini).
        retry_after_ms: milliseconds for the ``retry-after-ms`` header (every format).
        should_retry: the ``x-should-retry`` header (every format) when not None.
        message: the error message; empty means a default for the status.
        error_type: the provider's error type or code (OpenAI ``type`` and ``code``,
            Anthropic ``error.type``, Gemini ``status`` when it is a canonical code name,
            otherwise an ``ErrorInfo.reason``); None means the default for the status.

    Raises:
        ValueError: the status is not 400-599 or a delay is negative.
    """

    status: int
    retry_after: float | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None
    message: str = ""
    error_type: str | None = None

    def __post_init__(self) -> None:
        _check(400 <= self.status <= 599, "HttpError.status must be 400-599")
        _check(
            self.retry_after is None or (self.retry_after >= 0 and math.isfinite(self.retry_after)),
            "retry_after must be a finite number of seconds >= 0",
        )
        _check(self.retry_after_ms is None or self.retry_after_ms >= 0, "retry_after_ms < 0")


ErrorKind = Literal["overloaded", "rate_limit", "server", "invalid_request"]


@final
class ErrorEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An error inside a 200 stream after ``after_chunks`` output chunks; the stream ends.

    Anthropic sends ``event: error``, OpenAI a ``data:`` payload with an ``error`` key (and
    no ``[DONE]``), Gemini a ``google.rpc.Status`` payload. A non-streamed request gets the
    matching HTTP error instead (529 or 503, 429, 500, 400).

    Raises:
        ValueError: ``after_chunks`` is negative.
    """

    after_chunks: int
    kind: ErrorKind = "overloaded"

    def __post_init__(self) -> None:
        _check(self.after_chunks >= 0, "after_chunks must be >= 0")


@final
class Stall(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Stop sending after ``after_chunks`` output chunks, keeping the connection open.

    With a finite ``seconds`` the rest of the answer follows the pause; with the default
    (forever) nothing more is sent until the client goes away. A non-streamed request waits
    ``seconds`` before its answer.

    Raises:
        ValueError: ``after_chunks`` or ``seconds`` is negative.
    """

    after_chunks: int
    seconds: float = math.inf

    def __post_init__(self) -> None:
        _check(self.after_chunks >= 0, "after_chunks must be >= 0")
        _check(self.seconds >= 0, "Stall.seconds must be >= 0")


@final
class Disconnect(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Close the connection after ``after_chunks`` output chunks, without ending the body.

    A non-streamed request gets its headers and half of its body before the close.

    Raises:
        ValueError: ``after_chunks`` is negative.
    """

    after_chunks: int

    def __post_init__(self) -> None:
        _check(self.after_chunks >= 0, "after_chunks must be >= 0")


@final
class Malformed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Send a data line that is not JSON after ``after_chunks`` output chunks, then go on.

    A non-streamed request gets a 200 whose body is not JSON.

    Raises:
        ValueError: ``after_chunks`` is negative.
    """

    after_chunks: int

    def __post_init__(self) -> None:
        _check(self.after_chunks >= 0, "after_chunks must be >= 0")


Failure = HttpError | ErrorEvent | Stall | Disconnect | Malformed
"""Every way a scripted answer can go wrong (a tagged union on ``"type"``)."""


@final
class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """One scripted answer, whatever the wire format.

    Attributes:
        text: the answer; None makes one from the last user message: ``"You said: ..."``
            cut or padded to exactly ``completion_words`` words (an empty answer when the
            scenario has tool calls).
        reasoning: thinking text streamed before the answer (Anthropic thinking block,
            Gemini thought parts, OpenAI-compatible ``reasoning_content``).
        tool_calls: tool calls made after the text; several are parallel calls.
        usage: the token counts to report; None computes them: prompt tokens are the words
            of the request's messages, completion tokens the output chunks.
        finish_reason: a normalised finish reason (``stop``, ``length``, ``tool_calls``,
            ``content_filter``, ``pause``) rendered in each format's vocabulary, or a
            provider's own value passed through; None means ``tool_calls`` when there are
            calls and ``stop`` otherwise.
        chunk_chars: characters of text (or reasoning, or tool arguments) per streamed chunk.
        ttft: seconds before the first body byte (a stream's headers go out at once, a
            whole answer's wait too).
        interval: seconds between streamed chunks (see `tokens_per_second`); the fake
            server keeps this as a schedule from the first chunk, to 1 ms.
        failure: how the answer goes wrong, if it does.
        completion_words: the length of a generated answer.
        headers: extra response headers, e.g. rate-limit headers.

    Raises:
        ValueError: a size or a delay is out of range.
    """

    text: str | None = None
    reasoning: str = ""
    tool_calls: list[ScriptedToolCall] = []
    usage: ScriptedUsage | None = None
    finish_reason: str | None = None
    chunk_chars: int = 8
    ttft: float = 0.0
    interval: float = 0.0
    failure: Failure | None = None
    completion_words: int = 12
    headers: dict[str, str] = {}

    def __post_init__(self) -> None:
        _check(self.chunk_chars >= 1, "chunk_chars must be >= 1")
        _check(self.ttft >= 0 and math.isfinite(self.ttft), "ttft must be finite and >= 0")
        _check(
            self.interval >= 0 and math.isfinite(self.interval),
            "interval must be finite and >= 0",
        )
        _check(self.completion_words >= 0, "completion_words must be >= 0")


def tokens_per_second(rate: float) -> float:
    """The ``Scenario.interval`` that streams ``rate`` chunks (about tokens) per second.

    Raises:
        ValueError: ``rate`` is not a positive number.
    """
    _check(rate > 0 and math.isfinite(rate), "rate must be a positive number")
    return 1.0 / rate


_DEFAULT: Scenario = Scenario()


@final
class Scenarios:
    """A registry of scripts, each a list of scenarios consumed one per request.

    A request selects the script named by its model (also tried: the part after a
    ``provider:`` prefix and after Gemini's ``models/``); the last step of a script repeats
    once the others are used. Models without a script get ``default``. Operations take a
    lock, so a server thread and a test thread may share one registry.

    Args:
        default: the scenario for models without a script.
    """

    __slots__ = ("_calls", "_lock", "_positions", "_scripts", "default")

    def __init__(self, default: Scenario | None = None) -> None:
        self.default: Scenario = default or _DEFAULT
        self._scripts: dict[str, list[Scenario]] = {}
        self._positions: dict[str, int] = {}
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Scenarios {sorted(self._scripts)}>"

    def add(self, name: str, *steps: Scenario) -> None:
        """Register (or replace, rewound) the script for model ``name``.

        Raises:
            ValueError: no step was given.
        """
        _check(bool(steps), "a script needs at least one scenario")
        with self._lock:
            self._scripts[name] = list(steps)
            self._positions[name] = 0
            self._calls.pop(name, None)

    def names(self) -> list[str]:
        """The names with a script, sorted."""
        with self._lock:
            return sorted(self._scripts)

    def resolve(self, model: str) -> str:
        """The script name a request for ``model`` selects (``model`` itself without one)."""
        scripts = self._scripts
        if model in scripts:
            return model
        for candidate in (model.partition(":")[2], model.removeprefix("models/")):
            if candidate and candidate in scripts:
                return candidate
        return model

    def next(self, model: str) -> Scenario:
        """Take the scenario for one request for ``model`` and count the call."""
        with self._lock:
            name = self.resolve(model)
            self._calls[name] = self._calls.get(name, 0) + 1
            script = self._scripts.get(name)
            if script is None:
                return self.default
            position = self._positions[name]
            if position < len(script) - 1:
                self._positions[name] = position + 1
            return script[position]

    def peek(self, model: str) -> Scenario:
        """The scenario the next request for ``model`` would get, without taking it."""
        with self._lock:
            script = self._scripts.get(self.resolve(model))
            if script is None:
                return self.default
            return script[self._positions[self.resolve(model)]]

    def calls(self, name: str) -> int:
        """How many requests selected ``name`` (a script name, or an unscripted model)."""
        with self._lock:
            return self._calls.get(name, 0)

    def reset(self) -> None:
        """Rewind every script and zero the call counts (the scripts stay registered)."""
        with self._lock:
            self._positions = dict.fromkeys(self._scripts, 0)
            self._calls.clear()

    def clear(self) -> None:
        """Forget every script and call count (the default scenario stays)."""
        with self._lock:
            self._scripts.clear()
            self._positions.clear()
            self._calls.clear()
