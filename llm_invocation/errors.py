"""Typed errors for everything an invocation can run into.

Every error a user of the client sees is an `LLMError`, with one subclass per `ErrorCode`
so callers catch exactly what they care about::

    Exception
    └── LLMError                    code, provider, status, retry_after, request_id, details
        ├── ConfigurationError      bad or missing configuration (problems: every field path)
        ├── AuthenticationError     missing, invalid or revoked credentials (401, 403, bad key)
        ├── RateLimited             provider 429 or the local governor refused (retry_after set)
        ├── InvocationTimeout       connect, first-chunk, idle-chunk or whole-call deadline
        ├── InvocationCanceled      the caller or a client disconnect cancelled the call
        ├── InvalidRequest          the request is malformed or the provider rejected it (400/422)
        ├── ProviderError           the provider failed (5xx, malformed answer)
        │   └── ProviderOverloaded  529 / 503 overloaded, in a status or in a stream error event
        ├── CostExceeded            a per-request cap or a budget would be exceeded
        ├── ProviderNotFound        no provider with that name is configured or known
        ├── ModelNotSupported       the provider does not serve that model (404 model_not_found)
        ├── ToolExecutionFailed     a tool raised, timed out or got bad arguments
        └── StreamingFailed         a stream broke after it started (disconnect, bad frame)

Errors from lower layers (httpx, coredis, mcp) are translated into these at exactly one
boundary each and chained with ``__cause__``. Messages are scrubbed of secrets when the error
is made, so printing or logging an error never shows an API key.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, cast

import msgspec

from ._secrets import redact

__all__ = [
    "AuthenticationError",
    "ConfigProblem",
    "ConfigurationError",
    "CostExceeded",
    "ErrorCode",
    "ErrorInfo",
    "InvalidRequest",
    "InvocationCanceled",
    "InvocationTimeout",
    "LLMError",
    "ModelNotSupported",
    "ProviderError",
    "ProviderNotFound",
    "ProviderOverloaded",
    "RateLimited",
    "StreamingFailed",
    "ToolExecutionFailed",
    "error_from_info",
]


class ErrorCode(enum.StrEnum):
    """The error codes of both specifications, one per `LLMError` subclass."""

    CONFIGURATION = "configuration"
    AUTHENTICATION = "authentication"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    INVALID_REQUEST = "invalid_request"
    PROVIDER_ERROR = "provider_error"
    COST_EXCEEDED = "cost_exceeded"
    PROVIDER_NOT_FOUND = "provider_not_found"
    MODEL_NOT_SUPPORTED = "model_not_supported"
    TOOL_EXECUTION_FAILED = "tool_execution_failed"
    STREAMING_FAILED = "streaming_failed"


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The wire form of an `LLMError`: what a stream chunk or a WebSocket frame carries."""

    code: ErrorCode
    message: str
    kind: str | None = None
    """The error's class name when it is more precise than the code (``ProviderOverloaded``)."""
    provider: str | None = None
    status: int | None = None
    retry_after: float | None = None
    request_id: str | None = None
    retryable: bool = False
    details: dict[str, Any] | None = None


class LLMError(Exception):
    """Base of every error the client raises.

    Attributes:
        code: the `ErrorCode` of this error's class.
        message: a human-readable description, scrubbed of secrets.
        provider: the provider that produced it, when one did.
        status: the HTTP status, when there was one.
        retry_after: seconds the provider or the governor asked to wait, when known.
        request_id: the provider's request id (``x-request-id``, ``request-id``), when known.
        details: extra structured data (the provider's error type and code, a field path).
        retryable: whether trying again later can succeed.
    """

    code: ClassVar[ErrorCode] = ErrorCode.PROVIDER_ERROR
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.message = redact(message)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id
        self.details: dict[str, Any] = dict(details) if details else {}
        self.retryable = self.default_retryable if retryable is None else retryable
        super().__init__(self.message)

    def __str__(self) -> str:
        prefix = f"[{self.provider}] " if self.provider else ""
        suffix = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{prefix}{self.message}{suffix}"

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        for name in ("provider", "status", "retry_after", "request_id"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.info()))

    def info(self) -> ErrorInfo:
        """Return the wire form of this error."""
        kind = type(self).__name__
        return ErrorInfo(
            code=self.code,
            message=self.message,
            kind=None if _BY_CODE.get(self.code) is type(self) else kind,
            provider=self.provider,
            status=self.status,
            retry_after=self.retry_after,
            request_id=self.request_id,
            retryable=self.retryable,
            details=_jsonable(self.details) or None,
        )


