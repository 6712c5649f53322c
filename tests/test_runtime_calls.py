"""Calls, casts, deadlines, deferral and mailboxes of the actor runtime."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from llm_invocation.runtime import (
    Actor,
    ActorCrashed,
    ActorDead,
    Call,
    CallCycle,
    ChildSpec,
    Context,
    MailboxFull,
    ReplyError,
    ReplyHandle,
    SupervisorSpec,
    UsageError,
    open_runtime,
)

from .runtime_actors import (
    Add,
    Counter,
    Deadline,
    Fail,
    Get,
    Journal,
    Refuse,
    Sleep,
)


def one(actor: Any = Counter, **kwargs: Any) -> SupervisorSpec:
    return SupervisorSpec(children=[ChildSpec.actor("counter", actor, **kwargs)])


async def test_call_returns_the_handlers_reply() -> None:
    async with open_runtime(one()) as runtime:
        counter = runtime.ref("counter", Counter)
        assert await counter.call(Get()) == 1
        assert await counter.call(Get()) == 2


async def test_casts_are_handled_in_order_before_later_calls() -> None:
    async with open_runtime(one()) as runtime:
        counter = runtime.ref("counter", Counter)
        await counter.send(Add(amount=10))
        counter.send_nowait(Add(amount=5))
        assert await counter.call(Get()) == 16


async def test_reply_error_answers_the_caller_and_the_actor_lives_on() -> None:
    async with open_runtime(one()) as runtime:
        counter = runtime.ref("counter", Counter)
        await counter.call(Get())
        with pytest.raises(ReplyError, match="refused"):
            await counter.call(Refuse())
        assert await counter.call(Get()) == 2  # same incarnation: state kept
        assert counter.statistics().restarts == 0


async def test_crash_gives_actor_crashed_then_restart_then_a_working_call() -> None:
    async with open_runtime(one()) as runtime:
        counter = runtime.ref("counter", Counter)
        await counter.call(Get())
        with pytest.raises(ActorCrashed) as info:
            await counter.call(Fail(message="kaput"))
        assert isinstance(info.value.__cause__, ValueError)
        assert str(info.value.__cause__) == "kaput"
        assert await counter.call(Get()) == 1  # a fresh incarnation
        stats = counter.statistics()
        assert (stats.restarts, stats.crashes, stats.state) == (1, 1, "running")


async def test_declared_reply_errors_answer_like_reply_error() -> None:
    class Picky(Actor[Fail]):
        reply_errors = (ValueError,)

        async def handle(self, msg: Fail, ctx: Context) -> int:
            raise ValueError(msg.message)

    async with open_runtime(one(Picky)) as runtime:
        ref = runtime.ref("counter", Picky)
        with pytest.raises(ValueError, match="nope"):
            await ref.call(Fail(message="nope"))
        assert ref.statistics().restarts == 0


async def test_the_callers_deadline_travels_into_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_runtime(one()) as runtime:
        counter = runtime.ref("counter", Counter)
        with trio.fail_after(7):
            expected = trio.current_effective_deadline()
            seen, effective = await counter.call(Deadline())
        assert seen == expected
        assert effective == expected
        assert await counter.call(Deadline()) == (math.inf, math.inf)


async def test_a_caller_timing_out_cancels_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal))) as runtime:
        counter = runtime.ref("counter", Counter)
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1):
                await counter.call(Sleep(seconds=100))
        await trio.testing.wait_all_tasks_blocked()
        assert journal.cancelled == ["sleep 100"]
        assert await counter.call(Sleep(seconds=0)) == "slept 0"
        assert counter.statistics().restarts == 0


async def test_a_cancelled_caller_cancels_the_handler() -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal))) as runtime:
        counter = runtime.ref("counter", Counter)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.call, Sleep(seconds=math.inf))
            await journal.handling.wait()
            nursery.cancel_scope.cancel()
        assert journal.cancelled == ["sleep inf"]
        assert await counter.call(Get()) == 1


async def test_a_message_abandoned_while_queued_is_never_handled() -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal))) as runtime:
        counter = runtime.ref("counter", Counter)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.call, Sleep(seconds=math.inf))
            await journal.handling.wait()
            abandoned = trio.CancelScope()
            nursery.start_soon(_call_in_scope, counter, abandoned)
            await trio.testing.wait_all_tasks_blocked()
            abandoned.cancel()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert await counter.call(Get()) == 1
        assert counter.statistics().dropped == 1


async def _call_in_scope(ref: Any, scope: trio.CancelScope) -> None:
    with scope:
        await ref.call(Add(amount=1000))  # pyright: ignore[reportArgumentType]


async def test_send_nowait_on_a_full_mailbox_raises_mailbox_full() -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal), mailbox=2)) as runtime:
        counter = runtime.ref("counter", Counter)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.call, Sleep(seconds=math.inf))
            await journal.handling.wait()
            counter.send_nowait(Add())
            counter.send_nowait(Add())
            with pytest.raises(MailboxFull) as info:
                counter.send_nowait(Add())
            assert info.value.capacity == 2
            assert counter.statistics().mailbox_used == 2
            nursery.cancel_scope.cancel()


async def test_send_waits_while_the_mailbox_is_full() -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal), mailbox=1)) as runtime:
        counter = runtime.ref("counter", Counter)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.call, Sleep(seconds=math.inf))
            await journal.handling.wait()
            counter.send_nowait(Add())
            sent = trio.Event()

            async def send_one() -> None:
                await counter.send(Add())
                sent.set()

            nursery.start_soon(send_one)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            assert counter.statistics().senders_waiting == 1
            nursery.cancel_scope.cancel()


async def test_a_call_to_a_busy_actor_waiting_on_the_caller_is_a_call_cycle() -> None:
    class Ping(Call[str], frozen=True, kw_only=True):
        depth: int

    class Bouncer(Actor[Ping]):
        def __init__(self, peer: str) -> None:
            self.peer = peer

        async def handle(self, msg: Ping, ctx: Context) -> str:
            if msg.depth == 0:
                return "done"
            return await ctx.runtime.ref(self.peer, Bouncer).call(Ping(depth=msg.depth - 1))

    spec = SupervisorSpec(
        children=[
            ChildSpec.actor("a", lambda: Bouncer("b")),
            ChildSpec.actor("b", lambda: Bouncer("a")),
        ]
    )
    async with open_runtime(spec) as runtime:
        a = runtime.ref("a", Bouncer)
        assert await a.call(Ping(depth=1)) == "done"  # a -> b: fine
        with pytest.raises(ActorCrashed) as info:
            await a.call(Ping(depth=2))  # a -> b -> a: would deadlock
        # b's handler did not catch the CallCycle, so b crashed, and so did a, waiting on b.
        b_crashed = info.value.__cause__
        assert isinstance(b_crashed, ActorCrashed)
        assert b_crashed.actor == "b"
        cycle = b_crashed.__cause__
        assert isinstance(cycle, CallCycle)
        assert (cycle.target, cycle.path) == ("a", ("b",))
        assert await a.call(Ping(depth=1)) == "done"


async def test_an_actor_calling_itself_is_a_call_cycle() -> None:
    class Self(Call[int], frozen=True, kw_only=True):
        pass

    class Narcissus(Actor[Self]):
        async def handle(self, msg: Self, ctx: Context) -> int:
            try:
                return await ctx.self_ref.call(Self())
            except CallCycle:
                return -1

    async with open_runtime(one(Narcissus)) as runtime:
        assert await runtime.ref("counter", Narcissus).call(Self()) == -1


async def test_background_tasks_may_call_their_own_idle_actor() -> None:
    class Tick(Call[int], frozen=True, kw_only=True):
        pass

    class Ticker(Actor[Tick]):
        def __init__(self) -> None:
            self.ticks = 0
            self.done = trio.Event()

        async def handle(self, msg: Tick, ctx: Context) -> int:
            self.ticks += 1
            if self.ticks == 1:
                ctx.nursery.start_soon(self._again, ctx)
            return self.ticks

        async def _again(self, ctx: Context) -> None:
            await ctx.self_ref.call(Tick())

    async with open_runtime(one(Ticker)) as runtime:
        ref = runtime.ref("counter", Ticker)
        assert await ref.call(Tick()) == 1
        await trio.testing.wait_all_tasks_blocked()
        assert await ref.call(Tick()) == 3


class Ask(Call[str], frozen=True, kw_only=True):
    key: str


class Answer(Call[int], frozen=True, kw_only=True):
    key: str
    value: str


class Deferring(Actor[Ask | Answer]):
    """Parks questions and answers them when told: the governor's queue pattern."""

    def __init__(self) -> None:
        self.waiting: dict[str, ReplyHandle[str]] = {}

    async def handle(self, msg: Ask | Answer, ctx: Context) -> Any:
        match msg:
            case Ask(key=key):
                self.waiting[key] = ctx.defer(msg)
                return None
            case Answer(key=key, value=value):
                handle = self.waiting.pop(key)
                first = handle.reply(value)
                second = handle.reply("again")
                return int(first) + int(second)


