"""`ChunkWatchdog`: the first-chunk deadline of every stream of a session until its body is
lent to the caller (whose reads keep the chunk limits from then on, see ``_stream_body``)."""

from __future__ import annotations

import math
from typing import final

import trio

__all__ = ["ChunkWatchdog", "Watch"]


@final
class Watch:
    """One stream's deadline; ``expired`` tells that the watchdog cancelled its scope."""

    __slots__ = ("deadline", "expired", "scope")

    def __init__(self, scope: trio.CancelScope, deadline: float) -> None:
        self.scope = scope
        self.deadline = deadline
        self.expired = False


@final
class ChunkWatchdog:
    """The first-chunk deadlines of the streams of a session, in one task, while the session
    sends their requests and reads their heads.

    The watchdog sleeps until the earliest deadline and cancels the scope of each stream
    whose deadline has passed: one task for all of them, where a cancel scope with a
    deadline per stream costs several microseconds each time it is moved.
    """

    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self._kick = trio.Event()
        self._target = math.inf

    def watch(self, scope: trio.CancelScope, deadline: float) -> Watch:
        watch = Watch(scope, deadline)
        self._watches.add(watch)
        if deadline < self._target:
            self._kick.set()
        return watch

    def unwatch(self, watch: Watch) -> None:
        self._watches.discard(watch)

    async def run(self) -> None:
        while True:
            now = trio.current_time()
            nearest = math.inf
            for watch in list(self._watches):
                if watch.deadline <= now:
                    watch.expired = True
                    watch.scope.cancel()
                    self._watches.discard(watch)
                elif watch.deadline < nearest:
                    nearest = watch.deadline
            self._target = nearest
            with trio.move_on_at(nearest):
                await self._kick.wait()
            self._kick = trio.Event()
