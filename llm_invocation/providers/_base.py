"""The sans-I/O provider codec interface, and the helpers every codec shares.

A codec turns a `Request` into an `HttpRequest`, and bytes from the provider into
`StreamChunk`s, a `Response`, a typed `LLMError` or `RateLimitInfo`. It never does I/O: the
provider session actor sends what `encode` returns and feeds what comes back, so every codec
is tested on bytes alone.

Conventions every codec follows:

* ``request.model`` is the provider's own model id (the registry strips ``"provider:"``).
* Header mappings passed in have lower-case names (the session guarantees it).
* Errors inside a 200 stream become a `StreamChunk` whose ``error`` is set; the decoder keeps
  going only if the provider does.
* Usage is normalised as in WIRE-FORMATS 6.2: prompt tokens include cached ones, completion
  tokens include reasoning ones.

`ProviderCodec` is also the public protocol for providers of your own (see
``docs/providers.md``, "Custom providers"): subclass it and register it with
``client.register_provider``. Whatever a codec raises is contained by the session: it fails
that one call with a typed error and never the session.
"""

from __future__ import annotations

import abc
import email.utils
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Final, Literal

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
from ..types import Feature, ModelInfo, Request, Response, StreamChunk, Usage

__all__ = [
    "JSON_ERRORS",
    "MAX_COUNT",
    "MAX_RESET",
    "checked_rate_limits",
    "HttpRequest",
    "ProviderCodec",
    "RateLimitInfo",
    "RetryAdvice",
    "StreamDecoder",
    "checked_usage",
    "count_in_range",
    "datetime_from_unix",
    "error_for_status",
    "has_content",
    "parse_duration_header",
    "parse_retry_after",
    "unix_to_datetime",
]


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An HTTP request a codec wants sent. ``stream`` says the answer is read incrementally."""

    method: Literal["GET", "POST"]
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    stream: bool = False

    def __repr__(self) -> str:
        # Headers carry credentials: never show their values.
        return f"HttpRequest({self.method} {self.url}, headers={sorted(self.headers)})"


class RateLimitInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a response's rate-limit headers said. Resets are seconds from receipt."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None
    input_tokens_limit: int | None = None
    input_tokens_remaining: int | None = None
    input_tokens_reset: float | None = None
    output_tokens_limit: int | None = None
    output_tokens_remaining: int | None = None
    output_tokens_reset: float | None = None
    retry_after: float | None = None


class RetryAdvice(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a failed attempt may be retried and after how long (None: use backoff)."""

    retryable: bool
    delay: float | None = None


class StreamDecoder(abc.ABC):
    """Stateful decoder of one streamed response body."""

    @abc.abstractmethod
    def feed(self, data: bytes) -> list[StreamChunk]:
        """Decode the chunks completed by ``data`` (one network read)."""

    @abc.abstractmethod
    def close(self) -> list[StreamChunk]:
        """End of body: return the last chunks; a truncated stream yields an error chunk."""

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """Whether the provider's terminal event was seen."""


JSON_ERRORS: Final = (msgspec.DecodeError, RecursionError)
"""What decoding a provider's JSON raises on bad input: msgspec's errors (validation errors
included), and `RecursionError` for nesting deeper than msgspec follows."""

MAX_COUNT: Final = 2**53 - 1
"""The largest count (tokens, requests) a provider may report: the largest integer a JSON
number carries exactly (I-JSON, RFC 7493). A count above it, or below 0, is out of range."""

MAX_RESET: Final = 24 * 60 * 60.0
"""The longest rate-limit reset a header may announce: no provider's window is longer than a
day (daily quotas reset within 24 hours). A later one is out of range."""

_MAX_HONOURED_DELAY: Final = 60.0 * 60


def count_in_range(value: int) -> int | None:
    """``value`` if it is a count a provider can mean (0 to `MAX_COUNT`), else None."""
    return value if 0 <= value <= MAX_COUNT else None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date).

    A value that is not a number or a date, negative or infinite is ignored; a delay longer
    than an hour is an hour (long enough to refuse a retry, short enough to recover).
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return min(value, _MAX_HONOURED_DELAY)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            value = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, OverflowError):
            return None
        return min(max(0.0, value), _MAX_HONOURED_DELAY)
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, _MAX_HONOURED_DELAY)


_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_header(text: str) -> float | None:
    """Parse Go-style durations from rate-limit headers: ``12ms``, ``1s``, ``6m0s``, ``1h2m3.5s``.

    Also accepts a bare number of seconds and an RFC 3339 timestamp (Anthropic's resets),
    returned as seconds from now (0 when it has passed). Returns None when the text is none of
    these, or when the duration is out of range (infinite or longer than `MAX_RESET`).
    """
    seconds = _duration(text.strip())
    if seconds is None or not 0 <= seconds <= MAX_RESET:
        return None
    return seconds


