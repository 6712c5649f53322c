"""Error bodies of OpenAI and the compatible servers, and their typed errors.

Shapes handled (WIRE-FORMATS 1.7, 5, 6.3): ``{"error": {"message", "type", "param",
"code"}}`` (OpenAI, Groq with ``failed_generation`` and, in streams, ``status_code``),
a numeric ``code`` with ``metadata`` (OpenRouter), ``{"error": "text"}``, a top-level
``message`` (vLLM's older ``{"object": "error", ...}``), ``{"detail": ...}`` (FastAPI),
plain text and HTML pages from proxies.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..errors import (
    AuthenticationError,
    InvalidRequest,
    LLMError,
    ModelNotSupported,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
)
from ._base import JSON_ERRORS, error_for_status

__all__ = [
    "classify_error",
    "classify_stream_error",
    "is_quota_error",
    "parse_error_body",
    "parse_error_object",
]

_ANY_JSON: Final = msgspec.json.Decoder()
_MAX_ERROR_TEXT: Final = 500
_DETAIL_KEYS: Final = ("type", "param", "code", "status_code", "failed_generation", "metadata")
_QUOTA: Final = "insufficient_quota"
_MODEL_NOT_FOUND: Final = "model_not_found"


def parse_error_object(error: Any) -> tuple[str, dict[str, Any]]:
    """The message and details (``type``, ``param``, ``code``, ...) of an ``error`` value."""
    if isinstance(error, str):
        return error, {}
    if not isinstance(error, dict):
        return "", {}
    fields: dict[str, Any] = error  # pyright: ignore[reportUnknownVariableType]
    message: Any = fields.get("message") or fields.get("detail") or ""
    if not isinstance(message, str):
        message = str(message)
    details: dict[str, Any] = {}
    for key in _DETAIL_KEYS:
        value = fields.get(key)
        if value is not None:
            details[key] = value
    return message, details


def _html_title(text: str) -> str:
    lower = text.lower()
    start = lower.find("<title>")
    end = lower.find("</title>", start)
    if start < 0 or end < 0:
        return ""
    return " ".join(text[start + 7 : end].split())


def parse_error_body(body: bytes) -> tuple[str, dict[str, Any]]:
    """The message and details of an error response body: JSON, plain text or HTML.

    The message is empty when the body says nothing usable.
    """
    stripped = body.strip()
    if stripped[:1] == b"{":
        try:
            payload: Any = _ANY_JSON.decode(stripped)
        except JSON_ERRORS:
            payload = None
        if isinstance(payload, dict):
            fields: dict[str, Any] = payload  # pyright: ignore[reportUnknownVariableType]
            error = fields.get("error")
            if error:
                return parse_error_object(error)
            return parse_error_object(fields)
    text = stripped.decode("utf-8", "replace")
    if text[:1] == "<":
        return _html_title(text), {"body": "html"}
    return text[:_MAX_ERROR_TEXT], {}


def classify_error(
    status: int,
    message: str,
    details: dict[str, Any],
    *,
    provider: str,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> LLMError:
    """The typed error for an HTTP ``status``: `error_for_status`, plus OpenAI's codes.

    ``model_not_found`` on a 404 (or a 400, as the Responses API sends it) is
    `ModelNotSupported`; a 429 ``insufficient_quota`` is a `RateLimited` that is not
    retryable.
    """
    kinds = (details.get("code"), details.get("type"))
    kwargs: dict[str, Any] = {
        "provider": provider,
        "request_id": request_id,
        "retry_after": retry_after,
        "details": details,
    }
    if status in (400, 404) and _MODEL_NOT_FOUND in kinds:
        return ModelNotSupported(message, status=status, **kwargs)
    if status == 429 and _QUOTA in kinds:
        return RateLimited(message, status=status, retryable=False, **kwargs)
    return error_for_status(status, message, **kwargs)


def classify_stream_error(payload: Any, *, provider: str) -> LLMError:
    """The typed error for an error payload inside a stream (or in a 200 body).

    ``payload`` is the decoded JSON, usually ``{"error": {...}}``. A status in it (Groq's
    ``status_code``, OpenRouter's numeric ``code``) is classified as by `classify_error`;
    otherwise the ``type`` or ``code`` decides, and an unknown error is a `ProviderError`.
    """
    error: Any = payload
    if isinstance(payload, dict):
        fields: dict[str, Any] = payload  # pyright: ignore[reportUnknownVariableType]
        error = fields.get("error", fields)
    message, details = parse_error_object(error)
    message = message or "the provider reported an error"
    status: Any = details.get("status_code")
    if not isinstance(status, int):
        code = details.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else None
    if isinstance(status, int):
        return classify_error(status, message, details, provider=provider)
    kinds = {v for v in (details.get("type"), details.get("code")) if isinstance(v, str)}
    kwargs: dict[str, Any] = {"provider": provider, "details": details}
    if _QUOTA in kinds:
        return RateLimited(message, retryable=False, **kwargs)
    if kinds & {"rate_limit_exceeded", "rate_limit_error", "tokens", "requests"}:
        return RateLimited(message, **kwargs)
    if kinds & {"server_overloaded", "overloaded_error", "service_unavailable"}:
        return ProviderOverloaded(message, **kwargs)
    if kinds & {"server_error", "internal_error", "api_error"}:
        return ProviderError(message, retryable=True, **kwargs)
    if kinds & {"authentication_error", "invalid_api_key", "permission_error"}:
        return AuthenticationError(message, **kwargs)
    if _MODEL_NOT_FOUND in kinds:
        return ModelNotSupported(message, **kwargs)
    if kinds & {"invalid_request_error", "context_length_exceeded"}:
        return InvalidRequest(message, **kwargs)
    return ProviderError(message, **kwargs)


def is_quota_error(error: LLMError) -> bool:
    """Whether ``error`` is OpenAI's ``insufficient_quota`` (never worth a retry)."""
    details = error.details
    return _QUOTA in (details.get("code"), details.get("type"))
