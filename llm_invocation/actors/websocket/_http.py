"""The front's plain-HTTP side: reading a request head, static files, refusals, tokens.

Every TCP connection starts here. The front reads the request head itself, so one port
serves both the chat page (``GET /`` and its files) and the WebSocket endpoint (``/ws``).
h11 parses the head (`HeadReader`): a malformed head is refused with 400, one still
incomplete past `MAX_HEAD` bytes with 431, an unsupported ``Transfer-Encoding`` with 501,
and a ``GET`` or ``HEAD`` that carries a body with 400 (no endpoint here takes one, and
a WebSocket handshake's body would be silently lost after the upgrade).
A WebSocket upgrade is checked (path, ``Origin``, bearer token) and then handed to
trio-websocket together with every byte already read (`PrefixedStream`), which parses the
handshake again with wsproto. Anything refused gets a small ``Connection: close`` answer,
written by h11 too (`http_response`).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import h11
import trio

__all__ = [
    "BEARER_PREFIX",
    "MAX_HEAD",
    "PAGE_HEADERS",
    "BadRequest",
    "HeadReader",
    "PrefixedStream",
    "RequestHead",
    "StaticFile",
    "TokenCheck",
    "http_response",
    "is_loopback_host",
    "load_static",
    "loopback_origins",
    "offered_subprotocols",
    "parse_head",
    "presented_tokens",
    "reason_phrase",
    "read_head",
]

MAX_HEAD: Final = 16384
_RECEIVE: Final = 4096
_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def reason_phrase(status: int) -> str:
    """The reason phrase the front writes for ``status`` (RFC 9110's wording)."""
    return _REASONS.get(status, "Error")


# The page reads its token from its own URL: keep that URL out of Referer headers, and let
# it load nothing but its own files and talk to nothing but this server.
PAGE_HEADERS: Final = [
    (
        "Content-Security-Policy",
        (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
]
# h11's messages end with the offending bytes (``illegal header line: b'...'``); a refusal
# says what was wrong without echoing them back.
_ECHOED_BYTES: Final = re.compile(r":? *(?:bytearray\()?b['\"].*", re.DOTALL)
_NO_BODY: Final = frozenset({b"GET", b"HEAD"})


class BadRequest(Exception):
    """The bytes read are not an acceptable HTTP/1.1 request head (answered with ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@final
@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request head; ``raw`` is every byte read so far (head and anything after).

    Header names are lower case; a header sent more than once has its values joined with
    ``", "`` (RFC 9110 5.3).
    """

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def is_websocket(self) -> bool:
        upgrade = self.headers.get("upgrade", "")
        return "websocket" in upgrade.lower()


@final
class HeadReader:
    """Reads one request head with h11, without I/O: `feed` it bytes until it returns one.

    Args:
        limit: the most bytes an incomplete head may take before it is refused (431).
    """

    __slots__ = ("_connection", "_raw")

    def __init__(self, *, limit: int = MAX_HEAD) -> None:
        self._connection = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
        self._raw = bytearray()

    def feed(self, data: bytes) -> RequestHead | None:
        """Add ``data`` (never an end of stream); the head once it is complete, else None.

        Raises:
            BadRequest: the head is malformed (400), longer than the limit while still
                incomplete (431), announces a transfer coding other than chunked (501),
                speaks an HTTP version other than 1.x (400), or is a ``GET`` or ``HEAD``
                with a body (400). Feeding more after a refusal raises it again (400).
        """
        if data:
            self._raw += data
            self._connection.receive_data(data)
        try:
            event = self._connection.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(exc.error_status_hint, _explain(exc)) from None
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 gives a Request first
            raise BadRequest(400, "not an HTTP request")
        return _request_head(event, bytes(self._raw))


def _explain(exc: h11.RemoteProtocolError) -> str:
    if exc.error_status_hint == 431:
        return "request head too large"
    return _ECHOED_BYTES.sub("", str(exc)) or "malformed request head"


def _request_head(request: h11.Request, raw: bytes) -> RequestHead:
    if not request.http_version.startswith(b"1."):
        raise BadRequest(400, "unsupported HTTP version")
    headers: dict[str, str] = {}
    body = False
    for name, value in request.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        # Repeated headers join with commas (RFC 9110 5.3).
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
        body |= name == b"transfer-encoding" or (name == b"content-length" and int(value) > 0)
    if body and request.method in _NO_BODY:
        raise BadRequest(400, f"a {request.method.decode()} request must not have a body")
    target = request.target.decode("latin-1")
    if target.startswith("/"):
        # origin-form (RFC 9112 3.2.1): ``//x`` is a path here, not an authority
        path, _, query = target.partition("?")
    else:  # absolute-form, or ``*``
        try:
            split = urllib.parse.urlsplit(target)
        except ValueError:  # e.g. an unclosed ``[`` in the authority
            raise BadRequest(400, "malformed request target") from None
        path, query = split.path or "/", split.query
    return RequestHead(
        method=request.method.decode("ascii"),
        target=target,
        path=path,
        query=urllib.parse.parse_qs(query, keep_blank_values=True),
        headers=headers,
        raw=raw,
    )


def parse_head(raw: bytes, *, limit: int = MAX_HEAD) -> RequestHead | None:
    """Parse the request head at the start of ``raw``; None when it is not complete yet.

    Raises:
        BadRequest: as `HeadReader.feed`.
    """
    return HeadReader(limit=limit).feed(raw)


async def read_head(stream: trio.abc.ReceiveStream, *, limit: int = MAX_HEAD) -> RequestHead | None:
    """Read one request head from ``stream``; None when the peer closes before one arrives.

    Raises:
        BadRequest: as `HeadReader.feed`: the head is malformed (400), longer than ``limit``
            while incomplete (431), and so on.
    """
    reader = HeadReader(limit=limit)
    while True:
        try:
            data = await stream.receive_some(_RECEIVE)
        except trio.BrokenResourceError:
            return None
        if not data:
            return None
        head = reader.feed(bytes(data))
        if head is not None:
            return head


def http_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response, written by h11.

    Raises:
        ValueError: ``status`` is not a final status (200-999), or a header name or value
            is not valid in HTTP (a line break, say).
    """
    fields = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *headers,
    ]
    connection = h11.Connection(h11.SERVER)
    try:
        response = h11.Response(status_code=status, reason=reason_phrase(status), headers=fields)
        head = connection.send(response)
        if head_only:
            return head
        return head + connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
    except h11.LocalProtocolError as exc:
        raise ValueError(f"not a valid HTTP response: {exc}") from None


@final
class PrefixedStream(trio.abc.Stream):
    """A stream that first returns bytes already read from ``inner``, then reads ``inner``.

    The front hands trio-websocket the request head it read this way, so that wsproto can
    parse the handshake again. Bytes a client sent after the head, before the 101 answer
    (RFC 6455 4.1 says it must wait for it), are replayed too but wsproto's server drops
    them.
    """

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self._inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self._inner, trio.abc.HalfCloseableStream):
            await self._inner.send_eof()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- static files ---------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class StaticFile:
    content_type: str
    body: bytes


def load_static(directory: str | os.PathLike[str] | None) -> dict[str, StaticFile]:
    """The files directly in ``directory`` (default: the packaged chat page) by URL path.

    ``/`` serves ``index.html``. Blocking: run it in a worker thread.
    """
    items: list[tuple[str, bytes]]
    if directory is None:
        web = importlib.resources.files("llm_invocation").joinpath("web")
        items = [(entry.name, entry.read_bytes()) for entry in web.iterdir() if entry.is_file()]
    else:
        folder = Path(directory)
        items = [(path.name, path.read_bytes()) for path in folder.iterdir() if path.is_file()]
    files: dict[str, StaticFile] = {}
    for name, body in items:
        if name.startswith("."):
            continue
        suffix = os.path.splitext(name)[1].lower()
        files["/" + name] = StaticFile(_CONTENT_TYPES.get(suffix, "application/octet-stream"), body)
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


# -- tokens ---------------------------------------------------------------------------------------


@final
class TokenCheck:
    """Checks presented bearer tokens against the configured ones in constant time.

    Tokens are compared as SHA-256 digests with `hmac.compare_digest`, against every
    configured token without stopping early, so neither which token matched nor any
    token's length shows in the timing.
    """

    __slots__ = ("_digests",)

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(token.encode()).digest() for token in tokens]

    @property
    def open(self) -> bool:
        """No tokens are configured: every handshake is accepted."""
        return not self._digests

    def accepts(self, candidate: str) -> bool:
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


BEARER_PREFIX: Final = "bearer."


def presented_tokens(head: RequestHead) -> tuple[list[str], str | None]:
    """The tokens a handshake presents, and the ``bearer.<token>`` subprotocol if any.

    Three places: ``Authorization: Bearer <token>``, the ``token`` query parameter (for
    browsers, which cannot set headers), and a ``bearer.<token>`` entry of
    ``Sec-WebSocket-Protocol``.
    """
    found: list[str] = []
    authorization = head.header("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            found.append(value.strip())
    found.extend(head.query.get("token", []))
    protocol: str | None = None
    for offered in offered_subprotocols(head):
        if offered.lower().startswith(BEARER_PREFIX) and len(offered) > len(BEARER_PREFIX):
            found.append(offered[len(BEARER_PREFIX) :])
            protocol = protocol or offered
    return found, protocol


def offered_subprotocols(head: RequestHead) -> list[str]:
    value = head.header("sec-websocket-protocol")
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` is reachable from this machine only.

    ``localhost`` and loopback addresses are; a wildcard (``0.0.0.0``, ``::``), any other
    address and any other name are not (a name may resolve to anything).
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def loopback_origins(port: int) -> frozenset[str]:
    """The ``Origin`` values of pages served from this machine's loopback on ``port``.

    ``http://127.0.0.1:<port>``, ``http://localhost:<port>`` and ``http://[::1]:<port>``
    (without ``:<port>`` too when it is 80, as browsers send it then).
    """
    hosts = ("127.0.0.1", "localhost", "[::1]")
    origins = {f"http://{host}:{port}" for host in hosts}
    if port == 80:
        origins.update(f"http://{host}" for host in hosts)
    return frozenset(origins)
