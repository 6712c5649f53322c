"""The incremental decoder of a streamed Anthropic Messages response (WIRE-FORMATS 3.4).

Bytes go through `SSEParser`, each event's data through one typed msgspec decode (a tagged
union on ``"type"``), and out come `StreamChunk`s:

==========================  =============================================================
event                       chunk
==========================  =============================================================
message_start               id, model, provider, input usage (+ ``service_tier`` metadata);
                            no ``created``: Anthropic sends no creation time
content_block_start         text / reasoning when the block starts with some; a tool_use
                            block opens a `ToolCallDelta` (index = the tool call's ordinal)
content_block_delta         text_delta -> text, input_json_delta -> arguments fragment,
                            thinking_delta -> reasoning, signature_delta ->
                            reasoning_signature; citations_delta and unknown kinds skipped
message_delta               finish reason (normalised), cumulative usage, metadata
                            ``native_finish_reason`` and ``stop_sequence``
message_stop                nothing: `done` becomes true
error                       a chunk whose ``error`` is set; nothing follows
ping, unknown event types   nothing
==========================  =============================================================

Blocks the codec does not model (``server_tool_use``, ``web_search_tool_result`` and any kind
added later) are skipped with their deltas. The hot path (a ``text_delta``) costs one SSE
split, one typed decode and one `StreamChunk`.
"""

from __future__ import annotations

from typing import Final, final

import msgspec

from ..errors import StreamingFailed
from ..types import StreamChunk, ToolCallDelta
from ._anthropic_wire import (
    EVENT_DECODER,
    KNOWN_BLOCKS,
    KNOWN_DELTAS,
    KNOWN_EVENTS,
    LOOSE_DECODER,
    BlockDelta,
    BlockStart,
    ErrorEvent,
    MessageDelta,
    MessageStart,
    MessageStop,
    WireUsage,
    error_from_type,
    finish_reason,
    normalise_usage,
)
from ._base import JSON_ERRORS, StreamDecoder, has_content
from ._sse import SSEParser

__all__ = ["AnthropicStreamDecoder"]

_DECODE: Final = EVENT_DECODER.decode


