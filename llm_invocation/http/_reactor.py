"""Readiness of the pool's sockets to read, handed out a few at a time: `Reactor`.

trio wakes every task whose socket became readable in one scheduler batch, whatever their
number. With thousands of streams that batch is thousands of reads long (hundreds of
milliseconds), and every other task of the process, a timer as much as another client's
request, waits behind it. Here the pool's sockets are registered once, edge-triggered, in
an epoll descriptor of our own, and one system task waits on it through trio. Each time it
runs it wakes only as many readers as take about `TURN` seconds, as measured on the batches
before (`FEWEST` to `MOST`), and lets the loop turn before waking the next: timers, other
I/O and other tasks get their turn every millisecond or so however many streams are open.
A socket stays registered for its life, where trio's own wait registers and unregisters it
around every read (two system calls). Connecting (until the socket is writable) and the TLS
handshake's reads wait the same way.

Without epoll (not Linux) reads wait through ``trio.lowlevel.wait_readable``, as they do
on a connection made in an earlier trio run.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Final, final

import outcome
import trio

__all__ = ["FEWEST", "MOST", "TURN", "Reactor", "TrioWaiter", "Waiter", "reactor", "watch"]

TURN: Final = 0.00025
"""How long the readers woken at once should take to run, in seconds."""
FEWEST: Final = 4
"""The fewest readers woken at once when more are ready."""
MOST: Final = 64
"""The most readers woken at once."""

_READY: Final = object()
"""A waiter's state: something arrived while no task waited; the next wait returns at once."""
_GONE: Final = object()
"""A waiter's state: forgotten (its socket is closing) or its reactor's run has ended."""

_EVENTS: Final = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
_OUT: Final = getattr(select, "EPOLLOUT", 0)
_EDGE: Final = getattr(select, "EPOLLET", 0)
_ENDED: Final = (
    getattr(select, "EPOLLRDHUP", 0)
    | getattr(select, "EPOLLHUP", 0)
    | getattr(select, "EPOLLERR", 0)
)
"""The events after which the socket stays readable: its end (b"" or an error) is pending."""


@final
class Waiter:
    """One socket's readiness in a `Reactor`: made by `Reactor.register`, one per
    connection. Its state is ``None`` (nothing new, no task waiting), the waiting task,
    `_READY` or `_GONE`. It is its own abort function, so a wait allocates nothing here.

    An edge-triggered event says only that something came: one event may stand for bytes
    and the peer's end (or an error) together, and a read that takes the bytes leaves the
    end unread with no event to come. So once the peer's end or an error is reported
    (`ended`), every wait returns at once, as trio's level-triggered wait would.
    """

    __slots__ = ("_reactor", "ended", "sock", "state")

    def __init__(self, sock: socket.socket, reactor: Reactor) -> None:
        self.sock = sock
        self._reactor = reactor
        self.state: object = None
        self.ended = False

    async def wait(self) -> None:
        """Return when the socket may have bytes (or an end, or an error) to read.

        Raises:
            trio.ClosedResourceError: the socket was closed (`forget`) or the wait
                `interrupt`ed.
            trio.BusyResourceError: another task waits on it.
        """
        state = self.state
        if state is _READY or (self.ended and state is None):
            await trio.lowlevel.checkpoint_if_cancelled()
            self.state = None
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if state is not None:
            if state is _GONE:  # trio says whether the socket is still there
                await trio.lowlevel.wait_readable(self.sock)
                return
            await trio.lowlevel.checkpoint()
            raise trio.BusyResourceError("another task is waiting to read this socket")
        self.state = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self)

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        # The abort function of a wait: called only while the task still waits.
        self.state = None
        return trio.lowlevel.Abort.SUCCEEDED

    def interrupt(self) -> None:
        """Wake the waiting task, if any, with `trio.ClosedResourceError`."""
        task = self.state
        if isinstance(task, trio.lowlevel.Task):
            self.state = None
            trio.lowlevel.reschedule(
                task, outcome.Error(trio.ClosedResourceError("the socket was closed"))
            )

    def forget(self) -> None:
        """Before the socket is closed (or once it has connected): wake the task waiting, if
        any, with `trio.ClosedResourceError`, and stop watching the socket."""
        self.interrupt()
        self.state = _GONE
        self._reactor.unwatch(self)


@final
class TrioWaiter:
    """`Waiter`'s interface over ``trio.lowlevel.wait_readable`` (``wait_writable`` for a
    connecting socket), where there is no reactor."""

    __slots__ = ("sock", "writable")

    def __init__(self, sock: socket.socket, *, writable: bool = False) -> None:
        self.sock = sock
        self.writable = writable

    async def wait(self) -> None:
        if self.writable:
            await trio.lowlevel.wait_writable(self.sock)
        else:
            await trio.lowlevel.wait_readable(self.sock)

    def interrupt(self) -> None:
        pass  # `trio.lowlevel.notify_closing` wakes this wait

    def forget(self) -> None:
        pass  # (nothing registered)


