"""The OpenAI Responses API wire shapes we read, and how they map to our types.

WIRE-FORMATS 2 and 6: a response is ``{"id": "resp_...", "status", "output": [items],
"usage", "incomplete_details", "error", ...}``; its output items are ``message`` (content
``output_text`` and ``refusal`` parts), ``reasoning`` (``summary`` texts, raw
``reasoning_text`` content, ``encrypted_content``) and ``function_call`` (``call_id``,
``name``, ``arguments``). Items of other types (built-in tools) are skipped by the decoder
and named in the response's ``metadata["output_types"]``, never dropped unsaid.

The Structs mirror only the fields we read; msgspec skips every other field. The decoders
are made once, here, and shared. `ResponseBuilder` turns items into our content in the order
a stream would deliver them, so a decoded body and the aggregate of the same answer streamed
are equal by construction of both sides (`decode_body` and the stream decoder use it).

A reasoning item's ``encrypted_content`` travels in `ReasoningPart.signature` as
``"<item id>:<encrypted content>"`` (see `reasoning_signature`), so a tool loop echoes the
item back as the API wants it when ``store`` is false.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from ..errors import LLMError, ProviderError
from ..types import (
    Choice,
    FinishReason,
    Message,
    Part,
    ReasoningPart,
    Response,
    TextPart,
    ToolCall,
    Usage,
)
from ._base import JSON_ERRORS, checked_usage, unix_to_datetime
from ._openai_errors import classify_stream_error
from ._openai_wire import CompletionDetails, PromptDetails

__all__ = [
    "EVENT_DECODER",
    "ITEM_DECODER",
    "RESPONSE_DECODER",
    "ContentPart",
    "OutputItem",
    "ResponseBuilder",
    "StreamEvent",
    "WireResponse",
    "WireUsage",
    "decode_body",
    "decode_response_bytes",
    "failure_error",
    "finish_of",
    "parse_signature",
    "reasoning_signature",
    "reasoning_texts",
    "usage_from_wire",
]

_SIGNATURE_PREFIX: Final = "rs_"
_SEPARATOR: Final = ":"
_PART_SEPARATOR: Final = "\n\n"


class ContentPart(msgspec.Struct, gc=False):
    """A part of a ``message`` item (``output_text``, ``refusal``) or of a ``reasoning``
    item's ``summary`` (``summary_text``) and ``content`` (``reasoning_text``)."""

    type: str = ""
    text: str | None = None
    refusal: str | None = None


class OutputItem(msgspec.Struct, gc=False):
    """One element of ``output``."""

    type: str = ""
    id: str | None = None
    status: str | None = None
    content: list[ContentPart] | None = None
    summary: list[ContentPart] | None = None
    encrypted_content: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


