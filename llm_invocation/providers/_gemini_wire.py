"""Google Gemini wire types, their decoders (made once) and the normalisation tables.

Only the fields the codec reads are declared: msgspec skips the rest without building them,
which is what keeps a streamed chunk's decode to a few microseconds. Every struct is
``gc=False``: decoded JSON cannot form reference cycles.

Normalisation (``WIRE-FORMATS.md`` 4.5-4.7 and 6):

* finish reasons: ``STOP`` is ``stop`` (``tool_calls`` when the candidate called tools),
  ``MAX_TOKENS`` is ``length``, the safety family is ``content_filter``, everything else
  (including the malformed-tool-call family) is ``other``; the native value always travels in
  ``metadata["native_finish_reason"]``;
* usage: prompt = ``promptTokenCount + toolUsePromptTokenCount``, completion =
  ``candidatesTokenCount + thoughtsTokenCount``, cache read = ``cachedContentTokenCount``,
  reasoning = ``thoughtsTokenCount``;
* errors: a ``google.rpc.Status`` maps by its canonical ``status`` (and an ``ErrorInfo``
  reason for bad keys, which Google reports as 400), the delay from ``RetryInfo``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

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
from ._base import JSON_ERRORS, checked_usage, error_for_status, parse_duration_header

__all__ = [
    "RETRYABLE_STATUSES",
    "Candidate",
    "Content",
    "CountTokensResponse",
    "ErrorEnvelope",
    "FunctionCall",
    "GenerateContentResponse",
    "ListModelsResponse",
    "ModelWire",
    "PartWire",
    "PartialArg",
    "PromptFeedback",
    "RpcStatus",
    "UsageMetadata",
    "created_from_text",
    "decode_error_body",
    "error_from_status",
    "finish_reason",
    "normalise_usage",
]


class PartialArg(msgspec.Struct, rename="camel", gc=False):
    """One fragment of a function call's arguments streamed by Vertex (``partialArgs``)."""

    json_path: str = ""
    string_value: str | None = None
    number_value: int | float | None = None
    bool_value: bool | None = None
    null_value: str | msgspec.UnsetType | None = msgspec.UNSET
    will_continue: bool = False


class FunctionCall(msgspec.Struct, rename="camel", gc=False):
    """A ``functionCall`` part: complete (``name`` + ``args``) or a Vertex stream fragment."""

    name: str | None = None
    args: dict[str, Any] | None = None
    id: str | None = None
    partial_args: list[PartialArg] | None = None
    will_continue: bool = False


class PartWire(msgspec.Struct, rename="camel", gc=False):
    """A ``Part`` of a candidate's content (only the kinds the runtime models)."""

    text: str | None = None
    thought: bool = False
    thought_signature: str | None = None
    function_call: FunctionCall | None = None


class Content(msgspec.Struct, gc=False):
    """A candidate's ``content`` (``{}`` when the answer was blocked)."""

    parts: list[PartWire] = []


class Candidate(msgspec.Struct, rename="camel", gc=False):
    """One candidate answer."""

    content: Content | None = None
    finish_reason: str | None = None
    index: int = 0
    finish_message: str | None = None


class PromptFeedback(msgspec.Struct, rename="camel", gc=False):
    """Why a prompt was blocked (then the response has no candidates)."""

    block_reason: str | None = None
    block_reason_message: str | None = None


class UsageMetadata(msgspec.Struct, rename="camel", gc=False):
    """Token counts; running totals when streamed."""

    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    cached_content_token_count: int = 0
    total_token_count: int = 0


class RpcStatus(msgspec.Struct, gc=False):
    """A ``google.rpc.Status``: the body of every Gemini error."""

    code: int = 0
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] = []


class GenerateContentResponse(msgspec.Struct, rename="camel", gc=False):
    """A ``GenerateContentResponse``: a whole answer, or one streamed chunk of it.

    ``error`` is set when the object is an error envelope instead (in a stream).
    ``create_time`` (Vertex AI's ``createTime``, RFC 3339) is kept as text: a value that is
    not a time must not fail the answer (`created_from_text` reads it).
    """

    candidates: list[Candidate] = []
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str = ""
    response_id: str = ""
    create_time: str | None = None
    error: RpcStatus | None = None


class ErrorEnvelope(msgspec.Struct, gc=False):
    """``{"error": <google.rpc.Status>}``."""

    error: RpcStatus | None = None


class ModelWire(msgspec.Struct, rename="camel", gc=False):
    """One entry of ``GET /models``."""

    name: str
    display_name: str | None = None
    version: str | None = None
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    supported_generation_methods: list[str] = []
    thinking: bool | None = None


class ListModelsResponse(msgspec.Struct, rename="camel", gc=False):
    """The body of ``GET /models``."""

    models: list[ModelWire] = []
    next_page_token: str | None = None


class CountTokensResponse(msgspec.Struct, rename="camel", gc=False):
    """The body of ``countTokens`` (proto3 JSON omits a zero count)."""

    total_tokens: int = 0


_ENVELOPE_DECODER: Final[msgspec.json.Decoder[ErrorEnvelope | list[ErrorEnvelope]]] = (
    msgspec.json.Decoder(ErrorEnvelope | list[ErrorEnvelope])
)

# -- finish reasons -----------------------------------------------------------------------------

