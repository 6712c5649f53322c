"""Typed errors for everything an invocation can run into.

Every error a user of the client sees is an `LLMError`, with one subclass per `ErrorCode`
so callers catch exactly what they care about::

    Exception
    └── LLMError                    code, provider, status, retry_after, request_id, details
        ├── ConfigurationError      bad or missing configuration (problems: every field path)
        │   └── MissingAPIKey       a provider that needs a key has none (nothing was sent)
        ├── AuthenticationError     missing, invalid or revoked credentials (401, 403, bad key)
        ├── RateLimited             provider 429 or the local governor refused (retry_after set)
        ├── InvocationTimeout       connect, first-chunk, idle-chunk or whole-call deadline
        ├── InvocationCanceled      a WebSocket client's call was cancelled (``cancel`` frame)
        ├── InvalidRequest          the request is malformed or the provider rejected it (400/422)
        ├── ProviderError           the provider failed (5xx, malformed answer)
        │   └── ProviderOverloaded  529 / 503 overloaded, in a status or in a stream error event
        ├── CostExceeded            a per-request cap or a budget would be exceeded
        ├── ProviderNotFound        no provider with that name is configured or known
        ├── ModelNotSupported       the provider does not serve that model (404 model_not_found)
        ├── ToolExecutionFailed     a tool raised, timed out or got bad arguments
        └── StreamingFailed         a stream broke after it started (disconnect, bad frame)

Error codes (`ErrorCode`) are the strings of the specifications: ``provider_not_found``,
``model_not_supported``, ``rate_limit_exceeded``, ``invalid_request``,
``tool_execution_failed``, ``streaming_failed``, and ours for the rest. `error_from_info`
still reads the older ``rate_limit``.

**Causes.** Errors from lower layers (httpx, OS and TLS errors, JSON decoding, coredis, mcp)
are translated into these at exactly one boundary each and chained with ``__cause__``: a
refused connection's `ProviderError` has the ``httpx.ConnectError`` as its cause, a malformed
answer's error the decoding exception, an MCP failure the SDK's exception, our own timeouts
``trio.TooSlowError``. The cause survives the hop from the provider session to the caller,
including when a stream carries the error as an `ErrorInfo` (`error_from_info` gives it
back in the same process). An error the provider *answered* (an HTTP error status, an error
event in a stream) has no cause: nothing failed below us, and the provider's own words are
in ``message``, ``status``, ``request_id`` and ``details``.

**Secrets.** Messages are scrubbed of secrets when the error is made, and so is the chain of
the exception being handled at that moment (the cause to be): the strings in its ``args``,
its attributes and notes, so that neither ``str``, ``repr`` nor a printed traceback of any
exception in the chain shows an API key, a credential header or a ``?key=`` query.

**Cancellation** is trio's: cancelling the caller's cancel scope raises `trio.Cancelled` in
the caller, never an `LLMError`, and our timeouts (`InvocationTimeout`) only name our own
limits. `InvocationCanceled` exists for the WebSocket protocol, where a client's ``cancel``
frame (or a disconnect) ends a call that has no Python caller to cancel: the front answers
with an ``error`` frame of code ``canceled``, which `error_from_info` turns into
`InvocationCanceled` on a client that rebuilds errors from frames.
"""

from __future__ import annotations

import enum
import sys
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
    "MissingAPIKey",
    "ModelNotSupported",
    "ProviderError",
    "ProviderNotFound",
    "ProviderOverloaded",
    "RateLimited",
    "StreamingFailed",
    "ToolExecutionFailed",
    "error_from_info",
    "scrub_exception",
]


class ErrorCode(enum.StrEnum):
    """The error codes of both specifications, one per `LLMError` subclass.

    Where a specification names a code, its spelling is used (``rate_limit_exceeded``...).
    ``RATE_LIMIT`` is another name of ``RATE_LIMIT_EXCEEDED``, and the earlier value
    ``"rate_limit"`` is read as it, so older frames and records still decode.
    """

    CONFIGURATION = "configuration"
    AUTHENTICATION = "authentication"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    RATE_LIMIT = "rate_limit_exceeded"  # the older name of the member: same value
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    INVALID_REQUEST = "invalid_request"
    PROVIDER_ERROR = "provider_error"
    COST_EXCEEDED = "cost_exceeded"
    PROVIDER_NOT_FOUND = "provider_not_found"
    MODEL_NOT_SUPPORTED = "model_not_supported"
    TOOL_EXECUTION_FAILED = "tool_execution_failed"
    STREAMING_FAILED = "streaming_failed"
    MISSING_API_KEY = "missing_api_key"

    @classmethod
    def _missing_(cls, value: object) -> ErrorCode | None:
        renamed = _RENAMED.get(value) if isinstance(value, str) else None
        return None if renamed is None else cls(renamed)