async def test_a_deferred_reply_answers_later_and_the_first_answer_wins() -> None:
    async with open_runtime(one(Deferring)) as runtime:
        ref = runtime.ref("counter", Deferring)
        async with trio.open_nursery() as nursery:
            results: list[str] = []

            async def ask() -> None:
                results.append(await ref.call(Ask(key="k")))

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().deferred == 1
            assert await ref.call(Answer(key="k", value="v")) == 1  # only one delivered
        assert results == ["v"]
        assert ref.statistics().deferred == 0


async def test_a_deferred_reply_knows_when_its_caller_abandoned_it() -> None:
    class Park(Call[str], frozen=True, kw_only=True):
        pass

    class Watcher(Actor[Park]):
        def __init__(self) -> None:
            self.abandoned = trio.Event()

        async def handle(self, msg: Park, ctx: Context) -> None:
            handle = ctx.defer(msg)

            async def watch() -> None:
                await handle.wait_abandoned()
                assert handle.abandoned
                assert not handle.reply("too late")
                self.abandoned.set()

            ctx.nursery.start_soon(watch)

    watcher = Watcher()
    async with open_runtime(one(lambda: watcher)) as runtime:
        ref = runtime.ref("counter", Watcher)
        with trio.move_on_after(0.01):
            await ref.call(Park())
        with trio.fail_after(5):
            await watcher.abandoned.wait()


