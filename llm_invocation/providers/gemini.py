"""The Google Gemini codec (Generative Language API, ``generateContent``), sans-I/O.

``GeminiCodec`` encodes a `Request` as ``POST {base}/models/{model}:generateContent`` or, for a
stream, ``:streamGenerateContent?alt=sse`` (``stream_format="sse"``, the default) or
``:streamGenerateContent`` without ``alt=sse`` (``stream_format="json-array"``, one JSON array
streamed element by element). The key goes in the ``x-goog-api-key`` header, never in the URL.

How messages, options and ``provider_options`` map onto the body is described in
`llm_invocation.providers._gemini_encode`; the provider entry's ``options``, checked when the
codec is made and sent under the request's, in `llm_invocation.providers._options`; how
streamed objects become chunks in `llm_invocation.providers._gemini_stream`; the
normalisation of finish reasons, usage and errors in `llm_invocation.providers._gemini_wire`.

Things Gemini does differently, and what the codec does about them:

* function calls carry no id: ids are synthesised as ``call_<responseId>_<ordinal>`` (Vertex's
  own ``id`` is kept when present) and tool results are matched back by name, looked up from
  the call with that id;
* ``thoughtSignature`` must be sent back verbatim: it is kept in
  ``ToolCall.metadata["thought_signature"]`` or in a `ReasoningPart`'s ``signature``;
* a blocked prompt is an HTTP 200 without candidates: a response (or final chunk) with
  finish reason ``content_filter`` and ``metadata["block_reason"]``, not an exception;
* there are no rate-limit headers; a 429's delay is ``RetryInfo.retryDelay`` in the body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, final

import msgspec

from ..errors import (
    ConfigurationError,
    LLMError,
    ModelNotSupported,
    ProviderError,
    StreamingFailed,
    error_from_info,
)
from ..types import (
    Feature,
    ImagePart,
    ModelInfo,
    Request,
    Response,
    StreamAggregator,
    StreamChunk,
)
from ._base import (
    JSON_ERRORS,
    HttpRequest,
    ProviderCodec,
    RateLimitInfo,
    RetryAdvice,
    StreamDecoder,
    parse_retry_after,
)
from ._gemini_encode import GENERATION_KEYS, build_body, camel_case, model_path
from ._gemini_stream import ChunkConverter, GeminiJSONArrayDecoder, GeminiSSEDecoder
from ._gemini_wire import (
    RETRYABLE_STATUSES,
    CountTokensResponse,
    GenerateContentResponse,
    ListModelsResponse,
    decode_error_body,
    error_from_status,
)
from ._options import ProviderOptions, gemini_rules

__all__ = ["GeminiCodec", "GeminiJSONArrayDecoder", "GeminiSSEDecoder", "StreamFormat"]

StreamFormat = Literal["sse", "json-array"]
"""How a streamed answer is framed: server-sent events, or one incrementally sent JSON array."""

_ENCODER: Final = msgspec.json.Encoder()
_RESPONSE_DECODER: Final = msgspec.json.Decoder(GenerateContentResponse)
_MODELS_DECODER: Final = msgspec.json.Decoder(ListModelsResponse)
_COUNT_DECODER: Final = msgspec.json.Decoder(CountTokensResponse)
_JSON_CONTENT: Final = "application/json"

# -- model capabilities -------------------------------------------------------------------------

_PROVIDER_FEATURES: Final = frozenset(Feature) - {Feature.MCP}
_NOT_CHAT: Final = ("embedding", "imagen", "veo-", "aqa", "lyria")
_VERSION: Final = re.compile(r"gemini-(\d+)(?:\.(\d+))?")
_ASSUMED_METHODS: Final = ("generateContent", "countTokens")


def _thinks(name: str) -> bool:
    if "thinking" in name:
        return True
    if name.startswith("gemini-") and name.endswith("-latest"):
        return True
    match = _VERSION.match(name)
    if match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return (major, minor) >= (2, 5)


def _features(model: str, methods: Sequence[str], thinking: bool | None) -> frozenset[Feature]:
    """What a model can do, from its generation methods and, failing better, its name.

    Unknown names (tuned models, new families) get the features of a Gemini chat model: a
    request is refused up front only for what is known to be missing.
    """
    name = model.rsplit("/", 1)[-1].lower()
    features: set[Feature] = set()
    if "countTokens" in methods:
        features.add(Feature.COUNT_TOKENS)
    if "generateContent" not in methods or any(word in name for word in _NOT_CHAT):
        return frozenset(features)
    features.add(Feature.STREAMING)
    speech = "-tts" in name
    if not speech:
        features.add(Feature.VISION)
    if thinking or (thinking is None and _thinks(name)):
        features.add(Feature.REASONING)
    image_out = "-image" in name or name.startswith("nano-banana")
    if not (speech or image_out or name.startswith("gemma")):
        features.update(
            (
                Feature.FUNCTION_CALLING,
                Feature.PARALLEL_TOOLS,
                Feature.JSON_MODE,
                Feature.STRUCTURED_OUTPUT,
            )
        )
    return frozenset(features)


_KNOWN: Final = (
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536),
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1_048_576, 65_536),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 1_048_576, 65_536),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", 1_048_576, 8_192),
    ("gemini-2.0-flash-lite", "Gemini 2.0 Flash-Lite", 1_048_576, 8_192),
    ("gemini-3-pro-preview", "Gemini 3 Pro Preview", 1_048_576, 65_536),
    ("gemini-3-flash-preview", "Gemini 3 Flash Preview", 1_048_576, 65_536),
)
_KNOWN_FEATURES: Final = {model: _features(model, _ASSUMED_METHODS, None) for model, *_ in _KNOWN}
_OPTION_RULES: Final = gemini_rules(GENERATION_KEYS, camel_case)


def _has_images(request: Request) -> bool:
    for message in request.messages:
        content = message.content
        if content is not None and not isinstance(content, str):
            for part in content:
                if isinstance(part, ImagePart):
                    return True
    return False


@final
class GeminiCodec(ProviderCodec):
    """The codec of the Gemini API (``generativelanguage.googleapis.com/v1beta``).

    Args:
        name: the provider entry's name (``"gemini"`` by default).
        base_url: the API root (a proxy or a regional endpoint).
        headers: extra headers sent with every request.
        options: provider options (``docs/providers.md``); ``stream_format`` is read from
            here when not given.
        stream_format: ``"sse"`` (default) or ``"json-array"``.

    Raises:
        ConfigurationError: an unknown ``stream_format``, or an option that is refused (one
            built from the request, an unknown one, a value of the wrong type).
    """

    kind: ClassVar[str] = "gemini"
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com/v1beta"

    def __init__(
        self,
        *,
        name: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        stream_format: StreamFormat | None = None,
    ) -> None:
        super().__init__(name=name, base_url=base_url, headers=headers, options=options)
        self.provider_options = ProviderOptions.parse(self.options, _OPTION_RULES, name=self.name)
        chosen: Any = stream_format or self.provider_options.settings.get("stream_format", "sse")
        if chosen not in ("sse", "json-array"):
            raise ConfigurationError(
                f"stream_format must be 'sse' or 'json-array', not {chosen!r}",
                provider=self.name,
                details={"field": "stream_format"},
            )
        self.stream_format: StreamFormat = chosen

    # -- capabilities ---------------------------------------------------------------------

    def known_models(self) -> list[ModelInfo]:
        """The current Gemini text models, with their limits."""
        return [
            ModelInfo(
                id=model,
                provider=self.name,
                display_name=display,
                context_window=window,
                max_output_tokens=output,
                features=_KNOWN_FEATURES[model],
            )
            for model, display, window, output in _KNOWN
        ]

    def supports(self, feature: Feature, model: str | None = None) -> bool:
        """Whether Gemini (and ``model``, judged by its name, when given) has ``feature``."""
        if model is None:
            return feature in _PROVIDER_FEATURES
        return feature in self._model_features(model)

    def _model_features(self, model: str) -> frozenset[Feature]:
        known = _KNOWN_FEATURES.get(model)
        if known is not None:
            return known
        return _features(model, _ASSUMED_METHODS, None)

    def validate(self, request: Request) -> None:
        """Reject what Gemini or the model cannot serve, before anything is sent.

        Raises:
            ModelNotSupported: images for a model without vision, tools for one without
                function calling, a response format it cannot produce.
            InvalidRequest: a tool result whose tool name cannot be found, tool-call arguments
                that are not a JSON object, an image in a system message, more than five
                stop sequences.
        """
        features = self._model_features(request.model)
        needs: list[tuple[Feature, str]] = []
        if _has_images(request):
            needs.append((Feature.VISION, "images"))
        if request.tools:
            needs.append((Feature.FUNCTION_CALLING, "tools"))
        response_format = request.response_format
        if response_format is not None:
            if response_format.type == "json_object":
                needs.append((Feature.JSON_MODE, "JSON output"))
            elif response_format.type == "json_schema":
                needs.append((Feature.STRUCTURED_OUTPUT, "schema-constrained output"))
        for feature, what in needs:
            if feature not in features:
                raise ModelNotSupported(
                    f"model {request.model!r} does not take {what}",
                    provider=self.name,
                    details={"model": request.model, "feature": str(feature)},
                )
        build_body(self.provider_options.apply(request), provider=self.name)

    # -- invocations ----------------------------------------------------------------------

    def _headers(self, api_key: str | None, *, json_body: bool) -> dict[str, str]:
        headers = {"content-type": _JSON_CONTENT} if json_body else {}
        headers.update(self.extra_headers)
        if api_key:
            headers["x-goog-api-key"] = api_key
        return headers

    def encode(self, request: Request, api_key: str | None) -> HttpRequest:
        """The ``generateContent`` (or ``streamGenerateContent``) request for ``request``.

        Raises:
            InvalidRequest: see `validate`.
        """
        request = self.provider_options.apply(request)
        body = _ENCODER.encode(build_body(request, provider=self.name))
        path = f"{self.base_url}/{model_path(request.model)}"
        if not request.stream:
            url = f"{path}:generateContent"
        elif self.stream_format == "sse":
            url = f"{path}:streamGenerateContent?alt=sse"
        else:
            url = f"{path}:streamGenerateContent"
        return HttpRequest(
            method="POST",
            url=url,
            headers=self._headers(api_key, json_body=True),
            body=body,
            stream=request.stream,
        )

    def stream_decoder(self, request: Request) -> StreamDecoder:
        """A decoder for the framing this codec asks for (``stream_format``)."""
        if self.stream_format == "sse":
            return GeminiSSEDecoder(provider=self.name, model=request.model)
        return GeminiJSONArrayDecoder(provider=self.name, model=request.model)

    def decode_response(self, request: Request, body: bytes) -> Response:
        """Decode a ``generateContent`` body (a JSON-array stream body is accepted too).

        A blocked prompt is a response with an empty assistant message, finish reason
        ``content_filter`` and ``metadata["block_reason"]``. ``id`` is ``responseId``,
        ``model`` is ``modelVersion`` and ``created`` is ``createTime`` (Vertex AI); without
        one it is the time the body was decoded (the Gemini API sends none).

        Raises:
            ProviderError: the body is not a ``GenerateContentResponse`` (retryable: a
                malformed answer before any content, see docs/providers.md).
            LLMError: the typed error when the body is an error object.
        """
        chunks: list[StreamChunk]
        if body.lstrip()[:1] == b"[":
            decoder = GeminiJSONArrayDecoder(provider=self.name, model=request.model)
            chunks = decoder.feed(body)
            chunks.extend(decoder.close())
        else:
            try:
                decoded = _RESPONSE_DECODER.decode(body)
            except JSON_ERRORS as exc:
                raise ProviderError(
                    f"malformed Gemini response: {exc}",
                    provider=self.name,
                    retryable=True,  # nothing reached the caller (docs/providers.md)
                    details={"reason": "malformed response"},
                ) from exc
            if decoded.error is not None:
                raise error_from_status(
                    decoded.error.code or 500, decoded.error, provider=self.name
                )
            chunks = ChunkConverter(provider=self.name, model=request.model).convert(decoded)
        aggregator = StreamAggregator()
        for chunk in chunks:
            aggregator.add(chunk)
        error = aggregator.error
        if error is not None:
            failed = error_from_info(error)  # with the decoding exception as its cause
            if error.code == StreamingFailed.code:
                # A whole body that does not decode: nothing reached the caller, so it may
                # be retried like any malformed answer before content (docs/providers.md).
                raise ProviderError(
                    error.message,
                    provider=self.name,
                    retryable=True,
                    details={"reason": "malformed response"},
                ) from failed.__cause__
            raise failed
        return aggregator.response(provider=self.name, model=request.model)

    # -- errors and limits ----------------------------------------------------------------

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """The typed error of a non-2xx answer (``google.rpc.Status`` body, or anything)."""
        error = error_from_status(
            status,
            decode_error_body(body),
            provider=self.name,
            body=body,
            request_id=headers.get("x-request-id"),
        )
        if error.retry_after is None:
            error.retry_after = parse_retry_after(headers)
        return error

    def parse_rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Gemini sends no rate-limit headers: only a ``retry-after``, if any, is reported."""
        delay = parse_retry_after(headers)
        return None if delay is None else RateLimitInfo(retry_after=delay)

    def retry_advice(self, error: LLMError, headers: Mapping[str, str]) -> RetryAdvice:
        """Retry the statuses the official SDK retries (408, 429, 500, 502, 503, 504).

        Errors without a status (a broken stream, a transport timeout) keep their own
        ``retryable``. The delay is ``RetryInfo.retryDelay`` from the body, then
        ``retry-after``; None leaves it to the backoff.
        """
        status = error.status
        retryable = error.retryable if status is None else status in RETRYABLE_STATUSES
        delay = error.retry_after
        if delay is None:
            delay = parse_retry_after(headers)
        return RetryAdvice(retryable=retryable, delay=delay)

    # -- models and tokens ----------------------------------------------------------------

    def list_models_request(self, api_key: str | None) -> HttpRequest:
        """``GET {base}/models?pageSize=1000`` (every model in one page)."""
        return HttpRequest(
            method="GET",
            url=f"{self.base_url}/models?pageSize=1000",
            headers=self._headers(api_key, json_body=False),
        )

    def decode_models(self, body: bytes) -> list[ModelInfo]:
        """The models of a ``GET /models`` body, ids without the ``models/`` prefix.

        Raises:
            ProviderError: the body is not a model list.
        """
        try:
            listing = _MODELS_DECODER.decode(body)
        except JSON_ERRORS as exc:
            raise ProviderError(f"malformed Gemini model list: {exc}", provider=self.name) from exc
        models: list[ModelInfo] = []
        for wire in listing.models:
            model = wire.name.removeprefix("models/")
            models.append(
                ModelInfo(
                    id=model,
                    provider=self.name,
                    display_name=wire.display_name,
                    context_window=wire.input_token_limit,
                    max_output_tokens=wire.output_token_limit,
                    features=_features(model, wire.supported_generation_methods, wire.thinking),
                    metadata={"version": wire.version} if wire.version else None,
                )
            )
        return models

    def count_tokens_request(self, request: Request, api_key: str | None) -> HttpRequest:
        """``POST {base}/models/{model}:countTokens``.

        The body is ``{"contents": [...]}`` when the request is only contents; with a system
        instruction, tools or options it is the documented ``{"generateContentRequest":
        {"model": "models/<id>", ...}}`` form, so those tokens are counted too.

        Raises:
            InvalidRequest: see `validate`.
        """
        body = build_body(self.provider_options.apply(request), provider=self.name)
        path = model_path(request.model)
        payload = (
            {"contents": body["contents"]}
            if len(body) == 1
            else {"generateContentRequest": {"model": path, **body}}
        )
        return HttpRequest(
            method="POST",
            url=f"{self.base_url}/{path}:countTokens",
            headers=self._headers(api_key, json_body=True),
            body=_ENCODER.encode(payload),
        )

    def decode_count_tokens(self, body: bytes) -> int:
        """``totalTokens`` of a ``countTokens`` body.

        Raises:
            ProviderError: the body is not a ``CountTokensResponse``.
        """
        try:
            return _COUNT_DECODER.decode(body).total_tokens
        except JSON_ERRORS as exc:
            raise ProviderError(f"malformed Gemini token count: {exc}", provider=self.name) from exc
