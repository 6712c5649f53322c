"""The WebSocket front's plain-HTTP side: request heads read by h11, and the answers written.

The parser is tested without I/O (`HeadReader`, `parse_head`), against requests rendered
here from their parts; the connection handler is tested over real sockets on 127.0.0.1 with
arbitrary bytes, against a front running in a thread of its own (so one front serves every
Hypothesis example).
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import h11
import pytest
import trio
from hypothesis import event, given, settings
from hypothesis import strategies as st
from trio.testing import memory_stream_pair

import llm_invocation as llm
from llm_invocation.actors.websocket import WebSocketFront
from llm_invocation.actors.websocket._http import (
    MAX_HEAD,
    PAGE_HEADERS,
    BadRequest,
    HeadReader,
    PrefixedStream,
    RequestHead,
    http_response,
    is_loopback_host,
    loopback_origins,
    parse_head,
    read_head,
)
from llm_invocation.config import WebSocketConfig

TOKEN = "http-side-token-91c2"
REFUSALS = {400, 431, 501}

# -- rendering requests from their parts ---------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "M-SEARCH"])
names = st.text(TOKEN_CHARS, min_size=1, max_size=12).filter(
    lambda name: name.lower() not in ("host", "content-length", "transfer-encoding")
)
# Field values: visible characters and inner spaces (leading and trailing spaces are not part
# of a value, RFC 9110 5.5).
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).flatmap(
    lambda word: st.sampled_from([word, f"{word} {word}".strip()])
)
segments = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~", max_size=8)
queries = st.lists(
    st.tuples(st.sampled_from(["a", "b", "token"]), st.text("xyz019", max_size=4)), max_size=4
)


@dataclass
class Rendered:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    wire: bytes = field(init=False)

    def __post_init__(self) -> None:
        query = "&".join(f"{key}={value}" for key, value in self.query)
        target = f"{self.path}?{query}" if self.query else self.path
        lines = [f"{self.method} {target} HTTP/1.1", "Host: example.test"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        self.wire = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


requests = st.builds(
    Rendered,
    method=methods,
    path=st.lists(segments, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    query=queries,
    headers=st.lists(st.tuples(names, values), max_size=8),
)


def expected_headers(rendered: Rendered) -> dict[str, str]:
    joined: dict[str, str] = {"host": "example.test"}
    for name, value in rendered.headers:
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def expected_query(rendered: Rendered) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in rendered.query:
        query.setdefault(key, []).append(value)
    return query


def outcome(data: bytes) -> RequestHead | BadRequest | None:
    """What `parse_head` makes of ``data``: a head, nothing yet, or the refusal it raises."""
    try:
        return parse_head(data)
    except BadRequest as exc:
        return exc


# -- parsing -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(requests)
def test_a_rendered_request_parses_to_its_parts(rendered: Rendered) -> None:
    head = parse_head(rendered.wire)
    assert head is not None
    assert head.method == rendered.method
    assert head.path == rendered.path
    assert head.query == expected_query(rendered)
    assert head.headers == expected_headers(rendered)
    assert head.raw == rendered.wire


@settings(max_examples=200, deadline=None)
@given(requests, st.lists(st.integers(min_value=1, max_value=400), max_size=12))
def test_a_head_fed_in_pieces_parses_as_it_does_whole(rendered: Rendered, cuts: list[int]) -> None:
    wire = rendered.wire + b"after the head"
    points = sorted({cut for cut in cuts if cut < len(wire)} | {0, len(wire)})
    reader = HeadReader()
    for a, b in itertools.pairwise(points):
        head = reader.feed(wire[a:b])
        if head is not None:
            break
        assert b < len(rendered.wire)  # nothing is returned before the blank line has arrived
    else:
        raise AssertionError("no head")
    assert b >= len(rendered.wire)
    assert head == parse_head(wire[:b])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_head_nothing_yet_or_a_clear_refusal(data: bytes) -> None:
    result = outcome(data)
    if isinstance(result, BadRequest):
        assert result.status in REFUSALS
        assert str(result)
        assert "b'" not in str(result)  # the refusal does not echo the client's bytes
    else:
        assert result is None or result.raw == data


def test_nothing_is_returned_until_the_blank_line() -> None:
    reader = HeadReader()
    assert reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    assert reader.feed(b"") is None  # an empty read is no end of stream here
    head = reader.feed(b"\r\n")
    assert head is not None
    assert (head.method, head.path) == ("GET", "/")


def test_repeated_headers_are_joined_with_commas() -> None:
    head = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a:  2 \r\n\r\n")
    assert head is not None
    assert head.header("x-a") == "1, 2"


def test_raw_keeps_every_byte_read_for_the_websocket_hand_off() -> None:
    wire = b"GET /ws?token=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\x81\x85frame"
    head = parse_head(wire)
    assert head is not None
    assert head.is_websocket
    assert head.raw == wire
    assert head.query == {"token": ["t"]}


def test_an_absolute_form_target_is_served_by_its_path() -> None:
    head = parse_head(b"GET http://x/app.js?a=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head is not None
    assert (head.path, head.query) == ("/app.js", {"a": ["1"]})


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX : y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 requires Host (RFC 9112 3.2)
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS to a plain-HTTP port
    ],
    ids=[
        "garbage",
        "header-without-colon",
        "space-before-colon",
        "no-host",
        "two-hosts",
        "http-2",
        "bad-content-length",
        "unknown-transfer-coding",
        "unclosed-ipv6-target",
        "tls-client-hello",
    ],
)
def test_a_malformed_head_is_refused(wire: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_head(wire)
    assert raised.value.status == status


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "framing", ["Content-Length: 5", "Transfer-Encoding: chunked"], ids=["length", "chunked"]
)
def test_a_get_or_head_with_a_body_is_refused(method: str, framing: str) -> None:
    with pytest.raises(BadRequest, match="must not have a body") as raised:
        parse_head(f"{method} / HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
    assert raised.value.status == 400


def test_a_zero_content_length_is_no_body() -> None:
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") is not None


def test_a_post_with_a_body_is_left_to_the_front_to_refuse() -> None:
    head = parse_head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert head is not None
    assert head.method == "POST"


def test_an_incomplete_head_longer_than_the_limit_is_refused_with_431() -> None:
    reader = HeadReader(limit=100)
    assert reader.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 80) is None
    with pytest.raises(BadRequest, match="too large") as raised:
        reader.feed(b"a" * 20)
    assert raised.value.status == 431


def test_the_default_limit_is_max_head() -> None:
    assert parse_head(b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD - 20)) is None
    refused = outcome(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)
    assert isinstance(refused, BadRequest)
    assert refused.status == 431


def test_folded_header_lines_are_joined() -> None:
    head = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n")
    assert head is not None
    assert head.header("x") == "a b"


# -- reading from a stream -----------------------------------------------------------------------


async def test_read_head_reads_until_the_blank_line_and_keeps_what_followed() -> None:
    send, receive = memory_stream_pair()
    await send.send_all(b"GET /ws HTTP/1.1\r\nHo")
    await send.send_all(b"st: x\r\n\r\nextra")
    head = await read_head(receive)
    assert head is not None
    assert head.raw.endswith(b"\r\n\r\nextra")


async def test_read_head_returns_none_when_the_peer_closes_first() -> None:
    send, receive = memory_stream_pair()
    await send.send_all(b"GET / HTTP/1.1\r\n")
    await send.aclose()
    assert await read_head(receive) is None


async def test_prefixed_stream_replays_the_bytes_read_then_reads_on() -> None:
    send, receive = memory_stream_pair()
    await send.send_all(b"-live")
    stream = PrefixedStream(receive, b"replayed")
    assert await stream.receive_some(3) == b"rep"
    assert await stream.receive_some() == b"layed"
    assert await stream.receive_some() == b"-live"


# -- writing -------------------------------------------------------------------------------------


def test_a_response_is_written_byte_for_byte_as_before() -> None:
    assert http_response(404, b"not found\n", headers=[("Allow", "GET, HEAD")]) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 10\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\nnot found\n"
    )


def test_a_head_only_response_announces_the_body_without_sending_it() -> None:
    full = http_response(200, b"<p>", content_type="text/html", headers=PAGE_HEADERS)
    head = http_response(
        200, b"<p>", content_type="text/html", headers=PAGE_HEADERS, head_only=True
    )
    assert full == head + b"<p>"
    assert b"Content-Length: 3\r\n" in head
    assert b"Referrer-Policy: no-referrer\r\n" in head


def test_an_unknown_status_gets_a_generic_reason() -> None:
    assert http_response(418).startswith(b"HTTP/1.1 418 Error\r\n")


@pytest.mark.parametrize(
    ("status", "headers"),
    [(200, [("X-Injected", "a\r\nSet-Cookie: b")]), (101, []), (1000, [])],
    ids=["line-break-in-a-value", "informational", "four-digits"],
)
def test_an_invalid_response_is_refused_before_a_byte_is_written(
    status: int, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(ValueError, match="not a valid HTTP response"):
        http_response(status, headers=headers)


def read_response(wire: bytes, method: str = "GET") -> tuple[h11.Response, bytes]:
    """``wire`` read as h11's client reads it: the response and its body, to the end."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    client.receive_data(b"")
    response: h11.Response | None = None
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert client.next_event() == h11.ConnectionClosed()
            assert response is not None
            assert (b"connection", b"close") in list(response.headers)
            return response, body
        else:
            raise AssertionError(f"unexpected {event!r}")