@final
class AnthropicStreamDecoder(StreamDecoder):
    """Decode one streamed ``/v1/messages`` body into `StreamChunk`s.

    Feed it every network read; call `close` at the end of the body. A body that ends
    before ``message_stop`` (and without an ``error`` event) yields a `StreamingFailed`
    error chunk from `close`. A malformed event (bad JSON, or a known event whose fields
    have the wrong shape) yields a `StreamingFailed` error chunk at once and ends decoding;
    it is retryable only when no content came out before it. Chunks carry no ``created``:
    Anthropic sends no creation time (see docs/providers.md).

    Args:
        provider: the provider name put on the first chunk and on errors.
    """

    __slots__ = (
        "_closed",
        "_content",
        "_done",
        "_failed",
        "_next_tool",
        "_parser",
        "_provider",
        "_start",
        "_tools",
    )

    def __init__(self, *, provider: str = "anthropic") -> None:
        self._provider = provider
        self._parser = SSEParser()
        self._tools: dict[int, int] = {}  # content-block index -> tool-call ordinal
        self._next_tool = 0
        self._start: WireUsage | None = None  # message_start usage (input counts)
        self._done = False
        self._failed = False
        self._closed = False
        self._content = False  # a chunk with content came out (see `_fail`)

    @property
    def done(self) -> bool:
        """Whether ``message_stop`` (or an ``error`` event, also terminal) was seen."""
        return self._done

    def feed(self, data: bytes) -> list[StreamChunk]:
        """Decode the chunks completed by ``data`` (one network read).

        Returns:
            The chunks, in order; empty once the stream is done or failed.
        """
        if self._done or self._failed:
            return []
        events = self._parser.feed(data)
        if not events:
            return []
        out: list[StreamChunk] = []
        for event in events:
            self._event(event.data, out)
            if self._done or self._failed:
                break
        if out and not self._content:
            self._content = has_content(out)
        return out

    def close(self) -> list[StreamChunk]:
        """End of body: decode what is left; a stream cut short yields an error chunk.

        Returns:
            The last chunks; a `StreamingFailed` error chunk when ``message_stop`` never came.
        """
        if self._closed:
            return []
        self._closed = True
        out: list[StreamChunk] = []
        if self._done or self._failed:
            return out
        for event in self._parser.flush():
            self._event(event.data, out)
            if self._done or self._failed:
                break
        if not self._done and not self._failed:
            self._fail(out, "the stream ended before message_stop", reason="truncated")
        return out

    # -- events ------------------------------------------------------------------------------

    def _event(self, data: bytes, out: list[StreamChunk]) -> None:
        try:
            event = _DECODE(data)
        except msgspec.ValidationError as exc:
            self._untyped(data, exc, out)
            return
        except JSON_ERRORS as exc:
            if data.strip():
                self._fail(
                    out, f"malformed stream event: {exc}", reason="malformed response", cause=exc
                )
            return
        if type(event) is BlockDelta:
            delta = event.delta
            kind = delta.type
            if kind == "text_delta":
                if delta.text:
                    out.append(StreamChunk(text=delta.text))
            elif kind == "input_json_delta":
                ordinal = self._tools.get(event.index)
                if ordinal is not None and delta.partial_json:
                    out.append(
                        StreamChunk(
                            tool_calls=[ToolCallDelta(index=ordinal, arguments=delta.partial_json)]
                        )
                    )
            elif kind == "thinking_delta":
                if delta.thinking:
                    out.append(StreamChunk(reasoning=delta.thinking))
            elif kind == "signature_delta":
                out.append(StreamChunk(reasoning_signature=delta.signature))
            # citations_delta and kinds added later carry nothing we model
        elif type(event) is BlockStart:
            self._block_start(event, out)
        elif type(event) is MessageDelta:
            self._message_delta(event, out)
        elif type(event) is MessageStart:
            self._message_start(event, out)
        elif type(event) is MessageStop:
            self._done = True
        elif type(event) is ErrorEvent:
            error = event.error
            err = error_from_type(
                error.type,
                error.message,
                provider=self._provider,
                # No HTTP status here (the stream had 200), except 529 for overloaded_error:
                # `error_from_info` rebuilds a ProviderOverloaded only from 503 / 529.
                status=529 if error.type == "overloaded_error" else None,
                request_id=event.request_id,
                in_stream=True,
            )
            out.append(StreamChunk(provider=self._provider, error=err.info()))
            self._done = True
        # ping and content_block_stop: nothing to do

    def _block_start(self, event: BlockStart, out: list[StreamChunk]) -> None:
        block = event.content_block
        kind = block.type
        if kind == "text":
            if block.text:
                out.append(StreamChunk(text=block.text))
        elif kind == "tool_use":
            ordinal = self._next_tool
            self._next_tool = ordinal + 1
            self._tools[event.index] = ordinal
            out.append(
                StreamChunk(tool_calls=[ToolCallDelta(index=ordinal, id=block.id, name=block.name)])
            )
        elif kind == "thinking":
            if block.thinking or block.signature:
                out.append(
                    StreamChunk(
                        reasoning=block.thinking, reasoning_signature=block.signature or None
                    )
                )
        elif kind == "redacted_thinking":
            # The opaque data travels as the signature of a redacted block of its own, and
            # the response metadata says a redacted block was seen.
            out.append(
                StreamChunk(
                    reasoning_signature=block.data,
                    reasoning_redacted=True,
                    metadata={"redacted_thinking": True},
                )
            )
        # server_tool_use, web_search_tool_result and later kinds are skipped (their
        # input_json_delta too: only tool_use indexes are in self._tools)

    def _message_start(self, event: MessageStart, out: list[StreamChunk]) -> None:
        message = event.message
        usage = message.usage
        self._start = usage
        out.append(
            StreamChunk(
                id=message.id,
                provider=self._provider,
                model=message.model,
                usage=normalise_usage(usage) if usage is not None else None,
                metadata={"service_tier": usage.service_tier}
                if usage is not None and usage.service_tier
                else None,
            )
        )

    def _message_delta(self, event: MessageDelta, out: list[StreamChunk]) -> None:
        delta = event.delta
        metadata: dict[str, object] = {}
        if delta.stop_reason is not None:
            metadata["native_finish_reason"] = delta.stop_reason
        if delta.stop_sequence is not None:
            metadata["stop_sequence"] = delta.stop_sequence
        usage = event.usage
        out.append(
            StreamChunk(
                finish_reason=finish_reason(delta.stop_reason),
                usage=normalise_usage(usage, self._start) if usage is not None else None,
                metadata=metadata or None,
            )
        )

    def _untyped(self, data: bytes, exc: msgspec.ValidationError, out: list[StreamChunk]) -> None:
        """An event that failed typed decoding: skip a kind we do not know, else fail."""
        try:
            loose = LOOSE_DECODER.decode(data)
        except JSON_ERRORS:
            self._fail(
                out, f"malformed stream event: {exc}", reason="malformed response", cause=exc
            )
            return
        kind = loose.type
        if kind not in KNOWN_EVENTS:
            return  # an event type added after this codec: skip it
        if kind == "content_block_start" and (
            loose.content_block is None or loose.content_block.type not in KNOWN_BLOCKS
        ):
            return  # a block kind we skip anyway, whatever its fields look like
        if kind == "content_block_delta" and (
            loose.delta is None or loose.delta.type not in KNOWN_DELTAS
        ):
            return
        self._fail(out, f"malformed {kind} event: {exc}", reason="malformed response", cause=exc)

    def _fail(
        self,
        out: list[StreamChunk],
        message: str,
        *,
        reason: str,
        cause: BaseException | None = None,
    ) -> None:
        # A malformed event is retryable only when no content came out before it (the rule
        # of every format, docs/providers.md); a truncated stream keeps the default.
        retryable = None
        if reason == "malformed response":
            retryable = not (self._content or has_content(out))
        err = StreamingFailed(
            message, provider=self._provider, retryable=retryable, details={"reason": reason}
        )
        # The decoding exception travels with the chunk's ErrorInfo in this process.
        err.__cause__ = cause
        out.append(StreamChunk(provider=self._provider, error=err.info()))
        self._failed = True
