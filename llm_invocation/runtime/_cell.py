"""An actor's cell: its mailbox (which survives restarts) and the loop of one incarnation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
import trio

from ._actor import Actor, Context
from ._envelope import Envelope, ReplyHandle
from ._errors import ActorCrashed, ActorDead, ReplyError, UsageError
from ._util import unwrap

if TYPE_CHECKING:
    from ._ref import ActorRef
    from ._runtime import Runtime

__all__ = ["ActorState", "ActorStatistics", "Cell", "Loan"]

log = logging.getLogger("llm_invocation.runtime")

ActorState = Literal["starting", "running", "stopping", "restarting", "dead"]
StopReason = Literal["normal", "restart", "shutdown"]

# How long a lifespan may take to close once the actor is stopping, even when cancelled.
LIFESPAN_CLOSE_LIMIT: Final = 5.0
# A one-at-a-time actor working through a backlog checkpoints after this many messages.
FAIRNESS_BATCH: Final = 64


class ActorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one actor, from `ActorRef.statistics` or `Runtime.statistics`."""

    name: str
    state: ActorState
    mailbox_used: int
    mailbox_capacity: float
    senders_waiting: int
    in_flight: int
    deferred: int
    handled: int
    dropped: int
    restarts: int
    crashes: int
    max_concurrency: int


class _Incarnation:
    __slots__ = (
        "actor",
        "crash",
        "deferred",
        "ended",
        "in_flight",
        "inline",
        "inline_done",
        "loans",
        "loans_done",
        "nursery",
        "rx",
        "serving",
        "slots",
        "stop_reason",
        "task",
    )

    def __init__(self, rx: trio.MemoryReceiveChannel[Envelope]) -> None:
        self.rx = rx
        self.in_flight: set[Envelope] = set()
        self.deferred: set[ReplyHandle[Any]] = set()
        self.stop_reason: StopReason | None = None
        self.task = trio.lowlevel.current_task()
        self.actor: Actor[Any] | None = None  # while it serves messages
        self.serving: trio.CancelScope | None = None
        self.crash: Exception | None = None  # raised by handle_nowait: ends the incarnation
        self.nursery: trio.Nursery | None = None  # the incarnation's background nursery
        self.slots: trio.Semaphore | None = None  # places of a concurrent actor's handlers
        # Calls handled on their callers' tasks (`Cell.call_inline`): their scopes, and an
        # event set when the last one ends while the incarnation waits for them.
        self.inline: set[trio.CancelScope] = set()
        self.inline_done: trio.Event | None = None
        self.ended: BaseException | None = None  # why the serving ended early, if it did
        # Work lent out by handlers (`Context.lend`): a graceful stop waits for it to come
        # back, any other end revokes it.
        self.loans: set[Loan] = set()
        self.loans_done: trio.Event | None = None


def _kept() -> None:
    """What revoking a loan that came back does: nothing."""


class Loan:
    """Work an incarnation lent out (`Context.lend`), alive until `end` or until revoked."""

    __slots__ = ("_inc", "_revoke", "error")

    def __init__(self, inc: _Incarnation, revoke: Callable[[], None]) -> None:
        self._inc = inc
        self._revoke = revoke
        self.error: ActorCrashed | ActorDead | None = None
        """Set when the incarnation ended before the loan came back: the lender's error."""

    def end(self) -> None:
        """The loan came back (at most once; nothing after it was revoked)."""
        inc = self._inc
        self._revoke = _kept  # the borrower often refers to this loan: no cycle is left
        inc.loans.discard(self)
        if not inc.loans and inc.loans_done is not None:
            inc.loans_done.set()

    def revoke(self, error: ActorCrashed | ActorDead) -> None:
        if self.error is None:
            self.error = error
            self._inc.loans.discard(self)
            try:
                self._revoke()
            except Exception:
                log.exception("revoking a loan failed")


