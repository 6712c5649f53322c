"""`ActorRef.call_nowait` and `ActorRef.cast_nowait`: a message handled at once, on the
caller's task, only when that is what handling it next through the mailbox would be."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.runtime import (
    Actor,
    ActorCrashed,
    ActorRef,
    Call,
    ChildSpec,
    Context,
    Msg,
    ReplyError,
    SupervisorSpec,
    open_runtime,
)


class Add(Call[int], frozen=True, kw_only=True):
    n: int


class Note(Msg, frozen=True, kw_only=True):
    text: str


class Hold(Call[None], frozen=True, kw_only=True):
    """Handled only through the mailbox: waits until the actor's gate opens."""


class Refused(ReplyError):
    pass


Protocol = Add | Note | Hold


class Counter(Actor[Protocol]):
    """Adds at once unless ``n`` is negative (a refusal) or 0 (a bug); notes at once."""

    reply_errors = (Refused,)
    incarnations = 0

    def __init__(self, gate: trio.Event, log: list[str]) -> None:
        Counter.incarnations += 1
        self.total = 0
        self.gate = gate
        self.log = log

    async def handle(self, msg: Protocol, ctx: Context) -> Any:
        match msg:
            case Add(n=n):
                self.log.append(f"handle add {n}")
                self.total += n
                return self.total
            case Note(text=text):
                self.log.append(f"handle note {text}")
                return None
            case Hold():
                await self.gate.wait()
                return None

    def handle_nowait(self, msg: Protocol) -> Any:
        match msg:
            case Add(n=n) if n > 0:
                self.log.append(f"at once add {n}")
                self.total += n
                return self.total
            case Add(n=n) if n < 0:
                raise Refused("no negative numbers")
            case Add():
                raise ValueError("a bug in the handler")
            case Note(text=text):
                self.log.append(f"at once note {text}")
                return None
            case Hold():
                raise trio.WouldBlock


@asynccontextmanager
async def counter() -> AsyncGenerator[tuple[ActorRef[Protocol], trio.Event, list[str]]]:
    gate = trio.Event()
    log: list[str] = []
    spec = SupervisorSpec(children=[ChildSpec.actor("counter", lambda: Counter(gate, log))])
    async with open_runtime(spec) as runtime:
        yield runtime.ref("counter", Counter), gate, log


async def test_an_idle_actor_answers_a_call_at_once_without_its_mailbox() -> None:
    async with counter() as (ref, _, log):
        assert ref.call_nowait(Add(n=2)) == 2
        assert ref.call_nowait(Add(n=3)) == 5
        assert log == ["at once add 2", "at once add 3"]
        assert ref.statistics().handled == 2


async def test_an_idle_actor_takes_a_cast_at_once() -> None:
    async with counter() as (ref, _, log):
        ref.cast_nowait(Note(text="hi"))
        assert log == ["at once note hi"]


async def test_a_message_the_actor_cannot_handle_at_once_would_block_and_changes_nothing() -> None:
    async with counter() as (ref, _, log):
        with pytest.raises(trio.WouldBlock):
            ref.call_nowait(Hold())
        assert log == []
        assert ref.statistics().handled == 0


async def test_a_message_waiting_in_the_mailbox_is_not_overtaken() -> None:
    async with counter() as (ref, _, log):
        ref.send_nowait(Note(text="first"))
        with pytest.raises(trio.WouldBlock):
            ref.call_nowait(Add(n=1))
        assert await ref.call(Add(n=1)) == 1
        assert log == ["handle note first", "handle add 1"]


async def test_a_message_on_its_way_to_a_waiting_actor_is_not_overtaken() -> None:
    async with counter() as (ref, _, log):
        await trio.testing.wait_all_tasks_blocked()  # the actor waits for its next message
        ref.send_nowait(Note(text="first"))  # handed to the actor, which has not run yet
        assert ref.statistics().mailbox_used == 0
        with pytest.raises(trio.WouldBlock):
            ref.cast_nowait(Note(text="second"))
        await trio.testing.wait_all_tasks_blocked()
        ref.cast_nowait(Note(text="second"))
        assert log == ["handle note first", "at once note second"]


async def test_nothing_is_handled_at_once_while_a_handler_is_in_progress() -> None:
    async with counter() as (ref, gate, log), trio.open_nursery() as nursery:
        nursery.start_soon(ref.call, Hold())
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            ref.call_nowait(Add(n=1))
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert ref.call_nowait(Add(n=1)) == 1
        assert log == ["at once add 1"]


async def test_a_reply_error_raised_at_once_reaches_the_caller_and_the_actor_lives_on() -> None:
    async with counter() as (ref, _, _log):
        with pytest.raises(Refused):
            ref.call_nowait(Add(n=-1))
        assert ref.call_nowait(Add(n=1)) == 1
        assert ref.statistics().restarts == 0


async def test_a_failure_at_once_crashes_the_actor_which_is_restarted() -> None:
    async with counter() as (ref, _, _log):
        before = Counter.incarnations
        with pytest.raises(ActorCrashed) as caught:
            ref.call_nowait(Add(n=0))
        assert isinstance(caught.value.__cause__, ValueError)
        assert await ref.call(Add(n=1)) == 1  # a new incarnation, counting from 0
        assert Counter.incarnations == before + 1
        stats = ref.statistics()
        assert (stats.restarts, stats.crashes) == (1, 1)


async def test_an_actor_that_is_not_running_would_block() -> None:
    async with counter() as (ref, _, _log):
        pass
    with pytest.raises(trio.WouldBlock):
        ref.call_nowait(Add(n=1))


async def test_an_actor_handles_nothing_at_once_by_default() -> None:
    class Plain(Actor[Add]):
        async def handle(self, msg: Add, ctx: Context) -> int:
            return msg.n

    spec = SupervisorSpec(children=[ChildSpec.actor("plain", Plain)])
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("plain", Plain)
        with pytest.raises(trio.WouldBlock):
            ref.call_nowait(Add(n=1))
        assert await ref.call(Add(n=1)) == 1
