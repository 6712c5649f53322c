"""The domain types: messages, requests, responses, stream chunks and model information.

Everything here is a frozen, keyword-only `msgspec.Struct` that encodes to compact JSON
(defaults are omitted), so the same values travel between actors, over the WebSocket front
and into the response cache without a second set of models. Content parts are a tagged union
on the ``"type"`` field::

    Request ── messages: list[Message] ── content: str | list[Part]
       │                                   Part = TextPart | ImagePart | ReasoningPart
       ├── options: ModelOptions
       ├── tools: list[ToolSpec], tool_choice: ToolChoice
       └── response_format: ResponseFormat

    StreamChunk ... StreamChunk ──(StreamAggregator)──> Response ── choices: list[Choice]
                                                              └── usage: Usage

Values are validated when they are made *and* when they are decoded (msgspec calls
``__post_init__`` in both cases); a violation raises `llm_invocation.errors.InvalidRequest`.
`StreamChunk` and `ToolCallDelta` have no ``__post_init__``: they are on the hot path.

The types of the first specification (`CompletionRequest`, `ChatRequest`,
`CompletionResponse`, `ChatResponse`) are thin views that convert to and from `Request` and
`Response`.

Finish reasons and usage are normalised across providers (see ``WIRE-FORMATS.md`` 6.1-6.2):
``Usage.prompt_tokens`` includes cached tokens, ``Usage.completion_tokens`` includes reasoning
tokens, and the provider's own finish reason goes in ``metadata["native_finish_reason"]``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal, TypeVar, cast, final, get_args

import msgspec

from .errors import ErrorInfo, InvalidRequest, error_from_info

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "CompletionRequest",
    "CompletionResponse",
    "Feature",
    "FinishReason",
    "ImagePart",
    "InvocationRequest",
    "InvocationResponse",
    "Message",
    "ModelInfo",
    "ModelOptions",
    "NamedToolChoice",
    "Part",
    "ReasoningPart",
    "Request",
    "Response",
    "ResponseFormat",
    "Role",
    "StreamAggregator",
    "StreamChunk",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolSpec",
    "Usage",
    "assistant",
    "developer",
    "from_json",
    "system",
    "to_json",
    "tool_result",
    "user",
]

T = TypeVar("T")

Role = Literal["system", "developer", "user", "assistant", "tool"]
"""Who wrote a message. ``developer`` is OpenAI's successor of ``system`` for o-series models."""

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "pause", "error", "other"]
"""Why generation ended, normalised across providers (``WIRE-FORMATS.md`` 6.1).

``pause`` is Anthropic's ``pause_turn`` (send the conversation again to continue). The
provider's own value is kept in the response or chunk metadata as ``native_finish_reason``.
"""

_ROLES: Final[frozenset[str]] = frozenset(get_args(Role))
_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MAX_STOP: Final = 16


# ---------------------------------------------------------------------------------------------
# Content parts


@final
class TextPart(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag="text"
):
    """A piece of text content."""

    text: str


