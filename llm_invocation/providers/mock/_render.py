"""What the renderers share: the event type, request reading, the answer plan, the base class.

A renderer turns a `Scenario` and the request's decoded JSON into the bytes a provider would
send. `Renderer.render_stream` returns the streamed body as a list of events, each the exact
bytes of one server-sent event (one network write for the fake server), with `Stall` and
`Disconnect` markers where the scripted failure goes. `Renderer.render_body` returns a whole
non-streamed answer, or the provider's error body for an `HttpError`.

Rendering is format-independent up to `plan`: the answer's text, reasoning and tool-call
arguments are cut into chunks of ``chunk_chars`` characters, and the usage is fixed (scripted,
or computed from the request's words and the chunk count).
"""

from __future__ import annotations

import abc
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, cast

import msgspec

from ._scenario import (
    Disconnect,
    ErrorEvent,
    ErrorKind,
    HttpError,
    Malformed,
    Scenario,
    ScriptedToolCall,
    ScriptedUsage,
    Stall,
)

__all__ = [
    "ERROR_STATUS",
    "Event",
    "Plan",
    "Renderer",
    "RequestInfo",
    "ToolPlan",
    "WireFormat",
    "as_dict",
    "as_list",
    "collect_text",
    "count_words",
    "default_message",
    "encode_json",
    "last_user_text",
    "make_plan",
    "next_sequence",
    "seconds_text",
    "split_text",
]

Event = bytes | Stall | Disconnect
"""One item of a rendered stream: an event's bytes, or a marker where a failure happens."""

WireFormat = Literal["openai", "anthropic", "gemini"]
"""The wire formats the fake provider speaks."""

encode_json = msgspec.json.Encoder().encode
"""Compact JSON bytes of a value (one shared encoder)."""

_sequence = itertools.count(1)

_FILLER: Final = (
    *("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed"),
    *("do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna"),
)

ERROR_STATUS: Final[Mapping[ErrorKind, int]] = {
    "overloaded": 503,
    "rate_limit": 429,
    "server": 500,
    "invalid_request": 400,
}
"""The HTTP status a non-streamed request gets for an `ErrorEvent` of each kind."""


def next_sequence() -> int:
    """A process-wide increasing number for response and tool-call ids."""
    return next(_sequence)