def _duration(text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    if "T" in text and ("-" in text or ":" in text):
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - time.time())
        except (ValueError, OverflowError):
            return None
    total = 0.0
    number = ""
    i = 0
    matched = False
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in _UNITS or not number:
            return None
        try:
            total += float(number) * _UNITS[unit]
        except ValueError:
            return None
        matched = True
        number = ""
        i += len(unit)
    if number or not matched:
        return None
    return total


def datetime_from_unix(value: float | None) -> datetime | None:
    """A provider's unix timestamp as an aware UTC datetime; None when it is missing, zero,
    negative, not finite or beyond what a datetime holds."""
    global _last_datetime  # a one-entry cache
    try:
        if value is None or not math.isfinite(value) or value <= 0:
            return None
    except OverflowError:  # an integer beyond any float
        return None
    last = _last_datetime  # answers of one second share their time: made once
    if last[0] == value:
        return last[1]
    try:
        when = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    _last_datetime = (value, when)
    return when


_last_datetime: tuple[float, datetime | None] = (math.nan, None)
"""The last timestamp `datetime_from_unix` converted, and its datetime (a datetime is
immutable: sharing it is safe)."""


def unix_to_datetime(value: float | None) -> datetime:
    """A provider's unix timestamp as an aware UTC datetime (now when missing or out of
    range: a creation time is informative, never worth failing an answer for)."""
    when = datetime_from_unix(value)
    return datetime.now(UTC) if when is None else when


def has_content(chunks: list[StreamChunk]) -> bool:
    """Whether any of ``chunks`` carries content: text, reasoning, a signature, a tool-call
    fragment or a finish reason. A decoder whose stream fails after content came out marks
    the failure not retryable (docs/providers.md, "Malformed answers")."""
    for chunk in chunks:
        if (
            chunk.text
            or chunk.reasoning
            or chunk.tool_calls
            or chunk.finish_reason
            or chunk.reasoning_signature is not None
        ):
            return True
    return False


def checked_usage(usage: Usage) -> Usage | None:
    """``usage`` if its counts are in range (0 to `MAX_COUNT`), else None: a provider's usage
    that cannot be true is no usage (the caller then estimates it). A cost that is negative
    or beyond `MAX_COUNT` dollars (``cost`` or ``reported_cost``) is dropped (unknown), the
    counts kept."""
    counts = (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )
    if min(counts) < 0 or max(counts) > MAX_COUNT:
        return None
    if usage.cost is None and usage.reported_cost is None:
        return usage
    changes: dict[str, None] = {}
    for name in ("cost", "reported_cost"):
        cost: Decimal | None = getattr(usage, name)
        if cost is not None and not (cost.is_finite() and 0 <= cost <= MAX_COUNT):
            changes[name] = None
    return msgspec.structs.replace(usage, **changes) if changes else usage


_COUNT_FIELDS: Final = (
    "requests_limit",
    "requests_remaining",
    "tokens_limit",
    "tokens_remaining",
    "input_tokens_limit",
    "input_tokens_remaining",
    "output_tokens_limit",
    "output_tokens_remaining",
)
_RESET_FIELDS: Final = (
    "requests_reset",
    "tokens_reset",
    "input_tokens_reset",
    "output_tokens_reset",
)


def checked_rate_limits(info: RateLimitInfo) -> RateLimitInfo:
    """``info`` with every value that cannot be true left out: counts outside 0 to
    `MAX_COUNT`, resets that are not finite or longer than `MAX_RESET`, a ``retry_after``
    that is negative, not finite or longer than an hour. What any codec parsed, the built-in
    ones or yours, goes through this before the rate-limit governor sees it."""
    changes: dict[str, Any] = {}
    for name in _COUNT_FIELDS:
        value = getattr(info, name)
        if value is not None and (type(value) is not int or count_in_range(value) is None):
            changes[name] = None
    for name in (*_RESET_FIELDS, "retry_after"):
        value = getattr(info, name)
        limit = _MAX_HONOURED_DELAY if name == "retry_after" else MAX_RESET
        if value is not None and not (
            isinstance(value, int | float) and 0 <= value <= limit  # NaN fails both
        ):
            changes[name] = None
    return msgspec.structs.replace(info, **changes) if changes else info


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    request_id: str | None = None,
    retry_after: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> LLMError:
    """The default mapping of an HTTP status to a typed error (WIRE-FORMATS 6.3)."""
    kwargs: dict[str, Any] = {
        "provider": provider,
        "status": status,
        "request_id": request_id,
        "retry_after": retry_after,
        "details": details,
    }
    if status in (401, 403):
        return AuthenticationError(message, **kwargs)
    if status == 404:
        return ModelNotSupported(message, **kwargs)
    if status == 429:
        return RateLimited(message, **kwargs)
    if status in (408, 504):
        return InvocationTimeout(message, **kwargs)
    if status == 409:
        return ProviderError(message, retryable=True, **kwargs)
    if status in (503, 529):
        return ProviderOverloaded(message, **kwargs)
    if status >= 500:
        return ProviderError(message, retryable=True, **kwargs)
    if 400 <= status < 500:
        return InvalidRequest(message, **kwargs)
    return ProviderError(message, **kwargs)


