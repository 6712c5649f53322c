"""Supervision: strategies, restart types, intensity, backoff, ordering and the runtime's edges."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.runtime import (
    Actor,
    ActorCrashed,
    ActorDead,
    ActorError,
    Backoff,
    Call,
    ChildSpec,
    Context,
    MaxRestartsExceeded,
    RestartType,
    Strategy,
    SupervisorSpec,
    UsageError,
    open_runtime,
    serve_runtime,
)

from .runtime_actors import Counter, Fail, Get, Journal, Sleep, count_tasks


def counters(
    journal: Journal,
    names: list[str],
    *,
    strategy: Strategy = "one_for_one",
    restart: RestartType = "permanent",
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: Backoff | None = None,
    name: str = "root",
) -> SupervisorSpec:
    return SupervisorSpec(
        name=name,
        strategy=strategy,
        max_restarts=max_restarts,
        within=within,
        backoff=backoff,
        children=[
            ChildSpec.actor(n, lambda n=n: Counter(journal, n), restart=restart) for n in names
        ],
    )


async def crash(runtime: Any, name: str) -> None:
    with pytest.raises(ActorCrashed):
        await runtime.ref(name, Counter).call(Fail())
    await trio.testing.wait_all_tasks_blocked()


async def test_children_start_in_order_and_stop_in_reverse_order() -> None:
    journal = Journal()
    async with open_runtime(counters(journal, ["a", "b", "c"])):
        assert journal.events == ["start a", "start b", "start c"]
    assert journal.events[3:] == ["stop c", "stop b", "stop a"]


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        ("one_for_one", ["b"]),
        ("one_for_all", ["a", "b", "c"]),
        ("rest_for_one", ["b", "c"]),
    ],
)
async def test_each_strategy_restarts_the_right_children(
    strategy: Strategy, restarted: list[str]
) -> None:
    journal = Journal()
    async with open_runtime(counters(journal, ["a", "b", "c"], strategy=strategy)) as runtime:
        for name in "abc":
            await runtime.ref(name, Counter).call(Get())
        journal.events.clear()
        await crash(runtime, "b")
        others = [n for n in restarted if n != "b"]
        assert journal.events == [
            "stop b",
            *[f"stop {n}" for n in reversed(others)],
            *[f"start {n}" for n in restarted],
        ]
        for name in "abc":
            expected = 1 if name in restarted else 2
            assert await runtime.ref(name, Counter).call(Get()) == expected


async def test_a_permanent_child_that_exits_normally_is_restarted() -> None:
    class Quit(Call[int], frozen=True, kw_only=True):
        pass

    class Quitter(Actor[Quit]):
        starts = 0

        def __init__(self) -> None:
            Quitter.starts += 1

        async def handle(self, msg: Quit, ctx: Context) -> int:
            ctx.stop()
            return Quitter.starts

    spec = SupervisorSpec(children=[ChildSpec.actor("q", Quitter)])
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("q", Quitter)
        assert await ref.call(Quit()) == 1
        assert await ref.call(Quit()) == 2  # queued behind the stop, handled by the next one


@pytest.mark.parametrize(
    ("restart", "after_crash"),
    [("permanent", "restarted"), ("transient", "restarted"), ("temporary", "dead")],
)
async def test_restart_types_after_a_crash(restart: RestartType, after_crash: str) -> None:
    journal = Journal()
    async with open_runtime(counters(journal, ["a"], restart=restart)) as runtime:
        ref = runtime.ref("a", Counter)
        await crash(runtime, "a")
        if after_crash == "restarted":
            assert await ref.call(Get()) == 1
        else:
            with pytest.raises(ActorDead):
                await ref.call(Get())
            assert "a" not in runtime.names()


async def test_a_temporary_sibling_is_not_restarted_by_one_for_all() -> None:
    journal = Journal()
    spec = SupervisorSpec(
        strategy="one_for_all",
        children=[
            ChildSpec.actor("a", lambda: Counter(journal, "a")),
            ChildSpec.actor("t", lambda: Counter(journal, "t"), restart="temporary"),
        ],
    )
    async with open_runtime(spec) as runtime:
        temporary = runtime.ref("t", Counter)
        await crash(runtime, "a")
        with pytest.raises(ActorDead):
            await temporary.call(Get())
        assert runtime.names() == ["a"]


async def test_exceeding_the_restart_intensity_escalates_out_of_open_runtime() -> None:
    journal = Journal()
    with pytest.raises(MaxRestartsExceeded) as info:
        async with open_runtime(counters(journal, ["a"], max_restarts=2)) as runtime:
            ref = runtime.ref("a", Counter)
            for _ in range(3):
                with pytest.raises(ActorCrashed):
                    await ref.call(Fail())
            await trio.sleep_forever()
    assert isinstance(info.value.__cause__, ValueError)
    assert (info.value.supervisor, info.value.max_restarts) == ("root", 2)


async def test_restarts_outside_the_intensity_window_do_not_add_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_runtime(counters(journal, ["a"], max_restarts=1, within=10)) as runtime:
        for _ in range(4):
            await crash(runtime, "a")
            await trio.sleep(11)
        assert runtime.statistics().restarts == 4


async def test_a_nested_supervisor_escalates_to_its_parent_which_restarts_it() -> None:
    journal = Journal()
    inner = counters(journal, ["x"], max_restarts=0, name="inner")
    spec = SupervisorSpec(
        children=[
            ChildSpec.actor("a", lambda: Counter(journal, "a")),
            ChildSpec.supervisor(inner),
        ]
    )
    async with open_runtime(spec) as runtime:
        x = runtime.ref("x", Counter)
        a = runtime.ref("a", Counter)
        await a.call(Get())
        await x.call(Get())
        await crash(runtime, "x")  # inner gives up at once; root restarts inner
        assert await x.call(Get()) == 1  # the same ref: mailboxes survive the subtree restart
        assert await a.call(Get()) == 2
        stats = {s.name: s for s in runtime.statistics().supervisors}
        assert stats["root"].restarts == 1


async def test_backoff_delays_each_restart_exponentially(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    class Timed(Counter):
        def __init__(self) -> None:
            super().__init__()
            starts.append(trio.current_time())

    spec = SupervisorSpec(
        max_restarts=10,
        within=1000,
        backoff=Backoff(initial=1, multiplier=2, maximum=3, jitter=0),
        children=[ChildSpec.actor("a", Timed)],
    )
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("a", Timed)
        for _ in range(4):
            t0 = trio.current_time()
            with pytest.raises(ActorCrashed):
                await ref.call(Fail())
            assert await ref.call(Get()) == 1  # waits in the mailbox during the backoff
            assert trio.current_time() > t0
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps == [1, 2, 3, 3]


def test_jittered_backoff_stays_within_its_bounds() -> None:
    import random

    backoff = Backoff(initial=1, multiplier=2, maximum=10, jitter=0.5)
    rng = random.Random(7)
    for attempt in range(8):
        base = min(10, 2**attempt)
        for _ in range(50):
            assert base * 0.5 <= backoff.delay(attempt, rng) <= base


async def test_messages_sent_while_an_actor_restarts_are_handled_by_the_next_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    spec = counters(journal, ["a"], backoff=Backoff(initial=5, jitter=0))
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("a", Counter)
        await crash(runtime, "a")
        assert ref.statistics().state == "restarting"
        async with trio.open_nursery() as nursery:
            results: list[int] = []

            async def get() -> None:
                results.append(await ref.call(Get()))

            for _ in range(3):
                nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().mailbox_used == 3
        assert sorted(results) == [1, 2, 3]


async def test_a_graceful_stop_lets_work_in_hand_finish_within_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    spec = SupervisorSpec(
        children=[ChildSpec.actor("a", lambda: Counter(journal, "a"), shutdown=10)]
    )
    results: list[str] = []
    async with open_runtime(spec) as runtime, trio.open_nursery() as nursery:
        ref = runtime.ref("a", Counter)

        async def sleep() -> None:
            results.append(await ref.call(Sleep(seconds=3)))

        nursery.start_soon(sleep)
        await journal.handling.wait()
        await runtime.terminate_child("a")
    assert results == ["slept 3"]
    assert journal.cancelled == []


async def test_work_that_outlasts_the_grace_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    spec = SupervisorSpec(
        children=[ChildSpec.actor("a", lambda: Counter(journal, "a"), shutdown=2)]
    )
    outcome: list[type[BaseException]] = []
    async with open_runtime(spec) as runtime, trio.open_nursery() as nursery:
        ref = runtime.ref("a", Counter)

        async def sleep() -> None:
            try:
                await ref.call(Sleep(seconds=30))
            except ActorDead as exc:
                outcome.append(type(exc))

        nursery.start_soon(sleep)
        await journal.handling.wait()
        t0 = trio.current_time()
        await runtime.terminate_child("a")
        assert trio.current_time() - t0 == pytest.approx(2)
    assert outcome == [ActorDead]
    assert journal.cancelled == ["sleep 30"]
    assert journal.events[-1] == "stop a"  # the lifespan still closed


async def test_start_child_and_terminate_child_at_run_time() -> None:
    journal = Journal()
    async with open_runtime(counters(journal, ["a"])) as runtime:
        ref = await runtime.start_child(ChildSpec.actor("b", lambda: Counter(journal, "b")))
        assert ref is not None
        assert await ref.call(Get()) == 1
        assert runtime.names() == ["a", "b"]
        with pytest.raises(UsageError, match="already has a child 'b'"):
            await runtime.start_child(ChildSpec.actor("b", Counter))
        await runtime.terminate_child("b")
        assert runtime.names() == ["a"]
        with pytest.raises(UsageError, match="no child 'b'"):
            await runtime.terminate_child("b")
    assert journal.events == ["start a", "start b", "stop b", "stop a"]


async def test_a_child_that_fails_to_start_stops_those_started_before_it() -> None:
    journal = Journal()

    class Broken(Counter):
        def lifespan(self, ctx: Context) -> Any:
            raise OSError("cannot open")

    spec = SupervisorSpec(
        children=[
            ChildSpec.actor("a", lambda: Counter(journal, "a")),
            ChildSpec.actor("broken", Broken),
            ChildSpec.actor("c", lambda: Counter(journal, "c")),
        ]
    )
    with pytest.raises(OSError, match="cannot open"):
        async with open_runtime(spec):
            raise AssertionError("the block must not run")
    assert journal.events == ["start a", "stop a"]


async def test_a_child_that_takes_too_long_to_start_fails_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Slow(Counter):
        def lifespan(self, ctx: Context) -> Any:
            return self._slow()

        @asynccontextmanager
        async def _slow(self) -> AsyncGenerator[None]:
            await trio.sleep(100)
            yield

    spec = SupervisorSpec(children=[ChildSpec.actor("slow", Slow, init_timeout=3)])
    with pytest.raises(ActorError, match="did not start within 3s"):
        async with open_runtime(spec):
            pass
    assert trio.current_time() == pytest.approx(3)


async def test_a_failing_restart_counts_as_a_crash_and_escalates() -> None:
    attempts: list[int] = []

    class OnlyOnce(Counter):
        def __init__(self) -> None:
            super().__init__()
            attempts.append(1)
            if len(attempts) > 1:
                raise RuntimeError("cannot come back")

    spec = SupervisorSpec(max_restarts=2, children=[ChildSpec.actor("a", OnlyOnce)])
    with pytest.raises(MaxRestartsExceeded) as info:
        async with open_runtime(spec) as runtime:
            with pytest.raises(ActorCrashed):
                await runtime.ref("a").call(Fail())
            await trio.sleep_forever()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert len(attempts) == 3


async def test_the_blocks_own_exception_comes_out_unwrapped() -> None:
    journal = Journal()
    with pytest.raises(KeyError) as info:
        async with open_runtime(counters(journal, ["a"])):
            raise KeyError("mine")
    assert not isinstance(info.value, BaseExceptionGroup)
    assert journal.events == ["start a", "stop a"]


async def test_the_blocks_own_exception_group_is_kept_as_it_was() -> None:
    journal = Journal()
    mine = ExceptionGroup("mine", [ValueError(1), ValueError(2)])
    with pytest.raises(ExceptionGroup) as info:
        async with open_runtime(counters(journal, ["a"])):
            raise mine
    # trio's nursery re-creates the group object; its members are the very same exceptions.
    assert info.value.message == "mine"
    assert info.value.exceptions == mine.exceptions


async def test_keyboard_interrupt_in_a_handler_is_never_swallowed() -> None:
    class Interrupt(Call[None], frozen=True, kw_only=True):
        pass

    class Ctrl(Actor[Interrupt]):
        async def handle(self, msg: Interrupt, ctx: Context) -> None:
            raise KeyboardInterrupt

    spec = SupervisorSpec(children=[ChildSpec.actor("c", Ctrl)])
    with pytest.raises(KeyboardInterrupt):
        async with open_runtime(spec) as runtime:
            await runtime.ref("c", Ctrl).call(Interrupt())


async def test_no_task_outlives_open_runtime() -> None:
    journal = Journal()
    before = count_tasks()

    class Busy(Counter):
        def lifespan(self, ctx: Context) -> Any:
            ctx.nursery.start_soon(trio.sleep_forever)
            return super().lifespan(ctx)

    spec = SupervisorSpec(
        backoff=Backoff(initial=1000, jitter=0),
        children=[
            ChildSpec.actor("busy", Busy),
            ChildSpec.supervisor(counters(journal, ["x", "y"], name="inner")),
            ChildSpec.service("svc", _service),
        ],
    )
    async with open_runtime(spec) as runtime:
        await crash(runtime, "x")  # leaves a restart timer pending
        assert count_tasks() > before
    assert count_tasks() == before


async def _service(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def test_a_crashing_service_is_restarted() -> None:
    runs: list[int] = []

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs.append(1)
        task_status.started()
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        await trio.sleep_forever()

    spec = SupervisorSpec(children=[ChildSpec.service("flaky", flaky)])
    async with open_runtime(spec) as runtime:
        await trio.testing.wait_all_tasks_blocked()
        assert len(runs) == 2
        assert runtime.statistics().restarts == 1


async def test_serve_runtime_runs_until_shutdown() -> None:
    journal = Journal()
    async with trio.open_nursery() as nursery:
        runtime = await nursery.start(serve_runtime, counters(journal, ["a", "b"]))
        assert await runtime.ref("a", Counter).call(Get()) == 1
        await runtime.shutdown()
        assert runtime.stopped
    assert journal.events == ["start a", "start b", "stop b", "stop a"]


async def test_runtime_statistics_report_actors_restarts_and_depths() -> None:
    journal = Journal()
    async with open_runtime(counters(journal, ["a", "b"])) as runtime:
        await crash(runtime, "a")
        stats = runtime.statistics()
        assert [a.name for a in stats.actors] == ["a", "b"]
        assert stats.restarts == 1
        assert stats.actors[0].crashes == 1
        assert stats.mailbox_depth == 0
        assert stats.supervisors[0].children == ["a", "b"]


def test_specs_reject_bad_values() -> None:
    with pytest.raises(UsageError, match="duplicate child names"):
        SupervisorSpec(children=[ChildSpec.actor("a", Counter), ChildSpec.actor("a", Counter)])
    with pytest.raises(UsageError):
        SupervisorSpec(strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        ChildSpec.actor("a/b", Counter)
    with pytest.raises(UsageError):
        ChildSpec.actor("a", Counter, mailbox=0)
    with pytest.raises(UsageError):
        ChildSpec(name="a", kind="actor")
    with pytest.raises(UsageError):
        Backoff(multiplier=0.5)


async def test_shutdown_with_an_unbounded_mailbox_answers_queued_calls_with_actor_dead() -> None:
    journal = Journal()
    spec = SupervisorSpec(
        children=[ChildSpec.actor("a", lambda: Counter(journal, "a"), mailbox=math.inf)]
    )
    outcomes: list[str] = []
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("a", Counter)

        async def call() -> None:
            try:
                await ref.call(Sleep(seconds=0))
            except ActorDead:
                outcomes.append("dead")
            else:
                outcomes.append("done")

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            await runtime.shutdown()
    assert len(outcomes) == 5


async def test_a_lifespan_may_open_its_own_nursery_and_cancel_scope() -> None:
    closed: list[str] = []

    class Nested(Counter):
        def lifespan(self, ctx: Context) -> Any:
            return self._nested()

        @asynccontextmanager
        async def _nested(self) -> AsyncGenerator[None]:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                with trio.CancelScope():
                    yield
                closed.append("after the scope")
                nursery.cancel_scope.cancel()
            closed.append("after the nursery")

    spec = SupervisorSpec(children=[ChildSpec.actor("n", Nested)])
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("n", Nested)
        assert await ref.call(Get()) == 1
        await runtime.terminate_child("n")  # a graceful stop runs the whole lifespan exit
        assert closed == ["after the scope", "after the nursery"]