def split_text(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of ``size`` characters (the last may be shorter)."""
    if len(text) <= size:
        return [text] if text else []
    return [text[i : i + size] for i in range(0, len(text), size)]


def collect_text(value: Any, out: list[str]) -> list[str]:
    """Append every text found in a message, content block or part list to ``out``.

    Understands plain strings, lists, ``{"text": ...}`` parts and blocks and anything with
    ``content`` or ``parts`` (OpenAI messages, Anthropic blocks and tool results, Gemini
    contents); other values are ignored.
    """
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            collect_text(item, out)
    elif isinstance(value, dict):
        fields: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
        text = fields.get("text")
        if isinstance(text, str):
            out.append(text)
        else:
            collect_text(fields.get("content"), out)
            collect_text(fields.get("parts"), out)
    return out


def as_list(value: object) -> list[Any]:
    """``value`` if it is a list, else an empty one (for JSON of unknown shape)."""
    return cast("list[Any]", value) if isinstance(value, list) else []


def as_dict(value: object) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one (for JSON of unknown shape)."""
    return cast("dict[str, Any]", value) if isinstance(value, dict) else {}


def last_user_text(messages: object, *, default_role: str | None = None) -> str:
    """The text of the last message whose ``role`` is ``user`` (``default_role`` if absent)."""
    for message in reversed(as_list(messages)):
        fields = as_dict(message)
        if fields and fields.get("role", default_role) == "user":
            return " ".join(collect_text(fields, []))
    return ""


def count_words(values: list[str]) -> int:
    """The number of whitespace-separated words in ``values``."""
    return sum(len(value.split()) for value in values)


class RequestInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a renderer needs from a request.

    Attributes:
        model: the model id to report.
        last_user_text: the text of the last user message (a generated answer echoes it).
        prompt_words: words in the system prompt and all messages (the computed prompt
            tokens and the token count endpoints).
        include_usage: OpenAI's ``stream_options.include_usage``.
        legacy: OpenAI's legacy ``text_completion`` shape.
    """

    model: str
    last_user_text: str = ""
    prompt_words: int = 0
    include_usage: bool = False
    legacy: bool = False


class ToolPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call, ready to render: its arguments as JSON text, fragments and object."""

    id: str | None
    name: str
    arguments: str
    fragments: list[str]
    parsed: dict[str, Any] | None


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The format-independent answer: chunks, tool calls, usage and finish reason."""

    model: str
    sequence: int
    reasoning: str
    reasoning_pieces: list[str]
    text: str
    text_pieces: list[str]
    tools: list[ToolPlan]
    usage: ScriptedUsage
    finish_reason: str


def _generated_text(words: int, last_user_text: str) -> str:
    if words <= 0:
        return ""
    out = ["You", "said:", *last_user_text.split()][:words]
    filler = itertools.cycle(_FILLER)
    while len(out) < words:
        out.append(next(filler))
    return " ".join(out)


def _tool_plan(call: ScriptedToolCall, chunk_chars: int) -> ToolPlan:
    arguments = call.arguments
    parsed: dict[str, Any] | None
    if isinstance(arguments, str):
        text = arguments
        try:
            loaded: Any = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            loaded = None
        parsed = loaded if isinstance(loaded, dict) else None  # pyright: ignore[reportUnknownVariableType]
    else:
        text = json.dumps(arguments, ensure_ascii=False)
        parsed = arguments
    return ToolPlan(
        id=call.id,
        name=call.name,
        arguments=text,
        fragments=split_text(text, chunk_chars),
        parsed=parsed,
    )


def _chunks(text: str, size: int) -> int:
    return -(-len(text) // size)


def make_plan(scenario: Scenario, info: RequestInfo, *, split: bool = True) -> Plan:
    """Fix everything about the answer that does not depend on the wire format.

    ``split=False`` (a whole body) leaves the text and reasoning pieces empty.
    """
    size = scenario.chunk_chars
    if scenario.text is not None:
        text = scenario.text
    elif scenario.tool_calls:
        text = ""
    else:
        text = _generated_text(scenario.completion_words, info.last_user_text)
    reasoning_pieces = split_text(scenario.reasoning, size) if split else []
    text_pieces = split_text(text, size) if split else []
    tools = [_tool_plan(call, size) for call in scenario.tool_calls]
    usage = scenario.usage
    if usage is None:
        reasoning_chunks = _chunks(scenario.reasoning, size)
        output = reasoning_chunks + _chunks(text, size)
        output += sum(max(1, len(tool.fragments)) for tool in tools)
        usage = ScriptedUsage(
            prompt_tokens=max(1, info.prompt_words),
            completion_tokens=output,
            reasoning_tokens=reasoning_chunks,
        )
    finish = scenario.finish_reason or ("tool_calls" if tools else "stop")
    return Plan(
        model=info.model,
        sequence=next_sequence(),
        reasoning=scenario.reasoning,
        reasoning_pieces=reasoning_pieces,
        text=text,
        text_pieces=text_pieces,
        tools=tools,
        usage=usage,
        finish_reason=finish,
    )


def _place_failure(
    events: list[bytes],
    cuts: list[int],
    failure: ErrorEvent | Stall | Disconnect | Malformed,
    error_event: bytes,
    malformed_event: bytes,
) -> list[Event]:
    at = cuts[min(failure.after_chunks, len(cuts) - 1)]
    head: list[Event] = list(events[:at])
    if isinstance(failure, ErrorEvent):
        head.append(error_event)
    elif isinstance(failure, Disconnect):
        head.append(failure)
    elif isinstance(failure, Malformed):
        head.append(malformed_event)
        head.extend(events[at:])
    else:
        head.append(failure)
        if not math.isinf(failure.seconds):
            head.extend(events[at:])
    return head


class Renderer(abc.ABC):
    """One wire format's answers. Stateless: one instance serves any number of requests."""

    format: ClassVar[WireFormat]
    default_model: ClassVar[str]
    json_headers: ClassVar[Mapping[str, str]] = {"content-type": "application/json"}
    stream_content_type: str = "text/event-stream; charset=utf-8"

    # -- what subclasses provide -----------------------------------------------------------

    @abc.abstractmethod
    def request_info(self, request: Mapping[str, Any], *, model: str | None = None) -> RequestInfo:
        """Read what rendering needs from a request's decoded JSON body."""

    @abc.abstractmethod
    def _stream(self, plan: Plan, info: RequestInfo) -> tuple[list[bytes], list[int], int]:
        """The stream's events, the indexes of the output events, the first terminal index."""

    @abc.abstractmethod
    def _body(self, plan: Plan, info: RequestInfo) -> bytes:
        """The non-streamed answer's body."""

    @abc.abstractmethod
    def _error_event(self, kind: ErrorKind, plan: Plan) -> bytes:
        """The in-stream error event of ``kind``."""

    @abc.abstractmethod
    def _malformed_event(self) -> bytes:
        """An event whose data is not JSON."""

    @abc.abstractmethod
    def _error(self, error: HttpError) -> tuple[int, bytes, dict[str, str]]:
        """The provider's status, error body and own headers for ``error``."""

    @abc.abstractmethod
    def render_models(self, names: Sequence[str]) -> bytes:
        """The list-models body naming ``names``."""

    @abc.abstractmethod
    def render_count_tokens(self, request: Mapping[str, Any]) -> bytes:
        """The count-tokens body for a request (its words are the tokens)."""

    def response_headers(self, plan_sequence: int) -> dict[str, str]:
        """The provider's own headers on every answer (request ids and the like)."""
        return {}

    # -- the public interface --------------------------------------------------------------

    def stream_headers(self, scenario: Scenario) -> dict[str, str]:
        """The headers of a 200 streamed answer, with the scenario's extra ones."""
        headers = {"content-type": self.stream_content_type, "cache-control": "no-cache"}
        headers.update(self.response_headers(next_sequence()))
        headers.update(scenario.headers)
        return headers

    def render_stream(
        self, scenario: Scenario, request: Mapping[str, Any], *, model: str | None = None
    ) -> list[Event]:
        """The streamed body of a 200 answer as events, failure markers in place.

        Args:
            scenario: the answer.
            request: the request's decoded JSON body.
            model: the model id when it is not in the body (Gemini's is in the URL).

        Raises:
            ValueError: the scenario fails with an `HttpError` (see `render_body`).
        """
        failure = scenario.failure
        if isinstance(failure, HttpError):
            raise ValueError("an HttpError answer has no stream: use render_body")
        info = self.request_info(request, model=model)
        plan = make_plan(scenario, info)
        events, outputs, terminal = self._stream(plan, info)
        if failure is None:
            return list(events)
        cuts = [outputs[0] if outputs else terminal]
        cuts.extend(at + 1 for at in outputs if at + 1 <= terminal)
        kind = failure.kind if isinstance(failure, ErrorEvent) else "overloaded"
        return _place_failure(
            events, cuts, failure, self._error_event(kind, plan), self._malformed_event()
        )

    def render_body(
        self, scenario: Scenario, request: Mapping[str, Any], *, model: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A non-streamed answer: status, headers and body.

        An `HttpError` gives the provider's error body, an `ErrorEvent` the HTTP error of
        the same kind, `Malformed` a 200 whose body is not JSON; `Stall` and `Disconnect`
        are the caller's to apply (the body is the normal answer).
        """
        failure = scenario.failure
        if isinstance(failure, HttpError):
            return self.render_error(failure, scenario=scenario)
        if isinstance(failure, ErrorEvent):
            error = HttpError(status=ERROR_STATUS[failure.kind])
            return self.render_error(error, scenario=scenario)
        info = self.request_info(request, model=model)
        plan = make_plan(scenario, info, split=False)
        headers = dict(self.json_headers)
        headers.update(self.response_headers(plan.sequence))
        headers.update(scenario.headers)
        if isinstance(failure, Malformed):
            return 200, headers, b'{"id": "truncated-' + str(plan.sequence).encode()
        return 200, headers, self._body(plan, info)

    def render_error(
        self, error: HttpError, *, scenario: Scenario | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """The provider's error answer for ``error``: status, headers and body."""
        status, body, own = self._error(error)
        headers = dict(self.json_headers)
        headers.update(own)
        if error.retry_after_ms is not None:
            headers["retry-after-ms"] = str(error.retry_after_ms)
        if error.should_retry is not None:
            headers["x-should-retry"] = "true" if error.should_retry else "false"
        if scenario is not None:
            headers.update(scenario.headers)
        return status, headers, body


def default_message(status: int) -> str:
    """A provider-like message for an HTTP error status."""
    if status == 429:
        return "Rate limit reached for requests (fake provider). Please try again later."
    if status in (503, 529):
        return "Overloaded"
    if status == 401:
        return "Incorrect API key provided (fake provider)."
    if status == 403:
        return "You are not allowed to use this model (fake provider)."
    if status == 404:
        return "The model does not exist or you do not have access to it."
    if status >= 500:
        return "The server had an error while processing your request."
    return "Invalid request (fake provider)."


def seconds_text(value: float) -> str:
    """A number of seconds as a header value: ``"2"``, ``"0.5"``."""
    return f"{value:g}" if value < 1e15 else str(int(value))
