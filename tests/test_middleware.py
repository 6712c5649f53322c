"""Middleware: a client's hooks around every invocation and every HTTP attempt.

Hooks run like onion layers, may change or veto a request (recorded like any refusal,
nothing sent), see each attempt of retries and fallbacks and every turn of the tool loop,
and can never crash an actor or leave a reservation or a lease behind, cancelled or not.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.actors.accountant import Accountant, AccountantStats
from llm_invocation.actors.governor import Governor, GovernorStats
from llm_invocation.invocation._middleware import MiddlewareChain
from llm_invocation.testing import (
    HttpError,
    MockTransport,
    Scenario,
    Scenarios,
    ScriptedToolCall,
)

FORMATS: Final = ("openai", "anthropic", "gemini")
KEY: Final = "sk-test-MIDDLEWARE-0123456789abcdef"
WHEN: Final = datetime(2025, 1, 2, tzinfo=UTC)
INVALID: Final = llm.InvalidRequest.code.value
RATE_LIMITED: Final = llm.RateLimited.code.value
FAILED: Final = llm.ProviderError.code.value
HOOKS: Final = (
    "before_request",
    "before_attempt",
    "after_attempt",
    "on_chunk",
    "after_response",
    "on_error",
)


def make_config(**overrides: Any) -> llm.Config:
    """Explicit limits (leases and reservations are tracked, so a leak shows), a budget,
    quick retries without jitter, and a key for each provider."""
    settings: dict[str, Any] = {
        "provider": "openai",
        "timeout": 30,
        "retries": {"max_attempts": 3, "initial_delay": 0.1, "max_delay": 1, "jitter": False},
        "rate_limits": {
            "requests_per_minute": 100_000,
            "tokens_per_minute": None,
            "concurrent_calls": 1000,
            "max_wait": 5,
        },
        "cost_control": {
            "max_cost_per_request": None,
            "max_budget": 1000,
            "unknown_price": "allow",
        },
        "providers": {fmt: {"api_key": KEY} for fmt in FORMATS},
    }
    settings.update(overrides)
    return llm.Config.from_dict(settings)


@asynccontextmanager
async def client_for(
    scenarios: Scenarios, config: llm.Config | None = None
) -> AsyncGenerator[tuple[llm.Client, dict[str, MockTransport]]]:
    transports = {name: MockTransport(scenarios, format=name) for name in FORMATS}
    factories = {name: (lambda t=t: t) for name, t in transports.items()}
    async with llm.open_client(config or make_config(), transports=factories) as client:
        yield client, transports


def ask(model: str = "openai:m", text: str = "hello there", **kw: Any) -> llm.Request:
    return llm.Request(model=model, messages=[llm.user(text)], **kw)


async def nothing_held(client: llm.Client) -> None:
    """No rate-limit lease and no budget reservation is left."""
    governor = await client.runtime.ref("governor", Governor).call(GovernorStats())
    accountant = await client.runtime.ref("accountant", Accountant).call(AccountantStats())
    assert (governor.active, governor.waiting) == (0, 0)
    assert accountant.held == 0


async def ledger(client: llm.Client) -> dict[tuple[str, str | None], int]:
    """Ledger calls by (status, error code)."""
    report = await client.usage(group_by=["error_code"])
    out: dict[tuple[str, str | None], int] = {}
    for row in report.rows:
        code = row.group.get("error_code")
        for status in ("ok", "error", "cancelled"):
            count = getattr(row, status)
            if count:
                out[status, code] = out.get((status, code), 0) + count
    return out


class Recorder(llm.Middleware):
    """Records every hook it sees in a shared list, as (name, hook, detail)."""

    def __init__(self, name: str, events: list[tuple[str, str, Any]]) -> None:
        self._name = name
        self.events = events

    @property
    def name(self) -> str:
        return self._name

    async def before_request(self, call: llm.CallInfo, request: llm.Request) -> None:
        self.events.append((self._name, "before_request", call.step))

    async def before_attempt(self, call: llm.CallInfo) -> None:
        self.events.append((self._name, "before_attempt", (call.provider, call.attempt)))

    async def after_attempt(self, call: llm.CallInfo, error: llm.LLMError | None) -> None:
        self.events.append((self._name, "after_attempt", error))

    async def on_chunk(self, call: llm.CallInfo, chunk: llm.StreamChunk) -> None:
        self.events.append((self._name, "on_chunk", chunk))

    async def after_response(self, call: llm.CallInfo, response: llm.Response) -> None:
        self.events.append((self._name, "after_response", response))

    async def on_error(self, call: llm.CallInfo, error: llm.LLMError) -> None:
        self.events.append((self._name, "on_error", error))


def hooks_of(events: list[tuple[str, str, Any]], hook: str) -> list[tuple[str, Any]]:
    return [(name, detail) for name, kind, detail in events if kind == hook]


# -- order ---------------------------------------------------------------------------------------


async def test_hooks_run_like_onion_layers() -> None:
    events: list[tuple[str, str, Any]] = []
    scenarios = Scenarios(Scenario(text="abcdef", chunk_chars=2))
    async with client_for(scenarios) as (client, _):
        client.add_middleware(Recorder("outer", events))
        client.add_middleware(Recorder("inner", events))
        async with client.invoke(ask()) as stream:
            received = [chunk async for chunk in stream]
    names = [name for name, _, _ in events]
    kinds = [kind for _, kind, _ in events]
    assert kinds[:4] == ["before_request", "before_request", "before_attempt", "before_attempt"]
    assert names[:4] == ["outer", "inner", "outer", "inner"]
    chunk_events = hooks_of(events, "on_chunk")
    assert [n for n, _ in chunk_events] == ["inner", "outer"] * len(received)
    assert [c for n, c in chunk_events if n == "outer"] == received  # every chunk, as received
    assert [n for n, _ in hooks_of(events, "after_attempt")] == ["inner", "outer"]
    assert [n for n, _ in hooks_of(events, "after_response")] == ["inner", "outer"]
    assert hooks_of(events, "after_response")[0][1] is stream.response
    assert kinds[-4:] == ["after_attempt", "after_attempt", "after_response", "after_response"]
    assert client.middleware == tuple(client.middleware)
    assert [m.name for m in client.middleware] == ["outer", "inner"]


def _middleware_with(hooks: frozenset[str], tag: int, seen: list[tuple[int, str]]) -> Any:
    """A middleware overriding just ``hooks``, each recording (tag, hook) in ``seen``."""

    def make(hook: str) -> Any:
        async def method(self: Any, call: Any, *rest: Any) -> None:
            seen.append((tag, hook))

        return method

    namespace = {hook: make(hook) for hook in hooks}
    return type(f"M{tag}", (llm.Middleware,), namespace)()


@given(st.lists(st.frozensets(st.sampled_from(HOOKS)), max_size=6))
def test_before_hooks_run_in_order_and_the_others_in_reverse(
    overridden: list[frozenset[str]],
) -> None:
    seen: list[tuple[int, str]] = []
    chain = MiddlewareChain([_middleware_with(h, i, seen) for i, h in enumerate(overridden)])
    call = llm.CallInfo(ask())
    chunk = llm.StreamChunk(text="x")
    error = llm.ProviderError("failed")

    async def run_every_hook() -> None:
        await chain.before_request(call, call.request)
        await chain.before_attempt(call)
        await chain.after_attempt(call, None)
        await chain.on_chunk(call, chunk)
        response = llm.Response(id="r", provider="p", model="m", created=WHEN, choices=[])
        await chain.after_response(call, response)
        await chain.on_error(call, error)

    trio.run(run_every_hook)
    for hook in HOOKS:
        having = [i for i, hooks in enumerate(overridden) if hook in hooks]
        expected = having if hook.startswith("before") else list(reversed(having))
        assert [tag for tag, kind in seen if kind == hook] == expected
    # a hook nobody overrides is never run (no await per chunk without on_chunk hooks)
    assert bool(chain.on_chunk_hooks) == any("on_chunk" in hooks for hooks in overridden)


# -- changing and vetoing a request --------------------------------------------------------------


class Rewrite(llm.Middleware):
    def __init__(self, **changes: Any) -> None:
        self.changes = changes

    async def before_request(self, call: llm.CallInfo, request: llm.Request) -> llm.Request:
        messages = [llm.system("Answer in French."), *request.messages]
        changed = msgspec.structs.replace(request, messages=messages, **self.changes)
        return changed.with_options(temperature=0.25)


async def test_before_request_may_change_the_request_that_is_sent() -> None:
    async with client_for(Scenarios(Scenario(text="bonjour"))) as (client, transports):
        client.add_middleware(Rewrite())
        response = await client.invoke_sync(ask())
    body = transports["openai"].requests[0].json
    assert body["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert body["temperature"] == 0.25
    assert response.text == "bonjour"


async def test_a_request_moved_to_another_model_goes_to_its_provider() -> None:
    async with client_for(Scenarios(Scenario(text="from anthropic"))) as (client, transports):
        client.add_middleware(Rewrite(model="anthropic:claude-sonnet-4-5"))
        async with client.invoke(ask()) as stream:
            await stream.aggregate()
    assert not transports["openai"].requests
    (sent,) = transports["anthropic"].requests
    assert sent.json is not None and sent.json["model"] == "claude-sonnet-4-5"
    assert stream.provider == "anthropic"
    assert stream.response.text == "from anthropic"


class Gate(llm.Middleware):
    async def before_request(self, call: llm.CallInfo, request: llm.Request) -> None:
        if "forbidden" in request.messages[-1].text:
            raise llm.InvalidRequest("this topic is not allowed here")


async def test_a_veto_reaches_the_caller_is_recorded_and_sends_nothing() -> None:
    events: list[tuple[str, str, Any]] = []
    async with client_for(Scenarios(Scenario(text="ok"))) as (client, transports):
        client.add_middleware(Recorder("audit", events))
        client.add_middleware(Gate())
        with pytest.raises(llm.InvalidRequest, match="not allowed") as info:
            async with client.invoke(ask(text="something forbidden")) as stream:
                async for _ in stream:
                    pass
        allowed = await client.invoke_sync(ask())
        await nothing_held(client)
        rows = await ledger(client)
    assert info.value.details["middleware"] == "Gate"
    assert len(transports["openai"].requests) == 1  # only the allowed call was sent
    assert allowed.text == "ok"
    assert rows == {("error", INVALID): 1, ("ok", None): 1}
    (seen,) = hooks_of(events, "on_error")
    assert seen == ("audit", info.value)
    assert not hooks_of(events, "before_attempt")[1:]  # only the allowed call was attempted


class RefuseAttempts(llm.Middleware):
    def __init__(self, error: llm.LLMError, provider: str) -> None:
        self.error = error
        self.provider = provider

    async def before_attempt(self, call: llm.CallInfo) -> None:
        if call.provider == self.provider:
            raise self.error


def with_fallback(**overrides: Any) -> llm.Config:
    providers: dict[str, dict[str, Any]] = {fmt: {"api_key": KEY} for fmt in FORMATS}
    providers["anthropic"] = {"api_key": KEY, "fallback": ["openai:backup"]}
    return make_config(providers=providers, **overrides)


async def test_a_refused_attempt_falls_back_like_a_rate_limit_refusal() -> None:
    scenarios = Scenarios()
    scenarios.add("backup", Scenario(text="from the backup"))
    async with client_for(scenarios, with_fallback()) as (client, transports):
        client.add_middleware(RefuseAttempts(llm.RateLimited("not now"), "anthropic"))
        response = await client.invoke_sync(ask("anthropic:primary"))
        await nothing_held(client)
        rows = await ledger(client)
    assert response.text == "from the backup"
    assert not transports["anthropic"].requests
    assert rows == {("error", RATE_LIMITED): 1, ("ok", None): 1}


async def test_a_refused_attempt_with_no_fallback_fails_and_gives_its_lease_back() -> None:
    async with client_for(Scenarios(Scenario(text="never"))) as (client, transports):
        client.add_middleware(RefuseAttempts(llm.InvalidRequest("attempts are off"), "openai"))
        with pytest.raises(llm.InvalidRequest, match="attempts are off"):
            await client.invoke_sync(ask())
        await nothing_held(client)
        rows = await ledger(client)
    assert not transports["openai"].requests
    assert rows == {("error", INVALID): 1}


# -- containment ---------------------------------------------------------------------------------


class Broken(llm.Middleware):
    """Raises a plain exception (with a key-shaped string in it) from one hook."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def _maybe_fail(self, hook: str) -> None:
        if hook == self.hook:
            raise RuntimeError(f"bug in {hook} near {KEY}")

    async def before_request(self, call: llm.CallInfo, request: llm.Request) -> None:
        self._maybe_fail("before_request")

    async def before_attempt(self, call: llm.CallInfo) -> None:
        self._maybe_fail("before_attempt")

    async def after_attempt(self, call: llm.CallInfo, error: llm.LLMError | None) -> None:
        self._maybe_fail("after_attempt")

    async def on_chunk(self, call: llm.CallInfo, chunk: llm.StreamChunk) -> None:
        self._maybe_fail("on_chunk")

    async def after_response(self, call: llm.CallInfo, response: llm.Response) -> None:
        self._maybe_fail("after_response")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    "hook", ["before_request", "before_attempt", "after_attempt", "on_chunk", "after_response"]
)
async def test_a_hook_that_raises_is_a_typed_error_for_that_call_only(
    hook: str, stream: bool
) -> None:
    scenarios = Scenarios(Scenario(text="abcdef", chunk_chars=2))
    async with client_for(scenarios) as (client, _):
        broken = Broken(hook)
        client.add_middleware(broken)
        with pytest.raises(llm.ProviderError) as info:
            await client.invoke_sync(ask(stream=stream))
        client.remove_middleware(broken)
        after = await client.invoke_sync(ask(stream=stream))  # the client lives on
        await nothing_held(client)
        rows = await ledger(client)
    error = info.value
    assert error.details["reason"] == "middleware_failed"
    assert (error.details["middleware"], error.details["hook"]) == ("Broken", hook)
    assert isinstance(error.__cause__, RuntimeError)
    assert KEY not in str(error) and KEY not in repr(error)
    assert after.text == "abcdef"
    # The failed call is recorded once: as an error, or as ok when it had already been
    # settled (its answer was paid for) before the hook failed.
    settled_first = hook in ("after_attempt", "after_response") or (
        hook == "on_chunk" and not stream  # a whole answer is settled when it arrives
    )
    expected_first = ("ok", None) if settled_first else ("error", FAILED)
    assert sum(rows.values()) == 2
    assert rows[expected_first] >= 1


