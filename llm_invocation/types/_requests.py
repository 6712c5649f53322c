"""Requests and responses: options, requests, usage, responses (with the first
specification's request and response types), finish reasons and model information.

Re-exported by `llm_invocation.types`, which documents them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal, final

import msgspec

from ..errors import ErrorInfo, InvalidRequest
from ._messages import (
    CacheControl,
    Message,
    NamedToolChoice,
    ReasoningPart,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

__all__ = [
    "ZERO_USAGE",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "CompletionRequest",
    "CompletionResponse",
    "Feature",
    "FinishReason",
    "InvocationRequest",
    "InvocationResponse",
    "ModelInfo",
    "ModelOptions",
    "Request",
    "Response",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "pause", "error", "other"]
"""Why generation ended, normalised across providers (``WIRE-FORMATS.md`` 6.1).

``pause`` is Anthropic's ``pause_turn`` (send the conversation again to continue). The
provider's own value is kept in the response or chunk metadata as ``native_finish_reason``.
"""

_MAX_STOP: Final = 16


# ---------------------------------------------------------------------------------------------
# Options and requests


def _check_range(field: str, value: float | None, low: float, high: float | None) -> None:
    if value is None or (value >= low and (high is None or value <= high)):
        return  # NaN fails both comparisons and falls through
    bound = f">= {low}" if high is None else f"between {low} and {high}"
    raise InvalidRequest(
        f"{field} must be {bound}, got {value!r}", details={"field": field, "value": value}
    )


@final
class ModelOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Sampling parameters; None leaves the provider's default.

    Attributes:
        temperature: 0 to 2.
        max_tokens: the most tokens to generate, at least 1.
        top_p: nucleus sampling, 0 to 1.
        top_k: sample from the k likeliest tokens, at least 1 (Anthropic, Gemini).
        frequency_penalty: -2 to 2.
        presence_penalty: -2 to 2.
        stop: up to 16 non-empty stop sequences.
        seed: ask for deterministic sampling where supported.
        provider_options: provider-specific body fields, passed through.

    Raises:
        InvalidRequest: when a value is out of range; ``details["field"]`` names it.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    provider_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_range("max_tokens", self.max_tokens, 1, None)
        _check_range("top_p", self.top_p, 0.0, 1.0)
        _check_range("top_k", self.top_k, 1, None)
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        stop = self.stop
        if stop is not None:
            if len(stop) > _MAX_STOP:
                raise InvalidRequest(
                    f"stop takes at most {_MAX_STOP} sequences, got {len(stop)}",
                    details={"field": "stop"},
                )
            if not all(stop):
                raise InvalidRequest("stop sequences must not be empty", details={"field": "stop"})

    def merged(self, other: ModelOptions) -> ModelOptions:
        """Return these options overlaid with every field ``other`` sets.

        ``provider_options`` are merged key by key, ``other``'s keys winning.
        """
        changes: dict[str, Any] = {}
        for field in self.__struct_fields__:
            value = getattr(other, field)
            if value is not None:
                changes[field] = value
        if not changes:
            return self
        if self.provider_options and other.provider_options:
            changes["provider_options"] = {**self.provider_options, **other.provider_options}
        return msgspec.structs.replace(self, **changes)


_DEFAULT_OPTIONS: Final = ModelOptions()


@final
class Request(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One invocation: a model, a conversation and how to answer it.

    Attributes:
        model: the model id, optionally prefixed with its provider (``"openai:gpt-4o"``).
        messages: the conversation, at least one message.
        provider: the provider to use; None lets the client resolve it from the model.
        options: sampling parameters.
        tools: tools the model may call: None offers the client's registered tools (see
            ``docs/tools.md``), a list exactly those (``[]``: none).
        tool_choice: whether and which tools the model may call.
        response_format: the shape of the answer.
        stream: stream the answer (the default), or send one non-streamed request whose
            whole answer comes as one chunk.
        metadata: caller data carried along (not sent to the provider).
        cache: answer from, and store in, the response cache.

    Raises:
        InvalidRequest: when ``model`` or ``messages`` is empty, tool names repeat, a
            `NamedToolChoice` names a tool not in ``tools`` (with ``tools`` None it may name
            a registered tool: the client checks it when it offers the tools), or the tools
            and messages carry more than `CacheControl.MAX_PER_REQUEST` prompt-cache
            breakpoints (``details["locations"]`` lists them).
    """

    model: str
    messages: list[Message]
    provider: str | None = None
    options: ModelOptions = _DEFAULT_OPTIONS
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool = True
    metadata: dict[str, Any] | None = None
    cache: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise InvalidRequest("a request needs a model", details={"field": "model"})
        if not self.messages:
            raise InvalidRequest(
                "a request needs at least one message", details={"field": "messages"}
            )
        names: set[str] = set()
        for tool in self.tools or ():
            if tool.name in names:
                raise InvalidRequest(
                    f"tool name {tool.name!r} is used more than once",
                    details={"field": "tools", "name": tool.name},
                )
            names.add(tool.name)
        choice = self.tool_choice
        if (
            isinstance(choice, NamedToolChoice)
            and self.tools is not None
            and choice.name not in names
        ):
            raise InvalidRequest(
                f"tool_choice names {choice.name!r}, which is not in tools",
                details={"field": "tool_choice", "name": choice.name},
            )
        _check_breakpoints(self)

    @property
    def max_tokens(self) -> int | None:
        """The ``max_tokens`` option."""
        return self.options.max_tokens

    def with_options(self, **changes: Any) -> Request:
        """Return a copy whose options have ``changes`` applied.

        ``request.with_options(temperature=0.2, max_tokens=100)``.

        Raises:
            TypeError: when a name is not a `ModelOptions` field.
            InvalidRequest: when a value is out of range.
        """
        return msgspec.structs.replace(
            self, options=msgspec.structs.replace(self.options, **changes)
        )


