"""A small forwarding HTTP proxy for the benchmarks, meant to run in a process of its own.

    python benchmarks/_proxy.py [--host 127.0.0.1] [--port 0]

Prints exactly one line, ``READY http://HOST:PORT``, once it listens, then serves until SIGINT
or SIGTERM and exits 0. It reads the head of the first request of each client connection:

* ``CONNECT host:port`` (https through the proxy): it connects to ``host:port``, answers
  ``200 Connection established`` and from then on relays bytes both ways (a tunnel);
* an absolute-form request (``POST http://host:port/path HTTP/1.1``, plain http through the
  proxy): it connects to that origin, forwards the request as it came and from then on relays
  bytes both ways. The client connection is thus pinned to the origin of its first request,
  as httpx's forwarding connections are (one per origin); later requests on it pass through
  unchanged (absolute-form, which an origin server must accept: RFC 9112 3.2.2).

Relaying forwards each read as one write, so one server-sent event per network read stays so
on the client's side. An origin that cannot be reached is answered ``502``; a request head
that is not one of the above, ``400``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import urllib.parse
from functools import partial

import trio

_MAX_HEAD = 64 * 1024
_RECEIVE = 64 * 1024
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def _refusal(status: int, reason: str) -> bytes:
    return b"HTTP/1.1 %d %b\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % (
        status,
        reason.encode(),
    )


def _origin(method: str, target: str) -> tuple[str, int] | None:
    """(host, port) the request line ``method target`` asks for; None when it is not a proxy
    request."""
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        return (host, int(port)) if host and port.isdigit() else None
    split = urllib.parse.urlsplit(target)
    if split.scheme != "http" or not split.hostname:
        return None
    return split.hostname, split.port or 80


async def _read_head(client: trio.SocketStream) -> tuple[bytes, bytes] | None:
    """(head, what followed it) of the first request; None when the client leaves first."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            return None
        data = await client.receive_some(_RECEIVE)
        if not data:
            return None
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def _relay(
    source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
) -> None:
    """Copy ``source`` to ``sink`` read by read; either side closing ends both directions."""
    try:
        while data := await source.receive_some(_RECEIVE):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel()


async def handle(client: trio.SocketStream) -> None:
    """Serve one client connection (see the module docstring)."""
    try:
        read = await _read_head(client)
        if read is None:
            return
        head, rest = read
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        method, target = (line[0], line[1]) if len(line) == 3 else ("", "")
        origin = _origin(method, target)
        if origin is None:
            await client.send_all(_refusal(400, "Bad Request"))
            return
        try:
            upstream = await trio.open_tcp_stream(*origin)
        except OSError:
            await client.send_all(_refusal(502, "Bad Gateway"))
            return
        async with upstream:
            if method == "CONNECT":
                await client.send_all(_ESTABLISHED)
                if rest:
                    await upstream.send_all(rest)
            else:
                await upstream.send_all(head + rest)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_relay, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_relay, upstream, client, nursery.cancel_scope)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away


async def serve(host: str, port: int) -> None:
    """Listen, print ``READY <url>``, serve until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handle, port, host=host))
            bound = listeners[0].socket.getsockname()[1]
            sys.stdout.write(f"READY http://{host}:{bound}\n")
            sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    args = parser.parse_args()
    trio.run(serve, args.host, args.port)


if __name__ == "__main__":
    main()
