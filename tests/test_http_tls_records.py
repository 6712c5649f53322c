"""Our TLS record plumbing is `trio.SSLStream`'s, proven on scripted server conversations.

`FastHTTPTransport` drives TLS itself on its raw-socket loop (an `ssl.SSLObject` between
memory BIOs, ``_connection.py``). The differential tests here run the same server
conversation against our connection and against `trio.SSLStream` (``https_compatible``, as
the transport used before): the server's records (session tickets first, then the data, then
its end) are cut into pieces at generated points, and each piece is sent only once the
client has read everything before it and waits again, so records arrive split across reads,
several per read, or whole. Both must receive the same bytes and end the same way: at the
end of the stream (``close_notify``, or the connection's end with or without a partial
record), or with the same TLS error (a corrupt record). Sending is compared the same way:
what the server decrypts must be what the client gave, for bodies of every size.

The server end is an `ssl.SSLObject` too, driven by the test over one end of a socket pair,
so that the records and the cuts are exactly the ones scripted. Synchronisation is by
`trio.testing.wait_all_tasks_blocked`, never by sleeping.

Where ours differs on purpose: one read hands out every whole record already received (trio
hands out one record per read), closing a healthy connection sends ``close_notify`` (trio's
``https_compatible`` stream does not), and records left after a response make the idle
connection stale.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

import httpx
import pytest
import trio
import trio.testing
import trustme
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llm_invocation.http._connection import Connection, ConnectionPool, open_tls

HOST = "localhost"
Ending = Literal["close_notify", "eof", "truncated", "corrupt"]
Outcome = tuple[bytes, str, bool]
"""(the bytes received, how the stream ended, whether every read kept to its size)."""
Connect = Callable[[socket.socket, ssl.SSLContext], Awaitable["TLSClient"]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)
    return context


class Server:
    """The server end of a socket pair, speaking TLS through memory BIOs, as scripted."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        sock.settimeout(0.0)  # non-blocking
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    async def handshake(self) -> bytes:
        """Shake hands; return what the server has to send after it (session tickets)."""
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                await self.send(self.outgoing.read())
                await trio.lowlevel.wait_readable(self.sock)
                self.incoming.write(self.sock.recv(65536))
            else:
                return self.outgoing.read()

    def records(self, data: bytes) -> bytes:
        """``data`` encrypted (one record per 16 KiB)."""
        self.obj.write(data)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)

    async def send_in_pieces(self, wire: bytes, cuts: list[int]) -> None:
        """Send ``wire`` in pieces of the lengths ``cuts`` (then the rest), each once the
        client has read all before it."""
        start = 0
        for length in [*cuts, len(wire)]:
            piece = wire[start : start + length]
            start += len(piece)
            if piece:
                await self.send(piece)
                await trio.testing.wait_all_tasks_blocked()

    async def receive_all(self) -> bytes:
        """Decrypt what the client sends until it closes (with close_notify or without)."""
        received = bytearray()
        while True:
            try:
                data = self.obj.read(65536)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return bytes(received)
            else:
                if not data:  # close_notify
                    return bytes(received)
                received += data
                continue
            await trio.lowlevel.wait_readable(self.sock)
            data = self.sock.recv(65536)
            if data:
                self.incoming.write(data)
            else:
                self.incoming.write_eof()

    def close(self) -> None:
        self.sock.close()


