"""OpenAI-compatible servers: presets of their quirks, and Azure OpenAI.

`OpenAICompatibleCodec` speaks Chat Completions to any server that copies OpenAI's API. What
differs between servers (WIRE-FORMATS 5) is in a `Preset`: where the server lives, which
environment variable holds its key, and a few flags that change what is *sent*. What differs
in what comes *back* (reasoning fields, ``x_groq.usage``, a reported ``usage.cost``, SSE
comments, numeric error codes, repeated tool-call names) is decoded for every server, at no
cost to the ones that do not send it. A cost a server reports is kept in
``Usage.reported_cost``, beside the price book's (see `llm_invocation.pricing.budget_cost`).

=============  ==============================  ==========================================
preset         base URL                        quirks
=============  ==============================  ==========================================
ollama         http://localhost:11434/v1       no key; ``message.reasoning``
vllm           http://localhost:8000/v1        no key; ``top_k``
groq           https://api.groq.com/openai/v1  usage in ``x_groq`` and on the finish chunk;
                                               ``event: error`` with ``status_code``
together       https://api.together.xyz/v1     ``retry-after`` on every 200 (ignored);
                                               unsuffixed ``x-ratelimit-*`` headers
openrouter     https://openrouter.ai/api/v1    SSE comments; numeric error ``code``; ``cost``
deepseek       https://api.deepseek.com/v1     ``reasoning_content`` (echoed back in tool loops)
mistral        https://api.mistral.ai/v1       ``max_tokens`` only; ``random_seed``; strict
                                               about unknown fields (no ``stream_options``)
=============  ==============================  ==========================================

`AzureOpenAICodec` is OpenAI's API behind Azure's URLs and ``api-key`` header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, final
from urllib.parse import quote

import msgspec

from ..errors import ConfigurationError, ProviderNotFound
from ..types import Feature, ModelInfo, Request
from ._openai_models import CHAT_FEATURES
from .openai import OpenAICodec

__all__ = [
    "PRESETS",
    "AzureOpenAICodec",
    "OpenAICompatibleCodec",
    "Preset",
    "make_compatible_codec",
    "preset",
]


@final
class Preset(msgspec.Struct, frozen=True, kw_only=True):
    """What one OpenAI-compatible server needs.

    Attributes:
        name: the preset's (and by default the provider's) name.
        base_url: the API root, ending before ``/chat/completions``.
        env_key: the environment variable that conventionally holds the key (None: none).
        requires_key: whether the server refuses requests without a key.
        stream_options: send ``stream_options: {"include_usage": true}`` on streams.
        max_completion_tokens: the server understands ``max_completion_tokens``, so it is
            sent for reasoning models (o1, o3, o4, GPT-5 ids); otherwise always
            ``max_tokens`` unless ``provider_options["use_max_completion_tokens"]`` says so.
        top_k: the server takes ``top_k``.
        seed_field: the body field for ``seed`` (Mistral: ``random_seed``).
        reasoning_field: the assistant-message field that carries `ReasoningPart` text back
            to the server (DeepSeek: ``reasoning_content``); None: reasoning is not sent.
        retry_after_on_success: the server sends ``retry-after`` on 2xx responses, so it is
            no back-off signal in `parse_rate_limits` (errors still honour it).
        headers: headers sent with every request.
    """

    name: str
    base_url: str
    env_key: str | None = None
    requires_key: bool = True
    stream_options: bool = True
    max_completion_tokens: bool = False
    top_k: bool = False
    seed_field: str = "seed"
    reasoning_field: str | None = None
    retry_after_on_success: bool = False
    headers: dict[str, str] = {}


PRESETS: Final[Mapping[str, Preset]] = {
    p.name: p
    for p in (
        Preset(
            name="ollama",
            base_url="http://localhost:11434/v1",
            requires_key=False,
        ),
        Preset(
            name="vllm",
            base_url="http://localhost:8000/v1",
            env_key="VLLM_API_KEY",
            requires_key=False,
            top_k=True,
        ),
        Preset(
            name="groq",
            base_url="https://api.groq.com/openai/v1",
            env_key="GROQ_API_KEY",
            stream_options=False,
        ),
        Preset(
            name="together",
            base_url="https://api.together.xyz/v1",
            env_key="TOGETHER_API_KEY",
            top_k=True,
            retry_after_on_success=True,
        ),
        Preset(
            name="openrouter",
            base_url="https://openrouter.ai/api/v1",
            env_key="OPENROUTER_API_KEY",
            max_completion_tokens=True,
            top_k=True,
        ),
        Preset(
            name="deepseek",
            base_url="https://api.deepseek.com/v1",
            env_key="DEEPSEEK_API_KEY",
            reasoning_field="reasoning_content",
        ),
        Preset(
            name="mistral",
            base_url="https://api.mistral.ai/v1",
            env_key="MISTRAL_API_KEY",
            stream_options=False,
            seed_field="random_seed",
        ),
    )
}
"""The known presets by name."""


def preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ProviderNotFound: no preset has that name (``details["available"]`` lists them).
    """
    found = PRESETS.get(name)
    if found is None:
        raise ProviderNotFound(
            f"no OpenAI-compatible preset named {name!r}",
            details={"available": sorted(PRESETS)},
        )
    return found


