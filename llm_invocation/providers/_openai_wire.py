"""The OpenAI Chat Completions wire shapes we read, as small msgspec Structs.

Each Struct mirrors only the fields the codec reads; msgspec skips every other field without
building Python objects for it (``obfuscation``, ``logprobs``, ``service_tier`` of a chunk,
...). The decoders are made once, here, and shared by every codec instance.

The same Structs read OpenAI and the OpenAI-compatible servers (WIRE-FORMATS 5): reasoning in
``reasoning_content`` (DeepSeek) or ``reasoning`` (Ollama, Groq, OpenRouter), usage in
``x_groq.usage`` (Groq), a reported ``cost`` in usage (OpenRouter), a numeric error ``code``
(OpenRouter), and the legacy ``text_completion`` choices with ``text``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Final

import msgspec

from ..types import FinishReason, Usage
from ._base import JSON_ERRORS, checked_usage

__all__ = [
    "CHUNK_DECODER",
    "COMPLETION_DECODER",
    "FINISH_REASONS",
    "MODELS_DECODER",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "Delta",
    "FunctionFragment",
    "ModelEntry",
    "ModelList",
    "ReportedCost",
    "StreamPayload",
    "ToolCallFragment",
    "WireMessage",
    "WireToolCall",
    "WireUsage",
    "XGroq",
    "normalise_finish",
    "reported_cost",
    "usage_from_wire",
]


class FunctionFragment(msgspec.Struct, gc=False):
    """``function`` of a tool call: a name and (a piece of) the JSON arguments."""

    name: str | None = None
    arguments: str | None = None


class ToolCallFragment(msgspec.Struct, gc=False):
    """One element of ``delta.tool_calls``."""

    index: int | None = None
    id: str | None = None
    function: FunctionFragment | None = None
    extra_content: dict[str, Any] | None = None


class Delta(msgspec.Struct, gc=False):
    """``choices[].delta`` of a streamed chunk."""

    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallFragment] | None = None


class ChunkChoice(msgspec.Struct, gc=False):
    """``choices[]`` of a chunk: chat (``delta``) or legacy completions (``text``)."""

    index: int = 0
    delta: Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class PromptDetails(msgspec.Struct, gc=False):
    """``usage.prompt_tokens_details``."""

    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class CompletionDetails(msgspec.Struct, gc=False):
    """``usage.completion_tokens_details``."""

    reasoning_tokens: int | None = None


class ReportedCost(msgspec.Struct, gc=False):
    """A cost reported as an object: ``{"total_cost": ...}`` (Perplexity's form)."""

    total_cost: Decimal | None = None


log = logging.getLogger("llm_invocation.providers")

_COST_DECODER: Final = msgspec.json.Decoder(Decimal | ReportedCost | None)
_WARNED: Final[set[str]] = set()
_NO_COST: Final = msgspec.Raw(b"")


class WireUsage(msgspec.Struct, gc=False):
    """``usage`` as OpenAI and the compatible servers send it.

    ``cached_tokens`` at the top level is Together's, ``prompt_cache_hit_tokens`` DeepSeek's,
    ``cost`` a provider-reported cost in US dollars (OpenRouter's number; an object with
    ``total_cost`` is read too). ``cost`` is kept raw and read by `reported_cost`, so a
    value of another shape never fails the answer.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None
    cached_tokens: int | None = None
    prompt_cache_hit_tokens: int | None = None
    cost: msgspec.Raw = _NO_COST


class XGroq(msgspec.Struct, gc=False):
    """Groq's ``x_groq`` extension object."""

    usage: WireUsage | None = None


class StreamPayload(msgspec.Struct, gc=False):
    """One ``data:`` payload of a stream: a chunk, or an object with an ``error`` key."""

    id: str = ""
    model: str = ""
    choices: list[ChunkChoice] = []
    usage: WireUsage | None = None
    x_groq: XGroq | None = None
    error: Any = None
    created: float | None = None
    system_fingerprint: str | None = None


class WireToolCall(msgspec.Struct, gc=False):
    """``message.tool_calls[]`` of a non-streamed answer."""

    id: str | None = None
    function: FunctionFragment | None = None
    extra_content: dict[str, Any] | None = None


class WireMessage(msgspec.Struct, gc=False):
    """``choices[].message`` of a non-streamed answer."""

    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[WireToolCall] | None = None
    extra_content: dict[str, Any] | None = None


class CompletionChoice(msgspec.Struct, gc=False):
    """``choices[]`` of a ``chat.completion`` (``message``) or ``text_completion`` (``text``)."""

    index: int = 0
    message: WireMessage | None = None
    text: str | None = None
    finish_reason: str | None = None


class Completion(msgspec.Struct, gc=False):
    """A non-streamed ``chat.completion`` or ``text_completion`` body."""

    id: str = ""
    object: str = ""
    created: float | None = None
    model: str = ""
    choices: list[CompletionChoice] = []
    usage: WireUsage | None = None
    x_groq: XGroq | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    error: Any = None


class ModelEntry(msgspec.Struct, gc=False):
    """One element of ``GET /models``."""

    id: str
    created: float | None = None
    owned_by: str | None = None


class ModelList(msgspec.Struct, gc=False):
    """The body of ``GET /models``."""

    data: list[ModelEntry] = []


CHUNK_DECODER: Final = msgspec.json.Decoder(StreamPayload)
COMPLETION_DECODER: Final = msgspec.json.Decoder(Completion)
MODELS_DECODER: Final = msgspec.json.Decoder(ModelList)

FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}
"""OpenAI's finish reasons (and what compatible servers send instead) to ours (6.1)."""


def normalise_finish(native: str) -> FinishReason:
    """Our `FinishReason` for the provider's ``finish_reason`` (unknown ones: ``other``)."""
    return FINISH_REASONS.get(native, "other")


def reported_cost(raw: msgspec.Raw) -> Decimal | None:
    """The cost a provider reported in ``usage.cost``: a number (OpenRouter), a decimal
    string, or an object's ``total_cost``; decoded exactly as a `~decimal.Decimal`.

    None when there is none. A value of any other shape is no reported cost: it is logged
    once (the answer itself is fine) and the call is priced as if none had been reported.
    """
    if not raw:
        return None
    try:
        value = _COST_DECODER.decode(raw)
    except JSON_ERRORS as exc:
        if "cost" not in _WARNED:  # once per process, not once per chunk
            _WARNED.add("cost")
            log.warning(
                "a provider reported usage.cost in a shape we do not read (%s); "
                "its reported cost is left unknown (logged once)",
                exc,
            )
        return None
    if isinstance(value, ReportedCost):
        return value.total_cost
    return value


def usage_from_wire(usage: WireUsage) -> Usage | None:
    """Normalise a usage object (WIRE-FORMATS 6.2): cached tokens stay in the prompt count.

    A cost the provider reported goes in ``reported_cost``; ``cost`` is left unknown, for
    the invocation to settle (the price book's when known, else the reported one). None
    when a count is out of range (`checked_usage`).
    """
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    cache_read = 0
    cache_write = 0
    details = usage.prompt_tokens_details
    if details is not None:
        cache_read = details.cached_tokens or 0
        cache_write = details.cache_write_tokens or 0
    if not cache_read:
        cache_read = usage.cached_tokens or usage.prompt_cache_hit_tokens or 0
    reasoning = 0
    if usage.completion_tokens_details is not None:
        reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    return checked_usage(
        Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=usage.total_tokens or prompt + completion,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=reasoning,
            reported_cost=reported_cost(usage.cost),
        )
    )
