"""The invocation path: deadlines, watchdogs, retries under governance, provider resolution.

Every invocation runs through the invoker; these tests hold it to what a production caller
relies on: the caller's own cancellation is never reported as our timeout, the first-chunk
limit runs until content arrives, every retry is counted and takes a rate-limit lease, and an
unknown provider is never answered by the mock.
"""

from __future__ import annotations

import random
import statistics
from typing import Any, Final

import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.actors.governor import Governor, GovernorStats
from llm_invocation.testing import (
    HttpError,
    Scenario,
    Scenarios,
    Stall,
    open_fake_server,
)

from .mock_clients import FORMATS, KEY, client_for, make_config, request

# -- the caller's deadline is the caller's -----------------------------------------------------


async def _typical_call_time(client: llm.Client, calls: int) -> float:
    """The median time of ``calls`` calls: one stalled by the machine (a busy neighbour, a
    collection) must not stretch every deadline drawn from it, or too few calls are cut."""
    times: list[float] = []
    for _ in range(calls):
        start = trio.current_time()
        await client.invoke_sync(request("openai", "fast"))
        times.append(trio.current_time() - start)
    return statistics.median(times)


RECALIBRATE: Final = 100
"""Rounds of `_cancel_at_random` between two measures of a typical call."""


async def _cancel_at_random(
    client: llm.Client, rng: random.Random, rounds: int, *, typical: float
) -> tuple[int, int]:
    """Run ``rounds`` streams, each under a caller's deadline drawn at random up to 1.5 times
    a ``typical`` call's time; return how many the caller's deadline cut and how many
    completed. Any InvocationTimeout fails the test.

    The typical time is measured again every `RECALIBRATE` rounds (5 uncut calls, counted
    as completed): the machine's load changes while the test runs, and deadlines drawn from
    a stale figure cut too few calls (the load eased) or make every round as slow as the
    busiest moment (it grew)."""
    cancelled = completed = 0
    for number in range(rounds):
        if number and not number % RECALIBRATE:
            typical = await _typical_call_time(client, 5)
            completed += 5
        with trio.move_on_after(rng.uniform(0, typical * 1.5)) as scope:
            async with client.invoke(request("openai", "fast")) as stream:
                async for _chunk in stream:
                    if rng.random() < 0.3:  # sometimes the caller is busy between chunks
                        await trio.lowlevel.checkpoint()
        if scope.cancelled_caught:
            cancelled += 1
        else:
            completed += 1
    return cancelled, completed


async def test_a_callers_own_deadline_is_never_reported_as_our_timeout() -> None:
    scenarios = Scenarios()
    scenarios.add("fast", Scenario(text="x" * 24, chunk_chars=1))
    rng = random.Random(20261202)
    async with client_for(scenarios) as (client, transports):
        # Calibrate the deadlines to this machine: most calls are cut somewhere inside.
        typical = await _typical_call_time(client, 20)
        cancelled, completed = await _cancel_at_random(client, rng, 1000, typical=typical)
        report = await client.usage()
    assert cancelled > 200  # the test exercised the race
    # No timeout anywhere: each cut call is recorded as cancelled (a call cut before it
    # was admitted sent nothing and reserved nothing, so it has no ledger entry).
    assert report.total.error == 0
    assert 0.5 * cancelled < report.total.cancelled <= cancelled
    assert report.total.ok == completed + 20
    assert report.total.calls >= len(transports["openai"].requests)


async def test_a_callers_own_deadline_over_sockets_is_never_our_timeout() -> None:
    scenarios = Scenarios()
    scenarios.add("fast", Scenario(text="y" * 16, chunk_chars=1))
    rng = random.Random(7)
    async with open_fake_server(scenarios) as server:
        config = make_config(
            providers={"openai": {"api_key": KEY, "base_url": server.base_url("openai")}}
        )
        async with llm.open_client(config) as client:
            typical = await _typical_call_time(client, 10)
            cancelled, completed = await _cancel_at_random(client, rng, 400, typical=typical)
            report = await client.usage()
    assert cancelled > 40
    assert report.total.error == 0
    assert 0.5 * cancelled < report.total.cancelled <= cancelled
    assert report.total.ok == completed + 10
    assert report.total.calls >= len(server.requests)


