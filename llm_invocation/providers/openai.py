"""The OpenAI codec: Chat Completions, the legacy completions endpoint and the Responses API.

`OpenAICodec` turns a `Request` into ``POST {base}/chat/completions`` (``/completions`` when
``request.metadata["endpoint"] == "completions"``; ``/responses`` when the codec's `api`, or
the request's ``provider_options["api"]``, is ``"responses"``: see `_responses_encode`,
`_responses_stream` and `_responses_wire`) and decodes what comes back: streamed chunks
(`OpenAIStreamDecoder`, `ResponsesStreamDecoder`), whole bodies, errors, rate-limit headers
(`_openai_limits`) and the model list. It never does I/O. See WIRE-FORMATS sections 1, 2, 5
and 6.

Encoding rules worth knowing:

* ``max_tokens`` goes out as ``max_completion_tokens`` for reasoning models (o1, o3, o4,
  GPT-5) and whenever ``provider_options["use_max_completion_tokens"]`` is true (false forces
  ``max_tokens``); that key and ``api`` are consumed, every other ``provider_options`` key
  is merged into the body last and so wins;
* the provider entry's ``options`` (checked when the codec is made, `_options.openai_rules`)
  sit under the request's: sampling defaults under its `ModelOptions`, body fields under its
  ``provider_options``;
* messages are encoded by `_openai_encode.chat_messages`: `ReasoningPart` content is not
  sent (OpenAI keeps reasoning server-side); images are taken in user messages, and the
  images of tool results travel in a user message after the tool messages;
* a streamed request asks for ``stream_options: {"include_usage": true}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import msgspec

from ..errors import InvalidRequest, LLMError, ModelNotSupported, ProviderError
from ..types import (
    Choice,
    Feature,
    ImagePart,
    Message,
    ModelInfo,
    NamedToolChoice,
    Part,
    ReasoningPart,
    Request,
    Response,
    TextPart,
    ToolCall,
    ToolSpec,
)
from ._base import (
    JSON_ERRORS,
    HttpRequest,
    ProviderCodec,
    RateLimitInfo,
    RetryAdvice,
    StreamDecoder,
    datetime_from_unix,
    parse_retry_after,
    unix_to_datetime,
)
from ._openai_encode import chat_messages, refuse_image
from ._openai_errors import (
    classify_error,
    classify_stream_error,
    is_quota_error,
    parse_error_body,
)
from ._openai_limits import parse_openai_rate_limits
from ._openai_models import (
    CHAT_FEATURES,
    guess_features,
    is_reasoning_model,
    known_context_window,
    known_openai_models,
)
from ._openai_stream import OpenAIStreamDecoder
from ._openai_wire import (
    COMPLETION_DECODER,
    MODELS_DECODER,
    CompletionChoice,
    normalise_finish,
    usage_from_wire,
)
from ._options import ProviderOptions, openai_rules
from ._responses_encode import (
    Api,
    check_options,
    chosen_api,
    refuse_unsupported,
    responses_body,
)
from ._responses_stream import ResponsesStreamDecoder
from ._responses_wire import decode_response_bytes

__all__ = ["OpenAICodec", "OpenAIStreamDecoder"]

_ENCODER: Final = msgspec.json.Encoder()

_CONSUMED_OPTIONS: Final = frozenset({"use_max_completion_tokens", "api"})
_PROVIDER_FEATURES: Final = CHAT_FEATURES


def _is_legacy(request: Request) -> bool:
    metadata = request.metadata
    return metadata is not None and metadata.get("endpoint") == "completions"


class OpenAICodec(ProviderCodec):
    """OpenAI Chat Completions and the Responses API, sans I/O.

    Args:
        name: the provider entry's name (default ``"openai"``).
        base_url: the API root (default ``https://api.openai.com/v1``).
        headers: extra headers sent with every request (they win over ours).
        options: provider options of the configuration entry (``docs/providers.md``).
        organization: sent as ``OpenAI-Organization``.
        project: sent as ``OpenAI-Project``.
        max_retry_after: a ``retry-after`` longer than this many seconds means do not retry.
        api: where requests go unless their ``provider_options["api"]`` says otherwise:
            ``"chat"`` (Chat Completions) or ``"responses"`` (the Responses API,
            ``_responses_encode``).

    Raises:
        ConfigurationError: an option is refused (it collides with a field built from the
            request, the server lacks it, or its value has the wrong type).
    """

    kind: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"

    # Wire quirks; the compatible-server presets change them.
    send_stream_options: bool = True
    auto_max_completion_tokens: bool = True
    send_top_k: bool = False
    seed_field: str = "seed"
    reasoning_field: str | None = None
    retry_after_on_success: bool = False
    options_label: str = "OpenAI"

    def __init__(
        self,
        *,
        name: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        organization: str | None = None,
        project: str | None = None,
        max_retry_after: float = 60.0,
        api: Api = "chat",
    ) -> None:
        super().__init__(name=name, base_url=base_url, headers=headers, options=options)
        self.organization = organization
        self.project = project
        self.max_retry_after = max_retry_after
        rules = openai_rules(
            provider=self.options_label, top_k=self.send_top_k, seed_field=self.seed_field
        )
        self.provider_options = ProviderOptions.parse(self.options, rules, name=self.name)
        self._api: Api = "chat"
        self.api = api
        # One bound method for every stream's decoder: made per stream, it would be one
        # more object for the collector to track per open stream.
        self._stream_errors: Callable[[Any], LLMError] = self.map_stream_error

    @property
    def api(self) -> Api:
        """Where requests go unless their ``provider_options["api"]`` says otherwise."""
        return self._api

    @api.setter
    def api(self, value: Api) -> None:
        """Choose the API; the entry's options must suit it.

        Raises:
            ConfigurationError: the options name ``api`` (it is ``providers.<name>.api``),
                or set a sampling default the chosen API has no field for.
        """
        check_options(value, self.provider_options, provider=self.name)
        self._api = value

    # -- capabilities -------------------------------------------------------------------------

    def known_models(self) -> list[ModelInfo]:
        """Current OpenAI chat models with their context windows."""
        return known_openai_models(self.name)

    def model_features(self, model: str) -> frozenset[Feature]:
        """The features of ``model``, guessed from its id (every chat feature when unknown)."""
        features = guess_features(model)
        return _PROVIDER_FEATURES if features is None else features

    def supports(self, feature: Feature, model: str | None = None) -> bool:
        """Whether the provider (or ``model``, by its id's family) has ``feature``."""
        if model is None:
            return feature in _PROVIDER_FEATURES
        return feature in self.model_features(model)

    def validate(self, request: Request) -> None:
        """Refuse what the model cannot take, before anything is sent.

        Raises:
            InvalidRequest: an image in a system, developer or assistant message (for the
                Responses API: in an assistant message), an option the Responses API has no
                field for, an unknown ``provider_options["api"]``, or a legacy-completions
                request that is not a single user text message or uses tools or a response
                format.
            ModelNotSupported: images to a model without vision, tools to a model without
                function calling, or a JSON schema to a model without structured output.
        """
        if _is_legacy(request):
            self._prompt(request)
        images = ("user", "tool")
        if not _is_legacy(request) and self.api_of(request) == "responses":
            images = ("user", "tool", "system", "developer")
            refuse_unsupported(request, provider=self.name)
        needs: list[Feature] = []
        for message in request.messages:
            content = message.content
            if content is None or isinstance(content, str):
                continue
            if any(isinstance(part, ImagePart) for part in content):
                if message.role not in images:
                    raise refuse_image(message.role, provider=self.name)
                if Feature.VISION not in needs:
                    needs.append(Feature.VISION)
        if request.tools:
            needs.append(Feature.FUNCTION_CALLING)
        if request.response_format is not None and request.response_format.type == "json_schema":
            needs.append(Feature.STRUCTURED_OUTPUT)
        for feature in needs:
            if not self.supports(feature, request.model):
                raise ModelNotSupported(
                    f"model {request.model!r} does not support {feature.value.replace('_', ' ')}",
                    provider=self.name,
                    details={"model": request.model, "feature": feature.value},
                )

    # -- encoding -----------------------------------------------------------------------------

    def encode(self, request: Request, api_key: str | None) -> HttpRequest:
        """The ``POST`` for ``request``: chat completions, or legacy completions.

        Raises:
            InvalidRequest: an image in a system, developer or assistant message, a
                legacy-completions request that is not a single user text message, or
                ``provider_options`` that cannot be encoded as JSON.
        """
        request = self.provider_options.apply(request)
        legacy = _is_legacy(request)
        path = "completions" if legacy else "chat/completions"
        if not legacy and self.api_of(request) == "responses":
            body, path = self.responses_body(request), "responses"
        else:
            body = self.completions_body(request) if legacy else self.chat_body(request)
        try:
            encoded = _ENCODER.encode(body)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidRequest(
                f"the request body cannot be encoded as JSON: {exc}",
                provider=self.name,
                details={"field": "options.provider_options"},
            ) from exc
        headers = self._headers(api_key)
        headers["content-type"] = "application/json"
        headers["accept"] = "text/event-stream" if request.stream else "application/json"
        headers.update(self.extra_headers)
        return HttpRequest(
            method="POST",
            url=self._endpoint(request, path),
            headers=headers,
            body=encoded,
            stream=request.stream,
        )

    def api_of(self, request: Request) -> Api:
        """The API ``request`` goes to: its ``provider_options["api"]``, else `api`.

        Raises:
            InvalidRequest: ``provider_options["api"]`` is neither ``"chat"`` nor
                ``"responses"``.
        """
        return chosen_api(request, self.api, provider=self.name)

    def responses_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of ``POST /responses`` (`_responses_encode`), as plain data.

        Raises:
            InvalidRequest: an option the Responses API has no field for.
        """
        return responses_body(request, model=request.model, provider=self.name)

    def chat_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a chat completion, as plain data.

        Raises:
            InvalidRequest: an image in a system, developer or assistant message.
        """
        body: dict[str, Any] = {
            "model": request.model,
            "messages": chat_messages(request.messages, reasoning_field=self.reasoning_field),
        }
        provider_options = self._options(request, body, legacy=False)
        if request.tools:
            body["tools"] = [self._tool(tool) for tool in request.tools]
        choice = request.tool_choice
        if choice is not None:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if isinstance(choice, NamedToolChoice)
                else choice
            )
        fmt = request.response_format
        if fmt is not None:
            if fmt.type == "json_schema":
                schema: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.json_schema}
                if fmt.description is not None:
                    schema["description"] = fmt.description
                if fmt.strict is not None:
                    schema["strict"] = fmt.strict
                body["response_format"] = {"type": "json_schema", "json_schema": schema}
            else:
                body["response_format"] = {"type": fmt.type}
        self._stream_fields(request, body)
        body.update(provider_options)
        return body

    def completions_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a legacy completion (``POST /completions``), as plain data.

        Raises:
            InvalidRequest: the request is not a single user text message, or it has tools,
                a tool choice or a response format.
        """
        body: dict[str, Any] = {"model": request.model, "prompt": self._prompt(request)}
        provider_options = self._options(request, body, legacy=True)
        self._stream_fields(request, body)
        body.update(provider_options)
        return body

    def _prompt(self, request: Request) -> str:
        if request.tools or request.tool_choice is not None or request.response_format:
            raise InvalidRequest(
                "the legacy completions endpoint takes no tools, tool choice or response format",
                provider=self.name,
                details={"field": "metadata.endpoint"},
            )
        messages = request.messages
        if len(messages) != 1 or messages[0].role != "user":
            raise InvalidRequest(
                "the legacy completions endpoint takes exactly one user message as its prompt",
                provider=self.name,
                details={"field": "messages"},
            )
        content = messages[0].content
        if content is None or isinstance(content, str):
            return content or ""
        if any(isinstance(part, ImagePart) for part in content):
            raise InvalidRequest(
                "the legacy completions endpoint takes a text prompt, not images",
                provider=self.name,
                details={"field": "messages"},
            )
        return messages[0].text

    @staticmethod
    def _tool(tool: ToolSpec) -> dict[str, Any]:
        function: dict[str, Any] = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        }
        if tool.strict is not None:
            function["strict"] = tool.strict
        return {"type": "function", "function": function}

    def _options(self, request: Request, body: dict[str, Any], *, legacy: bool) -> dict[str, Any]:
        """Put the sampling options in ``body``; return the provider options to merge last."""
        options = request.options
        extra = options.provider_options
        provider_options: dict[str, Any] = {}
        use_mct: Any = None
        if extra:
            use_mct = extra.get("use_max_completion_tokens")
            provider_options = {k: v for k, v in extra.items() if k not in _CONSUMED_OPTIONS}
        if use_mct is None:
            use_mct = self.provider_options.settings.get("use_max_completion_tokens")
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if options.top_p is not None:
            body["top_p"] = options.top_p
        if options.top_k is not None and self.send_top_k:
            body["top_k"] = options.top_k
        if options.frequency_penalty is not None:
            body["frequency_penalty"] = options.frequency_penalty
        if options.presence_penalty is not None:
            body["presence_penalty"] = options.presence_penalty
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body[self.seed_field] = options.seed
        if options.max_tokens is not None:
            if use_mct is None:
                use_mct = self.auto_max_completion_tokens and is_reasoning_model(request.model)
            key = "max_completion_tokens" if use_mct and not legacy else "max_tokens"
            body[key] = options.max_tokens
        return provider_options

    def _stream_fields(self, request: Request, body: dict[str, Any]) -> None:
        if request.stream:
            body["stream"] = True
            if self.send_stream_options:
                body["stream_options"] = {"include_usage": True}

    def _endpoint(self, request: Request, path: str) -> str:
        """The URL of ``path`` for ``request`` (Azure puts the deployment in it)."""
        return f"{self.base_url}/{path}"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        if self.organization:
            headers["openai-organization"] = self.organization
        if self.project:
            headers["openai-project"] = self.project
        return headers

    # -- decoding -----------------------------------------------------------------------------

    def stream_decoder(self, request: Request) -> StreamDecoder:
        """A fresh decoder for the streamed body of ``encode(request)``."""
        if not _is_legacy(request) and self.api_of(request) == "responses":
            return ResponsesStreamDecoder(
                provider=self.name, map_error=self._stream_errors, model=request.model
            )
        return OpenAIStreamDecoder(provider=self.name, map_error=self._stream_errors)

    def decode_response(self, request: Request, body: bytes) -> Response:
        """Decode a ``chat.completion`` or ``text_completion`` body.

        The refusal of the first choice that has one is in ``metadata["refusal"]``, the first
        choice's own finish reason in ``metadata["native_finish_reason"]``; reasoning
        (``reasoning_content`` or ``reasoning``) comes first in the content as a
        `ReasoningPart`.

        Raises:
            ProviderError: the body is not JSON of the documented shape (retryable: a
                malformed answer before any content).
            LLMError: the typed error, when the body is an error object (``map_stream_error``).
        """
        if not _is_legacy(request) and self.api_of(request) == "responses":
            return decode_response_bytes(
                body, provider=self.name, model=request.model, map_error=self._stream_errors
            )
        try:
            completion = COMPLETION_DECODER.decode(body)
        except JSON_ERRORS as exc:
            raise ProviderError(
                f"malformed response body: {exc}",
                provider=self.name,
                retryable=True,  # nothing reached the caller (docs/providers.md)
                details={"reason": "malformed response"},
            ) from exc
        if completion.error:
            raise self.map_stream_error({"error": completion.error})
        metadata: dict[str, Any] = {}
        choices = [
            self._choice(wire_choice, metadata, self.name) for wire_choice in completion.choices
        ]
        if completion.service_tier is not None:
            metadata["service_tier"] = completion.service_tier
        wire_usage = completion.usage
        if wire_usage is None and completion.x_groq is not None:
            wire_usage = completion.x_groq.usage
        return Response(
            id=completion.id,
            provider=self.name,
            model=completion.model or request.model,
            created=unix_to_datetime(completion.created),
            choices=choices,
            usage=usage_from_wire(wire_usage) if wire_usage is not None else None,
            metadata=metadata or None,
            system_fingerprint=completion.system_fingerprint,
        )

    @staticmethod
    def _choice(wire: CompletionChoice, metadata: dict[str, Any], provider: str) -> Choice:
        message = wire.message
        tool_calls: list[ToolCall] | None = None
        message_metadata: dict[str, Any] | None = None
        content: str | list[Part] | None
        if message is None:
            content = wire.text or None
        else:
            text = message.content or ""
            reasoning = message.reasoning_content or message.reasoning
            if reasoning:
                parts: list[Part] = [ReasoningPart(text=reasoning, provider=provider)]
                if text:
                    parts.append(TextPart(text=text))
                content = parts
            else:
                content = text or None
            if message.tool_calls:
                tool_calls = []
                for n, call in enumerate(message.tool_calls):
                    function = call.function
                    arguments = (function.arguments or "") if function is not None else ""
                    tool_calls.append(
                        ToolCall(
                            id=call.id or f"call_{n}",
                            name=(function.name or "") if function is not None else "",
                            arguments=arguments if arguments.strip() else "{}",
                            metadata={"extra_content": call.extra_content}
                            if call.extra_content
                            else None,
                        )
                    )
            if message.refusal:
                metadata.setdefault("refusal", message.refusal)
            if message.extra_content:
                message_metadata = {"extra_content": message.extra_content}
        native = wire.finish_reason
        if native is not None:
            metadata.setdefault("native_finish_reason", native)
            finish = normalise_finish(native)
            if finish == "stop" and tool_calls:
                finish = "tool_calls"  # a forced tool (OpenAI) or Gemini's endpoint
        else:
            finish = "tool_calls" if tool_calls else None
        return Choice(
            index=wire.index,
            message=Message(
                role="assistant",
                content=content,
                tool_calls=tool_calls,
                metadata=message_metadata,
            ),
            finish_reason=finish,
        )

    # -- errors and limits --------------------------------------------------------------------

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """The typed error for a non-2xx response.

        The message is the provider's; ``details`` keep its ``type``, ``param`` and ``code``.
        Beyond `error_for_status`: ``model_not_found`` (404, or 400 as the Responses API
        sends it) is `ModelNotSupported`, and a 429 ``insufficient_quota`` is a `RateLimited`
        that is not retryable.
        """
        message, details = parse_error_body(body)
        return classify_error(
            status,
            message or f"HTTP {status} from {self.name}",
            details,
            provider=self.name,
            request_id=headers.get("x-request-id") or headers.get("request-id"),
            retry_after=parse_retry_after(headers),
        )

    def map_stream_error(self, payload: Any) -> LLMError:
        """The typed error for an error inside a stream (or a 200 body): ``{"error": ...}``.

        A status in the payload (Groq's ``status_code``, OpenRouter's numeric ``code``) is
        classified as `map_error` would; otherwise the ``type`` or ``code`` decides, and an
        unknown error is a `ProviderError`.
        """
        return classify_stream_error(payload, provider=self.name)

    def retry_advice(self, error: LLMError, headers: Mapping[str, str]) -> RetryAdvice:
        """The base advice, except: ``insufficient_quota`` is never retried, and a delay above
        ``max_retry_after`` means do not retry."""
        advice = super().retry_advice(error, headers)
        if is_quota_error(error):
            return RetryAdvice(retryable=False, delay=advice.delay)
        if advice.retryable and advice.delay is not None and advice.delay > self.max_retry_after:
            return RetryAdvice(retryable=False, delay=advice.delay)
        return advice

    def parse_rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` and ``retry-after``.

        The unsuffixed ``x-ratelimit-limit|remaining|reset`` (Together) count requests.
        Returns None when no such header is present.
        """
        return parse_openai_rate_limits(headers, retry_after_on_success=self.retry_after_on_success)

    # -- models -------------------------------------------------------------------------------

    def list_models_request(self, api_key: str | None) -> HttpRequest:
        """``GET {base}/models``."""
        headers = self._headers(api_key)
        headers["accept"] = "application/json"
        headers.update(self.extra_headers)
        return HttpRequest(method="GET", url=self._models_url(), headers=headers)

    def _models_url(self) -> str:
        return f"{self.base_url}/models"

    def decode_models(self, body: bytes) -> list[ModelInfo]:
        """Decode ``{"data": [{"id", "created", "owned_by"}]}``, guessing features by id.

        Raises:
            ProviderError: the body is not a model list.
        """
        try:
            listing = MODELS_DECODER.decode(body)
        except JSON_ERRORS as exc:
            raise ProviderError(
                f"malformed model list: {exc}", provider=self.name, retryable=False
            ) from exc
        models: list[ModelInfo] = []
        for entry in listing.data:
            window = known_context_window(entry.id)
            models.append(
                ModelInfo(
                    id=entry.id,
                    provider=self.name,
                    context_window=window[0] if window else None,
                    max_output_tokens=window[1] if window else None,
                    features=self.model_features(entry.id),
                    created=datetime_from_unix(entry.created),
                    metadata={"owned_by": entry.owned_by} if entry.owned_by else None,
                )
            )
        return models
