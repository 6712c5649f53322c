"""Images returned by tools reach the model where each API takes them.

* Chat Completions (OpenAI, every compatible preset, Azure): images only in user messages, so
  a tool message carries the result's text and one user message after the turn's tool
  messages carries the images, each result's under a label naming the call;
* Anthropic: image blocks inside the ``tool_result`` block;
* Gemini: ``inlineData`` parts after the turn's ``functionResponse`` parts, labelled the same.

End to end, a local ``@tool`` and an in-process MCP tool that return an image run in the
automatic tool loop against the fake server, for every provider format.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.server.mcpserver import Image, MCPServer

import llm_invocation as llm
from llm_invocation.errors import InvalidRequest
from llm_invocation.providers._anthropic_encode import convert_messages
from llm_invocation.providers._gemini_encode import build_body as gemini_body
from llm_invocation.providers.compatible import AzureOpenAICodec, make_compatible_codec
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.testing import (
    FakeServer,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    WireFormat,
    open_fake_server,
)
from llm_invocation.tools import tool
from llm_invocation.types import (
    ImagePart,
    Message,
    Request,
    TextPart,
    ToolCall,
    assistant,
    tool_result,
    user,
)

KEY: Final = "sk-test-IMAGES-0123456789abcdef"


def _png(red: int) -> bytes:
    """A valid 1x1 PNG whose one pixel has the red value ``red``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, red, 0, 0]))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG_A: Final = _png(1)
PNG_B: Final = _png(2)
PNG_C: Final = _png(3)
A: Final = ImagePart.from_bytes(PNG_A, "image/png")
B: Final = ImagePart.from_bytes(PNG_B, "image/png")
C: Final = ImagePart.from_bytes(PNG_C, "image/png")
URL: Final = ImagePart.from_url("https://images.example/chart.png", detail="low")


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def calls(*names: str) -> list[ToolCall]:
    return [ToolCall(id=f"call_{n}", name=name) for n, name in enumerate(names, 1)]


def turn(results: list[Message], *names: str, after: list[Message] | None = None) -> Request:
    """A request whose assistant turn called ``names`` and got ``results``."""
    messages = [user("Look."), assistant(tool_calls=calls(*names)), *results, *(after or [])]
    return Request(model="gpt-4o", messages=messages)


# -- Chat Completions ---------------------------------------------------------------------------

CHAT_CODECS: Final = {
    "openai": OpenAICodec(),
    "groq": make_compatible_codec("groq"),
    "azure": AzureOpenAICodec(base_url="https://resource.openai.azure.example"),
}
EVERY_CHAT_CODEC: Final = pytest.mark.parametrize(
    "codec", list(CHAT_CODECS.values()), ids=list(CHAT_CODECS)
)


def chat_body(codec: OpenAICodec, request: Request) -> dict[str, Any]:
    codec.validate(request)
    http = codec.encode(request, KEY)
    assert http.body is not None
    body: dict[str, Any] = json.loads(http.body)
    return body


@EVERY_CHAT_CODEC
def test_chat_a_tool_image_follows_the_tool_message_in_a_user_message(codec: OpenAICodec) -> None:
    result = tool_result("call_1", [TextPart(text="the chart"), A], name="plot")
    messages = chat_body(codec, turn([result], "plot"))["messages"]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "the chart"}
    assert messages[3] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Images returned by tool call call_1 (plot):"},
            {"type": "image_url", "image_url": {"url": data_url(PNG_A)}},
        ],
    }
    assert len(messages) == 4


