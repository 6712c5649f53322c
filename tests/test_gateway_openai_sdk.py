"""The OpenAI-compatible gateway as the official ``openai`` SDK sees it.

The SDK runs in the test's own trio event loop (httpx under trio) against a front on
127.0.0.1, backed by the mock provider, or by the fake provider server speaking OpenAI's
wire format over real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import openai
import pytest
import trio

import llm_invocation as llm
from llm_invocation.actors.websocket import WebSocketFront
from llm_invocation.config import WebSocketConfig
from llm_invocation.testing import (
    ErrorEvent,
    HttpError,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    Stall,
    open_fake_server,
)

# The SDK stops reading a stream at ``[DONE]`` without closing its async generators, which
# trio's finaliser then reports; what the gateway sends is complete either way.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator 'openai\\._streaming\\.:ResourceWarning"
)

ALICE = "alice-token-5d1e9c"
BOB = "bob-token-77ab20"
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            },
        },
    }
]
ADD_ARGS = '{"a": 2, "b": 3}'
ADD_CALL = ScriptedToolCall(name="add", arguments=ADD_ARGS, id="call_add_1")


def scenarios() -> Scenarios:
    s = Scenarios(Scenario(text="hello through the gateway", chunk_chars=4))
    s.add("tooly", Scenario(tool_calls=[ADD_CALL], chunk_chars=5))
    s.add("stalls", Scenario(text="x" * 200, chunk_chars=2, failure=Stall(after_chunks=2)))
    s.add("breaks", Scenario(text="y" * 40, chunk_chars=2, failure=ErrorEvent(after_chunks=3)))
    s.add("down", Scenario(failure=HttpError(status=500)))
    s.add("silent", Scenario(failure=Stall(after_chunks=0)))
    s.add("thinks", Scenario(reasoning="first, the sum", text="five", chunk_chars=4))
    return s


class Tracked:
    """One relayed invocation; tells its service how it ended."""

    def __init__(self, inner: Any, owner: Recording) -> None:
        self.inner = inner
        self.owner = owner

    @property
    def response(self) -> llm.Response:
        return self.inner.response

    @property
    def usage(self) -> llm.Usage | None:
        return self.inner.usage

    async def __aenter__(self) -> object:
        return await self.inner.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> object:
        try:
            return await self.inner.__aexit__(exc_type, exc, tb)
        finally:
            self.owner.endings.append(exc_type)
            self.owner.ended.set()

    def __aiter__(self) -> AsyncIterator[object]:
        return self.inner.__aiter__()


class Recording:
    """The client, recording the requests the gateway makes and how they end."""

    def __init__(self, client: llm.Client) -> None:
        self.client = client
        self.requests: list[llm.Request] = []
        self.endings: list[type[BaseException] | None] = []
        self.ended = trio.Event()

    @property
    def config(self) -> llm.Config:
        return self.client.config

    def invoke(self, request: llm.Request, /, **options: Any) -> Tracked:
        self.requests.append(request)
        return Tracked(self.client.invoke(request, **options), self)

    async def list_models(
        self, provider: str | None = None, *, refresh: bool = False
    ) -> list[llm.ModelInfo]:
        return await self.client.list_models(provider, refresh=refresh)


@asynccontextmanager
async def gateway(
    config: llm.Config | None = None,
    *,
    tokens: Any = None,
    scripted: Scenarios | None = None,
) -> AsyncGenerator[tuple[Recording, str]]:
    """A front on 127.0.0.1 (port 0) and its ``/v1`` base URL."""
    ws = WebSocketConfig(port=0, tokens=tokens if tokens is not None else {"alice": ALICE})
    async with (
        llm.open_client(
            config or llm.Config(provider="mock", model="mock"),
            scenarios=scripted or scenarios(),
        ) as client,
        trio.open_nursery() as nursery,
    ):
        service = Recording(client)
        front = WebSocketFront(service, ws, grace=0.5)
        await nursery.start(front.serve)
        yield service, f"http://127.0.0.1:{front.port}/v1"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def sdk(base_url: str, token: str = ALICE) -> AsyncGenerator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0) as client:
        yield client


HI: Any = [{"role": "user", "content": "hi"}]


# -- chat completions ------------------------------------------------------------------------------


async def test_a_chat_completion_comes_back_whole() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        completion = await client.chat.completions.create(model="mock", messages=HI)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "hello through the gateway"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert service.requests[0].stream is False


async def test_a_streamed_chat_completion_sends_the_text_in_chunks_then_the_usage() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(texts) == "hello through the gateway"
    assert len([t for t in texts if t]) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_streamed_chat_completion_without_include_usage_sends_no_usage_chunk() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        stream = await client.chat.completions.create(model="mock", messages=HI, stream=True)
        chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_the_request_options_reach_the_invocation() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        await client.chat.completions.create(
            model="mock",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            temperature=0.5,
            top_p=0.9,
            max_completion_tokens=50,
            stop="END",
            seed=7,
            user="u-1",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
        )
    request = service.requests[0]
    options = request.options
    assert (options.temperature, options.top_p, options.max_tokens) == (0.5, 0.9, 50)
    assert (options.stop, options.seed) == (["END"], 7)
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[1].text == "hi"
    assert request.response_format == llm.ResponseFormat.schema("answer", {"type": "object"})
    assert request.metadata == {"token": "alice", "user": "u-1"}


async def test_a_provider_prefix_in_the_model_selects_the_provider() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        completion = await client.chat.completions.create(model="mock:mock", messages=HI)
    assert completion.choices[0].message.content == "hello through the gateway"
    assert service.requests[0].model == "mock:mock"


# -- tools -----------------------------------------------------------------------------------------


async def test_tool_calls_stream_as_deltas_and_the_tool_results_continue_the_conversation() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        stream = await client.chat.completions.create(
            model="tooly",
            messages=[{"role": "user", "content": "add 2 and 3"}],
            tools=TOOLS,
            stream=True,
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or ():
                    call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += delta.id or ""
                    if delta.function is not None:
                        call["name"] += delta.function.name or ""
                        call["arguments"] += delta.function.arguments or ""
        assert finish == "tool_calls"
        assert calls == {0: {"id": "call_add_1", "name": "add", "arguments": ADD_ARGS}}
        completion = await client.chat.completions.create(
            model="mock",
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "add 2 and 3"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_add_1",
                            "type": "function",
                            "function": {"name": "add", "arguments": calls[0]["arguments"]},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_add_1", "content": "5"},
            ],
        )
    assert completion.choices[0].message.content == "hello through the gateway"
    follow_up = service.requests[1].messages
    assert follow_up[1].tool_calls == [
        llm.ToolCall(id="call_add_1", name="add", arguments=ADD_ARGS)
    ]
    assert (follow_up[2].role, follow_up[2].tool_call_id, follow_up[2].text) == (
        "tool",
        "call_add_1",
        "5",
    )


async def test_tool_calls_come_back_in_a_whole_completion() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        completion = await client.chat.completions.create(
            model="tooly", messages=[{"role": "user", "content": "add"}], tools=TOOLS
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert (call.id, call.type) == ("call_add_1", "function")
    assert (call.function.name, call.function.arguments) == ("add", ADD_ARGS)


async def test_the_listed_tools_are_offered_and_the_tool_choice_kept() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        await client.chat.completions.create(
            model="mock",
            messages=HI,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "add"}},
        )
    request = service.requests[0]
    assert [tool.name for tool in request.tools or ()] == ["add"]
    assert request.tool_choice == llm.NamedToolChoice(name="add")


async def test_a_request_without_tools_offers_none_of_the_servers_tools() -> None:
    @llm.tool
    def secret_lookup(key: str) -> str:
        """Look a key up on the server."""
        return key

    async with gateway() as (service, url), sdk(url) as client:
        service.client.register_tool(secret_lookup)
        await client.chat.completions.create(model="mock", messages=HI)
    assert service.requests[0].tools == []


async def test_tool_calls_from_an_openai_provider_over_the_wire_reach_the_sdk() -> None:
    scripted = Scenarios(Scenario(tool_calls=[ADD_CALL], chunk_chars=3))
    async with open_fake_server(scripted) as server:
        config = llm.Config(
            provider="openai",
            model="gpt-4o-mini",
            providers={"openai": {"base_url": server.base_url("openai"), "api_key": "sk-fake"}},
        )
        async with gateway(config) as (_, url), sdk(url) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=HI, tools=TOOLS, stream=True
            )
            arguments = ""
            names: list[str] = []
            async for chunk in stream:
                for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                    assert delta.index == 0
                    if delta.function is not None:
                        names += [delta.function.name] if delta.function.name else []
                        arguments += delta.function.arguments or ""
    assert (names, arguments) == (["add"], ADD_ARGS)
    assert server.requests[0].path == "/openai/v1/chat/completions"


# -- models ----------------------------------------------------------------------------------------


async def test_models_lists_every_model_as_provider_colon_model() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        page = await client.models.list()
        known = await service.client.list_models()
    ids = [model.id for model in page.data]
    assert ids == [f"{info.provider}:{info.id}" for info in known]
    assert ids and all(model_id.startswith("mock:") for model_id in ids)
    assert {model.owned_by for model in page.data} == {"mock"}


async def test_a_model_is_retrieved_by_its_id() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        first = (await client.models.list()).data[0]
        model = await client.models.retrieve(first.id)
    assert model.id == first.id


async def test_an_unknown_model_id_is_not_found() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("mock:no-such-model")
    assert info.value.code == "model_not_found"


# -- errors ----------------------------------------------------------------------------------------


async def test_a_wrong_token_is_refused_and_never_echoed() -> None:
    wrong = "wrong-token-0b9f4e"
    async with gateway() as (service, url), sdk(url, token=wrong) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.models.list()
    assert info.value.code == "invalid_api_key"
    assert wrong not in info.value.response.text
    assert service.requests == []


async def test_an_unknown_provider_is_model_not_found() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="nowhere:model-x", messages=HI)
    assert info.value.code == "model_not_found"
    assert info.value.type == "invalid_request_error"


async def test_an_out_of_range_option_is_a_bad_request_naming_the_field() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="mock", messages=HI, temperature=5)
    assert info.value.param == "temperature"
    assert service.requests == []


async def test_a_field_the_gateway_does_not_serve_is_a_bad_request() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="mock", messages=HI, n=2)
    assert info.value.param == "n"


async def test_a_provider_failure_is_a_server_error() -> None:
    config = llm.Config(provider="mock", model="mock", retries={"max_attempts": 1})
    async with gateway(config) as (_, url), sdk(url) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="down", messages=HI)
    assert info.value.status_code == 502
    assert info.value.type == "server_error"


async def test_an_error_in_a_started_stream_is_its_last_event() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        stream = await client.chat.completions.create(model="breaks", messages=HI, stream=True)
        texts: list[str] = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == "y" * 6
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "server_error"


async def test_our_own_time_limit_running_out_is_a_504() -> None:
    config = llm.Config(
        provider="mock", model="mock", timeouts={"first_chunk": 0.2}, retries={"max_attempts": 1}
    )
    async with gateway(config) as (_, url), sdk(url) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="silent", messages=HI, stream=True)
    assert (info.value.status_code, info.value.code) == (504, "timeout")


async def test_a_budget_for_one_token_name_refuses_that_token_only() -> None:
    config = llm.Config(
        provider="mock",
        model="mock",
        cost_control={"budgets": [{"scope": "tag:token=alice", "limit": "0.0000001"}]},
    )
    tokens = {"alice": ALICE, "bob": BOB}
    async with gateway(config, tokens=tokens) as (_, url):
        async with sdk(url, ALICE) as client:
            with pytest.raises(openai.RateLimitError) as info:
                await client.chat.completions.create(model="mock", messages=HI)
            with pytest.raises(openai.RateLimitError) as streamed:
                await client.chat.completions.create(model="mock", messages=HI, stream=True)
        async with sdk(url, BOB) as client:
            completion = await client.chat.completions.create(model="mock", messages=HI)
    assert info.value.code == streamed.value.code == "insufficient_quota"
    assert completion.choices[0].message.content == "hello through the gateway"


# -- governance ------------------------------------------------------------------------------------


async def test_each_call_is_in_the_ledger_under_its_token_name() -> None:
    tokens = {"alice": ALICE, "bob": BOB}
    async with gateway(tokens=tokens) as (service, url):
        async with sdk(url, ALICE) as client:
            await client.chat.completions.create(model="mock", messages=HI)
            await client.chat.completions.create(model="mock", messages=HI, stream=True)
        async with sdk(url, BOB) as client:
            await client.chat.completions.create(model="mock", messages=HI)
        report = await service.client.usage(group_by=["tag:token"])
    calls = {row.group["tag:token"]: row.calls for row in report.rows}
    assert calls == {"alice": 2, "bob": 1}


async def test_the_list_form_of_tokens_names_them_token_1_and_on() -> None:
    async with gateway(tokens=[BOB, ALICE]) as (service, url), sdk(url, ALICE) as client:
        await client.chat.completions.create(model="mock", messages=HI)
    assert service.requests[0].metadata == {"token": "token-2"}


async def test_a_client_that_disconnects_mid_stream_cancels_the_upstream_call() -> None:
    async with gateway() as (service, url):
        async with sdk(url) as client:
            stream = await client.chat.completions.create(model="stalls", messages=HI, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break  # the upstream stream stalls from here on
            await stream.close()
        with trio.fail_after(10):
            await service.ended.wait()
        report = await service.client.usage(group_by=["tag:token"])
    assert service.endings == [trio.Cancelled]
    [row] = report.rows
    assert (row.group, row.calls, row.cancelled) == ({"tag:token": "alice"}, 1, 1)


# -- the Responses API -----------------------------------------------------------------------------


async def test_a_response_comes_back_whole() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        response = await client.responses.create(
            model="mock", input="hi", instructions="be brief", max_output_tokens=40
        )
    assert response.status == "completed"
    assert response.output_text == "hello through the gateway"
    assert response.usage is not None and response.usage.output_tokens > 0
    request = service.requests[0]
    assert [(m.role, m.text) for m in request.messages] == [("system", "be brief"), ("user", "hi")]
    assert request.options.max_tokens == 40


async def test_a_streamed_response_sends_text_deltas_then_completed() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        stream = await client.responses.create(model="mock", input="hi", stream=True)
        events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "hello through the gateway"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "hello through the gateway"


async def test_a_function_call_of_the_responses_api_round_trips() -> None:
    tools: Any = [{"type": "function", "name": "add", "parameters": {"type": "object"}}]
    async with gateway() as (service, url), sdk(url) as client:
        first = await client.responses.create(model="tooly", input="add 2 and 3", tools=tools)
        [call] = [item for item in first.output if item.type == "function_call"]
        assert (call.call_id, call.name, call.arguments) == ("call_add_1", "add", ADD_ARGS)
        second = await client.responses.create(
            model="mock",
            tools=tools,
            input=[
                {"role": "user", "content": "add 2 and 3"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": "add",
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "5"},
            ],
        )
    assert second.output_text == "hello through the gateway"
    messages = service.requests[1].messages
    assert messages[1].tool_calls == [llm.ToolCall(id="call_add_1", name="add", arguments=ADD_ARGS)]
    assert (messages[2].role, messages[2].tool_call_id, messages[2].text) == (
        "tool",
        "call_add_1",
        "5",
    )


async def test_an_error_in_a_streamed_response_ends_it_with_error_and_failed() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        stream = await client.responses.create(model="breaks", input="hi", stream=True)
        events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "y" * 6


async def test_thinking_streams_as_a_reasoning_item_before_the_message() -> None:
    async with gateway() as (_, url), sdk(url) as client:
        stream = await client.responses.create(model="thinks", input="2+3?", stream=True)
        events = [event async for event in stream]
    thinking = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(thinking) == "first, the sum"
    final = events[-1]
    assert final.type == "response.completed"
    assert [item.type for item in final.response.output] == ["reasoning", "message"]
    assert final.response.output_text == "five"
    assert [e.output_index for e in events if e.type == "response.output_item.added"] == [0, 1]


async def test_a_reasoning_item_sent_back_joins_the_assistant_turn() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        await client.responses.create(
            model="mock",
            input=[
                {"role": "user", "content": "2+3?"},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "add"}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "five"}]},
                {"role": "user", "content": "and 2+4?"},
            ],
        )
    turn = service.requests[0].messages[1]
    assert turn.role == "assistant"
    assert turn.content == [llm.ReasoningPart(text="add"), llm.TextPart(text="five")]
    assert len(service.requests[0].messages) == 3


async def test_thinking_comes_back_as_reasoning_content_and_may_be_sent_back() -> None:
    async with gateway() as (service, url), sdk(url) as client:
        completion = await client.chat.completions.create(model="thinks", messages=HI)
        message = completion.choices[0].message
        assert message.content == "five"
        assert message.model_extra == {"reasoning_content": "first, the sum"}
        await client.chat.completions.create(
            model="mock", messages=[*HI, message, {"role": "user", "content": "again"}]
        )
    turn = service.requests[1].messages[1]
    assert turn.content == [llm.ReasoningPart(text="first, the sum"), llm.TextPart(text="five")]
