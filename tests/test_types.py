"""Specification of the domain types in `llm_invocation.types`."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_invocation.errors import (
    ErrorCode,
    ErrorInfo,
    InvalidRequest,
    ProviderOverloaded,
    RateLimited,
)
from llm_invocation.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    CompletionRequest,
    CompletionResponse,
    Feature,
    ImagePart,
    InvocationRequest,
    InvocationResponse,
    Message,
    ModelInfo,
    ModelOptions,
    NamedToolChoice,
    ReasoningPart,
    Request,
    Response,
    ResponseFormat,
    StreamAggregator,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    assistant,
    developer,
    from_json,
    system,
    to_json,
    tool_result,
    user,
)

PNG = b"\x89PNG\r\n\x1a\nfake"
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_response(*choices: Choice, usage: Usage | None = None) -> Response:
    return Response(
        id="resp-1",
        provider="openai",
        model="gpt-4o",
        created=WHEN,
        choices=list(choices),
        usage=usage,
        system_fingerprint="fp_1",
    )


def aggregate(*chunks: StreamChunk) -> Response:
    agg = StreamAggregator()
    for chunk in chunks:
        agg.add(chunk)
    return agg.response(created=WHEN)


def calls(*deltas: ToolCallDelta, choice: int = 0) -> StreamChunk:
    return StreamChunk(choice=choice, tool_calls=list(deltas))


# ---------------------------------------------------------------------------------------------
# Message helpers


def test_system_makes_a_system_message_with_text_content() -> None:
    assert system("Be brief.") == Message(role="system", content="Be brief.")


def test_developer_makes_a_developer_message_with_text_content() -> None:
    assert developer("Be brief.") == Message(role="developer", content="Be brief.")


def test_user_with_only_text_has_string_content() -> None:
    assert user("Hi") == Message(role="user", content="Hi")


def test_user_with_text_and_images_has_a_text_part_then_the_images() -> None:
    image = ImagePart.from_url("https://example.com/cat.png")
    message = user("What is this?", image)
    assert message.content == [TextPart(text="What is this?"), image]


def test_user_with_a_single_part_has_a_one_part_list() -> None:
    image = ImagePart.from_bytes(PNG, "image/png")
    assert user(image).content == [image]


def test_user_with_a_sequence_of_parts_and_more_parts_keeps_their_order() -> None:
    first, second, third = TextPart(text="a"), TextPart(text="b"), TextPart(text="c")
    assert user((first, second), third).content == [first, second, third]


def test_user_takes_a_participant_name() -> None:
    assert user("Hi", name="alice").name == "alice"


def test_assistant_with_text_has_no_tool_calls() -> None:
    message = assistant("Hello")
    assert (message.role, message.content, message.tool_calls) == ("assistant", "Hello", None)


def test_assistant_with_tool_calls_lists_them() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    message = assistant(tool_calls=(call,))
    assert (message.content, message.tool_calls) == (None, [call])


def test_tool_result_keeps_string_content() -> None:
    message = tool_result("call_1", "sunny", name="get_weather")
    assert message == Message(
        role="tool", content="sunny", tool_call_id="call_1", name="get_weather"
    )


def test_tool_result_encodes_other_content_as_json() -> None:
    message = tool_result("call_1", {"temperature": 21, "ok": True})
    assert json.loads(message.text) == {"temperature": 21, "ok": True}


def test_tool_result_keeps_a_list_of_parts_as_parts() -> None:
    image = ImagePart.from_bytes(PNG, "image/png")
    assert tool_result("call_1", [TextPart(text="chart"), image]).images == [image]


def test_tool_result_keeps_a_single_part_as_a_one_part_list() -> None:
    assert tool_result("call_1", TextPart(text="done")).content == [TextPart(text="done")]


def test_tool_result_encodes_a_list_of_plain_values_as_json() -> None:
    assert tool_result("call_1", [1, "two"]).content == '[1,"two"]'


def test_tool_result_marks_a_failed_call() -> None:
    assert tool_result("call_1", "boom", is_error=True).is_error


def test_tool_result_with_unencodable_content_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="cannot be encoded as JSON") as info:
        tool_result("call_1", object())
    assert info.value.details["tool_call_id"] == "call_1"


# ---------------------------------------------------------------------------------------------
# Image parts


def test_image_from_bytes_base64_encodes_the_data() -> None:
    image = ImagePart.from_bytes(PNG, "image/png", detail="high")
    assert (image.data, image.media_type, image.detail, image.url) == (
        base64.b64encode(PNG).decode(),
        "image/png",
        "high",
        None,
    )


def test_image_to_bytes_returns_the_original_bytes() -> None:
    assert ImagePart.from_bytes(PNG, "image/png").to_bytes() == PNG


def test_image_from_a_data_url_is_split_into_data_and_media_type() -> None:
    encoded = base64.b64encode(PNG).decode()
    image = ImagePart.from_url(f"data:image/png;base64,{encoded}")
    assert (image.url, image.data, image.media_type) == (None, encoded, "image/png")


def test_image_from_a_non_base64_data_url_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="data:<media type>;base64"):
        ImagePart.from_url("data:image/png,rawbytes")


def test_image_as_url_of_inline_data_is_a_data_url() -> None:
    image = ImagePart.from_bytes(b"abc", "image/gif")
    assert image.as_url() == "data:image/gif;base64,YWJj"


def test_image_as_url_of_a_url_is_the_url() -> None:
    assert ImagePart.from_url("https://example.com/a.png").as_url() == "https://example.com/a.png"


def test_image_with_both_url_and_data_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="exactly one of url and data"):
        ImagePart(url="https://example.com/a.png", data="YWJj", media_type="image/png")


def test_image_with_neither_url_nor_data_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="exactly one of url and data"):
        ImagePart()


def test_image_with_data_but_no_media_type_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="needs a media_type") as info:
        ImagePart(data="YWJj")
    assert info.value.details["field"] == "media_type"


def test_image_to_bytes_of_a_url_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="is a URL"):
        ImagePart.from_url("https://example.com/a.png").to_bytes()


def test_image_to_bytes_of_invalid_base64_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="not valid base64"):
        ImagePart(data="not base64!", media_type="image/png").to_bytes()


def test_image_decoded_without_media_type_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="needs a media_type"):
        from_json(b'{"type": "image", "data": "YWJj"}', ImagePart)


# ---------------------------------------------------------------------------------------------
# Tool calls


def test_parsed_arguments_decodes_the_json_object() -> None:
    call = ToolCall(id="c", name="f", arguments='{"a": [1, 2], "b": null}')
    assert call.parsed_arguments() == {"a": [1, 2], "b": None}


@pytest.mark.parametrize("arguments", ["", "  \n"])
def test_parsed_arguments_of_empty_text_is_an_empty_dict(arguments: str) -> None:
    assert ToolCall(id="c", name="f", arguments=arguments).parsed_arguments() == {}


def test_parsed_arguments_of_invalid_json_raises_invalid_request() -> None:
    call = ToolCall(id="c", name="lookup", arguments='{"a": ')
    with pytest.raises(InvalidRequest, match="'lookup' are not valid JSON") as info:
        call.parsed_arguments()
    assert info.value.details == {"tool_call_id": "c", "tool": "lookup"}


def test_parsed_arguments_of_a_json_array_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="must be a JSON object, got list"):
        ToolCall(id="c", name="f", arguments="[1]").parsed_arguments()


# ---------------------------------------------------------------------------------------------
# Messages


def test_message_text_joins_the_text_parts_only() -> None:
    message = Message(
        role="assistant",
        content=[
            ReasoningPart(text="hmm", signature="sig"),
            TextPart(text="Hello, "),
            ImagePart.from_url("https://example.com/a.png"),
            TextPart(text="world"),
        ],
    )
    assert message.text == "Hello, world"


def test_message_text_of_string_content_is_the_string() -> None:
    assert Message(role="user", content="Hi").text == "Hi"


def test_message_text_without_content_is_empty() -> None:
    assert Message(role="assistant").text == ""


def test_message_images_lists_the_image_parts() -> None:
    image = ImagePart.from_url("https://example.com/a.png")
    assert user("look", image).images == [image]


def test_message_images_of_string_content_is_empty() -> None:
    assert user("look").images == []


def test_message_reasoning_joins_the_reasoning_parts() -> None:
    message = Message(
        role="assistant",
        content=[ReasoningPart(text="a"), TextPart(text="x"), ReasoningPart(text="b")],
    )
    assert message.reasoning == "ab"


def test_tool_message_without_tool_call_id_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="needs the tool_call_id") as info:
        Message(role="tool", content="result")
    assert info.value.details["field"] == "tool_call_id"


def test_tool_calls_on_a_user_message_raise_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="only valid on an assistant message") as info:
        Message(role="user", content="x", tool_calls=[ToolCall(id="c", name="f")])
    assert info.value.details["field"] == "tool_calls"


def test_tool_call_id_on_a_user_message_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="only valid on a tool message") as info:
        Message(role="user", content="x", tool_call_id="c")
    assert info.value.details["field"] == "tool_call_id"


def test_is_error_on_an_assistant_message_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="only valid on a tool message") as info:
        Message(role="assistant", content="x", is_error=True)
    assert info.value.details["field"] == "is_error"


def test_unknown_role_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="unknown message role 'robot'"):
        Message(role="robot", content="x")  # pyright: ignore[reportArgumentType]  # the point


def test_unknown_role_on_decode_raises_invalid_request_with_the_path() -> None:
    with pytest.raises(InvalidRequest, match="Invalid enum value 'robot'") as info:
        from_json(b'{"model": "m", "messages": [{"role": "robot"}]}', Request)
    assert info.value.details["path"] == "$.messages[0].role"


def test_tool_message_decoded_without_tool_call_id_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="needs the tool_call_id"):
        from_json(b'{"role": "tool", "content": "x"}', Message)


# ---------------------------------------------------------------------------------------------
# Tool specs and tool choice


def test_tool_spec_parameters_default_to_an_empty_object_schema() -> None:
    assert ToolSpec(name="noop").parameters == {"type": "object", "properties": {}}


def test_tool_spec_accepts_a_64_character_name() -> None:
    assert ToolSpec(name="a" * 64).name == "a" * 64


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "dotted.name", "nl\n", "émoji"])
def test_tool_spec_with_an_invalid_name_raises_invalid_request_naming_it(name: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid tool name") as info:
        ToolSpec(name=name)
    assert info.value.details == {"field": "name", "name": name}
    assert repr(name) in info.value.message


# ---------------------------------------------------------------------------------------------
# Response formats


def test_response_format_json_asks_for_a_json_object() -> None:
    assert ResponseFormat.json() == ResponseFormat(type="json_object")


def test_response_format_schema_is_strict_by_default() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = ResponseFormat.schema("answer", schema, description="the answer")
    assert (fmt.type, fmt.name, fmt.json_schema, fmt.strict, fmt.description) == (
        "json_schema",
        "answer",
        schema,
        True,
        "the answer",
    )


def test_json_schema_format_without_a_schema_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="needs a json_schema") as info:
        ResponseFormat(type="json_schema", name="x")
    assert info.value.details["field"] == "json_schema"


def test_a_schema_on_a_text_format_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="only valid with type 'json_schema'"):
        ResponseFormat(type="text", json_schema={"type": "object"})


class Point(msgspec.Struct):
    x: int
    y: int


class Polygon(msgspec.Struct):
    name: str
    points: list[Point]


class Tree(msgspec.Struct):
    children: list[Tree]


def test_response_format_from_type_puts_the_struct_schema_at_the_root() -> None:
    schema = ResponseFormat.from_type("polygon", Polygon).json_schema
    assert schema is not None
    assert (schema["type"], schema["required"], sorted(schema["$defs"])) == (
        "object",
        ["name", "points"],
        ["Point"],
    )


def test_response_format_from_type_keeps_the_root_definition_of_a_recursive_type() -> None:
    schema = ResponseFormat.from_type("tree", Tree).json_schema
    assert schema is not None
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert "Tree" in schema["$defs"]


def test_response_format_from_type_of_a_flat_struct_has_no_defs() -> None:
    schema = ResponseFormat.from_type("point", Point).json_schema
    assert schema == {
        "title": "Point",
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"],
    }


# ---------------------------------------------------------------------------------------------
# Model options


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.01),
        ("temperature", float("nan")),
        ("top_p", 1.5),
        ("top_p", -0.5),
        ("max_tokens", 0),
        ("top_k", 0),
        ("frequency_penalty", -2.5),
        ("presence_penalty", 2.5),
    ],
)
def test_out_of_range_option_raises_invalid_request_naming_the_field(
    field: str, value: float
) -> None:
    changes: dict[str, Any] = {field: value}
    with pytest.raises(InvalidRequest, match=f"^{field} must be") as info:
        ModelOptions(**changes)
    assert info.value.details["field"] == field


def test_options_at_their_bounds_are_valid() -> None:
    low = ModelOptions(temperature=0, top_p=0, max_tokens=1, top_k=1, frequency_penalty=-2)
    high = ModelOptions(temperature=2, top_p=1, presence_penalty=2)
    assert (low.temperature, high.temperature) == (0, 2)


def test_more_than_sixteen_stop_sequences_raise_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="at most 16 sequences, got 17") as info:
        ModelOptions(stop=[str(i) for i in range(17)])
    assert info.value.details["field"] == "stop"


def test_an_empty_stop_sequence_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="must not be empty") as info:
        ModelOptions(stop=["END", ""])
    assert info.value.details["field"] == "stop"


def test_out_of_range_option_on_decode_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="temperature must be"):
        from_json(b'{"temperature": 3}', ModelOptions)


def test_merged_options_take_the_fields_other_sets_and_keep_the_rest() -> None:
    base = ModelOptions(temperature=0.5, max_tokens=100, seed=1)
    merged = base.merged(ModelOptions(temperature=0.9, stop=["END"]))
    assert merged == ModelOptions(temperature=0.9, max_tokens=100, seed=1, stop=["END"])


def test_merged_options_merge_provider_options_key_by_key() -> None:
    base = ModelOptions(provider_options={"a": 1, "b": 2})
    merged = base.merged(ModelOptions(provider_options={"b": 3, "c": 4}))
    assert merged.provider_options == {"a": 1, "b": 3, "c": 4}


def test_merged_with_empty_options_is_unchanged() -> None:
    base = ModelOptions(temperature=0.5)
    assert base.merged(ModelOptions()) == base


# ---------------------------------------------------------------------------------------------
# Requests


def test_request_defaults_to_streaming_without_cache() -> None:
    request = Request(model="gpt-4o", messages=[user("Hi")])
    assert (request.stream, request.cache, request.options) == (True, False, ModelOptions())


def test_request_encodes_without_default_fields() -> None:
    request = Request(model="gpt-4o", messages=[user("Hi")])
    assert to_json(request) == b'{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}'


def test_invocation_request_is_request() -> None:
    assert InvocationRequest is Request


def test_request_without_messages_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="at least one message") as info:
        Request(model="gpt-4o", messages=[])
    assert info.value.details["field"] == "messages"


def test_request_without_model_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="needs a model") as info:
        Request(model="", messages=[user("Hi")])
    assert info.value.details["field"] == "model"


def test_request_with_repeated_tool_names_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="'f' is used more than once") as info:
        Request(model="m", messages=[user("Hi")], tools=[ToolSpec(name="f"), ToolSpec(name="f")])
    assert info.value.details["field"] == "tools"


def test_named_tool_choice_of_an_unknown_tool_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="tool_choice names 'g'") as info:
        Request(
            model="m",
            messages=[user("Hi")],
            tools=[ToolSpec(name="f")],
            tool_choice=NamedToolChoice(name="g"),
        )
    assert info.value.details["field"] == "tool_choice"


def test_named_tool_choice_of_a_listed_tool_is_valid() -> None:
    request = Request(
        model="m",
        messages=[user("Hi")],
        tools=[ToolSpec(name="f")],
        tool_choice=NamedToolChoice(name="f"),
    )
    assert request.tool_choice == NamedToolChoice(name="f")


def test_with_options_returns_a_copy_with_the_options_changed() -> None:
    request = Request(model="m", messages=[user("Hi")], options=ModelOptions(temperature=0.1))
    changed = request.with_options(max_tokens=50)
    assert (changed.options, request.options) == (
        ModelOptions(temperature=0.1, max_tokens=50),
        ModelOptions(temperature=0.1),
    )


def test_with_options_out_of_range_raises_invalid_request() -> None:
    request = Request(model="m", messages=[user("Hi")])
    with pytest.raises(InvalidRequest, match="top_p must be"):
        request.with_options(top_p=2.0)


def test_request_max_tokens_is_the_option() -> None:
    request = Request(model="m", messages=[user("Hi")], options=ModelOptions(max_tokens=7))
    assert request.max_tokens == 7


# ---------------------------------------------------------------------------------------------
# JSON


def test_request_round_trips_through_json_with_tagged_parts() -> None:
    request = Request(
        model="gpt-4o",
        provider="openai",
        messages=[
            system("Be brief."),
            user("What is this?", ImagePart.from_bytes(PNG, "image/png", detail="low")),
            Message(
                role="assistant",
                content=[ReasoningPart(text="think", signature="sig"), TextPart(text="A cat")],
                tool_calls=[ToolCall(id="c1", name="f", metadata={"thought_signature": "ts"})],
            ),
            tool_result("c1", {"ok": True}),
        ],
        options=ModelOptions(temperature=0.2, provider_options={"service_tier": "flex"}),
        tools=[ToolSpec(name="f", description="does f", strict=True)],
        tool_choice="required",
        response_format=ResponseFormat.json(),
        stream=False,
        metadata={"trace": "t1"},
        cache=True,
    )
    assert from_json(to_json(request), Request) == request


def test_content_parts_are_tagged_by_type_in_json() -> None:
    message = user("Look", ImagePart.from_url("https://example.com/a.png"))
    assert json.loads(to_json(message))["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image", "url": "https://example.com/a.png"},
    ]


def test_named_tool_choice_round_trips_through_json() -> None:
    request = Request(
        model="m",
        messages=[user("Hi")],
        tools=[ToolSpec(name="f")],
        tool_choice=NamedToolChoice(name="f"),
    )
    assert from_json(to_json(request), Request).tool_choice == NamedToolChoice(name="f")


def test_response_round_trips_through_json_with_its_cost() -> None:
    response = make_response(
        Choice(message=assistant("Hi"), finish_reason="stop"),
        usage=Usage(prompt_tokens=10, completion_tokens=2, cost=Decimal("0.000123")),
    )
    assert from_json(to_json(response), Response) == response


def test_stream_chunk_round_trips_through_json() -> None:
    chunk = StreamChunk(
        id="c",
        provider="anthropic",
        model="claude",
        choice=1,
        text="t",
        reasoning="r",
        reasoning_signature="s",
        tool_calls=[ToolCallDelta(index=0, id="call", name="f", arguments='{"a"')],
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=1, estimated=True),
        error=ErrorInfo(code=ErrorCode.STREAMING_FAILED, message="broke"),
        metadata={"native_finish_reason": "tool_use"},
    )
    assert from_json(to_json(chunk), StreamChunk) == chunk


def test_empty_stream_chunk_encodes_as_an_empty_object() -> None:
    assert to_json(StreamChunk()) == b"{}"


def test_from_json_of_an_unknown_part_type_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="Invalid value 'video'") as info:
        from_json(b'{"role": "user", "content": [{"type": "video"}]}', Message)
    assert info.value.details["path"] == "$.content[0].type"


def test_from_json_of_malformed_json_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="malformed JSON"):
        from_json(b'{"model": ', Request)


# ---------------------------------------------------------------------------------------------
# Usage


def test_usage_total_is_computed_when_not_given() -> None:
    assert Usage(prompt_tokens=10, completion_tokens=5).total_tokens == 15


def test_usage_total_is_kept_when_given() -> None:
    assert Usage(prompt_tokens=10, completion_tokens=5, total_tokens=20).total_tokens == 20


def test_usage_total_is_computed_on_decode() -> None:
    assert from_json(b'{"prompt_tokens": 3, "completion_tokens": 4}', Usage).total_tokens == 7


def test_usage_cost_defaults_to_unknown() -> None:
    assert Usage(prompt_tokens=1).cost is None


def test_adding_usages_sums_tokens_and_known_costs() -> None:
    a = Usage(prompt_tokens=10, completion_tokens=5, cache_read_tokens=4, cost=Decimal("0.10"))
    b = Usage(
        prompt_tokens=1,
        completion_tokens=2,
        cache_write_tokens=3,
        reasoning_tokens=1,
        cost=Decimal("0.05"),
    )
    assert a + b == Usage(
        prompt_tokens=11,
        completion_tokens=7,
        total_tokens=18,
        cache_read_tokens=4,
        cache_write_tokens=3,
        reasoning_tokens=1,
        cost=Decimal("0.15"),
    )


def test_adding_a_usage_of_unknown_cost_makes_the_cost_unknown() -> None:
    total = Usage(prompt_tokens=1, cost=Decimal("0.10")) + Usage(prompt_tokens=1)
    assert total.cost is None


def test_adding_an_estimated_usage_makes_the_sum_estimated() -> None:
    assert (Usage(prompt_tokens=1) + Usage(prompt_tokens=1, estimated=True)).estimated


def test_usage_zero_is_the_identity_of_addition() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=1, cost=Decimal("0.2"))
    assert Usage.zero() + usage == usage


# ---------------------------------------------------------------------------------------------
# Responses


def test_invocation_response_is_response() -> None:
    assert InvocationResponse is Response


def test_response_shortcuts_read_the_first_choice() -> None:
    call = ToolCall(id="c", name="f")
    message = Message(
        role="assistant",
        content=[ReasoningPart(text="hmm"), TextPart(text="Hi")],
        tool_calls=[call],
    )
    response = make_response(
        Choice(message=message, finish_reason="tool_calls"),
        Choice(index=1, message=assistant("other"), finish_reason="stop"),
    )
    assert (
        response.message,
        response.text,
        response.tool_calls,
        response.finish_reason,
        response.reasoning,
    ) == (message, "Hi", [call], "tool_calls", "hmm")


def test_response_without_choices_has_an_empty_assistant_message() -> None:
    response = make_response()
    assert (response.message, response.text, response.tool_calls, response.finish_reason) == (
        Message(role="assistant"),
        "",
        [],
        None,
    )


def test_choice_tool_calls_without_calls_is_empty() -> None:
    assert Choice(message=assistant("Hi")).tool_calls == []


def test_response_created_in_another_timezone_is_stored_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    response = Response(
        id="r",
        provider="p",
        model="m",
        created=datetime(2025, 1, 1, 12, tzinfo=paris),
        choices=[],
    )
    assert response.created == datetime(2025, 1, 1, 11, tzinfo=UTC)
    assert response.created.tzinfo is UTC


def test_response_with_a_naive_created_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="timezone-aware") as info:
        Response(id="r", provider="p", model="m", created=datetime(2025, 1, 1), choices=[])
    assert info.value.details["field"] == "created"


# ---------------------------------------------------------------------------------------------
# The first specification's types


def test_completion_request_becomes_one_user_message_for_the_completions_endpoint() -> None:
    request = CompletionRequest(
        prompt="Translate: Hello",
        max_tokens=100,
        temperature=0.3,
        stop=["\n"],
        options={"logprobs": True},
    ).to_request("gpt-4o-mini")
    assert request == Request(
        model="gpt-4o-mini",
        messages=[user("Translate: Hello")],
        options=ModelOptions(
            max_tokens=100, temperature=0.3, stop=["\n"], provider_options={"logprobs": True}
        ),
        metadata={"endpoint": "completions"},
    )


def test_completion_request_model_overrides_the_default_model() -> None:
    assert CompletionRequest(prompt="x", model="claude").to_request("gpt").model == "claude"


def test_completion_request_with_an_out_of_range_option_raises_on_conversion() -> None:
    with pytest.raises(InvalidRequest, match="presence_penalty must be"):
        CompletionRequest(prompt="x", presence_penalty=5).to_request("gpt")


def test_chat_request_becomes_a_request_with_its_messages_and_options() -> None:
    messages = [system("Be brief."), user("Hi")]
    request = ChatRequest(messages=messages, top_p=0.9, frequency_penalty=0.5).to_request("gpt")
    assert request == Request(
        model="gpt", messages=messages, options=ModelOptions(top_p=0.9, frequency_penalty=0.5)
    )


def test_chat_request_without_messages_raises_on_conversion() -> None:
    with pytest.raises(InvalidRequest, match="at least one message"):
        ChatRequest(messages=[]).to_request("gpt")


def test_response_converts_to_a_completion_response() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=2)
    response = make_response(
        Choice(message=assistant("Bonjour"), finish_reason="stop"), usage=usage
    )
    assert response.to_completion_response() == CompletionResponse(
        id="resp-1",
        text="Bonjour",
        finish_reason="stop",
        usage=usage,
        created=WHEN,
        model="gpt-4o",
        system_fingerprint="fp_1",
        provider="openai",
    )


def test_response_converts_to_a_chat_response_with_one_message_per_choice() -> None:
    first, second = assistant("a"), assistant("b")
    response = make_response(
        Choice(message=first, finish_reason="length"), Choice(index=1, message=second)
    )
    chat = response.to_chat_response()
    assert (chat.messages, chat.finish_reason, chat.usage) == ([first, second], "length", Usage())


def test_stream_chunk_converts_to_a_chat_response_delta_carrying_its_error() -> None:
    error = ErrorInfo(code=ErrorCode.STREAMING_FAILED, message="disconnected")
    delta = StreamChunk(id="c", model="m", text="par", error=error).to_chat_response(created=WHEN)
    assert delta == ChatResponse(
        id="c",
        messages=[assistant("par")],
        created=WHEN,
        model="m",
        error=error,
    )


def test_stream_chunk_converts_to_a_completion_response_delta() -> None:
    chunk = StreamChunk(id="c", provider="openai", model="m", text="par", finish_reason="stop")
    assert chunk.to_completion_response(created=WHEN) == CompletionResponse(
        id="c", text="par", finish_reason="stop", created=WHEN, model="m", provider="openai"
    )


# ---------------------------------------------------------------------------------------------
# Stream aggregation


def test_aggregator_concatenates_text() -> None:
    response = aggregate(StreamChunk(text="Hel"), StreamChunk(text="lo"), StreamChunk(text="!"))
    assert response.message == Message(role="assistant", content="Hello!")


def test_aggregator_text_is_the_text_so_far() -> None:
    agg = StreamAggregator()
    agg.add(StreamChunk(text="Hel"))
    agg.add(StreamChunk(reasoning="hmm"))
    agg.add(StreamChunk(text="lo"))
    assert agg.text == "Hello"


def test_aggregator_text_before_any_chunk_is_empty() -> None:
    assert StreamAggregator().text == ""


def test_aggregator_without_text_has_no_content() -> None:
    assert aggregate(StreamChunk(finish_reason="stop")).message.content is None


def test_aggregator_puts_signed_reasoning_before_the_text() -> None:
    response = aggregate(
        StreamChunk(reasoning="Let me "),
        StreamChunk(reasoning="think."),
        StreamChunk(reasoning_signature="sig-1"),
        StreamChunk(text="Answer"),
    )
    assert response.message.content == [
        ReasoningPart(text="Let me think.", signature="sig-1"),
        TextPart(text="Answer"),
    ]


def test_aggregator_keeps_each_signed_thinking_block_apart() -> None:
    response = aggregate(
        StreamChunk(reasoning="first", reasoning_signature="s1"),
        StreamChunk(reasoning="second"),
        StreamChunk(reasoning_signature="s2"),
    )
    assert response.message.content == [
        ReasoningPart(text="first", signature="s1"),
        ReasoningPart(text="second", signature="s2"),
    ]
    assert response.reasoning == "firstsecond"


def test_aggregator_keeps_a_signature_without_thinking_text_as_a_signed_part() -> None:
    response = aggregate(StreamChunk(text="Hi"), StreamChunk(reasoning_signature="sig"))
    assert response.message.content == [TextPart(text="Hi"), ReasoningPart(signature="sig")]


def test_aggregator_orders_parallel_tool_calls_by_index() -> None:
    response = aggregate(
        calls(ToolCallDelta(index=1, id="call_b", name="b", arguments='{"x"')),
        calls(ToolCallDelta(index=0, id="call_a", name="a", arguments='{"y":')),
        calls(ToolCallDelta(index=1, arguments=": 1}"), ToolCallDelta(index=0, arguments=" 2}")),
        StreamChunk(finish_reason="tool_calls"),
    )
    assert response.tool_calls == [
        ToolCall(id="call_a", name="a", arguments='{"y": 2}'),
        ToolCall(id="call_b", name="b", arguments='{"x": 1}'),
    ]


def test_aggregator_does_not_repeat_a_name_a_later_fragment_repeats() -> None:
    # OpenRouter -> Novita: a second delta repeats id, type and name with arguments "{}".
    response = aggregate(
        calls(ToolCallDelta(index=0, id="0", name="llm_version", arguments="")),
        calls(ToolCallDelta(index=0, id="0", name="llm_version", arguments="{}")),
    )
    assert response.tool_calls == [ToolCall(id="0", name="llm_version", arguments="{}")]


def test_aggregator_makes_empty_arguments_an_empty_object() -> None:
    response = aggregate(calls(ToolCallDelta(index=0, id="c", name="now")))
    assert response.tool_calls[0].arguments == "{}"


def test_aggregator_starts_a_new_call_when_a_taken_index_gets_another_id() -> None:
    response = aggregate(
        calls(ToolCallDelta(index=0, id="c1", name="a", arguments="{}")),
        calls(ToolCallDelta(index=0, id="c2", name="b", arguments='{"k": 1}')),
    )
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("c1", "a", "{}"),
        ("c2", "b", '{"k": 1}'),
    ]


def test_aggregator_names_a_call_without_an_id_after_its_index() -> None:
    response = aggregate(calls(ToolCallDelta(index=3, name="f")))
    assert response.tool_calls[0].id == "call_3"


def test_aggregator_takes_id_and_name_from_the_first_fragment_that_has_them() -> None:
    response = aggregate(
        calls(ToolCallDelta(index=0, arguments='{"a":')),
        calls(ToolCallDelta(index=0, id="c", name="f", arguments=" 1}")),
        calls(ToolCallDelta(index=0, id="c", name="other")),
    )
    assert response.tool_calls == [ToolCall(id="c", name="f", arguments='{"a": 1}')]


def test_aggregator_merges_tool_call_metadata() -> None:
    response = aggregate(
        calls(ToolCallDelta(index=0, id="c", name="f")),
        calls(ToolCallDelta(index=0, metadata={"a": 1, "thought_signature": "old"})),
        calls(ToolCallDelta(index=0, metadata={"thought_signature": "ts"})),
    )
    assert response.tool_calls[0].metadata == {"a": 1, "thought_signature": "ts"}


def test_aggregator_finish_reason_is_the_last_one_given() -> None:
    response = aggregate(
        StreamChunk(text="a", finish_reason="length"),
        StreamChunk(finish_reason="stop"),
        StreamChunk(text="b"),
    )
    assert response.finish_reason == "stop"


def test_aggregator_infers_tool_calls_when_no_finish_reason_came() -> None:
    response = aggregate(calls(ToolCallDelta(index=0, id="0", name="f", arguments="{}")))
    assert response.finish_reason == "tool_calls"


def test_aggregator_without_finish_reason_or_calls_leaves_it_unknown() -> None:
    assert aggregate(StreamChunk(text="cut")).finish_reason is None


def test_aggregator_usage_is_the_last_one_given() -> None:
    final = Usage(prompt_tokens=10, completion_tokens=20)
    response = aggregate(
        StreamChunk(usage=Usage(prompt_tokens=10, completion_tokens=1)),
        StreamChunk(text="x", usage=final),
        StreamChunk(text="y"),
    )
    assert response.usage == final


def test_aggregator_usage_property_is_the_last_usage_so_far() -> None:
    agg = StreamAggregator()
    agg.add(StreamChunk(usage=Usage(prompt_tokens=5)))
    assert agg.usage == Usage(prompt_tokens=5)


def test_aggregator_takes_id_provider_and_model_from_the_first_chunk_with_them() -> None:
    response = aggregate(
        StreamChunk(text="a"),
        StreamChunk(id="msg_1", provider="anthropic", model="claude-x"),
        StreamChunk(id="msg_2", provider="other", model="other-model"),
    )
    assert (response.id, response.provider, response.model) == (
        "msg_1",
        "anthropic",
        "claude-x",
    )


def test_aggregator_falls_back_to_the_given_id_provider_and_model() -> None:
    agg = StreamAggregator()
    agg.add(StreamChunk(text="a"))
    response = agg.response(id="gen-1", provider="mock", model="echo")
    assert (response.id, response.provider, response.model) == ("gen-1", "mock", "echo")


def test_aggregator_created_defaults_to_now_in_utc() -> None:
    before = datetime.now(UTC)
    created = StreamAggregator().response().created
    assert created.tzinfo is UTC
    assert before <= created <= datetime.now(UTC)


def test_aggregator_merges_metadata_with_later_chunks_winning() -> None:
    response = aggregate(
        StreamChunk(metadata={"service_tier": "default", "native_finish_reason": None}),
        StreamChunk(metadata={"native_finish_reason": "end_turn"}),
    )
    assert response.metadata == {"service_tier": "default", "native_finish_reason": "end_turn"}


def test_aggregator_raises_the_typed_error_a_chunk_carried() -> None:
    agg = StreamAggregator()
    agg.add(StreamChunk(text="partial"))
    agg.add(
        StreamChunk(
            error=ErrorInfo(
                code=ErrorCode.RATE_LIMIT_EXCEEDED,
                message="slow down",
                provider="openai",
                retry_after=2.0,
            )
        )
    )
    with pytest.raises(RateLimited, match="slow down") as info:
        agg.response()
    assert (info.value.provider, info.value.retry_after) == ("openai", 2.0)


def test_aggregator_raises_provider_overloaded_for_an_overloaded_error_chunk() -> None:
    agg = StreamAggregator()
    agg.add(
        StreamChunk(
            error=ErrorInfo(code=ErrorCode.PROVIDER_ERROR, message="Overloaded", status=529)
        )
    )
    with pytest.raises(ProviderOverloaded):
        agg.response()


def test_aggregator_keeps_the_first_error() -> None:
    first = ErrorInfo(code=ErrorCode.STREAMING_FAILED, message="first")
    agg = StreamAggregator()
    agg.add(StreamChunk(error=first))
    agg.add(StreamChunk(error=ErrorInfo(code=ErrorCode.TIMEOUT, message="second")))
    assert agg.error == first


def test_aggregator_makes_one_choice_per_choice_index() -> None:
    response = aggregate(
        StreamChunk(choice=1, text="B"),
        StreamChunk(choice=0, text="A"),
        StreamChunk(choice=1, text="b", finish_reason="length"),
        StreamChunk(choice=0, text="a", finish_reason="stop"),
    )
    assert response.choices == [
        Choice(index=0, message=assistant("Aa"), finish_reason="stop"),
        Choice(index=1, message=assistant("Bb"), finish_reason="length"),
    ]


def test_aggregator_keeps_tool_calls_of_each_choice_apart() -> None:
    response = aggregate(
        calls(ToolCallDelta(index=0, id="x", name="f"), choice=0),
        calls(ToolCallDelta(index=0, id="y", name="g"), choice=1),
    )
    assert [c.tool_calls[0].id for c in response.choices] == ["x", "y"]


def test_aggregator_without_chunks_has_one_empty_choice() -> None:
    response = StreamAggregator().response(created=WHEN)
    assert response.choices == [Choice(message=Message(role="assistant"))]


@given(pieces=st.lists(st.text()))
def test_aggregated_text_is_the_streamed_text(pieces: list[str]) -> None:
    agg = StreamAggregator()
    for piece in pieces:
        agg.add(StreamChunk(text=piece))
    assert (agg.text, agg.response(created=WHEN).text) == ("".join(pieces), "".join(pieces))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
argument_texts = st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(
    lambda obj: msgspec.json.encode(obj).decode()
)


def split(data: st.DataObject, text: str) -> list[str]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@given(data=st.data(), arguments=st.lists(argument_texts, min_size=1, max_size=4))
def test_aggregated_tool_arguments_are_the_streamed_arguments(
    data: st.DataObject, arguments: list[str]
) -> None:
    indexes = data.draw(st.permutations(range(len(arguments))))
    fragments = [split(data, text) for text in arguments]
    order = data.draw(st.permutations([n for n, frags in enumerate(fragments) for _ in frags]))
    sent = [0] * len(arguments)
    agg = StreamAggregator()
    for n in order:
        k = sent[n]
        sent[n] += 1
        first = k == 0
        agg.add(
            calls(
                ToolCallDelta(
                    index=indexes[n],
                    id=f"id{n}" if first else None,
                    name=f"tool{n}" if first else None,
                    arguments=fragments[n][k],
                )
            )
        )
    by_index = sorted(range(len(arguments)), key=lambda n: indexes[n])
    expected = [ToolCall(id=f"id{n}", name=f"tool{n}", arguments=arguments[n]) for n in by_index]
    assert agg.response(created=WHEN).tool_calls == expected


# ---------------------------------------------------------------------------------------------
# Models


def test_feature_values_are_the_specification_strings() -> None:
    assert [str(f) for f in Feature][:6] == [
        "function_calling",
        "parallel_tools",
        "vision",
        "json_mode",
        "structured_output",
        "mcp",
    ]


def test_model_info_supports_its_features_only() -> None:
    info = ModelInfo(id="gpt-4o", provider="openai", features=frozenset({Feature.VISION}))
    assert (info.supports(Feature.VISION), info.supports(Feature.MCP)) == (True, False)


def test_model_info_round_trips_through_json() -> None:
    info = ModelInfo(
        id="gemini-2.5-flash",
        provider="gemini",
        display_name="Gemini 2.5 Flash",
        context_window=1_048_576,
        max_output_tokens=65_536,
        features=frozenset({Feature.STREAMING, Feature.REASONING}),
        created=WHEN,
        metadata={"version": "001"},
    )
    assert from_json(to_json(info), ModelInfo) == info


def test_model_info_features_decode_from_strings() -> None:
    info = from_json(b'{"id": "m", "provider": "p", "features": ["vision"]}', ModelInfo)
    assert info.features == frozenset({Feature.VISION})


def test_model_info_unknown_feature_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="Invalid enum value 'telepathy'"):
        from_json(b'{"id": "m", "provider": "p", "features": ["telepathy"]}', ModelInfo)
