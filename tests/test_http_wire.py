"""Our HTTP/1.1 response parsing is h11's, proven on generated responses; request checks.

`FastHTTPTransport` parses response heads and chunked bodies by hand (the hot path). The
differential tests feed the same bytes, cut at random points, to our real code path (the
transport's head reader and response body on a connection whose reads return the pieces)
and to ``h11.Connection(h11.CLIENT)`` after sending it a matching request. Both must agree:
the same status, reason, version, headers (names in lower case, values as h11 keeps them)
and body, or both refuse the response.

Where we differ from h11 on purpose, outside what is compared here: we do not reuse a
connection after a response that had both ``Transfer-Encoding`` and ``Content-Length``, or
after an HTTP/1.0 response unless it says ``Connection: keep-alive`` (h11 never keeps one);
our head may be up to 64 KiB (httpx gives h11 100 KiB). The generated heads stay far below
both limits.
"""

from __future__ import annotations

import itertools
import socket
import string
from typing import Any

import h11
import httpx
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llm_invocation.errors import InvalidRequest
from llm_invocation.http import HttpPool
from llm_invocation.http._connection import Connection
from llm_invocation.http._transport import FastHTTPTransport
from llm_invocation.providers._base import HttpRequest

from .http_servers import Peer, serve

REJECTED = "rejected"
Outcome = tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bytes] | str


class ScriptedConnection(Connection):
    """A real connection object whose reads return scripted pieces, then the end."""

    __slots__ = ("pieces",)

    def __init__(self, sock: socket.socket, pieces: list[bytes], transport: FastHTTPTransport):
        super().__init__(("http", "example.test", 80), sock, None, transport._pool.watchdog)
        self.pieces = pieces

    async def recv(self, size: int, timeout: float | None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > size:
            self.pieces.insert(0, piece[size:])
            piece = piece[:size]
        return piece


async def ours(method: str, pieces: list[bytes]) -> Outcome:
    """What our transport makes of the response (head reader and body, as in a request)."""
    transport = FastHTTPTransport()
    mine, theirs_ = socket.socketpair()
    conn = ScriptedConnection(mine, list(pieces), transport)
    transport._pool.add(conn)
    try:
        head, initial = await transport._read_head(conn, None)
        body = transport._body(method, conn, head, initial, close=False, timeouts={})
        data = b"".join([piece async for piece in body])
    except httpx.RemoteProtocolError:
        return REJECTED
    finally:
        await transport.aclose()
        theirs_.close()
    headers = [(name.lower(), value) for name, value in head.headers]
    return head.status, head.reason, head.version, headers, data


def theirs(method: str, pieces: list[bytes]) -> Outcome:
    """What h11 makes of the response, after a matching request."""
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", "example.test")]
    if method == "POST":
        headers.append(("Content-Length", "0"))
    conn.send(h11.Request(method=method, target="/", headers=headers))
    conn.send(h11.EndOfMessage())
    feed = iter([*pieces, b""])  # b"": the end of the connection
    response: h11.Response | None = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(next(feed))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return (
                    response.status_code,
                    bytes(response.reason),
                    b"HTTP/" + bytes(response.http_version),
                    [(bytes(n), bytes(v)) for n, v in response.headers],
                    bytes(body),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return REJECTED  # the connection ended before a response
    except h11.ProtocolError:
        return REJECTED


# -- generated responses -----------------------------------------------------------------------

TCHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])