class Cell:
    """Mailbox and bookkeeping of one actor, owned by its supervisor."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Actor[Any]],
        capacity: float,
        runtime: Runtime,
    ) -> None:
        from ._ref import ActorRef

        self.name = name
        self.factory = factory
        self.runtime = runtime
        self.capacity = capacity
        self.send_ch, self.recv_ch = trio.open_memory_channel[Envelope](capacity)
        self.ref: ActorRef[Any] = ActorRef(self)
        self.state: ActorState = "starting"
        self.max_concurrency = 1
        self.busy_task: trio.lowlevel.Task | None = None
        self.actor_type: type[Actor[Any]] | None = None
        self.handled = 0
        self.dropped = 0
        self.restarts = 0
        self.crashes = 0
        self.inline_calls = False
        """Whether calls may run on their callers' tasks (`Actor.inline_calls`)."""
        self.sent = 0
        """Messages put in the mailbox so far."""
        self.taken = 0
        """Messages taken out of the mailbox by an incarnation so far."""
        self._inc: _Incarnation | None = None

    # -- supervisor side -------------------------------------------------------------------

    def request_stop(self, *, normal: bool = False, reason: StopReason = "shutdown") -> None:
        """Stop taking messages; the incarnation ends once those in hand are handled."""
        inc = self._inc
        if inc is None:
            return
        if inc.stop_reason is None:
            inc.stop_reason = "normal" if normal else reason
        if not normal:
            self.state = "stopping"
        inc.rx.close()

    def close(self, detail: str = "was stopped") -> None:
        """The actor is gone for good: refuse new messages and fail the queued ones."""
        self.state = "dead"
        self.send_ch.close()
        while True:
            try:
                envelope = self.recv_ch.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            envelope.fail(ActorDead(self.name, f"{detail} before handling the message"))
        self.recv_ch.close()

    def statistics(self) -> ActorStatistics:
        stats = self.send_ch.statistics()
        inc = self._inc
        return ActorStatistics(
            name=self.name,
            state=self.state,
            mailbox_used=stats.current_buffer_used,
            mailbox_capacity=self.capacity,
            senders_waiting=stats.tasks_waiting_send,
            in_flight=len(inc.in_flight) if inc else 0,
            deferred=len(inc.deferred) if inc else 0,
            handled=self.handled,
            dropped=self.dropped,
            restarts=self.restarts,
            crashes=self.crashes,
            max_concurrency=self.max_concurrency,
        )

    async def run(self, task_status: trio.TaskStatus[None], grace: float) -> None:
        """Run one incarnation until it is stopped, stops itself or crashes."""
        inc = _Incarnation(self.recv_ch.clone())
        self._inc = inc
        failure: BaseException | None = None
        try:
            actor = self.factory()
            if not isinstance(actor, Actor):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise UsageError(f"factory of {self.name!r} returned {actor!r}, not an Actor")
            concurrency = actor.max_concurrency
            if concurrency < 1:
                raise UsageError(f"{type(actor).__name__}.max_concurrency must be >= 1")
            self.actor_type = type(actor)
            self.max_concurrency = concurrency
            self.inline_calls = actor.inline_calls and concurrency > 1
            async with trio.open_nursery() as background:
                inc.nursery = background
                lifespan = actor.lifespan(Context(self, background, None))
                ended: BaseException | None = None
                # The scope that will shield the lifespan's closing is entered BEFORE the
                # lifespan, so any scope or nursery the lifespan opens nests inside it and
                # scopes still close in the order they opened.
                with trio.CancelScope() as closing:
                    await lifespan.__aenter__()
                    try:
                        self.state = "running"
                        task_status.started()
                        with trio.CancelScope() as serving:
                            inc.serving = serving
                            inc.actor = actor
                            if concurrency == 1:
                                await self._serve_one(actor, background, inc)
                            else:
                                await self._serve_many(actor, background, inc, concurrency)
                            if inc.crash is None and inc.loans:  # a graceful stop
                                inc.loans_done = trio.Event()
                                await inc.loans_done.wait()
                        inc.actor = None
                        if inc.crash is not None:
                            raise inc.crash
                    except BaseException as exc:  # noqa: BLE001 - closed, then re-raised below
                        inc.actor = None
                        ended = exc
                        self._revoke_loans(inc, exc)
                    background.cancel_scope.cancel()
                    closing.shield = True
                    closing.deadline = trio.current_time() + min(grace, LIFESPAN_CLOSE_LIMIT)
                    if ended is None:
                        await lifespan.__aexit__(None, None, None)
                    else:
                        await lifespan.__aexit__(type(ended), ended, ended.__traceback__)
                if ended is not None:
                    raise ended
        except BaseException as exc:
            failure = exc
            raise
        finally:
            inc.rx.close()
            self._inc = None
            self.busy_task = None
            self._settle(inc, failure)

    def _settle(self, inc: _Incarnation, failure: BaseException | None) -> None:
        """Answer every call still in the incarnation's hands when it ended."""
        if not inc.in_flight and not inc.deferred:
            return
        cause = unwrap(failure) if failure is not None else None
        error: ActorCrashed | ActorDead
        if isinstance(cause, Exception):
            error = ActorCrashed(self.name)
            error.__cause__ = cause
        elif inc.stop_reason == "restart":
            error = ActorCrashed(self.name, "was restarted")
        else:
            error = ActorDead(self.name, "stopped before answering")
        for envelope in list(inc.in_flight):
            envelope.fail(error)
        inc.in_flight.clear()
        for handle in list(inc.deferred):
            handle.fail(error)
        inc.deferred.clear()

    def _revoke_loans(self, inc: _Incarnation, ended: BaseException) -> None:
        """The incarnation ended otherwise than by a graceful stop: take back what it lent."""
        if not inc.loans:
            return
        if inc.ended is None:
            inc.ended = ended
        error = self._ended_error(inc)
        for loan in list(inc.loans):
            loan.revoke(error)
        inc.loans.clear()

    def lend(self, revoke: Callable[[], None]) -> Loan:
        """A loan of the incarnation serving messages (`Context.lend`); revoked at once
        (``revoke`` called, `Loan.error` set) when it does not serve them (any more)."""
        inc = self._inc
        assert inc is not None
        loan = Loan(inc, revoke)
        if inc.actor is None or inc.crash is not None or inc.ended is not None:
            loan.revoke(self._ended_error(inc))
        else:
            inc.loans.add(loan)
        return loan

    def track_deferred(self, envelope: Envelope) -> ReplyHandle[Any]:
        inc = self._inc
        assert inc is not None
        assert envelope.reply is not None
        handle: ReplyHandle[Any] = ReplyHandle(
            envelope.reply, envelope.caller_deadline(), _forget(inc)
        )
        inc.deferred.add(handle)
        return handle

    # -- handling at once, on the caller's task ---------------------------------------------

    def handle_nowait(self, msg: Any, *, call: bool) -> Any:
        """Have the running incarnation handle ``msg`` at once (`Actor.handle_nowait`): only
        while it is running, no message waits in its mailbox or on its way to the actor, and
        (one message at a time) no handler is in progress, so ``msg`` is handled exactly as
        if it had been the next message taken.

        Raises:
            trio.WouldBlock: it cannot be handled at once (nothing happened).
            ReplyError: (or the actor's ``reply_errors``) from a call's handler.
            ActorCrashed: the handler failed otherwise; the incarnation ends (a crash).
        """
        inc = self._inc
        actor = inc.actor if inc is not None else None
        if (
            inc is None
            or actor is None
            or inc.crash is not None
            or inc.stop_reason is not None
            or self.state != "running"
            or self.busy_task is not None
            or self.sent != self.taken
        ):
            raise trio.WouldBlock
        try:
            result = actor.handle_nowait(msg)
        except trio.WouldBlock:
            raise
        except (ReplyError, *actor.reply_errors) as exc:
            self.handled += 1
            if call:
                raise
            log.warning(
                "actor %r answered a cast of %s with an error: %s",
                self.name,
                type(msg).__name__,
                exc,
            )
            return None
        except Exception as exc:
            raise self._crashed_on_caller(inc, exc) from exc
        self.handled += 1
        return result

    # -- the incarnation's loops -----------------------------------------------------------

    async def _serve_one(self, actor: Actor[Any], nursery: trio.Nursery, inc: _Incarnation) -> None:
        rx = inc.rx
        task = inc.task
        handled = 0
        while True:
            try:
                # Take what is queued without a trip through the scheduler: a busy actor
                # then handles its backlog in one pass instead of one message per pass.
                envelope = await _take(rx)
            except (trio.ClosedResourceError, trio.EndOfChannel):
                return
            self.taken += 1
            self.busy_task = task
            try:
                await self._dispatch(actor, nursery, inc, envelope)
            finally:
                self.busy_task = None
            handled += 1
            if handled % FAIRNESS_BATCH == 0:
                await trio.lowlevel.checkpoint()  # let others run during a long backlog

    async def _serve_many(
        self, actor: Actor[Any], nursery: trio.Nursery, inc: _Incarnation, concurrency: int
    ) -> None:
        slots = inc.slots = trio.Semaphore(concurrency)
        rx = inc.rx

        async def run(envelope: Envelope) -> None:
            try:
                await self._dispatch(actor, nursery, inc, envelope)
            finally:
                slots.release()

        try:
            async with trio.open_nursery() as handlers:
                while True:
                    try:
                        slots.acquire_nowait()
                    except trio.WouldBlock:
                        await slots.acquire()
                    try:
                        envelope = await _take(rx)
                    except (trio.ClosedResourceError, trio.EndOfChannel):
                        slots.release()
                        break
                    self.taken += 1
                    handlers.start_soon(run, envelope)
                # Stopping: the calls in hand on their callers' tasks finish, as handlers do.
                await self._inline_finished(inc)
        except BaseException as exc:
            # A crash, a restart or a hard stop: the calls in hand on their callers' tasks
            # are cancelled too, and unwind before the lifespan closes.
            inc.ended = exc
            for scope in inc.inline:
                scope.cancel()
            with trio.CancelScope(shield=True) as bounded:
                bounded.deadline = trio.current_time() + LIFESPAN_CLOSE_LIMIT
                await self._inline_finished(inc)
            raise

    @staticmethod
    async def _inline_finished(inc: _Incarnation) -> None:
        if inc.inline:
            inc.inline_done = trio.Event()
            await inc.inline_done.wait()

    # -- calls handled on the caller's task ------------------------------------------------

    def inline_slot(self) -> _Incarnation | None:
        """The running incarnation, with a place taken for a call on the caller's task, when
        the call may run there now (`Actor.inline_calls`); else None (nothing taken)."""
        inc = self._inc
        if (
            inc is None
            or inc.actor is None
            or inc.slots is None
            or inc.crash is not None
            or inc.ended is not None
            or inc.stop_reason is not None
            or self.state != "running"
            or self.sent != self.taken
        ):
            return None
        try:
            inc.slots.acquire_nowait()
        except trio.WouldBlock:
            return None
        return inc

    async def call_inline(
        self, inc: _Incarnation, envelope: Envelope, deadline: float = math.inf
    ) -> Any:
        """Handle the call ``envelope`` on this task, in the place `inline_slot` took, until
        ``deadline`` at the latest (then `trio.TooSlowError`).

        Raises:
            ReplyError: (or the actor's ``reply_errors``) from the handler.
            ActorCrashed: the handler failed (the incarnation ends), or the actor crashed
                or restarted meanwhile.
            ActorDead: the actor stopped for good meanwhile.
        """
        actor = inc.actor
        slots = inc.slots
        nursery = inc.nursery
        assert actor is not None and slots is not None and nursery is not None
        assert envelope.reply is not None
        self.sent += 1
        self.taken += 1
        inc.in_flight.add(envelope)
        ctx = Context(self, nursery, envelope)
        scope = trio.CancelScope(deadline=deadline)
        inc.inline.add(scope)
        result: Any = None
        try:
            with scope:
                try:
                    result = await actor.handle(envelope.msg, ctx)
                except (ReplyError, *actor.reply_errors):
                    raise
                except Exception as exc:
                    raise self._crashed_on_caller(inc, exc) from exc
            if scope.cancelled_caught:
                if inc.ended is not None:  # the incarnation ended under it
                    raise self._ended_error(inc)
                raise trio.TooSlowError
        finally:
            inc.in_flight.discard(envelope)
            inc.inline.discard(scope)
            slots.release()
            self.handled += 1
            if not inc.inline and inc.inline_done is not None:
                inc.inline_done.set()
        if ctx.deferred:  # answered later through its reply handle
            if deadline != math.inf:
                with trio.fail_at(deadline):
                    return await envelope.reply.wait()
            return await envelope.reply.wait()
        return result

    def _crashed_on_caller(self, inc: _Incarnation, exc: Exception) -> ActorCrashed:
        """A handler failed on its caller's task: as if it had crashed the incarnation in a
        task of its own, the incarnation ends (and is restarted); the caller's error."""
        if inc.crash is None and inc.ended is None:
            inc.crash = exc
            if inc.serving is not None:
                inc.serving.cancel()
        crashed = ActorCrashed(self.name)
        crashed.__cause__ = exc
        return crashed

    def _ended_error(self, inc: _Incarnation) -> ActorCrashed | ActorDead:
        cause = inc.crash
        if cause is None and inc.ended is not None:
            cause = unwrap(inc.ended)
        if isinstance(cause, Exception):
            error: ActorCrashed | ActorDead = ActorCrashed(self.name)
            error.__cause__ = cause
        elif inc.stop_reason == "restart":
            error = ActorCrashed(self.name, "was restarted")
        else:
            error = ActorDead(self.name, "stopped before answering")
        return error

    async def _dispatch(
        self, actor: Actor[Any], nursery: trio.Nursery, inc: _Incarnation, envelope: Envelope
    ) -> None:
        reply_errors = (ReplyError, *actor.reply_errors)
        if envelope.reply is None and envelope.stream is None:
            # A cast: nobody waits, nothing to cancel.
            try:
                await actor.handle(envelope.msg, Context(self, nursery, envelope))
            except reply_errors as exc:
                log.warning(
                    "actor %r answered a cast of %s with an error: %s",
                    self.name,
                    type(envelope.msg).__name__,
                    exc,
                )
            self.handled += 1
            return
        if envelope.abandoned:
            self.dropped += 1
            return
        inc.in_flight.add(envelope)
        ctx = Context(self, nursery, envelope)
        with trio.CancelScope(deadline=envelope.deadline) as scope:
            envelope.attach_scope(scope)
            try:
                result = await actor.handle(envelope.msg, ctx)
            except reply_errors as exc:
                envelope.fail(exc)
            except Exception as exc:
                crashed = ActorCrashed(self.name)
                crashed.__cause__ = exc
                envelope.fail(crashed)
                raise
            else:
                if not ctx.deferred:
                    envelope.succeed(result)
        if scope.cancelled_caught and not envelope.answered:
            envelope.fail(trio.TooSlowError(f"deadline passed while {self.name!r} handled it"))
        inc.in_flight.discard(envelope)
        self.handled += 1


async def _take(rx: trio.MemoryReceiveChannel[Envelope]) -> Envelope:
    """The next envelope: at once when one is queued, else waited for (outside the handler
    of WouldBlock, which would otherwise stay alive, traceback and all, while it waits)."""
    try:
        return rx.receive_nowait()
    except trio.WouldBlock:
        pass
    return await rx.receive()


def _forget(inc: _Incarnation) -> Callable[[ReplyHandle[Any]], None]:
    return inc.deferred.discard