# -- who counts as local ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "localhost", "LOCALHOST", "::1", "[::1]"]
)
def test_loopback_hosts_are_local(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "192.0.2.10", "10.0.0.1", "example.com", "localhost.example", "::ffff:1"],  # noqa: S104 - not local is the point
)
def test_wildcards_other_addresses_and_names_are_not_local(host: str) -> None:
    assert not is_loopback_host(host)


def test_the_loopback_origins_are_the_three_loopback_names_on_the_port() -> None:
    assert loopback_origins(8765) == {
        "http://127.0.0.1:8765",
        "http://localhost:8765",
        "http://[::1]:8765",
    }


def test_on_port_80_the_loopback_origins_come_without_a_port_too() -> None:
    assert loopback_origins(80) == {
        "http://127.0.0.1:80",
        "http://localhost:80",
        "http://[::1]:80",
        "http://127.0.0.1",
        "http://localhost",
        "http://[::1]",
    }


def test_h11_reads_back_what_is_written() -> None:
    response, body = read_response(http_response(503, b"shutting down\n"))
    assert (response.status_code, response.reason) == (503, b"Service Unavailable")
    assert body == b"shutting down\n"


# -- the connection handler, over real sockets ---------------------------------------------------


@dataclass
class FrontThread:
    port: int
    errors: list[logging.LogRecord]


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture(scope="module")
def front_thread() -> Iterator[FrontThread]:
    """A front with a token and an allowed origin, serving from its own trio loop in a thread."""
    started: queue.Queue[tuple[int, trio.lowlevel.TrioToken, trio.Event] | BaseException] = (
        queue.Queue()
    )

    async def serve() -> None:
        config = llm.Config(provider="mock", model="mock")
        async with llm.open_client(config) as client, trio.open_nursery() as nursery:
            ws = WebSocketConfig(
                port=0, tokens=[llm.Secret(TOKEN)], allowed_origins=["http://page.test"]
            )
            front = WebSocketFront(client, ws, handshake_timeout=10, grace=0.1)
            await nursery.start(front.serve)
            stop = trio.Event()
            started.put((front.port, trio.lowlevel.current_trio_token(), stop))
            await stop.wait()
            nursery.cancel_scope.cancel()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # handed to the test thread, which raises it
            started.put(exc)

    errors: list[logging.LogRecord] = []
    handler = _Collect(errors)
    logger = logging.getLogger("llm_invocation.websocket")
    logger.addHandler(handler)
    thread = threading.Thread(target=run, name="front-under-test")
    thread.start()
    try:
        first = started.get(timeout=30)
        if isinstance(first, BaseException):
            raise first
        port, token, stop = first
        try:
            yield FrontThread(port, errors)
        finally:
            trio.from_thread.run_sync(stop.set, trio_token=token)
    finally:
        thread.join(30)
        logger.removeHandler(handler)
    assert not thread.is_alive()
    if not started.empty():
        raise started.get()


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and the end of the stream; everything the front answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # closed with bytes of ours unread: what came stands
                return received
            if not chunk:
                return received
            received += chunk