class TLSClient:
    """What a client is: reads, writes and closes, whichever TLS implementation it is."""

    def __init__(
        self,
        receive: Callable[[int], Awaitable[bytes]],
        send: Callable[[bytes], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.receive = receive
        self.send = send
        self.close = close


async def trio_client(sock: socket.socket, context: ssl.SSLContext) -> TLSClient:
    """The reference: `trio.SSLStream` as the transport used it."""
    stream = trio.SSLStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
        context,
        server_hostname=HOST,
        https_compatible=True,
    )
    await stream.do_handshake()

    async def receive(size: int) -> bytes:
        try:
            return bytes(await stream.receive_some(size))
        except trio.BrokenResourceError as exc:
            if not isinstance(exc.__cause__, ssl.SSLError):
                raise
            raise exc.__cause__ from None  # the TLS error itself, to compare

    return TLSClient(receive, stream.send_all, stream.aclose)


async def our_client(sock: socket.socket, context: ssl.SSLContext) -> TLSClient:
    """Our connection, on its raw-socket loop."""
    sock.settimeout(0.0)  # non-blocking
    tls = await open_tls(sock, context, HOST)
    pool = ConnectionPool(max_connections=1, max_idle=1, keepalive_expiry=30.0)
    conn = Connection(("https", HOST, 443), sock, tls, pool.watchdog)

    async def receive(size: int) -> bytes:
        try:
            return await conn.recv(size, None)
        except httpx.ReadError as exc:
            if not isinstance(exc.__cause__, ssl.SSLError):
                raise
            raise exc.__cause__ from None  # the TLS error itself, to compare

    async def send(data: bytes) -> None:
        await conn.send(data, None)

    async def close() -> None:
        conn.close()
        await trio.lowlevel.checkpoint()

    return TLSClient(receive, send, close)


@asynccontextmanager
async def connected(
    ca: trustme.CA, client: Connect
) -> AsyncGenerator[tuple[Server, TLSClient, bytes]]:
    """A server and a client after the handshake, and what the server has to send next."""
    ours, theirs = socket.socketpair()
    server = Server(theirs, server_context(ca))
    after: list[bytes] = []
    readers: list[TLSClient] = []

    async def shake() -> None:
        after.append(await server.handshake())

    async def connect() -> None:
        readers.append(await client(ours, client_context(ca)))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shake)
            nursery.start_soon(connect)
        yield server, readers[0], after[0]
    finally:
        server.close()
        ours.close()


