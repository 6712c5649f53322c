"""The HTTP/1.1 wire format of `FastHTTPTransport`: response heads, chunk lines, request heads.

Parsing follows h11 (the parser httpx's own transport uses) rule for rule, and a differential
test feeds generated responses to both: a response this module accepts is one h11 accepts,
with the same status, headers and body, and a response h11 refuses is refused here too.

* **Head.** It ends at the first ``LF [CR] LF``; lines end in LF with an optional CR before it
  (bare LF line ends are read, as h11 does). The status line is
  ``HTTP/<digit>.<digit> SP <3 digits> [SP reason]``; statuses below 100 are refused.
  A header line is ``token ":" OWS value OWS`` where the value holds no NUL, CR, LF, VT or FF;
  a line starting with SP or HTAB continues the previous one (obsolete line folding: joined
  with one space). ``Content-Length`` must be digits (at most 20), repeated only with the
  same text; it is kept once. ``Transfer-Encoding`` may appear once and only as ``chunked``
  (any case; kept in lower case). Both may appear: chunked framing wins.
* **Chunks.** A size line is ``1*20 HEXDIG [";" extension] OWS CRLF`` (extensions ignored);
  chunk data is followed by exactly CRLF. Trailer fields after the last chunk follow the
  header rules above (and end like a head); they are checked and dropped.
* **Requests.** The method and every header name must be tokens (RFC 9110), and no header
  value may contain CR, LF or NUL: such a request is refused before a byte is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Iterable
from typing import Final

import httpx
import msgspec

__all__ = [
    "BAD_VALUE",
    "HEAD_END",
    "HEX_DIGITS",
    "MAX_CHUNK_LINE",
    "MAX_HEAD",
    "MAX_TRAILERS",
    "TOKEN",
    "Head",
    "Message",
    "chunk_size",
    "encode_message",
    "encode_request",
    "message_of",
    "parse_head",
    "parse_trailers",
    "request_line",
]

MAX_HEAD: Final = 64 * 1024
MAX_CHUNK_LINE: Final = 8 * 1024
MAX_TRAILERS: Final = 64 * 1024
_JOIN_BODY_LIMIT: Final = 256 * 1024

HEX_DIGITS: Final = b"0123456789abcdefABCDEF"
_TCHARS: Final = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
_VALUE_BYTE: Final = rb"[^\x00\n\r\x0b\x0c]"
TOKEN: Final = re.compile(_TCHARS + rb"+")
"""RFC 9110 ``token``: a method or a field name."""
BAD_VALUE: Final = re.compile(rb"[\x00\n\r\x0b\x0c]")
"""Bytes no field value may hold (h11 allows every other byte but leading/trailing OWS)."""
HEAD_END: Final = re.compile(rb"\n\r?\n")
"""The empty line that ends a head (or a trailer section)."""
_STATUS_LINE: Final = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: (" + _VALUE_BYTE + rb"*))?")
_CHUNK_LINE: Final = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")
_LENGTH: Final = re.compile(rb"[0-9]{1,20}")
_PLAIN_FIELDS: Final = re.compile(
    rb"(?:" + _TCHARS + rb"+:[ \t]*(?:" + _VALUE_BYTE + rb"*[^\x00\n\r\x0b\x0c \t])?\r\n)*"
)
"""Header lines that each end in CRLF, none folded, each a token, a colon and a value that
does not end in a space or a tab."""
_PLAIN_FIELD: Final = re.compile(rb"(" + _TCHARS + rb"+):[ \t]*(" + _VALUE_BYTE + rb"*)\r\n")
"""One of `_PLAIN_FIELDS`' lines: its name and its value without the spaces before it."""
_FRAMING: Final = frozenset((b"content-length", b"transfer-encoding", b"connection"))


class Head(msgspec.Struct):
    """A parsed response head and what it says about the body and the connection."""

    status: int
    reason: bytes
    version: bytes
    """``b"HTTP/1.1"``, ``b"HTTP/1.0"``..."""
    headers: list[tuple[bytes, bytes]]
    """Names as sent; ``Content-Length`` once, ``Transfer-Encoding`` in lower case (as h11)."""
    length: int | None
    chunked: bool
    keep_alive: bool


def _lines(block: bytes) -> list[bytes]:
    """The lines of a head or trailer section (without its final empty line)."""
    lines = block.split(b"\n")
    for index, line in enumerate(lines):
        if line[-1:] == b"\r":
            lines[index] = line[:-1]
    return lines