class ProviderCodec(abc.ABC):
    """One provider's wire format. Subclasses set ``kind`` and implement the methods.

    An instance is configured for one provider entry (its name, base URL, extra headers and
    options); it holds no connection and no key. The key is passed to `encode` and friends.

    To write one: set ``kind`` (a short name of the format) and ``default_base_url``, and
    implement `known_models`, `supports`, `validate`, `encode`, `stream_decoder` (a fresh
    `StreamDecoder` per streamed answer), `decode_response`, `map_error`,
    `list_models_request` and `decode_models`; `parse_rate_limits`, `retry_advice` and the
    token-count pair have defaults. Every method is sync and does no I/O. How the session
    treats what they do:

    * `encode`, `validate`: an `LLMError` they raise is that call's error; any other
      exception fails the call with a `ProviderError` (``details["reason"]`` is
      ``"encode failed"``), nothing is sent;
    * `stream_decoder`, `decode_response`, `decode_models`, `map_error`: any exception other
      than an `LLMError` is a malformed answer (`ProviderError`, ``details["reason"]`` is
      ``"malformed response"``, retried only before content reached the caller); a chunk
      whose ``error`` is set ends the stream with that error; a 401 `AuthenticationError`
      from `map_error` sets the key aside for the model's family;
    * `parse_rate_limits`, `retry_advice`: an exception there is logged and ignored.
    """

    kind: ClassVar[str]
    default_base_url: ClassVar[str]

    def __init__(
        self,
        *,
        name: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name or self.kind
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.extra_headers = dict(headers or {})
        self.options: dict[str, Any] = dict(options or {})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.base_url}>"

    # -- capabilities ---------------------------------------------------------------------

    @abc.abstractmethod
    def known_models(self) -> list[ModelInfo]:
        """Models this codec knows without asking the provider (may be empty)."""

    @abc.abstractmethod
    def supports(self, feature: Feature, model: str | None = None) -> bool:
        """Whether the provider (and ``model``, when given) has ``feature``."""

    @abc.abstractmethod
    def validate(self, request: Request) -> None:
        """Reject a request the provider cannot serve, before anything is sent.

        Raises:
            InvalidRequest: the request is malformed for this provider.
            ModelNotSupported: the model lacks a feature the request needs.
        """

    # -- invocations ----------------------------------------------------------------------

    @abc.abstractmethod
    def encode(self, request: Request, api_key: str | None) -> HttpRequest:
        """The HTTP request for ``request`` (streamed when ``request.stream``)."""

    @abc.abstractmethod
    def stream_decoder(self, request: Request) -> StreamDecoder:
        """A fresh decoder for the streamed body of ``encode(request)``."""

    @abc.abstractmethod
    def decode_response(self, request: Request, body: bytes) -> Response:
        """Decode a non-streamed body.

        Raises:
            ProviderError: the body is not what the provider documents.
        """

    # -- errors and limits ----------------------------------------------------------------

    @abc.abstractmethod
    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """The typed error for a non-2xx response."""

    def parse_rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """The rate-limit state the response headers tell (None when they tell nothing)."""
        return None

    def retry_advice(self, error: LLMError, headers: Mapping[str, str]) -> RetryAdvice:
        """Whether to retry after ``error`` and how long to wait.

        ``x-should-retry`` wins when present; otherwise the error's own ``retryable`` flag,
        with the delay from ``retry-after-ms`` / ``retry-after`` or the error's
        ``retry_after`` (set from the body by providers that put it there).
        """
        override = headers.get("x-should-retry")
        if override == "true":
            retryable = True
        elif override == "false":
            retryable = False
        else:
            retryable = error.retryable
        delay = parse_retry_after(headers)
        if delay is None:
            delay = error.retry_after
        return RetryAdvice(retryable=retryable, delay=delay)

    # -- models and tokens ----------------------------------------------------------------

    @abc.abstractmethod
    def list_models_request(self, api_key: str | None) -> HttpRequest:
        """The request listing the provider's models."""

    @abc.abstractmethod
    def decode_models(self, body: bytes) -> list[ModelInfo]:
        """Decode the model list."""

    def count_tokens_request(self, request: Request, api_key: str | None) -> HttpRequest | None:
        """The provider's token-counting request, or None if it has no such endpoint."""
        return None

    def decode_count_tokens(self, body: bytes) -> int:
        """Decode a token count.

        Raises:
            ProviderError: this provider has no count endpoint, or the body is malformed.
        """
        raise ProviderError("this provider has no token-counting endpoint", provider=self.name)
