"""Anthropic prompt caching against real recorded exchanges (``$LLM_CONFORMANCE_DIR/anthropic``).

The recorded request bodies that place ``cache_control`` breakpoints on system blocks, tool
definitions and tool results are rebuilt by the encoder, breakpoints included, from the
equivalent `Request` (with `CacheControl` markers); the one that asks for automatic caching
with a top-level ``cache_control`` is rebuilt from provider options; and the recorded cache
usage decodes and is priced at the cache-read price. Recordings are read in place.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, cast

import pytest

from llm_invocation.pricing import PriceBook
from llm_invocation.providers import HttpRequest
from llm_invocation.providers.anthropic import AnthropicCodec
from llm_invocation.types import (
    CacheControl,
    Message,
    ModelOptions,
    NamedToolChoice,
    Part,
    Request,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)

from .conftest import load_index

pytestmark = pytest.mark.conformance

Fixture = dict[str, Any]

# The recordings whose request bodies carry per-block breakpoints.
PER_BLOCK: Final = frozenset(
    {
        "messages-tools-parallel.json",
        "messages-tools-parallel-stream.sse",
        "messages-tools-followup-tool-results.json",
        "messages-forced-tool-choice.json",
        "messages-cache-read-usage.json",
    }
)


@pytest.fixture
def folder(conformance_dir: Path) -> Path:
    return conformance_dir / "anthropic"


@pytest.fixture
def index(folder: Path) -> dict[str, Fixture]:
    return {entry["file"]: entry for entry in load_index(folder)}


def sent(http: HttpRequest) -> dict[str, Any]:
    assert http.body is not None
    body: dict[str, Any] = json.loads(http.body)
    return body


def marker(value: Any) -> CacheControl | None:
    """The `CacheControl` of a recorded ``cache_control`` (null: no breakpoint)."""
    if value is None:
        return None
    assert value["type"] == "ephemeral"
    return CacheControl(ttl=value["ttl"]) if "ttl" in value else CacheControl()


def block_markers(value: Any) -> list[str]:
    """Every recorded non-null ``cache_control``, by where it is."""
    found: list[str] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            items = cast("dict[str, Any]", node)
            for key, child in items.items():
                if key == "cache_control" and child is not None:
                    found.append(where)
                else:
                    visit(child, f"{where}.{key}")
        elif isinstance(node, list):
            for i, child in enumerate(cast("list[Any]", node)):
                visit(child, f"{where}[{i}]")

    visit(value, "$")
    return found


def without_nulls(value: Any) -> Any:
    """The body without the null ``cache_control`` and ``citations`` the recorder echoed
    (a null breakpoint is no breakpoint; null citations are no citations)."""
    if isinstance(value, dict):
        items = cast("dict[str, Any]", value).items()
        return {
            k: without_nulls(v)
            for k, v in items
            if not (k in ("cache_control", "citations") and v is None)
        }
    if isinstance(value, list):
        return [without_nulls(v) for v in cast("list[Any]", value)]
    return value


def text_parts(blocks: list[dict[str, Any]]) -> list[Part]:
    parts: list[Part] = []
    for block in blocks:
        assert block["type"] == "text", block
        parts.append(TextPart(text=block["text"], cache_control=marker(block.get("cache_control"))))
    return parts


def system_of(system: Any) -> list[Message]:
    if system is None:
        return []
    if isinstance(system, str):
        return [Message(role="system", content=system)]
    blocks = cast("list[dict[str, Any]]", system)
    if len(blocks) == 1:  # one marked block: the marker on the system message itself
        block = blocks[0]
        return [
            Message(
                role="system",
                content=block["text"],
                cache_control=marker(block.get("cache_control")),
            )
        ]
    return [Message(role="system", content=text_parts(blocks))]


def turns_of(turns: list[dict[str, Any]]) -> list[Message]:
    messages: list[Message] = []
    for turn in turns:
        role, content = turn["role"], turn["content"]
        if isinstance(content, str):
            messages.append(Message(role=role, content=content))
        elif role == "assistant":
            calls = [
                ToolCall(id=b["id"], name=b["name"], arguments=json.dumps(b["input"]))
                for b in content
                if b["type"] == "tool_use"
            ]
            text = text_parts([b for b in content if b["type"] != "tool_use"])
            messages.append(
                Message(role="assistant", content=text or None, tool_calls=calls or None)
            )
        else:
            for block in content:
                if block["type"] != "tool_result":
                    messages.append(Message(role="user", content=text_parts([block])))
                    continue
                value = block.get("content")
                messages.append(
                    Message(
                        role="tool",
                        tool_call_id=block["tool_use_id"],
                        content=value if isinstance(value, str) else text_parts(value or []),
                        is_error=bool(block.get("is_error")),
                        cache_control=marker(block.get("cache_control")),
                    )
                )
    return messages


def request_of(body: dict[str, Any]) -> Request:
    """The `Request`, breakpoints included, whose encoding should be ``body``."""
    known = {"model", "messages", "system", "max_tokens", "stream", "tools", "tool_choice"}
    extra: dict[str, Any] = {k: v for k, v in body.items() if k not in known}
    tools = [
        ToolSpec(
            name=tool["name"],
            description=tool.get("description", ""),
            parameters=tool["input_schema"],
            cache_control=marker(tool.get("cache_control")),
        )
        for tool in body.get("tools", [])
    ]
    choice: ToolChoice | None = None
    if "tool_choice" in body:
        wire = dict(body["tool_choice"])
        if "disable_parallel_tool_use" in wire:
            extra["disable_parallel_tool_use"] = wire.pop("disable_parallel_tool_use")
        assert wire["type"] == "tool", wire
        choice = NamedToolChoice(name=wire["name"])
    return Request(
        model=body["model"],
        messages=system_of(body.get("system")) + turns_of(body["messages"]),
        options=ModelOptions(max_tokens=body.get("max_tokens"), provider_options=extra or None),
        tools=tools or None,
        tool_choice=choice,
        stream=bool(body.get("stream")),
    )


def test_the_recordings_with_per_block_breakpoints_are_the_five_expected(
    index: dict[str, Fixture],
) -> None:
    marked: set[str] = set()
    for name, entry in index.items():
        recorded: Fixture = entry.get("request") or {}
        body: Fixture = recorded.get("body") or {}
        if entry["api"] != "messages":
            continue
        if any(block_markers(body.get(key)) for key in ("tools", "system", "messages")):
            marked.add(name)
    assert marked == PER_BLOCK


@pytest.mark.parametrize("name", sorted(PER_BLOCK))
def test_the_encoder_rebuilds_a_recorded_body_with_its_breakpoints(
    name: str, index: dict[str, Fixture]
) -> None:
    codec = AnthropicCodec()
    recorded = index[name]["request"]
    expected = without_nulls(recorded["body"])
    request = request_of(expected)
    codec.validate(request)
    encoded = codec.encode(request, "sk-test")
    ours = sent(encoded)
    assert ours == expected
    assert block_markers(ours) == block_markers(expected)
    assert encoded.url == recorded["url"]


def test_the_system_prompt_with_a_breakpoint_is_sent_as_a_marked_text_block(
    index: dict[str, Fixture],
) -> None:
    recorded = index["messages-tools-parallel.json"]["request"]["body"]
    request = request_of(recorded)
    assert request.messages[0].cache_control == CacheControl()
    body = sent(AnthropicCodec().encode(request, None))
    assert body["system"] == recorded["system"]
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}


def test_the_tool_result_breakpoint_lands_on_its_own_tool_result_block(
    index: dict[str, Fixture],
) -> None:
    recorded = index["messages-tools-followup-tool-results.json"]["request"]["body"]
    body = sent(AnthropicCodec().encode(request_of(without_nulls(recorded)), None))
    results = body["messages"][2]["content"]
    assert [r["type"] for r in results] == ["tool_result", "tool_result"]
    assert "cache_control" not in results[0]
    assert results[1]["cache_control"] == {"type": "ephemeral"}


def test_automatic_caching_from_provider_options_rebuilds_the_count_tokens_body(
    index: dict[str, Fixture],
) -> None:
    entry = index["count-tokens.json"]
    recorded = entry["request"]["body"]
    assert recorded["cache_control"] == {"ttl": "5m", "type": "ephemeral"}
    request = request_of(recorded)
    assert request.options.provider_options == {"cache_control": recorded["cache_control"]}
    encoded = AnthropicCodec().count_tokens_request(request, "sk-test")
    assert sent(encoded) == recorded


def test_the_recorded_cache_read_usage_is_priced_at_a_tenth_of_the_input_price(
    folder: Path,
) -> None:
    codec = AnthropicCodec()
    body = (folder / "messages-cache-read-usage.json").read_bytes()
    wire = json.loads(body)["usage"]
    request = Request(model="claude-sonnet-4-0", messages=[Message(role="user", content="x")])
    usage = codec.decode_response(request, body).usage
    assert usage is not None
    assert usage.cache_read_tokens == wire["cache_read_input_tokens"] == 4167
    assert usage.cache_write_tokens == usage.cache_write_1h_tokens == 0
    assert usage.prompt_tokens == wire["input_tokens"] + 4167
    book = PriceBook()
    price = book.price("anthropic", "claude-sonnet-4-0")
    assert price is not None and price.cache_read == price.input / 10
    cost = book.cost(usage, provider="anthropic", model="claude-sonnet-4-0")
    expected = (
        wire["input_tokens"] * price.input
        + 4167 * price.input / 10
        + wire["output_tokens"] * price.output
    ) / 1_000_000
    assert cost == expected
    # Without the cache, the same prompt would have cost ten times as much on the cached part.
    uncached = book.cost(
        Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens),
        provider="anthropic",
        model="claude-sonnet-4-0",
    )
    assert uncached is not None and cost is not None
    assert uncached - cost == Decimal(4167) * price.input * Decimal("0.9") / 1_000_000
