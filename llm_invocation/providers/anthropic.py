"""The Anthropic Messages API codec (sans-I/O; WIRE-FORMATS 3 and 6).

`AnthropicCodec` turns a `Request` into ``POST {base}/messages`` and decodes what comes
back: streamed bodies through `AnthropicStreamDecoder`, whole bodies through
`AnthropicCodec.decode_response`, error bodies through `AnthropicCodec.map_error`, plus the
``anthropic-ratelimit-*`` headers, the models list and ``count_tokens``.

What does not map onto the API is refused before anything is sent (`InvalidRequest`):
``seed``, ``frequency_penalty`` and ``presence_penalty`` have no equivalent, and a JSON object
response format needs a schema (``output_config.format``). ``max_tokens`` is required by the
API: requests without it get ``default_max_tokens`` (4096 unless configured).

Prompt caching: `CacheControl` markers on parts, messages and tools become ``cache_control``
breakpoints on their blocks (see ``_anthropic_encode``); more than four, a ``"1h"`` one after
a ``"5m"`` one, or one with no block to carry it is refused. Usage keeps the cache reads,
the writes and the share of the writes made for an hour (priced apart).

Provider-specific fields go in ``options.provider_options`` and are merged into the body last
(``thinking``, ``metadata``, ``service_tier``, ``output_config.effort``, server tools in
``tools``...). Three keys are the codec's own: ``betas`` (or ``anthropic_beta``), a list or
comma-separated string sent as the ``anthropic-beta`` header, and
``disable_parallel_tool_use``, set on ``tool_choice``. The provider entry's ``options`` are
checked when the codec is made and sit under the request's (``_options.ANTHROPIC_RULES``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, final

import msgspec

from ..errors import (
    ConfigProblem,
    ConfigurationError,
    InvalidRequest,
    LLMError,
    ModelNotSupported,
    ProviderError,
)
from ..types import (
    Choice,
    Feature,
    FinishReason,
    Message,
    ModelInfo,
    Part,
    ReasoningPart,
    Request,
    Response,
    TextPart,
    ToolCall,
)
from ._anthropic_encode import UNSUPPORTED_OPTIONS, build_body, pop_betas
from ._anthropic_stream import AnthropicStreamDecoder
from ._anthropic_wire import (
    Block,
    CountTokensBody,
    ErrorBody,
    MessageBody,
    ModelsPage,
    WireModel,
    error_from_type,
    finish_reason,
    normalise_usage,
)
from ._base import (
    JSON_ERRORS,
    HttpRequest,
    ProviderCodec,
    RateLimitInfo,
    RetryAdvice,
    count_in_range,
    error_for_status,
    parse_duration_header,
    parse_retry_after,
)
from ._options import ANTHROPIC_RULES, ProviderOptions

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicCodec",
    "AnthropicStreamDecoder",
]

ANTHROPIC_VERSION: Final = "2023-06-01"
"""The ``anthropic-version`` header every request carries."""

DEFAULT_MAX_TOKENS: Final = 4096
"""``max_tokens`` for requests that set none (the API requires it)."""

_MAX_HONOURED_RETRY_AFTER: Final = 60.0
"""The SDK honours a ``retry-after`` of at most 60 s; above that it falls back to backoff."""

_ENCODER: Final = msgspec.json.Encoder()
_MESSAGE_DECODER: Final = msgspec.json.Decoder(MessageBody)
_ERROR_DECODER: Final = msgspec.json.Decoder(ErrorBody)
_COUNT_DECODER: Final = msgspec.json.Decoder(CountTokensBody)
_MODELS_DECODER: Final = msgspec.json.Decoder(ModelsPage)

_ALL_FEATURES: Final = frozenset(
    {
        Feature.FUNCTION_CALLING,
        Feature.PARALLEL_TOOLS,
        Feature.VISION,
        Feature.STRUCTURED_OUTPUT,
        Feature.STREAMING,
        Feature.REASONING,
        Feature.COUNT_TOKENS,
    }
)
"""What the API offers (no JSON mode without a schema, no provider-side MCP here)."""

# (alias, display name, context window, max output tokens); every one has all features.
_KNOWN: Final = (
    ("claude-fable-5-1", "Claude Fable 5.1", 1_000_000, 128_000),
    ("claude-opus-5-5", "Claude Opus 5.5", 1_000_000, 128_000),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5", 1_000_000, 128_000),
    ("claude-haiku-5-5", "Claude Haiku 5.5", 1_000_000, 128_000),
    ("claude-opus-4-6", "Claude Opus 4.6", 1_000_000, 128_000),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", 200_000, 64_000),
    ("claude-haiku-4-5", "Claude Haiku 4.5", 200_000, 64_000),
)

# claude-3-5-haiku-20241022, claude-sonnet-4-20250514, claude-opus-4-1, claude-2.1: the
# generation, and the minor version when it is one digit (not the date that follows).
_VERSION: Final = re.compile(r"claude-(?:[a-z]+-)?(\d+)(?:[-.](\d)(?!\d))?")


def _features_from_id(model: str) -> frozenset[Feature]:
    """Features inferred from a model id; an id that is not a versioned Claude gets all."""
    match = _VERSION.match(model)
    if match is None:
        return _ALL_FEATURES
    version = (int(match.group(1)), int(match.group(2) or 0))
    features = {Feature.STREAMING, Feature.COUNT_TOKENS}
    if version >= (3, 0):
        features |= {Feature.VISION, Feature.FUNCTION_CALLING, Feature.PARALLEL_TOOLS}
    if version >= (3, 7):
        features.add(Feature.REASONING)
    if version >= (4, 1):
        features.add(Feature.STRUCTURED_OUTPUT)
    return frozenset(features)


@final
class AnthropicCodec(ProviderCodec):
    """The Anthropic Messages API (``https://api.anthropic.com/v1``).

    Args:
        name: the provider name (``"anthropic"`` by default).
        base_url: the API base, ending in ``/v1``.
        headers: extra headers for every request (an ``authorization`` header for OAuth
            tokens, a gateway's headers); they override the codec's defaults.
        options: provider options: the settings ``default_max_tokens``,
            ``anthropic_version``, ``betas`` (flags sent on every request), sampling
            defaults and body fields (``docs/providers.md``).
        default_max_tokens: ``max_tokens`` for requests without one (overrides
            ``options["default_max_tokens"]``; 4096 when neither is set).

    Raises:
        ConfigurationError: ``default_max_tokens`` is not a positive integer, a beta flag is
            not a string, or an option is refused (see ``docs/providers.md``).
    """

    kind: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = "https://api.anthropic.com/v1"

    def __init__(
        self,
        *,
        name: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        default_max_tokens: int | None = None,
    ) -> None:
        super().__init__(name=name, base_url=base_url, headers=headers, options=options)
        self.provider_options = ProviderOptions.parse(self.options, ANTHROPIC_RULES, name=self.name)
        settings = self.provider_options.settings
        value: Any = default_max_tokens
        if value is None:
            value = settings.get("default_max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self._bad_setting(
                "default_max_tokens", f"must be a positive integer, got {value!r}"
            )
        self.default_max_tokens: int = value
        self.anthropic_version = str(settings.get("anthropic_version", ANTHROPIC_VERSION))
        try:
            self._betas = pop_betas({key: settings.get(key) for key in ("betas", "anthropic_beta")})
        except InvalidRequest:
            raise self._bad_setting("betas", "must be a string or a list of strings") from None
        self._features: dict[str, frozenset[Feature]] = {}

    def _bad_setting(self, key: str, message: str) -> ConfigurationError:
        problem = ConfigProblem(path=f"providers.{self.name}.options.{key}", message=message)
        return ConfigurationError(problems=[problem], provider=self.name)

    # -- capabilities ---------------------------------------------------------------------

    def known_models(self) -> list[ModelInfo]:
        """A few current Claude models, by alias (dated snapshots match by prefix)."""
        return [
            ModelInfo(
                id=alias,
                provider=self.name,
                display_name=display,
                context_window=context,
                max_output_tokens=output,
                features=_ALL_FEATURES,
            )
            for alias, display, context, output in _KNOWN
        ]

    def model_features(self, model: str) -> frozenset[Feature]:
        """The features of ``model``: from the known list, else inferred from its id."""
        features = self._features.get(model)
        if features is None:
            features = _features_from_id(model)
            for alias, *_ in _KNOWN:
                if model == alias or model.startswith(alias + "-"):
                    features = _ALL_FEATURES
                    break
            self._features[model] = features
        return features

    def supports(self, feature: Feature, model: str | None = None) -> bool:
        """Whether the API (and ``model``, when given) has ``feature``."""
        if model is None:
            return feature in _ALL_FEATURES
        return feature in self.model_features(model)

    def validate(self, request: Request) -> None:
        """Reject what Anthropic cannot serve, before anything is sent.

        Raises:
            InvalidRequest: an unsupported option (``seed``, ``frequency_penalty``,
                ``presence_penalty``), a JSON object format without a schema, content
                Anthropic cannot take where it is, ``tool_choice='required'`` without tools,
                or cache breakpoints the API would refuse.
            ModelNotSupported: images for a model without vision, tools for a model without
                function calling, or a JSON schema for a model without structured output.
        """
        options = request.options
        for name in UNSUPPORTED_OPTIONS:
            if getattr(options, name) is not None:
                raise InvalidRequest(
                    f"Anthropic does not support the {name!r} option; remove it",
                    details={"field": f"options.{name}", "option": name},
                )
        features = self.model_features(request.model)
        needs: list[tuple[Feature, str]] = []
        if any(message.images for message in request.messages):
            needs.append((Feature.VISION, "images"))
        if request.tools or any(message.tool_calls for message in request.messages):
            needs.append((Feature.FUNCTION_CALLING, "tools"))
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            needs.append((Feature.STRUCTURED_OUTPUT, "a JSON schema response format"))
        for feature, what in needs:
            if feature not in features:
                raise ModelNotSupported(
                    f"model {request.model!r} does not support {what} ({feature})",
                    provider=self.name,
                    details={"model": request.model, "feature": str(feature)},
                )
        # Everything else the encoder refuses (content, formats, tool_choice) is found by
        # building the body once.
        build_body(
            self.provider_options.apply(request),
            default_max_tokens=self.default_max_tokens,
            provider=self.name,
        )

    # -- invocations ----------------------------------------------------------------------

    def _headers(self, api_key: str | None, betas: list[str], *, json: bool) -> dict[str, str]:
        headers = {"anthropic-version": self.anthropic_version}
        if json:
            headers["content-type"] = "application/json"
        flags = self._betas + [flag for flag in betas if flag not in self._betas]
        if flags:
            headers["anthropic-beta"] = ",".join(flags)
        headers.update(self.extra_headers)
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def encode(self, request: Request, api_key: str | None) -> HttpRequest:
        """``POST {base}/messages`` for ``request`` (``stream: true`` when it streams).

        Raises:
            InvalidRequest: the request uses something Anthropic cannot express (see
                `validate`).
        """
        request = self.provider_options.apply(request)
        body, betas = build_body(
            request, default_max_tokens=self.default_max_tokens, provider=self.name
        )
        return HttpRequest(
            method="POST",
            url=f"{self.base_url}/messages",
            headers=self._headers(api_key, betas, json=True),
            body=_ENCODER.encode(body),
            stream=request.stream,
        )

    def stream_decoder(self, request: Request) -> AnthropicStreamDecoder:
        """A fresh decoder for the streamed body of ``encode(request)``."""
        return AnthropicStreamDecoder(provider=self.name)

    def decode_response(self, request: Request, body: bytes) -> Response:
        """Decode a non-streamed ``/v1/messages`` body.

        Content blocks are read in order: text becomes `TextPart` (the content is a plain
        string when there is only text; adjacent text blocks are joined, as a stream's
        aggregate joins them), thinking becomes `ReasoningPart` with its signature (redacted
        thinking: ``redacted=True``), its ``provider`` this codec's name, and ``tool_use``
        becomes a `ToolCall` whose arguments are the input as compact JSON. Server-tool
        blocks are skipped. ``created`` is the time the body was decoded: Anthropic sends no
        creation time, and a streamed answer's aggregate gets the time it ended, so both mean
        "when the whole answer was here".

        Raises:
            ProviderError: the body is not a message (and not an error body); retryable, a
                malformed answer before any content (docs/providers.md).
            LLMError: the body is an error body (its typed error, as `map_error` makes it).
        """
        try:
            message = _MESSAGE_DECODER.decode(body)
        except JSON_ERRORS as exc:
            raise ProviderError(
                f"malformed Anthropic message body: {exc}",
                provider=self.name,
                retryable=True,  # nothing reached the caller (docs/providers.md)
                details={"reason": "malformed response"},
            ) from exc
        if message.type == "error":
            error = message.error
            raise error_from_type(
                error.type if error else "",
                error.message if error else "",
                provider=self.name,
                status=None,
                request_id=message.request_id,
            )
        parts, calls, redacted = self._content(message.content, self.name)
        native = message.stop_reason
        finish: FinishReason | None = finish_reason(native)
        if finish is None and calls:
            finish = "tool_calls"
        metadata: dict[str, Any] = {}
        usage = message.usage
        if usage is not None and usage.service_tier:
            metadata["service_tier"] = usage.service_tier
        if redacted:
            metadata["redacted_thinking"] = True
        if native is not None:
            metadata["native_finish_reason"] = native
        if message.stop_sequence is not None:
            metadata["stop_sequence"] = message.stop_sequence
        content: str | list[Part] | None
        if all(isinstance(part, TextPart) for part in parts):
            content = "".join([part.text for part in parts if isinstance(part, TextPart)]) or None
        else:
            content = parts
        return Response(
            id=message.id,
            provider=self.name,
            model=message.model or request.model,
            created=datetime.now(UTC),
            choices=[
                Choice(
                    index=0,
                    message=Message(role="assistant", content=content, tool_calls=calls or None),
                    finish_reason=finish,
                )
            ],
            usage=normalise_usage(usage) if usage is not None else None,
            metadata=metadata or None,
        )

    @staticmethod
    def _content(blocks: list[Block], provider: str) -> tuple[list[Part], list[ToolCall], bool]:
        parts: list[Part] = []
        calls: list[ToolCall] = []
        redacted = False
        for block in blocks:
            kind = block.type
            if kind == "text":
                if not block.text:
                    continue
                last = parts[-1] if parts else None
                if isinstance(last, TextPart):
                    parts[-1] = TextPart(text=last.text + block.text)
                else:
                    parts.append(TextPart(text=block.text))
            elif kind == "thinking":
                parts.append(
                    ReasoningPart(text=block.thinking, signature=block.signature, provider=provider)
                )
            elif kind == "redacted_thinking":
                parts.append(ReasoningPart(signature=block.data, redacted=True, provider=provider))
                redacted = True
            elif kind == "tool_use":
                arguments = _ENCODER.encode(block.input if block.input is not None else {})
                calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments.decode()))
        return parts, calls, redacted

    # -- errors and limits ----------------------------------------------------------------

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """The typed error for a non-2xx response (WIRE-FORMATS 3.7).

        The body's ``error.type`` decides the class (``not_found_error`` about a model is
        `ModelNotSupported`); a body that is not Anthropic's error JSON falls back to the
        status. ``request_id`` comes from the body or the ``request-id`` header,
        ``retry_after`` from ``retry-after-ms`` / ``retry-after``, ``details["type"]`` is the
        error type.
        """
        retry_after = parse_retry_after(headers)
        request_id = headers.get("request-id")
        try:
            parsed = _ERROR_DECODER.decode(body)
        except JSON_ERRORS:
            parsed = None
        if parsed is not None and parsed.error is not None:
            error = parsed.error
            return error_from_type(
                error.type,
                error.message or f"HTTP {status}",
                provider=self.name,
                status=status,
                request_id=parsed.request_id or request_id,
                retry_after=retry_after,
            )
        text = body.decode("utf-8", "replace").strip()
        message = text[:500] if text else f"HTTP {status} with an empty body"
        return error_for_status(
            status, message, provider=self.name, request_id=request_id, retry_after=retry_after
        )

    def parse_rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Read ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*``.

        Resets are RFC 3339 timestamps, returned as seconds from now; ``retry_after`` comes
        from ``retry-after``. Returns None when no such header is present.
        """
        values: dict[str, Any] = {}
        for wire, field in _LIMIT_KINDS:
            prefix = f"anthropic-ratelimit-{wire}-"
            limit = _int_header(headers.get(prefix + "limit"))
            if limit is not None:
                values[f"{field}_limit"] = limit
            remaining = _int_header(headers.get(prefix + "remaining"))
            if remaining is not None:
                values[f"{field}_remaining"] = remaining
            reset = headers.get(prefix + "reset")
            if reset:
                seconds = parse_duration_header(reset)
                if seconds is not None:
                    values[f"{field}_reset"] = seconds
        retry_after = parse_retry_after(headers)
        if retry_after is not None:
            values["retry_after"] = retry_after
        if not values:
            return None
        return RateLimitInfo(**values)

    def retry_advice(self, error: LLMError, headers: Mapping[str, str]) -> RetryAdvice:
        """The base advice (``x-should-retry`` first), with the SDK's delay rule.

        A server delay is honoured only when 0 < delay <= 60 s; otherwise the delay is None
        (exponential backoff), as the official SDK does, rather than refusing to retry.
        """
        advice = super().retry_advice(error, headers)
        delay = advice.delay
        if delay is not None and not 0 < delay <= _MAX_HONOURED_RETRY_AFTER:
            return RetryAdvice(retryable=advice.retryable, delay=None)
        return advice

    # -- models and tokens ----------------------------------------------------------------

    def list_models_request(self, api_key: str | None) -> HttpRequest:
        """``GET {base}/models?limit=1000``."""
        return HttpRequest(
            method="GET",
            url=f"{self.base_url}/models?limit=1000",
            headers=self._headers(api_key, [], json=False),
        )

    def decode_models(self, body: bytes) -> list[ModelInfo]:
        """Decode ``GET /v1/models``.

        ``max_input_tokens`` is the context window and ``max_tokens`` the output limit;
        features come from ``capabilities`` when the API sends them, else from the model id.

        Raises:
            ProviderError: the body is malformed.
        """
        try:
            page = _MODELS_DECODER.decode(body)
        except JSON_ERRORS as exc:
            raise ProviderError(
                f"malformed Anthropic models list: {exc}", provider=self.name
            ) from exc
        return [self._model_info(model) for model in page.data]

    def _model_info(self, model: WireModel) -> ModelInfo:
        features = set(self.model_features(model.id))
        caps = model.capabilities
        if caps is not None:
            for support, feature in (
                (caps.image_input, Feature.VISION),
                (caps.structured_outputs, Feature.STRUCTURED_OUTPUT),
                (caps.thinking, Feature.REASONING),
            ):
                if support is None:
                    continue
                if support.supported:
                    features.add(feature)
                else:
                    features.discard(feature)
        created = model.created_at
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return ModelInfo(
            id=model.id,
            provider=self.name,
            display_name=model.display_name,
            context_window=model.max_input_tokens,
            max_output_tokens=model.max_tokens,
            features=frozenset(features),
            created=created,
        )

    def count_tokens_request(self, request: Request, api_key: str | None) -> HttpRequest:
        """``POST {base}/messages/count_tokens`` with the request's model, messages, system,
        tools, tool_choice (and ``thinking`` / ``output_config`` from provider options).

        Raises:
            InvalidRequest: the conversation cannot be expressed (see `validate`).
        """
        body, betas = build_body(
            self.provider_options.apply(request),
            default_max_tokens=self.default_max_tokens,
            count_tokens=True,
            provider=self.name,
        )
        return HttpRequest(
            method="POST",
            url=f"{self.base_url}/messages/count_tokens",
            headers=self._headers(api_key, betas, json=True),
            body=_ENCODER.encode(body),
        )

    def decode_count_tokens(self, body: bytes) -> int:
        """Decode ``{"input_tokens": N}``.

        Raises:
            ProviderError: the body is malformed.
        """
        try:
            return _COUNT_DECODER.decode(body).input_tokens
        except JSON_ERRORS as exc:
            raise ProviderError(
                f"malformed Anthropic token count: {exc}", provider=self.name
            ) from exc


_LIMIT_KINDS: Final = (
    ("requests", "requests"),
    ("tokens", "tokens"),
    ("input-tokens", "input_tokens"),
    ("output-tokens", "output_tokens"),
)


def _int_header(value: str | None) -> int | None:
    """A count header; None when it is not an integer or out of range."""
    if not value:
        return None
    try:
        return count_in_range(int(value.strip()))
    except ValueError:
        return None