@final
class Reactor:
    """The read readiness of the pool's sockets in one trio run (see the module)."""

    __slots__ = ("_epoll", "_waiters", "closed", "cost", "spawned")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._waiters: dict[int, Waiter] = {}
        self.spawned = False
        self.closed = False
        self.cost = TURN / 16  # seconds per woken reader, as measured (a first guess)

    def register(self, sock: socket.socket, *, writable: bool = False) -> Waiter | TrioWaiter:
        """Watch ``sock`` until `forget`: once per connection, before its first read (with
        ``writable``, while it connects: a connection's end is writable). A socket epoll
        refuses (its limit of watches reached) waits through trio."""
        if self.closed:  # the run is ending
            return TrioWaiter(sock, writable=writable)
        if not self.spawned:
            try:
                trio.lowlevel.spawn_system_task(self._run, name="FastHTTPTransport reads")
            except RuntimeError:  # the run is ending: it takes no new task
                self.closed = True
                self._epoll.close()
                return TrioWaiter(sock, writable=writable)
            self.spawned = True
        fd = sock.fileno()
        old = self._waiters.pop(fd, None)
        if old is not None:  # a number closed without `forget`, given to a new socket
            old.interrupt()
            old.state = _GONE
        events = _EVENTS | _EDGE | (_OUT if writable else 0)
        try:
            try:
                self._epoll.register(fd, events)
            except FileExistsError:  # the same
                self._epoll.modify(fd, events)
        except OSError:
            return TrioWaiter(sock, writable=writable)
        waiter = self._waiters[fd] = Waiter(sock, self)
        return waiter

    def unwatch(self, waiter: Waiter) -> None:
        """Stop watching ``waiter``'s socket (its part of `Waiter.forget`)."""
        fd = waiter.sock.fileno()
        if self._waiters.get(fd) is waiter:
            del self._waiters[fd]
            if not self.closed:
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass  # (closing the socket unregisters it anyway)

    async def _run(self) -> None:
        epoll = self._epoll
        waiters = self._waiters
        reschedule = trio.lowlevel.reschedule
        clock = time.perf_counter
        fileno = epoll.fileno()
        began = 0.0
        try:
            while True:
                await trio.lowlevel.wait_readable(fileno)
                woken = 0
                while True:
                    if woken:
                        # The readers woken last time ran in the batch that just ended:
                        # what it took, per reader, sets how many to wake now (a GC pause
                        # or other tasks in the batch only make it fewer).
                        spent = (clock() - began) / woken
                        self.cost += (spent - self.cost) / 4
                    began = clock()
                    room = min(MOST, max(FEWEST, int(TURN / self.cost)))
                    woken = 0
                    events = epoll.poll(0, room)
                    for fd, flags in events:
                        waiter = waiters.get(fd)
                        if waiter is None:
                            continue
                        if flags & _ENDED:
                            waiter.ended = True
                        state = waiter.state
                        if state is None:
                            waiter.state = _READY
                        elif state is not _READY and state is not _GONE:
                            waiter.state = None
                            reschedule(state)  # type: ignore[arg-type]
                            woken += 1
                    if len(events) < room:
                        break
                    # More are ready: let the loop turn before the next readers are woken.
                    await trio.lowlevel.checkpoint()
        finally:
            self.closed = True
            for waiter in waiters.values():
                waiter.interrupt()
                waiter.state = _GONE
            waiters.clear()
            epoll.close()


_CURRENT: Final[trio.lowlevel.RunVar[Reactor]] = trio.lowlevel.RunVar("llm_invocation_reactor")


def reactor() -> Reactor | None:
    """The reactor of the current trio run (made at the first call); None outside a run or
    without epoll."""
    try:
        return _CURRENT.get()
    except RuntimeError:  # not in a trio run
        return None
    except LookupError:
        if not hasattr(select, "epoll"):
            return None
        made = Reactor()
        _CURRENT.set(made)
        return made


def watch(sock: socket.socket, *, writable: bool = False) -> Waiter | TrioWaiter:
    """The waiter of ``sock`` (see `Reactor.register`): registered with the run's reactor,
    or trio's own wait without one. `Waiter.forget` it before the socket is closed."""
    the = reactor()
    if the is None:
        return TrioWaiter(sock, writable=writable)
    return the.register(sock, writable=writable)
