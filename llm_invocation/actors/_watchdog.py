"""`ChunkWatchdog`: the first-chunk and idle-chunk deadlines of every stream of a session."""

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
    """First-chunk and idle-chunk deadlines of every stream of a session, in one task.

    A stream only moves its ``deadline`` forward as chunks arrive (an attribute write); the
    watchdog sleeps until the earliest deadline and cancels the scope of each stream whose
    deadline has passed. That costs nothing per chunk, where moving a cancel scope's
    deadline per chunk costs several microseconds.
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

    def touch(self, watch: Watch, deadline: float) -> None:
        """Move a stream's deadline (waking the watchdog if it is now the earliest)."""
        watch.deadline = deadline
        if deadline < self._target:
            self._target = deadline
            self._kick.set()

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
