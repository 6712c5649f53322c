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
``error``, and nothing for that id follows it. The id is free again once that frame is
sent. One ``error`` with an id is not terminal: an ``invoke`` that reuses a live id is
answered with ``invalid_request``, ``details.reason == "duplicate_id"`` (checked before the
request is read), and the live invocation goes on. An error about any other frame that
cannot be read names the frame's id only when that id is not live.

Error codes are `llm_invocation.errors.ErrorCode` values (``"canceled"``,
``"rate_limit_exceeded"``, ``"invalid_request"``, ...) plus ``"protocol_error"`` (a frame the
server cannot read) and ``"overloaded"`` (too many invocations on the connection, a slow
consumer, or the server is shutting down; ``details.reason`` says which). The front's own
errors are the `FrontError` constants (`FRONT_ERRORS`); `render_reference` renders the
frames and codes as the tables of the documentation. ``"unauthorized"`` never appears in a
frame: a bad token is refused at the handshake with HTTP 401.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, final

import msgspec

from ...errors import ErrorCode, LLMError
from ...types import Request, Response, StreamChunk, Usage

__all__ = [
    "CANCELED_BY_CLIENT",
    "CANCELED_AT_SHUTDOWN",
    "DUPLICATE_ID",
    "FRONT_ERRORS",
    "INVALID_REQUEST",
    "OVERLOADED",
    "PROTOCOL_ERROR",
    "RATE_LIMITED",
    "SHUTTING_DOWN",
    "SLOW_CONSUMER",
    "SUBPROTOCOL",
    "TOOL_LOOP_DISABLED",
    "TOO_LARGE",
    "TOO_MANY_INVOCATIONS",
    "UNREADABLE",
    "BatchFrame",
    "CancelFrame",
    "ChunkFrame",
    "ChunksFrame",
    "ClientFrame",
    "DoneFrame",
    "ErrorFrame",
    "FrameError",
    "FrontError",
    "InvokeFrame",
    "PingFrame",
    "PongFrame",
    "Probe",
    "ServerFrame",
    "ServerMessage",
    "ToolCallFrame",
    "ToolResultFrame",
    "decode_client_frame",
    "decode_server_message",
    "error_frame",
    "is_terminal",
    "probe_client_frame",
    "render_reference",
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
    """One chunk of an invocation's stream."""

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
    """The invocation finished (terminal): the aggregated response and its settled usage
    (with cost)."""

    id: str
    response: Response
    usage: Usage | None


@final
class ErrorFrame(msgspec.Struct, frozen=True, kw_only=True, tag="error", omit_defaults=True):
    """An invocation failed or was cancelled, or a frame could not be read: terminal for
    its ``id`` when it has one, except a ``duplicate_id`` notice (see `is_terminal`).

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
    """The answer to a ``ping``, with its nonce."""

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


# -- the front's own errors ----------------------------------------------------------------------

INVALID_REQUEST: Final = ErrorCode.INVALID_REQUEST.value


@final
@dataclass(frozen=True, slots=True)
class FrontError:
    """One kind of ``error`` frame the front itself sends: its code, its ``details.reason``
    (None: the frame has none) and what it means (a line of the documentation's table)."""

    code: str
    reason: str | None
    meaning: str

    def frame(
        self,
        message: str,
        *,
        id: str | None = None,
        usage: Usage | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
        **details: Any,
    ) -> ErrorFrame:
        """The ``error`` frame of this kind, ``details.reason`` included."""
        if self.reason is not None:
            details = {"reason": self.reason, **details}
        return ErrorFrame(
            id=id,
            code=self.code,
            message=message,
            retry_after=retry_after,
            retryable=retryable,
            details=details or None,
            usage=usage,
        )


TOO_LARGE: Final = FrontError(
    PROTOCOL_ERROR,
    "too_large",
    "a frame larger than `max_message_size` (`details.limit`); the connection lives on",
)
UNREADABLE: Final = FrontError(
    PROTOCOL_ERROR, None, "a frame that is not JSON, has an unknown type or a malformed field"
)
INVALID: Final = FrontError(INVALID_REQUEST, None, "an `invoke` whose `request` is invalid")
DUPLICATE_ID: Final = FrontError(
    INVALID_REQUEST,
    "duplicate_id",
    "an `invoke` reusing a live id, whatever its request; **not terminal**: the live "
    "invocation goes on",
)
TOOL_LOOP_DISABLED: Final = FrontError(
    INVALID_REQUEST,
    "tool_loop_disabled",
    '`"tool_mode": "auto"` on a front made without `allow_tool_loop=True`',
)
TOO_MANY_INVOCATIONS: Final = FrontError(
    OVERLOADED,
    "too_many_invocations",
    "more live invocations than `max_concurrent_per_connection` (`details.limit`)",
)
SLOW_CONSUMER: Final = FrontError(
    OVERLOADED,
    "slow_consumer",
    "the client did not read: no room in its queue within `slow_consumer_timeout`",
)
SHUTTING_DOWN: Final = FrontError(
    OVERLOADED, "shutting_down", "an `invoke` that arrives while the server shuts down"
)
RATE_LIMITED: Final = FrontError(
    ErrorCode.RATE_LIMIT_EXCEEDED.value,
    None,
    "more invocations started than `client_requests_per_minute`; `retry_after` says when",
)
CANCELED_BY_CLIENT: Final = FrontError(
    ErrorCode.CANCELED.value, None, "a `cancel` frame; `usage` is what was streamed"
)
CANCELED_AT_SHUTDOWN: Final = FrontError(
    ErrorCode.CANCELED.value,
    "shutting_down",
    "still running when the shutdown's grace ended; `usage` is what was streamed",
)
FRONT_ERRORS: Final = (
    UNREADABLE,
    TOO_LARGE,
    INVALID,
    DUPLICATE_ID,
    TOOL_LOOP_DISABLED,
    TOO_MANY_INVOCATIONS,
    SLOW_CONSUMER,
    SHUTTING_DOWN,
    RATE_LIMITED,
    CANCELED_BY_CLIENT,
    CANCELED_AT_SHUTDOWN,
)
"""Every kind of error the front sends of its own, in the documentation's order."""


def is_terminal(frame: ServerFrame) -> bool:
    """Whether ``frame`` ends its invocation: a ``done``, or an ``error`` with an id that
    is not a ``duplicate_id`` notice."""
    if isinstance(frame, DoneFrame):
        return True
    if isinstance(frame, ErrorFrame) and frame.id is not None:
        details = frame.details or {}
        return details.get("reason") != DUPLICATE_ID.reason
    return False


# -- reading client frames -----------------------------------------------------------------------


@final
class Probe(msgspec.Struct):
    """A client frame's type and id, read before (and whether or not) the rest decodes."""

    type: Any = None
    id: Any = None

    @property
    def frame_id(self) -> str | None:
        """The frame's id when it is a string."""
        return self.id if isinstance(self.id, str) else None


_CLIENT_DECODER: Final = msgspec.json.Decoder(ClientFrame)
_PROBE_DECODER: Final = msgspec.json.Decoder(Probe)


class FrameError(Exception):
    """A client frame that cannot be acted on; becomes an ``error`` frame."""

    def __init__(self, code: str, message: str, id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


def probe_client_frame(data: str | bytes) -> Probe:
    """Read only the type and the id of a client frame.

    Raises:
        FrameError: the frame is not a JSON object (``protocol_error``).
    """
    try:
        return _PROBE_DECODER.decode(data)
    except msgspec.DecodeError:
        raise FrameError(PROTOCOL_ERROR, "the frame is not a JSON object") from None


def decode_client_frame(data: str | bytes, probe: Probe | None = None) -> ClientFrame:
    """Decode one client frame (``probe``: its `probe_client_frame`, when already read).

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
    probe = probe if probe is not None else probe_client_frame(data)
    frame_id = probe.frame_id
    if isinstance(failure, LLMError):
        raise FrameError(failure.code.value, failure.message, frame_id) from None
    text = str(failure)
    if probe.type not in ("invoke", "cancel", "ping"):
        raise FrameError(PROTOCOL_ERROR, f"unknown frame type {probe.type!r}", frame_id) from None
    if probe.type == "invoke" and frame_id is not None and "$.request" in text:
        raise FrameError(INVALID_REQUEST, f"invalid request: {text}", frame_id) from None
    raise FrameError(PROTOCOL_ERROR, f"invalid {probe.type} frame: {text}", frame_id) from None


# -- the documentation's reference tables --------------------------------------------------------


def _type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``string``, ``Request``, ``list of StreamChunk``."""
    if annotation is Any:
        return "any"
    if annotation == ServerFrame:
        return "server frame (never `batch`)"
    if annotation is type(None):
        return "null"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " or ".join(
            f'`"{value}"`' if isinstance(value, str) else str(value) for value in args
        )
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "object"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _first_paragraph(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().split("\n\n", 1)[0]
    return " ".join(doc.split()).replace("``", "`")


def _frame_rows(direction: str, frames: tuple[type[msgspec.Struct], ...]) -> list[str]:
    rows: list[str] = []
    for cls in frames:
        tag = cls.__struct_config__.tag
        fields = ", ".join(
            f"`{field.name}`{'' if field.required else '?'}: {_type_name(field.type)}"
            for field in msgspec.structs.fields(cls)
        )
        rows.append(f"| {direction} | `{tag}` | {fields} | {_first_paragraph(cls)} |")
    return rows


def render_reference() -> str:
    """The documentation's tables of frames and error codes, rendered from the types.

    A field marked ``?`` may be left out. The documentation holds this text verbatim
    (a test keeps it so).
    """
    client_frames: tuple[type[msgspec.Struct], ...] = (InvokeFrame, CancelFrame, PingFrame)
    server_frames: tuple[type[msgspec.Struct], ...] = (
        ChunkFrame,
        ChunksFrame,
        ToolCallFrame,
        ToolResultFrame,
        DoneFrame,
        ErrorFrame,
        PongFrame,
        BatchFrame,
    )
    lines = [
        "| from | `type` | fields (`?`: optional) | meaning |",
        "|---|---|---|---|",
        *_frame_rows("client", client_frames),
        *_frame_rows("server", server_frames),
        "",
        "| `code` | `details.reason` | sent for |",
        "|---|---|---|",
    ]
    for error in FRONT_ERRORS:
        reason = f"`{error.reason}`" if error.reason is not None else "-"
        lines.append(f"| `{error.code}` | {reason} | {error.meaning} |")
    own = {error.code for error in FRONT_ERRORS}
    others = sorted({code.value for code in ErrorCode} - own)
    listed = ", ".join(f"`{code}`" for code in others)
    lines.append(
        f"| {listed} | as the error says | the invocation's own error (these, and the codes "
        "above when the invocation raised them), with `provider`, `status`, `retry_after`, "
        "`request_id`, `retryable` and `details` when known |"
    )
    return "\n".join(lines) + "\n"
