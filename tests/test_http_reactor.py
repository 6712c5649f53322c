"""The reactor of the pool's sockets (`llm_invocation.http._reactor`): a wait ends when bytes
arrive, also when they arrived before the wait; a cancelled wait leaves the socket watched;
closing wakes a waiter; a descriptor number given again is watched afresh; readers are woken
a few per scheduler batch; and, for any interleaving of sends and reads, the bytes each
reader gets are the ones it gets waiting through trio."""

from __future__ import annotations

import errno
import select
import socket
import ssl
import struct
import time
from collections.abc import Generator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_invocation.errors import ProviderError
from llm_invocation.http import HttpPool, HttpSettings
from llm_invocation.http._connection import open_socket, open_tls
from llm_invocation.http._reactor import FEWEST, MOST, Reactor, TrioWaiter, Waiter, reactor
from llm_invocation.providers._base import HttpRequest

from .http_servers import Certificates, Peer, serve, serve_tls

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")


@contextmanager
def pairs(count: int = 1) -> Generator[list[tuple[socket.socket, socket.socket]]]:
    """``count`` connected non-blocking socket pairs, closed at the end."""
    made = [socket.socketpair() for _ in range(count)]
    for ours, theirs in made:
        ours.settimeout(0.0)  # non-blocking
        theirs.settimeout(0.0)  # non-blocking
    try:
        yield made
    finally:
        for ours, theirs in made:
            ours.close()
            theirs.close()


@contextmanager
def tcp_pair() -> Generator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair over loopback (ours non-blocking), closed at the end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    ours.settimeout(0.0)  # non-blocking
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


async def waited_read(waiter: Waiter | TrioWaiter, sock: socket.socket) -> bytes:
    """What ``sock`` has once ``waiter`` says so (within 5 s: no wait may hang here)."""
    with trio.fail_after(5):
        await waiter.wait()
    return sock.recv(100)


def post(url: str) -> HttpRequest:
    return HttpRequest(method="POST", url=url, headers={}, body=b"{}")


def the_reactor() -> Reactor:
    made = reactor()
    assert made is not None
    return made


def watched(sock: socket.socket) -> Waiter:
    waiter = the_reactor().register(sock)
    assert isinstance(waiter, Waiter)
    return waiter