async def test_a_failing_on_error_hook_is_logged_and_the_callers_error_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Noisy(llm.Middleware):
        async def on_error(self, call: llm.CallInfo, error: llm.LLMError) -> None:
            raise ValueError(f"cannot report {KEY}")

    async with client_for(Scenarios(Scenario(text="never"))) as (client, _):
        client.add_middleware(Noisy())
        client.add_middleware(Gate())
        with pytest.raises(llm.InvalidRequest, match="not allowed"):
            await client.invoke_sync(ask(text="forbidden"))
    (record,) = [r for r in caplog.records if "on_error" in r.getMessage()]
    assert "Noisy" in record.getMessage()
    assert KEY not in record.getMessage()


async def test_before_request_returning_something_else_is_a_typed_error() -> None:
    class Wrong(llm.Middleware):
        async def before_request(self, call: llm.CallInfo, request: llm.Request) -> Any:
            return "not a request"

    async with client_for(Scenarios(Scenario(text="never"))) as (client, transports):
        client.add_middleware(Wrong())
        with pytest.raises(llm.ProviderError) as info:
            await client.invoke_sync(ask())
    assert info.value.details["hook"] == "before_request"
    assert not transports["openai"].requests


class Hang(llm.Middleware):
    """Waits forever in one hook."""

    def __init__(self, hook: str) -> None:
        self.hook = hook
        self.entered = False

    async def _maybe_hang(self, hook: str) -> None:
        if hook == self.hook:
            self.entered = True
            await trio.sleep_forever()

    async def before_request(self, call: llm.CallInfo, request: llm.Request) -> None:
        await self._maybe_hang("before_request")

    async def before_attempt(self, call: llm.CallInfo) -> None:
        await self._maybe_hang("before_attempt")

    async def after_attempt(self, call: llm.CallInfo, error: llm.LLMError | None) -> None:
        await self._maybe_hang("after_attempt")

    async def on_chunk(self, call: llm.CallInfo, chunk: llm.StreamChunk) -> None:
        await self._maybe_hang("on_chunk")

    async def after_response(self, call: llm.CallInfo, response: llm.Response) -> None:
        await self._maybe_hang("after_response")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    "hook", ["before_request", "before_attempt", "after_attempt", "on_chunk", "after_response"]
)
async def test_a_caller_cancelled_inside_a_hook_leaves_nothing_behind(
    hook: str, stream: bool, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios(Scenario(text="abcdef", chunk_chars=2))
    async with client_for(scenarios) as (client, _):
        hang = Hang(hook)
        client.add_middleware(hang)
        with trio.move_on_after(10) as scope:
            async with client.invoke(ask(stream=stream)) as invocation:
                async for _ in invocation:
                    pass
        await nothing_held(client)
        rows = await ledger(client)
    assert hang.entered and scope.cancelled_caught
    assert not any(status == "error" for status, _ in rows)
    assert sum(rows.values()) <= 1


# -- retries, fallbacks and the tool loop --------------------------------------------------------


async def test_attempt_hooks_see_every_attempt_of_a_retried_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[tuple[str, str, Any]] = []
    scenarios = Scenarios()
    scenarios.add(
        "flaky",
        Scenario(failure=HttpError(status=500)),
        Scenario(failure=HttpError(status=500)),
        Scenario(text="third time"),
    )
    async with client_for(scenarios) as (client, transports):
        client.add_middleware(Recorder("r", events))
        response = await client.invoke_sync(ask("openai:flaky"))
    assert response.text == "third time"
    assert len(transports["openai"].requests) == 3
    assert [d for _, d in hooks_of(events, "before_attempt")] == [
        ("openai", 1),
        ("openai", 2),
        ("openai", 3),
    ]
    errors = [d for _, d in hooks_of(events, "after_attempt")]
    assert [type(e).__name__ for e in errors] == ["ProviderError", "ProviderError", "NoneType"]
    assert len(hooks_of(events, "before_request")) == 1
    assert len(hooks_of(events, "after_response")) == 1


async def test_attempt_hooks_follow_a_fallback_to_its_provider(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[tuple[str, str, Any]] = []
    scenarios = Scenarios()
    scenarios.add("primary", *[Scenario(failure=HttpError(status=529)) for _ in range(3)])
    scenarios.add("backup", Scenario(text="from the backup"))
    async with client_for(scenarios, with_fallback()) as (client, _):
        client.add_middleware(Recorder("r", events))
        async with client.invoke(ask("anthropic:primary", stream=False)) as stream:
            await stream.aggregate()
    attempts = [d for _, d in hooks_of(events, "before_attempt")]
    assert attempts == [("anthropic", 1), ("anthropic", 2), ("anthropic", 3), ("openai", 1)]
    assert stream.call.attempted == ["anthropic:primary", "openai:backup"]
    assert stream.response.text == "from the backup"


@llm.tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_hooks_see_every_model_turn_of_the_tool_loop() -> None:
    seen: list[tuple[int | None, int]] = []

    class Turns(llm.Middleware):
        async def before_request(self, call: llm.CallInfo, request: llm.Request) -> None:
            seen.append((call.step, len(request.messages)))

    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(tool_calls=[ScriptedToolCall(name="add", arguments={"a": 2, "b": 3})]),
        Scenario(text="5"),
    )
    events: list[tuple[str, str, Any]] = []
    async with client_for(scenarios) as (client, _):
        client.register_tool(add)
        client.add_middleware(Turns())
        client.add_middleware(Recorder("r", events))
        response = await client.invoke_sync(ask(), tool_mode="auto")
    assert response.text == "5"
    assert seen == [(0, 1), (1, 3)]  # the second turn carries the call and its result
    assert len(hooks_of(events, "after_response")) == 2


async def test_a_cached_answer_runs_the_request_and_response_hooks_but_no_attempt() -> None:
    events: list[tuple[str, str, Any]] = []
    cached: list[bool] = []

    class Cached(llm.Middleware):
        async def after_response(self, call: llm.CallInfo, response: llm.Response) -> None:
            cached.append(call.cached)

    async with client_for(Scenarios(Scenario(text="once"))) as (client, transports):
        await client.invoke_sync(ask(cache=True))
        client.add_middleware(Recorder("r", events))
        client.add_middleware(Cached())
        response = await client.invoke_sync(ask(cache=True))
    assert response.text == "once"
    assert len(transports["openai"].requests) == 1
    assert cached == [True]
    assert [k for _, k, _ in events] == ["before_request", "on_chunk", "after_response"]


async def test_after_response_may_fail_a_call_that_was_paid_for() -> None:
    events: list[tuple[str, str, Any]] = []

    class Check(llm.Middleware):
        async def after_response(self, call: llm.CallInfo, response: llm.Response) -> None:
            if "secret" in response.text:
                raise llm.InvalidRequest("the answer failed a policy check")

    async with client_for(Scenarios(Scenario(text="a secret"))) as (client, _):
        client.add_middleware(Recorder("r", events))
        client.add_middleware(Check())
        async with client.invoke(ask()) as stream:
            with pytest.raises(llm.InvalidRequest, match="policy"):
                async for _ in stream:
                    pass
        with pytest.raises(llm.InvalidRequest, match="policy"):
            stream.response  # noqa: B018 - the property raises the call's error
        await nothing_held(client)
        rows = await ledger(client)
    assert rows == {("ok", None): 1}  # the answer came and was paid for
    assert len(hooks_of(events, "on_error")) == 1


# -- registration --------------------------------------------------------------------------------


async def test_middleware_must_be_a_middleware_added_once() -> None:
    async with client_for(Scenarios(Scenario(text="ok"))) as (client, _):
        gate = Gate()
        client.add_middleware(gate)
        with pytest.raises(ValueError, match="added already"):
            client.add_middleware(gate)
        with pytest.raises(TypeError):
            client.add_middleware(object())  # type: ignore[arg-type]
        client.remove_middleware(gate)
        with pytest.raises(ValueError, match="not added"):
            client.remove_middleware(gate)
        assert client.middleware == ()


async def test_middleware_given_to_open_client_runs_outermost_first() -> None:
    events: list[tuple[str, str, Any]] = []
    scenarios = Scenarios(Scenario(text="ok"))
    transport = MockTransport(scenarios, format="openai")
    middleware = [Recorder("outer", events), Recorder("inner", events)]
    async with llm.open_client(
        make_config(), transports={"openai": lambda: transport}, middleware=middleware
    ) as client:
        assert client.middleware == tuple(middleware)
        await client.invoke_sync(ask())
    assert [n for n, _ in hooks_of(events, "before_request")] == ["outer", "inner"]
    assert [n for n, _ in hooks_of(events, "after_response")] == ["inner", "outer"]


async def test_open_client_refuses_what_is_not_middleware() -> None:
    gate = Gate()
    with pytest.raises(TypeError):
        async with llm.open_client(make_config(), middleware=[object()]):  # type: ignore[list-item]
            pass
    with pytest.raises(ValueError, match="twice"):
        async with llm.open_client(make_config(), middleware=[gate, gate]):
            pass


async def test_an_invocation_keeps_the_middleware_it_started_with() -> None:
    events: list[tuple[str, str, Any]] = []
    async with client_for(Scenarios(Scenario(text="abcd", chunk_chars=1))) as (client, _):
        recorder = Recorder("r", events)
        client.add_middleware(recorder)
        async with client.invoke(ask()) as stream:
            client.remove_middleware(recorder)
            await stream.aggregate()
        await client.invoke_sync(ask())
    assert len(hooks_of(events, "after_response")) == 1
    assert len(hooks_of(events, "before_request")) == 1
