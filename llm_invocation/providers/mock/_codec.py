"""The built-in mock provider: OpenAI's wire format, answered in-process by scripted scenarios.

The mock speaks the OpenAI Chat Completions format through the real codec, SSE parser and
session, so everything above the transport is exercised exactly as with a real provider. Its
transport (`llm_invocation.testing.MockTransport`) answers without sockets, from
`llm_invocation.testing.Scenarios`: scripted text, tool calls, usage, timing, and injected
failures (HTTP errors with Retry-After, error events mid-stream, stalls, disconnects,
malformed JSON). The same scenarios are served over real sockets by the fake server.
"""

from __future__ import annotations

from typing import ClassVar, Final, final

from ...types import Feature, ModelInfo
from ..openai import OpenAICodec

__all__ = ["MOCK_BASE_URL", "MockCodec"]

MOCK_BASE_URL: Final = "http://mock.llm-invocation.invalid/v1"

_MOCK_MODELS: Final = ("mock", "mock-large", "mock-small")
_ALL_FEATURES: Final = frozenset(Feature)


@final
class MockCodec(OpenAICodec):
    """The mock provider's codec: OpenAI's format, every feature, no key needed."""

    kind: ClassVar[str] = "mock"
    default_base_url: ClassVar[str] = MOCK_BASE_URL

    def known_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                id=model,
                provider=self.name,
                display_name=f"Mock ({model})",
                context_window=128_000,
                max_output_tokens=16_384,
                features=_ALL_FEATURES,
            )
            for model in _MOCK_MODELS
        ]

    def supports(self, feature: Feature, model: str | None = None) -> bool:
        return True

    def model_features(self, model: str) -> frozenset[Feature]:
        return _ALL_FEATURES
