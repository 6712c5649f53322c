"""Message base classes.

Every message is a frozen, keyword-only, tagged msgspec Struct. Subclasses restate
``frozen=True, kw_only=True`` (type checkers need it)::

    class Get(Call[int], frozen=True, kw_only=True):
        key: str

    class Ticks(Stream[float], frozen=True, kw_only=True):
        count: int

    class Reset(Msg, frozen=True, kw_only=True):
        pass

`Call` is answered by exactly one value of type ``R``; `Stream` by any number of items of type
``Y``; a plain `Msg` is a cast with no answer. A protocol is a union of its messages and a
handler ``match``-es on it. Live objects (channels, sockets, callbacks) never go in messages.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

__all__ = ["Call", "Msg", "Stream"]

R = TypeVar("R", covariant=True)
Y = TypeVar("Y", covariant=True)


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every message; a plain `Msg` is a cast (fire and forget)."""


class Call(Msg, Generic[R], frozen=True, kw_only=True):
    """A request answered by exactly one reply of type ``R`` (see `ActorRef.call`)."""


class Stream(Msg, Generic[Y], frozen=True, kw_only=True):
    """A request answered by a stream of items of type ``Y`` (see `ActorRef.stream`)."""