@final
class OpenAICompatibleCodec(OpenAICodec):
    """Chat Completions for an OpenAI-compatible server.

    Args:
        preset: the server's quirks; its ``base_url``, ``name`` and ``headers`` are the
            defaults of the arguments below. Without one, a plain server is assumed.
        name: the provider entry's name.
        base_url: the API root; required when there is no preset.
        headers: extra headers, over the preset's.
        options: provider options of the configuration entry.
        max_retry_after: a ``retry-after`` longer than this many seconds means do not retry.

    Raises:
        ConfigurationError: no ``base_url`` and no preset.
    """

    kind: ClassVar[str] = "openai-compatible"
    default_base_url: ClassVar[str] = ""

    def __init__(
        self,
        *,
        preset: Preset | None = None,
        name: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        max_retry_after: float = 60.0,
    ) -> None:
        if preset is None:
            if not base_url:
                raise ConfigurationError(
                    "an OpenAI-compatible provider needs a base_url",
                    provider=name,
                    details={"field": "base_url"},
                )
            preset = Preset(name=name or self.kind, base_url=base_url, requires_key=False)
            self.options_label = "this OpenAI-compatible server"
        else:
            self.options_label = preset.name
        merged = {**preset.headers, **(headers or {})}
        # The quirks first: the options are checked against them.
        self.preset = preset
        self.send_stream_options = preset.stream_options
        self.auto_max_completion_tokens = preset.max_completion_tokens
        self.send_top_k = preset.top_k
        self.seed_field = preset.seed_field
        self.reasoning_field = preset.reasoning_field
        self.retry_after_on_success = preset.retry_after_on_success
        super().__init__(
            name=name or preset.name,
            base_url=base_url or preset.base_url,
            headers=merged,
            options=options,
            max_retry_after=max_retry_after,
        )

    def known_models(self) -> list[ModelInfo]:
        """Nothing is known without asking the server (`list_models_request`)."""
        return []

    def model_features(self, model: str) -> frozenset[Feature]:
        """Every chat feature: a compatible server's models cannot be told apart by id, so
        `validate` refuses only what no server can take."""
        return CHAT_FEATURES


def make_compatible_codec(
    name: str,
    *,
    base_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> OpenAICompatibleCodec:
    """A codec for the preset called ``name``, or for a plain server at ``base_url``.

    Raises:
        ProviderNotFound: ``name`` is no preset and no ``base_url`` is given.
    """
    found = PRESETS.get(name)
    if found is None and base_url is None:
        preset(name)  # raises ProviderNotFound
    return OpenAICompatibleCodec(
        preset=found, name=name, base_url=base_url, headers=headers, options=options
    )


_DEFAULT_API_VERSION: Final = "2024-10-21"


@final
class AzureOpenAICodec(OpenAICodec):
    """OpenAI Chat Completions on Azure OpenAI.

    Requests go to ``{endpoint}/openai/deployments/{deployment}/chat/completions
    ?api-version={api_version}`` with the key in an ``api-key`` header; with
    ``api: responses``, to ``{endpoint}/openai/v1/responses`` with the deployment as model.

    Args:
        base_url: the resource endpoint, ``https://<resource>.openai.azure.com``.
        deployment: the deployment to call; None uses each request's model as the deployment.
        api_version: the ``api-version`` query parameter.
        name: the provider entry's name (default ``"azure"``).
        headers: extra headers sent with every request.
        options: provider options of the configuration entry.
        max_retry_after: a ``retry-after`` longer than this many seconds means do not retry.

    Raises:
        ConfigurationError: no ``base_url``.
    """

    kind: ClassVar[str] = "azure"
    default_base_url: ClassVar[str] = ""
    options_label = "Azure OpenAI"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        deployment: str | None = None,
        api_version: str = _DEFAULT_API_VERSION,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        max_retry_after: float = 60.0,
    ) -> None:
        if not base_url:
            raise ConfigurationError(
                "Azure OpenAI needs the resource endpoint as base_url",
                provider=name or self.kind,
                details={"field": "base_url"},
            )
        super().__init__(
            name=name,
            base_url=base_url,
            headers=headers,
            options=options,
            max_retry_after=max_retry_after,
        )
        self.deployment = deployment
        self.api_version = api_version

    def _endpoint(self, request: Request, path: str) -> str:
        if path == "responses":
            # Azure's v1 API: the deployment is the body's model, no api-version.
            return f"{self.base_url}/openai/v1/responses"
        deployment = quote(self.deployment or request.model, safe="")
        version = quote(self.api_version, safe="")
        return f"{self.base_url}/openai/deployments/{deployment}/{path}?api-version={version}"

    def responses_body(self, request: Request) -> dict[str, Any]:
        """The Responses API body, naming the deployment as its model."""
        body = super().responses_body(request)
        body["model"] = self.deployment or request.model
        return body

    def _models_url(self) -> str:
        return f"{self.base_url}/openai/models?api-version={quote(self.api_version, safe='')}"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        return {"api-key": api_key} if api_key else {}

    def known_models(self) -> list[ModelInfo]:
        """Nothing: what an Azure resource serves depends on its deployments."""
        return []
