"""Prompt caching: `CacheControl` breakpoints, their Anthropic encoding, cache usage and its
price, and the providers that cache by themselves (OpenAI, Gemini) ignoring the markers."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, cast

import genai_prices
import pytest
from hypothesis import given
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.config import PriceOverride
from llm_invocation.errors import InvalidRequest
from llm_invocation.pricing import PriceBook
from llm_invocation.providers import HttpRequest
from llm_invocation.providers.anthropic import AnthropicCodec, AnthropicStreamDecoder
from llm_invocation.providers.gemini import GeminiCodec
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.testing import Scenario, Scenarios, ScriptedUsage, open_fake_server
from llm_invocation.types import (
    CacheControl,
    ImagePart,
    Message,
    ModelOptions,
    Part,
    ReasoningPart,
    Request,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
    from_json,
    system,
    to_json,
    tool_result,
    user,
)

from .conftest import load_index

HOUR: Final = CacheControl(ttl="1h")
FIVE: Final = CacheControl()
KEY: Final = "sk-test-CACHING-0123456789"
BOOK: Final = PriceBook()


def sent(http: HttpRequest) -> dict[str, Any]:
    assert http.body is not None
    body: dict[str, Any] = json.loads(http.body)
    return body


def anthropic_body(request: Request) -> dict[str, Any]:
    return sent(AnthropicCodec().encode(request, None))


def ask(*messages: Message, tools: list[ToolSpec] | None = None, **kw: Any) -> Request:
    return Request(model="claude-sonnet-4-0", messages=list(messages), tools=tools, **kw)


def tool(name: str, marker: CacheControl | None = None) -> ToolSpec:
    return ToolSpec(name=name, description=f"the {name} tool", cache_control=marker)


def markers(value: Any) -> list[Any]:
    """Every ``cache_control`` value in a body, in document order."""
    found: list[Any] = []
    if isinstance(value, dict):
        for key, child in cast("dict[str, Any]", value).items():
            if key == "cache_control":
                found.append(child)
            else:
                found.extend(markers(child))
    elif isinstance(value, list):
        for child in cast("list[Any]", value):
            found.extend(markers(child))
    return found


# -- the marker -----------------------------------------------------------------------------


def test_a_marker_lives_five_minutes_unless_told_an_hour() -> None:
    assert FIVE.ttl == "5m"
    assert HOUR.ttl == "1h"


def test_a_marker_with_another_ttl_is_refused_on_construction_and_on_decode() -> None:
    with pytest.raises(InvalidRequest, match="invalid cache ttl '10m'") as made:
        CacheControl(ttl=cast("Any", "10m"))
    assert made.value.details["field"] == "cache_control.ttl"
    with pytest.raises(InvalidRequest):
        from_json(b'{"type":"text","text":"x","cache_control":{"ttl":"2h"}}', TextPart)


def test_markers_round_trip_through_json_and_unmarked_values_encode_as_before() -> None:
    text = TextPart(text="x", cache_control=HOUR)
    image = ImagePart(url="https://example.com/a.png", cache_control=FIVE)
    message = Message(role="user", content=[text, image], cache_control=HOUR)
    spec = ToolSpec(name="t", cache_control=FIVE)
    assert from_json(to_json(message), Message) == message
    assert from_json(to_json(spec), ToolSpec) == spec
    assert to_json(TextPart(text="x")) == b'{"type":"text","text":"x"}'
    assert b"cache_control" not in to_json(Message(role="user", content="hi"))


def test_the_message_helpers_take_a_marker() -> None:
    assert system("be brief", cache_control=FIVE).cache_control == FIVE
    assert user("hi", cache_control=HOUR).cache_control == HOUR
    assert user("hi", TextPart(text="more"), cache_control=FIVE).cache_control == FIVE
    assert tool_result("call_1", "42", cache_control=FIVE).cache_control == FIVE
    assert llm.CacheControl is CacheControl


def test_four_breakpoints_are_accepted() -> None:
    ask(
        system("s", cache_control=HOUR),
        user("a", cache_control=FIVE),
        user(TextPart(text="b", cache_control=FIVE), TextPart(text="c", cache_control=FIVE)),
    )


def test_a_fifth_breakpoint_is_refused_naming_where_they_all_are() -> None:
    with pytest.raises(InvalidRequest, match="at most 4 prompt-cache breakpoints") as refused:
        ask(
            system("s", cache_control=FIVE),
            user(TextPart(text="a"), TextPart(text="b", cache_control=FIVE)),
            user("c", cache_control=FIVE),
            tools=[tool("t1", FIVE), tool("t2"), tool("t3", FIVE)],
        )
    assert refused.value.details == {
        "field": "cache_control",
        "locations": [
            "tools[0]",
            "tools[2]",
            "messages[0]",
            "messages[1].content[1]",
            "messages[2]",
        ],
    }
    assert "tools[0], tools[2], messages[0], messages[1].content[1], messages[2]" in str(
        refused.value
    )


@st.composite
def marked_requests(draw: st.DrawFn) -> tuple[list[ToolSpec], list[Message], list[str]]:
    """Tools and user messages with breakpoints at random places, and where they are."""
    where: list[str] = []
    tools: list[ToolSpec] = []
    for i in range(draw(st.integers(0, 3))):
        marked = draw(st.booleans())
        tools.append(tool(f"t{i}", FIVE if marked else None))
        if marked:
            where.append(f"tools[{i}]")
    messages: list[Message] = []
    for i in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):  # plain text, the marker on the message
            marked = draw(st.booleans())
            messages.append(user(f"m{i}", cache_control=FIVE if marked else None))
            if marked:
                where.append(f"messages[{i}]")
            continue
        parts: list[Part] = []
        for j in range(draw(st.integers(1, 3))):
            marked = draw(st.booleans())
            parts.append(TextPart(text=f"m{i}p{j}", cache_control=FIVE if marked else None))
            if marked:
                where.append(f"messages[{i}].content[{j}]")
        messages.append(user(parts))
    return tools, messages, where


@given(marked_requests())
def test_up_to_four_breakpoints_each_land_on_one_block_and_more_are_refused(
    case: tuple[list[ToolSpec], list[Message], list[str]],
) -> None:
    tools, messages, where = case
    if len(where) > CacheControl.MAX_PER_REQUEST:
        with pytest.raises(InvalidRequest) as refused:
            ask(*messages, tools=tools or None)
        assert refused.value.details["locations"] == where
        return
    body = anthropic_body(ask(*messages, tools=tools or None))
    assert markers(body) == [{"type": "ephemeral"}] * len(where)


# -- Anthropic encoding ---------------------------------------------------------------------


def test_a_marked_string_system_prompt_is_sent_as_one_marked_text_block() -> None:
    body = anthropic_body(ask(system("be brief", cache_control=FIVE), user("hi")))
    assert body["system"] == [
        {"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}
    ]
    assert anthropic_body(ask(system("be brief"), user("hi")))["system"] == "be brief"


def test_an_hour_long_breakpoint_carries_its_ttl() -> None:
    body = anthropic_body(ask(user(TextPart(text="doc", cache_control=HOUR), TextPart(text="q"))))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "doc", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "q"},
    ]


def test_a_marked_user_message_marks_its_last_block() -> None:
    plain = anthropic_body(ask(user("hi", cache_control=FIVE)))
    assert plain["messages"][0]["content"] == [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    ]
    image = ImagePart(data="aGk=", media_type="image/png")
    parts = anthropic_body(ask(user("look", image, cache_control=FIVE)))
    blocks = parts["messages"][0]["content"]
    assert "cache_control" not in blocks[0]
    assert blocks[1]["type"] == "image"
    assert blocks[1]["cache_control"] == {"type": "ephemeral"}


def test_an_image_part_can_be_a_breakpoint() -> None:
    image = ImagePart(url="https://example.com/a.png", cache_control=HOUR)
    body = anthropic_body(ask(user(image, TextPart(text="what is it?"))))
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


def test_a_marked_tool_definition_carries_the_marker() -> None:
    body = anthropic_body(ask(user("hi"), tools=[tool("a"), tool("b", FIVE)]))
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["cache_control"] == {"type": "ephemeral"}


def test_a_marked_tool_message_marks_its_tool_result_block() -> None:
    call = ToolCall(id="toolu_1", name="lookup", arguments="{}")
    body = anthropic_body(
        ask(
            user("look it up"),
            Message(role="assistant", tool_calls=[call]),
            tool_result("toolu_1", "found", cache_control=FIVE),
            tools=[tool("lookup")],
        )
    )
    assert body["messages"][2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": "found",
            "cache_control": {"type": "ephemeral"},
        }
    ]


def test_a_marked_part_of_a_tool_result_marks_the_block_inside_it() -> None:
    call = ToolCall(id="toolu_1", name="lookup", arguments="{}")
    result = tool_result("toolu_1", [TextPart(text="a"), TextPart(text="b", cache_control=FIVE)])
    body = anthropic_body(
        ask(
            user("go"), Message(role="assistant", tool_calls=[call]), result, tools=[tool("lookup")]
        )
    )
    block = body["messages"][2]["content"][0]
    assert "cache_control" not in block
    assert block["content"][1] == {
        "type": "text",
        "text": "b",
        "cache_control": {"type": "ephemeral"},
    }


def test_a_marked_assistant_message_with_tool_calls_marks_its_last_tool_use() -> None:
    call = ToolCall(id="toolu_1", name="lookup", arguments="{}")
    assistant = Message(role="assistant", content="checking", tool_calls=[call], cache_control=FIVE)
    body = anthropic_body(
        ask(user("go"), assistant, tool_result("toolu_1", "ok"), tools=[tool("lookup")])
    )
    blocks = body["messages"][1]["content"]
    assert [b["type"] for b in blocks] == ["text", "tool_use"]
    assert "cache_control" not in blocks[0]
    assert blocks[1]["cache_control"] == {"type": "ephemeral"}


def test_a_breakpoint_on_an_empty_text_part_is_refused_not_dropped() -> None:
    request = ask(user(TextPart(text="q"), TextPart(text="", cache_control=FIVE)))
    with pytest.raises(InvalidRequest, match="empty text part"):
        AnthropicCodec().validate(request)


def test_a_breakpoint_on_a_message_ending_in_thinking_is_refused() -> None:
    thinking = ReasoningPart(text="hmm", signature="sig")
    request = ask(
        user("q"), Message(role="assistant", content=[thinking], cache_control=FIVE), user("and?")
    )
    with pytest.raises(InvalidRequest, match="no block Anthropic can cache at") as refused:
        AnthropicCodec().validate(request)
    assert refused.value.details["field"] == "messages[1].cache_control"


def test_marking_the_same_last_block_twice_is_refused() -> None:
    request = ask(user(TextPart(text="q", cache_control=FIVE), cache_control=HOUR))
    with pytest.raises(InvalidRequest, match="twice"):
        AnthropicCodec().encode(request, None)


def test_an_hour_long_breakpoint_after_a_five_minute_one_is_refused() -> None:
    request = ask(system("s", cache_control=FIVE), user("q", cache_control=HOUR))
    with pytest.raises(InvalidRequest, match="must come before every 5-minute one") as refused:
        AnthropicCodec().validate(request)
    assert refused.value.details["locations"] == ["system[0]", "messages[0].content[0]"]


def test_hour_long_breakpoints_before_five_minute_ones_are_accepted() -> None:
    request = ask(system("s", cache_control=FIVE), user("q"), tools=[tool("t", HOUR)])
    AnthropicCodec().validate(request)
    body = anthropic_body(request)
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_breakpoints_of_server_tools_from_provider_options_count_too() -> None:
    server_tools = [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    request = ask(
        system("s", cache_control=FIVE),
        user(TextPart(text="a", cache_control=FIVE), TextPart(text="b", cache_control=FIVE)),
        user("c", cache_control=FIVE),
        options=ModelOptions(provider_options={"tools": server_tools}),
    )
    with pytest.raises(InvalidRequest, match="at most 4 cache breakpoints") as refused:
        AnthropicCodec().encode(request, None)
    assert refused.value.details["locations"][0] == "tools[0]"


def test_the_count_tokens_body_carries_the_breakpoints() -> None:
    request = ask(system("s", cache_control=FIVE), user("q"), tools=[tool("t", FIVE)])
    body = sent(AnthropicCodec().count_tokens_request(request, None))
    assert markers(body) == [{"type": "ephemeral"}, {"type": "ephemeral"}]


# -- providers that cache by themselves -----------------------------------------------------


def marked_and_plain() -> tuple[Request, Request]:
    def build(mark: CacheControl | None) -> Request:
        return Request(
            model="m",
            messages=[
                system("s", cache_control=mark),
                user(TextPart(text="q", cache_control=mark)),
            ],
            tools=[tool("t", mark)],
        )

    return build(FIVE), build(None)


@pytest.mark.parametrize("codec", [OpenAICodec(), GeminiCodec()], ids=["openai", "gemini"])
def test_providers_that_cache_by_themselves_ignore_the_markers(
    codec: OpenAICodec | GeminiCodec,
) -> None:
    marked, plain = marked_and_plain()
    codec.validate(marked)
    assert sent(codec.encode(marked, "k")) == sent(codec.encode(plain, "k"))
    assert "cache_control" not in json.dumps(sent(codec.encode(marked, "k")))


# -- usage ----------------------------------------------------------------------------------


def anthropic_message(usage: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-0",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    ).encode()


WIRE_USAGE: Final = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 5000,
    "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000},
    "output_tokens": 50,
}


def test_anthropic_usage_keeps_cache_reads_writes_and_the_hour_long_writes() -> None:
    response = AnthropicCodec().decode_response(ask(user("q")), anthropic_message(WIRE_USAGE))
    assert response.usage == Usage(
        prompt_tokens=8100,
        completion_tokens=50,
        cache_read_tokens=5000,
        cache_write_tokens=3000,
        cache_write_1h_tokens=1000,
    )


def test_a_stream_keeps_the_hour_long_writes_of_message_start() -> None:
    start: dict[str, Any] = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-0",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**WIRE_USAGE, "output_tokens": 1},
        },
    }
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 50},
    }
    events: list[dict[str, Any]] = [start, delta, {"type": "message_stop"}]
    data = b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
    )
    decoder = AnthropicStreamDecoder()
    chunks = decoder.feed(data) + decoder.close()
    usage = [chunk.usage for chunk in chunks if chunk.usage is not None][-1]
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (3000, 1000)
    assert usage.completion_tokens == 50


def test_usages_add_their_hour_long_writes() -> None:
    one = Usage(prompt_tokens=10, cache_write_tokens=4, cache_write_1h_tokens=3)
    assert (one + one).cache_write_1h_tokens == 6


# -- prices ---------------------------------------------------------------------------------


def test_anthropic_cache_prices_are_the_documented_multiples_of_the_input_price() -> None:
    price = PriceBook().price("anthropic", "claude-sonnet-4-0")
    assert price is not None
    assert price.cache_read == price.input * Decimal("0.1")
    assert price.cache_write == price.input * Decimal("1.25")
    assert price.cache_write_1h == price.input * 2


def test_five_minute_and_hour_long_writes_and_reads_cost_what_genai_prices_says() -> None:
    usage = Usage(
        prompt_tokens=10_000,
        completion_tokens=100,
        cache_read_tokens=2_000,
        cache_write_tokens=5_000,
        cache_write_1h_tokens=1_000,
    )
    cost = PriceBook().cost(usage, provider="anthropic", model="claude-sonnet-4-0")
    # 3,000 fresh at $3, 2,000 read at $0.30, 4,000 written for 5 minutes at $3.75, 1,000
    # written for an hour at $6 and 100 out at $15 per million tokens.
    assert cost == Decimal("0.0321")
    reference = genai_prices.Usage(
        input_tokens=10_000,
        cache_read_tokens=2_000,
        cache_write_tokens=5_000,
        cache_write_1h_tokens=1_000,
        output_tokens=100,
    )
    assert (
        cost
        == genai_prices.calc_price(
            reference, "claude-sonnet-4-0", provider_id="anthropic"
        ).total_price
    )


@given(
    fresh=st.integers(0, 150_000),
    read=st.integers(0, 150_000),
    five=st.integers(0, 150_000),
    hour=st.integers(0, 150_000),
    output=st.integers(0, 20_000),
)
def test_any_cached_usage_costs_what_genai_prices_says(
    fresh: int, read: int, five: int, hour: int, output: int
) -> None:
    usage = Usage(
        prompt_tokens=fresh + read + five + hour,
        completion_tokens=output,
        cache_read_tokens=read,
        cache_write_tokens=five + hour,
        cache_write_1h_tokens=hour,
    )
    reference = genai_prices.Usage(
        input_tokens=usage.prompt_tokens,
        cache_read_tokens=read,
        cache_write_tokens=five + hour,
        cache_write_1h_tokens=hour,
        output_tokens=output,
    )
    expected = genai_prices.calc_price(
        reference, "claude-sonnet-4-0", provider_id="anthropic"
    ).total_price
    assert BOOK.cost(usage, provider="anthropic", model="claude-sonnet-4-0") == expected


def test_a_scripted_usage_cannot_write_more_for_an_hour_than_it_writes() -> None:
    with pytest.raises(ValueError, match="1-hour cache writes"):
        ScriptedUsage(
            prompt_tokens=10, completion_tokens=1, cache_write_tokens=2, cache_write_1h_tokens=3
        )


def test_an_override_prices_hour_long_writes_at_their_own_price_or_the_write_price() -> None:
    usage = Usage(
        prompt_tokens=1_000_000, cache_write_tokens=1_000_000, cache_write_1h_tokens=400_000
    )
    base = {"input_per_mtok": Decimal(1), "output_per_mtok": Decimal(2)}
    own = PriceBook(
        {
            "acme:m": PriceOverride(
                **base, cache_write_per_mtok=Decimal(3), cache_write_1h_per_mtok=Decimal(5)
            )
        }
    )
    assert own.cost(usage, provider="acme", model="m") == Decimal(600_000 * 3 + 400_000 * 5) / 10**6
    fallback = PriceBook({"acme:m": PriceOverride(**base, cache_write_per_mtok=Decimal(3))})
    assert fallback.cost(usage, provider="acme", model="m") == Decimal(3)


def test_the_hour_long_write_price_can_be_configured() -> None:
    price = {"input_per_mtok": 1, "output_per_mtok": 2, "cache_write_1h_per_mtok": "2.5"}
    config = llm.Config.unlimited(cost_control={"prices": {"acme:m": price}})
    book = PriceBook(config.cost_control.prices)
    priced = book.price("acme", "m")
    assert priced is not None and priced.cache_write_1h == Decimal("2.5")


def test_the_worst_case_charges_the_prompt_at_the_hour_long_write_price_when_highest() -> None:
    book = PriceBook()
    worst = book.worst_case(1_000_000, 0, provider="anthropic", model="claude-sonnet-4-0")
    assert worst == Decimal(6)


# -- through the client, against the fake provider on real sockets -------------------------


def client_config(server: Any, provider: str) -> llm.Config:
    return llm.Config.unlimited(
        provider=provider,
        retries={"max_attempts": 1},
        providers={provider: {"api_key": KEY, "base_url": server.base_url(provider)}},
    )


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_anthropic_breakpoints_reach_the_wire_and_cache_usage_is_priced(
    stream: bool,
) -> None:
    scenarios = Scenarios()
    usage = ScriptedUsage(
        prompt_tokens=10_000,
        completion_tokens=100,
        cache_read_tokens=2_000,
        cache_write_tokens=5_000,
        cache_write_1h_tokens=1_000,
    )
    scenarios.add("claude-sonnet-4-0", Scenario(text="cached answer", usage=usage))
    request = Request(
        model="anthropic:claude-sonnet-4-0",
        messages=[system("long instructions", cache_control=HOUR), user("q", cache_control=FIVE)],
        tools=[],
        stream=stream,
    )
    async with (
        open_fake_server(scenarios) as server,
        llm.open_client(client_config(server, "anthropic")) as client,
    ):
        response = await client.invoke_sync(request)
        sent = server.requests[-1].json
    assert response.text == "cached answer"
    assert sent["system"] == [
        {
            "type": "text",
            "text": "long instructions",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    got = response.usage
    assert got is not None
    assert (got.prompt_tokens, got.cache_read_tokens) == (10_000, 2_000)
    assert (got.cache_write_tokens, got.cache_write_1h_tokens) == (5_000, 1_000)
    assert got.cost == Decimal("0.0321")


async def test_gemini_implicit_cache_reads_are_kept_and_priced_at_the_cache_read_price() -> None:
    scenarios = Scenarios()
    usage = ScriptedUsage(prompt_tokens=1_000_000, completion_tokens=0, cache_read_tokens=600_000)
    scenarios.add("gemini-2.5-flash", Scenario(text="ok", usage=usage))
    request = Request(
        model="gemini:gemini-2.5-flash",
        messages=[user("q", cache_control=FIVE)],
        tools=[],
    )
    async with (
        open_fake_server(scenarios) as server,
        llm.open_client(client_config(server, "gemini")) as client,
    ):
        response = await client.invoke_sync(request)
        sent = server.requests[-1].json
    assert "cache_control" not in json.dumps(sent)
    got = response.usage
    assert got is not None and got.cache_read_tokens == 600_000
    price = PriceBook().price("gemini", "gemini-2.5-flash")
    assert price is not None and price.cache_read is not None
    assert price.cache_read < price.input
    assert got.cost == 400_000 * price.input / 10**6 + 600_000 * price.cache_read / 10**6


def test_the_recorded_gemini_cached_content_count_is_the_cache_read_count(
    conformance_dir: Path,
) -> None:
    folder = conformance_dir / "gemini"
    names = {entry["file"] for entry in load_index(folder)}
    assert "generate-cached-content-tokens.json" in names
    body = (folder / "generate-cached-content-tokens.json").read_bytes()
    meta = json.loads(body)["usageMetadata"]
    request = Request(model="gemini-2.5-flash", messages=[user("q")])
    usage = GeminiCodec().decode_response(request, body).usage
    assert usage is not None
    assert usage.cache_read_tokens == meta["cachedContentTokenCount"] == 17_379
    assert usage.prompt_tokens == meta["promptTokenCount"]
    assert usage.cache_write_tokens == 0
