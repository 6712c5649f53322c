"""API keys: a 401 sets one key aside for one model family with a short growing backoff and
says so; keys are replaced at run time, or come from a function or a file; no key value
ever shows in an error, a repr or a log line."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation._secrets import Secret
from llm_invocation.actors._keys import (
    FILE_CHECK_INTERVAL,
    KeyBackoff,
    KeyRing,
    checked_keys,
    model_family,
)
from llm_invocation.testing import MockTransport, Scenario, Scenarios

# Not shaped like any provider's key: only the registry of secrets can mask them.
KEYS = [f"vault-token-{name}-7f3a9c2e51" for name in ("alpha", "bravo", "charlie")]
A, B, C = KEYS


# -- the model family --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o-mini", "gpt"),
        ("gpt-5", "gpt"),
        ("o3-mini", "o3"),
        ("claude-sonnet-4-5", "claude"),
        ("models/gemini-2.5-flash", "gemini"),
        ("ft:gpt-4o-mini:acme::B1x2", "gpt"),
        ("llama3:8b", "llama3"),
        ("meta-llama/Llama-3-70b", "llama"),
        ("mock", "mock"),
        ("", ""),
    ],
)
def test_the_model_family_is_the_model_ids_first_word(model: str, family: str) -> None:
    assert model_family(model) == family


@given(st.text(max_size=40))
def test_the_model_family_is_a_prefix_of_the_lower_cased_id_and_never_fails(model: str) -> None:
    family = model_family(model)
    assert family in model.rsplit("/", 1)[-1].lower()


@given(
    initial=st.floats(0, 30),
    maximum=st.floats(0, 300),
    strikes=st.lists(st.integers(1, 200), min_size=2, max_size=5),
)
def test_the_backoff_grows_with_each_rejection_and_stays_under_its_cap(
    initial: float, maximum: float, strikes: list[int]
) -> None:
    backoff = KeyBackoff(initial=initial, maximum=maximum)
    delays = [backoff.delay(n) for n in sorted(strikes)]
    assert delays == sorted(delays)
    assert all(d <= maximum for d in delays)
    assert backoff.delay(1) == min(initial, maximum)


# -- the key ring ------------------------------------------------------------------------------


def ring(*keys: str, **kwargs: Any) -> KeyRing:
    return KeyRing([Secret(k) for k in keys], provider="p", **kwargs)


async def test_a_rejected_key_is_set_aside_for_its_family_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keys = ring(A, B)
    first = await keys.pick("gpt")
    assert first == Secret(A)
    rejection = await keys.reject(first, "gpt")
    assert (rejection.label, rejection.family, rejection.seconds) == ("#0", "gpt", 1.0)
    assert rejection.usable
    assert rejection.next_label == "#1"
    assert await keys.pick("gpt") == Secret(B)
    # Still tried for another family: rotate back to it and pick for "o3".
    assert keys.rotate(Secret(B))
    assert await keys.pick("o3") == Secret(A)
    assert await keys.pick("gpt") == Secret(B)


async def test_a_single_rejected_key_is_tried_again_after_a_growing_capped_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keys = ring(A, backoff=KeyBackoff(initial=1, maximum=4))
    waits: list[float] = []
    for _ in range(4):
        key = await keys.pick("gpt")
        assert key is not None
        rejection = await keys.reject(key, "gpt")
        assert not rejection.usable
        with pytest.raises(llm.AuthenticationError) as info:
            await keys.pick("gpt")
        assert info.value.details["reason"] == "key_set_aside"
        assert info.value.details["keys"] == ["#0"]
        assert info.value.retry_after is not None
        waits.append(info.value.retry_after)
        await trio.sleep(info.value.retry_after)
    assert waits == [1, 2, 4, 4]
    key = await keys.pick("gpt")
    keys.accept(key, "gpt")  # it worked: the next rejection starts again at 1 s
    assert key is not None
    assert (await keys.reject(key, "gpt")).seconds == 1


async def test_replacing_keys_keeps_the_state_of_kept_keys_and_drops_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keys = ring(A, B)
    await keys.reject(Secret(A), "gpt")
    await keys.reject(Secret(B), "gpt")
    keys.replace([Secret(B), Secret(C)])
    assert await keys.pick("gpt") == Secret(C)  # B is still set aside
    keys.replace([Secret(A)])
    assert await keys.pick("gpt") == Secret(A)  # A's set-aside was dropped with it
    assert keys.label(Secret(B)) == "replaced"
    rejection = await keys.reject(Secret(B), "gpt")  # an in-flight call's old key
    assert (rejection.label, rejection.replaced, rejection.seconds) == ("replaced", True, 0)
    assert rejection.usable
    error = rejection.explain(llm.AuthenticationError("no", status=401), "p")
    assert "a replaced API key of p was rejected; it is no longer among its keys" in str(error)
    assert error.retry_after is None


async def test_no_key_and_no_source_means_the_provider_needs_none() -> None:
    assert await KeyRing([]).pick("gpt") is None


async def test_a_key_function_is_called_once_for_concurrent_callers_and_again_on_a_401(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[int] = []
    vault = [A]

    async def fetch() -> list[str]:
        calls.append(1)
        await trio.sleep(0.5)
        return list(vault)

    keys = KeyRing(provider="p", source=fetch)
    picked: list[Secret | None] = []
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(lambda: _append(picked, keys.pick("gpt")))
    assert picked == [Secret(A)] * 20
    assert len(calls) == 1
    vault[:] = [B]
    rejection = await keys.reject(Secret(A), "gpt")
    assert len(calls) == 2
    assert rejection.usable
    assert await keys.pick("gpt") == Secret(B)
    assert keys.statistics().refreshes == 1


async def _append(out: list[Secret | None], pick: Any) -> None:
    out.append(await pick)


async def test_a_sync_key_function_may_return_one_key() -> None:
    keys = KeyRing(provider="p", source=lambda: A)
    assert await keys.pick("x") == Secret(A)


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (None, "gave no key"),
        ([], "gave no key"),
        ([A, ""], "keys[1] is empty"),
        ([A, 7], "keys[1] is not a string"),
        ("two\nlines-" + A, "control character"),
    ],
)
async def test_a_key_function_that_gives_no_usable_key_fails_the_call_typed(
    result: object, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyRing(provider="p", source=lambda: result)  # pyright: ignore[reportArgumentType]
    with pytest.raises(llm.AuthenticationError) as info:
        await keys.pick("x")
    assert problem in info.value.message
    assert info.value.details["reason"] == "key_function"
    assert A not in str(info.value) + repr(info.value) + caplog.text


async def test_a_failing_key_function_is_not_called_again_at_once_and_never_leaks(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    Secret(B)  # a secret this process knows

    def fetch() -> str:
        calls.append(1)
        raise RuntimeError(f"vault refused token {B}")

    keys = KeyRing(provider="p", source=fetch, backoff=KeyBackoff(initial=2, maximum=2))
    for _ in range(3):
        with pytest.raises(llm.AuthenticationError) as info:
            await keys.pick("x")
        shown = str(info.value) + repr(info.value) + str(info.value.__cause__)
        assert B not in shown
        assert B not in repr(info.value.__cause__)
    assert len(calls) == 1
    await trio.sleep(2)
    with pytest.raises(llm.AuthenticationError):
        await keys.pick("x")
    assert len(calls) == 2
    assert B not in caplog.text


async def test_a_hung_key_function_fails_the_call_after_its_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fetch() -> str:
        await trio.sleep_forever()
        raise AssertionError

    with pytest.raises(llm.AuthenticationError, match="did not answer within 10s"):
        await KeyRing(provider="p", source=fetch).pick("x")


# -- keys from a file --------------------------------------------------------------------------


def write_keys(path: Path, *lines: str) -> None:
    """Replace the file at once, as secret managers do (write aside, then rename)."""
    aside = path.with_suffix(".new")
    aside.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(aside, path)


async def test_a_key_file_is_read_again_when_it_changes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys"
    write_keys(path, "# rotated by the vault", "", A, B)
    keys = KeyRing(provider="p", file=str(path))
    assert await keys.pick("x") == Secret(A)
    assert len(keys) == 2
    write_keys(path, C)
    assert await keys.pick("x") == Secret(A)  # looked at once a second
    await trio.sleep(FILE_CHECK_INTERVAL)
    assert await keys.pick("x") == Secret(C)
    assert keys.statistics().refreshes == 1
    path.unlink()  # gone for a moment: the last keys stay, said once
    for _ in range(3):
        await trio.sleep(FILE_CHECK_INTERVAL)
        assert await keys.pick("x") == Secret(C)
    assert caplog.text.count("could not be read") == 1
    assert all(key not in caplog.text for key in KEYS)


async def test_a_401_reads_the_key_file_again_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "keys"
    write_keys(path, A)
    keys = KeyRing(provider="p", file=str(path))
    assert await keys.pick("x") == Secret(A)
    write_keys(path, B)
    rejection = await keys.reject(Secret(A), "x")
    assert (rejection.label, rejection.replaced, rejection.seconds) == ("#0", True, 0)
    assert (rejection.usable, rejection.next_label) == (True, "#0")
    assert await keys.pick("x") == Secret(B)


async def test_an_unreadable_key_file_without_other_keys_fails_the_call(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(llm.AuthenticationError, match="holds no key"):
        await KeyRing(provider="p", file=str(path)).pick("x")


# -- validating keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ([], "the list of keys is empty"),
        ([A, ""], "keys[1] is empty"),
        ([3], "keys[0] is not a string (got int)"),
        ([" " + A], "keys[0] has leading or trailing whitespace"),
        ([A + "\r\nx-injected: 1"], "keys[0] contains a control character"),
        (42, "expected a key, a list of keys or a function"),
    ],
)
def test_keys_are_checked_and_a_problem_never_shows_a_value(keys: Any, problem: str) -> None:
    with pytest.raises(llm.ConfigurationError) as info:
        checked_keys(keys, where="keys")
    assert problem in str(info.value)
    assert A not in str(info.value)


def test_duplicate_keys_are_kept_once_in_order() -> None:
    assert checked_keys([B, A, B], where="keys") == [Secret(B), Secret(A)]
    assert checked_keys(A, where="keys") == [Secret(A)]


# -- a ring under any sequence of events -------------------------------------------------------

_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("reject"), st.integers(0, 2), st.sampled_from(["gpt", "o3"])),
        st.tuples(st.just("accept"), st.integers(0, 2), st.sampled_from(["gpt", "o3"])),
        st.tuples(st.just("sleep"), st.floats(0, 10), st.just("")),
        st.tuples(st.just("replace"), st.integers(1, 7), st.just("")),
        st.tuples(st.just("rotate"), st.integers(0, 2), st.just("")),
    ),
    max_size=40,
)


@settings(deadline=None, max_examples=100)
@given(_EVENTS)
def test_a_ring_always_gives_a_key_not_set_aside_or_says_until_when(
    events: list[tuple[str, Any, str]],
) -> None:
    backoff = KeyBackoff(initial=1, maximum=8)

    async def run() -> None:
        keys = ring(*KEYS, backoff=backoff)
        for kind, value, family in events:
            current = [Secret(k) for k in KEYS]
            if kind == "reject":
                await keys.reject(current[value], family)
            elif kind == "accept":
                keys.accept(current[value], family)
            elif kind == "sleep":
                await trio.sleep(value)
            elif kind == "replace":
                keys.replace([key for i, key in enumerate(current) if value & (1 << i)])
            else:
                keys.rotate(current[value])
            for name in ("gpt", "o3"):
                refused: llm.AuthenticationError | None = None
                key: Secret | None = None
                try:
                    key = await keys.pick(name)
                except llm.AuthenticationError as error:
                    refused = error
                if refused is None:
                    assert key is not None
                    assert keys.label(key).startswith("#")
                else:
                    assert refused.retry_after is not None
                    assert 0 < refused.retry_after <= backoff.maximum
                    assert len(refused.details["keys"]) == len(keys)
                    assert all(k not in str(refused) for k in KEYS)

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))


# -- through a client --------------------------------------------------------------------------

_UNAUTHORIZED = {
    "error": {
        "message": "Incorrect API key provided",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}


class Gate(httpx.AsyncBaseTransport):
    """A provider that answers 401 to revoked keys (for every model, or one family) and
    otherwise like the mock; it records which key (by its index in `KEYS`) each request
    used, for which model."""

    def __init__(self, scenarios: Scenarios) -> None:
        self.inner = MockTransport(scenarios)
        self.revoked: set[str] = set()
        self.revoked_for: dict[str, set[str]] = {}
        self.used: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = json.loads(await request.aread() or b"{}")
        model = str(body.get("model", ""))
        self.used.append((f"#{KEYS.index(key)}" if key in KEYS else "other", model))
        if key in self.revoked or key in self.revoked_for.get(model_family(model), set()):
            return httpx.Response(401, json=_UNAUTHORIZED)
        return await self.inner.handle_async_request(request)


def make_config(keys: list[str] | None = None, **openai: Any) -> llm.Config:
    entry: dict[str, Any] = {"key_backoff": 1, "key_backoff_max": 4, **openai}
    if keys is not None:
        entry["api_keys"] = keys
    return llm.Config.from_dict(
        {
            "provider": "openai",
            "retries": {"max_attempts": 3, "initial_delay": 0.1, "jitter": False},
            "rate_limits": {
                "requests_per_minute": None,
                "tokens_per_minute": None,
                "concurrent_calls": None,
            },
            "cost_control": {
                "max_cost_per_request": None,
                "max_budget": None,
                "unknown_price": "allow",
            },
            "providers": {"openai": entry},
        }
    )


@asynccontextmanager
async def gated_client(
    config: llm.Config, scenarios: Scenarios | None = None, **kwargs: Any
) -> AsyncGenerator[tuple[llm.Client, Gate]]:
    gate = Gate(scenarios or Scenarios(Scenario(text="ok")))
    async with llm.open_client(config, transports={"openai": lambda: gate}, **kwargs) as client:
        yield client, gate


def ask(model: str) -> llm.Request:
    return llm.Request(model=f"openai:{model}", messages=[llm.user("hi")])


def assert_hidden(caplog: pytest.LogCaptureFixture, *shown: object) -> None:
    text = caplog.text + "".join(f"{thing!s}{thing!r}" for thing in shown)
    for key in KEYS:
        assert key not in text


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="llm_invocation")
    return caplog


async def test_a_401_with_one_key_says_which_key_is_set_aside_and_until_when(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with gated_client(make_config([A])) as (client, gate):
        gate.revoked_for["gpt"] = {A}
        with pytest.raises(llm.AuthenticationError) as info:
            await client.invoke_sync(ask("gpt-4o-mini"))
        error = info.value
        assert error.status == 401
        assert "API key #0 of openai was rejected for 'gpt' models" in error.message
        assert "set aside for them for 1s (until " in error.message
        assert error.details["key"] == "#0"
        assert error.details["family"] == "gpt"
        assert error.details["set_aside_seconds"] == 1
        assert error.retry_after == 1
        assert gate.used == [("#0", "gpt-4o-mini")]  # one request: no retry without a spare key
        assert_hidden(caplog, error, error.__cause__, error.details)


async def test_the_key_set_aside_for_one_family_is_still_used_for_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gated_client(make_config([A])) as (client, gate):
        gate.revoked_for["gpt"] = {A}
        with pytest.raises(llm.AuthenticationError):
            await client.invoke_sync(ask("gpt-4o-mini"))
        reply = await client.invoke_sync(ask("o3-mini"))
        assert reply.text == "ok"
        assert gate.used[-1] == ("#0", "o3-mini")


async def test_with_one_key_calls_fail_at_once_until_a_short_backoff_then_try_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gated_client(make_config([A])) as (client, gate):
        gate.revoked.add(A)
        waits: list[float | None] = []
        for _ in range(4):
            with pytest.raises(llm.AuthenticationError):
                await client.invoke_sync(ask("gpt-4o-mini"))
            sent = len(gate.used)
            with pytest.raises(llm.AuthenticationError) as info:
                await client.invoke_sync(ask("gpt-4o-mini"))
            assert len(gate.used) == sent  # refused here, nothing sent
            assert info.value.details["reason"] == "key_set_aside"
            waits.append(info.value.retry_after)
            assert info.value.retry_after is not None
            await trio.sleep(info.value.retry_after)
        assert waits == [1, 2, 4, 4]  # growing, capped by key_backoff_max
        gate.revoked.clear()
        assert (await client.invoke_sync(ask("gpt-4o-mini"))).text == "ok"


async def test_a_401_moves_on_to_the_next_key_as_a_counted_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gated_client(make_config([A, B])) as (client, gate):
        gate.revoked.add(A)
        assert (await client.invoke_sync(ask("gpt-4o-mini"))).text == "ok"
        assert [label for label, _ in gate.used] == ["#0", "#1"]
        assert trio.current_time() < 1  # at once, not after a backoff
        assert client.statistics().retries == 1
        stats = (await client.session_statistics())["openai"]
        assert (stats.keys, stats.keys_set_aside) == (2, 1)


async def test_set_api_keys_replaces_the_keys_for_new_attempts(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with gated_client(make_config([A])) as (client, gate):
        gate.revoked.add(A)
        with pytest.raises(llm.AuthenticationError):
            await client.invoke_sync(ask("gpt-4o-mini"))
        client.set_api_keys("openai", [B])
        assert (await client.invoke_sync(ask("gpt-4o-mini"))).text == "ok"  # no wait
        assert gate.used[-1] == ("#1", "gpt-4o-mini")
        client.set_api_keys("openai", [A])  # back: its set-aside was dropped with it
        with pytest.raises(llm.AuthenticationError) as info:
            await client.invoke_sync(ask("gpt-4o-mini"))
        assert info.value.details["set_aside_seconds"] == 1
        assert gate.used[-1] == ("#0", "gpt-4o-mini")
        assert_hidden(caplog, info.value)


async def test_a_call_in_flight_finishes_with_its_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios(Scenario(text="one two three four", chunk_chars=4, interval=0.5))
    async with gated_client(make_config([A]), scenarios) as (client, gate):
        async with client.invoke(ask("gpt-4o-mini")) as stream:
            pieces: list[str] = []
            async for chunk in stream:
                pieces.append(chunk.text)
                if len(pieces) == 1:
                    client.set_api_keys("openai", [B])
        assert "".join(pieces) == "one two three four"
        await client.invoke_sync(ask("gpt-4o-mini"))
        assert [label for label, _ in gate.used] == ["#0", "#1"]


async def test_set_api_keys_checks_its_arguments_without_showing_them() -> None:
    async with gated_client(make_config([A])) as (client, _):
        with pytest.raises(llm.ConfigurationError, match="the list of keys is empty"):
            client.set_api_keys("openai", [])
        with pytest.raises(llm.ConfigurationError) as info:
            client.set_api_keys("openai", [B, f"{C}\n"])
        assert "keys[1] has leading or trailing whitespace" in str(info.value)
        assert B not in str(info.value) and C not in str(info.value)
        with pytest.raises(llm.ProviderNotFound):
            client.set_api_keys("nope", [B])
        client.set_api_keys("openai", B)  # one key
        assert "vault" not in repr(client.codec("openai"))


async def test_keys_from_a_function_given_at_open_are_refreshed_on_a_401(
    autojump_clock: trio.testing.MockClock,
) -> None:
    vault = [A]
    calls: list[int] = []

    async def fetch() -> list[str]:
        calls.append(1)
        return list(vault)

    config = make_config()  # no key configured: the function gives them
    async with gated_client(config, api_keys={"openai": fetch}) as (client, gate):
        for _ in range(3):
            await client.invoke_sync(ask("gpt-4o-mini"))
        assert len(calls) == 1
        gate.revoked.add(A)
        vault[:] = [B]  # rotated by the secret manager
        assert (await client.invoke_sync(ask("gpt-4o-mini"))).text == "ok"
        assert len(calls) == 2
        assert gate.used[-2:] == [("#0", "gpt-4o-mini"), ("#1", "gpt-4o-mini")]


async def test_set_api_keys_takes_a_function(autojump_clock: trio.testing.MockClock) -> None:
    async with gated_client(make_config([A])) as (client, gate):
        client.set_api_keys("openai", lambda: [C])
        await client.invoke_sync(ask("gpt-4o-mini"))
        assert gate.used == [("#2", "gpt-4o-mini")]


async def test_keys_from_a_file_follow_its_rotation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "openai.keys"
    write_keys(path, A)
    async with gated_client(make_config(api_key_file=str(path))) as (client, gate):
        await client.invoke_sync(ask("gpt-4o-mini"))
        write_keys(path, B)
        gate.revoked.add(A)
        await client.invoke_sync(ask("gpt-4o-mini"))  # a 401, the file read again, a retry
        assert [label for label, _ in gate.used] == ["#0", "#0", "#1"]
        stats = (await client.session_statistics())["openai"]
        assert stats.key_refreshes == 1


async def test_a_provider_whose_keys_come_from_a_file_or_a_function_opens_without_a_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys"
    write_keys(path, A)
    async with gated_client(make_config(api_key_file=str(path))) as (client, _):
        assert client.providers == ["openai"]
    async with gated_client(make_config(), api_keys={"openai": lambda: A}) as (client, _):
        assert client.providers == ["openai"]
    with pytest.raises(llm.ConfigurationError, match="not configured"):
        async with gated_client(make_config([A]), api_keys={"nope": [A]}):
            pass


def test_a_key_file_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(llm.ConfigurationError, match="api_key_file: no such file"):
        make_config(api_key_file=str(tmp_path / "missing"))
    with pytest.raises(llm.ConfigurationError, match="key_backoff_max: must be >="):
        make_config([A], key_backoff=10, key_backoff_max=1)


async def test_a_ring_and_its_statistics_show_no_key() -> None:
    keys = ring(A, B)
    shown = f"{keys!r}{keys.statistics()!r}"
    assert all(key not in shown for key in KEYS)
    assert "2 keys" in shown
