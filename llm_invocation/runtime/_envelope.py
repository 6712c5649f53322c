"""The internal envelope a message travels in, and the caller's side of its answer.

An envelope carries the message, the caller's deadline and either a one-shot reply slot (a
call), a stream state (a stream) or nothing (a cast). The caller parks on the slot with
`trio.lowlevel.wait_task_rescheduled`; the handler reschedules it with the outcome. A caller
that is cancelled while parked abandons the slot, which cancels the handler's scope. Every
slot is answered at most once: the first answer wins, later ones are ignored and reported.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, Literal, TypeVar, final

import outcome
import trio

from ._errors import StreamOverrun, UsageError

__all__ = [
    "Envelope",
    "ReplyHandle",
    "ReplySlot",
    "StreamReceiver",
    "StreamSink",
    "StreamState",
    "waiting_on",
]

T = TypeVar("T")
Overrun = Literal["block", "error"]

# For call-cycle detection: which actor cell each parked caller task waits on. A task waits
# on at most one actor at a time (a call or an open stream), so a plain dict suffices.
waiting_on: dict[trio.lowlevel.Task, Any] = {}

_PENDING: Final = 0
_DONE: Final = 1
_ABANDONED: Final = 2


class ReplySlot:
    """One-shot answer of a call, written by the handler side, read by the parked caller."""

    __slots__ = ("_abandon_waiters", "_outcome", "_state", "_task", "scope")

    def __init__(self) -> None:
        self._state = _PENDING
        self._outcome: outcome.Outcome[Any] | None = None
        self._task: trio.lowlevel.Task | None = None
        # The handler's cancel scope while it runs: abandoning the slot cancels it.
        self.scope: trio.CancelScope | None = None
        self._abandon_waiters: list[trio.Event] | None = None

    @property
    def pending(self) -> bool:
        return self._state == _PENDING

    @property
    def abandoned(self) -> bool:
        return self._state == _ABANDONED

    def answer(self, result: outcome.Outcome[Any]) -> bool:
        """Deliver ``result`` if nothing was delivered yet; return whether it was."""
        if self._state != _PENDING:
            return False
        self._state = _DONE
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task, result)
        else:
            self._outcome = result
        return True

    def abandon(self) -> None:
        """The caller gave up: cancel the handler and wake whoever waits for this."""
        if self._state != _PENDING:
            return
        self._state = _ABANDONED
        if self.scope is not None:
            self.scope.cancel()
        if self._abandon_waiters:
            for event in self._abandon_waiters:
                event.set()

    async def wait_abandoned(self) -> None:
        if self._state == _ABANDONED:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        if self._abandon_waiters is None:
            self._abandon_waiters = []
        self._abandon_waiters.append(event)
        await event.wait()

    async def wait(self) -> Any:
        """Park the calling task until the answer arrives (caller side)."""
        ready = self._outcome
        if ready is not None:
            self._outcome = None
            # The answer is already ours: a cancellation here must not lose it (a lease or
            # a reservation granted to a caller that never sees it would leak). Yield without
            # raising; the caller's cancellation lands at its next checkpoint.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return ready.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            self.abandon()
            return trio.lowlevel.Abort.SUCCEEDED

        # reschedule() delivered an Outcome; wait_task_rescheduled unwraps it.
        return await trio.lowlevel.wait_task_rescheduled(abort)


class StreamState:
    """Shared state of one stream between its producer (handler) and consumer (caller).

    It is the stream's bounded channel too, with the semantics of a trio memory channel
    (one send end, one receive end): items wait in ``items`` (made when the first one has to
    wait, dropped when it empties), a sender parks when ``buffer`` items wait, a receiver
    parks when none does. Parked tasks are kept in order of arrival.
    """

    __slots__ = (
        "abandoned",
        "actor",
        "buffer",
        "error",
        "items",
        "overrun",
        "peak",
        "receive_closed",
        "receivers",
        "scope",
        "send_closed",
        "senders",
    )

    def __init__(self, actor: str, buffer: int, overrun: Overrun) -> None:
        if buffer < 0:
            raise UsageError(f"stream buffer must be >= 0, got {buffer}")
        if overrun not in ("block", "error"):
            raise UsageError(f"overrun must be 'block' or 'error', got {overrun!r}")
        self.actor = actor
        self.buffer = buffer
        self.overrun: Overrun = overrun
        self.items: deque[Any] | None = None
        self.peak = 0  # the most items that waited at once
        self.senders: dict[trio.lowlevel.Task, Any] | None = None  # parked, with their item
        self.receivers: dict[trio.lowlevel.Task, None] | None = None  # parked
        self.send_closed = False
        self.receive_closed = False
        self.error: BaseException | None = None
        self.abandoned = False
        self.scope: trio.CancelScope | None = None

    @property
    def pending(self) -> bool:
        return not self.abandoned and self.error is None and not self.send_closed

    def finish(self, error: BaseException | None = None) -> bool:
        """End the stream, with ``error`` raised to the consumer after the buffered items."""
        if not self.pending:
            return False
        self.error = error
        self.close_send()
        return True

    def abandon(self) -> None:
        """The consumer left: cancel the producer and drop whatever is still buffered."""
        if self.abandoned:
            return
        self.abandoned = True
        self.close_send()
        self.close_receive()
        if self.scope is not None:
            self.scope.cancel()

    # -- the channel ---------------------------------------------------------------------------

    def send_nowait(self, item: Any) -> None:
        """Hand ``item`` to a parked receiver, or buffer it.

        Raises:
            trio.ClosedResourceError: the send end is closed.
            trio.BrokenResourceError: the receive end is closed.
            trio.WouldBlock: the buffer is full.
        """
        if self.send_closed:
            raise trio.ClosedResourceError
        if self.receive_closed:
            raise trio.BrokenResourceError
        receivers = self.receivers
        if receivers:
            task = next(iter(receivers))
            del receivers[task]
            trio.lowlevel.reschedule(task, outcome.Value(item))
            return
        items = self.items
        if items is None:
            if self.buffer == 0:
                raise trio.WouldBlock
            self.items = deque((item,))
            self.peak = self.peak or 1
        elif len(items) < self.buffer:
            items.append(item)
            self.peak = max(self.peak, len(items))
        else:
            raise trio.WouldBlock

    async def send(self, item: Any) -> None:
        """`send_nowait`, parking while the buffer is full (a checkpoint)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(item)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self.senders is None:
            self.senders = {}
        senders = self.senders
        senders[task] = item

        def abort(_: Any) -> trio.lowlevel.Abort:
            del senders[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def receive_nowait(self) -> Any:
        """The next item.

        Raises:
            trio.ClosedResourceError: the receive end is closed.
            trio.EndOfChannel: nothing is left and the send end is closed.
            trio.WouldBlock: nothing is there yet.
        """
        if self.receive_closed:
            raise trio.ClosedResourceError
        items = self.items
        senders = self.senders
        if senders:
            task = next(iter(senders))
            item = senders.pop(task)
            trio.lowlevel.reschedule(task)
            if not items:
                return item
            items.append(item)
        if items:
            item = items.popleft()
            if not items:
                self.items = None
            return item
        if self.send_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Any:
        """`receive_nowait`, parking until an item comes (a checkpoint)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        task = trio.lowlevel.current_task()
        if self.receivers is None:
            self.receivers = {}
        receivers = self.receivers
        receivers[task] = None

        def abort(_: Any) -> trio.lowlevel.Abort:
            del receivers[task]
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def close_send(self) -> None:
        """Close the send end: parked senders fail, parked receivers get `EndOfChannel`."""
        if self.send_closed:
            return
        self.send_closed = True
        senders, self.senders = self.senders, None
        if senders:
            for task in senders:
                trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError()))
        receivers, self.receivers = self.receivers, None
        if receivers:
            for task in receivers:
                trio.lowlevel.reschedule(task, outcome.Error(trio.EndOfChannel()))

    def close_receive(self) -> None:
        """Close the receive end: buffered items are dropped, parked receivers fail and
        parked senders get `trio.BrokenResourceError`."""
        if self.receive_closed:
            return
        self.receive_closed = True
        receivers, self.receivers = self.receivers, None
        if receivers:
            for task in receivers:
                trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError()))
        senders, self.senders = self.senders, None
        if senders:
            for task in senders:
                trio.lowlevel.reschedule(task, outcome.Error(trio.BrokenResourceError()))
        self.items = None

    def statistics(self) -> trio.MemoryChannelStatistics:
        return trio.MemoryChannelStatistics(
            current_buffer_used=len(self.items or ()),
            max_buffer_size=self.buffer,
            peak_buffer_used=self.peak,
            open_send_channels=0 if self.send_closed else 1,
            open_receive_channels=0 if self.receive_closed else 1,
            tasks_waiting_send=len(self.senders or ()),
            tasks_waiting_receive=len(self.receivers or ()),
        )


class Envelope:
    """A message plus how to answer it and the caller's deadline.

    A call handled on its caller's task (``inline``) carries only the call's own limit in
    ``deadline``: the caller's cancel scopes are in effect around the handler, so the caller's
    deadline is read there when it is asked for (`caller_deadline`), not worked out for every
    call.
    """

    __slots__ = ("deadline", "inline", "msg", "reply", "stream")

    def __init__(
        self,
        msg: Any,
        *,
        reply: ReplySlot | None = None,
        stream: StreamState | None = None,
        deadline: float = math.inf,
        inline: bool = False,
    ) -> None:
        self.msg = msg
        self.reply = reply
        self.stream = stream
        self.deadline = deadline
        self.inline = inline

    def caller_deadline(self) -> float:
        """The caller's deadline for this message (a `trio.current_time` value). For a call
        handled on the caller's task, the deadline in effect where the handler asks: the
        caller's scopes, the call's own limit, and any scope the handler opened around the
        question."""
        if self.inline:
            return min(self.deadline, trio.current_effective_deadline())
        return self.deadline

    @property
    def abandoned(self) -> bool:
        if self.reply is not None:
            return self.reply.abandoned
        if self.stream is not None:
            return self.stream.abandoned
        return False

    @property
    def answered(self) -> bool:
        if self.reply is not None:
            return not self.reply.pending
        if self.stream is not None:
            return not self.stream.pending
        return True

    def attach_scope(self, scope: trio.CancelScope) -> None:
        if self.reply is not None:
            self.reply.scope = scope
        elif self.stream is not None:
            self.stream.scope = scope

    def succeed(self, value: Any) -> bool:
        if self.reply is not None:
            return self.reply.answer(outcome.Value(value))
        if self.stream is not None:
            return self.stream.finish()
        return False

    def fail(self, error: BaseException) -> bool:
        if self.reply is not None:
            return self.reply.answer(outcome.Error(error))
        if self.stream is not None:
            return self.stream.finish(error)
        return False


@final
class ReplyHandle(Generic[T]):
    """A deferred answer to a call (from `Context.defer`). The first answer wins.

    The handler that deferred may return at once; whoever holds the handle answers later with
    `reply` or `fail`. If the actor crashes or stops first, the caller gets `ActorCrashed` or
    `ActorDead` instead. `abandoned` tells whether the caller gave up (cancelled or timed out),
    so queued work for it can be dropped.
    """

    __slots__ = ("_on_done", "_slot", "deadline")

    def __init__(
        self, slot: ReplySlot, deadline: float, on_done: Callable[[ReplyHandle[Any]], None]
    ) -> None:
        self._slot = slot
        self._on_done = on_done
        self.deadline = deadline

    @property
    def abandoned(self) -> bool:
        """Whether the caller stopped waiting for this answer."""
        return self._slot.abandoned

    @property
    def done(self) -> bool:
        """Whether an answer was given or the caller abandoned it."""
        return not self._slot.pending

    def reply(self, value: T) -> bool:
        """Answer with ``value``. Returns False if already answered or abandoned."""
        delivered = self._slot.answer(outcome.Value(value))
        self._on_done(self)
        return delivered

    def fail(self, error: BaseException) -> bool:
        """Answer with ``error`` (raised in the caller). Returns False if too late."""
        delivered = self._slot.answer(outcome.Error(error))
        self._on_done(self)
        return delivered

    async def wait_abandoned(self) -> None:
        """Wait until the caller abandons this answer (returns at once if it already has)."""
        await self._slot.wait_abandoned()


@final
class StreamSink(Generic[T]):
    """The producer's end of a stream (from `Context.sink`).

    With the ``block`` overrun policy `send` waits while the consumer's buffer is full; with
    ``error`` a full buffer ends the stream with `StreamOverrun` for the consumer and cancels
    the producer. A consumer that leaves cancels the producer too.
    """

    __slots__ = ("_state",)

    def __init__(self, state: StreamState) -> None:
        self._state = state

    @property
    def overrun(self) -> Overrun:
        return self._state.overrun

    async def send(self, item: T) -> None:
        """Send one item to the consumer (a checkpoint)."""
        state = self._state
        if state.overrun == "block":
            try:
                await state.send(item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self._cancel_producer()
            return
        self.send_nowait(item)
        await trio.lowlevel.checkpoint()

    def send_nowait(self, item: T) -> None:
        """Send one item without waiting.

        Raises:
            trio.WouldBlock: under the ``block`` policy, when the consumer's buffer is full.
        """
        state = self._state
        try:
            state.send_nowait(item)
        except trio.WouldBlock:
            if state.overrun == "block":
                raise
            state.finish(StreamOverrun(state.actor, state.buffer))
            if state.scope is not None:
                state.scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if state.scope is not None:
                state.scope.cancel()

    async def _cancel_producer(self) -> None:
        if self._state.scope is not None:
            self._state.scope.cancel()
        await trio.lowlevel.checkpoint()


@final
class StreamReceiver(trio.abc.ReceiveChannel[T]):
    """The consumer's end of a stream: a bounded receive channel that re-raises the
    producer's error (`ReplyError`, `ActorCrashed`, `StreamOverrun`...) after the items that
    came before it."""

    __slots__ = ("_state",)

    def __init__(self, state: StreamState) -> None:
        self._state = state

    def _end(self) -> T:
        error = self._state.error
        if error is not None:
            raise error
        raise trio.EndOfChannel

    async def receive(self) -> T:
        try:
            return await self._state.receive()
        except trio.EndOfChannel:
            return self._end()

    def receive_nowait(self) -> T:
        try:
            return self._state.receive_nowait()
        except trio.EndOfChannel:
            return self._end()

    def close(self) -> None:
        self._state.abandon()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> trio.MemoryChannelStatistics:
        """The underlying channel's statistics (``current_buffer_used`` is the backlog)."""
        return self._state.statistics()