async def conversation(
    ca: trustme.CA,
    client: Connect,
    writes: list[bytes],
    ending: Ending,
    cuts: list[int],
    size: int,
) -> Outcome:
    """Run the scripted server conversation against ``client``; what the client made of it."""
    async with connected(ca, client) as (server, reader, tickets):
        wire = tickets + b"".join(server.records(data) for data in writes)
        if ending == "close_notify":
            wire += server.close_notify()
        elif ending == "truncated":
            last = server.records(b"the record the connection's end cuts short")
            wire += last[: len(last) // 2]
        elif ending == "corrupt":
            last = bytearray(server.records(b"a record whose tag was changed on the way"))
            last[-1] ^= 0xFF
            wire += bytes(last)
        received = bytearray()
        kept_to_size = True
        end = "open"

        async def read() -> None:
            nonlocal end, kept_to_size
            try:
                while data := await reader.receive(size):
                    kept_to_size = kept_to_size and len(data) <= size
                    received.extend(data)
                end = "end of stream"
            except ssl.SSLError as exc:
                end = f"{type(exc).__name__}: {exc.reason}"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await server.send_in_pieces(wire, cuts)
            server.close()  # the end of the connection, after everything was read
        return bytes(received), end, kept_to_size


async def both(
    ca: trustme.CA, writes: list[bytes], ending: Ending, cuts: list[int], size: int
) -> tuple[Outcome, Outcome]:
    return (
        await conversation(ca, our_client, writes, ending, cuts, size),
        await conversation(ca, trio_client, writes, ending, cuts, size),
    )


@settings(max_examples=100, deadline=None)
@given(
    writes=st.lists(st.binary(min_size=1, max_size=3000), max_size=6),
    ending=st.sampled_from(["close_notify", "eof", "truncated", "corrupt"]),
    cuts=st.lists(st.integers(1, 600), max_size=12),
    size=st.one_of(st.integers(1, 200), st.sampled_from([16384, 65536])),
)
@example(writes=[b"data: 1\n\n"] * 5, ending="close_notify", cuts=[], size=65536)  # one read
@example(writes=[b"x" * 2000], ending="corrupt", cuts=[], size=65536)
@example(writes=[b"abc"], ending="eof", cuts=[1] * 300, size=65536)  # a byte at a time
async def test_received_bytes_and_the_end_agree_with_trio_sslstream(
    ca: trustme.CA, writes: list[bytes], ending: Ending, cuts: list[int], size: int
) -> None:
    ours, reference = await both(ca, writes, ending, cuts, size)
    assert ours == reference
    assert ours[0] == b"".join(writes)


@pytest.mark.parametrize("piece", [1000, 16384 + 22, 65536, 200_000])
@pytest.mark.parametrize("size", [1000, 16384, 65536])
async def test_a_large_body_cut_anywhere_agrees_with_trio_sslstream(
    ca: trustme.CA, piece: int, size: int
) -> None:
    body = os.urandom(1 << 20)  # 64 full records
    writes = [body[i : i + 100_000] for i in range(0, len(body), 100_000)]
    cuts = [piece] * ((len(body) + 4096) // piece)
    ours, reference = await both(ca, writes, "close_notify", cuts, size)
    assert ours == reference == (body, "end of stream", True)


@pytest.mark.parametrize("length", [1, 100, 16384, 65535, 65537, 1 << 20])
async def test_what_the_server_decrypts_is_what_was_sent_as_with_trio_sslstream(
    ca: trustme.CA, length: int
) -> None:
    body = os.urandom(length)
    received: dict[str, bytes] = {}
    for name, client in (("ours", our_client), ("trio", trio_client)):
        async with connected(ca, client) as (server, reader, _):

            async def write(reader: TLSClient = reader) -> None:
                await reader.send(body[: length // 2])
                await reader.send(body[length // 2 :])
                await reader.close()

            async def read(name: str = name, server: Server = server) -> None:
                received[name] = await server.receive_all()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(write)
    assert received["ours"] == received["trio"] == body


async def test_every_whole_record_already_received_comes_out_in_one_read(
    ca: trustme.CA,
) -> None:
    events = [b"data: %d\n\n" % i for i in range(5)]
    async with connected(ca, our_client) as (server, reader, tickets):
        await server.send(tickets + b"".join(server.records(event) for event in events))
        assert await reader.receive(65536) == b"".join(events)


async def test_closing_a_healthy_connection_sends_close_notify(ca: trustme.CA) -> None:
    async with connected(ca, our_client) as (server, reader, tickets):
        await server.send(tickets + server.records(b"response"))
        assert await reader.receive(65536) == b"response"
        await reader.close()
        await trio.lowlevel.wait_readable(server.sock)
        alert = server.sock.recv(65536)
        assert alert  # something came before the connection's end
        server.incoming.write(alert)
        assert server.obj.read(10) == b""  # and it was close_notify


async def test_records_left_after_a_response_make_the_idle_connection_stale(
    ca: trustme.CA,
) -> None:
    ours, theirs = socket.socketpair()
    server = Server(theirs, server_context(ca))
    pool = ConnectionPool(max_connections=1, max_idle=1, keepalive_expiry=30.0)
    conns: list[Connection] = []
    tickets: list[bytes] = []

    async def connect() -> None:
        ours.settimeout(0.0)  # non-blocking
        tls = await open_tls(ours, client_context(ca), HOST)
        conns.append(Connection(("https", HOST, 443), ours, tls, pool.watchdog))

    async def shake() -> None:
        tickets.append(await server.handshake())

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shake)
            nursery.start_soon(connect)
        (conn,) = conns
        await server.send(tickets[0] + server.records(b"ok") + server.records(b"unasked"))
        assert await conn.recv(2, None) == b"ok"  # the response: 2 bytes, as its length says
        assert conn.is_stale()  # the unasked record waits in the TLS layer, not the socket
    finally:
        server.close()
        ours.close()
