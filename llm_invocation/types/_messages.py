"""Message content and JSON: roles, content parts, tool calls, messages and their helpers,
tool specs, tool choice, response formats, and `to_json` / `from_json`.

Re-exported by `llm_invocation.types`, which documents them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal, TypeVar, cast, final, get_args

import msgspec

from ..errors import InvalidRequest

__all__ = [
    "CacheControl",
    "ImagePart",
    "Message",
    "NamedToolChoice",
    "Part",
    "ReasoningPart",
    "ResponseFormat",
    "Role",
    "TextPart",
    "ToolCall",
    "ToolChoice",
    "ToolSpec",
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

_ROLES: Final[frozenset[str]] = frozenset(get_args(Role))
_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")


# ---------------------------------------------------------------------------------------------
# Prompt caching

_CACHE_TTLS: Final = ("5m", "1h")


@final
class CacheControl(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A prompt-cache breakpoint: cache the prompt up to and including the marked block.

    Put one on a `TextPart` or `ImagePart`, a `Message` (its last block: for a tool message,
    the tool result; a string system prompt is then sent as a text block), or a `ToolSpec`.
    Anthropic caches only at such breakpoints (``cache_control`` on the block), at most
    `MAX_PER_REQUEST` per request, in prompt order tools, system, messages. OpenAI and Gemini
    cache prompt prefixes by themselves and ignore the markers.

    Attributes:
        ttl: how long the cache entry lives: ``"5m"`` (the default) or ``"1h"``. On
            Anthropic a write costs 1.25 times the input price for 5 minutes and twice it for
            an hour; a read costs a tenth. A ``"1h"`` breakpoint must come before every
            ``"5m"`` one in prompt order.

    Raises:
        InvalidRequest: when ``ttl`` is not ``"5m"`` or ``"1h"``.
    """

    MAX_PER_REQUEST: ClassVar[int] = 4
    """The most breakpoints one request may carry (Anthropic's limit)."""

    ttl: Literal["5m", "1h"] = "5m"

    def __post_init__(self) -> None:
        if self.ttl not in _CACHE_TTLS:
            raise InvalidRequest(
                f"invalid cache ttl {self.ttl!r}: use '5m' or '1h'",
                details={"field": "cache_control.ttl", "value": self.ttl},
            )


# ---------------------------------------------------------------------------------------------
# Content parts


@final
class TextPart(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag="text"
):
    """A piece of text content; ``cache_control`` makes it a prompt-cache breakpoint."""

    text: str
    cache_control: CacheControl | None = None


@final
class ImagePart(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag="image"
):
    """An image, by URL or inline as base64 text.

    Exactly one of ``url`` and ``data`` is set; ``data`` needs ``media_type``. Prefer the
    constructors `ImagePart.from_url` and `ImagePart.from_bytes`. ``cache_control`` makes it
    a prompt-cache breakpoint.

    Raises:
        InvalidRequest: when both or neither of ``url`` and ``data`` are set, or ``data`` is
            set without ``media_type`` (on construction and on decode).
    """

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: Literal["auto", "low", "high"] | None = None
    cache_control: CacheControl | None = None

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
    ``signature``. Gemini's ``thoughtSignature`` travels in ``signature`` too, and so does an
    OpenAI Responses reasoning item (its id and encrypted content).

    ``provider`` names the provider entry whose answer the part came from: every decoder sets
    it. A signature means something only to the provider that made it, so an encoder sends
    ``signature`` (and redacted data) only for a part of its own provider or a part with no
    ``provider`` (one built by hand). Another provider's part goes without its opaque data:
    Gemini gets its text as a thought, Chat Completions servers that take reasoning text get
    the text, and Anthropic and the Responses API, which accept only their own signed
    reasoning, get nothing of it.
    """

    text: str = ""
    signature: str | None = None
    redacted: bool = False
    provider: str | None = None

    def belongs_to(self, provider: str | None) -> bool:
        """Whether this part's opaque data may go to ``provider`` (a provider entry's name).

        True when the part came from ``provider``, when it has no ``provider`` (built by
        hand) and when ``provider`` is None (the encoder was not told whom it encodes for).
        """
        return self.provider is None or provider is None or self.provider == provider


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
        cache_control: make the message's last block a prompt-cache breakpoint (a tool
            message's tool result); see `CacheControl`.

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
    cache_control: CacheControl | None = None

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


def system(text: str, *, cache_control: CacheControl | None = None) -> Message:
    """Make a system message; ``cache_control`` makes it a prompt-cache breakpoint."""
    return Message(role="system", content=text, cache_control=cache_control)


def developer(text: str, *, cache_control: CacheControl | None = None) -> Message:
    """Make a developer message (OpenAI's successor of the system message)."""
    return Message(role="developer", content=text, cache_control=cache_control)


def user(
    content: str | Part | Sequence[Part],
    *more: Part,
    name: str | None = None,
    cache_control: CacheControl | None = None,
) -> Message:
    """Make a user message.

    ``user("Hi")`` has plain text content; ``user("What is this?", ImagePart.from_url(u))``
    and ``user([part, ...])`` have a list of parts. ``cache_control`` makes the message's
    last block a prompt-cache breakpoint.
    """
    parts: list[Part]
    if isinstance(content, str):
        if not more:
            return Message(role="user", content=content, name=name, cache_control=cache_control)
        parts = [TextPart(text=content)]
    elif isinstance(content, TextPart | ImagePart | ReasoningPart):
        parts = [content]
    else:
        parts = list(content)
    parts.extend(more)
    return Message(role="user", content=parts, name=name, cache_control=cache_control)


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
    cache_control: CacheControl | None = None,
) -> Message:
    """Make the tool message that answers the call ``tool_call_id``.

    Args:
        tool_call_id: the id of the `ToolCall` this answers.
        content: a string as is; a part or a list of parts as content parts (tools that return
            images); anything else is encoded to JSON text with msgspec.
        name: the tool's name (some providers want it).
        is_error: the tool failed and ``content`` describes how.
        cache_control: make the result a prompt-cache breakpoint (see `CacheControl`).

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
        role="tool",
        content=body,
        tool_call_id=tool_call_id,
        name=name,
        is_error=is_error,
        cache_control=cache_control,
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
        cache_control: make the tool definitions up to this one a prompt-cache breakpoint
            (see `CacheControl`).

    Raises:
        InvalidRequest: when ``name`` does not match the rule above.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=_empty_object_schema)
    strict: bool | None = None
    cache_control: CacheControl | None = None

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
