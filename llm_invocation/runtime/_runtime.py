"""`open_runtime` / `serve_runtime` and the `Runtime` handle they give."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, TypeVar, final, overload

import msgspec
import trio

from ._actor import Actor
from ._cell import ActorStatistics, Cell
from ._errors import ActorDead, UsageError
from ._messages import Msg
from ._ref import ActorRef
from ._specs import ChildSpec, SupervisorSpec
from ._supervisor import Store, Supervisor, SupervisorStatistics
from ._util import members, unwrap

__all__ = ["Runtime", "RuntimeStatistics", "open_runtime", "serve_runtime"]

M = TypeVar("M", bound=Msg)


class RuntimeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a whole runtime (for the CLI, logs and benchmarks)."""

    actors: list[ActorStatistics]
    supervisors: list[SupervisorStatistics]
    restarts: int
    """Restarts made by all supervisors so far."""
    mailbox_depth: int
    """Messages waiting in all mailboxes."""
    in_flight: int
    """Messages being handled (or deferred) right now."""


@final
class Runtime:
    """A running supervision tree: look up actors, change children, read statistics."""

    def __init__(self, spec: SupervisorSpec) -> None:
        self.spec = spec
        self._cells: dict[str, Cell] = {}
        self._supervisors: dict[str, Supervisor] = {}
        self._store = Store()
        self._root: Supervisor | None = None
        self._stopped = trio.Event()
        # The tree's own scope: shielded from the caller's cancellation once started, so that
        # the block's cleanup (a client's last settlements, say) still reaches the actors;
        # cancelled by `open_runtime` as soon as the block has ended.
        self._scope = trio.CancelScope()

    # -- registry (used by supervisors) -----------------------------------------------------------

    def register(self, cell: Cell) -> None:
        if cell.name in self._cells:
            raise UsageError(f"an actor named {cell.name!r} already exists in this runtime")
        self._cells[cell.name] = cell

    def unregister(self, cell: Cell) -> None:
        if self._cells.get(cell.name) is cell:
            del self._cells[cell.name]

    def register_supervisor(self, supervisor: Supervisor) -> None:
        current = self._supervisors.get(supervisor.name)
        if current is not None and current is not supervisor:
            raise UsageError(f"a supervisor named {supervisor.name!r} is already running")
        self._supervisors[supervisor.name] = supervisor

    def unregister_supervisor(self, supervisor: Supervisor) -> None:
        if self._supervisors.get(supervisor.name) is supervisor:
            del self._supervisors[supervisor.name]

    # -- public API -------------------------------------------------------------------------------

    @overload
    def ref(self, name: str) -> ActorRef[Any]: ...
    @overload
    def ref(self, name: str, actor_type: type[Actor[M]]) -> ActorRef[M]: ...
    def ref(self, name: str, actor_type: type[Actor[Any]] | None = None) -> ActorRef[Any]:
        """The ref of the actor called ``name``; pass its class to get a typed ref.

        Raises:
            UsageError: no such actor, or it is not an instance of ``actor_type``.
        """
        cell = self._cells.get(name)
        if cell is None:
            known = ", ".join(sorted(self._cells)) or "none"
            raise UsageError(f"no actor named {name!r} (actors: {known})")
        if (
            actor_type is not None
            and cell.actor_type is not None
            and not issubclass(cell.actor_type, actor_type)
        ):
            raise UsageError(
                f"actor {name!r} is a {cell.actor_type.__name__}, not a {actor_type.__name__}"
            )
        return cell.ref

    def names(self) -> list[str]:
        """Names of the actors now registered, sorted."""
        return sorted(self._cells)

    def _supervisor(self, name: str | None) -> Supervisor:
        key = name or self.spec.name
        supervisor = self._supervisors.get(key)
        if supervisor is None:
            raise ActorDead(key, "is not a running supervisor")
        return supervisor

    async def start_child(
        self, spec: ChildSpec, *, supervisor: str | None = None
    ) -> ActorRef[Any] | None:
        """Add and start a child under ``supervisor`` (the root by default).

        Returns the new actor's ref, or None for a supervisor or service child.

        Raises:
            UsageError: the name is taken.
            ActorDead: that supervisor is not running.
            Exception: whatever the child's start raised (it is not kept).
        """
        target = self._supervisor(supervisor)
        cell = await target.submit(lambda: target.start_child(spec))
        return cell.ref if isinstance(cell, Cell) else None

    async def terminate_child(self, name: str, *, supervisor: str | None = None) -> None:
        """Stop a child gracefully and remove it; its queued messages get `ActorDead`.

        Raises:
            UsageError: the supervisor has no such child.
            ActorDead: that supervisor is not running.
        """
        target = self._supervisor(supervisor)
        await target.submit(lambda: target.terminate_child(name))

    def statistics(self) -> RuntimeStatistics:
        """A snapshot of every actor and supervisor."""
        actors = [cell.statistics() for _, cell in sorted(self._cells.items())]
        supervisors = [sup.statistics() for _, sup in sorted(self._supervisors.items())]
        return RuntimeStatistics(
            actors=actors,
            supervisors=supervisors,
            restarts=sum(s.restarts for s in supervisors),
            mailbox_depth=sum(a.mailbox_used for a in actors),
            in_flight=sum(a.in_flight + a.deferred for a in actors),
        )

    @property
    def stopped(self) -> bool:
        """Whether the supervision tree has stopped."""
        return self._stopped.is_set()

    async def shutdown(self) -> None:
        """Stop the tree gracefully (children in reverse order, each with its grace) and wait."""
        if self._root is not None:
            self._root.request_stop("shutdown")
        await self._stopped.wait()

    async def wait_stopped(self) -> None:
        """Wait until the tree has stopped (after `shutdown` or a failure)."""
        await self._stopped.wait()

    # -- internals --------------------------------------------------------------------------------

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        root = Supervisor(self.spec, self, self._store)
        self._root = root
        try:
            with self._scope:
                await root.run(task_status=task_status)  # pyright: ignore[reportArgumentType]
        except BaseExceptionGroup as group:
            # The tree's own failure: one error comes out alone (see open_runtime).
            error = unwrap(group)
            if error is group:
                raise
            context = error.__context__
            try:
                raise error
            finally:
                error.__context__ = context
        finally:
            self._stopped.set()

    def _close(self) -> None:
        self._store.close(self, "was shut down")
        self._stopped.set()