_RENAMED: Final = {"rate_limit": "rate_limit_exceeded"}
"""Codes spelled differently before, and their spelling now."""


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, dict=True):
    """The wire form of an `LLMError`: what a stream chunk or a WebSocket frame carries.

    An `ErrorInfo` made by `LLMError.info` also remembers, in this process only (never on
    the wire), the error's ``__cause__``, so that `error_from_info` chains it again.
    """

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
        handled = sys.exception()
        if handled is not None:  # most likely this error's cause: scrub it before it shows
            scrub_exception(handled)

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
        """Return the wire form of this error (which remembers its cause in this process)."""
        kind = type(self).__name__
        info = ErrorInfo(
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
        cause = self.__cause__
        if cause is not None:
            vars(info)[_CAUSE] = cause  # not a field: never encoded, copied or pickled
        return info


_CAUSE: Final = "_cause"


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


class MissingAPIKey(ConfigurationError):
    """A provider that needs an API key has none, so the client refused to open.

    Raised by `open_client` (and the provider shortcuts such as ``open_openai_client``)
    before anything is sent. The message names the provider and where a key would come from
    (environment variables, configuration fields), never a value; ``details`` holds the same
    as ``providers``, ``variables`` and ``fields``.
    """

    code = ErrorCode.MISSING_API_KEY


class AuthenticationError(LLMError):
    """Credentials are missing, invalid, revoked or lack permission."""

    code = ErrorCode.AUTHENTICATION


class RateLimited(LLMError):
    """A rate limit was hit, at the provider (429) or in the local governor.

    ``retry_after`` says how long to wait when the provider or the governor knows.
    Quota exhaustion (OpenAI ``insufficient_quota``) is a `RateLimited` that is not retryable.
    """

    code = ErrorCode.RATE_LIMIT_EXCEEDED
    default_retryable = True


class InvocationTimeout(LLMError):
    """A connect, first-chunk, idle-chunk or whole-call deadline passed."""

    code = ErrorCode.TIMEOUT
    default_retryable = True


class InvocationCanceled(LLMError):
    """A WebSocket client's call was cancelled before it finished (code ``canceled``).

    In Python, cancellation is trio's: a caller that cancels its own cancel scope sees
    `trio.Cancelled`, never this error. It exists for the WebSocket protocol, where a
    ``cancel`` frame or a disconnect ends a call that has no Python caller: the front sends an
    ``error`` frame with code ``canceled`` (and the usage streamed so far), and
    `error_from_info` makes that frame this error on a client that rebuilds typed errors.
    """

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
        MissingAPIKey,
    )
}


_BY_KIND: Final[dict[str, type[LLMError]]] = {
    cls.__name__: cls for cls in (*_BY_CODE.values(), ProviderOverloaded)
}


def error_from_info(info: ErrorInfo) -> LLMError:
    """Rebuild the typed error that `LLMError.info` described (for example from a frame).

    The older code ``"rate_limit"`` is read as ``rate_limit_exceeded`` (`RateLimited`); a code
    this version does not know gives a `ProviderError` whose ``details["code"]`` keeps it. In
    the process that made ``info``, the error's ``__cause__`` is chained again.
    """
    try:
        cls = _BY_CODE[ErrorCode(info.code)]
    except (ValueError, KeyError):
        cls = ProviderError
        info = msgspec.structs.replace(
            info, details={**(info.details or {}), "code": redact(str(info.code))[:100]}
        )
    if info.kind is not None:
        cls = _BY_KIND.get(info.kind, cls)
    elif cls is ProviderError and info.status in (503, 529):
        cls = ProviderOverloaded
    error = _rebuild(cls, info)
    cause: object = vars(info).get(_CAUSE)
    if isinstance(cause, BaseException):
        error.__cause__ = cause
    return error


# -- scrubbing the exceptions a cause chain holds ------------------------------------------

_MAX_CHAIN: Final = 32
_OS_FIELDS: Final = ("strerror", "filename", "filename2")


def scrub_exception(exc: BaseException) -> None:
    """Mask secrets in ``exc`` and every exception it chains, in place.

    Walks ``__cause__``, ``__context__`` and the members of exception groups (at most 32
    exceptions), and rewrites, where a secret shows (`llm_invocation._secrets.redact`): the
    strings in ``args``, the string attributes (an `OSError`'s ``strerror`` and file names
    included) and ``__notes__``. The exceptions keep their type and traceback, so a caller
    can still ``isinstance`` a cause; only their text changes. Our own errors are scrubbed
    when they are made and are walked through, not rewritten.
    """
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < _MAX_CHAIN:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if not isinstance(current, LLMError):
            _scrub_one(current)
        pending.extend(link for link in (current.__cause__, current.__context__) if link)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(cast("BaseExceptionGroup[BaseException]", current).exceptions)


def _scrub_one(exc: BaseException) -> None:
    try:
        args = tuple(_scrubbed(arg) for arg in exc.args)
        if args != exc.args:
            exc.args = args
        if isinstance(exc, OSError):
            for name in _OS_FIELDS:
                value: object = getattr(exc, name, None)
                if isinstance(value, str) and (clean := redact(value)) != value:
                    setattr(exc, name, clean)
        attributes: dict[str, Any] = getattr(exc, "__dict__", {})
        for name, value in list(attributes.items()):
            clean = _scrubbed(value)
            if clean is not value and clean != value:
                attributes[name] = clean
    except Exception:  # noqa: BLE001, S110 - a read-only exception stays as it is
        pass


def _scrubbed(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        items = cast("list[object] | tuple[object, ...]", value)
        cleaned = [redact(item) if isinstance(item, str) else item for item in items]
        return cleaned if isinstance(value, list) else tuple(cleaned)
    return value
