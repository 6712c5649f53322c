"""Streams: items, backpressure, overrun policies, errors and abandonment."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.runtime import (
    ActorCrashed,
    ActorDead,
    ChildSpec,
    ReplyError,
    StreamOverrun,
    SupervisorSpec,
    UsageError,
    open_runtime,
)

from .runtime_actors import Count, Counter, Forever, Get, Journal


def one(journal: Journal) -> SupervisorSpec:
    return SupervisorSpec(children=[ChildSpec.actor("counter", lambda: Counter(journal))])


async def test_a_stream_delivers_every_item_in_order_then_ends() -> None:
    async with open_runtime(one(Journal())) as runtime:
        counter = runtime.ref("counter", Counter)
        async with counter.stream(Count(upto=50)) as items:
            received = [item async for item in items]
        assert received == list(range(50))
        assert await counter.call(Get()) == 1


async def test_the_block_policy_makes_the_producer_wait_for_the_consumer() -> None:
    async with open_runtime(one(Journal())) as runtime:
        counter = runtime.ref("counter", Counter)
        async with counter.stream(Count(upto=10), buffer=2, overrun="block") as items:
            await trio.testing.wait_all_tasks_blocked()
            assert items.statistics().current_buffer_used == 2  # producer parked on a full buffer
            received = [item async for item in items]
        assert received == list(range(10))


async def test_the_error_policy_ends_a_stream_whose_consumer_falls_behind() -> None:
    journal = Journal()
    async with open_runtime(one(journal)) as runtime:
        counter = runtime.ref("counter", Counter)
        received: list[int] = []
        async with counter.stream(Forever(), buffer=3, overrun="error") as items:
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(StreamOverrun) as info:
                async for item in items:
                    received.append(item)
        assert received == [0, 1, 2]  # what was buffered before the overrun still arrives
        assert info.value.buffer == 3
        assert journal.cancelled == ["forever at 3"]
        assert await counter.call(Get()) == 1  # the producer was cancelled, not crashed


async def test_leaving_a_stream_early_cancels_its_producer() -> None:
    journal = Journal()
    async with open_runtime(one(journal)) as runtime:
        counter = runtime.ref("counter", Counter)
        async with counter.stream(Forever(), buffer=1) as items:
            async for item in items:
                if item == 5:
                    break
        await trio.testing.wait_all_tasks_blocked()
        assert len(journal.cancelled) == 1
        assert counter.statistics().in_flight == 0
        assert await counter.call(Get()) == 1


async def test_a_cancelled_consumer_cancels_its_producer() -> None:
    journal = Journal()
    async with open_runtime(one(journal)) as runtime:
        counter = runtime.ref("counter", Counter)
        with trio.move_on_after(0.05):
            async with counter.stream(Forever(), buffer=1) as items:
                async for _ in items:
                    await trio.sleep(0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert len(journal.cancelled) == 1


async def test_a_producer_crash_arrives_after_the_items_sent_before_it() -> None:
    async with open_runtime(one(Journal())) as runtime:
        counter = runtime.ref("counter", Counter)
        received: list[int] = []
        with pytest.raises(ActorCrashed) as info:
            async with counter.stream(Count(upto=10, fail_at=4)) as items:
                async for item in items:
                    received.append(item)
        assert received == [0, 1, 2, 3]
        assert str(info.value.__cause__) == "failed at 4"
        assert await counter.call(Get()) == 1  # restarted


async def test_a_reply_error_from_a_producer_ends_the_stream_with_that_error() -> None:
    class Refusing(Counter):
        async def handle(self, msg: Any, ctx: Any) -> Any:
            if isinstance(msg, Count):
                await ctx.sink(msg).send(-1)
                raise ReplyError("no more")
            return await super().handle(msg, ctx)

    spec = SupervisorSpec(children=[ChildSpec.actor("counter", Refusing)])
    async with open_runtime(spec) as runtime:
        counter = runtime.ref("counter", Refusing)
        got: list[int] = []
        with pytest.raises(ReplyError, match="no more"):
            async with counter.stream(Count(upto=3)) as items:
                async for item in items:
                    got.append(item)
        assert got == [-1]
        assert counter.statistics().restarts == 0


async def test_a_stream_to_a_dead_actor_raises_actor_dead() -> None:
    async with open_runtime(one(Journal())) as runtime:
        counter = runtime.ref("counter", Counter)
        await runtime.terminate_child("counter")
        with pytest.raises(ActorDead):
            async with counter.stream(Count(upto=1)):
                pass


async def test_a_bad_overrun_policy_is_a_usage_error() -> None:
    async with open_runtime(one(Journal())) as runtime:
        counter = runtime.ref("counter", Counter)
        with pytest.raises(UsageError):
            async with counter.stream(Count(upto=1), overrun="drop"):  # type: ignore[arg-type]
                pass


async def test_receive_nowait_and_close_on_the_receiver() -> None:
    async with open_runtime(one(Journal())) as runtime:
        counter = runtime.ref("counter", Counter)
        async with counter.stream(Count(upto=2), buffer=4) as items:
            await trio.testing.wait_all_tasks_blocked()
            assert items.receive_nowait() == 0
            assert items.receive_nowait() == 1
            with pytest.raises(trio.EndOfChannel):
                items.receive_nowait()
            await items.aclose()
