"""The main job, offline: a fan-out of concurrent streaming invocations through the actor tree.

Without an API key in the environment the OpenAI, Anthropic and Gemini codecs talk to the
built-in mock provider's scripted answers, each in its own wire format, in-process, with
scripted failures mixed in (rate limits with Retry-After, an overloaded error event, a
dropped connection, a provider that stays down and falls back), so the summary shows retries
and fallbacks doing their work.
With a real key (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY`` or
``LLM_API_KEY``, which is OpenAI's unless ``LLM_PROVIDER`` or ``LLM_MODEL`` says otherwise)
the same job talks to that provider, with a small fan-out, under the configured (by default
the first specification's) limits. Offline, the scripted providers cost nothing real, so the
job lifts the rate limits, the cap and the budget (`Config.unlimited`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Final, TextIO

import msgspec
import trio

from ..client import Client, open_client
from ..config import Config
from ..errors import LLMError
from ..http import TransportFactory
from ..providers.mock import (
    Disconnect,
    ErrorEvent,
    HttpError,
    MockTransport,
    Scenario,
    Scenarios,
    WireFormat,
)
from ..types import Request, Usage, system, user

__all__ = ["DemoSummary", "run_demo"]

_FORMATS: Final = ("openai", "anthropic", "gemini")
_PROMPTS: Final = (
    "Explain structured concurrency in one paragraph.",
    "Write a haiku about supervision trees.",
    "Why do rate limits need backpressure?",
    "Summarise what an actor mailbox is for.",
    "Describe a circuit breaker to a new engineer.",
)


class DemoSummary(msgspec.Struct, kw_only=True):
    """What the demo did (returned for tests, printed for people)."""

    mode: str
    provider: str
    calls: int
    succeeded: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    chunks: int
    retries: int
    fallbacks: int
    seconds: float
    errors: dict[str, int]


def _offline_scenarios() -> Scenarios:
    steady = Scenario(completion_words=40, chunk_chars=6, interval=0.01, ttft=0.05)
    scenarios = Scenarios(steady)
    scenarios.add(
        "demo-rate-limited", Scenario(failure=HttpError(status=429, retry_after_ms=150)), steady
    )
    scenarios.add("demo-overloaded", Scenario(failure=ErrorEvent(after_chunks=0)), steady)
    scenarios.add("demo-dropped", Scenario(failure=Disconnect(after_chunks=0)), steady)
    scenarios.add("demo-down", Scenario(failure=HttpError(status=503)))
    return scenarios


def _scripted(scenarios: Scenarios, fmt: WireFormat) -> TransportFactory:
    transport = MockTransport(scenarios, format=fmt)
    return lambda: transport


def _model_for(index: int) -> str:
    fmt = _FORMATS[index % len(_FORMATS)]
    if index % 10 == 3:
        return f"{fmt}:demo-rate-limited"
    if index % 10 == 5:
        return f"{fmt}:demo-overloaded"
    if index % 10 == 7:
        return f"{fmt}:demo-dropped"
    if index % 25 == 11:
        return "anthropic:demo-down"  # stays down: falls back to OpenAI
    return f"{fmt}:demo"


def _real_config() -> Config | None:
    """The configuration of the environment when it has a provider to call: one with a key
    or a base URL of its own; None otherwise (the job runs offline)."""
    config = Config.load()
    if config.mock_fallback or config.default_provider == "mock":
        return None
    try:
        entry = config.provider_config(config.default_provider)
    except LLMError:
        return None
    return config if entry.keys() or entry.base_url else None


async def _fan_out(
    client: Client,
    out: TextIO,
    calls: int,
    model_for: Callable[[int], str],
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int, int, Usage, dict[str, int]]:
    ok = failed = chunks = 0
    usage = Usage()
    errors: dict[str, int] = {}
    finished = 0
    live_line_open = True  # progress waits: a progress bar would overwrite the live line

    async def one(index: int) -> None:
        nonlocal ok, failed, chunks, usage, finished, live_line_open
        request = Request(
            model=model_for(index),
            messages=[
                system("You are a concise assistant."),
                user(_PROMPTS[index % len(_PROMPTS)]),
            ],
        )
        live = index == 0
        live_header = False
        try:
            async with client.invoke(request) as stream:
                if live:
                    out.write(f"live [{stream.provider}] > ")
                    live_header = True
                async for chunk in stream:
                    chunks += 1
                    if live and chunk.text:
                        out.write(chunk.text)
                        out.flush()
                response = stream.response
        except LLMError as error:
            failed += 1
            errors[error.code.value] = errors.get(error.code.value, 0) + 1
        else:
            ok += 1
            if response.usage is not None:
                usage = usage + response.usage
        finally:
            finished += 1
            if live:
                if live_header:
                    out.write("\n")
                    out.flush()
                live_line_open = False
            if progress is not None and not live_line_open:
                progress(finished, calls)

    async with trio.open_nursery() as nursery:
        for index in range(calls):
            nursery.start_soon(one, index)
    return ok, failed, chunks, usage, errors


async def run_demo(
    out: TextIO,
    *,
    calls: int = 200,
    offline: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Run the fan-out and print a summary to ``out``.

    Args:
        out: where to write the live stream and the summary.
        calls: how many concurrent invocations (a real provider gets at most 5).
        offline: force the scripted mock provider (True) or a real provider (False); None
            decides by whether a key is configured.
        progress: called with (finished, total) after each invocation.
    """
    real = None if offline else _real_config()
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        if real is not None:
            mode = "real provider"
            calls = min(calls, 5)
            model = real.default_model
            if model is None:
                from ..providers._registry import make_codec

                known = make_codec(
                    real.default_provider, real.provider_config(real.default_provider)
                ).known_models()
                model = known[0].id if known else "default"
            client = await stack.enter_async_context(open_client(real))
            provider = real.default_provider

            def model_for(index: int) -> str:
                return f"{provider}:{model}"

        else:
            mode = "offline (the built-in mock provider, in each provider's wire format)"
            scenarios = _offline_scenarios()
            config = Config.unlimited(
                provider="openai",
                retries={"max_attempts": 3, "initial_delay": 0.05, "max_delay": 0.5},
                providers={
                    "openai": {"api_key": "sk-demo-offline-0000000000000000"},
                    "anthropic": {
                        "api_key": "sk-ant-demo-offline-000000000000",
                        "fallback": ["openai:demo"],
                    },
                    "gemini": {"api_key": "demo-offline-gemini-key-00000"},
                },
            )
            transports = {fmt: _scripted(scenarios, fmt) for fmt in _FORMATS}
            client = await stack.enter_async_context(
                open_client(config, transports=transports, scenarios=scenarios)
            )
            provider = "openai, anthropic, gemini (scripted)"
            model_for = _model_for
        out.write(f"llm-invocation demo: {calls} concurrent streaming calls, {mode}\n")
        ok, failed, chunks, usage, errors = await _fan_out(client, out, calls, model_for, progress)
        sessions = await client.session_statistics()
        retries = sum(s.retries for s in sessions.values())
        fallbacks = client.statistics().fallbacks
    seconds = time.perf_counter() - started
    summary = DemoSummary(
        mode=mode,
        provider=provider,
        calls=calls,
        succeeded=ok,
        failed=failed,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        chunks=chunks,
        retries=retries,
        fallbacks=fallbacks,
        seconds=seconds,
        errors=errors,
    )
    out.write(_format(summary))
    return summary


def _format(s: DemoSummary) -> str:
    lines = [
        "",
        f"calls       {s.calls} ({s.succeeded} succeeded, {s.failed} failed)",
        f"tokens      {s.prompt_tokens} prompt, {s.completion_tokens} completion",
        f"chunks      {s.chunks} ({s.chunks / s.seconds:,.0f}/s)",
        f"retries     {s.retries} (rate limits, overloads and dropped connections recovered)",
        f"fallbacks   {s.fallbacks}",
        f"time        {s.seconds:.2f}s, clean shutdown",
    ]
    if s.errors:
        lines.append("errors      " + ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items())))
    return "\n".join(lines) + "\n"
