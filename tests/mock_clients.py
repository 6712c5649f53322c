"""A client over the mock transport, in-process, in each provider's wire format (no tests here).

`client_for` opens a client whose OpenAI, Anthropic and Gemini providers are answered by one
`MockTransport` each, from the given scenarios; the transports record what they received.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, Final

import llm_invocation as llm
from llm_invocation.testing import MockTransport, Scenarios

FORMATS: Final = ("openai", "anthropic", "gemini")
KEY: Final = "sk-test-KEY-0123456789abcdef"


def make_config(**overrides: Any) -> llm.Config:
    """Three providers with a key each, quick retries without jitter, no rate limits, cap or
    budget (these tests are not about them; the scripted models have no price), and
    ``overrides`` (a section given as a dict merges over that, key by key)."""
    settings: dict[str, Any] = {
        "provider": "openai",
        "timeout": 30,
        "retries": {"max_attempts": 3, "initial_delay": 0.1, "max_delay": 1, "jitter": False},
        "timeouts": {"connect": 5, "first_chunk": 10, "idle_chunk": 5},
        "providers": {fmt: {"api_key": KEY} for fmt in FORMATS},
    }
    settings.update(overrides)
    return llm.Config.unlimited(**settings)


@asynccontextmanager
async def client_for(
    scenarios: Scenarios, config: llm.Config | None = None
) -> AsyncGenerator[tuple[llm.Client, dict[str, MockTransport]]]:
    transports = {name: MockTransport(scenarios, format=name) for name in FORMATS}
    factories = {name: (lambda t=t: t) for name, t in transports.items()}
    async with llm.open_client(
        config or make_config(), transports=factories, scenarios=scenarios
    ) as client:
        yield client, transports


def request(provider: str, model: str, text: str = "hello there", **kw: Any) -> llm.Request:
    return llm.Request(model=f"{provider}:{model}", messages=[llm.user(text)], **kw)