@EVERY_CHAT_CODEC
def test_chat_several_results_with_images_share_one_user_message_after_all_tool_messages(
    codec: OpenAICodec,
) -> None:
    results = [
        tool_result("call_1", [TextPart(text="first"), A, B], name="shot"),
        tool_result("call_2", "no picture", name="note"),
        tool_result("call_3", [TextPart(text="third"), C], name="shot"),
    ]
    messages = chat_body(codec, turn(results, "shot", "note", "shot"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "tool", "user"]
    assert [m["content"] for m in messages[2:5]] == ["first", "no picture", "third"]
    assert [m["tool_call_id"] for m in messages[2:5]] == ["call_1", "call_2", "call_3"]
    assert messages[5]["content"] == [
        {"type": "text", "text": "Images returned by tool call call_1 (shot):"},
        {"type": "image_url", "image_url": {"url": data_url(PNG_A)}},
        {"type": "image_url", "image_url": {"url": data_url(PNG_B)}},
        {"type": "text", "text": "Images returned by tool call call_3 (shot):"},
        {"type": "image_url", "image_url": {"url": data_url(PNG_C)}},
    ]


@EVERY_CHAT_CODEC
def test_chat_a_result_with_only_an_image_says_so_in_its_tool_message(codec: OpenAICodec) -> None:
    messages = chat_body(codec, turn([tool_result("call_1", A)], "shot"))["messages"]
    assert messages[2]["content"] == (
        "The tool returned 1 image and no text: it is in the user message that follows."
    )
    assert messages[3]["content"][1] == {"type": "image_url", "image_url": {"url": data_url(PNG_A)}}


def test_chat_a_result_with_only_images_counts_them() -> None:
    messages = chat_body(OpenAICodec(), turn([tool_result("call_1", [A, B])], "shot"))["messages"]
    assert messages[2]["content"].startswith("The tool returned 2 images and no text")
    assert len(messages[3]["content"]) == 3


def test_chat_an_image_url_and_its_detail_are_kept() -> None:
    messages = chat_body(OpenAICodec(), turn([tool_result("call_1", URL)], "plot"))["messages"]
    assert messages[3]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://images.example/chart.png", "detail": "low"},
    }


def test_chat_the_images_come_before_the_next_user_message() -> None:
    request = turn([tool_result("call_1", [A])], "shot", after=[user("And now?")])
    messages = chat_body(OpenAICodec(), request)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user", "user"]
    assert messages[3]["content"][0]["text"].startswith("Images returned by tool call call_1")
    assert messages[4] == {"role": "user", "content": "And now?"}


def test_chat_each_turn_gets_its_own_image_message() -> None:
    messages = [
        user("Look."),
        assistant(tool_calls=[ToolCall(id="c1", name="shot")]),
        tool_result("c1", [A]),
        assistant(tool_calls=[ToolCall(id="c2", name="shot")]),
        tool_result("c2", [B]),
    ]
    body = chat_body(OpenAICodec(), Request(model="gpt-4o", messages=messages))
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "tool", "user", "assistant", "tool", "user"]
    assert body["messages"][3]["content"][1]["image_url"]["url"] == data_url(PNG_A)
    assert body["messages"][6]["content"][1]["image_url"]["url"] == data_url(PNG_B)


def test_chat_results_without_images_add_no_user_message() -> None:
    request = turn([tool_result("call_1", "sunny"), tool_result("call_2", "rain")], "w", "w")
    roles = [m["role"] for m in chat_body(OpenAICodec(), request)["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]


def test_chat_an_image_in_an_assistant_message_is_still_refused() -> None:
    request = Request(model="gpt-4o", messages=[user("Hi"), Message(role="assistant", content=[A])])
    with pytest.raises(InvalidRequest, match="not in assistant messages") as caught:
        OpenAICodec().validate(request)
    assert caught.value.details["role"] == "assistant"
    with pytest.raises(InvalidRequest, match="only in user messages and tool results"):
        OpenAICodec().encode(request, KEY)


def test_chat_a_tool_image_to_a_model_without_vision_is_refused_before_sending() -> None:
    request = Request(
        model="gpt-3.5-turbo", messages=turn([tool_result("call_1", A)], "s").messages
    )
    with pytest.raises(llm.ModelNotSupported, match="vision"):
        OpenAICodec().validate(request)


ids = st.integers(min_value=0, max_value=3)


@given(st.lists(st.tuples(st.booleans(), st.lists(ids, max_size=3)), min_size=1, max_size=5))
def test_chat_tool_messages_follow_the_call_and_every_image_arrives_once_in_order(
    shapes: list[tuple[bool, list[int]]],
) -> None:
    pool = [A, B, C, URL]
    results: list[Message] = []
    expected: list[str] = []
    for n, (has_text, picks) in enumerate(shapes, 1):
        images = [pool[i] for i in picks]
        parts = [TextPart(text=f"text {n}")] if has_text else []
        content: str | list[Any] = (
            [*parts, *images] if images else (f"text {n}" if has_text else "")
        )
        results.append(tool_result(f"call_{n}", content, name="t"))
        expected.extend(image.as_url() for image in images)
    messages = chat_body(OpenAICodec(), turn(results, *["t"] * len(shapes)))["messages"]
    tools = messages[2 : 2 + len(shapes)]
    assert [m["role"] for m in tools] == ["tool"] * len(shapes)
    assert [m["tool_call_id"] for m in tools] == [f"call_{n}" for n in range(1, len(shapes) + 1)]
    assert all(isinstance(m["content"], str) for m in tools)
    rest = messages[2 + len(shapes) :]
    sent = [
        part["image_url"]["url"]
        for m in rest
        for part in m["content"]
        if part["type"] == "image_url"
    ]
    assert sent == expected
    assert len(rest) == (1 if expected else 0)


# -- Anthropic ----------------------------------------------------------------------------------


def anthropic_image(png: bytes) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": b64(png)},
    }


def test_anthropic_tool_result_blocks_hold_their_images() -> None:
    results = [
        tool_result("toolu_1", [TextPart(text="first"), A, B], name="shot"),
        tool_result("toolu_2", "no picture", name="note"),
        tool_result("toolu_3", [C], name="shot"),
    ]
    request = turn(results, "shot", "note", "shot")
    _, messages = convert_messages(request.messages)
    assert messages[2]["role"] == "user"
    assert messages[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [
                {"type": "text", "text": "first"},
                anthropic_image(PNG_A),
                anthropic_image(PNG_B),
            ],
        },
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no picture"},
        {"type": "tool_result", "tool_use_id": "toolu_3", "content": [anthropic_image(PNG_C)]},
    ]


