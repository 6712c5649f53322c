"""Anthropic Messages API wire types, their decoders and the normalisation helpers.

The structs here mirror only the fields the codec reads (WIRE-FORMATS 3); msgspec skips every
other field without building it. Stream events are a tagged union on ``"type"`` decoded by
one module-level `msgspec.json.Decoder`; content blocks and deltas are *flat* structs (a
``type`` string plus every field the known kinds carry, all defaulted), so a block or delta
kind added by Anthropic later decodes fine and is skipped by the stream decoder instead of
failing the event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, final

import msgspec

from ..errors import (
    AuthenticationError,
    InvalidRequest,
    InvocationTimeout,
    LLMError,
    ModelNotSupported,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
)
from ..types import FinishReason, Usage
from ._base import checked_usage, error_for_status

__all__ = [
    "ERROR_STATUS",
    "EVENT_DECODER",
    "KNOWN_BLOCKS",
    "KNOWN_DELTAS",
    "KNOWN_EVENTS",
    "LOOSE_DECODER",
    "Block",
    "BlockDelta",
    "BlockStart",
    "BlockStop",
    "CountTokensBody",
    "Delta",
    "ErrorBody",
    "ErrorEvent",
    "ErrorObject",
    "Event",
    "LooseEvent",
    "MessageBody",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "ModelsPage",
    "Ping",
    "StartMessage",
    "StopDelta",
    "WireModel",
    "WireUsage",
    "error_from_type",
    "finish_reason",
    "normalise_usage",
]


# ---------------------------------------------------------------------------------------------
# Shared pieces


@final
class OutputTokensDetails(msgspec.Struct, gc=False):
    """``usage.output_tokens_details`` (newer responses): the thinking share of the output."""

    thinking_tokens: int | None = None


@final
class CacheCreation(msgspec.Struct, gc=False):
    """``usage.cache_creation``: the cache writes split by TTL."""

    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


@final
class WireUsage(msgspec.Struct, gc=False):
    """``usage`` of a message, a ``message_start`` or a ``message_delta`` (WIRE-FORMATS 3.6)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: CacheCreation | None = None
    service_tier: str | None = None
    output_tokens_details: OutputTokensDetails | None = None


@final
class Block(msgspec.Struct, gc=False):
    """A content block of any kind, flattened: only the fields of the kinds the codec reads.

    ``text`` (text), ``thinking`` + ``signature`` (thinking), ``data`` (redacted_thinking),
    ``id`` + ``name`` + ``input`` (tool_use; server_tool_use has them too).
    """

    type: str
    text: str = ""
    thinking: str = ""
    signature: str | None = None
    data: str = ""
    id: str = ""
    name: str = ""
    input: Any = None


@final
class Delta(msgspec.Struct, gc=False):
    """The ``delta`` of a ``content_block_delta``, flattened over the delta kinds."""

    type: str
    text: str = ""
    partial_json: str = ""
    thinking: str = ""
    signature: str = ""


@final
class ErrorObject(msgspec.Struct, gc=False):
    """``{"type": ..., "message": ...}`` inside an error body or an ``error`` event."""

    type: str = ""
    message: str = ""


# ---------------------------------------------------------------------------------------------
# Stream events (WIRE-FORMATS 3.4)


class _Event(msgspec.Struct, tag_field="type", gc=False):
    pass


@final
class StartMessage(msgspec.Struct, gc=False):
    """The ``message`` of a ``message_start``: id, model and the input usage."""

    id: str = ""
    model: str = ""
    usage: WireUsage | None = None


@final
class MessageStart(_Event, tag="message_start", gc=False):
    """``message_start``."""

    message: StartMessage


@final
class BlockStart(_Event, tag="content_block_start", gc=False):
    """``content_block_start``."""

    index: int
    content_block: Block


@final
class BlockDelta(_Event, tag="content_block_delta", gc=False):
    """``content_block_delta``: the hot path of every stream."""

    index: int
    delta: Delta


@final
class BlockStop(_Event, tag="content_block_stop", gc=False):
    """``content_block_stop``."""

    index: int = 0


@final
class StopDelta(msgspec.Struct, gc=False):
    """The ``delta`` of a ``message_delta``."""

    stop_reason: str | None = None
    stop_sequence: str | None = None


@final
class MessageDelta(_Event, tag="message_delta", gc=False):
    """``message_delta``: the stop reason and the cumulative usage."""

    delta: StopDelta = msgspec.field(default_factory=StopDelta)
    usage: WireUsage | None = None


@final
class MessageStop(_Event, tag="message_stop", gc=False):
    """``message_stop``: the end of a successful stream."""


@final
class Ping(_Event, tag="ping", gc=False):
    """``ping``: a keep-alive."""


@final
class ErrorEvent(_Event, tag="error", gc=False):
    """``error``: the stream failed after HTTP 200."""

    error: ErrorObject = msgspec.field(default_factory=ErrorObject)
    request_id: str | None = None


Event = (
    MessageStart
    | BlockStart
    | BlockDelta
    | BlockStop
    | MessageDelta
    | MessageStop
    | Ping
    | ErrorEvent
)
"""Every stream event the codec reads, tagged by ``"type"``."""

EVENT_DECODER: Final = msgspec.json.Decoder(Event)

KNOWN_EVENTS: Final = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)
KNOWN_BLOCKS: Final = frozenset({"text", "thinking", "redacted_thinking", "tool_use"})
KNOWN_DELTAS: Final = frozenset(
    {"text_delta", "input_json_delta", "thinking_delta", "signature_delta"}
)


@final
class _Kind(msgspec.Struct, gc=False):
    type: str = ""