async def test_deferred_replies_fail_with_actor_crashed_when_the_actor_crashes() -> None:
    class Crash(Call[int], frozen=True, kw_only=True):
        pass

    class Fragile(Deferring):
        async def handle(self, msg: Any, ctx: Context) -> Any:
            if isinstance(msg, Crash):
                raise RuntimeError("down")
            return await super().handle(msg, ctx)

    async with open_runtime(one(Fragile)) as runtime:
        ref: Any = runtime.ref("counter")
        outcome: list[BaseException] = []

        async def ask() -> None:
            try:
                await ref.call(Ask(key="k"))
            except ActorCrashed as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorCrashed):
                await ref.call(Crash())
        assert len(outcome) == 1
        assert isinstance(outcome[0].__cause__, RuntimeError)


async def test_defer_outside_a_call_is_a_usage_error() -> None:
    class Cast(Call[None], frozen=True, kw_only=True):
        pass

    class Misuse(Actor[Add | Cast]):
        errors: ClassVar[list[Exception]] = []

        async def handle(self, msg: Add | Cast, ctx: Context) -> None:
            try:
                if isinstance(msg, Cast):
                    ctx.defer(Cast())  # not the message being handled
                else:
                    ctx.defer()  # a cast has nobody to answer
            except UsageError as exc:
                self.errors.append(exc)

    async with open_runtime(one(Misuse)) as runtime:
        ref = runtime.ref("counter", Misuse)
        await ref.send(Add())
        await ref.call(Cast())
        assert len(Misuse.errors) == 2


async def test_messages_to_a_terminated_actor_raise_actor_dead() -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal))) as runtime:
        counter = runtime.ref("counter", Counter)
        await runtime.terminate_child("counter")
        with pytest.raises(ActorDead):
            await counter.call(Get())
        with pytest.raises(ActorDead):
            await counter.send(Add())
        with pytest.raises(ActorDead):
            counter.send_nowait(Add())
        assert counter.statistics().state == "dead"
        with pytest.raises(UsageError, match="no actor named 'counter'"):
            runtime.ref("counter")


async def test_queued_calls_get_actor_dead_when_their_actor_is_terminated() -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal), shutdown=0)) as runtime:
        counter = runtime.ref("counter", Counter)
        outcomes: list[str] = []

        async def call(msg: Any) -> None:
            try:
                await counter.call(msg)
            except (ActorDead, ActorCrashed) as exc:
                outcomes.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, Sleep(seconds=math.inf))
            await journal.handling.wait()
            nursery.start_soon(call, Get())
            await trio.testing.wait_all_tasks_blocked()
            await runtime.terminate_child("counter")
        assert sorted(outcomes) == ["ActorDead", "ActorDead"]