async def test_a_wait_ends_when_bytes_arrive() -> None:
    with pairs() as [(ours, theirs)]:
        waiter = watched(ours)
        got: list[bytes] = []

        async def read() -> None:
            await waiter.wait()
            got.append(ours.recv(100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            theirs.send(b"hello")
        assert got == [b"hello"]


async def test_bytes_that_came_while_no_task_waited_end_the_next_wait_at_once() -> None:
    with pairs() as [(ours, theirs)]:
        waiter = watched(ours)
        theirs.send(b"early")
        # The reactor takes the socket's one edge now, while nobody waits on it.
        await trio.testing.wait_all_tasks_blocked()
        assert await waited_read(waiter, ours) == b"early"


async def test_a_socket_readable_when_registered_wakes_its_first_wait() -> None:
    with pairs() as [(ours, theirs)]:
        theirs.send(b"before")
        waiter = watched(ours)
        assert await waited_read(waiter, ours) == b"before"


async def test_a_cancelled_wait_leaves_the_socket_watched() -> None:
    with pairs() as [(ours, theirs)]:
        waiter = watched(ours)
        with trio.move_on_after(0.05) as scope:
            await waiter.wait()
        assert scope.cancelled_caught
        theirs.send(b"later")
        assert await waited_read(waiter, ours) == b"later"


async def test_a_cancelled_wait_keeps_what_arrived_for_the_next() -> None:
    with pairs() as [(ours, theirs)]:
        waiter = watched(ours)
        theirs.send(b"kept")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await waiter.wait()  # cancelled before it looks: nothing is used up
        assert await waited_read(waiter, ours) == b"kept"


async def test_interrupt_and_forget_wake_the_waiter() -> None:
    with pairs() as [(ours, _)]:
        waiter = watched(ours)
        for end in (waiter.interrupt, waiter.forget):
            async with trio.open_nursery() as nursery:

                async def wait() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await waiter.wait()

                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                end()


async def test_a_forgotten_socket_waits_through_trio() -> None:
    with pairs() as [(ours, theirs)]:
        waiter = watched(ours)
        waiter.forget()
        theirs.send(b"x")
        # trio's own wait now: the socket is still open
        assert await waited_read(waiter, ours) == b"x"


async def test_a_second_task_waiting_on_a_socket_is_refused() -> None:
    with pairs() as [(ours, _)]:
        waiter = watched(ours)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter.wait)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await waiter.wait()
            nursery.cancel_scope.cancel()


async def test_a_number_closed_without_forget_and_given_again_is_watched_afresh() -> None:
    first, peer = socket.socketpair()
    number = first.fileno()
    stale = watched(first)
    first.close()  # no `forget`: the reactor still holds the number
    peer.close()
    with pairs() as [(ours, theirs)]:
        assert ours.fileno() == number  # POSIX: the lowest free number
        waiter = watched(ours)
        assert stale.state is not None  # the stale one is done with
        theirs.send(b"fresh")
        assert await waited_read(waiter, ours) == b"fresh"


async def test_a_socket_epoll_refuses_waits_through_trio(monkeypatch: pytest.MonkeyPatch) -> None:
    class Full:
        def register(self, fd: int, events: int) -> None:
            raise OSError(errno.ENOSPC, "no room")

        def close(self) -> None:
            pass

    made = Reactor()
    made._epoll.close()  # pyright: ignore[reportPrivateUsage]
    monkeypatch.setattr(made, "_epoll", Full())
    made.spawned = True  # (no task to wait on the stand-in)
    with pairs() as [(ours, theirs)]:
        waiter = made.register(ours)
        assert isinstance(waiter, TrioWaiter)
        theirs.send(b"y")
        with trio.fail_after(5):
            await waiter.wait()
        waiter.forget()
        assert ours.recv(10) == b"y"


def test_a_waiter_of_an_ended_run_waits_through_trio() -> None:
    with pairs() as [(ours, theirs)]:
        waiters: list[Waiter] = []

        async def first() -> None:
            waiters.append(watched(ours))
            await trio.sleep(0)

        async def second() -> None:
            theirs.send(b"z")
            with trio.fail_after(5):
                await waiters[0].wait()
            assert ours.recv(10) == b"z"
            assert reactor() is not None and waiters[0] not in the_reactor()._waiters.values()  # pyright: ignore[reportPrivateUsage]

        trio.run(first)
        trio.run(second)


async def test_readers_are_woken_a_few_per_batch_when_each_takes_long() -> None:
    """200 sockets become readable at once; each reader then takes 2 ms (longer than `TURN`).
    trio alone would run all 200 in one batch (0.4 s with no timer or other task served);
    the reactor wakes a few per batch."""

    class Batches(trio.abc.Instrument):
        def __init__(self) -> None:
            self.sizes: list[int] = [0]

        def after_io_wait(self, timeout: float) -> None:
            if self.sizes[-1]:
                self.sizes.append(0)

        def note(self) -> None:
            self.sizes[-1] += 1

    batches = Batches()
    count = 200
    with pairs(count) as made:
        waiters = [watched(ours) for ours, _ in made]
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.add_instrument(batches)
        try:

            async def read(index: int) -> None:
                await waiters[index].wait()
                batches.note()
                assert made[index][0].recv(10) == b"!"
                _busy(0.002)

            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(read, index)
                await trio.testing.wait_all_tasks_blocked()
                for _, theirs in made:
                    theirs.send(b"!")
        finally:
            trio.lowlevel.remove_instrument(batches)
    sizes = [size for size in batches.sizes if size]
    assert sum(sizes) == count
    # The measure of a batch is rough (the reactor's own step may run before or after the
    # readers it woke), so a few batches may be larger than `FEWEST`, none above `MOST`.
    assert max(sizes) <= MOST
    assert sorted(sizes)[len(sizes) // 2] <= FEWEST


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 70_000), st.booleans()), max_size=25),
    sizes=st.lists(st.sampled_from([1, 7, 4096, 65_536]), min_size=3, max_size=3),
)
def test_the_bytes_read_are_trios(plan: list[tuple[int, int, bool]], sizes: list[int]) -> None:
    """Three sockets get sends of any size in any order, then their peer's end; between the
    sends a reader may have its wait cancelled. Each reader reads as `Connection.recv` does
    (one ``recv`` of its size per wake, again at once when it filled the size) until the
    end. What it gets through the reactor is what it gets through trio's own wait: every
    byte in order, then the end, no wait left hanging."""

    def run(through_reactor: bool) -> list[bytes]:
        async def main() -> list[bytes]:
            with pairs(3) as made:
                got = [bytearray() for _ in range(3)]
                waiters = [
                    watched(ours) if through_reactor else TrioWaiter(ours) for ours, _ in made
                ]
                cancel_next = [trio.Event() for _ in range(3)]

                async def wait(index: int) -> None:
                    with trio.CancelScope() as scope:
                        waiting = cancel_next[index] = trio.Event()

                        async def cancel_when_told() -> None:
                            await waiting.wait()
                            scope.cancel()

                        async with trio.open_nursery() as inner:
                            inner.start_soon(cancel_when_told)
                            await waiters[index].wait()
                            inner.cancel_scope.cancel()

                async def read(index: int) -> None:
                    ours, size, eager = made[index][0], sizes[index], False
                    while True:
                        if not eager:
                            await wait(index)
                        try:
                            data = ours.recv(size)
                        except BlockingIOError:
                            eager = False
                            continue
                        if not data:
                            return
                        got[index] += data
                        eager = len(data) == size

                async def send(index: int, size: int) -> None:
                    theirs = made[index][1]
                    view = memoryview(bytes([65 + index]) * size)
                    while view:
                        try:
                            view = view[theirs.send(view) :]
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(theirs)

                with trio.fail_after(20):
                    async with trio.open_nursery() as nursery:
                        for index in range(3):
                            nursery.start_soon(read, index)
                        for which, size, cancel in plan:
                            if cancel:
                                cancel_next[which].set()
                            await trio.sleep(0)
                            await send(which, size)
                        for _, theirs in made:
                            theirs.shutdown(socket.SHUT_WR)
                return [bytes(data) for data in got]

        return trio.run(main)

    through_trio = run(through_reactor=False)
    assert [len(data) for data in through_trio] == [
        sum(size for which, size, _ in plan if which == index) for index in range(3)
    ]
    assert run(through_reactor=True) == through_trio