def _collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to raise for the runtime nursery's ``group``.

    Its members are the block's own exception (kept as raised, even when it is a group) and
    the tree's failures (already unwrapped at their source). Cancellations that accompany one
    real error are dropped; a lone KeyboardInterrupt or SystemExit comes out alone, with the
    errors it caused as its context; several real errors stay a group: never lost.
    """
    real = [m for m in members(group) if not isinstance(m, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    # A KeyboardInterrupt or SystemExit wins over the errors it caused on its way out.
    fatal = [m for m in real if not isinstance(m, Exception)]
    if len(fatal) == 1:
        if fatal[0].__context__ is None:
            others = [m for m in real if m is not fatal[0]]
            fatal[0].__context__ = BaseExceptionGroup("errors raised while stopping", others)
        return fatal[0]
    return group


@asynccontextmanager
async def open_runtime(spec: SupervisorSpec) -> AsyncGenerator[Runtime]:
    """Start a supervision tree for the duration of the ``async with`` block.

    Children start in order before the block runs. When the block ends the tree stops
    gracefully; when it raises, the tree is cancelled. A cancellation from outside reaches
    the block first: the tree keeps serving while the block unwinds (so its cleanup can still
    call actors), and is cancelled as soon as the block has ended. No task outlives the block.

    An exception from the block comes out as itself, not wrapped in a group; so does a
    single failure of the tree (for example `MaxRestartsExceeded` from the root, or a
    child's start failure). Several failures at once come out as an exception group.

    Raises:
        MaxRestartsExceeded: the root supervisor gave up.
        Exception: a child failed to start, or the block raised.
    """
    runtime = Runtime(spec)
    scope = runtime._scope  # pyright: ignore[reportPrivateUsage]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime._serve)  # pyright: ignore[reportPrivateUsage]
            # From here the caller's cancellation reaches the block, not the tree: the block
            # unwinds (its cleanup may still call actors), then the tree is cancelled below.
            scope.shield = True
            try:
                yield runtime
            except BaseException:
                scope.cancel()
                raise
            try:
                await runtime.shutdown()
            finally:
                scope.cancel()  # a shutdown cut short by the caller leaves no tree behind
    except BaseExceptionGroup as group:
        error = _collapse(group)
        if error is group:
            raise
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context  # not the group we just took it out of
    finally:
        runtime._close()  # pyright: ignore[reportPrivateUsage]


async def serve_runtime(
    spec: SupervisorSpec, *, task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a supervision tree until `Runtime.shutdown` or cancellation; for ``nursery.start``.

    ``await nursery.start(serve_runtime, spec)`` returns the `Runtime` once every child
    has started.

    Raises:
        MaxRestartsExceeded: the root supervisor gave up.
        Exception: a child failed to start.
    """
    async with open_runtime(spec) as runtime:
        task_status.started(runtime)
        await runtime.wait_stopped()
