"""Errors of the actor runtime.

::

    Exception
    └── ActorError                 base of everything the runtime raises
        ├── ReplyError             raised by a handler: answers its caller, the actor lives on
        ├── ActorCrashed           the actor crashed while handling your message (see __cause__)
        ├── ActorDead              the actor is stopped for good; your message was not handled
        ├── MailboxFull            send_nowait() found the mailbox full
        ├── StreamOverrun          a stream's consumer fell behind under the "error" overrun policy
        ├── CallCycle              the call would wait on an actor already waiting on you
        ├── MaxRestartsExceeded    a supervisor's restart intensity was exceeded (escalates up)
        └── UsageError             the runtime API was used wrongly (a bug in the calling code)

A handler may also list its own exception types in ``Actor.reply_errors``; those answer the
caller exactly like `ReplyError` does. Any other `Exception` from a handler crashes the
incarnation. `BaseException` (trio.Cancelled, KeyboardInterrupt) only ever propagates.
"""

from __future__ import annotations

__all__ = [
    "ActorCrashed",
    "ActorDead",
    "ActorError",
    "CallCycle",
    "MailboxFull",
    "MaxRestartsExceeded",
    "ReplyError",
    "StreamOverrun",
    "UsageError",
]


class ActorError(Exception):
    """Base class of every error raised by the actor runtime."""


class ReplyError(ActorError):
    """Raise from a handler to answer the caller with an error; the actor keeps running."""


class ActorCrashed(ActorError):
    """The actor crashed (or was restarted) while your message was in its hands.

    ``__cause__`` holds the exception that crashed it. The actor's supervisor decides whether
    it restarts; messages still queued in its mailbox are handled by the next incarnation.
    """

    def __init__(self, actor: str, reason: str = "crashed") -> None:
        self.actor = actor
        super().__init__(f"actor {actor!r} {reason} while handling the message")


class ActorDead(ActorError):
    """The actor is stopped for good, so the message was not (or will never be) handled."""

    def __init__(self, actor: str, detail: str = "is not running") -> None:
        self.actor = actor
        super().__init__(f"actor {actor!r} {detail}")


class MailboxFull(ActorError):
    """`ActorRef.send_nowait` found the mailbox at its capacity."""

    def __init__(self, actor: str, capacity: int) -> None:
        self.actor = actor
        self.capacity = capacity
        super().__init__(f"mailbox of actor {actor!r} is full ({capacity} messages)")


class StreamOverrun(ActorError):
    """The consumer of a stream with ``overrun="error"`` did not keep up with its producer."""

    def __init__(self, actor: str, buffer: int) -> None:
        self.actor = actor
        self.buffer = buffer
        super().__init__(
            f"stream from actor {actor!r} overran its consumer (buffer of {buffer} items full)"
        )


class CallCycle(ActorError):
    """The call would deadlock: the target is already waiting, up the call path, on the caller."""

    def __init__(self, path: tuple[str, ...], target: str) -> None:
        self.path = path
        self.target = target
        chain = " -> ".join((*path, target))
        super().__init__(f"call cycle would deadlock: {chain}")


class MaxRestartsExceeded(ActorError):
    """A supervisor restarted its children too often and gave up (escalates to its parent).

    ``__cause__`` holds the last crash.
    """

    def __init__(self, supervisor: str, max_restarts: int, within: float) -> None:
        self.supervisor = supervisor
        self.max_restarts = max_restarts
        self.within = within
        super().__init__(
            f"supervisor {supervisor!r} exceeded {max_restarts} restarts within {within:g}s"
        )


class UsageError(ActorError):
    """The runtime API was used wrongly, for example a duplicate actor name."""
