"""The supervisor: starts children in order, restarts them by strategy, stops them in reverse.

A supervisor is one coordinating task plus one task per running child, all in the
supervisor's nursery. Child exits, due restarts, run-time commands and stop requests arrive
as events on one channel and are handled one at a time, so the supervisor's view of its
children never races. Restart delays (backoff) run as timer tasks, so a waiting restart never
blocks the handling of other events.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import outcome
import trio

from ._cell import Cell, StopReason
from ._errors import ActorDead, ActorError, MaxRestartsExceeded, UsageError
from ._specs import ChildSpec, Strategy, SupervisorSpec
from ._util import unwrap

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["Store", "Supervisor", "SupervisorStatistics"]

log = logging.getLogger("llm_invocation.runtime")


class SupervisorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one supervisor."""

    name: str
    strategy: Strategy
    children: list[str]
    running: int
    restarts: int
    max_restarts: int
    within: float


class Store:
    """What outlives a supervisor's incarnations: its actors' cells and nested stores.

    Mailboxes belong here, so refs stay valid while an actor or a whole subtree restarts.
    """

    __slots__ = ("cells", "stores")

    def __init__(self) -> None:
        self.cells: dict[str, Cell] = {}
        self.stores: dict[str, Store] = {}

    def close(self, runtime: Runtime, detail: str) -> None:
        for cell in self.cells.values():
            cell.close(detail)
            runtime.unregister(cell)
        self.cells.clear()
        for store in self.stores.values():
            store.close(runtime, detail)
        self.stores.clear()


class _Slot:
    __slots__ = (
        "cell",
        "done",
        "generation",
        "pending_restart",
        "running",
        "scope",
        "spec",
        "stopping",
        "store",
        "supervisor",
    )

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.cell: Cell | None = None
        self.store: Store | None = None
        self.supervisor: Supervisor | None = None
        self.scope: trio.CancelScope | None = None
        self.done = trio.Event()
        self.generation = 0
        self.running = False
        self.stopping = False
        self.pending_restart = False


class _Exit(msgspec.Struct):
    slot: _Slot
    generation: int
    error: BaseException | None


class _RestartDue(msgspec.Struct):
    slots: list[_Slot]


class _Command(msgspec.Struct):
    fn: Callable[[], Awaitable[Any]]
    done: trio.Event
    result: outcome.Outcome[Any] | None = None


class _Stop(msgspec.Struct):
    reason: StopReason


_Event = _Exit | _RestartDue | _Command | _Stop


class _Status:
    """Wraps a child's ``task_status`` to know whether it has started."""

    __slots__ = ("_inner", "started_value")

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.started_value = False

    def started(self, value: Any = None) -> None:
        self.started_value = True
        self._inner.started(value)


