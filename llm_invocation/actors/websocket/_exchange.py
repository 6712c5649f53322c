"""One plain HTTP/1.1 exchange after its head: the request body in, the response out.

The front reads every request head itself (`._http.HeadReader`); an endpoint that takes a
body (the OpenAI-compatible gateway) then makes an `Exchange`, which hands the bytes read so
far to a fresh h11 connection and keeps using it: h11 reads the body (``Content-Length`` or
chunked), answers ``Expect: 100-continue``, and writes the response, whole (with a length)
or streamed (chunked to an HTTP/1.1 client, close-delimited to an HTTP/1.0 one). Every
response says ``Connection: close``: one exchange per connection.

`NamedTokens` checks a presented bearer token and tells which configured token it is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Final, final

import h11
import trio

from ._http import BadRequest, RequestHead, reason_phrase

__all__ = ["Exchange", "NamedTokens", "bearer_token"]

_RECEIVE: Final = 65536


def _status_of(exc: h11.RemoteProtocolError) -> int:
    return exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400


@final
class Exchange:
    """A request whose head was read, and its response, over ``stream``.

    Args:
        stream: the connection.
        head: the request head the front read (its ``raw`` bytes include any part of the
            body that came with it).

    Raises:
        BadRequest: the head does not parse again as a request (400).
    """

    __slots__ = ("_connection", "_length", "_stream", "head")

    def __init__(self, stream: trio.abc.Stream, head: RequestHead) -> None:
        self._stream = stream
        self.head = head
        connection = h11.Connection(h11.SERVER)
        connection.receive_data(head.raw)
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(_status_of(exc), "malformed request") from None
        if not isinstance(event, h11.Request):  # pragma: no cover - the head parsed before
            raise BadRequest(400, "not an HTTP request")
        self._connection = connection
        self._length: int | None = None
        for name, value in event.headers:
            if name == b"content-length":
                self._length = int(value)  # h11 checked it is one valid number

    @property
    def response_started(self) -> bool:
        """Whether the response's head went out (a refusal is no longer possible)."""
        return self._connection.our_state is not h11.SEND_RESPONSE

    @property
    def response_complete(self) -> bool:
        """Whether the whole response went out (nothing more can be sent)."""
        return self._connection.our_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    async def read_body(self, *, limit: int) -> bytes:
        """Read the whole request body (empty when there is none).

        Raises:
            BadRequest: the body is larger than ``limit`` bytes, as announced or as read
                (413); it is malformed or ends early (400).
            trio.BrokenResourceError: the connection broke.
        """
        if self._length is not None and self._length > limit:
            raise BadRequest(413, f"the request body exceeds {limit} bytes")
        connection = self._connection
        pieces: list[bytes] = []
        size = 0
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest(_status_of(exc), "malformed or incomplete request body") from None
            if event is h11.NEED_DATA:
                if connection.they_are_waiting_for_100_continue:
                    await self._stream.send_all(
                        connection.send(h11.InformationalResponse(status_code=100, headers=[]))
                    )
                connection.receive_data(bytes(await self._stream.receive_some(_RECEIVE)))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise BadRequest(413, f"the request body exceeds {limit} bytes")
                pieces.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(pieces)
            else:  # pragma: no cover - h11 sends Data or EndOfMessage after a Request
                raise BadRequest(400, "malformed request body")

    def _head(
        self, status: int, content_type: str, headers: Iterable[tuple[str, str]], length: int | None
    ) -> bytes:
        fields = [("Content-Type", content_type), ("Connection", "close"), *headers]
        if length is not None:
            fields.append(("Content-Length", str(length)))
        response = h11.Response(status_code=status, reason=reason_phrase(status), headers=fields)
        return self._connection.send(response)

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send a whole response with a ``Content-Length``.

        Raises:
            trio.BrokenResourceError: the connection broke.
        """
        connection = self._connection
        data = self._head(status, content_type, headers, len(body))
        data += connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
        await self._stream.send_all(data)

    async def start(
        self,
        status: int,
        *,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
        first: bytes = b"",
    ) -> None:
        """Send a response head without a length (the body follows with `send`), and
        ``first`` bytes of the body with it.

        Raises:
            trio.BrokenResourceError: the connection broke.
        """
        data = self._head(status, content_type, headers, None)
        if first:
            data += self._connection.send(h11.Data(data=first))
        await self._stream.send_all(data)

    async def send(self, data: bytes) -> None:
        """Send more of a started response's body.

        Raises:
            trio.BrokenResourceError: the connection broke.
        """
        if data:
            await self._stream.send_all(self._connection.send(h11.Data(data=data)))

    async def finish(self, last: bytes = b"") -> None:
        """Send ``last`` bytes and end a started response's body.

        Raises:
            trio.BrokenResourceError: the connection broke.
        """
        data = self._connection.send(h11.Data(data=last)) if last else b""
        await self._stream.send_all(data + self._connection.send(h11.EndOfMessage()))

    async def wait_peer_closed(self) -> None:
        """Return once the client closes its side or the connection breaks.

        Anything the client sends after its request is read and ignored.
        """
        try:
            while await self._stream.receive_some(_RECEIVE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def linger(self, *, limit: int = 1 << 20) -> None:
        """After a refusal: end our side and read what the client still sends, up to
        ``limit`` bytes, so that closing does not reset the connection under its reading
        of the answer (bound it with a timeout)."""
        stream = self._stream
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while limit > 0:
                data = await stream.receive_some(_RECEIVE)
                if not data:
                    return
                limit -= len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


def bearer_token(head: RequestHead) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    authorization = head.header("authorization")
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


@final
class NamedTokens:
    """The configured bearer tokens by name; tells which one a presented token is.

    A presented token is compared, as a SHA-256 digest with `hmac.compare_digest`, against
    every configured one without stopping early, so the timing shows neither which one
    matched nor any token's length.
    """

    __slots__ = ("_entries",)

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._entries = [
            (name, hashlib.sha256(token.encode()).digest()) for name, token in tokens.items()
        ]

    @property
    def open(self) -> bool:
        """No tokens are configured."""
        return not self._entries

    def name_of(self, candidate: str) -> str | None:
        """The name of the configured token ``candidate`` is, or None."""
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        found: str | None = None
        for name, known in self._entries:
            if hmac.compare_digest(digest, known):
                found = name
        return found