InvocationRequest = Request
"""The second specification's name for `Request`."""


def _breakpoints(request: Request) -> Iterator[tuple[int, int | None, int | None]]:
    """The prompt-cache breakpoints (`CacheControl`) of ``request``, in order, each as
    ``(tool, message, content)`` indexes, the ones that do not apply None."""
    for i, tool in enumerate(request.tools or ()):
        if tool.cache_control is not None:
            yield i, None, None
    for i, message in enumerate(request.messages):
        if message.cache_control is not None:
            yield -1, i, None
        content = message.content
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, ReasoningPart) and part.cache_control is not None:
                    yield -1, i, j


def _cache_breakpoints(request: Request) -> list[str]:
    """Where ``request`` carries prompt-cache breakpoints, in order: ``tools[i]``,
    ``messages[i]`` (the message's last block) and ``messages[i].content[j]``."""
    where: list[str] = []
    for tool, message, content in _breakpoints(request):
        if message is None:
            where.append(f"tools[{tool}]")
        elif content is None:
            where.append(f"messages[{message}]")
        else:
            where.append(f"messages[{message}].content[{content}]")
    return where


def _check_breakpoints(request: Request) -> None:
    limit = CacheControl.MAX_PER_REQUEST
    if sum(1 for _ in _breakpoints(request)) <= limit:
        return  # the usual case: counted, not named
    where = _cache_breakpoints(request)
    if len(where) > limit:
        raise InvalidRequest(
            f"a request takes at most {limit} prompt-cache breakpoints (Anthropic's limit), "
            f"got {len(where)}: {', '.join(where)}",
            details={"field": "cache_control", "locations": where},
        )


# ---------------------------------------------------------------------------------------------
# Responses


def _utc(struct: msgspec.Struct, field: str, value: datetime) -> None:
    """Check that ``value`` is timezone-aware and store it converted to UTC."""
    tz = value.tzinfo
    if tz is UTC:
        return
    if tz is None or value.utcoffset() is None:
        raise InvalidRequest(
            f"{field} must be a timezone-aware datetime, got a naive one",
            details={"field": field},
        )
    msgspec.structs.force_setattr(struct, field, value.astimezone(UTC))