async def test_a_ref_of_the_wrong_actor_type_is_a_usage_error() -> None:
    async with open_runtime(one()) as runtime:
        with pytest.raises(UsageError, match="is a Counter, not a Deferring"):
            runtime.ref("counter", Deferring)


async def test_concurrent_handlers_run_up_to_max_concurrency() -> None:
    class Wait(Call[int], frozen=True, kw_only=True):
        pass

    class Wide(Actor[Wait]):
        max_concurrency = 3

        def __init__(self) -> None:
            self.active = 0
            self.peak = 0
            self.gate = trio.Event()

        async def handle(self, msg: Wait, ctx: Context) -> int:
            self.active += 1
            self.peak = max(self.peak, self.active)
            await self.gate.wait()
            self.active -= 1
            return self.peak

    wide = Wide()
    async with open_runtime(one(lambda: wide)) as runtime:
        ref = runtime.ref("counter", Wide)
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(ref.call, Wait())
            await trio.testing.wait_all_tasks_blocked()
            assert wide.active == 3
            assert ref.statistics().in_flight == 3
            assert ref.statistics().mailbox_used == 2
            wide.gate.set()
        assert wide.peak == 3


async def test_a_crash_in_a_concurrent_handler_fails_every_call_in_hand() -> None:
    class Job(Call[int], frozen=True, kw_only=True):
        fail: bool

    class Wide(Actor[Job]):
        max_concurrency = 4

        async def handle(self, msg: Job, ctx: Context) -> int:
            if msg.fail:
                await trio.testing.wait_all_tasks_blocked()
                raise RuntimeError("one bad job")
            await trio.sleep_forever()
            raise AssertionError

    async with open_runtime(one(Wide)) as runtime:
        ref = runtime.ref("counter", Wide)
        errors: list[BaseException] = []

        async def job(fail: bool) -> None:
            try:
                await ref.call(Job(fail=fail))
            except ActorCrashed as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for fail in (False, False, True):
                nursery.start_soon(job, fail)
        assert len(errors) == 3
        assert all(isinstance(e.__cause__, RuntimeError) for e in errors)


async def test_a_handler_that_overruns_the_deadline_does_not_answer_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_runtime(one(lambda: Counter(journal))) as runtime:
        counter = runtime.ref("counter", Counter)
        with trio.move_on_after(2) as scope:
            await counter.call(Sleep(seconds=5))
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert journal.cancelled == ["sleep 5"]
        assert trio.current_time() == pytest.approx(2)


async def test_an_actor_may_stop_itself_and_a_transient_one_is_not_restarted() -> None:
    class Quit(Call[None], frozen=True, kw_only=True):
        pass

    class Quitter(Actor[Quit]):
        async def handle(self, msg: Quit, ctx: Context) -> None:
            ctx.stop()

    async with open_runtime(one(Quitter, restart="transient")) as runtime:
        ref = runtime.ref("counter", Quitter)
        await ref.call(Quit())
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ActorDead):
            await ref.call(Quit())


async def test_an_answer_already_delivered_survives_the_callers_cancellation() -> None:
    # The handler answered before its caller parked: the answer is the caller's even if the
    # caller is cancelled now (a lease or reservation granted must not be lost in between).
    import outcome

    from llm_invocation.runtime._envelope import ReplySlot

    slot = ReplySlot()
    assert slot.answer(outcome.Value(42))
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await slot.wait() == 42
        await trio.lowlevel.checkpoint()  # the cancellation lands at the next checkpoint
    assert scope.cancelled_caught


async def test_a_block_cancelled_from_outside_can_still_call_actors_while_it_unwinds() -> None:
    answered: list[int] = []
    with trio.CancelScope() as outside:
        async with open_runtime(one()) as runtime:
            counter = runtime.ref("counter", Counter)
            try:
                outside.cancel()
                await trio.sleep_forever()
            finally:
                with trio.move_on_after(5, shield=True):
                    answered.append(await counter.call(Get()))
    assert answered == [1]


async def test_the_tree_is_cancelled_once_a_cancelled_block_has_ended() -> None:
    # Without this the shielded tree would keep the block from ever returning.
    with trio.fail_after(10), trio.CancelScope() as outside:
        async with open_runtime(one()) as runtime:
            outside.cancel()
            await trio.sleep_forever()
    assert runtime.stopped