@final
class ImagePart(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag="image"
):
    """An image, by URL or inline as base64 text.

    Exactly one of ``url`` and ``data`` is set; ``data`` needs ``media_type``. Prefer the
    constructors `ImagePart.from_url` and `ImagePart.from_bytes`.

    Raises:
        InvalidRequest: when both or neither of ``url`` and ``data`` are set, or ``data`` is
            set without ``media_type`` (on construction and on decode).
    """

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: Literal["auto", "low", "high"] | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.data is None):
            raise InvalidRequest(
                "an image part needs exactly one of url and data",
                details={"field": "url" if self.url is None else "data"},
            )
        if self.data is not None and not self.media_type:
            raise InvalidRequest(
                "an image part with inline data needs a media_type (for example 'image/png')",
                details={"field": "media_type"},
            )

    @classmethod
    def from_url(cls, url: str, detail: Literal["auto", "low", "high"] | None = None) -> ImagePart:
        """Make an image part that refers to ``url``.

        A ``data:<media type>;base64,<data>`` URL is split into inline ``data`` and
        ``media_type``, so providers that only take inline images (Anthropic) can use it.

        Raises:
            InvalidRequest: when a ``data:`` URL is not base64 with a media type.
        """
        if url.startswith("data:"):
            head, sep, payload = url[5:].partition(",")
            media_type, _, encoding = head.partition(";")
            if not sep or encoding != "base64" or not media_type:
                raise InvalidRequest(
                    "a data: image URL must look like data:<media type>;base64,<data>",
                    details={"field": "url"},
                )
            return cls(data=payload, media_type=media_type, detail=detail)
        return cls(url=url, detail=detail)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        media_type: str,
        *,
        detail: Literal["auto", "low", "high"] | None = None,
    ) -> ImagePart:
        """Make an inline image part from raw image bytes (base64-encoded here).

        Raises:
            InvalidRequest: when ``media_type`` is empty.
        """
        return cls(
            data=base64.b64encode(data).decode("ascii"), media_type=media_type, detail=detail
        )

    def as_url(self) -> str:
        """Return the URL, or a ``data:`` URL for an inline image (what OpenAI accepts)."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.data}"

    def to_bytes(self) -> bytes:
        """Return the raw bytes of an inline image.

        Raises:
            InvalidRequest: when the image is a URL, or ``data`` is not valid base64.
        """
        if self.data is None:
            raise InvalidRequest(
                "this image part is a URL, not inline data", details={"field": "data"}
            )
        try:
            return base64.b64decode(self.data, validate=True)
        except binascii.Error as exc:
            raise InvalidRequest(
                f"image data is not valid base64: {exc}", details={"field": "data"}
            ) from exc


@final
class ReasoningPart(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag="reasoning"
):
    """Model thinking that must be echoed back verbatim in tool loops.

    Anthropic thinking blocks carry a ``signature`` that the API verifies when the block is
    sent back; a redacted thinking block has ``redacted=True`` and its opaque ``data`` in
    ``signature``. Gemini's ``thoughtSignature`` travels in ``signature`` too.
    """

    text: str = ""
    signature: str | None = None
    redacted: bool = False


Part = TextPart | ImagePart | ReasoningPart
"""One piece of message content, tagged by its ``"type"`` field in JSON."""


# ---------------------------------------------------------------------------------------------
# Messages and tools


@final
class ToolCall(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A call of a tool the model asked for.

    Attributes:
        id: the provider's call id; a tool result answers it with ``tool_call_id``.
        name: the tool's name.
        arguments: the arguments as the JSON text the model produced, unparsed.
        metadata: provider data that must round-trip (Gemini's ``thought_signature``).
    """

    id: str
    name: str
    arguments: str = "{}"
    metadata: dict[str, Any] | None = None

    def parsed_arguments(self) -> dict[str, Any]:
        """Decode ``arguments``; an empty or blank string means no arguments.

        Raises:
            InvalidRequest: when ``arguments`` is not valid JSON or not a JSON object.
        """
        if not self.arguments.strip():
            return {}
        details = {"tool_call_id": self.id, "tool": self.name}
        try:
            value = _JSON_DECODER.decode(self.arguments)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(
                f"arguments of tool call {self.name!r} are not valid JSON: {exc}", details=details
            ) from exc
        if not isinstance(value, dict):
            raise InvalidRequest(
                f"arguments of tool call {self.name!r} must be a JSON object, "
                f"got {type(value).__name__}",
                details=details,
            )
        return cast("dict[str, Any]", value)


