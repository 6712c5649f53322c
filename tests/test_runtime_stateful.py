"""A Hypothesis state machine driving random calls, casts, crashes and cancellations.

The runtime runs in a trio loop on a helper thread; each rule hands work to it. The property:
every call ends with exactly one outcome (its value, `ActorCrashed`, `ActorDead`, or the
caller's own cancellation), a value is only ever the right one, nothing hangs, and the
actors keep working after whatever happened.
"""

from __future__ import annotations

import threading
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llm_invocation.runtime import (
    Actor,
    ActorCrashed,
    ActorDead,
    Call,
    ChildSpec,
    Context,
    MailboxFull,
    Msg,
    Runtime,
    SupervisorSpec,
    open_runtime,
)


class Work(Call[int], frozen=True, kw_only=True):
    id: int
    steps: int
    crash: bool


class Note(Msg, frozen=True, kw_only=True):
    crash: bool


class Gate:
    """Work waits here for `release` steps, so calls overlap as the machine decides."""

    def __init__(self) -> None:
        self.event = trio.Event()

    async def wait(self) -> None:
        await self.event.wait()

    def release(self) -> None:
        event, self.event = self.event, trio.Event()
        event.set()


class Worker(Actor[Work | Note]):
    max_concurrency = 1

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def handle(self, msg: Work | Note, ctx: Context) -> Any:
        match msg:
            case Work(id=id, steps=steps, crash=crash):
                for _ in range(steps):
                    await self.gate.wait()
                if crash:
                    raise ValueError(f"work {id} crashes")
                return id * 2
            case Note(crash=crash):
                if crash:
                    raise ValueError("note crashes")
                return None


class WideWorker(Worker):
    max_concurrency = 3


class _Loop:
    """A trio loop on a thread, running one runtime until stopped."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.token: trio.lowlevel.TrioToken | None = None
        self.runtime: Runtime | None = None
        self.nursery: trio.Nursery | None = None
        self.error: BaseException | None = None
        self.gate = Gate()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _main(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        spec = SupervisorSpec(
            max_restarts=1000,
            within=1,
            children=[
                ChildSpec.actor("narrow", lambda: Worker(self.gate), mailbox=8),
                ChildSpec.actor("wide", lambda: WideWorker(self.gate), mailbox=8),
            ],
        )
        async with open_runtime(spec) as runtime, trio.open_nursery() as nursery:
            self.runtime = runtime
            self.nursery = nursery
            self.token = trio.lowlevel.current_trio_token()
            self.stop = trio.Event()
            self.ready.set()
            await self.stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def run_sync(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def close(self) -> None:
        if self.token is not None:
            self.run_sync(self.stop.set)
        self.thread.join(10)
        assert not self.thread.is_alive()


@settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
class RuntimeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = _Loop()
        assert self.loop.error is None, self.loop.error
        self.next_id = 0
        self.outcomes: dict[int, list[tuple[str, Any]]] = {}
        self.calls: dict[int, Work] = {}

    async def _caller(self, target: str, work: Work, cancel_after: int | None) -> None:
        assert self.loop.runtime is not None
        ref = self.loop.runtime.ref(target)
        record = self.outcomes.setdefault(work.id, [])
        with trio.CancelScope() as scope:
            if cancel_after is not None:
                assert self.loop.nursery is not None
                self.loop.nursery.start_soon(_cancel_after, scope, cancel_after)
            try:
                value = await ref.call(work)
            except ActorCrashed:
                record.append(("crashed", None))
            except ActorDead:
                record.append(("dead", None))
            else:
                record.append(("value", value))
        if scope.cancelled_caught:
            record.append(("cancelled", None))

    @rule(
        actor=st.sampled_from(["narrow", "wide"]),
        steps=st.integers(0, 4),
        crash=st.booleans(),
        cancel_after=st.none() | st.integers(0, 6),
    )
    def call(self, actor: str, steps: int, crash: bool, cancel_after: int | None) -> None:
        work = Work(id=self.next_id, steps=steps, crash=crash)
        self.next_id += 1
        self.calls[work.id] = work
        assert self.loop.nursery is not None
        self.loop.run_sync(self.loop.nursery.start_soon, self._caller, actor, work, cancel_after)

    @rule(actor=st.sampled_from(["narrow", "wide"]), crash=st.booleans())
    def cast(self, actor: str, crash: bool) -> None:
        assert self.loop.runtime is not None
        ref = self.loop.runtime.ref(actor)
        try:
            self.loop.run_sync(ref.send_nowait, Note(crash=crash))
        except MailboxFull:
            pass

    @rule()
    def release(self) -> None:
        self.loop.run_sync(self.loop.gate.release)

    @rule()
    def settle(self) -> None:
        self.loop.run(trio.testing.wait_all_tasks_blocked)

    @precondition(lambda self: bool(self.outcomes))
    @invariant()
    def every_finished_call_has_exactly_one_right_outcome(self) -> None:
        for call_id, record in self.outcomes.items():
            assert len(record) <= 1, (call_id, record)
            if record and record[0][0] == "value":
                assert record[0][1] == call_id * 2
                assert not self.calls[call_id].crash

    def teardown(self) -> None:
        try:
            # Release the gate until every call has ended: each needs at most 4 releases,
            # one after the other on the narrow actor.
            for _ in range(4 * len(self.calls) + 1):
                self.loop.run(trio.testing.wait_all_tasks_blocked)
                if all(self.outcomes.get(i) for i in self.calls):
                    break
                self.loop.run_sync(self.loop.gate.release)
            assert sorted(self.outcomes) == sorted(self.calls)
            for call_id, record in self.outcomes.items():
                assert len(record) == 1, (call_id, record)
            # Whatever happened, both actors still answer.
            assert self.loop.runtime is not None
            for name in ("narrow", "wide"):
                ref = self.loop.runtime.ref(name)
                probe = Work(id=-1, steps=0, crash=False)
                assert self.loop.run(ref.call, probe) == -2
        finally:
            self.loop.close()


async def _cancel_after(scope: trio.CancelScope, checkpoints: int) -> None:
    for _ in range(checkpoints):
        await trio.lowlevel.checkpoint()
    scope.cancel()


TestRuntimeMachine = RuntimeMachine.TestCase