@final
class LooseEvent(msgspec.Struct, gc=False):
    """The little an event that failed typed decoding must show: is it a kind we know?"""

    type: str = ""
    content_block: _Kind | None = None
    delta: _Kind | None = None


LOOSE_DECODER: Final = msgspec.json.Decoder(LooseEvent)


# ---------------------------------------------------------------------------------------------
# Bodies


@final
class MessageBody(msgspec.Struct, gc=False):
    """A non-streamed ``/v1/messages`` body (or an error body, when ``type`` is ``error``)."""

    type: str = "message"
    id: str = ""
    model: str = ""
    content: list[Block] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: WireUsage | None = None
    error: ErrorObject | None = None
    request_id: str | None = None


@final
class ErrorBody(msgspec.Struct, gc=False):
    """``{"type": "error", "error": {"type", "message"}, "request_id"}`` (WIRE-FORMATS 3.7)."""

    type: str = ""
    error: ErrorObject | None = None
    request_id: str | None = None


@final
class CountTokensBody(msgspec.Struct, gc=False):
    """``/v1/messages/count_tokens`` answer."""

    input_tokens: int


@final
class Support(msgspec.Struct, gc=False):
    """One capability of a model in the models list."""

    supported: bool = False


@final
class Capabilities(msgspec.Struct, gc=False):
    """The capabilities the codec turns into `Feature` flags."""

    image_input: Support | None = None
    structured_outputs: Support | None = None
    thinking: Support | None = None


@final
class WireModel(msgspec.Struct, gc=False):
    """One entry of ``GET /v1/models``."""

    id: str
    display_name: str | None = None
    created_at: datetime | None = None
    max_input_tokens: int | None = None
    max_tokens: int | None = None
    capabilities: Capabilities | None = None


@final
class ModelsPage(msgspec.Struct, gc=False):
    """``GET /v1/models``."""

    data: list[WireModel] = []
    has_more: bool = False


# ---------------------------------------------------------------------------------------------
# Normalisation (WIRE-FORMATS 6)

_FINISH: Final[dict[str, FinishReason]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "pause",
}


def finish_reason(native: str | None) -> FinishReason | None:
    """The normalised finish reason of an Anthropic ``stop_reason`` (unknown ones: other)."""
    if native is None:
        return None
    return _FINISH.get(native, "other")


def normalise_usage(usage: WireUsage, start: WireUsage | None = None) -> Usage | None:
    """The normalised `Usage` of ``usage``, input counts missing there taken from ``start``.

    ``message_delta`` usage is cumulative but may omit the input counts (older servers), which
    ``message_start`` carried: pass that as ``start``. None when a count is out of range
    (`checked_usage`).
    """
    fresh = usage.input_tokens
    written = usage.cache_creation_input_tokens
    read = usage.cache_read_input_tokens
    if start is not None:
        if fresh is None:
            fresh = start.input_tokens
        if written is None:
            written = start.cache_creation_input_tokens
        if read is None:
            read = start.cache_read_input_tokens
    output = usage.output_tokens
    if output is None and start is not None:
        output = start.output_tokens
    details = usage.output_tokens_details
    reasoning = details.thinking_tokens if details is not None else None
    written = written or 0
    read = read or 0
    split = usage.cache_creation
    if split is None and start is not None:
        split = start.cache_creation
    hour = (split.ephemeral_1h_input_tokens if split is not None else None) or 0
    return checked_usage(
        Usage(
            prompt_tokens=(fresh or 0) + written + read,
            completion_tokens=output or 0,
            cache_read_tokens=read,
            cache_write_tokens=written,
            # the 1-hour share of the writes; a share larger than the whole is capped to it
            cache_write_1h_tokens=min(max(hour, 0), written),
            reasoning_tokens=reasoning or 0,
        )
    )


ERROR_STATUS: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""The HTTP status each Anthropic error type comes with (docs; 402 and 504 unverified)."""


def error_from_type(
    error_type: str,
    message: str,
    *,
    provider: str,
    status: int | None,
    request_id: str | None = None,
    retry_after: float | None = None,
    in_stream: bool = False,
) -> LLMError:
    """The typed error for an Anthropic error ``type`` (WIRE-FORMATS 3.7, 6.3).

    The type decides when it is known; otherwise the HTTP status does (`error_for_status`).
    ``details["type"]`` keeps the provider's type.
    """
    details: dict[str, Any] = {"type": error_type} if error_type else {}
    if in_stream:
        details["in_stream"] = True
    message = message or error_type or "error"
    kwargs: dict[str, Any] = {
        "provider": provider,
        "status": status,
        "request_id": request_id,
        "retry_after": retry_after,
        "details": details,
    }
    if error_type in ("invalid_request_error", "request_too_large"):
        return InvalidRequest(message, **kwargs)
    if error_type in ("authentication_error", "permission_error", "billing_error"):
        return AuthenticationError(message, **kwargs)
    if error_type == "not_found_error":
        # A missing model says "model: <id>"; anything else not found is a bad request
        # (an unknown file id, a wrong path).
        if "model" in message.lower():
            return ModelNotSupported(message, **kwargs)
        return InvalidRequest(message, **kwargs)
    if error_type == "rate_limit_error":
        return RateLimited(message, **kwargs)
    if error_type == "api_error":
        return ProviderError(message, retryable=True, **kwargs)
    if error_type == "overloaded_error":
        return ProviderOverloaded(message, **kwargs)
    if error_type == "timeout_error":
        return InvocationTimeout(message, **kwargs)
    if status is None:
        return ProviderError(message, **kwargs)
    return error_for_status(
        status,
        message,
        provider=provider,
        request_id=request_id,
        retry_after=retry_after,
        details=details,
    )