REQUEST_LINES = [
    b"GET / HTTP/1.1\r\n",
    b"GET /ws HTTP/1.1\r\n",
    b"GET /ws?token=wrong HTTP/1.1\r\n",
    b"GET /elsewhere HTTP/1.1\r\n",
    b"GET /config.json HTTP/1.1\r\n",
    b"HEAD /app.js HTTP/1.1\r\n",
    b"POST / HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"GET / HTTP/2.0\r\n",
]
FIELDS = [
    b"Host: 127.0.0.1\r\n",
    b"Upgrade: websocket\r\n",
    b"Connection: Upgrade\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"Sec-WebSocket-Version: 8\r\n",
    b"Sec-WebSocket-Protocol: bearer.wrong\r\n",
    b"Authorization: Bearer wrong\r\n",
    b"Origin: http://elsewhere\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"X: \x00\x7f\xff\r\n",
    b" folded\r\n",
]
HANDSHAKE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n" + FIELDS[3] + FIELDS[4]
heads = st.builds(
    lambda line, host, handshake, fields, end, tail: (
        line + host + handshake + b"".join(fields) + end + tail
    ),
    st.sampled_from(REQUEST_LINES),
    st.sampled_from([b"Host: 127.0.0.1\r\n", b""]),
    st.sampled_from([HANDSHAKE, b""]),
    st.lists(st.sampled_from(FIELDS), max_size=4),
    st.sampled_from([b"\r\n", b"\n", b""]),
    st.sampled_from([b"", b"abc", b"\x81\x80mask"]),
)
noise = st.one_of(
    st.binary(max_size=200),
    heads,
    st.tuples(heads, st.integers(min_value=0, max_value=300), st.binary(max_size=4)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    ),
)
ANSWERED = {200, 400, 401, 403, 404, 405, 426, 431, 501, 503}


@settings(max_examples=150, deadline=None)
@given(noise)
def test_any_bytes_get_a_well_formed_refusal_or_none_and_never_an_error(
    front_thread: FrontThread, data: bytes
) -> None:
    received = exchange(front_thread.port, data)
    result = outcome(data)
    head = result if isinstance(result, RequestHead) else None
    status = result.status if isinstance(result, BadRequest) else None
    if result is None:
        assert received == b""  # the peer left before a whole head: nothing to answer
        event("no answer")
    else:
        # A HEAD gets its page's head alone; its refusals (404, 405) carry their text, as
        # the GET's would: the connection closes after it, so the client reads no further.
        page = head is not None and head.method == "HEAD" and received.startswith(b"HTTP/1.1 200")
        response, _ = read_response(received, "HEAD" if page else "GET")
        event(f"answered {response.status_code}")
        assert response.status_code in ANSWERED
        if status is not None:
            assert response.status_code == status
    assert not front_thread.errors


def test_a_big_head_split_over_many_reads_gets_431(front_thread: FrontThread) -> None:
    received = exchange(front_thread.port, b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 100))
    response, _ = read_response(received)
    assert response.status_code == 431
    assert not front_thread.errors