def test_anthropic_an_error_result_keeps_its_images_and_flag() -> None:
    result = tool_result("toolu_1", [TextPart(text="Error: blurred"), A], is_error=True)
    _, messages = convert_messages(turn([result], "shot").messages)
    (block,) = messages[2]["content"]
    assert block["is_error"] is True
    assert block["content"][1] == anthropic_image(PNG_A)


# -- Gemini -------------------------------------------------------------------------------------


def gemini_image(png: bytes) -> dict[str, Any]:
    return {"inlineData": {"mimeType": "image/png", "data": b64(png)}}


def test_gemini_images_follow_all_the_function_responses_labelled() -> None:
    results = [
        tool_result("call_1", [TextPart(text="first"), A, B], name="shot"),
        tool_result("call_2", "no picture", name="note"),
        tool_result("call_3", [TextPart(text="third"), C], name="shot"),
    ]
    contents = gemini_body(turn(results, "shot", "note", "shot"))["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "shot", "response": {"output": "first"}}},
        {"functionResponse": {"name": "note", "response": {"output": "no picture"}}},
        {"functionResponse": {"name": "shot", "response": {"output": "third"}}},
        {"text": "Images returned by tool call call_1 (shot):"},
        gemini_image(PNG_A),
        gemini_image(PNG_B),
        {"text": "Images returned by tool call call_3 (shot):"},
        gemini_image(PNG_C),
    ]


def test_gemini_a_result_with_only_an_image_says_so_in_its_response() -> None:
    contents = gemini_body(turn([tool_result("call_1", A, name="shot")], "shot"))["contents"]
    assert contents[2]["parts"] == [
        {
            "functionResponse": {
                "name": "shot",
                "response": {
                    "output": "The tool returned 1 image and no text: "
                    "it is after the function responses."
                },
            }
        },
        {"text": "Images returned by tool call call_1 (shot):"},
        gemini_image(PNG_A),
    ]


def test_gemini_the_images_stay_in_the_tool_turn_before_a_following_user_message() -> None:
    request = turn([tool_result("call_1", [A], name="shot")], "shot", after=[user("And now?")])
    contents = gemini_body(request)["contents"]
    assert contents[2]["parts"][1:] == [
        {"text": "Images returned by tool call call_1 (shot):"},
        gemini_image(PNG_A),
        {"text": "And now?"},
    ]


# -- end to end: the tool loop against the fake server ------------------------------------------

# provider entry -> (kind, wire format of the fake server)
ENTRIES: Final[dict[str, tuple[str, WireFormat]]] = {
    "openai": ("openai", "openai"),
    "groq": ("groq", "openai"),
    "azure": ("azure", "openai"),
    "anthropic": ("anthropic", "anthropic"),
    "gemini": ("gemini", "gemini"),
}
EVERY_PROVIDER: Final = pytest.mark.parametrize("provider", list(ENTRIES))


@tool
def camera(subject: str) -> list[object]:
    """Take a photo of a subject.

    Args:
        subject: what to photograph.
    """
    return [f"a photo of {subject}", ImagePart.from_bytes(PNG_A, "image/png")]


def photo_server() -> MCPServer:
    server = MCPServer("photos", version="0.1.0", log_level="WARNING")

    @server.tool()
    def snap() -> Image:
        """Take a snapshot."""
        return Image(data=PNG_B, format="png")

    return server