def mostly(
    valid: st.SearchStrategy[bytes], invalid: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """``valid`` about nine times in ten, else ``invalid``."""
    return st.integers(0, 9).flatmap(lambda n: invalid if n == 0 else valid)


status_lines = mostly(
    st.builds(
        lambda version, code, reason: b"HTTP/%b %b%b" % (version, code, reason),
        st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0", b"2.0", b"0.9"]),
        st.sampled_from([b"200", b"200", b"201", b"204", b"304", b"404", b"429", b"500"]),
        st.sampled_from(
            [b" OK", b" OK", b"", b" ", b" Too  Many\tRequests", b" \xe9t\xe9", b" a\x01b"]
        ),
    ),
    st.sampled_from(
        [
            b"HTTP/1.1 99 Low",
            b"HTTP/1.1 099 Low",
            b"HTTP/1.1 199 Interim",
            b"HTTP/1.1 1000 High",
            b"http/1.1 200 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1 200OK",
            b"HTTP/11 200 OK",
            b"HTTP/1.1 200 O\x00K",
            b"HTTP/1.1 200 O\x0bK",
            b"HTTP/1.1 2x0 OK",
            b" HTTP/1.1 200 OK",
            b"HTTP/1.1 101 Switching Protocols",
            b"",
        ]
    ),
)

header_names = mostly(
    st.one_of(
        st.sampled_from(
            [b"Content-Type", b"X-Request-Id", b"Server", b"retry-after", b"Connection"]
        ),
        st.text(alphabet=TCHARS, min_size=1, max_size=6).map(str.encode),
    ),
    st.binary(max_size=5).filter(lambda b: b"\n" not in b),
)
header_values = mostly(
    st.one_of(
        st.sampled_from(
            [b"", b"text/event-stream", b"close", b"keep-alive", b" padded  ", b"a\tb", b"\xff\xfe"]
        ),
        st.text(alphabet=string.printable[:95], max_size=10).map(str.encode),
    ),
    st.one_of(
        st.binary(max_size=10).filter(lambda b: b"\n" not in b),
        st.sampled_from([b"a\r", b"\r", b"a\rb", b"a\x00"]),  # a CR or NUL where it ends a line
    ),
)
separators = mostly(st.sampled_from([b":", b": ", b":\t", b":  "]), st.sampled_from([b" :", b""]))


@st.composite
def header_lines(draw: st.DrawFn) -> list[bytes]:
    """Some header lines: valid, invalid, folded."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 4))):
        lines.append(draw(header_names) + draw(separators) + draw(header_values))
        if draw(st.integers(0, 9)) == 0:  # obsolete line folding
            lines.append(draw(st.sampled_from([b" ", b"\t", b"  \t"])) + draw(header_values))
    return lines


lengths = st.sampled_from(
    [
        *["exact"] * 10,
        "twice",
        "listed",
        "conflicting",
        "leading-zero",
        "leading-zero-and-plain",
        "not-digits",
        "too-long",
        "shorter",
        "longer",
        "empty",
    ]
)


def length_lines(kind: str, size: int) -> list[bytes]:
    text = b"%d" % size
    return {
        "exact": [b"Content-Length: " + text],
        "twice": [b"Content-Length: " + text, b"content-length:" + text],
        "listed": [b"Content-Length: " + text + b", " + text],
        "conflicting": [b"Content-Length: " + text, b"Content-Length: %d" % (size + 1)],
        "leading-zero": [b"Content-Length: 0" + text],
        "leading-zero-and-plain": [b"Content-Length: 0" + text, b"Content-Length: " + text],
        "not-digits": [b"Content-Length: +" + text],
        "too-long": [b"Content-Length: " + b"0" * 21 + text],
        "shorter": [b"Content-Length: %d" % max(0, size - 1)],
        "longer": [b"Content-Length: %d" % (size + 3)],
        "empty": [b"Content-Length: "],
    }[kind]


codings = st.sampled_from(
    [
        *[[b"Transfer-Encoding: chunked"]] * 8,
        [b"Transfer-Encoding: Chunked "],
        [b"transfer-encoding:CHUNKED"],
        [b"Transfer-Encoding: gzip, chunked"],
        [b"Transfer-Encoding: chunked, chunked"],
        [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: identity"],
        [b"Transfer-Encoding: chunked", b"Content-Length: 3"],
    ]
)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    """A chunked body: sizes in any case, extensions, trailers, and sometimes a flaw."""
    out: list[bytes] = []
    crlf = b"\r\n"
    for _ in range(draw(st.integers(0, 3))):
        data = draw(st.binary(min_size=1, max_size=12))
        size = draw(st.sampled_from([b"%x" % len(data), b"%X" % len(data), b"00%x" % len(data)]))
        extension = draw(
            st.sampled_from([b"", b"", b";a=b", b";x", b'; q="1"', b"\t", b" ;a", b";\x00"])
        )
        flaw = draw(st.integers(0, 30))
        if flaw == 0:
            size = b" " + size
        elif flaw == 1:
            size = b"z" + size
        elif flaw == 2:
            size = b"1" * 21
        end = b"\n" if flaw == 3 else crlf
        after = b"\n" if flaw == 4 else (b"XY" if flaw == 5 else crlf)
        out.append(size + extension + end + data + after)
    last = draw(st.sampled_from([b"0\r\n", b"0;done\r\n", b"000\r\n", b"0\n"]))
    trailers = draw(
        st.sampled_from(
            [
                b"",
                b"X-Trailer: yes\r\n",
                b"X-A: 1\r\nX-B: 2\r\n",
                b"X-Folded: a\r\n b\r\n",
                b"Bad Trailer: x\r\n",
                b"X-Nul: a\x00b\r\n",
                b"Content-Length: 1\r\nContent-Length: 2\r\n",
                b"X-Lf: yes\n",
            ]
        )
    )
    final = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    return b"".join(out) + last + trailers + final


@st.composite
def responses(draw: st.DrawFn) -> tuple[str, bytes]:
    """A request method and a generated response to it, valid or not."""
    method = draw(st.sampled_from(["GET", "POST", "HEAD"]))
    lines = [draw(status_lines), *draw(header_lines())]
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    body = draw(st.binary(max_size=40))
    if framing == "length":
        lines += length_lines(draw(lengths), len(body))
    elif framing == "chunked":
        lines += draw(codings)
        body = draw(chunked_bodies())
    head = b"".join(line + draw(EOL) for line in lines) + draw(EOL)
    if draw(st.integers(0, 5)) == 0:  # an interim response first
        head = b"HTTP/1.1 100 Continue" + draw(EOL) + draw(EOL) + head
    wire = head + body + draw(st.sampled_from([b"", b"", b"HTTP/1.1 200 OK\r\n"]))
    mutation = draw(st.integers(0, 9))
    if mutation == 0 and wire:  # cut short
        wire = wire[: draw(st.integers(0, len(wire) - 1))]
    elif mutation == 1 and wire:  # one byte changed
        at = draw(st.integers(0, len(wire) - 1))
        byte = draw(st.sampled_from([b"\x00", b"\r", b"\n", b" ", b":", b"\x7f", b"\xff", b"0"]))
        wire = wire[:at] + byte + wire[at + 1 :]
    return method, wire


def split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points) if b > a]


@pytest.mark.wall_limit(120)  # Hypothesis runs 800 examples; coverage slows them down
@settings(max_examples=800, deadline=None)
@given(case=responses(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
@example(case=("GET", b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok"), cuts=[])
@example(case=("GET", b"HTTP/1.1 200 OK\r\nX-A: b\n\r\nok"), cuts=[3, 20])
@example(case=("GET", b"HTTP/1.1 200 OK\r\n\r\nbody\r\n\r\n"), cuts=[])
@example(case=("GET", b"HTTP/1.1 200 OK\r\nX: a \r\n  b\r\n\r\n"), cuts=[])
@example(
    case=(
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n",
    ),
    cuts=[],
)
@example(
    case=("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\n"), cuts=[]
)
@example(
    case=("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nok"), cuts=[]
)
async def test_response_parsing_agrees_with_h11(case: tuple[str, bytes], cuts: list[int]) -> None:
    method, wire = case
    pieces = split(wire, cuts)
    assert await ours(method, list(pieces)) == theirs(method, pieces)


@settings(max_examples=300, deadline=None)
@given(wire=st.binary(max_size=80), cuts=st.lists(st.integers(0, 200), max_size=4))
async def test_arbitrary_bytes_are_parsed_as_h11_parses_them(wire: bytes, cuts: list[int]) -> None:
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + wire
    for response in (wire, body):
        pieces = split(response, cuts)
        assert await ours("GET", list(pieces)) == theirs("GET", pieces)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2;ext=1\r\nok\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n\ttwo\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
    ],
    ids=["bare-lf", "listed-length", "chunked-extension-trailer", "obs-fold", "until-close"],
)
async def test_responses_h11_reads_are_read_the_same(response: bytes) -> None:
    outcome = await ours("GET", [response])
    assert outcome != REJECTED
    assert outcome == theirs("GET", [response])


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 ;x\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX(bad): 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x0bb\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\r\n\r\n",
        b"HTTP/1.1 200 OK\r\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
    ],
    ids=[
        "length-spelled-twice",
        "coding-before-chunked",
        "space-before-extension",
        "name-not-a-token",
        "vertical-tab-in-value",
        "status-below-100",
        "unasked-upgrade",
        "bad-trailer",
        "cr-ending-the-last-value",
        "cr-ending-the-status-line",
        "cr-inside-a-value",
    ],
)
async def test_responses_h11_refuses_are_refused(response: bytes) -> None:
    assert theirs("GET", [response]) == REJECTED
    assert await ours("GET", [response]) == REJECTED


# -- requests: refused before anything is sent -------------------------------------------------

SECRET = "sk-live-0123456789abcdefSECRET"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {SECRET}\r\nX-Injected: yes"},
        {"Authorization": f"Bearer {SECRET}\n"},
        {"X-Key": f"{SECRET}\x00"},
        {"X-Key\x00": SECRET},
        {"X Key": SECRET},
        {"X-Key:": SECRET},
        {"X-Kéy": SECRET},
        {"": SECRET},
        {"X-Key": f"{SECRET}\x0b"},
        {"X-Key": 5},
        {5: SECRET},
        {"X-Key": [SECRET]},
    ],
    ids=[
        "crlf-value",
        "lf-value",
        "nul-value",
        "nul-name",
        "space-name",
        "colon-name",
        "non-ascii-name",
        "empty-name",
        "vt-value",
        "value-not-text",
        "name-not-text",
        "value-unhashable",
    ],
)
async def test_illegal_request_headers_are_refused_before_anything_is_sent(
    headers: dict[Any, Any],
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()

    async with serve(handler) as server:
        pool = HttpPool(provider="p")
        request = HttpRequest(method="POST", url=server.url + "/v1/x", headers=headers, body=b"{}")
        try:
            with pytest.raises(InvalidRequest) as caught:
                async with pool.stream(request):
                    pass
        finally:
            await pool.aclose()
        assert server.connections == 0
    error = caught.value
    assert not error.retryable
    assert error.provider == "p"
    assert "SECRET" not in str(error) and "SECRET" not in repr(error)