class WireUsage(msgspec.Struct, gc=False):
    """``usage`` of a response."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    # The same shapes as chat completions' ``prompt_tokens_details`` and
    # ``completion_tokens_details``.
    input_tokens_details: PromptDetails | None = None
    output_tokens_details: CompletionDetails | None = None


class IncompleteDetails(msgspec.Struct, gc=False):
    """``incomplete_details``: why a response stopped short."""

    reason: str | None = None


class WireResponse(msgspec.Struct, gc=False):
    """A response object: a whole body, or the ``response`` of a lifecycle event.

    ``output`` is None when the server left it out (the stream then told the items).
    """

    id: str = ""
    object: str = ""
    created_at: float | None = None
    status: str | None = None
    model: str = ""
    output: list[OutputItem] | None = None
    usage: WireUsage | None = None
    incomplete_details: IncompleteDetails | None = None
    error: Any = None
    service_tier: str | None = None


class StreamEvent(msgspec.Struct, gc=False):
    """One event of a stream. ``item``, ``response`` and ``part`` stay raw until an event
    that needs them is met; loosely typed fields are checked where they are used."""

    type: str = ""
    delta: Any = None
    output_index: Any = None
    item_id: Any = None
    summary_index: Any = None
    content_index: Any = None
    text: Any = None
    arguments: Any = None
    item: msgspec.Raw = msgspec.Raw()
    response: msgspec.Raw = msgspec.Raw()
    error: Any = None
    code: Any = None
    message: Any = None
    param: Any = None


EVENT_DECODER: Final = msgspec.json.Decoder(StreamEvent)
ITEM_DECODER: Final = msgspec.json.Decoder(OutputItem)
RESPONSE_DECODER: Final = msgspec.json.Decoder(WireResponse)


def reasoning_signature(item_id: str | None, encrypted: str | None) -> str | None:
    """The `ReasoningPart.signature` of a reasoning item: ``"<id>:<encrypted content>"``;
    None without encrypted content (nothing could be echoed back)."""
    if not encrypted or not item_id:
        return None
    return f"{item_id}{_SEPARATOR}{encrypted}"


def parse_signature(signature: str | None) -> tuple[str, str] | None:
    """The item id and encrypted content of a signature made by `reasoning_signature`;
    None for any other signature (another provider's thinking signature)."""
    if not signature or not signature.startswith(_SIGNATURE_PREFIX):
        return None
    item_id, sep, encrypted = signature.partition(_SEPARATOR)
    if not sep or not encrypted:
        return None
    return item_id, encrypted


def reasoning_texts(item: OutputItem) -> list[str]:
    """The texts of a reasoning item: its summary parts, then its raw reasoning content."""
    texts = [part.text for part in item.summary or () if part.text]
    texts.extend(part.text for part in item.content or () if part.text)
    return texts


def usage_from_wire(usage: WireUsage) -> Usage | None:
    """Normalise a usage object (WIRE-FORMATS 6.2); None when a count is out of range."""
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    cache_read = cache_write = reasoning = 0
    if usage.input_tokens_details is not None:
        cache_read = usage.input_tokens_details.cached_tokens or 0
        cache_write = usage.input_tokens_details.cache_write_tokens or 0
    if usage.output_tokens_details is not None:
        reasoning = usage.output_tokens_details.reasoning_tokens or 0
    return checked_usage(
        Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=usage.total_tokens or prompt + completion,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=reasoning,
        )
    )


_INCOMPLETE: Final[dict[str, FinishReason]] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}


def finish_of(response: WireResponse, called_tools: bool) -> tuple[FinishReason, str]:
    """Our finish reason and the provider's own (the status, or why it is incomplete)."""
    status = response.status or "completed"
    if status == "incomplete":
        details = response.incomplete_details
        native = (details.reason if details is not None else None) or "incomplete"
        return _INCOMPLETE.get(native, "other"), native
    if status == "completed":
        return ("tool_calls" if called_tools else "stop"), status
    return "other", status


def failure_error(response: WireResponse, provider: str) -> LLMError:
    """The typed error of a ``failed`` (or ``cancelled``) response: its ``error`` object
    classified like an error event (``insufficient_quota`` is a `RateLimited` that is not
    retryable, ``server_error`` a retryable `ProviderError`...)."""
    error = response.error
    if not error:
        error = {"message": f"the response ended with status {response.status!r}"}
    return classify_stream_error({"error": error}, provider=provider)