_Fields = tuple[list[tuple[bytes, bytes]], bytes | None, bool, list[bytes]]
"""Header fields, their Content-Length text, whether chunked, their Connection values."""


def _fields(lines: list[bytes]) -> _Fields:
    """Header fields from their lines (see `_Fields`).

    Raises:
        httpx.RemoteProtocolError: a line, a Content-Length or a Transfer-Encoding is invalid.
    """
    unfolded: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):  # obsolete line folding: continues the previous line
            if not unfolded:
                raise httpx.RemoteProtocolError("malformed header: continuation line first")
            unfolded[-1] += b" " + line.lstrip(b" \t")
        else:
            unfolded.append(line)
    pairs: list[tuple[bytes, bytes]] = []
    for line in unfolded:
        name, colon, rest = line.partition(b":")
        value = rest.strip(b" \t")
        if not colon or not TOKEN.fullmatch(name) or BAD_VALUE.search(value):
            raise httpx.RemoteProtocolError(f"malformed header line: {line[:100]!r}")
        pairs.append((name, value))
    return _framing(pairs)


def _framing(pairs: list[tuple[bytes, bytes]]) -> _Fields:
    """`_fields` from well-formed (name, value) pairs: what their ``Content-Length``,
    ``Transfer-Encoding`` and ``Connection`` say, checked.

    Raises:
        httpx.RemoteProtocolError: a Content-Length or a Transfer-Encoding is invalid.
    """
    fields: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    chunked = False
    connection: list[bytes] = []
    for name, value in pairs:
        lower = name.lower()
        if lower not in _FRAMING:
            fields.append((name, value))
            continue
        if lower == b"connection":
            connection.append(value)
        elif lower == b"content-length":
            items = {item.strip(b" \t") for item in value.split(b",")}
            if len(items) != 1:
                raise httpx.RemoteProtocolError("conflicting Content-Length headers")
            value = items.pop()
            if not _LENGTH.fullmatch(value):
                raise httpx.RemoteProtocolError(f"malformed Content-Length: {value[:40]!r}")
            if length is None:
                length = value
            elif value != length:
                raise httpx.RemoteProtocolError("conflicting Content-Length headers")
            else:
                continue  # the same length again: kept once
        elif lower == b"transfer-encoding":
            if chunked:
                raise httpx.RemoteProtocolError("more than one Transfer-Encoding header")
            value = value.lower()
            if value != b"chunked":
                raise httpx.RemoteProtocolError(
                    f"unsupported Transfer-Encoding: {value[:40]!r} (only chunked)"
                )
            chunked = True
        fields.append((name, value))
    return fields, length, chunked, connection


def parse_head(block: bytes) -> Head:
    """Parse a response head: ``block`` is everything before the `HEAD_END` match.

    Raises:
        httpx.RemoteProtocolError: the status line or a header line is malformed.
    """
    # Without the CR of the last line's CRLF (the `HEAD_END` match takes the LF).
    plain = block[:-1] if block[-1:] == b"\r" else block
    end = plain.find(b"\r\n")
    if end < 0:
        status, rest = plain, b""
    else:
        status, rest = plain[:end], plain[end + 2 :] + b"\r\n"
    # Every line ends in CRLF, nothing is folded, every field is well formed: one pass.
    lines = None
    if b"\n" in status or _PLAIN_FIELDS.fullmatch(rest) is None:
        lines = _lines(block)
        status = lines[0]
    match = _STATUS_LINE.fullmatch(status)
    if match is None or match[2] < b"100":
        raise httpx.RemoteProtocolError(f"malformed status line: {status[:100]!r}")
    number, code, reason = match.groups()
    if lines is None:
        headers, length, chunked, connection = _framing(_PLAIN_FIELD.findall(rest))
    else:
        headers, length, chunked, connection = _fields(lines[1:])
    keep_alive = number >= b"1.1"
    for value in connection:
        tokens = {token.strip(b" \t").lower() for token in value.split(b",")}
        if b"close" in tokens:
            keep_alive = False
            break
        if b"keep-alive" in tokens:
            keep_alive = True
    if chunked and length is not None:
        # RFC 9112 6.1: chunked framing wins, and such a connection is not reused.
        keep_alive = False
    return Head(
        int(code),
        reason or b"",
        b"HTTP/" + number,
        headers,
        None if chunked or length is None else int(length),
        chunked,
        keep_alive,
    )


def parse_trailers(block: bytes) -> None:
    """Check the trailer fields of a chunked body (everything before its `HEAD_END`).

    Raises:
        httpx.RemoteProtocolError: a trailer line is malformed.
    """
    _fields(_lines(block))


def chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (without its CRLF); extensions are ignored.

    Raises:
        httpx.RemoteProtocolError: the line is not a chunk-size line.
    """
    match = _CHUNK_LINE.fullmatch(line)
    if match is None:
        raise httpx.RemoteProtocolError(f"malformed chunk size line: {line[:40]!r}")
    return int(match[1], 16)


class Message(msgspec.Struct, kw_only=True):
    """An encoded request, ready to send."""

    first: bytes
    """The head, with the body joined to it when that is bytes of at most 256 KiB."""
    rest: bytes
    """A larger bytes body, sent on its own after the head."""
    stream: AsyncIterable[bytes] | None
    """A streamed body (never replayed)."""
    chunked: bool
    """Whether ``stream`` is sent with chunked framing."""
    close: bool
    """Whether the request asked for ``Connection: close``."""


def encode_request(request: httpx.Request) -> Message:
    """The bytes to send for ``request``.

    Raises:
        httpx.LocalProtocolError: the method or a header name is not a token, or a header
            value contains CR, LF or NUL.
        RuntimeError: the body is a sync stream.
    """
    url = request.url
    try:
        body: bytes | None = request.content
    except httpx.RequestNotRead:
        body = None
    method = request.method.encode("ascii", "replace")
    if body is not None:
        return encode_message(method, url.raw_path, url.netloc, request.headers.raw, body)
    parts, has_length, has_coding, close = _head(
        method, url.raw_path, url.netloc, request.headers.raw
    )
    stream = request.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise RuntimeError("Attempted to send a sync request with an AsyncClient instance.")
    chunked = not has_length
    if chunked and not has_coding:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(b"\r\n")
    return Message(first=b"".join(parts), rest=b"", stream=stream, chunked=chunked, close=close)


def encode_message(
    method: bytes, target: bytes, netloc: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> Message:
    """The bytes to send for a request with a body in memory (``b""``: none), to
    ``target`` (the path and query) at ``netloc`` (the ``Host``, unless ``headers`` name one).

    Raises:
        httpx.LocalProtocolError: the method or a header name is not a token, or a header
            value contains CR, LF or NUL.
    """
    parts, _, _, close = _head(method, target, netloc, headers)
    parts.append(b"\r\n")
    return message_of(parts, body, close=close)


def message_of(head: list[bytes], body: bytes, *, close: bool) -> Message:
    """The `Message` of a request whose head is the bytes ``head`` (its empty line
    included) and whose body is ``body``, in memory. ``head`` is extended."""
    if len(body) <= _JOIN_BODY_LIMIT:
        head.append(body)
        return Message(first=b"".join(head), rest=b"", stream=None, chunked=False, close=close)
    return Message(first=b"".join(head), rest=body, stream=None, chunked=False, close=close)


def request_line(method: bytes, target: bytes) -> bytes:
    """``method target HTTP/1.1`` and its line end.

    Raises:
        httpx.LocalProtocolError: the method is not a token.
    """
    if not TOKEN.fullmatch(method):
        raise httpx.LocalProtocolError("illegal request method: not a token")
    return b"%s %s HTTP/1.1\r\n" % (method, target)


def _head(
    method: bytes, target: bytes, netloc: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> tuple[list[bytes], bool, bool, bool]:
    """The request line and header lines (the empty line not yet), and whether the headers
    hold a ``Content-Length``, a ``Transfer-Encoding`` and ``Connection: close``.

    Raises:
        httpx.LocalProtocolError: as `encode_message`.
    """
    parts = [request_line(method, target)]
    has_host = has_connection = has_length = has_coding = close = False
    for name, value in headers:
        if not TOKEN.fullmatch(name):
            raise httpx.LocalProtocolError("illegal header name: not a token")
        if b"\n" in value or b"\r" in value or b"\0" in value:
            raise httpx.LocalProtocolError(f"illegal value of header {name!r}: CR, LF or NUL")
        lower = name.lower()
        if lower == b"host":
            has_host = True
        elif lower == b"connection":
            has_connection = True
            close = close or b"close" in value.lower()
        elif lower == b"content-length":
            has_length = True
        elif lower == b"transfer-encoding":
            has_coding = True
        parts += (name, b": ", value, b"\r\n")
    if not has_host:
        parts += (b"Host: ", netloc, b"\r\n")
    if not has_connection:
        parts.append(b"Connection: keep-alive\r\n")
    return parts, has_length, has_coding, close
