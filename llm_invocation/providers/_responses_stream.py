"""The streamed-body decoder of the OpenAI Responses API.

Grammar handled (WIRE-FORMATS 0.1 and 2): ``event: <type>`` / ``data: {"type": <type>, ...}``
pairs (the type is read from the data, so bodies without ``event:`` lines decode the same),
no ``[DONE]``:

* ``response.created`` / ``in_progress`` / ``queued``: the response's id, model and creation
  time (on the first chunk that comes out);
* ``response.output_item.added``: a ``function_call`` item opens a tool call (its ``call_id``
  and ``name``, numbered 0, 1... in output order); ``response.function_call_arguments.delta``
  streams its arguments, ``.done`` (and ``output_item.done``) checks them;
* ``response.output_text.delta`` is text, ``.done`` checks it; ``response.refusal.delta``
  collects a refusal (``metadata["refusal"]`` on the last chunk);
* ``response.reasoning_summary_text.delta`` and ``response.reasoning_text.delta`` are
  reasoning (parts of one item separated by a blank line); ``output_item.done`` of a
  reasoning item with ``encrypted_content`` closes it with a signature;
* ``response.completed`` and ``response.incomplete`` end the stream with the finish reason
  (``length`` for ``max_output_tokens``), the usage and the metadata of a decoded body;
  output items that only the terminal event carries are delivered then;
* ``response.failed`` and ``error`` end it with the typed error (``insufficient_quota`` is a
  `RateLimited` that is not retryable);
* every other event type is skipped.

A ``.done`` event whose full text disagrees with the deltas delivered before it, malformed
JSON, or a known event with fields of the wrong type ends the stream with a
`StreamingFailed` chunk (``details["reason"]`` ``"malformed response"``), retryable only when no
content came out before it (the rule of every format); a body that ends before a terminal
event, with one whose reason is ``"truncated"``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, final

import msgspec

from ..errors import LLMError, StreamingFailed
from ..types import StreamChunk, ToolCallDelta
from ._base import JSON_ERRORS, StreamDecoder, datetime_from_unix, has_content
from ._responses_wire import (
    EVENT_DECODER,
    ITEM_DECODER,
    RESPONSE_DECODER,
    OutputItem,
    StreamEvent,
    WireResponse,
    failure_error,
    finish_of,
    reasoning_signature,
    reasoning_texts,
    usage_from_wire,
)
from ._sse import SSEParser

__all__ = ["ResponsesStreamDecoder"]

_MAX_QUOTED: Final = 200
_PART_SEPARATOR: Final = "\n\n"
_LIFECYCLE: Final = frozenset({"response.created", "response.in_progress", "response.queued"})
_TERMINAL: Final = frozenset({"response.completed", "response.incomplete"})


class _Malformed(Exception):
    """A known event whose fields have the wrong shape."""


def _int(value: Any, field: str) -> int:
    if type(value) is not int:
        raise _Malformed(f"{field} is {value!r}, not an integer")
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{field} is {type(value).__name__}, not a string")
    return value


class _Call:
    __slots__ = ("arguments", "ordinal")

    def __init__(self, ordinal: int, arguments: str) -> None:
        self.ordinal = ordinal
        self.arguments = [arguments] if arguments else []


class _Reasoning:
    __slots__ = ("part", "wrote")

    def __init__(self) -> None:
        self.part: tuple[str, int] | None = None
        self.wrote = False


@final
class ResponsesStreamDecoder(StreamDecoder):
    """Decode one streamed ``POST /responses`` body into `StreamChunk` objects.

    Args:
        provider: the provider name put on every chunk.
        map_error: turns an error payload (``{"error": {...}}``) into the typed error.
        model: the model to report until the stream names its own.
    """

    __slots__ = (
        "_calls",
        "_content",
        "_created",
        "_done",
        "_id",
        "_map_error",
        "_model",
        "_parser",
        "_provider",
        "_reasoning",
        "_refusal",
        "_seen",
        "_stamped",
        "_texts",
        "_types",
    )

    def __init__(
        self, *, provider: str, map_error: Callable[[Any], LLMError], model: str = ""
    ) -> None:
        self._parser = SSEParser()
        self._provider = provider
        self._map_error = map_error
        self._done = False
        self._id = ""
        self._model = model
        self._created: datetime | None = None
        self._stamped = False
        self._content = False  # a chunk with content came out
        self._seen: set[int] = set()  # output indexes of the items met
        self._calls: dict[int, _Call] = {}  # output index -> tool call
        self._texts: dict[tuple[int, int], list[str]] = {}  # (output, content) -> text
        self._reasoning: dict[int, _Reasoning] = {}
        self._refusal: list[str] = []
        self._types: list[str] = []

    @property
    def done(self) -> bool:
        """Whether the stream is over: a terminal event, an error, or `close`."""
        return self._done

    def feed(self, data: bytes) -> list[StreamChunk]:
        """Decode the chunks completed by ``data`` (one network read)."""
        if self._done:
            return []
        events = self._parser.feed(data)
        if not events:
            return []
        out: list[StreamChunk] = []
        for event in events:
            self._event(event.data, out)
            if self._done:
                break
        return self._stamp(out)

    def close(self) -> list[StreamChunk]:
        """End of body: decode a last unterminated event, then check the stream finished.

        Returns an error chunk (`StreamingFailed`, ``details["reason"]`` ``"truncated"``)
        when no terminal event came.
        """
        if self._done:
            return []
        out: list[StreamChunk] = []
        for event in self._parser.flush():
            self._event(event.data, out)
            if self._done:
                return self._stamp(out)
        self._done = True
        error = StreamingFailed(
            "stream ended before completion",
            provider=self._provider,
            details={"reason": "truncated"},
        )
        out.append(self._chunk(error=error.info()))
        return self._stamp(out)

    # -- events -----------------------------------------------------------------------------

    def _event(self, data: bytes, out: list[StreamChunk]) -> None:
        if not data.strip():
            return
        try:
            event = EVENT_DECODER.decode(data)
            self._dispatch(event, out)
        except (*JSON_ERRORS, _Malformed) as exc:
            quoted = data[:_MAX_QUOTED].decode("utf-8", "replace")
            error = StreamingFailed(
                f"malformed stream event: {exc}",
                provider=self._provider,
                retryable=not (self._content or has_content(out)),
                details={"reason": "malformed response", "data": quoted},
            )
            error.__cause__ = exc  # travels with the chunk's ErrorInfo in this process
            self._fail(error, out)

    def _dispatch(self, event: StreamEvent, out: list[StreamChunk]) -> None:
        kind = event.type
        if kind == "response.output_text.delta":
            # The hot path: no helper calls beyond the checks.
            delta = event.delta
            key = (event.output_index, event.content_index or 0)
            if type(delta) is not str or type(key[0]) is not int or type(key[1]) is not int:
                raise _Malformed("an output_text.delta needs a delta and integer indexes")
            texts = self._texts.get(key)
            if texts is None:
                texts = self._texts[key] = []
            texts.append(delta)
            if delta:
                out.append(
                    StreamChunk(id=self._id, provider=self._provider, model=self._model, text=delta)
                )
        elif kind == "response.function_call_arguments.delta":
            call = self._call(event)
            delta = _str(event.delta, "delta")
            if delta:
                call.arguments.append(delta)
                out.append(
                    self._chunk(tool_calls=[ToolCallDelta(index=call.ordinal, arguments=delta)])
                )
        elif kind in (
            "response.reasoning_summary_text.delta",
            "response.reasoning_text.delta",
        ):
            index = _int(event.output_index, "output_index")
            part = (
                ("summary", _int(event.summary_index or 0, "summary_index"))
                if kind == "response.reasoning_summary_text.delta"
                else ("content", _int(event.content_index or 0, "content_index"))
            )
            self._reason(index, part, _str(event.delta, "delta"), out)
        elif kind == "response.output_text.done":
            key = (
                _int(event.output_index, "output_index"),
                _int(event.content_index or 0, "content_index"),
            )
            self._settle_text(key, _str(event.text, "text"), out)
        elif kind == "response.function_call_arguments.done":
            self._settle_arguments(self._call(event), _str(event.arguments, "arguments"), out)
        elif kind == "response.refusal.delta":
            self._refusal.append(_str(event.delta, "delta"))
        elif kind == "response.output_item.added":
            self._added(_int(event.output_index, "output_index"), self._item(event), out)
        elif kind == "response.output_item.done":
            self._item_done(_int(event.output_index, "output_index"), self._item(event), out)
        elif kind in _LIFECYCLE:
            self._identify(self._response(event))
        elif kind in _TERMINAL:
            self._finish(self._response(event), out)
        elif kind == "response.failed":
            response = self._response(event)
            self._identify(response)
            self._fail(failure_error(response, self._provider), out)
        elif kind == "error":
            error = event.error
            if isinstance(error, str):
                error = {"message": error, "code": event.code}
            elif not isinstance(error, dict):
                error = {"code": event.code, "message": event.message, "param": event.param}
            self._fail(self._map_error({"error": error}), out)

    @staticmethod
    def _item(event: StreamEvent) -> OutputItem:
        if not event.item:
            raise _Malformed("the event has no item")
        return ITEM_DECODER.decode(event.item)

    @staticmethod
    def _response(event: StreamEvent) -> WireResponse:
        if not event.response:
            raise _Malformed("the event has no response")
        return RESPONSE_DECODER.decode(event.response)

    def _call(self, event: StreamEvent) -> _Call:
        call = self._calls.get(_int(event.output_index, "output_index"))
        if call is None:
            raise _Malformed("function call arguments for an item that is not a function call")
        return call

    def _identify(self, response: WireResponse) -> None:
        if not self._id and response.id:
            self._id = response.id
        if response.model:
            self._model = response.model
        if self._created is None:
            self._created = datetime_from_unix(response.created_at)

    # -- items ------------------------------------------------------------------------------

    def _added(self, index: int, item: OutputItem, out: list[StreamChunk]) -> None:
        self._seen.add(index)
        kind = item.type
        if kind == "function_call":
            call = self._calls[index] = _Call(len(self._calls), item.arguments or "")
            delta = ToolCallDelta(
                index=call.ordinal,
                id=item.call_id or item.id or f"call_{call.ordinal}",
                name=item.name or "",
                arguments=item.arguments or "",
            )
            out.append(self._chunk(tool_calls=[delta]))
        elif kind == "reasoning":
            self._reasoning[index] = _Reasoning()
        elif kind == "message":
            for n, part in enumerate(item.content or ()):
                if part.type == "output_text" and part.text:
                    self._settle_text((index, n), part.text, out)
        elif kind not in self._types:
            self._types.append(kind)

    def _item_done(self, index: int, item: OutputItem, out: list[StreamChunk]) -> None:
        if index not in self._seen:
            self._whole(index, item, out)
            return
        kind = item.type
        if kind == "function_call":
            call = self._calls.get(index)
            if call is not None and item.arguments is not None:
                self._settle_arguments(call, item.arguments, out)
        elif kind == "message":
            for n, part in enumerate(item.content or ()):
                if part.type == "output_text" and part.text is not None:
                    self._settle_text((index, n), part.text, out)
        elif kind == "reasoning":
            state = self._reasoning.get(index)
            if state is not None and not state.wrote:
                # No deltas came: the item's own texts.
                texts = reasoning_texts(item)
                if texts:
                    state.wrote = True
                    out.append(self._chunk(reasoning=_PART_SEPARATOR.join(texts)))
            signature = reasoning_signature(item.id, item.encrypted_content)
            if signature is not None:
                out.append(self._chunk(reasoning_signature=signature))

    def _whole(self, index: int, item: OutputItem, out: list[StreamChunk]) -> None:
        """An item met only when complete (no ``added`` event before it)."""
        self._added(index, item, out)
        if item.type == "reasoning":
            self._item_done(index, item, out)
        elif item.type == "message":
            for part in item.content or ():
                if part.type == "refusal" and part.refusal:
                    self._refusal.append(part.refusal)

    def _reason(
        self, index: int, part: tuple[str, int], delta: str, out: list[StreamChunk]
    ) -> None:
        state = self._reasoning.get(index)
        if state is None:
            raise _Malformed("reasoning text for an item that is not a reasoning item")
        if not delta:
            return
        if state.part != part:
            if state.wrote:
                delta = _PART_SEPARATOR + delta
            state.part = part
        state.wrote = True
        out.append(self._chunk(reasoning=delta))

    def _settle_text(self, key: tuple[int, int], text: str, out: list[StreamChunk]) -> None:
        pieces = self._texts.setdefault(key, [])
        sent = "".join(pieces)
        if sent == text:
            return
        if not text.startswith(sent):
            raise _Malformed("the final text disagrees with the text streamed before it")
        rest = text[len(sent) :]
        pieces.append(rest)
        out.append(self._chunk(text=rest))

    def _settle_arguments(self, call: _Call, arguments: str, out: list[StreamChunk]) -> None:
        sent = "".join(call.arguments)
        if sent == arguments:
            return
        if not arguments.startswith(sent):
            raise _Malformed("the final arguments disagree with the arguments streamed before")
        rest = arguments[len(sent) :]
        call.arguments.append(rest)
        out.append(self._chunk(tool_calls=[ToolCallDelta(index=call.ordinal, arguments=rest)]))

    # -- the end ----------------------------------------------------------------------------

    def _finish(self, response: WireResponse, out: list[StreamChunk]) -> None:
        self._identify(response)
        for index, item in enumerate(response.output or ()):
            if index not in self._seen:
                self._whole(index, item, out)
        finish, native = finish_of(response, bool(self._calls))
        metadata: dict[str, Any] = {"native_finish_reason": native, "status": response.status}
        if self._refusal:
            metadata["refusal"] = "".join(self._refusal)
        if self._types:
            metadata["output_types"] = list(self._types)
        if response.service_tier is not None:
            metadata["service_tier"] = response.service_tier
        usage = usage_from_wire(response.usage) if response.usage is not None else None
        out.append(self._chunk(finish_reason=finish, usage=usage, metadata=metadata))
        self._done = True

    def _fail(self, error: LLMError, out: list[StreamChunk]) -> None:
        self._done = True
        out.append(self._chunk(error=error.info()))

    def _chunk(self, **fields: Any) -> StreamChunk:
        return StreamChunk(id=self._id, provider=self._provider, model=self._model, **fields)

    def _stamp(self, out: list[StreamChunk]) -> list[StreamChunk]:
        """Put the response's creation time on the first chunk that comes out (and note
        whether content came out: a malformed event after it is not retryable)."""
        if out and not self._content:
            self._content = has_content(out)
        if out and not self._stamped:
            self._stamped = True
            if self._created is not None:
                out[0] = msgspec.structs.replace(out[0], created=self._created)
        return out
