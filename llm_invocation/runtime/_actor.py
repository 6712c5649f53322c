"""The `Actor` base class and the `Context` its code runs with."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, final, overload

import trio

from ._envelope import Envelope, ReplyHandle, StreamSink
from ._errors import UsageError
from ._messages import Call, Msg, Stream

if TYPE_CHECKING:
    from ._cell import Cell, Loan
    from ._ref import ActorRef
    from ._runtime import Runtime

__all__ = ["Actor", "Context"]

M = TypeVar("M", bound=Msg, contravariant=True)
R = TypeVar("R")
Y = TypeVar("Y")


class Actor(Generic[M]):
    """Base class of actors: subclass it, set the class options, implement `handle`.

    A new instance is made for every incarnation (every start and restart), so state that
    must survive a crash lives in a store passed to the factory, not on the instance.

    Class options:
        max_concurrency: how many messages are handled at once. With 1 (the default) messages
            are handled one by one in arrival order; above 1 each runs in its own task in the
            incarnation's nursery.
        reply_errors: exception types that, raised by `handle`, answer the caller like a
            `ReplyError` and leave the actor running. Any other `Exception` crashes it.
        inline_calls: (with ``max_concurrency`` above 1) a call may be handled on the
            caller's own task instead of a task of the actor's, when the actor is running,
            nothing waits in its mailbox and a place is free: no trip through the mailbox
            and the scheduler. It counts as in hand like any other message; a stop lets it
            finish, a crash or a restart cancels it and its caller gets `ActorCrashed`
            (`ActorDead` when the actor stops for good), as for a call handled in the
            actor's task. The handler runs in the caller's context variables. Casts and
            streams always go through the mailbox.
    """

    max_concurrency: ClassVar[int] = 1
    reply_errors: ClassVar[tuple[type[Exception], ...]] = ()
    inline_calls: ClassVar[bool] = False

    def lifespan(self, ctx: Context) -> AbstractAsyncContextManager[object]:
        """Open what the incarnation needs (clients, sessions, background tasks).

        Runs before the first message and is closed after the last. Background tasks go in
        ``ctx.nursery``; they are cancelled before the lifespan is closed. An exception while
        opening fails the start (and counts as a crash on a restart).
        """
        return _nothing(ctx)

    async def handle(self, msg: M, ctx: Context) -> Any:
        """Handle one message.

        For a `Call` return the reply (or `Context.defer` and answer later); for a `Stream`
        send items through ``ctx.sink(msg)`` and return to end the stream; for a cast the
        return value is ignored.

        Raises:
            ReplyError: (or a type in ``reply_errors``) to answer the caller with an error.
            Exception: anything else crashes this incarnation; the caller gets `ActorCrashed`.
        """
        raise NotImplementedError

    def handle_nowait(self, msg: M) -> Any:
        """Handle ``msg`` at once, without a checkpoint, or raise `trio.WouldBlock`.

        `ActorRef.call_nowait` and `ActorRef.cast_nowait` call it on the caller's task, only
        while this incarnation is running, no message waits in its mailbox or is on its way
        to it, and (one message at a time) no handler is in progress: handling ``msg`` here is
        then what `handle` would do with it as the next message. Override it for the messages
        that can be answered without waiting (the default handles none); it must not block,
        and must raise `trio.WouldBlock` before it changes anything, the message then being
        sent and handled by `handle`. Background tasks of the actor may be suspended at any
        of their awaits meanwhile.

        Raises:
            trio.WouldBlock: ``msg`` must go through the mailbox.
            ReplyError: (or a type in ``reply_errors``) to answer the caller with an error.
            Exception: anything else crashes this incarnation; the caller gets `ActorCrashed`.
        """
        del msg
        raise trio.WouldBlock


@asynccontextmanager
async def _nothing(_: Context) -> AsyncGenerator[None]:
    yield


@final
class Context:
    """What the actor's code runs with: its nursery, the message's deadline and answer.

    ``lifespan`` gets a context with no message; `Actor.handle` gets one per message.
    """

    __slots__ = ("_cell", "_deferred", "_envelope", "nursery")

    def __init__(self, cell: Cell, nursery: trio.Nursery, envelope: Envelope | None) -> None:
        self._cell = cell
        self._envelope = envelope
        self._deferred = False
        self.nursery = nursery
        """The incarnation's nursery: tasks here live until the actor stops or crashes."""

    @property
    def name(self) -> str:
        """The actor's name, unique in its runtime."""
        return self._cell.name

    @property
    def runtime(self) -> Runtime:
        """The runtime this actor runs in (to look up other actors' refs)."""
        return self._cell.runtime

    @property
    def self_ref(self) -> ActorRef[Any]:
        """A reference to this actor, for casts to itself."""
        return self._cell.ref

    @property
    def deadline(self) -> float:
        """The caller's deadline for the current message (``inf`` for casts and lifespan).

        A call handled on the caller's task (`Actor.inline_calls`) runs under the caller's
        own cancel scopes: its deadline is the one in effect where it is read, which includes
        any scope the handler opened around the read.
        """
        envelope = self._envelope
        return envelope.caller_deadline() if envelope is not None else math.inf

    @property
    def abandoned(self) -> bool:
        """Whether the caller of the current call or stream gave up waiting: an answer
        returned now reaches nobody (a handler that lent something for it takes it back)."""
        envelope = self._envelope
        return envelope is not None and envelope.abandoned

    @property
    def deferred(self) -> bool:
        return self._deferred

    @overload
    def defer(self) -> ReplyHandle[Any]: ...
    @overload
    def defer(self, msg: Call[R]) -> ReplyHandle[R]: ...
    def defer(self, msg: Call[Any] | None = None) -> ReplyHandle[Any]:
        """Take the answer of the current call out of the handler's hands.

        Pass the message to get a handle typed by its reply. The handler may return at once;
        the handle answers later. Deferred answers that are still open when the incarnation
        ends are failed with `ActorCrashed` or `ActorDead`.

        Raises:
            UsageError: outside a handler, for a message that is not a call, for another
                message than the current one, or when deferring twice.
        """
        envelope = self._envelope
        if envelope is None or envelope.reply is None:
            raise UsageError("defer() needs a Call being handled")
        if msg is not None and msg is not envelope.msg:
            raise UsageError("defer(msg) must be given the message being handled")
        if self._deferred:
            raise UsageError("the current call is already deferred")
        self._deferred = True
        return self._cell.track_deferred(envelope)

    def sink(self, msg: Stream[Y]) -> StreamSink[Y]:
        """The producer's end of the stream the current message asked for.

        Raises:
            UsageError: when the current message is not the given `Stream` request.
        """
        envelope = self._envelope
        if envelope is None or envelope.stream is None or msg is not envelope.msg:
            raise UsageError("sink(msg) needs the Stream message being handled")
        return StreamSink(envelope.stream)

    def lend(self, revoke: Callable[[], None]) -> Loan:
        """Lend something of this incarnation to the caller beyond the current message (an
        open response, say), until the caller calls `Loan.end`.

        A graceful stop waits for the incarnation's loans to end (within the child's
        ``shutdown`` grace) before its lifespan closes. Any other end (a crash, a restart
        after a crash, a stop past its grace) revokes them first: ``revoke`` is called (it
        must not block; an exception it raises is logged) and `Loan.error` is set to what
        the caller then raises (`ActorCrashed`, or `ActorDead` for a stop for good). A loan
        made while the incarnation does not serve messages (its lifespan opening, or the
        incarnation ending) is revoked at once.
        """
        return self._cell.lend(revoke)

    def stop(self) -> None:
        """Ask this actor to stop normally once the current messages are handled.

        A ``transient`` or ``temporary`` actor that stops normally is not restarted and its
        pending messages are answered with `ActorDead`; a ``permanent`` one is restarted.
        """
        self._cell.request_stop(normal=True)