@final
class Usage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Token counts and cost of one or more calls, normalised across providers.

    Attributes:
        prompt_tokens: input tokens, *including* cache reads and writes.
        completion_tokens: output tokens, *including* reasoning tokens.
        total_tokens: prompt plus completion; filled in when left at 0.
        cache_read_tokens: input tokens read from the prompt cache.
        cache_write_tokens: input tokens written to the prompt cache.
        cache_write_1h_tokens: the part of ``cache_write_tokens`` written for an hour
            (Anthropic's ``"1h"`` TTL), which costs more than a 5-minute write.
        reasoning_tokens: output tokens spent thinking.
        cost: the cost in US dollars that budgets count; None means unknown, never a
            made-up 0. A settled call's cost is the price book's when it knows the model's
            price, else the provider's ``reported_cost``, else unknown.
        estimated: the counts were estimated locally, not reported by the provider.
        reported_cost: the cost in US dollars the provider itself reported for the call
            (OpenRouter's ``usage.cost``); None when it reported none. Kept as reported,
            beside ``cost``, whichever of the two budgets count.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal | None = None
    estimated: bool = False
    reported_cost: Decimal | None = None

    def __post_init__(self) -> None:
        if not self.total_tokens and (self.prompt_tokens or self.completion_tokens):
            msgspec.structs.force_setattr(
                self, "total_tokens", self.prompt_tokens + self.completion_tokens
            )

    @classmethod
    def zero(cls) -> Usage:
        """Return a usage of nothing at zero cost (priced and reported), the start of a sum."""
        return cls(cost=Decimal(0), reported_cost=Decimal(0))

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages.

        Token counts add up. The cost is the sum when both are known and None when either
        is unknown: an unknown part makes the total unknown; the same goes for
        ``reported_cost``. ``estimated`` is set when either is.
        """
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        reported = (
            None
            if self.reported_cost is None or other.reported_cost is None
            else self.reported_cost + other.reported_cost
        )
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost=cost,
            estimated=self.estimated or other.estimated,
            reported_cost=reported,
        )


ZERO_USAGE: Final = Usage()


@final
class Choice(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One alternative answer of a response."""

    index: int = 0
    message: Message
    finish_reason: FinishReason | None = None

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls of the message (empty when there are none)."""
        return self.message.tool_calls or []


@final
class Response(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A complete answer, whether it was streamed or not.

    Attributes:
        id: the provider's response id.
        provider: the provider that answered.
        model: the model that answered, as the provider names it.
        created: when, timezone-aware (stored in UTC): the provider's creation time when
            it sends one (OpenAI ``created``, Gemini ``createTime``), else the time the whole
            answer had arrived (Anthropic sends none), streamed or not.
        choices: the alternative answers, usually one.
        usage: token counts and cost, when known.
        metadata: provider extras (``native_finish_reason``, ``service_tier``, ...).
        system_fingerprint: OpenAI's backend fingerprint, when given.

    Raises:
        InvalidRequest: when ``created`` is a naive datetime.
    """

    id: str
    provider: str
    model: str
    created: datetime
    choices: list[Choice]
    usage: Usage | None = None
    metadata: dict[str, Any] | None = None
    system_fingerprint: str | None = None

    def __post_init__(self) -> None:
        _utc(self, "created", self.created)

    @property
    def message(self) -> Message:
        """The first choice's message (an empty assistant message when there is no choice)."""
        if self.choices:
            return self.choices[0].message
        return Message(role="assistant")

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.message.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The first choice's tool calls (empty when there are none)."""
        return self.message.tool_calls or []

    @property
    def finish_reason(self) -> FinishReason | None:
        """The first choice's finish reason."""
        return self.choices[0].finish_reason if self.choices else None

    @property
    def reasoning(self) -> str:
        """The first choice's reasoning text."""
        return self.message.reasoning

    def to_completion_response(self) -> CompletionResponse:
        """Return this response in the first specification's completion form."""
        return CompletionResponse(
            id=self.id,
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage or ZERO_USAGE,
            created=self.created,
            model=self.model,
            system_fingerprint=self.system_fingerprint,
            provider=self.provider,
        )

    def to_chat_response(self) -> ChatResponse:
        """Return this response in the first specification's chat form (one message a choice)."""
        return ChatResponse(
            id=self.id,
            messages=[c.message for c in self.choices],
            finish_reason=self.finish_reason,
            usage=self.usage or ZERO_USAGE,
            created=self.created,
            model=self.model,
            system_fingerprint=self.system_fingerprint,
            provider=self.provider,
        )


InvocationResponse = Response
"""The second specification's name for `Response`."""


# ---------------------------------------------------------------------------------------------
# The first specification's request and response types


@final
class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A single-prompt completion (the first specification's ``CompletionRequest``).

    ``options`` are provider-specific fields, passed through as ``provider_options``.
    """

    prompt: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    options: dict[str, Any] | None = None
    model: str | None = None

    def to_request(self, default_model: str) -> Request:
        """Return the equivalent `Request`: one user message, ``metadata["endpoint"]``
        ``"completions"``, and ``default_model`` unless ``model`` is set.

        Raises:
            InvalidRequest: when an option is out of range or there is no model.
        """
        return Request(
            model=self.model or default_model,
            messages=[Message(role="user", content=self.prompt)],
            options=_seed_options(self),
            metadata={"endpoint": "completions"},
        )


@final
class ChatRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A chat completion (the first specification's ``ChatRequest``).

    ``options`` are provider-specific fields, passed through as ``provider_options``.
    """

    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    options: dict[str, Any] | None = None
    model: str | None = None

    def to_request(self, default_model: str) -> Request:
        """Return the equivalent `Request`, with ``default_model`` unless ``model`` is set.

        Raises:
            InvalidRequest: when an option is out of range, or there is no model or message.
        """
        return Request(
            model=self.model or default_model,
            messages=list(self.messages),
            options=_seed_options(self),
        )


def _seed_options(req: CompletionRequest | ChatRequest) -> ModelOptions:
    return ModelOptions(
        temperature=req.temperature,
        max_tokens=req.max_tokens,
        top_p=req.top_p,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        stop=req.stop,
        provider_options=req.options,
    )


@final
class CompletionResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A completion (the first specification's ``CompletionResponse``); also a stream delta.

    Raises:
        InvalidRequest: when ``created`` is a naive datetime.
    """

    id: str
    text: str
    finish_reason: FinishReason | None = None
    usage: Usage = ZERO_USAGE
    created: datetime
    model: str
    system_fingerprint: str | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        _utc(self, "created", self.created)


@final
class ChatResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A chat completion (the first specification's ``ChatResponse``); also a stream delta.

    A delta of a failed stream carries ``error`` (rebuild the exception with
    `llm_invocation.errors.error_from_info`).

    Raises:
        InvalidRequest: when ``created`` is a naive datetime.
    """

    id: str
    messages: list[Message]
    finish_reason: FinishReason | None = None
    usage: Usage = ZERO_USAGE
    created: datetime
    model: str
    system_fingerprint: str | None = None
    provider: str | None = None
    error: ErrorInfo | None = None

    def __post_init__(self) -> None:
        _utc(self, "created", self.created)


# ---------------------------------------------------------------------------------------------
# Models


@final
class Feature(enum.StrEnum):
    """A capability a provider or a model may have."""

    FUNCTION_CALLING = "function_calling"
    PARALLEL_TOOLS = "parallel_tools"
    VISION = "vision"
    JSON_MODE = "json_mode"
    STRUCTURED_OUTPUT = "structured_output"
    MCP = "mcp"
    STREAMING = "streaming"
    REASONING = "reasoning"
    COUNT_TOKENS = "count_tokens"


@final
class ModelInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What is known about one model of one provider.

    Raises:
        InvalidRequest: when ``created`` is a naive datetime.
    """

    id: str
    provider: str
    display_name: str | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    features: frozenset[Feature] = frozenset()
    created: datetime | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.created is not None:
            _utc(self, "created", self.created)

    def supports(self, feature: Feature) -> bool:
        """Whether the model has ``feature``."""
        return feature in self.features