@final
class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message of a conversation.

    Attributes:
        role: who wrote it.
        content: plain text, a list of parts (text, images, reasoning), or None (an assistant
            message that only calls tools).
        name: an optional participant name.
        tool_calls: the tools an assistant message calls.
        tool_call_id: the call a tool message answers.
        is_error: a tool message that reports a failed call.
        metadata: provider data that must round-trip with the message.

    Raises:
        InvalidRequest: for an unknown role, a tool message without ``tool_call_id``,
            ``tool_calls`` on a non-assistant message, or ``tool_call_id`` / ``is_error`` on a
            non-tool message (on construction and on decode).
    """

    role: Role
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    is_error: bool = False
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        role = self.role
        if role not in _ROLES:
            raise InvalidRequest(
                f"unknown message role {role!r}; expected one of {sorted(_ROLES)}",
                details={"field": "role"},
            )
        if role == "tool":
            if not self.tool_call_id:
                raise InvalidRequest(
                    "a tool message needs the tool_call_id of the call it answers",
                    details={"field": "tool_call_id"},
                )
        elif self.tool_call_id is not None or self.is_error:
            field = "tool_call_id" if self.tool_call_id is not None else "is_error"
            raise InvalidRequest(
                f"{field} is only valid on a tool message, not on a {role} message",
                details={"field": field},
            )
        if self.tool_calls and role != "assistant":
            raise InvalidRequest(
                f"tool_calls are only valid on an assistant message, not on a {role} message",
                details={"field": "tool_calls"},
            )

    @property
    def text(self) -> str:
        """The text content: the string, or every `TextPart` joined."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join([p.text for p in content if isinstance(p, TextPart)])

    @property
    def images(self) -> list[ImagePart]:
        """The image parts, in order."""
        content = self.content
        if content is None or isinstance(content, str):
            return []
        return [p for p in content if isinstance(p, ImagePart)]

    @property
    def reasoning(self) -> str:
        """The text of every `ReasoningPart` joined."""
        content = self.content
        if content is None or isinstance(content, str):
            return ""
        return "".join([p.text for p in content if isinstance(p, ReasoningPart)])


def system(text: str) -> Message:
    """Make a system message."""
    return Message(role="system", content=text)


def developer(text: str) -> Message:
    """Make a developer message (OpenAI's successor of the system message)."""
    return Message(role="developer", content=text)


def user(content: str | Part | Sequence[Part], *more: Part, name: str | None = None) -> Message:
    """Make a user message.

    ``user("Hi")`` has plain text content; ``user("What is this?", ImagePart.from_url(u))``
    and ``user([part, ...])`` have a list of parts.
    """
    parts: list[Part]
    if isinstance(content, str):
        if not more:
            return Message(role="user", content=content, name=name)
        parts = [TextPart(text=content)]
    elif isinstance(content, TextPart | ImagePart | ReasoningPart):
        parts = [content]
    else:
        parts = list(content)
    parts.extend(more)
    return Message(role="user", content=parts, name=name)


def assistant(text: str | None = None, *, tool_calls: Sequence[ToolCall] | None = None) -> Message:
    """Make an assistant message, with text, tool calls or both."""
    return Message(
        role="assistant", content=text, tool_calls=list(tool_calls) if tool_calls else None
    )


def tool_result(
    tool_call_id: str,
    content: str | Any,
    *,
    name: str | None = None,
    is_error: bool = False,
) -> Message:
    """Make the tool message that answers the call ``tool_call_id``.

    Args:
        tool_call_id: the id of the `ToolCall` this answers.
        content: a string as is; a part or a list of parts as content parts (tools that return
            images); anything else is encoded to JSON text with msgspec.
        name: the tool's name (some providers want it).
        is_error: the tool failed and ``content`` describes how.

    Raises:
        InvalidRequest: when ``tool_call_id`` is empty or ``content`` cannot be encoded.
    """
    body: str | list[Part] | None
    if isinstance(content, str):
        body = content
    elif isinstance(content, TextPart | ImagePart | ReasoningPart):
        body = [content]
    else:
        body = _parts_or_none(content)
        if body is None:
            try:
                body = _ENCODER.encode(content).decode()
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidRequest(
                    f"the result of tool call {tool_call_id!r} cannot be encoded as JSON: {exc}",
                    details={"field": "content", "tool_call_id": tool_call_id},
                ) from exc
    return Message(
        role="tool", content=body, tool_call_id=tool_call_id, name=name, is_error=is_error
    )


def _parts_or_none(value: Any) -> list[Part] | None:
    """Return ``value`` as a list of parts when it is a non-empty list or tuple of parts."""
    if not isinstance(value, list | tuple):
        return None
    items = cast("Sequence[object]", value)
    if items and all(isinstance(p, TextPart | ImagePart | ReasoningPart) for p in items):
        return list(cast("Sequence[Part]", items))
    return None