@pytest.mark.parametrize("end", ["close", "reset"])
async def test_the_peers_end_after_bytes_read_ends_the_next_wait(end: str) -> None:
    """Bytes and the peer's end (or a reset) come before the reactor looks: one event for
    both. Reading the bytes leaves the end, and no event is to come for it; the next wait
    must still end, as trio's does."""
    with tcp_pair() as (ours, theirs):
        waiter = watched(ours)
        theirs.send(b"last words")
        if end == "reset":
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            await waiter.wait()
            assert ours.recv(100) == b"last words"
            await waiter.wait()
            try:
                assert ours.recv(100) == b""
            except ConnectionResetError:
                assert end == "reset"
            await waiter.wait()  # and every wait after it


def test_without_a_run_there_is_no_reactor() -> None:
    assert reactor() is None


async def test_a_run_that_takes_no_new_task_leaves_reads_to_trio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ending(*_: object, **__: object) -> None:
        raise RuntimeError("the system nursery is closed")

    made = Reactor()
    monkeypatch.setattr(trio.lowlevel, "spawn_system_task", ending)
    with pairs() as [(ours, theirs)]:
        waiter = made.register(ours)
        assert isinstance(waiter, TrioWaiter)
        assert made.closed
        theirs.send(b"w")
        assert await waited_read(waiter, ours) == b"w"


async def test_a_socket_registered_again_has_one_waiter() -> None:
    with pairs() as [(ours, theirs)]:
        first = watched(ours)
        second = watched(ours)  # (epoll has it already: its events are changed, not added)
        assert first.state is not None  # retired: it waits through trio now
        theirs.send(b"again")
        assert await waited_read(second, ours) == b"again"


