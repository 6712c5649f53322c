"""`ActorRef`: how everyone else talks to an actor."""

from __future__ import annotations

import math
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar, final

import trio

from ._envelope import Envelope, Overrun, ReplySlot, StreamReceiver, StreamState, waiting_on
from ._errors import ActorDead, CallCycle, MailboxFull
from ._messages import Call, Msg, Stream

if TYPE_CHECKING:
    from ._cell import ActorStatistics, Cell

__all__ = ["ActorRef", "StreamContext"]

M = TypeVar("M", bound=Msg, contravariant=True)
R = TypeVar("R")
Y = TypeVar("Y")

# Longest wait-for chain followed when looking for a call cycle.
_MAX_CHAIN = 256


def _check_cycle(target: Cell, task: trio.lowlevel.Task) -> None:
    """Raise `CallCycle` if waiting on ``target`` would close a wait-for loop back to
    ``task``: the target handles one message at a time and is (transitively) busy waiting on
    the caller."""
    cell: Cell | None = target
    chain: list[str] = []
    while cell is not None and len(chain) < _MAX_CHAIN:
        busy = cell.busy_task
        if busy is None:
            return
        chain.append(cell.name)
        if busy is task:
            # chain = target, then whom it waits on, ... back to the caller's own actor.
            raise CallCycle(tuple(reversed(chain[1:])) or (chain[0],), target.name)
        cell = waiting_on.get(busy)


@final
class ActorRef(Generic[M]):
    """A handle to an actor's mailbox; it stays valid across the actor's restarts.

    ``M`` is the actor's protocol (a union of its messages). Refs are cheap to copy and safe
    to share between tasks.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        """The actor's name, unique in its runtime."""
        return self._cell.name

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.name!r} {self._cell.state}>"

    async def send(self, msg: M) -> None:
        """Cast ``msg``: enqueue it and return, waiting while the mailbox is full.

        Raises:
            ActorDead: the actor is stopped for good.
        """
        cell = self._cell
        cell.sent += 1
        try:
            await cell.send_ch.send(Envelope(msg))
        except BaseException as exc:
            cell.sent -= 1
            if isinstance(exc, trio.ClosedResourceError | trio.BrokenResourceError):
                raise ActorDead(cell.name) from None
            raise

    def send_nowait(self, msg: M) -> None:
        """Cast ``msg`` without waiting.

        Raises:
            MailboxFull: the mailbox is at capacity.
            ActorDead: the actor is stopped for good.
        """
        cell = self._cell
        try:
            cell.send_ch.send_nowait(Envelope(msg))
        except trio.WouldBlock:
            raise MailboxFull(cell.name, int(cell.capacity)) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorDead(cell.name) from None
        cell.sent += 1

    def call_nowait(self, msg: Call[R]) -> R:
        """Have the actor answer ``msg`` at once, on the calling task and without a
        checkpoint, when it can: see `Actor.handle_nowait`. Otherwise nothing happens and
        `trio.WouldBlock` says to use `call`.

        The actor answers at once only while it is running with nothing in hand: no message
        waits in its mailbox or is on its way to it, and (for an actor that handles one
        message at a time) no handler is in progress. So ``msg`` is handled exactly as if it
        had been sent and taken next.

        Raises:
            trio.WouldBlock: the actor cannot answer at once (use `call`).
            ReplyError: (or the actor's ``reply_errors``) as raised by its handler.
            ActorCrashed: the handler failed otherwise: the actor crashes and is restarted.
        """
        result: R = self._cell.handle_nowait(msg, call=True)
        return result

    def cast_nowait(self, msg: M) -> None:
        """Have the actor handle the cast ``msg`` at once, on the calling task and without a
        checkpoint, when it can (as `call_nowait`); otherwise nothing happens and
        `trio.WouldBlock` says to `send` it. Unlike `send_nowait`, which puts ``msg`` in the
        mailbox, the actor has handled it when this returns.

        Raises:
            trio.WouldBlock: the actor cannot handle it at once (send it instead).
            ActorCrashed: the handler failed: the actor crashes and is restarted.
        """
        self._cell.handle_nowait(msg, call=False)

    async def call(self, msg: Call[R], *, deadline: float = math.inf) -> R:
        """Send ``msg`` and wait for its reply, typed by the message.

        The caller's deadline travels with the message and applies to the handler too; a
        caller that is cancelled or times out cancels the handler. ``deadline`` (a
        `trio.current_time` value) is a limit of the call's own, as if it ran in
        ``trio.fail_at(deadline)``, without a cancel scope of its own when the actor handles
        the call on the caller's task (`Actor.inline_calls`).

        Raises:
            ReplyError: (or the actor's ``reply_errors``) as raised by the handler.
            ActorCrashed: the actor crashed or restarted while handling the message.
            ActorDead: the actor is stopped for good.
            CallCycle: the call would deadlock; raised at once, nothing is sent.
            trio.TooSlowError: ``deadline`` passed before the reply came.
        """
        cell = self._cell
        if cell.inline_calls:
            await trio.lowlevel.checkpoint_if_cancelled()
            inc = cell.inline_slot()
            if inc is not None:  # handled on this task (`Actor.inline_calls`)
                envelope = Envelope(msg, reply=ReplySlot(), deadline=deadline, inline=True)
                return await cell.call_inline(inc, envelope, deadline)
        if deadline != math.inf:
            with trio.fail_at(deadline):
                return await self._call(cell, msg)
        return await self._call(cell, msg)

    @staticmethod
    async def _call(cell: Cell, msg: Call[R]) -> R:
        task = trio.lowlevel.current_task()
        if cell.busy_task is not None:
            _check_cycle(cell, task)
        slot = ReplySlot()
        envelope = Envelope(msg, reply=slot, deadline=trio.current_effective_deadline())
        previous = waiting_on.get(task)
        waiting_on[task] = cell
        try:
            # The wait for the reply is this call's schedule point, not the mailbox.
            await _post(cell, envelope)
            return await slot.wait()
        finally:
            if previous is None:
                del waiting_on[task]
            else:
                waiting_on[task] = previous

    def stream(
        self, msg: Stream[Y], *, buffer: int = 16, overrun: Overrun = "block"
    ) -> StreamContext[Y]:
        """Open a stream: ``async with ref.stream(msg) as items: async for item in items``.

        The items arrive on a bounded receive channel of ``buffer`` slots. With
        ``overrun="block"`` a full buffer makes the producer wait; with ``"error"`` it ends
        the stream with `StreamOverrun`. Leaving the block early (or being cancelled) cancels
        the producer. Errors raised by the producer are raised from the channel after the
        items sent before them.

        Raises:
            ActorDead: (on entry) the actor is stopped for good.
            CallCycle: (on entry) waiting on this stream would deadlock.
            UsageError: a negative buffer or an unknown overrun policy.
        """
        return StreamContext(self._cell, msg, buffer, overrun)

    def statistics(self) -> ActorStatistics:
        """A snapshot of the actor: state, mailbox depth, work in hand, restarts."""
        return self._cell.statistics()