@asynccontextmanager
async def looping_client(
    provider: str, scenarios: Scenarios
) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    kind, wire = ENTRIES[provider]
    async with open_fake_server(scenarios) as server:
        base_url = server.url if kind == "azure" else server.base_url(wire)
        config = llm.Config.unlimited(
            provider=provider,
            retries={"max_attempts": 1},
            providers={provider: {"kind": kind, "api_key": KEY, "base_url": base_url}},
            tools={"max_steps": 3},
        )
        async with llm.open_client(config) as client:
            client.register_tool(camera)
            await client.register_mcp_server("photos", photo_server())
            yield client, server


def images_where_accepted(wire: WireFormat, body: dict[str, Any]) -> list[str]:
    """The base64 images a second-turn body carries where its API takes tool images."""
    if wire == "openai":
        messages: list[dict[str, Any]] = body["messages"]
        assert all(isinstance(m["content"], str) for m in messages if m["role"] == "tool")
        last_tool = max(n for n, m in enumerate(messages) if m["role"] == "tool")
        after = messages[last_tool + 1]
        assert after["role"] == "user"
        return [
            part["image_url"]["url"].removeprefix("data:image/png;base64,")
            for part in after["content"]
            if part["type"] == "image_url"
        ]
    if wire == "anthropic":
        return [
            block["source"]["data"]
            for m in body["messages"]
            if m["role"] == "user" and isinstance(m["content"], list)
            for result in m["content"]
            if result["type"] == "tool_result" and isinstance(result.get("content"), list)
            for block in result["content"]
            if block["type"] == "image"
        ]
    (turn_parts,) = [
        c["parts"] for c in body["contents"] if any("functionResponse" in p for p in c["parts"])
    ]
    return [p["inlineData"]["data"] for p in turn_parts if "inlineData" in p]


def image_scripts(*tool_calls: ScriptedToolCall) -> Scenarios:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(tool_calls=list(tool_calls)), Scenario(text="I see it."))
    return scenarios


@EVERY_PROVIDER
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_local_tool_image_reaches_the_model_in_the_tool_loop(
    provider: str, stream: bool
) -> None:
    scenarios = image_scripts(ScriptedToolCall(name="camera", arguments={"subject": "a cat"}))
    async with looping_client(provider, scenarios) as (client, server):
        request = Request(
            model=f"{provider}:m", messages=[user("Photograph a cat.")], stream=stream
        )
        response = await client.invoke_sync(request, tool_mode="auto")
        assert response.text == "I see it."
        first, second = server.requests
    assert "image" not in json.dumps(first.json)
    assert images_where_accepted(ENTRIES[provider][1], second.json) == [b64(PNG_A)]
    assert "a photo of a cat" in json.dumps(second.json)


@EVERY_PROVIDER
async def test_an_mcp_tool_image_reaches_the_model_in_the_tool_loop(provider: str) -> None:
    scenarios = image_scripts(ScriptedToolCall(name="photos__snap"))
    async with looping_client(provider, scenarios) as (client, server):
        async with client.invoke(
            messages=[user("Take a snapshot.")], model=f"{provider}:m", tool_mode="auto"
        ) as loop:
            items = [item async for item in loop]
        (results,) = [i for i in items if isinstance(i, llm.ToolResultsEvent)]
        (result,) = results.results
        assert not result.is_error
        assert result.images == [ImagePart(data=b64(PNG_B), media_type="image/png")]
        assert loop.response.text == "I see it."
        _, second = server.requests
    assert images_where_accepted(ENTRIES[provider][1], second.json) == [b64(PNG_B)]


@EVERY_PROVIDER
async def test_parallel_local_and_mcp_images_arrive_together_in_call_order(provider: str) -> None:
    scenarios = image_scripts(
        ScriptedToolCall(name="photos__snap", id="call_snap"),
        ScriptedToolCall(name="camera", arguments={"subject": "a dog"}, id="call_cam"),
    )
    async with looping_client(provider, scenarios) as (client, server):
        request = Request(model=f"{provider}:m", messages=[user("Both.")])
        response = await client.invoke_sync(request, tool_mode="auto")
        assert response.text == "I see it."
        _, second = server.requests
    wire = ENTRIES[provider][1]
    assert images_where_accepted(wire, second.json) == [b64(PNG_B), b64(PNG_A)]
    if wire != "anthropic":
        sent = json.dumps(second.json)
        snap = sent.index("Images returned by tool call call_snap (photos__snap):")
        cam = sent.index("Images returned by tool call call_cam (camera):")
        assert snap < cam
