"""The front's plain-HTTP side: reading a request head, static files, refusals, tokens.

Every TCP connection starts here. The front reads the request head itself, so one port
serves both the chat page (``GET /`` and its files) and the WebSocket endpoint (``/ws``):
a WebSocket upgrade is checked (path, ``Origin``, bearer token) and then handed to
trio-websocket together with the bytes already read (`PrefixedStream`), which parses the
handshake again with wsproto. Anything refused gets a small ``Connection: close`` answer.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import os
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import trio

__all__ = [
    "BEARER_PREFIX",
    "MAX_HEAD",
    "PAGE_HEADERS",
    "BadRequest",
    "PrefixedStream",
    "RequestHead",
    "StaticFile",
    "TokenCheck",
    "http_response",
    "load_static",
    "offered_subprotocols",
    "parse_head",
    "presented_tokens",
    "read_head",
]

MAX_HEAD: Final = 16384
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
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
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


class BadRequest(Exception):
    """The bytes read are not an HTTP/1.1 request head (answered with ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@final
@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request head; ``raw`` is every byte read so far (head and anything after)."""

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


def parse_head(raw: bytes, end: int) -> RequestHead:
    """Parse the head ending at ``end`` (the index of its blank line).

    Raises:
        BadRequest: the request line or a header line is malformed.
    """
    lines = raw[:end].split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise BadRequest(400, "malformed request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.strip() != name:
            raise BadRequest(400, "malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        # Repeated headers join with commas (RFC 9110 5.3).
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    split = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
    return RequestHead(
        method=method,
        target=target,
        path=split.path or "/",
        query=query,
        headers=headers,
        raw=raw,
    )


async def read_head(stream: trio.abc.ReceiveStream, *, limit: int = MAX_HEAD) -> RequestHead | None:
    """Read one request head from ``stream``; None when the peer closes before one arrives.

    Raises:
        BadRequest: the head is malformed (400) or longer than ``limit`` (431).
    """
    raw = b""
    while True:
        end = raw.find(b"\r\n\r\n")
        if end >= 0:
            return parse_head(raw, end)
        if len(raw) > limit:
            raise BadRequest(431, "request head too large")
        try:
            data = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            return None
        if not data:
            return None
        raw += data


def http_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


@final
class PrefixedStream(trio.abc.Stream):
    """A stream that first returns bytes already read from ``inner``, then reads ``inner``."""

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