async def test_the_transports_readers_are_woken_a_few_per_batch() -> None:
    """200 responses through the pool get their last bytes at the same moment. Waiting
    through trio, their 200 readers would all run in the batch after it; through the
    reactor each batch holds at most two of its passes' worth (a pass's readers, and the
    last steps of the pass before)."""
    count = 200
    go = trio.Event()
    heads_read = 0
    all_heads = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await go.wait()
        await peer.send(b"5\r\nhello\r\n0\r\n\r\n")
        await peer.wait_closed()

    class Readers(trio.abc.Instrument):
        def __init__(self) -> None:
            self.tasks: set[trio.lowlevel.Task] = set()
            self.batches: list[set[trio.lowlevel.Task]] = [set()]

        def after_io_wait(self, timeout: float) -> None:
            if self.batches[-1]:
                self.batches.append(set())

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task in self.tasks:
                self.batches[-1].add(task)

    readers = Readers()
    async with serve(handler) as server:
        pool = HttpPool(HttpSettings(trust_env=False))
        try:

            async def read() -> None:
                nonlocal heads_read
                readers.tasks.add(trio.lowlevel.current_task())
                async with pool.stream(post(server.url)) as response:
                    heads_read += 1
                    if heads_read == count:
                        all_heads.set()
                    assert await response.read() == b"hello"

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for _ in range(count):
                        nursery.start_soon(read)
                    await all_heads.wait()
                    await trio.testing.wait_all_tasks_blocked()
                    trio.lowlevel.add_instrument(readers)
                    go.set()
        finally:
            trio.lowlevel.remove_instrument(readers)
            await pool.aclose()
    sizes = [len(batch) for batch in readers.batches if batch]
    assert sum(sizes) >= count
    assert max(sizes) <= 2 * MOST < count


async def test_a_connect_in_progress_waits_through_the_reactor_and_leaves_nothing() -> None:
    """A listener whose queue of unaccepted connections is full drops the next SYN, so that
    connect stays in progress: it waits as a reader does, and cancelling it forgets it."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        address = listener.getsockname()
        filler = socket.socket()
        try:
            filler.settimeout(0.0)
            filler.connect_ex(address)
            assert select.select([], [filler], [], 5)[1], "the queue's one place was not taken"
            the = the_reactor()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(open_socket, "127.0.0.1", address[1], nodelay=True))
                await trio.testing.wait_all_tasks_blocked()
                waiting = [
                    waiter
                    for waiter in the._waiters.values()  # pyright: ignore[reportPrivateUsage]
                    if isinstance(waiter.state, trio.lowlevel.Task)
                ]
                assert len(waiting) == 1
                nursery.cancel_scope.cancel()
            assert waiting[0].sock.fileno() == -1  # closed
            assert not the._waiters  # pyright: ignore[reportPrivateUsage]
        finally:
            filler.close()


async def test_the_tls_handshake_waits_through_the_connections_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handshake's reads wait through the waiter the connection then reads with, so a
    crowd of handshakes is handed out a few per batch too."""
    given_waiters: list[object] = []
    waits = 0

    async def recording_open_tls(
        sock: socket.socket, context: ssl.SSLContext, hostname: str, waiter: Waiter
    ) -> object:
        nonlocal waits
        given_waiters.append(waiter)
        real_wait = waiter.wait

        class Counting:
            sock = waiter.sock

            async def wait(self) -> None:
                nonlocal waits
                waits += 1
                await real_wait()

        return await open_tls(sock, context, hostname, Counting())  # type: ignore[arg-type]

    monkeypatch.setattr("llm_invocation.http._transport.open_tls", recording_open_tls)
    certificates = Certificates(tmp_path)

    async def answer(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await peer.wait_closed()

    async with serve_tls(answer, certificates.server_context()) as server:
        pool = HttpPool(HttpSettings(trust_env=False, verify=str(certificates.ca_file)))
        try:
            async with pool.stream(post(server.url)) as response:
                assert await response.read() == b"ok"
            transport = pool._fast  # pyright: ignore[reportPrivateUsage]
            assert transport is not None
            [connection] = transport._pool.connections  # pyright: ignore[reportPrivateUsage]
            assert given_waiters == [connection.waiter]
            assert isinstance(connection.waiter, Waiter)
            assert waits >= 1
        finally:
            await pool.aclose()


async def test_a_failed_handshake_leaves_nothing_watched(tmp_path: Path) -> None:
    certificates = Certificates(tmp_path)

    async def never(peer: Peer) -> None:
        await peer.wait_closed()

    async with serve_tls(never, certificates.server_context()) as server:
        pool = HttpPool(HttpSettings(trust_env=False))  # certifi's roots: not this CA
        try:
            with pytest.raises(ProviderError, match="TLS failed"):
                async with pool.stream(post(server.url)):
                    pass
            assert not the_reactor()._waiters  # pyright: ignore[reportPrivateUsage]
        finally:
            await pool.aclose()