def _rebuild(cls: type[LLMError], info: ErrorInfo) -> LLMError:
    return cls(
        info.message,
        provider=info.provider,
        status=info.status,
        retry_after=info.retry_after,
        request_id=info.request_id,
        details=info.details,
        retryable=info.retryable,
    )


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out[key] = redact(value) if isinstance(value, str) else value
        elif isinstance(value, Mapping):
            out[key] = _jsonable(value)  # pyright: ignore[reportUnknownArgumentType]
        elif isinstance(value, Sequence):
            items = cast("Sequence[object]", value)
            out[key] = [redact(str(v)) for v in items]
        else:
            out[key] = redact(str(value))
    return out


class ConfigProblem(msgspec.Struct, frozen=True, kw_only=True):
    """One problem found while validating configuration, at a dotted field path."""

    path: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        return f"{self.path}: {self.message}{where}"


class ConfigurationError(LLMError):
    """The configuration is invalid or incomplete.

    ``problems`` lists every problem found, each with its field path, so one run reports them
    all instead of one per attempt.
    """

    code = ErrorCode.CONFIGURATION

    def __init__(
        self,
        message: str | None = None,
        *,
        problems: Sequence[ConfigProblem] = (),
        **kwargs: Any,
    ) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        if message is None:
            count = len(self.problems)
            head = f"{count} configuration problem{'s' if count != 1 else ''}"
            message = head + "".join(f"\n  - {p}" for p in self.problems)
        details = dict(kwargs.pop("details", None) or {})
        if self.problems:
            details.setdefault("problems", [str(p) for p in self.problems])
        super().__init__(message, details=details, **kwargs)


class AuthenticationError(LLMError):
    """Credentials are missing, invalid, revoked or lack permission."""

    code = ErrorCode.AUTHENTICATION


class RateLimited(LLMError):
    """A rate limit was hit, at the provider (429) or in the local governor.

    ``retry_after`` says how long to wait when the provider or the governor knows.
    Quota exhaustion (OpenAI ``insufficient_quota``) is a `RateLimited` that is not retryable.
    """

    code = ErrorCode.RATE_LIMIT
    default_retryable = True


class InvocationTimeout(LLMError):
    """A connect, first-chunk, idle-chunk or whole-call deadline passed."""

    code = ErrorCode.TIMEOUT
    default_retryable = True


class InvocationCanceled(LLMError):
    """The invocation was cancelled before it finished (by its caller or a disconnect)."""

    code = ErrorCode.CANCELED


class InvalidRequest(LLMError):
    """The request is malformed, or the provider rejected it as such (400, 413, 422)."""

    code = ErrorCode.INVALID_REQUEST


class ProviderError(LLMError):
    """The provider failed to answer properly (5xx, an unparseable body, an unknown error)."""

    code = ErrorCode.PROVIDER_ERROR


class ProviderOverloaded(ProviderError):
    """The provider is overloaded (Anthropic 529, Gemini 503, an ``overloaded_error`` event)."""

    default_retryable = True


class CostExceeded(LLMError):
    """A per-request cost cap or a budget would be exceeded; nothing was sent."""

    code = ErrorCode.COST_EXCEEDED


class ProviderNotFound(LLMError):
    """No provider with that name is configured or known. ``details['available']`` lists them."""

    code = ErrorCode.PROVIDER_NOT_FOUND


class ModelNotSupported(LLMError):
    """The provider does not serve that model, or the model lacks a feature the request needs."""

    code = ErrorCode.MODEL_NOT_SUPPORTED


class ToolExecutionFailed(LLMError):
    """A tool raised, timed out or was called with arguments it cannot accept."""

    code = ErrorCode.TOOL_EXECUTION_FAILED


class StreamingFailed(LLMError):
    """A stream broke after it started: a disconnect, a malformed frame, an error event."""

    code = ErrorCode.STREAMING_FAILED
    default_retryable = True


_BY_CODE: Final[dict[ErrorCode, type[LLMError]]] = {
    cls.code: cls
    for cls in (
        ConfigurationError,
        AuthenticationError,
        RateLimited,
        InvocationTimeout,
        InvocationCanceled,
        InvalidRequest,
        ProviderError,
        CostExceeded,
        ProviderNotFound,
        ModelNotSupported,
        ToolExecutionFailed,
        StreamingFailed,
    )
}


_BY_KIND: Final[dict[str, type[LLMError]]] = {
    cls.__name__: cls for cls in (*_BY_CODE.values(), ProviderOverloaded)
}


def error_from_info(info: ErrorInfo) -> LLMError:
    """Rebuild the typed error that `LLMError.info` described (for example from a frame)."""
    cls = _BY_CODE[info.code]
    if info.kind is not None:
        cls = _BY_KIND.get(info.kind, cls)
    elif cls is ProviderError and info.status in (503, 529):
        cls = ProviderOverloaded
    return _rebuild(cls, info)