class ResponseBuilder:
    """Collects one answer's content in arrival order, merging runs as `StreamAggregator`
    does: text runs join, reasoning runs join until a signature closes one."""

    __slots__ = ("calls", "kind", "refusal", "runs", "types")

    def __init__(self) -> None:
        self.runs: list[tuple[str, list[str], str | None]] = []  # kind, texts, signature
        self.kind = ""
        self.calls: list[ToolCall] = []
        self.refusal: list[str] = []
        self.types: list[str] = []

    def text(self, text: str) -> None:
        """Add answer text."""
        if text:
            self._run("text").append(text)

    def reasoning(self, text: str) -> None:
        """Add reasoning text to the open reasoning run."""
        if text:
            self._run("reasoning").append(text)

    def sign(self, signature: str) -> None:
        """Close the reasoning run with ``signature`` (opening an empty one if needed)."""
        self._run("reasoning")
        kind, texts, _ = self.runs[-1]
        self.runs[-1] = (kind, texts, signature)
        self.kind = ""

    def _run(self, kind: str) -> list[str]:
        if self.kind != kind:
            self.runs.append((kind, [], None))
            self.kind = kind
        return self.runs[-1][1]

    def item(self, item: OutputItem) -> None:
        """Add a whole output item, as its streamed events would add it."""
        kind = item.type
        if kind == "message":
            for part in item.content or ():
                if part.type == "refusal":
                    if part.refusal:
                        self.refusal.append(part.refusal)
                elif part.text:
                    self.text(part.text)
        elif kind == "reasoning":
            self.reasoning(_PART_SEPARATOR.join(reasoning_texts(item)))
            signature = reasoning_signature(item.id, item.encrypted_content)
            if signature is not None:
                self.sign(signature)
        elif kind == "function_call":
            arguments = item.arguments or ""
            self.calls.append(
                ToolCall(
                    id=item.call_id or item.id or f"call_{len(self.calls)}",
                    name=item.name or "",
                    arguments=arguments if arguments.strip() else "{}",
                )
            )
        elif kind not in self.types:
            self.types.append(kind)

    def content(self, provider: str) -> str | list[Part] | None:
        """The message content: a string when it is only text, else the parts (reasoning
        parts made by ``provider``)."""
        if all(kind == "text" for kind, _, _ in self.runs):
            return "".join("".join(texts) for _, texts, _ in self.runs) or None
        return [
            TextPart(text="".join(texts))
            if kind == "text"
            else ReasoningPart(text="".join(texts), signature=signature, provider=provider)
            for kind, texts, signature in self.runs
        ]


def decode_body(body: WireResponse, *, provider: str, model: str) -> Response:
    """Our `Response` for a whole response object that did not fail.

    ``metadata`` holds ``native_finish_reason``, ``status``, ``service_tier``, a
    ``refusal`` and ``output_types`` (the output items of types we do not model).
    """
    builder = ResponseBuilder()
    for item in body.output or ():
        builder.item(item)
    finish, native = finish_of(body, bool(builder.calls))
    metadata: dict[str, Any] = {"native_finish_reason": native, "status": body.status}
    if builder.refusal:
        metadata["refusal"] = "".join(builder.refusal)
    if builder.types:
        metadata["output_types"] = builder.types
    if body.service_tier is not None:
        metadata["service_tier"] = body.service_tier
    return Response(
        id=body.id,
        provider=provider,
        model=body.model or model,
        created=unix_to_datetime(body.created_at),
        choices=[
            Choice(
                index=0,
                message=Message(
                    role="assistant",
                    content=builder.content(provider),
                    tool_calls=builder.calls or None,
                ),
                finish_reason=finish,
            )
        ],
        usage=usage_from_wire(body.usage) if body.usage is not None else None,
        metadata=metadata,
    )


def decode_response_bytes(
    data: bytes, *, provider: str, model: str, map_error: Callable[[Any], LLMError]
) -> Response:
    """Decode a whole ``POST /responses`` body.

    Raises:
        ProviderError: the body is not JSON of the documented shape
            (``details["reason"]`` ``"malformed response"``).
        LLMError: the typed error of a ``failed`` or ``cancelled`` response, or of a body
            that is an error object.
    """
    try:
        body = RESPONSE_DECODER.decode(data)
    except JSON_ERRORS as exc:
        raise ProviderError(
            f"malformed response body: {exc}",
            provider=provider,
            retryable=True,  # nothing reached the caller (docs/providers.md)
            details={"reason": "malformed response"},
        ) from exc
    if body.status in ("failed", "cancelled"):
        raise failure_error(body, provider)
    if body.error and body.object != "response":
        raise map_error({"error": body.error})
    return decode_body(body, provider=provider, model=model)