async def test_our_timeout_is_an_invocation_timeout_when_the_caller_has_time_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(text="a" * 40, chunk_chars=1, interval=1))
    async with client_for(scenarios) as (client, _):
        with trio.move_on_after(60):
            with pytest.raises(llm.InvocationTimeout, match="within its timeout") as info:
                await client.invoke_sync(request("openai", "slow"), timeout=5)
        report = await client.usage()
    assert not info.value.retryable
    assert (report.total.error, report.total.cancelled) == (1, 0)


async def test_a_caller_cancelled_during_a_retry_backoff_is_recorded_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("busy", Scenario(failure=HttpError(status=503)), Scenario(text="ok"))
    config = make_config(
        retries={"max_attempts": 3, "initial_delay": 10, "max_delay": 10, "jitter": False}
    )
    async with client_for(scenarios, config) as (client, _):
        with trio.move_on_after(5) as scope:
            await client.invoke_sync(request("openai", "busy"))
        report = await client.usage()
    assert scope.cancelled_caught
    assert (report.total.cancelled, report.total.error, report.total.ok) == (1, 0, 0)


# -- watchdogs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_first_chunk_limit_runs_until_the_first_content(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The stream opens (OpenAI's role chunk, Anthropic's message_start...) and stalls before
    # any content: the first-chunk limit applies, not the shorter idle limit.
    scenarios = Scenarios()
    scenarios.add("late", Scenario(text="never", failure=Stall(after_chunks=0)))
    config = make_config(
        retries={"max_attempts": 1}, timeouts={"first_chunk": 1.2, "idle_chunk": 0.4}
    )
    async with client_for(scenarios, config) as (client, _):
        start = trio.current_time()
        with pytest.raises(llm.InvocationTimeout) as info:
            await client.invoke_sync(request(fmt, "late"))
        elapsed = trio.current_time() - start
    assert 1.2 <= elapsed < 1.3
    assert info.value.details["limit"] == "first_chunk"
    assert "no content within 1.2s (the first_chunk limit)" in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_idle_limit_runs_between_events_once_content_arrived(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios()
    scenarios.add("halts", Scenario(text="abcdef", chunk_chars=2, failure=Stall(after_chunks=1)))
    config = make_config(
        retries={"max_attempts": 1}, timeouts={"first_chunk": 1.2, "idle_chunk": 0.4}
    )
    async with client_for(scenarios, config) as (client, _):
        start = trio.current_time()
        with pytest.raises(llm.InvocationTimeout) as info:
            async with client.invoke(request(fmt, "halts")) as stream:
                async for _ in stream:
                    pass
        elapsed = trio.current_time() - start
    assert 0.4 <= elapsed < 0.5
    assert stream.text == "ab"
    assert info.value.details["limit"] == "idle_chunk"
    assert "no chunk for 0.4s (the idle_chunk limit)" in str(info.value)


# -- retries are counted and governed ----------------------------------------------------------


async def test_every_attempt_takes_a_rate_limit_lease_and_retries_are_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "flaky",
        Scenario(failure=HttpError(status=500)),
        Scenario(failure=HttpError(status=500)),
        Scenario(text="third time"),
    )
    async with client_for(scenarios) as (client, transports):
        response = await client.invoke_sync(request("openai", "flaky"))
        governor = client.runtime.ref("governor", Governor)
        leases = (await governor.call(GovernorStats())).granted
        session = (await client.session_statistics())["openai"]
    assert response.text == "third time"
    assert len(transports["openai"].requests) == 3
    assert leases == 3
    assert client.statistics().retries == 2
    assert (session.requests, session.attempts, session.retries) == (1, 3, 2)


async def test_retries_wait_for_the_rate_limit_like_any_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three requests a minute: a call with two retries and two more calls are five requests,
    # so the last ones wait for the next minute instead of going out at once.
    scenarios = Scenarios()
    scenarios.add(
        "flaky",
        Scenario(failure=HttpError(status=500)),
        Scenario(failure=HttpError(status=500)),
        Scenario(text="done"),
    )
    scenarios.add("plain", Scenario(text="plain"))
    config = make_config(rate_limits={"requests_per_minute": 3, "max_wait": 120})
    async with client_for(scenarios, config) as (client, transports):
        start = trio.current_time()
        await client.invoke_sync(request("openai", "flaky"))
        await client.invoke_sync(request("openai", "plain"))
        await client.invoke_sync(request("openai", "plain"))
        elapsed = trio.current_time() - start
    assert len(transports["openai"].requests) == 5
    assert elapsed >= 20  # the 4th and 5th requests waited for capacity