def _empty_object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


@final
class ToolSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tool the model may call, as sent to the provider.

    Attributes:
        name: 1-64 characters of ``[a-zA-Z0-9_-]`` (the strictest provider rule).
        description: what the tool does, for the model.
        parameters: the JSON schema of the arguments object.
        strict: ask for schema-exact arguments (OpenAI ``strict``); None leaves the default.

    Raises:
        InvalidRequest: when ``name`` does not match the rule above.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=_empty_object_schema)
    strict: bool | None = None

    def __post_init__(self) -> None:
        if _TOOL_NAME.fullmatch(self.name) is None:
            raise InvalidRequest(
                f"invalid tool name {self.name!r}: use 1-64 letters, digits, '_' or '-'",
                details={"field": "name", "name": self.name},
            )


@final
class NamedToolChoice(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Force the model to call the tool called ``name``."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice
"""Whether and which tools the model may call."""


@final
class ResponseFormat(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The shape of the answer: free text, any JSON object, or JSON matching a schema.

    Build it with `ResponseFormat.json`, `ResponseFormat.schema` or `ResponseFormat.from_type`.

    Raises:
        InvalidRequest: when ``type`` is ``json_schema`` without ``json_schema``, or a schema
            is given with another type.
    """

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    json_schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if self.type == "json_schema":
            if not self.json_schema:
                raise InvalidRequest(
                    "a json_schema response format needs a json_schema",
                    details={"field": "json_schema"},
                )
        elif self.json_schema is not None:
            raise InvalidRequest(
                f"json_schema is only valid with type 'json_schema', not {self.type!r}",
                details={"field": "json_schema"},
            )

    @classmethod
    def json(cls) -> ResponseFormat:
        """Ask for any JSON object (JSON mode)."""
        return cls(type="json_object")

    @classmethod
    def schema(
        cls,
        name: str,
        schema: dict[str, Any],
        *,
        strict: bool | None = True,
        description: str | None = None,
    ) -> ResponseFormat:
        """Ask for JSON that matches ``schema`` (structured output).

        Raises:
            InvalidRequest: when ``schema`` is empty.
        """
        return cls(
            type="json_schema",
            name=name,
            json_schema=schema,
            strict=strict,
            description=description,
        )

    @classmethod
    def from_type(
        cls,
        name: str,
        tp: Any,
        *,
        strict: bool | None = None,
        description: str | None = None,
    ) -> ResponseFormat:
        """Ask for JSON that decodes as the Python type ``tp`` (a Struct, dataclass, ...).

        The schema comes from `msgspec.json.schema`. When its root is a reference into
        ``$defs`` (as for a Struct), the referenced definition is moved to the root, because
        providers want an object schema there; ``$defs`` keeps the other definitions (and the
        root's own, when the type is recursive).
        ``strict`` defaults to None: msgspec schemas mark defaulted fields optional, which
        OpenAI's strict mode refuses.

        Raises:
            TypeError: when msgspec cannot describe ``tp``.
        """
        schema: dict[str, Any] = msgspec.json.schema(tp)
        ref: Any = schema.get("$ref")
        defs: Any = schema.get("$defs")
        prefix = "#/$defs/"
        if isinstance(ref, str) and ref.startswith(prefix) and isinstance(defs, dict):
            all_defs = cast("dict[str, Any]", defs)
            root_name = ref.removeprefix(prefix)
            root: Any = all_defs.get(root_name)
            if isinstance(root, dict):
                schema = dict(cast("dict[str, Any]", root))
                others = {k: v for k, v in all_defs.items() if k != root_name}
                if f'"{ref}"'.encode() in _ENCODER.encode([schema, others]):
                    schema["$defs"] = all_defs  # recursive: the root refers to itself
                elif others:
                    schema["$defs"] = others
        return cls.schema(name, schema, strict=strict, description=description)


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
        tools: tools the model may call.
        tool_choice: whether and which tools the model may call.
        response_format: the shape of the answer.
        stream: stream the answer (the default) or wait for all of it.
        metadata: caller data carried along (not sent to the provider).
        cache: answer from, and store in, the response cache.

    Raises:
        InvalidRequest: when ``model`` or ``messages`` is empty, tool names repeat, or a
            `NamedToolChoice` names a tool not in ``tools``.
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
        if isinstance(choice, NamedToolChoice) and choice.name not in names:
            raise InvalidRequest(
                f"tool_choice names {choice.name!r}, which is not in tools",
                details={"field": "tool_choice", "name": choice.name},
            )

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
        reasoning_tokens: output tokens spent thinking.
        cost: the cost in US dollars; None means unknown, never a made-up 0.
        estimated: the counts were estimated locally, not reported by the provider.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal | None = None
    estimated: bool = False

    def __post_init__(self) -> None:
        if not self.total_tokens and (self.prompt_tokens or self.completion_tokens):
            msgspec.structs.force_setattr(
                self, "total_tokens", self.prompt_tokens + self.completion_tokens
            )

    @classmethod
    def zero(cls) -> Usage:
        """Return a usage of nothing at zero cost, the start of a sum."""
        return cls(cost=Decimal(0))

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages.

        Token counts add up. The cost is the sum when both are known and None when either
        is unknown: an unknown part makes the total unknown. ``estimated`` is set when either
        is.
        """
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost=cost,
            estimated=self.estimated or other.estimated,
        )


_ZERO_USAGE: Final = Usage()


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
        created: when, timezone-aware (stored in UTC).
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
            usage=self.usage or _ZERO_USAGE,
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
            usage=self.usage or _ZERO_USAGE,
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
    usage: Usage = _ZERO_USAGE
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
    usage: Usage = _ZERO_USAGE
    created: datetime
    model: str
    system_fingerprint: str | None = None
    provider: str | None = None
    error: ErrorInfo | None = None

    def __post_init__(self) -> None:
        _utc(self, "created", self.created)


# ---------------------------------------------------------------------------------------------
# Streaming


@final
class ToolCallDelta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A fragment of a streamed tool call, OpenAI style.

    The first fragment of a call has ``index``, ``id`` and ``name``; later ones only ``index``
    and a piece of ``arguments``. Fragments are accumulated by ``index``, not by ``id``.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    metadata: dict[str, Any] | None = None


@final
class StreamChunk(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One streamed increment of a response.

    Attributes:
        id: the provider's response id (often only on the first chunks).
        provider: the provider answering.
        model: the model answering.
        choice: which choice this increment belongs to.
        text: a piece of answer text.
        reasoning: a piece of thinking text.
        reasoning_signature: the signature that closes the current thinking block.
        tool_calls: tool-call fragments.
        finish_reason: set on the chunk that ends the choice.
        usage: usage as the provider reports it mid-stream: cumulative or final, so the last
            non-None usage of a stream is its usage.
        error: the stream failed; no chunk follows.
        metadata: provider extras (``native_finish_reason``, ...); later chunks win per key.
    """

    id: str = ""
    provider: str = ""
    model: str = ""
    choice: int = 0
    text: str = ""
    reasoning: str = ""
    reasoning_signature: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    metadata: dict[str, Any] | None = None

    def to_chat_response(self, *, created: datetime) -> ChatResponse:
        """Return this increment as a first-specification ``ChatResponse`` delta."""
        return ChatResponse(
            id=self.id,
            messages=[Message(role="assistant", content=self.text)],
            finish_reason=self.finish_reason,
            usage=self.usage or _ZERO_USAGE,
            created=created,
            model=self.model,
            provider=self.provider or None,
            error=self.error,
        )

    def to_completion_response(self, *, created: datetime) -> CompletionResponse:
        """Return this increment as a first-specification ``CompletionResponse`` delta."""
        return CompletionResponse(
            id=self.id,
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage or _ZERO_USAGE,
            created=created,
            model=self.model,
            provider=self.provider or None,
        )


_TEXT: Final = 1
_REASONING: Final = 2


class _CallState:
    __slots__ = ("args", "id", "metadata", "name")

    def __init__(self, delta: ToolCallDelta) -> None:
        self.id = delta.id or None
        self.name = delta.name or None
        self.args: list[str] = [delta.arguments] if delta.arguments else []
        self.metadata: dict[str, Any] | None = dict(delta.metadata) if delta.metadata else None


class _ChoiceState:
    __slots__ = ("buf", "calls", "finish_reason", "kind", "segments")

    def __init__(self) -> None:
        # Finished runs of text or reasoning, in arrival order: (kind, text, signature).
        self.segments: list[tuple[int, str, str | None]] = []
        self.kind = 0  # kind of the run being collected in buf: 0 (none), _TEXT, _REASONING
        self.buf: list[str] = []
        self.calls: dict[int, list[_CallState]] = {}
        self.finish_reason: FinishReason | None = None

    def close_run(self, signature: str | None = None) -> None:
        if self.kind:
            self.segments.append((self.kind, "".join(self.buf), signature))
            self.buf = []
            self.kind = 0

    def add_calls(self, deltas: list[ToolCallDelta]) -> None:
        calls = self.calls
        for delta in deltas:
            slot = calls.get(delta.index)
            if slot is None:
                calls[delta.index] = [_CallState(delta)]
                continue
            call = slot[-1]
            if delta.id and call.id and delta.id != call.id:
                # A different id at a taken index: a server that numbers every call 0.
                slot.append(_CallState(delta))
                continue
            # A repeated id or name (OpenRouter re-sends both) must not be appended again.
            if call.id is None and delta.id:
                call.id = delta.id
            if call.name is None and delta.name:
                call.name = delta.name
            if delta.arguments:
                call.args.append(delta.arguments)
            if delta.metadata:
                if call.metadata is None:
                    call.metadata = dict(delta.metadata)
                else:
                    call.metadata.update(delta.metadata)

    def text(self) -> str:
        pieces = [text for kind, text, _ in self.segments if kind == _TEXT]
        if self.kind == _TEXT:
            pieces.extend(self.buf)
        return "".join(pieces)

    def choice(self, index: int) -> Choice:
        self.close_run()
        text_only = True
        for kind, _, _ in self.segments:
            if kind != _TEXT:
                text_only = False
                break
        content: str | list[Part] | None
        if text_only:
            content = "".join([text for _, text, _ in self.segments]) or None
        else:
            content = [
                TextPart(text=text)
                if kind == _TEXT
                else ReasoningPart(text=text, signature=signature)
                for kind, text, signature in self.segments
            ]
        tool_calls: list[ToolCall] = []
        for call_index in sorted(self.calls):
            for n, call in enumerate(self.calls[call_index]):
                arguments = "".join(call.args)
                tool_calls.append(
                    ToolCall(
                        id=call.id or (f"call_{call_index}_{n}" if n else f"call_{call_index}"),
                        name=call.name or "",
                        arguments=arguments if arguments.strip() else "{}",
                        metadata=call.metadata,
                    )
                )
        finish = self.finish_reason
        if finish is None and tool_calls:
            finish = "tool_calls"
        return Choice(
            index=index,
            message=Message(role="assistant", content=content, tool_calls=tool_calls or None),
            finish_reason=finish,
        )


class StreamAggregator:
    """Collect the chunks of a stream into a complete `Response`.

    ``add`` only appends to lists; the strings are joined once, by ``response``. Not
    thread-safe: one aggregator belongs to one task.

    - text and reasoning are concatenated, in arrival order; a ``reasoning_signature`` closes
      the current thinking block, so each signed block is echoed back as its own part;
    - tool calls are accumulated by ``index`` and come out ordered by it. ``id`` and
      ``name`` come from the first fragment that has them, and a fragment repeating them
      does not repeat the name; a fragment with a *different* id at a taken index starts a
      new call. Empty arguments become ``"{}"``; a call without an id gets ``call_<index>``;
    - the finish reason of a choice is its last non-None one (``tool_calls`` when none came
      and the choice called tools); usage is the last non-None one;
    - id, provider and model come from the first chunk that has them; metadata is merged,
      later chunks winning per key;
    - every ``choice`` index gets its own `Choice`.
    """

    __slots__ = (
        "_choices",
        "_error",
        "_id",
        "_last",
        "_last_index",
        "_metadata",
        "_model",
        "_provider",
        "_usage",
    )

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._last_index = -1
        self._last: _ChoiceState | None = None
        self._id = ""
        self._provider = ""
        self._model = ""
        self._usage: Usage | None = None
        self._error: ErrorInfo | None = None
        self._metadata: dict[str, Any] | None = None

    def add(self, chunk: StreamChunk) -> None:
        """Add the next chunk of the stream."""
        index = chunk.choice
        state = self._last
        if state is None or index != self._last_index:
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            self._last = state
            self._last_index = index
        if chunk.reasoning:
            if state.kind != _REASONING:
                state.close_run()
                state.kind = _REASONING
            state.buf.append(chunk.reasoning)
        if chunk.reasoning_signature is not None:
            if state.kind != _REASONING:
                state.close_run()
                state.kind = _REASONING
            state.close_run(chunk.reasoning_signature)
        if chunk.text:
            if state.kind != _TEXT:
                state.close_run()
                state.kind = _TEXT
            state.buf.append(chunk.text)
        if chunk.tool_calls:
            state.add_calls(chunk.tool_calls)
        if chunk.finish_reason is not None:
            state.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if not self._id and chunk.id:
            self._id = chunk.id
        if not self._provider and chunk.provider:
            self._provider = chunk.provider
        if not self._model and chunk.model:
            self._model = chunk.model
        if chunk.metadata:
            if self._metadata is None:
                self._metadata = dict(chunk.metadata)
            else:
                self._metadata.update(chunk.metadata)
        if chunk.error is not None and self._error is None:
            self._error = chunk.error

    @property
    def text(self) -> str:
        """The text of the first choice so far."""
        state = self._choices.get(0)
        return state.text() if state is not None else ""

    @property
    def usage(self) -> Usage | None:
        """The last usage seen so far (what a cancelled stream settles)."""
        return self._usage

    @property
    def error(self) -> ErrorInfo | None:
        """The first error a chunk carried, if any."""
        return self._error

    def response(
        self,
        *,
        id: str = "",
        provider: str = "",
        model: str = "",
        created: datetime | None = None,
    ) -> Response:
        """Build the aggregate response.

        Args:
            id: the id to use when no chunk carried one.
            provider: the provider to use when no chunk carried one.
            model: the model to use when no chunk carried one.
            created: the creation time; now (UTC) by default.

        Raises:
            LLMError: the typed error (`llm_invocation.errors.error_from_info`) when a chunk
                carried an error.
            InvalidRequest: when ``created`` is naive.
        """
        if self._error is not None:
            raise error_from_info(self._error)
        states = self._choices or {0: _ChoiceState()}
        return Response(
            id=self._id or id,
            provider=self._provider or provider,
            model=self._model or model,
            created=created if created is not None else datetime.now(UTC),
            choices=[states[i].choice(i) for i in sorted(states)],
            usage=self._usage,
            metadata=self._metadata,
        )


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


# ---------------------------------------------------------------------------------------------
# JSON

_ENCODER: Final = msgspec.json.Encoder()
_JSON_DECODER: Final = msgspec.json.Decoder()
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def to_json(obj: Any) -> bytes:
    """Encode any of these types (or plain data) to compact JSON.

    Raises:
        TypeError: when ``obj`` holds something msgspec cannot encode.
    """
    return _ENCODER.encode(obj)


def from_json(data: bytes | str, type: type[T]) -> T:
    """Decode JSON as ``type`` (decoders are made once per type and reused).

    Raises:
        InvalidRequest: when ``data`` is not JSON, does not match ``type`` (``details["path"]``
            is the msgspec path, like ``$.messages[0].role``), or fails a type's validation.
    """
    decoder = _DECODERS.get(type)
    if decoder is None:
        decoder = _DECODERS[type] = msgspec.json.Decoder(type)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        _, sep, path = message.rpartition(" - at `")
        details = {"path": path.rstrip("`")} if sep else {}
        raise InvalidRequest(f"invalid JSON value: {message}", details=details) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc
