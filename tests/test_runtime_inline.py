"""Calls handled on the caller's task (`Actor.inline_calls`): the same answers, errors,
supervision and stopping as calls handled in the actor's own tasks, without the trip through
the mailbox when nothing waits there and a place is free."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.runtime import (
    Actor,
    ActorCrashed,
    ActorDead,
    Call,
    ChildSpec,
    Context,
    Msg,
    ReplyError,
    ReplyHandle,
    SupervisorSpec,
    open_runtime,
)

from .runtime_actors import Counter, Journal, journaled
from .runtime_actors import Fail as CounterFail


class Where(Call[trio.lowlevel.Task], frozen=True, kw_only=True):
    pass


class Nap(Call[str], frozen=True, kw_only=True):
    seconds: float


class Fail(Call[int], frozen=True, kw_only=True):
    after_others: bool = False


class Refuse(Call[int], frozen=True, kw_only=True):
    pass


class Later(Call[str], frozen=True, kw_only=True):
    pass


class Note(Msg, frozen=True, kw_only=True):
    text: str
    seconds: float = 0


class Limits(Call[tuple[float, float]], frozen=True, kw_only=True):
    """Answers (ctx.deadline, the deadline of the call's reply handle once deferred)."""


WideMsg = Where | Nap | Fail | Refuse | Later | Note | Limits


class Wide(Actor[WideMsg]):
    """Handles calls concurrently; it logs to a journal."""

    max_concurrency = 8

    def __init__(self, journal: Journal, name: str = "wide") -> None:
        self.journal = journal
        self.name = name

    def lifespan(self, ctx: Context) -> Any:
        return journaled(self.journal, self.name)

    async def handle(self, msg: WideMsg, ctx: Context) -> Any:
        match msg:
            case Where():
                await trio.lowlevel.checkpoint()
                return trio.lowlevel.current_task()
            case Nap(seconds=seconds):
                self.journal.handling.set()
                try:
                    await trio.sleep(seconds)
                except trio.Cancelled:
                    self.journal.cancelled.append(f"nap {seconds}")
                    self.journal.add("cancelled")
                    raise
                self.journal.add(f"napped {seconds}")
                return f"napped {seconds}"
            case Fail(after_others=after_others):
                if after_others:
                    await trio.testing.wait_all_tasks_blocked()
                raise RuntimeError("one bad call")
            case Refuse():
                raise ReplyError("refused")
            case Later():
                handle = ctx.defer()
                ctx.nursery.start_soon(self._answer, handle)
                return None
            case Note(text=text, seconds=seconds):
                await trio.sleep(seconds)
                self.journal.add(text)
                return None
            case Limits():
                seen = ctx.deadline
                handle = ctx.defer(msg)
                handle.reply((seen, handle.deadline))
                return None

    async def _answer(self, handle: ReplyHandle[str]) -> None:
        await trio.sleep(0.5)
        handle.reply("answered later")


def wide(*, inline: bool, places: int = 8) -> type[Wide]:
    class Variant(Wide):
        max_concurrency = places
        inline_calls = inline

    return Variant


def spec(journal: Journal, *, inline: bool, places: int = 8, shutdown: float = 5) -> SupervisorSpec:
    actor = wide(inline=inline, places=places)
    return SupervisorSpec(
        children=[ChildSpec.actor("wide", lambda: actor(journal), shutdown=shutdown)]
    )


@pytest.mark.parametrize("inline", [True, False])
@pytest.mark.parametrize("callers_first", [True, False])
async def test_the_handler_sees_the_nearer_of_the_callers_deadline_and_the_calls(
    inline: bool, callers_first: bool
) -> None:
    async with open_runtime(spec(Journal(), inline=inline)) as runtime:
        ref = runtime.ref("wide", Wide)
        now = trio.current_time()
        caller, own = (now + 100, now + 200) if callers_first else (now + 200, now + 100)
        with trio.fail_at(caller):
            seen, deferred = await ref.call(Limits(), deadline=own)
        assert seen == deferred == min(caller, own)
        assert await ref.call(Limits()) == (math.inf, math.inf)


async def test_an_idle_actor_handles_a_call_on_the_callers_task() -> None:
    journal = Journal()
    async with open_runtime(spec(journal, inline=True)) as runtime:
        ref = runtime.ref("wide", Wide)
        assert await ref.call(Where()) is trio.lowlevel.current_task()
        stats = ref.statistics()
        assert (stats.in_flight, stats.handled, stats.mailbox_used) == (0, 1, 0)
    async with open_runtime(spec(Journal(), inline=False)) as runtime:
        ref = runtime.ref("wide", Wide)
        assert await ref.call(Where()) is not trio.lowlevel.current_task()


async def test_a_call_goes_through_the_mailbox_when_messages_wait_there(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    # Two places: the mailbox's reader holds one while it waits, a nap takes the other.
    async with open_runtime(spec(journal, inline=True, places=2)) as runtime:
        ref = runtime.ref("wide", Wide)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.call, Nap(seconds=5))
            await journal.handling.wait()
            ref.send_nowait(Note(text="first", seconds=1))  # taken: the reader's place
            await trio.testing.wait_all_tasks_blocked()
            ref.send_nowait(Note(text="second"))  # no place left: it waits in the mailbox
            here = trio.lowlevel.current_task()
            where = await ref.call(Where())  # behind it, in the actor's task
            assert where is not here
            assert journal.events[-2:] == ["first", "second"]
            assert trio.current_time() == pytest.approx(1)  # when "first" freed its place


@pytest.mark.parametrize("inline", [True, False])
async def test_reply_errors_and_deferred_answers_reach_the_caller(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_runtime(spec(Journal(), inline=inline)) as runtime:
        ref = runtime.ref("wide", Wide)
        with pytest.raises(ReplyError, match="refused"):
            await ref.call(Refuse())
        assert await ref.call(Later()) == "answered later"
        stats = ref.statistics()
        assert (stats.restarts, stats.in_flight, stats.deferred) == (0, 0, 0)


@pytest.mark.parametrize("inline", [True, False])
@pytest.mark.parametrize("limit", [None, 50.0], ids=["no-deadline", "under-a-deadline"])
async def test_a_crash_fails_every_call_in_hand_and_the_actor_restarts(
    inline: bool, limit: float | None
) -> None:
    journal = Journal()
    async with open_runtime(spec(journal, inline=inline)) as runtime:
        ref = runtime.ref("wide", Wide)
        errors: list[BaseException] = []
        # A crash under a call's own deadline is still a crash.
        deadline = math.inf if limit is None else trio.current_time() + limit

        async def call(msg: Any) -> None:
            try:
                await ref.call(msg, deadline=deadline)
            except ActorCrashed as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, Nap(seconds=100))
            nursery.start_soon(call, Nap(seconds=200))
            nursery.start_soon(call, Fail(after_others=True))
        assert len(errors) == 3
        assert all(isinstance(e.__cause__, RuntimeError) for e in errors)
        assert sorted(journal.cancelled) == ["nap 100", "nap 200"]
        assert await ref.call(Where()) is not None  # waits for the new incarnation
        # the lifespan closed once the calls in hand had unwound, then a new one opened
        assert journal.events == ["start wide", "cancelled", "cancelled", "stop wide", "start wide"]
        stats = ref.statistics()
        assert (stats.restarts, stats.crashes, stats.in_flight) == (1, 1, 0)


@pytest.mark.parametrize("inline", [True, False])
async def test_a_graceful_stop_lets_a_call_in_hand_finish_before_the_lifespan_closes(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal()
    results: list[str] = []
    async with open_runtime(spec(journal, inline=inline, shutdown=10)) as runtime:
        ref = runtime.ref("wide", Wide)

        async def nap() -> None:
            results.append(await ref.call(Nap(seconds=3)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(nap)
            await journal.handling.wait()
            await runtime.terminate_child("wide")
    assert results == ["napped 3"]
    assert journal.events == ["start wide", "napped 3", "stop wide"]


@pytest.mark.parametrize("inline", [True, False])
async def test_a_call_that_outlasts_the_grace_is_cancelled_and_answered_actor_dead(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal()
    outcome: list[type[BaseException]] = []
    async with open_runtime(spec(journal, inline=inline, shutdown=2)) as runtime:
        ref = runtime.ref("wide", Wide)

        async def nap() -> None:
            try:
                await ref.call(Nap(seconds=30))
            except ActorDead as exc:
                outcome.append(type(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(nap)
            await journal.handling.wait()
            await runtime.terminate_child("wide")
    assert outcome == [ActorDead]
    assert journal.cancelled == ["nap 30"]
    assert journal.events == ["start wide", "cancelled", "stop wide"]


async def test_a_callers_cancellation_is_its_own_and_frees_the_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_runtime(spec(journal, inline=True, places=2)) as runtime:
        ref = runtime.ref("wide", Wide)
        with trio.move_on_after(1) as scope:
            await ref.call(Nap(seconds=10))
        assert scope.cancelled_caught
        assert journal.cancelled == ["nap 10"]
        assert ref.statistics().in_flight == 0
        # the place is free again: the next call runs here, at once
        assert await ref.call(Where()) is trio.lowlevel.current_task()
        assert ref.statistics().restarts == 0


@pytest.mark.parametrize("inline", [True, False])
async def test_a_calls_own_deadline_ends_it_with_too_slow_and_frees_the_place(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal()
    async with open_runtime(spec(journal, inline=inline, places=2)) as runtime:
        ref = runtime.ref("wide", Wide)
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await ref.call(Nap(seconds=10), deadline=started + 1)
        assert trio.current_time() == pytest.approx(started + 1)
        await trio.testing.wait_all_tasks_blocked()  # a handler in the actor's task unwinds
        assert journal.cancelled == ["nap 10"]
        # A deadline that does not pass changes nothing, and the caller's own scope is
        # the caller's: it is not told apart as the call's deadline.
        assert await ref.call(Nap(seconds=1), deadline=trio.current_time() + 5) == "napped 1"
        with trio.move_on_after(1) as scope:
            await ref.call(Nap(seconds=10), deadline=trio.current_time() + 5)
        assert scope.cancelled_caught
        # An answer deferred past the deadline is waited for no longer than it.
        with pytest.raises(trio.TooSlowError):
            await ref.call(Later(), deadline=trio.current_time() + 0.1)
        await trio.testing.wait_all_tasks_blocked()
        stats = ref.statistics()
        assert (stats.in_flight, stats.restarts) == (0, 0)
        if inline:  # the place is free again: the next call runs here
            assert await ref.call(Where()) is trio.lowlevel.current_task()


@pytest.mark.parametrize("inline", [True, False])
async def test_a_restart_of_the_actor_cancels_a_call_in_hand_with_actor_crashed(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal()
    actor = wide(inline=inline)
    tree = SupervisorSpec(
        strategy="one_for_all",
        children=[
            ChildSpec.actor("wide", lambda: actor(journal)),
            ChildSpec.actor("other", Counter),
        ],
    )
    errors: list[ActorCrashed] = []
    async with open_runtime(tree) as runtime:
        ref = runtime.ref("wide", Wide)

        async def nap() -> None:
            try:
                await ref.call(Nap(seconds=100))
            except ActorCrashed as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(nap)
            await journal.handling.wait()
            with pytest.raises(ActorCrashed):
                await runtime.ref("other", Counter).call(CounterFail())
        assert await ref.call(Where()) is not None
    assert len(errors) == 1
    assert "restarted" in str(errors[0])
    assert journal.events[:4] == ["start wide", "cancelled", "stop wide", "start wide"]
