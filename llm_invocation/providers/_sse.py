"""An incremental Server-Sent Events parser that works on bytes as they arrive.

Follows the HTML living standard's event-stream interpretation: lines end with LF, CRLF or CR
(Gemini sends CRLF, a CRLF may be split across reads), lines starting with ``:`` are comments
(OpenRouter's keep-alives), ``data`` lines of one event are joined with LF, ``event``, ``id``
and ``retry`` fields are kept, unknown fields are ignored, and one optional space after the
colon is dropped. Being tolerant where providers are sloppy: whitespace before a field name is
ignored (a recorded body starts with ``" data:"``), and trailing spaces in data are left for
the JSON decoder (Anthropic pads its lines).

The parser is sans-I/O and cheap: one ``splitlines`` per read and no per-line regex.
"""

from __future__ import annotations

from typing import Final, final

import msgspec

__all__ = ["SSEEvent", "SSEParser"]

_DATA: Final = b"data"
_EVENT: Final = b"event"
_ID: Final = b"id"
_RETRY: Final = b"retry"


@final
class SSEEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event. ``data`` stays bytes: JSON decoders take bytes directly."""

    data: bytes
    event: str = "message"
    id: str | None = None
    retry: int | None = None


@final
class SSEParser:
    """Feed it bytes, get back the events completed by them."""

    __slots__ = ("_data", "_event", "_id", "_partial", "_retry", "_skip_lf")

    def __init__(self) -> None:
        self._partial = b""
        self._skip_lf = False
        self._data: list[bytes] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event are buffered (a truncated stream if at EOF)."""
        return bool(self._partial or self._data)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` and return the events it completes, in order."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        buffer = self._partial + chunk if self._partial else chunk
        lines = buffer.splitlines()
        last = buffer[-1:]
        if last == b"\n":
            self._partial = b""
        elif last == b"\r":
            self._partial = b""
            self._skip_lf = True
        else:
            self._partial = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._event = None
                continue
            self._line(line)
        return events

    def flush(self) -> list[SSEEvent]:
        """At end of stream: dispatch a final event that lacked its blank line.

        The standard discards such an event; providers that close the connection right after
        the last ``data:`` line would lose their final chunk, so it is kept.
        """
        if self._partial:
            line, self._partial = self._partial, b""
            self._line(line)
        if self._data:
            return [self._dispatch()]
        return []

    def _line(self, line: bytes) -> None:
        if line[:5] == b"data:":  # the hot path
            value = line[5:]
            if value[:1] == b" ":
                value = value[1:]
            self._data.append(value)
            return
        if line[:1] == b":":
            return  # comment
        name, colon, value = line.partition(b":")
        name = name.strip()
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == _DATA:
            self._data.append(value)
        elif name == _EVENT:
            self._event = value.decode("utf-8", "replace")
        elif name == _ID:
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == _RETRY and value.isdigit():
            self._retry = int(value)

    def _dispatch(self) -> SSEEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = SSEEvent(data, self._event or "message", self._id, self._retry)
        self._data = []
        self._event = None
        self._retry = None
        return event