class Supervisor:
    """One incarnation of a supervisor (a new one is made when its parent restarts it)."""

    def __init__(self, spec: SupervisorSpec, runtime: Runtime, store: Store) -> None:
        self.spec = spec
        self.runtime = runtime
        self.store = store
        self.restarts = 0
        self._slots: list[_Slot] = []
        self._restart_times: deque[float] = deque()
        self._events_send, self._events = trio.open_memory_channel[_Event](math.inf)
        self._nursery: trio.Nursery | None = None
        self._accepting = False
        self._stop_reason: StopReason | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    # -- requests from outside the supervisor's task ------------------------------------------

    def request_stop(self, reason: StopReason = "shutdown") -> None:
        """Ask for a graceful stop: children stop in reverse order, then the supervisor ends."""
        if self._stop_reason is None:
            self._stop_reason = reason
        try:
            self._events_send.send_nowait(_Stop(reason))
        except trio.ClosedResourceError:
            pass

    async def submit(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn`` in the supervisor's task, between events, and return its result."""
        if not self._accepting:
            raise ActorDead(self.name, "is not running")
        command = _Command(fn=fn, done=trio.Event())
        self._events_send.send_nowait(command)
        await command.done.wait()
        assert command.result is not None
        return command.result.unwrap()

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            name=self.name,
            strategy=self.spec.strategy,
            children=[slot.spec.name for slot in self._slots],
            running=sum(slot.running for slot in self._slots),
            restarts=self.restarts,
            max_restarts=self.spec.max_restarts,
            within=self.spec.within,
        )

    # -- the supervisor's task ------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, then supervise until stopped or escalating.

        Raises:
            MaxRestartsExceeded: the restart intensity was exceeded (children are stopped).
            Exception: a child failed to start (those started before it are stopped).
        """
        self.runtime.register_supervisor(self)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    for child in self.spec.children:
                        await self._start(self._add(child))
                except Exception:
                    await self._stop_all("shutdown")
                    raise
                self._accepting = True
                task_status.started(self)
                try:
                    await self._loop()
                except MaxRestartsExceeded:
                    self._accepting = False
                    await self._stop_all("shutdown")
                    raise
                self._accepting = False
                await self._stop_all(self._stop_reason or "shutdown")
                if self._stop_reason == "shutdown":
                    self.store.close(self.runtime, "was shut down")
                nursery.cancel_scope.cancel()  # pending restart timers
        finally:
            self._accepting = False
            self._events_send.close()
            self._fail_commands()
            self.runtime.unregister_supervisor(self)

    def _fail_commands(self) -> None:
        while True:
            try:
                event = self._events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(event, _Command):
                event.result = outcome.Error(ActorDead(self.name, "stopped"))
                event.done.set()

    async def _loop(self) -> None:
        while True:
            event = await self._events.receive()
            if isinstance(event, _Stop):
                return
            if isinstance(event, _Exit):
                await self._on_exit(event)
            elif isinstance(event, _RestartDue):
                await self._restart(event.slots)
            else:
                try:
                    result = await event.fn()
                except Exception as exc:  # noqa: BLE001 - handed back to the submitter
                    event.result = outcome.Error(exc)
                else:
                    event.result = outcome.Value(result)
                event.done.set()

    # -- children -------------------------------------------------------------------------------

    def _add(self, spec: ChildSpec) -> _Slot:
        if any(slot.spec.name == spec.name for slot in self._slots):
            raise UsageError(f"supervisor {self.name!r} already has a child {spec.name!r}")
        slot = _Slot(spec)
        if spec.kind == "actor":
            cell = self.store.cells.get(spec.name)
            if cell is None:
                assert spec.factory is not None
                cell = Cell(spec.name, spec.factory, spec.mailbox, self.runtime)
                self.runtime.register(cell)
                self.store.cells[spec.name] = cell
            slot.cell = cell
        elif spec.kind == "supervisor":
            slot.store = self.store.stores.setdefault(spec.name, Store())
        self._slots.append(slot)
        return slot

    def _remove(self, slot: _Slot, detail: str) -> None:
        if slot in self._slots:
            self._slots.remove(slot)
        slot.pending_restart = False
        name = slot.spec.name
        cell = self.store.cells.pop(name, None)
        if cell is not None:
            cell.close(detail)
            self.runtime.unregister(cell)
        store = self.store.stores.pop(name, None)
        if store is not None:
            store.close(self.runtime, detail)

    async def _start(self, slot: _Slot) -> None:
        """Start ``slot`` and wait until it is ready.

        Raises:
            ActorError: it did not start within its init timeout (``__cause__`` says more).
            Exception: whatever its start raised.
        """
        assert self._nursery is not None
        slot.generation += 1
        slot.done = trio.Event()
        slot.stopping = False
        if slot.cell is not None:
            slot.cell.state = "starting"
        failure: BaseException | None = None
        try:
            with trio.fail_after(slot.spec.init_timeout):
                await self._nursery.start(self._child_main, slot, slot.generation)
        except trio.TooSlowError as exc:
            raise ActorError(
                f"child {slot.spec.name!r} did not start within {slot.spec.init_timeout:g}s"
            ) from exc
        except BaseExceptionGroup as group:
            failure = unwrap(group)
            if failure is group:
                raise
        if failure is not None:
            raise failure  # the one real error, outside the group's handler
        slot.running = True

    async def _child_main(
        self, slot: _Slot, generation: int, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        status = _Status(task_status)
        error: BaseException | None = None
        try:
            with trio.CancelScope() as scope:
                slot.scope = scope
                spec = slot.spec
                try:
                    if spec.kind == "actor":
                        assert slot.cell is not None
                        await slot.cell.run(status, spec.shutdown)
                    elif spec.kind == "supervisor":
                        assert spec.supervisor_spec is not None
                        assert slot.store is not None
                        child = Supervisor(spec.supervisor_spec, self.runtime, slot.store)
                        slot.supervisor = child
                        await child.run(task_status=status)
                    else:
                        assert spec.service_fn is not None
                        await spec.service_fn(task_status=status)
                except Exception as exc:
                    if not status.started_value:
                        raise
                    error = unwrap(exc)
        finally:
            slot.done.set()
        if status.started_value:
            try:
                self._events_send.send_nowait(_Exit(slot, generation, error))
            except trio.ClosedResourceError:
                pass

    async def _stop(self, slot: _Slot, reason: StopReason) -> None:
        """Stop one child gracefully: ask it, wait up to its grace, then cancel it."""
        slot.pending_restart = False
        if not slot.running:
            return
        slot.stopping = True
        spec = slot.spec
        if slot.cell is not None:
            slot.cell.request_stop(reason=reason)
        elif slot.supervisor is not None:
            slot.supervisor.request_stop(reason)
        elif slot.scope is not None:
            slot.scope.cancel()
        if slot.scope is not None and spec.shutdown != math.inf:
            slot.scope.deadline = min(slot.scope.deadline, trio.current_time() + spec.shutdown)
        await slot.done.wait()
        slot.running = False
        slot.stopping = False

    async def _stop_all(self, reason: StopReason) -> None:
        for slot in reversed(self._slots):
            await self._stop(slot, reason)

    async def _on_exit(self, event: _Exit) -> None:
        slot, error = event.slot, event.error
        if event.generation != slot.generation or slot.stopping or slot not in self._slots:
            return  # a stop we asked for, or a stale incarnation
        slot.running = False
        spec = slot.spec
        if error is not None:
            if slot.cell is not None:
                slot.cell.crashes += 1
            log.error(
                "child %r of supervisor %r crashed: %r",
                spec.name,
                self.name,
                error,
                exc_info=error,
            )
        restart = spec.restart == "permanent" or (spec.restart == "transient" and error is not None)
        if not restart:
            outcome_text = "crashed" if error is not None else "exited"
            self._remove(slot, f"{outcome_text} ({spec.restart})")
            return
        self._note_restart(error)
        group = self._group(slot)
        for other in reversed(group):
            if other is not slot:
                await self._stop(other, "restart")
        for other in list(group):
            if other is not slot and other.spec.restart == "temporary":
                self._remove(other, "was stopped by a sibling's restart (temporary)")
                group.remove(other)
        for member in group:
            member.pending_restart = True
            if member.cell is not None:
                member.cell.state = "restarting"
        delay = 0.0
        if self.spec.backoff is not None:
            delay = self.spec.backoff.delay(len(self._restart_times) - 1)
        if delay > 0:
            assert self._nursery is not None
            self._nursery.start_soon(self._restart_later, group, delay)
        else:
            await self._restart(group)

    def _group(self, slot: _Slot) -> list[_Slot]:
        strategy = self.spec.strategy
        if strategy == "one_for_one":
            return [slot]
        if strategy == "one_for_all":
            return list(self._slots)
        return self._slots[self._slots.index(slot) :]

    def _note_restart(self, cause: BaseException | None) -> None:
        now = trio.current_time()
        times = self._restart_times
        times.append(now)
        while times and times[0] < now - self.spec.within:
            times.popleft()
        if len(times) > self.spec.max_restarts:
            error = MaxRestartsExceeded(self.name, self.spec.max_restarts, self.spec.within)
            error.__cause__ = cause
            raise error

    async def _restart_later(self, group: list[_Slot], delay: float) -> None:
        await trio.sleep(delay)
        try:
            self._events_send.send_nowait(_RestartDue(group))
        except trio.ClosedResourceError:
            pass

    async def _restart(self, group: list[_Slot]) -> None:
        for slot in group:
            if not slot.pending_restart or slot not in self._slots:
                continue
            slot.pending_restart = False
            self.restarts += 1
            if slot.cell is not None:
                slot.cell.restarts += 1
            try:
                await self._start(slot)
            except Exception as exc:  # noqa: BLE001 - any start failure is a crash to supervise
                # A failed restart is a crash of that child: the strategy applies again.
                slot.running = True
                self._events_send.send_nowait(_Exit(slot, slot.generation, exc))

    # -- run-time changes (run inside the supervisor's task via submit) ---------------------------

    async def start_child(self, spec: ChildSpec) -> Cell | None:
        slot = self._add(spec)
        try:
            await self._start(slot)
        except BaseException:
            self._remove(slot, "failed to start")
            raise
        return slot.cell

    async def terminate_child(self, name: str) -> None:
        for slot in self._slots:
            if slot.spec.name == name:
                await self._stop(slot, "shutdown")
                self._remove(slot, "was terminated")
                return
        raise UsageError(f"supervisor {self.name!r} has no child {name!r}")
