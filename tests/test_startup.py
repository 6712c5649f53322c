"""Start-up: data that is costly to load (the price table, the tokenizers) is loaded once per
process, in a worker thread, shared by every client and every concurrent first use, and
opening a client never waits for it.

The loads here are real `SharedLoad` objects around loaders that block on a gate the test
opens, so what happens while a load is in progress is observed without any sleep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation import pricing
from llm_invocation.errors import ConfigurationError
from llm_invocation.runtime._shared_load import SharedLoad
from llm_invocation.testing import Scenarios
from llm_invocation.tokens import _encodings as _tokens_encodings

from .mock_clients import client_for, request

log = logging.getLogger("tests.startup")


class Gated:
    """A loader that blocks until the test opens its gate; it counts its calls and can be
    told to fail."""

    def __init__(self, value: Any = "loaded", *, failures: int = 0) -> None:
        self.value = value
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.failures = failures

    def __call__(self) -> Any:
        self.calls += 1
        self.entered.set()
        self.gate.wait(20)  # the test opens it; the bound only keeps a broken test finite
        if self.failures:
            self.failures -= 1
            raise ConfigurationError("the data is broken")
        return self.value


@pytest.fixture
def gated_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gated]:
    """The price table, loaded by a gated loader of the real table, from scratch."""
    real = pricing._load_snapshot  # pyright: ignore[reportPrivateUsage]
    loader = Gated()

    def load() -> Any:
        loader()
        return real()

    shared = SharedLoad(load, name="the price table", logger=log)
    monkeypatch.setattr(pricing, "_SNAPSHOT", shared)
    try:
        yield loader
    finally:
        loader.gate.set()  # never leave a worker thread blocked


def _shared(loader: Callable[[], Any]) -> SharedLoad[Any]:
    return SharedLoad(loader, name="test data", logger=log)


async def test_concurrent_first_uses_share_one_load() -> None:
    loader = Gated("value")
    shared = _shared(loader)
    results: list[Any] = []

    async def use() -> None:
        results.append(await shared.wait())

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(use)
        await trio.testing.wait_all_tasks_blocked()
        assert shared.loading and not shared.loaded
        loader.gate.set()
    assert results == ["value"] * 20
    assert loader.calls == 1
    assert shared.loads == 1


async def test_a_loaded_value_is_not_loaded_again() -> None:
    loader = Gated("value")
    loader.gate.set()
    shared = _shared(loader)
    assert await shared.wait() == "value"
    assert await shared.wait() == "value"
    assert shared.get_blocking() == "value"
    assert loader.calls == 1


async def test_a_cancelled_first_use_leaves_the_load_to_the_others() -> None:
    loader = Gated("value")
    shared = _shared(loader)
    with trio.move_on_after(0) as scope:
        # move_on_after(0): cancelled at the first checkpoint, the load already started
        await shared.wait()
    assert scope.cancelled_caught
    assert shared.loading
    loader.gate.set()
    assert await shared.wait() == "value"
    assert loader.calls == 1


async def test_a_failed_load_is_a_typed_error_retried_by_the_next_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loader = Gated("value", failures=2)
    loader.gate.set()
    shared = _shared(loader)
    with caplog.at_level(logging.DEBUG, logger="tests.startup"):
        with pytest.raises(ConfigurationError, match="broken") as first:
            await shared.wait()
        with pytest.raises(ConfigurationError, match="broken"):
            shared.get_blocking()
        assert await shared.wait() == "value"
    assert isinstance(first.value.__cause__, ConfigurationError)  # the load's own error
    assert loader.calls == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # two failures in a row: logged once
    assert "test data" in errors[0].getMessage()


def test_a_blocking_use_waits_for_the_load_in_progress() -> None:
    loader = Gated("value")
    shared = _shared(loader)
    shared.start()
    assert loader.entered.wait(20)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(shared.get_blocking()))
    waiter.start()
    loader.gate.set()
    waiter.join(20)
    assert got == ["value"]
    assert loader.calls == 1


async def test_open_client_returns_while_the_price_table_is_still_loading(
    gated_table: Gated,
) -> None:
    async with client_for(Scenarios()) as (client, _):
        # The gate is closed: the table's load started in a worker thread and waits.
        assert await trio.to_thread.run_sync(gated_table.entered.wait, 20)
        assert pricing._SNAPSHOT.loading  # pyright: ignore[reportPrivateUsage]
        assert not pricing._SNAPSHOT.loaded  # pyright: ignore[reportPrivateUsage]
        async with trio.open_nursery() as nursery:
            replies: list[llm.Response] = []

            async def call() -> None:
                replies.append(await client.invoke_sync(request("openai", "gpt-4o-mini")))

            for _ in range(3):
                nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            assert not replies  # the calls that price gpt-4o-mini wait for the table
            gated_table.gate.set()
        assert len(replies) == 3
        assert all(r.usage.cost is not None for r in replies)
    assert gated_table.calls == 1


async def test_two_clients_share_one_load_of_the_price_table(gated_table: Gated) -> None:
    gated_table.gate.set()
    async with client_for(Scenarios()) as (first, _), client_for(Scenarios()) as (second, _):
        one = await first.invoke_sync(request("openai", "gpt-4o-mini"))
        two = await second.invoke_sync(request("openai", "gpt-4o-mini"))
    assert one.usage.cost is not None and one.usage.cost == two.usage.cost
    assert gated_table.calls == 1
    assert pricing._SNAPSHOT.loads == 1  # pyright: ignore[reportPrivateUsage]


async def test_a_failed_price_table_fails_the_calls_waiting_for_it_and_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loader = Gated(failures=1)
    real = pricing._load_snapshot  # pyright: ignore[reportPrivateUsage]

    def load() -> Any:
        loader()
        return real()

    monkeypatch.setattr(pricing, "_SNAPSHOT", _shared(load))
    failed: list[BaseException] = []
    try:
        async with client_for(Scenarios()) as (client, _):

            async def call() -> None:
                try:
                    await client.invoke_sync(request("openai", "gpt-4o-mini"))
                except ConfigurationError as exc:
                    failed.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
                loader.gate.set()  # the load the client started at open fails
            reply = await client.invoke_sync(request("openai", "gpt-4o-mini"))
    finally:
        loader.gate.set()
    assert len(failed) == 1 and "broken" in str(failed[0])
    assert reply.usage.cost is not None  # the next use loaded it
    assert loader.calls == 2


def _loads_started() -> list[int]:
    encodings = _tokens_encodings._LOADS.values()  # pyright: ignore[reportPrivateUsage]
    table = pricing._SNAPSHOT  # pyright: ignore[reportPrivateUsage]
    return [table.loads, *(load.loads for load in encodings)]


async def test_opening_a_mock_client_starts_no_load() -> None:
    before = _loads_started()
    async with llm.open_mock_client():
        assert _loads_started() == before