async def _post(cell: Cell, envelope: Envelope) -> None:
    """Put ``envelope`` in ``cell``'s mailbox: at once when there is room (no trip through
    the scheduler), else waiting for room. A cancellation before it is posted lands here.

    Raises:
        ActorDead: the actor is stopped for good.
    """
    cell.sent += 1
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            cell.send_ch.send_nowait(envelope)
        except trio.WouldBlock:
            await cell.send_ch.send(envelope)
    except BaseException as exc:
        cell.sent -= 1
        if isinstance(exc, trio.ClosedResourceError | trio.BrokenResourceError):
            raise ActorDead(cell.name) from None
        raise


@final
class StreamContext(Generic[Y]):
    """The async context manager `ActorRef.stream` returns."""

    __slots__ = ("_buffer", "_cell", "_msg", "_overrun", "_previous", "_state", "_task")

    def __init__(self, cell: Cell, msg: Stream[Y], buffer: int, overrun: Overrun) -> None:
        self._cell = cell
        self._msg = msg
        self._buffer = buffer
        self._overrun: Overrun = overrun
        self._state: StreamState | None = None
        self._task: trio.lowlevel.Task | None = None
        self._previous: Cell | None = None

    async def __aenter__(self) -> StreamReceiver[Y]:
        if self._state is not None:
            raise RuntimeError("a stream context can be entered only once")
        cell = self._cell
        task = trio.lowlevel.current_task()
        if cell.busy_task is not None:
            _check_cycle(cell, task)
        state = StreamState(cell.name, self._buffer, self._overrun)
        deadline = trio.current_effective_deadline()
        envelope = Envelope(self._msg, stream=state, deadline=deadline)
        await _post(cell, envelope)
        await trio.lowlevel.cancel_shielded_checkpoint()  # posted: a schedule point, no cancel
        self._state = state
        self._task = task
        self._previous = waiting_on.get(task)
        waiting_on[task] = cell
        return StreamReceiver(state)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            if self._previous is None:
                waiting_on.pop(self._task, None)
            else:
                waiting_on[self._task] = self._previous
        if self._state is not None:
            self._state.abandon()