_FINISH: Final[dict[str, FinishReason]] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}


def created_from_text(text: str | None) -> datetime | None:
    """A ``createTime`` (RFC 3339, up to nanoseconds) as an aware UTC datetime; None when it
    is missing or not a time (a creation time is informative, never worth failing an answer
    for). A time without an offset is read as UTC."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def finish_reason(native: str, *, called_tools: bool) -> FinishReason:
    """The normalised finish reason of a Gemini ``finishReason``.

    ``STOP`` becomes ``tool_calls`` when the candidate called tools (Gemini has no reason of
    its own for that); an unknown or malformed-call reason becomes ``other``.
    """
    reason = _FINISH.get(native, "other")
    if reason == "stop" and called_tools:
        return "tool_calls"
    return reason


# -- usage --------------------------------------------------------------------------------------


def normalise_usage(meta: UsageMetadata | None) -> Usage | None:
    """The normalised `Usage` of ``usageMetadata`` (None when it carries no counts, or a count
    out of range: `checked_usage`)."""
    if meta is None:
        return None
    prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count
    thoughts = meta.thoughts_token_count
    completion = meta.candidates_token_count + thoughts
    if not (prompt or completion):
        return None
    return checked_usage(
        Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=meta.total_token_count or prompt + completion,
            cache_read_tokens=meta.cached_content_token_count,
            reasoning_tokens=thoughts,
        )
    )


# -- errors -------------------------------------------------------------------------------------

RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses the official SDK retries (``WIRE-FORMATS.md`` 0.2)."""

_AUTH_REASONS: Final = frozenset(
    {
        "ACCESS_TOKEN_EXPIRED",
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        "CREDENTIALS_MISSING",
        "CONSUMER_SUSPENDED",
        "SERVICE_DISABLED",
    }
)
_BY_CANONICAL: Final[dict[str, type[LLMError]]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "FAILED_PRECONDITION": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "PERMISSION_DENIED": AuthenticationError,
    "UNAUTHENTICATED": AuthenticationError,
    "NOT_FOUND": ModelNotSupported,
    "RESOURCE_EXHAUSTED": RateLimited,
    "UNAVAILABLE": ProviderOverloaded,
    "DEADLINE_EXCEEDED": InvocationTimeout,
    "INTERNAL": ProviderError,
    "UNKNOWN": ProviderError,
    "DATA_LOSS": ProviderError,
}
_TYPE_PREFIX: Final = "type.googleapis.com/google.rpc."
_MAX_MESSAGE: Final = 500


def decode_error_body(body: bytes) -> RpcStatus | None:
    """The ``google.rpc.Status`` in an error body (also in a one-element JSON array).

    Returns None when the body is not such an object (an HTML page from a proxy, say).
    """
    try:
        envelope = _ENVELOPE_DECODER.decode(body)
    except JSON_ERRORS:
        return None
    if isinstance(envelope, list):
        envelope = envelope[0] if envelope else ErrorEnvelope()
    return envelope.error


def error_from_status(
    status: int,
    rpc: RpcStatus | None,
    *,
    provider: str,
    body: bytes = b"",
    request_id: str | None = None,
) -> LLMError:
    """The typed error for an HTTP ``status`` and its decoded ``google.rpc.Status``.

    The class follows the canonical ``status`` (``INVALID_ARGUMENT``, ``RESOURCE_EXHAUSTED``...)
    and falls back to the HTTP status; an ``ErrorInfo`` reason of a bad or expired key makes an
    `AuthenticationError` even on a 400. ``retry_after`` comes from ``RetryInfo.retryDelay``;
    the error is retryable exactly for the statuses the official SDK retries.
    """
    details: dict[str, Any] = {}
    retry_after: float | None = None
    reason = ""
    if rpc is not None:
        if rpc.status:
            details["status"] = rpc.status
        for detail in rpc.details:
            kind = detail.get("@type")
            if not isinstance(kind, str) or not kind.startswith(_TYPE_PREFIX):
                continue
            kind = kind.removeprefix(_TYPE_PREFIX)
            if kind == "ErrorInfo":
                value = detail.get("reason")
                if isinstance(value, str):
                    reason = value
                    details["reason"] = value
            elif kind == "RetryInfo":
                delay = detail.get("retryDelay")
                if isinstance(delay, str):
                    retry_after = parse_duration_header(delay)
        message = rpc.message or f"Gemini returned HTTP {status}"
        canonical = rpc.status
    else:
        text = body.decode("utf-8", "replace").strip()
        message = text[:_MAX_MESSAGE] or f"Gemini returned HTTP {status}"
        canonical = ""
    kwargs: dict[str, Any] = {
        "provider": provider,
        "status": status,
        "request_id": request_id,
        "retry_after": retry_after,
        "details": details or None,
        "retryable": status in RETRYABLE_STATUSES,
    }
    if reason.startswith("API_KEY_") or reason in _AUTH_REASONS:
        return AuthenticationError(message, **kwargs)
    cls = _BY_CANONICAL.get(canonical)
    if cls is not None:
        return cls(message, **kwargs)
    error = error_for_status(
        status,
        message,
        provider=provider,
        request_id=request_id,
        retry_after=retry_after,
        details=details or None,
    )
    error.retryable = status in RETRYABLE_STATUSES
    return error