async def test_the_timeout_covers_retries_and_their_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("down", *[Scenario(failure=HttpError(status=503)) for _ in range(5)])
    config = make_config(
        retries={"max_attempts": 5, "initial_delay": 4, "max_delay": 8, "jitter": False}
    )
    async with client_for(scenarios, config) as (client, transports):
        start = trio.current_time()
        with pytest.raises(llm.InvocationTimeout, match="within its timeout of 10s"):
            await client.invoke_sync(request("openai", "down"), timeout=10)
        assert trio.current_time() - start <= 10
    assert len(transports["openai"].requests) == 2  # a third attempt would start after 12 s


# -- provider resolution -----------------------------------------------------------------------


async def test_an_unknown_provider_prefix_is_not_answered_by_the_mock() -> None:
    async with llm.open_mock_client() as client:
        with pytest.raises(llm.ProviderNotFound) as info:
            await client.invoke_sync(model="foo:bar", messages=[llm.user("hi")])
    assert info.value.provider == "foo"


async def test_the_mock_runs_only_when_configured() -> None:
    config = llm.Config(provider="openai", api_key=KEY)
    async with llm.open_client(config) as client:
        assert client.providers == ["openai"]
        with pytest.raises(llm.ProviderNotFound):
            await client.invoke_sync(model="mock:mock", messages=[llm.user("hi")])


async def test_the_offline_default_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="llm_invocation.client")
    async with llm.open_client(llm.Config()) as client:
        assert client.providers == ["mock"]
        await client.invoke_sync(model="mock", messages=[llm.user("hi")])
        await client.invoke_sync(model="mock", messages=[llm.user("hi again")])
    notes = [r for r in caplog.records if "built-in mock" in r.getMessage()]
    assert len(notes) == 1


# -- the non-streamed path is the same path ----------------------------------------------------


def with_fallback(**overrides: Any) -> llm.Config:
    return make_config(
        providers={
            "openai": {"api_key": KEY},
            "anthropic": {"api_key": KEY, "fallback": ["openai:backup"]},
            "gemini": {"api_key": KEY},
        },
        **overrides,
    )


async def test_a_whole_call_retries_then_falls_back_and_settles_each_candidate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("primary", *[Scenario(failure=HttpError(status=529)) for _ in range(3)])
    scenarios.add("backup", Scenario(text="from the backup"))
    options = llm.ModelOptions(temperature=0.25, max_tokens=7, stop=["END"])
    sent = request("anthropic", "primary", "the question", stream=False, options=options)
    async with client_for(scenarios, with_fallback()) as (client, transports):
        async with client.invoke(sent) as stream:
            response = await stream.aggregate()
        report = await client.usage(group_by=["provider"])
    assert response.text == "from the backup"
    assert response.provider == "openai"
    # The fallback sends the same request under its own model.
    [seen] = transports["openai"].requests
    assert seen.model == "backup"
    assert isinstance(seen.json, dict)
    assert seen.json["messages"] == [{"role": "user", "content": "the question"}]
    assert (seen.json["temperature"], seen.json["max_tokens"], seen.json["stop"]) == (
        0.25,
        7,
        ["END"],
    )
    assert sent.model == "anthropic:primary" and sent.provider is None  # the caller's is kept
    # What the hooks are told stays true once the invocation ended and let go of its run.
    call = stream.call
    assert (call.provider, call.model, call.attempt) == ("openai", "backup", 1)
    assert call.attempted == ["anthropic:primary", "openai:backup"]
    assert len(transports["anthropic"].requests) == 3
    assert client.statistics().retries == 2
    assert client.statistics().fallbacks == 1
    rows = {row.group["provider"]: (row.ok, row.error) for row in report.rows}
    assert rows == {"anthropic": (0, 1), "openai": (1, 0)}


async def test_a_whole_answer_is_delivered_as_chunks_or_aggregated_alike() -> None:
    scenarios = Scenarios()
    scenarios.add("primary", *[Scenario(text="the whole answer") for _ in range(3)])
    async with client_for(scenarios, with_fallback()) as (client, _):
        whole = request("anthropic", "primary", stream=False)
        # Iterated: its chunks come, and the text and usage are known before and after.
        async with client.invoke(whole) as stream:
            assert stream.text == "the whole answer"
            settled = stream.usage
            chunks = [chunk async for chunk in stream]
        assert "".join(chunk.text for chunk in chunks) == "the whole answer"
        assert settled is not None
        assert stream.usage == settled == stream.response.usage
        # Aggregated: the same response, and the text is still there after.
        async with client.invoke(whole) as stream:
            response = await stream.aggregate()
            assert [chunk async for chunk in stream] == []
        assert stream.text == response.text == "the whole answer"
        assert response.usage == settled
        # Read halfway, then aggregated: nothing is counted twice.
        async with client.invoke(whole) as stream:
            first = await stream.__anext__()
            response = await stream.aggregate()
        assert first.text == "the whole answer"
        assert stream.text == response.text == "the whole answer"


