"""Non-streamed attempts the session lends its caller (`BeginOnce`, `OnceAttempt`).

The session counts the attempt, checks, keys and encodes the request at once on the caller's
task; the caller's task then sends it and reads the whole answer with no cancel scope of its
own: the HTTP pool keeps the caller's deadline. The attempt stays a loan of the session's
incarnation: a restart stops it with the runtime's error, a graceful stop lets it finish.
When the session cannot answer at once, `AttemptOnce` does the whole attempt, as before.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation._secrets import Secret
from llm_invocation.actors._keys import KeyRing
from llm_invocation.actors.provider_session import (
    AttemptFailed,
    AttemptOnce,
    BeginOnce,
    OnceAttempt,
    ProviderSession,
    SessionSettings,
    SessionStats,
)
from llm_invocation.http import HttpPool, HttpSettings
from llm_invocation.providers._base import HttpRequest
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.runtime import ActorCrashed, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.testing import FakeServer, Scenario, Scenarios, open_fake_server

from .crashing_session import CrashOnStats

KEY = "sk-test-ONCE-0123456789abcdef"
LATE = Scenario(text="late", ttft=30)  # the answer comes after 30 s


def resolved(model: str) -> llm.Request:
    """A non-streamed request as a session receives it: provider and model resolved."""
    return llm.Request(model=model, provider="openai", messages=[llm.user("hello")], stream=False)


@asynccontextmanager
async def session_over(
    scenarios: Scenarios, *, keys: KeyRing | None = None, codec: OpenAICodec | None = None
) -> AsyncGenerator[tuple[Any, FakeServer]]:
    """The ref of a `CrashOnStats` session for the fake server, in a runtime of its own."""
    CrashOnStats.pools = []
    async with open_fake_server(scenarios) as server:
        codec = codec or OpenAICodec(base_url=server.base_url("openai"))
        settings = SessionSettings(http=HttpSettings(trust_env=False))
        ring = keys if keys is not None else KeyRing([Secret(KEY)], provider="openai")

        def session() -> CrashOnStats:
            return CrashOnStats(codec, keys=ring, settings=settings)

        spec = SupervisorSpec(children=[ChildSpec.actor("session", session)])
        async with open_runtime(spec) as runtime:
            yield runtime.ref("session", CrashOnStats), server


async def crash_during_a_lent_attempt(ref: Any) -> list[BaseException]:
    """Crash the session while a lent attempt waits for its answer; what `run` raised."""
    lent = ref.call_nowait(BeginOnce(request=resolved("m")))
    failures: list[BaseException] = []

    async def run() -> None:
        try:
            await lent.run()
        except ActorCrashed as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ActorCrashed):
            await ref.call(SessionStats())
    return failures


def open_connections(pool: HttpPool) -> int:
    transport = pool._fast  # pyright: ignore[reportPrivateUsage]
    assert transport is not None
    return transport.statistics().connections_open


async def test_a_lent_attempt_answers_as_the_whole_attempt_does() -> None:
    async with session_over(Scenarios(Scenario(text="whole"))) as (ref, _):
        lent = ref.call_nowait(BeginOnce(request=resolved("m")))
        assert isinstance(lent, OnceAttempt)
        response = await lent.run()
        assert response.text == "whole"
        assert (await ref.call(AttemptOnce(request=resolved("m")))).text == "whole"
        with pytest.raises(RuntimeError, match="once"):
            await lent.run()
        # (the second run is a failure of that attempt, given after its verdict was given)


async def test_a_whole_call_over_sockets_opens_no_cancel_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scopes: list[object] = []
    original = trio.CancelScope
    caller = trio.lowlevel.current_task()

    def counting(*args: Any, **kwargs: Any) -> trio.CancelScope:
        scope = original(*args, **kwargs)
        if trio.lowlevel.current_task() is caller:  # (the pool's watchdog has its own)
            scopes.append(scope)
        return scope

    scenarios = Scenarios(Scenario(text="whole"))
    async with open_fake_server(scenarios) as server:
        config = llm.Config.unlimited(
            provider="openai",
            timeout=30,  # a deadline for every attempt: kept by the pool, not by a scope
            providers={"openai": {"api_key": KEY, "base_url": server.base_url("openai")}},
        )
        async with llm.open_client(config) as client:
            request = llm.Request(model="openai:m", messages=[llm.user("hi")], stream=False)
            await client.invoke_sync(request)  # the connection is open, the code paths warm
            monkeypatch.setattr(trio, "CancelScope", counting)
            for _ in range(3):
                assert (await client.invoke_sync(request)).text == "whole"
            monkeypatch.undo()
    assert scopes == []


async def test_a_whole_call_past_its_timeout_is_an_invocation_timeout_and_closes_it() -> None:
    scenarios = Scenarios()
    scenarios.add("late", LATE)
    scenarios.add("quick", Scenario(text="ok"))
    async with open_fake_server(scenarios) as server:
        config = llm.Config.unlimited(
            provider="openai",
            retries={"max_attempts": 1},
            providers={"openai": {"api_key": KEY, "base_url": server.base_url("openai")}},
        )
        async with llm.open_client(config) as client:
            late = llm.Request(model="openai:late", messages=[llm.user("hi")], stream=False)
            with pytest.raises(llm.InvocationTimeout, match="within its timeout"):
                await client.invoke_sync(late, timeout=0.3)
            quick = llm.Request(model="openai:quick", messages=[llm.user("hi")], stream=False)
            assert (await client.invoke_sync(quick)).text == "ok"
            statistics = (await client.session_statistics())["openai"]
            report = await client.usage()
    assert server.statistics().connections_total == 2  # the late one's was not reused
    assert statistics.pool.active == 0
    assert statistics.failures == {}  # our timeout is no provider failure
    assert (report.total.error, report.total.ok) == (1, 1)


async def test_a_lent_attempt_whose_session_restarts_raises_and_its_connection_is_closed() -> None:
    async with session_over(Scenarios(LATE)) as (ref, _):
        failures = await crash_during_a_lent_attempt(ref)
        assert [type(failure) for failure in failures] == [ActorCrashed]
        assert open_connections(CrashOnStats.pools[0]) == 0


async def test_a_graceful_stop_lets_a_lent_attempt_finish() -> None:
    answers: list[str] = []
    async with open_fake_server(Scenarios(Scenario(text="in time", ttft=0.3))) as server:
        codec = OpenAICodec(base_url=server.base_url("openai"))
        settings = SessionSettings(http=HttpSettings(trust_env=False))

        def session() -> ProviderSession:
            return ProviderSession(codec, keys=[Secret(KEY)], settings=settings)

        spec = SupervisorSpec(children=[ChildSpec.actor("session", session, shutdown=10)])
        async with trio.open_nursery() as nursery:
            async with open_runtime(spec) as runtime:
                ref = runtime.ref("session", ProviderSession)
                lent = ref.call_nowait(BeginOnce(request=resolved("m")))

                async def run() -> None:
                    answers.append((await lent.run()).text)

                nursery.start_soon(run)
                await trio.testing.wait_all_tasks_blocked()
            # The runtime closed: its stop waited for the attempt in the caller's hands.
            assert answers == ["in time"]


async def test_a_lent_attempt_through_another_transport_stops_when_its_session_restarts() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    CrashOnStats.pools = []
    codec = OpenAICodec(base_url="http://api.provider.invalid/v1")
    settings = SessionSettings(http=HttpSettings(trust_env=False))

    def session() -> CrashOnStats:
        return CrashOnStats(
            codec,
            keys=[Secret(KEY)],
            settings=settings,
            transport=lambda: httpx.MockTransport(never),
        )

    spec = SupervisorSpec(children=[ChildSpec.actor("session", session)])
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("session", CrashOnStats)
        failures = await crash_during_a_lent_attempt(ref)
        assert [type(failure) for failure in failures] == [ActorCrashed]
        assert CrashOnStats.pools[0].statistics().active == 0


class Unencodable(OpenAICodec):
    def encode(self, request: llm.Request, api_key: str | None) -> HttpRequest:
        raise ValueError("cannot encode this")


async def test_a_failure_before_sending_is_the_attempts_and_sends_nothing() -> None:
    scenarios = Scenarios(Scenario(text="never"))
    async with (
        open_fake_server(scenarios) as server,
        session_over(scenarios, codec=Unencodable(base_url=server.base_url("openai"))) as (ref, _),
    ):
        lent = ref.call_nowait(BeginOnce(request=resolved("m")))
        with pytest.raises(AttemptFailed) as lent_failure:
            await lent.run()
        with pytest.raises(AttemptFailed) as whole_failure:
            await ref.call(AttemptOnce(request=resolved("m")))
    for failure in (lent_failure.value, whole_failure.value):
        assert failure.error.details["reason"] == "encode failed"
        assert not failure.retry
    assert scenarios.calls("m") == 0


async def test_keys_still_to_be_asked_of_their_function_take_the_whole_attempt() -> None:
    asked: list[int] = []

    async def keys() -> list[str]:
        asked.append(1)
        return [KEY]

    ring = KeyRing(provider="openai", source=keys)
    async with session_over(Scenarios(Scenario(text="keyed")), keys=ring) as (ref, _):
        with pytest.raises(trio.WouldBlock):
            ref.call_nowait(BeginOnce(request=resolved("m")))
        assert (await ref.call(AttemptOnce(request=resolved("m")))).text == "keyed"
        # Asked once: from now on the attempt is lent at once.
        lent = ref.call_nowait(BeginOnce(request=resolved("m")))
        assert (await lent.run()).text == "keyed"
    assert asked == [1]
