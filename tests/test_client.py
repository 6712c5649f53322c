"""The client facade over the mock transport (in-process): streaming, retries, failures,
fallback, key rotation, timeouts, cancellation and the seed API names."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.testing import (
    Disconnect,
    ErrorEvent,
    HttpError,
    Malformed,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    ScriptedUsage,
    Stall,
)

from .mock_clients import FORMATS, KEY, client_for, make_config, request

# -- streaming and aggregation -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_stream_yields_the_text_and_aggregates_to_the_response(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text="The quick brown fox jumps.", chunk_chars=4))
    async with client_for(scenarios) as (client, _):
        async with client.invoke(request(fmt, "m")) as stream:
            pieces = [chunk.text async for chunk in stream]
        assert "".join(pieces) == "The quick brown fox jumps."
        assert len([p for p in pieces if p]) == 7
        response = stream.response
        assert response.text == "The quick brown fox jumps."
        assert response.finish_reason == "stop"
        assert response.provider == fmt
        assert response.usage is not None
        assert response.usage.completion_tokens > 0


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_aggregate_of_a_stream_equals_the_non_streamed_response(fmt: str) -> None:
    scenario = Scenario(
        text="Let me check.",
        tool_calls=[
            ScriptedToolCall(name="weather", arguments={"city": "Paris", "unit": "C"}),
            ScriptedToolCall(name="time", arguments={"zone": "Europe/Paris"}),
        ],
        usage=ScriptedUsage(prompt_tokens=21, completion_tokens=17),
        chunk_chars=5,
    )
    scenarios = Scenarios()
    scenarios.add("tools", scenario)
    async with client_for(scenarios) as (client, _):
        streamed = await client.invoke_sync(request(fmt, "tools"))
        whole = await client.invoke_sync(request(fmt, "tools", stream=False))
    for response in (streamed, whole):
        assert response.text == "Let me check."
        assert response.finish_reason == "tool_calls"
        assert [c.name for c in response.tool_calls] == ["weather", "time"]
        assert response.tool_calls[0].parsed_arguments() == {"city": "Paris", "unit": "C"}
        assert response.tool_calls[1].parsed_arguments() == {"zone": "Europe/Paris"}
        assert response.usage is not None
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (21, 17)


async def test_get_usage_adds_up_every_invocation() -> None:
    scenarios = Scenarios(
        Scenario(text="ok", usage=ScriptedUsage(prompt_tokens=3, completion_tokens=2))
    )
    async with client_for(scenarios) as (client, _):
        for fmt in FORMATS:
            await client.invoke_sync(request(fmt, "any"))
        usage = client.get_usage()
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 6, 15)


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("status", [429, 500, 503, 529])
async def test_retryable_statuses_are_retried_and_then_succeed(
    fmt: str, status: int, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add("flaky", Scenario(failure=HttpError(status=status)), Scenario(text="recovered"))
    async with client_for(scenarios) as (client, _):
        response = await client.invoke_sync(request(fmt, "flaky"))
        assert response.text == "recovered"
        assert scenarios.calls("flaky") == 2
        stats = (await client.session_statistics())[fmt]
        assert stats.retries == 1


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
async def test_retry_after_is_honoured(fmt: str, autojump_clock: trio.testing.MockClock) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "limited", Scenario(failure=HttpError(status=429, retry_after=7)), Scenario(text="ok")
    )
    async with client_for(scenarios) as (client, _):
        start = trio.current_time()
        await client.invoke_sync(request(fmt, "limited"))
        assert trio.current_time() - start == pytest.approx(7, abs=0.01)


async def test_gemini_retry_info_in_the_body_is_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "limited", Scenario(failure=HttpError(status=429, retry_after=4)), Scenario(text="ok")
    )
    async with client_for(scenarios) as (client, _):
        start = trio.current_time()
        await client.invoke_sync(request("gemini", "limited"))
        assert trio.current_time() - start == pytest.approx(4, abs=0.01)


async def test_retry_after_ms_wins_over_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "limited",
        Scenario(failure=HttpError(status=429, retry_after=9, retry_after_ms=1500)),
        Scenario(text="ok"),
    )
    async with client_for(scenarios) as (client, _):
        start = trio.current_time()
        await client.invoke_sync(request("openai", "limited"))
        assert trio.current_time() - start == pytest.approx(1.5, abs=0.01)


async def test_a_retry_after_beyond_the_cap_is_not_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("limited", Scenario(failure=HttpError(status=429, retry_after=3600)))
    async with client_for(scenarios) as (client, _):
        with pytest.raises(llm.RateLimited) as info:
            await client.invoke_sync(request("openai", "limited"))
        assert info.value.retry_after == 3600 or scenarios.calls("limited") == 1
        assert scenarios.calls("limited") == 1
        assert trio.current_time() < 1


async def test_x_should_retry_false_stops_retries(autojump_clock: trio.testing.MockClock) -> None:
    scenarios = Scenarios()
    scenarios.add("no", Scenario(failure=HttpError(status=503, should_retry=False)))
    async with client_for(scenarios) as (client, _):
        with pytest.raises(llm.ProviderOverloaded):
            await client.invoke_sync(request("anthropic", "no"))
        assert scenarios.calls("no") == 1


async def test_x_should_retry_true_retries_a_client_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "yes", Scenario(failure=HttpError(status=400, should_retry=True)), Scenario(text="ok")
    )
    async with client_for(scenarios) as (client, _):
        assert (await client.invoke_sync(request("openai", "yes"))).text == "ok"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_retries_give_up_after_max_attempts_with_the_last_error(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add("down", Scenario(failure=HttpError(status=500)))
    async with client_for(scenarios) as (client, _):
        with pytest.raises(llm.ProviderError) as info:
            await client.invoke_sync(request(fmt, "down"))
        assert info.value.status == 500
        assert info.value.details["attempts"] == 3
        assert scenarios.calls("down") == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, llm.InvalidRequest), (401, llm.AuthenticationError), (404, llm.ModelNotSupported)],
)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_client_errors_are_not_retried(
    fmt: str, status: int, error: type[llm.LLMError]
) -> None:
    scenarios = Scenarios()
    scenarios.add("bad", Scenario(failure=HttpError(status=status)))
    async with client_for(scenarios) as (client, _):
        with pytest.raises(error):
            await client.invoke_sync(request(fmt, "bad"))
        assert scenarios.calls("bad") == 1


async def test_insufficient_quota_is_not_retried() -> None:
    scenarios = Scenarios()
    scenarios.add("broke", Scenario(failure=HttpError(status=429, error_type="insufficient_quota")))
    async with client_for(scenarios) as (client, _):
        with pytest.raises(llm.RateLimited) as info:
            await client.invoke_sync(request("openai", "broke"))
        assert not info.value.retryable
        assert scenarios.calls("broke") == 1


# -- failures inside a stream ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_error_event_before_any_content_is_retried(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "evt",
        Scenario(text="never", failure=ErrorEvent(after_chunks=0, kind="overloaded")),
        Scenario(text="second try"),
    )
    async with client_for(scenarios) as (client, _):
        async with client.invoke(request(fmt, "evt")) as stream:
            text = "".join([c.text async for c in stream])
        assert text == "second try"
        assert scenarios.calls("evt") == 2


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_error_event_after_content_reaches_the_caller_and_is_not_retried(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "evt",
        Scenario(text="partial answer here", chunk_chars=4, failure=ErrorEvent(after_chunks=2)),
        Scenario(text="should not be used"),
    )
    async with client_for(scenarios) as (client, _):
        received: list[str] = []
        with pytest.raises(llm.ProviderOverloaded):
            async with client.invoke(request(fmt, "evt")) as stream:
                async for chunk in stream:
                    received.append(chunk.text)
        assert "".join(received) == "partial "
        assert scenarios.calls("evt") == 1


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_disconnect_after_content_fails_the_stream(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "cut", Scenario(text="abcdefghijkl", chunk_chars=3, failure=Disconnect(after_chunks=2))
    )
    async with client_for(scenarios) as (client, _):
        received: list[str] = []
        with pytest.raises(llm.StreamingFailed):
            async with client.invoke(request(fmt, "cut")) as stream:
                async for chunk in stream:
                    received.append(chunk.text)
        assert "".join(received) == "abcdef"
        assert scenarios.calls("cut") == 1
        assert stream.usage is None or stream.usage.completion_tokens >= 0


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_disconnect_before_content_is_retried(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add("cut", Scenario(failure=Disconnect(after_chunks=0)), Scenario(text="whole"))
    async with client_for(scenarios) as (client, _):
        assert (await client.invoke_sync(request(fmt, "cut"))).text == "whole"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_stall_trips_the_idle_watchdog(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add("stall", Scenario(text="abcdefgh", chunk_chars=2, failure=Stall(after_chunks=2)))
    async with client_for(scenarios) as (client, _):
        start = trio.current_time()
        with pytest.raises(
            llm.InvocationTimeout, match=r"no chunk for 5s \(the idle_chunk limit\)"
        ):
            await client.invoke_sync(request(fmt, "stall"))
        assert trio.current_time() - start == pytest.approx(5, abs=0.1)
        assert scenarios.calls("stall") == 1


async def test_a_slow_first_chunk_trips_the_first_chunk_watchdog_and_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(ttft=60), Scenario(text="fast"))
    async with client_for(scenarios) as (client, _):
        start = trio.current_time()
        assert (await client.invoke_sync(request("openai", "slow"))).text == "fast"
        assert trio.current_time() - start == pytest.approx(10.1, abs=0.2)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_malformed_json_fails_the_stream(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "bad", Scenario(text="abcdefgh", chunk_chars=2, failure=Malformed(after_chunks=2))
    )
    async with client_for(scenarios) as (client, _):
        with pytest.raises(llm.StreamingFailed):
            await client.invoke_sync(request(fmt, "bad"))


# -- timeouts and cancellation -----------------------------------------------------------------


async def test_the_whole_call_timeout_raises_invocation_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(text="a" * 40, chunk_chars=1, interval=1))
    async with client_for(scenarios) as (client, _):
        with pytest.raises(llm.InvocationTimeout):
            await client.invoke_sync(request("openai", "slow"), timeout=5)


async def test_the_callers_own_deadline_cancels_the_upstream_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(text="a" * 40, chunk_chars=1, interval=1))
    async with client_for(scenarios) as (client, _):
        with trio.move_on_after(3.5):
            await client.invoke_sync(request("openai", "slow"))
        await trio.testing.wait_all_tasks_blocked()
        stats = (await client.session_statistics())["openai"]
        assert stats.pool.active == 0


async def test_leaving_a_stream_early_cancels_the_upstream_call_and_settles_usage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("long", Scenario(text="word " * 50, chunk_chars=5, interval=0.5))
    async with client_for(scenarios) as (client, _):
        async with client.invoke(request("openai", "long")) as stream:
            async for chunk in stream:
                if chunk.text:
                    break
        await trio.testing.wait_all_tasks_blocked()
        stats = (await client.session_statistics())["openai"]
        assert stats.pool.active == 0
        assert trio.current_time() < 2  # the remaining 25 s of stream were never waited for
        assert stream.text == "word "


# -- fallback, circuit breaker, keys -----------------------------------------------------------


async def test_a_fallback_provider_takes_over_after_retries_are_exhausted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("primary", Scenario(failure=HttpError(status=529)))
    scenarios.add("backup", Scenario(text="from the backup"))
    config = make_config(
        providers={
            "openai": {"api_key": KEY},
            "anthropic": {"api_key": KEY, "fallback": ["openai:backup"]},
            "gemini": {"api_key": KEY},
        }
    )
    async with client_for(scenarios, config) as (client, _):
        async with client.invoke(request("anthropic", "primary")) as stream:
            text = "".join([c.text async for c in stream])
        assert text == "from the backup"
        assert stream.attempted == ["anthropic:primary", "openai:backup"]
        assert stream.response.provider == "openai"
        assert client.statistics().fallbacks == 1


async def test_no_fallback_for_an_invalid_request() -> None:
    scenarios = Scenarios()
    scenarios.add("primary", Scenario(failure=HttpError(status=400)))
    config = make_config(
        providers={
            "openai": {"api_key": KEY, "fallback": ["anthropic:backup"]},
            "anthropic": {"api_key": KEY},
            "gemini": {"api_key": KEY},
        }
    )
    async with client_for(scenarios, config) as (client, _):
        with pytest.raises(llm.InvalidRequest):
            await client.invoke_sync(request("openai", "primary"))


async def test_the_circuit_opens_after_repeated_failures_and_fails_fast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("down", Scenario(failure=HttpError(status=500)))
    config = make_config(retries={"max_attempts": 1})
    async with client_for(scenarios, config) as (client, _):
        for _ in range(5):
            with pytest.raises(llm.ProviderError):
                await client.invoke_sync(request("openai", "down"))
        calls = scenarios.calls("down")
        with pytest.raises(llm.ProviderOverloaded) as info:
            await client.invoke_sync(request("openai", "down"))
        assert info.value.details["circuit"] == "open"
        assert scenarios.calls("down") == calls  # nothing was sent
        stats = (await client.session_statistics())["openai"]
        assert stats.breakers["down"] == "open"


async def test_keys_rotate_on_429_and_a_rejected_key_is_set_aside(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(failure=HttpError(status=429, retry_after=30)),
        Scenario(failure=HttpError(status=401)),
        Scenario(text="third key works"),
    )
    keys = [
        "sk-test-first-0000000000000",
        "sk-test-second-000000000000",
        "sk-test-third-0000000000000",
    ]
    config = make_config(
        providers={
            "openai": {"api_keys": keys},
            "anthropic": {"api_key": KEY},
            "gemini": {"api_key": KEY},
        }
    )
    async with client_for(scenarios, config) as (client, transports):
        response = await client.invoke_sync(request("openai", "m"))
        assert response.text == "third key works"
        used = [r.headers.get("authorization") for r in transports["openai"].requests]
        assert len(used) == 3
        assert trio.current_time() < 1  # rotation, not a 30 s wait
        stats = (await client.session_statistics())["openai"]
        assert stats.key_rotations == 2


# -- provider resolution and validation --------------------------------------------------------


async def test_an_unknown_provider_is_reported_with_the_available_ones() -> None:
    async with client_for(Scenarios()) as (client, _):
        with pytest.raises(llm.ProviderNotFound) as info:
            client.invoke(llm.Request(model="nope:x", provider="nope", messages=[llm.user("x")]))
        assert "openai" in info.value.details["available"]


async def test_an_image_to_a_model_without_vision_is_refused_before_sending() -> None:
    scenarios = Scenarios()
    async with client_for(scenarios) as (client, transports):
        image = llm.ImagePart.from_url("https://example.com/cat.png")
        bad = llm.Request(model="openai:gpt-3.5-turbo", messages=[llm.user("what is it?", image)])
        with pytest.raises(llm.ModelNotSupported):
            await client.invoke_sync(bad)
        assert transports["openai"].requests == []


# -- the first specification's API -------------------------------------------------------------


async def test_complete_and_chat_return_the_seed_response_types() -> None:
    scenarios = Scenarios(Scenario(text="Bonjour, le monde !"))
    async with client_for(scenarios, make_config(provider="mock", model="mock")) as (client, _):
        completion = await client.complete("Translate to French: Hello, world!", max_tokens=100)
        assert completion.text == "Bonjour, le monde !"
        assert completion.finish_reason == "stop"
        chat = await client.chat([llm.system("Be brief."), llm.user("Hi")])
        assert chat.messages[-1].content == "Bonjour, le monde !"
        assert chat.usage.total_tokens > 0


async def test_stream_chat_yields_deltas_and_ends_with_an_error_delta_on_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("ok", Scenario(text="abcdef", chunk_chars=2))
    scenarios.add("bad", Scenario(failure=HttpError(status=400)))
    async with client_for(scenarios) as (client, _):
        async with client.stream_chat([llm.user("x")], model="openai:ok") as deltas:
            texts = [d.messages[0].content async for d in deltas if d.messages]
        assert "".join(t for t in texts if isinstance(t, str)) == "abcdef"
        async with client.stream_chat([llm.user("x")], model="openai:bad") as deltas:
            errors = [d.error async for d in deltas if d.error is not None]
        assert [e.code for e in errors] == [llm.ErrorCode.INVALID_REQUEST]
        with pytest.raises(llm.InvalidRequest):
            async with client.stream_chat(
                [llm.user("x")], model="openai:bad", raise_errors=True
            ) as deltas:
                async for _ in deltas:
                    pass


async def test_stream_complete_yields_completion_deltas() -> None:
    scenarios = Scenarios(Scenario(text="one two three", chunk_chars=4))
    async with client_for(scenarios, make_config(provider="mock", model="mock")) as (client, _):
        async with client.stream_complete("count") as deltas:
            text = "".join([d.text async for d in deltas])
        assert text == "one two three"


async def test_list_models_is_cached() -> None:
    async with client_for(Scenarios()) as (client, transports):
        first = await client.list_models("openai")
        second = await client.list_models("openai")
        assert first == second
        listed = [r for r in transports["openai"].requests if r.url.endswith("/models")]
        assert len(listed) == 1
        await client.list_models("openai", refresh=True)
        listed = [r for r in transports["openai"].requests if r.url.endswith("/models")]
        assert len(listed) == 2


async def test_keys_never_appear_in_reprs_or_errors() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "bad", Scenario(failure=HttpError(status=401, message=f"Incorrect API key provided: {KEY}"))
    )
    async with client_for(scenarios) as (client, transports):
        with pytest.raises(llm.AuthenticationError) as info:
            await client.invoke_sync(request("openai", "bad"))
        for text in (
            str(info.value),
            repr(info.value),
            repr(client.config),
            repr(transports["openai"].requests),
        ):
            assert KEY not in text


async def test_many_concurrent_streams_all_complete() -> None:
    scenarios = Scenarios(Scenario(text="x" * 32, chunk_chars=4))
    async with client_for(scenarios) as (client, _):
        results: list[str] = []

        async def one() -> None:
            response = await client.invoke_sync(request("openai", "any"))
            results.append(response.text)

        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(one)
        assert results == ["x" * 32] * 300
        assert client.runtime.statistics().in_flight == 0


async def test_an_invocation_stream_must_be_entered_before_iterating() -> None:
    async with client_for(Scenarios()) as (client, _):
        stream = client.invoke(request("openai", "any"))
        with pytest.raises(RuntimeError, match="async with"):
            await stream.__anext__()
