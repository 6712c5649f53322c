"""The WebSocket front's wire protocol: JSON frames, a tagged union on ``"type"``.

Client to server (one frame per WebSocket message, text or binary)::

    {"type": "invoke", "id": "a1", "request": {...llm_invocation.types.Request...}}
    {"type": "invoke", "id": "a2", "request": {...}, "tool_mode": "auto", "max_steps": 4}
    {"type": "cancel", "id": "a1"}
    {"type": "ping", "nonce": "n1"}                       nonce optional (string or integer)

Server to client (text messages)::

    {"type": "chunk",  "id": "a1", "chunk": {...StreamChunk...}}
    {"type": "chunks", "id": "a1", "chunks": [{...}, {...}]}   several chunks of one id, in order
    {"type": "tool_call",   "id": "a1", "step": 0, "calls": [...]}
    {"type": "tool_result", "id": "a1", "step": 0, "results": [...]}
    {"type": "done",  "id": "a1", "response": {...Response...}, "usage": {...Usage...} | null}
    {"type": "error", "id": "a1", "code": "canceled", "message": "...", ...}   id optional
    {"type": "pong",  "nonce": "n1"}
    {"type": "batch", "frames": [ ...any of the frames above... ]}

Coalescing: everything the server has ready for one connection in one scheduler tick goes
out as *one* WebSocket message. Chunks of one id that are ready together become one
``chunks`` frame (a single one stays a ``chunk`` frame), and when more than one frame is
ready they travel in one ``batch`` frame, in order. A client handles ``chunk``, ``chunks``
and ``batch``; frames of one id always arrive in order, and batches never nest.

Every invocation ends with exactly one terminal frame carrying its id: ``done`` or
``error``. The id is free again once that frame is sent. One exception: an ``invoke`` that
reuses a live id is answered with an ``error`` whose ``details.reason`` is
``"duplicate_id"``, and the live invocation goes on.

Error codes are `llm_invocation.errors.ErrorCode` values (``"canceled"``,
``"rate_limit_exceeded"``, ``"invalid_request"``, ...) plus ``"protocol_error"`` (a frame the
server cannot read) and
``"overloaded"`` (too many invocations on the connection, a slow consumer, or the server
is shutting down; ``details.reason`` says which). ``"unauthorized"`` never appears in a
frame: a bad token is refused at the handshake with HTTP 401.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, final

import msgspec

from ...errors import LLMError
from ...types import Request, Response, StreamChunk, Usage

__all__ = [
    "OVERLOADED",
    "PROTOCOL_ERROR",
    "SUBPROTOCOL",
    "BatchFrame",
    "CancelFrame",
    "ChunkFrame",
    "ChunksFrame",
    "ClientFrame",
    "DoneFrame",
    "ErrorFrame",
    "FrameError",
    "InvokeFrame",
    "PingFrame",
    "PongFrame",
    "ServerFrame",
    "ServerMessage",
    "ToolCallFrame",
    "ToolResultFrame",
    "decode_client_frame",
    "decode_server_message",
    "error_frame",
]

SUBPROTOCOL: Final = "llm-invocation.v1"
"""The WebSocket subprotocol the server selects when a client offers it."""

PROTOCOL_ERROR: Final = "protocol_error"
OVERLOADED: Final = "overloaded"

Nonce = str | int | None


# -- client to server ----------------------------------------------------------------------------


@final
class InvokeFrame(msgspec.Struct, frozen=True, kw_only=True, tag="invoke"):
    """Start an invocation under ``id`` (unique among the connection's live ids).

    ``tool_mode: "auto"`` runs the automatic tool loop with the server's registered tools
    (``tool_call`` and ``tool_result`` frames report each step), up to ``max_steps``
    requests; the server must allow it (``WebSocketFront(allow_tool_loop=True)``).
    """

    id: str
    request: Request
    tool_mode: Literal["auto"] | None = None
    max_steps: Annotated[int, msgspec.Meta(ge=1)] | None = None


@final
class CancelFrame(msgspec.Struct, frozen=True, kw_only=True, tag="cancel"):
    """Cancel the live invocation ``id``: answered by an ``error`` frame, code ``canceled``."""

    id: str


@final
class PingFrame(msgspec.Struct, frozen=True, kw_only=True, tag="ping"):
    """Answered by a ``pong`` with the same nonce."""

    nonce: Nonce = None


ClientFrame = InvokeFrame | CancelFrame | PingFrame


# -- server to client ----------------------------------------------------------------------------


@final
class ChunkFrame(msgspec.Struct, frozen=True, kw_only=True, tag="chunk"):
    id: str
    chunk: StreamChunk


@final
class ChunksFrame(msgspec.Struct, frozen=True, kw_only=True, tag="chunks"):
    """Several chunks of one invocation that were ready in the same tick, in order."""

    id: str
    chunks: list[StreamChunk]


@final
class ToolCallFrame(msgspec.Struct, frozen=True, kw_only=True, tag="tool_call"):
    """A step of the tool loop ended with these tool calls (they run next)."""

    id: str
    step: int = 0
    calls: list[Any] = []


@final
class ToolResultFrame(msgspec.Struct, frozen=True, kw_only=True, tag="tool_result"):
    """The results of a step's tool calls, in the order of the calls."""

    id: str
    step: int = 0
    results: list[Any] = []


@final
class DoneFrame(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    """The invocation finished: the aggregated response and its settled usage (with cost)."""

    id: str
    response: Response
    usage: Usage | None


@final
class ErrorFrame(msgspec.Struct, frozen=True, kw_only=True, tag="error", omit_defaults=True):
    """An invocation failed or was cancelled (``id`` set), or a frame could not be read.

    The fields after ``message`` are those of `llm_invocation.errors.ErrorInfo` when the
    error came from the invocation; ``usage`` is what a cancelled or failed invocation
    consumed, when known.
    """

    id: str | None = None
    code: str
    message: str
    kind: str | None = None
    provider: str | None = None
    status: int | None = None
    retry_after: float | None = None
    request_id: str | None = None
    retryable: bool = False
    details: dict[str, Any] | None = None
    usage: Usage | None = None


@final
class PongFrame(msgspec.Struct, frozen=True, kw_only=True, tag="pong"):
    nonce: Nonce = None


ServerFrame = (
    ChunkFrame | ChunksFrame | ToolCallFrame | ToolResultFrame | DoneFrame | ErrorFrame | PongFrame
)


@final
class BatchFrame(msgspec.Struct, frozen=True, kw_only=True, tag="batch"):
    """Several frames sent as one WebSocket message (never nested)."""

    frames: list[ServerFrame]


ServerMessage = ServerFrame | BatchFrame

_SERVER_DECODER: Final = msgspec.json.Decoder(ServerMessage)


def decode_server_message(data: str | bytes) -> list[ServerFrame]:
    """The frames of one server message, a batch unpacked (for Python clients and tests).

    Raises:
        msgspec.DecodeError: the message is not a valid server frame.
    """
    message = _SERVER_DECODER.decode(data)
    if isinstance(message, BatchFrame):
        return message.frames
    return [message]


def error_frame(
    error: LLMError, *, id: str | None = None, usage: Usage | None = None
) -> ErrorFrame:
    """The ``error`` frame of an invocation's `LLMError`."""
    info = error.info()
    return ErrorFrame(
        id=id,
        code=info.code.value,
        message=info.message,
        kind=info.kind,
        provider=info.provider,
        status=info.status,
        retry_after=info.retry_after,
        request_id=info.request_id,
        retryable=info.retryable,
        details=info.details,
        usage=usage,
    )


# -- reading client frames -----------------------------------------------------------------------


class _Probe(msgspec.Struct):
    """What can be salvaged from a frame that failed to decode: its type and id."""

    type: Any = None
    id: Any = None


_CLIENT_DECODER: Final = msgspec.json.Decoder(ClientFrame)
_PROBE_DECODER: Final = msgspec.json.Decoder(_Probe)


class FrameError(Exception):
    """A client frame that cannot be acted on; becomes an ``error`` frame."""

    def __init__(self, code: str, message: str, id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


def decode_client_frame(data: str | bytes) -> ClientFrame:
    """Decode one client frame.

    Raises:
        FrameError: bad JSON or an unknown type (``protocol_error``), or an invoke whose
            request is invalid (``invalid_request``); carries the frame's id when known.
    """
    try:
        return _CLIENT_DECODER.decode(data)
    except msgspec.DecodeError as exc:  # includes ValidationError
        failure: Exception = exc
    except LLMError as exc:  # a type's own validation (Request.__post_init__)
        failure = exc
    try:
        probe = _PROBE_DECODER.decode(data)
    except msgspec.DecodeError:
        raise FrameError(PROTOCOL_ERROR, "the frame is not a JSON object") from None
    frame_id = probe.id if isinstance(probe.id, str) else None
    if isinstance(failure, LLMError):
        raise FrameError(failure.code.value, failure.message, frame_id) from None
    text = str(failure)
    if probe.type not in ("invoke", "cancel", "ping"):
        raise FrameError(PROTOCOL_ERROR, f"unknown frame type {probe.type!r}", frame_id) from None
    if probe.type == "invoke" and frame_id is not None and "$.request" in text:
        raise FrameError("invalid_request", f"invalid request: {text}", frame_id) from None
    raise FrameError(PROTOCOL_ERROR, f"invalid {probe.type} frame: {text}", frame_id) from None
