"""Servers for the HTTP tests (no tests here): scripted raw servers, TLS, a proxy.

* `serve` runs a small trio server on 127.0.0.1 (port 0) whose handler scripts exactly what
  goes on the wire, one `Peer` per connection;
* `Certificates` makes a CA, server and client certificates with trustme, and `serve_tls`
  serves a handler over TLS;
* `serve_proxy` is an HTTP proxy that answers every request itself, like a provider, from
  scenarios: absolute-form requests (``POST http://host/...``) and ``CONNECT`` tunnels (then
  TLS with a certificate for the tunnelled host). It records what it saw.

Synchronisation is by events and `trio.testing.wait_all_tasks_blocked`, never by sleeping.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import trio
import trustme

from llm_invocation.testing import MockTransport, Scenarios

# -- a scripted server -------------------------------------------------------------------------


class Request:
    """A request as the server read it."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def method(self) -> str:
        return self.line.split(b" ")[0].decode()

    @property
    def target(self) -> str:
        return self.line.split(b" ")[1].decode()

    def header(self, name: str) -> bytes | None:
        match = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\r$", self.head)
        return match[1] if match else None

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                out[name.decode().lower()] = value.strip().decode("latin-1")
        return out


class Peer:
    """The server's side of one connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def request(self) -> Request | None:
        """The next request, or None when the client closed the connection."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                return None
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        request = Request(head, b"")
        if (request.header("transfer-encoding") or b"").lower() == b"chunked":
            body = bytearray()
            while True:
                while b"\r\n" not in self.buffer:
                    assert await self._fill()
                line_end = self.buffer.index(b"\r\n")
                size = int(self.buffer[:line_end], 16)
                while len(self.buffer) < line_end + 2 + size + 2:
                    assert await self._fill()
                body += self.buffer[line_end + 2 : line_end + 2 + size]
                del self.buffer[: line_end + 2 + size + 2]
                if not size:
                    break
            request.body = bytes(body)
        else:
            length = int(request.header("content-length") or 0)
            while len(self.buffer) < length:
                assert await self._fill()
            request.body = bytes(self.buffer[:length])
            del self.buffer[:length]
        return request

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def wait_closed(self) -> None:
        """Return when the client closed (or reset) the connection."""
        try:
            while await self._fill():
                pass
        except trio.BrokenResourceError:
            pass

    async def reset(self) -> None:
        """Close with a TCP reset instead of an orderly FIN."""
        assert isinstance(self.stream, trio.SocketStream)
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


class Server:
    def __init__(self, url: str) -> None:
        self.url = url
        self.connections = 0
        self.requests: list[Request] = []


Handler = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncGenerator[Server]:
    """Run ``handler`` for every connection to a server on 127.0.0.1, port 0."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        server = Server(f"http://127.0.0.1:{port}")

        async def connection(stream: trio.SocketStream) -> None:
            server.connections += 1
            try:
                await handler(Peer(stream))
            except trio.BrokenResourceError:
                pass  # the client went away
            finally:
                await trio.aclose_forcefully(stream)

        nursery.start_soon(trio.serve_listeners, connection, listeners)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def answer_each(response: bytes, peer: Peer) -> None:
    """Answer every request on the connection with ``response``."""
    while await peer.request() is not None:
        await peer.send(response)


# -- answering like a provider -----------------------------------------------------------------


async def answer_like_a_provider(
    peer: Peer, request: Request, provider: MockTransport, *, host: str
) -> None:
    """Answer ``request`` as the fake provider would (chunked), on ``peer``."""
    target = request.target
    url = target if "://" in target else f"https://{host}{target}"
    headers = [(k, v) for k, v in request.headers().items() if k not in ("host", "content-length")]
    reply = await provider.handle_async_request(
        httpx.Request(request.method, url, headers=headers, content=request.body)
    )
    head = [b"HTTP/1.1 %d Answer\r\n" % reply.status_code]
    for name, value in reply.headers.raw:
        if name.lower() not in (b"content-length", b"transfer-encoding"):
            head.append(name + b": " + value + b"\r\n")
    head.append(b"Transfer-Encoding: chunked\r\n\r\n")
    await peer.send(b"".join(head))
    stream = reply.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    async for piece in stream:
        if piece:
            await peer.send(b"%x\r\n%b\r\n" % (len(piece), piece))
    await peer.send(b"0\r\n\r\n")


# -- TLS -----------------------------------------------------------------------------------------


@dataclass
class Certificates:
    """A CA (its certificate in ``ca_file``), a server certificate and a client certificate."""

    folder: Path
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "api.provider.invalid")
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.server = self.ca.issue_cert(*self.hosts)
        self.client = self.ca.issue_cert("client@llm-invocation.test")
        self.ca_file = self.folder / "ca.pem"
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.client_file = self.folder / "client.pem"  # certificate and key
        self.client.private_key_and_cert_chain_pem.write_to_path(self.client_file)
        self.client_cert_file = self.folder / "client-cert.pem"
        for blob in self.client.cert_chain_pems:
            blob.write_to_path(self.client_cert_file, append=True)
        self.client_key_file = self.folder / "client-key.pem"
        self.client.private_key_pem.write_to_path(self.client_key_file)

    def server_context(self, *, require_client: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        if require_client:
            self.ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def encrypted_client_key(self, password: bytes) -> Path:
        """The client key encrypted with ``password`` (PEM), in a file."""
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(self.client.private_key_pem.bytes(), None)
        path = self.folder / "client-key-encrypted.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password),
            )
        )
        return path


@asynccontextmanager
async def serve_tls(handler: Handler, context: ssl.SSLContext) -> AsyncGenerator[Server]:
    """An https server on 127.0.0.1 running ``handler`` for each connection."""

    server: Server | None = None

    async def connection(stream: trio.SSLStream[trio.SocketStream]) -> None:
        assert server is not None
        server.connections += 1
        try:
            await handler(Peer(stream))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a client that refused the certificate, or went away
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, connection, 0, context, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        server = Server(f"https://127.0.0.1:{port}")
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


# -- a proxy -----------------------------------------------------------------------------------


class Proxy:
    """What a test proxy saw: request lines (``POST http://...``, ``CONNECT host:443``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lines: list[str] = []
        self.authorizations: list[str | None] = []


@asynccontextmanager
async def serve_proxy(
    scenarios: Scenarios | None = None, *, tunnel_tls: ssl.SSLContext | None = None
) -> AsyncGenerator[Proxy]:
    """An HTTP proxy on 127.0.0.1 that answers every request itself, like a provider.

    Absolute-form requests are answered from ``scenarios``; a ``CONNECT`` is accepted and
    the tunnel's TLS ends here (``tunnel_tls``), where the requests are answered the same way.
    No origin server is ever contacted.
    """
    provider = MockTransport(scenarios)

    async def connection(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            proxy.lines.append(request.line.decode())
            auth = request.header("proxy-authorization")
            proxy.authorizations.append(auth.decode() if auth is not None else None)
            if request.method == "CONNECT":
                host = request.target.rsplit(":", 1)[0]
                await peer.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if tunnel_tls is None:
                    return
                tls = trio.SSLStream(peer.stream, tunnel_tls, server_side=True)
                inner = Peer(tls)
                inner.buffer = peer.buffer
                while (tunnelled := await inner.request()) is not None:
                    proxy.lines.append(f"(tunnel {host}) {tunnelled.line.decode()}")
                    await answer_like_a_provider(inner, tunnelled, provider, host=host)
                return
            await answer_like_a_provider(peer, request, provider, host="unused")

    async with serve(connection) as server:
        proxy = Proxy(server.url)
        yield proxy