async def test_a_fallback_attempt_takes_a_lease_from_the_fallback_providers_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # OpenAI allows one request a minute: once the fallback's attempt took it, the next
    # call to OpenAI is refused by that limit.
    scenarios = Scenarios()
    scenarios.add("primary", *[Scenario(failure=HttpError(status=529)) for _ in range(3)])
    scenarios.add("backup", Scenario(text="from the backup"))
    scenarios.add("plain", Scenario(text="plain"))
    config = make_config(
        rate_limits={"max_wait": 1},
        providers={
            "openai": {"api_key": KEY, "rate_limits": {"requests_per_minute": 1, "max_wait": 1}},
            "anthropic": {"api_key": KEY, "fallback": ["openai:backup"]},
            "gemini": {"api_key": KEY},
        },
    )
    async with client_for(scenarios, config) as (client, transports):
        response = await client.invoke_sync(request("anthropic", "primary", stream=False))
        with pytest.raises(llm.RateLimited) as info:
            await client.invoke_sync(request("openai", "plain"))
        granted = (await client.runtime.ref("governor", Governor).call(GovernorStats())).granted
    assert response.text == "from the backup"
    assert info.value.details["key"] == "p:openai"
    assert len(transports["anthropic"].requests) == 3
    assert len(transports["openai"].requests) == 1  # the fallback's; the next call never left
    assert granted == 4  # one lease per HTTP attempt, the fallback's included


async def test_a_whole_call_is_bounded_by_our_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(text="late", failure=Stall(after_chunks=0, seconds=60)))
    async with client_for(scenarios) as (client, _):
        start = trio.current_time()
        with pytest.raises(llm.InvocationTimeout, match="within its timeout"):
            await client.invoke_sync(request("openai", "slow", stream=False), timeout=5)
        assert trio.current_time() - start == pytest.approx(5, abs=0.01)
        report = await client.usage()
    assert (report.total.error, report.total.cancelled) == (1, 0)


async def test_a_whole_call_cut_by_the_callers_deadline_is_recorded_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(text="late", failure=Stall(after_chunks=0, seconds=60)))
    async with client_for(scenarios) as (client, _):
        with trio.move_on_after(5) as scope:
            await client.invoke_sync(request("openai", "slow", stream=False), timeout=5)
        report = await client.usage()
    assert scope.cancelled_caught
    assert (report.total.error, report.total.cancelled) == (0, 1)


async def test_a_rate_limit_refusal_falls_back_before_anything_is_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One request a minute for Anthropic: the second call is refused by the governor (after
    # its max_wait) and the fallback serves it; nothing more reaches Anthropic.
    scenarios = Scenarios()
    scenarios.add("primary", Scenario(text="from the primary"))
    scenarios.add("backup", Scenario(text="from the backup"))
    config = make_config(
        rate_limits={"max_wait": 1},
        providers={
            "openai": {"api_key": KEY},
            "anthropic": {
                "api_key": KEY,
                "fallback": ["openai:backup"],
                "rate_limits": {"requests_per_minute": 1},
            },
            "gemini": {"api_key": KEY},
        },
    )
    async with client_for(scenarios, config) as (client, transports):
        first = await client.invoke_sync(request("anthropic", "primary", stream=False))
        second = await client.invoke_sync(request("anthropic", "primary"))
    assert (first.text, second.text) == ("from the primary", "from the backup")
    assert len(transports["anthropic"].requests) == 1
    assert client.statistics().fallbacks == 1


async def test_a_budget_refusal_does_not_fall_back() -> None:
    scenarios = Scenarios()
    scenarios.add("primary", Scenario(text="never"))
    config = with_fallback(cost_control={"max_cost_per_request": 0.000001})
    async with client_for(scenarios, config) as (client, transports):
        with pytest.raises(llm.CostExceeded):
            await client.invoke_sync(
                llm.Request(
                    model="anthropic:claude-sonnet-4-5",
                    messages=[llm.user("hello " * 2000)],
                    stream=False,
                )
            )
    assert not transports["anthropic"].requests
    assert not transports["openai"].requests
