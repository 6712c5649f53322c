"""Decode streamed Gemini bodies into `StreamChunk`s.

Two framings carry the same ``GenerateContentResponse`` objects (``WIRE-FORMATS.md`` 4.1,
4.4): server-sent events (``alt=sse``, ``data: {...}`` separated by CRLF CRLF) and, without
``alt=sse``, one JSON array streamed element by element (``[{...}\\n,\\r\\n{...}\\n]``). Both
decoders hand each complete object to one `ChunkConverter`, which keeps the per-stream state.

One object becomes, per candidate, usually one chunk: text parts are ``text``, ``thought``
parts ``reasoning``, a ``thoughtSignature`` on a text or thought part ``reasoning_signature``
and on a ``functionCall`` part the call's ``metadata["thought_signature"]``. When the parts of
one object cannot share a chunk without changing their order (thinking after text, two signed
blocks), the object is split into several chunks. ``usageMetadata`` (running totals) goes on
the object's last chunk. Every chunk carries ``responseId`` and ``modelVersion``; Vertex AI's
``createTime`` goes once, on the first chunk that comes out from when it is first sent (the
Gemini API sends none, and then no chunk claims a creation time).

Function calls arrive whole and become one `ToolCallDelta` each, numbered by a running
ordinal, with the id ``call_<responseId>_<ordinal>`` (Vertex's own ``id`` when it sends one).
Vertex's argument streaming (``partialArgs`` fragments with a JSON path each, a call opened by
``{"name", "willContinue": true}`` and closed by an empty ``functionCall``) is turned into
argument text as it arrives: the deltas of one call concatenate to the compact JSON of its
arguments, exactly what a whole call would have carried (see `PartialCall`, in
``_gemini_partial``).

A malformed object fails the stream with a `StreamingFailed` (``details["reason"]`` is
``"malformed response"``) that is retryable only when no content came out before it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, final

import msgspec

from ..errors import LLMError, StreamingFailed
from ..types import StreamChunk, ToolCallDelta, Usage
from ._base import JSON_ERRORS, StreamDecoder, has_content
from ._gemini_partial import PartialCall, parse_json_path
from ._gemini_wire import (
    Candidate,
    ErrorEnvelope,
    FunctionCall,
    GenerateContentResponse,
    created_from_text,
    error_from_status,
    finish_reason,
    normalise_usage,
)
from ._sse import SSEParser

__all__ = [
    "ChunkConverter",
    "GeminiJSONArrayDecoder",
    "GeminiSSEDecoder",
    "JSONArrayScanner",
    "MalformedStream",
    "PartialCall",
    "parse_json_path",
]

_RESPONSE_DECODER: Final = msgspec.json.Decoder(GenerateContentResponse)
_ENVELOPE_DECODER: Final = msgspec.json.Decoder(ErrorEnvelope)
_ENCODER: Final = msgspec.json.Encoder()
_QUOTE: Final = 0x22
_OPEN: Final = 0x7B
_CLOSE_ARRAY: Final = 0x5D


# -- objects to chunks --------------------------------------------------------------------------


class _CandidateState:
    __slots__ = ("calls", "finished", "open")

    def __init__(self) -> None:
        self.calls = 0
        self.open: PartialCall | None = None
        self.finished = False

    def call(
        self, call: FunctionCall, signature: str | None, response_id: str, choice: int
    ) -> list[ToolCallDelta]:
        deltas: list[ToolCallDelta] = []
        if call.name is None and call.args is None:
            # A Vertex fragment: arguments, a keep-alive, or (empty) the end of the call.
            current = self.open
            if current is None:
                if not call.partial_args:
                    return deltas  # nothing open: a stray end marker
                current = self._start(None, None, response_id, choice, signature, deltas)
            elif signature:
                deltas.append(
                    ToolCallDelta(index=current.index, metadata={"thought_signature": signature})
                )
            if call.partial_args:
                text = current.feed(call.partial_args)
                if text:
                    deltas.append(ToolCallDelta(index=current.index, arguments=text))
            if not call.will_continue:
                deltas.append(ToolCallDelta(index=current.index, arguments=current.close()))
                self.open = None
            return deltas
        self.close(deltas)
        if call.args is None and (call.will_continue or call.partial_args):
            current = self._start(call.id, call.name, response_id, choice, signature, deltas)
            if call.partial_args:
                text = current.feed(call.partial_args)
                if text:
                    deltas.append(ToolCallDelta(index=current.index, arguments=text))
            if not call.will_continue:
                self.close(deltas)
            return deltas
        index = self.calls
        self.calls += 1
        deltas.append(
            ToolCallDelta(
                index=index,
                id=call.id or _call_id(response_id, choice, index),
                name=call.name or "",
                arguments=_ENCODER.encode(call.args).decode() if call.args is not None else "{}",
                metadata={"thought_signature": signature} if signature else None,
            )
        )
        return deltas

    def _start(
        self,
        call_id: str | None,
        name: str | None,
        response_id: str,
        choice: int,
        signature: str | None,
        deltas: list[ToolCallDelta],
    ) -> PartialCall:
        index = self.calls
        self.calls += 1
        current = self.open = PartialCall(index)
        deltas.append(
            ToolCallDelta(
                index=index,
                id=call_id or _call_id(response_id, choice, index),
                name=name or "",
                metadata={"thought_signature": signature} if signature else None,
            )
        )
        return current

    def close(self, deltas: list[ToolCallDelta]) -> None:
        current = self.open
        if current is not None:
            deltas.append(ToolCallDelta(index=current.index, arguments=current.close()))
            self.open = None


def _call_id(response_id: str, choice: int, ordinal: int) -> str:
    prefix = f"call_{response_id}_" if response_id else "call_"
    return f"{prefix}{choice}_{ordinal}" if choice else f"{prefix}{ordinal}"


@final
class ChunkConverter:
    """Turns ``GenerateContentResponse`` objects into chunks, keeping the stream's state.

    Attributes:
        done: every candidate seen has finished (or the prompt was blocked).
        failed: an error chunk was produced; later objects are ignored.
    """

    __slots__ = (
        "_content",
        "_created",
        "_first",
        "_id",
        "_stamped",
        "_states",
        "done",
        "failed",
        "model",
        "provider",
    )

    def __init__(self, *, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.done = False
        self.failed = False
        self._id = ""
        self._first = _CandidateState()
        self._states: dict[int, _CandidateState] = {0: self._first}
        self._created: datetime | None = None  # the first createTime seen
        self._stamped = False  # a chunk carried it out
        self._content = False  # a chunk with content came out: no retry after a failure

    def payload(self, data: bytes) -> list[StreamChunk]:
        """The chunks of one serialised object (an SSE ``data`` payload or array element)."""
        if self.failed or not data:
            return []
        try:
            response = _RESPONSE_DECODER.decode(data)
        except JSON_ERRORS as exc:
            return [self.malformed(f"malformed Gemini stream object: {exc}", exc)]
        return self.convert(response)

    def malformed(self, message: str, cause: BaseException) -> StreamChunk:
        """The error chunk for a body that does not decode; the stream ends with it. It is
        retryable only when no content came out before it (the rule of every format)."""
        error = StreamingFailed(
            message,
            provider=self.provider,
            retryable=not self._content,
            details={"reason": "malformed response"},
        )
        error.__cause__ = cause  # travels with the chunk's ErrorInfo in this process
        return self.fail(error)

    def convert(self, response: GenerateContentResponse) -> list[StreamChunk]:
        """The chunks of one decoded object."""
        if self.failed:
            return []
        status = response.error
        if status is not None:
            code = status.code or 500
            return [self.fail(error_from_status(code, status, provider=self.provider))]
        response_id = response.response_id or self._id
        self._id = response_id
        model = response.model_version or self.model
        usage = normalise_usage(response.usage_metadata)
        candidates = response.candidates
        out: list[StreamChunk] = []
        if not candidates:
            feedback = response.prompt_feedback
            if feedback is not None and feedback.block_reason:
                metadata = {"block_reason": feedback.block_reason}
                if feedback.block_reason_message:
                    metadata["block_reason_message"] = feedback.block_reason_message
                out.append(
                    StreamChunk(
                        id=response_id,
                        provider=self.provider,
                        model=model,
                        finish_reason="content_filter",
                        usage=usage,
                        metadata=metadata,
                    )
                )
                self.done = True
            elif usage is not None:
                out.append(
                    StreamChunk(id=response_id, provider=self.provider, model=model, usage=usage)
                )
        else:
            last = len(candidates) - 1
            for n, candidate in enumerate(candidates):
                self._candidate(candidate, response_id, model, usage if n == last else None, out)
        if out and not self._content:
            self._content = has_content(out)
        if not self._stamped:
            self._stamp(response, out)
        return out

    def _stamp(self, response: GenerateContentResponse, out: list[StreamChunk]) -> None:
        """Put the stream's ``createTime``, once, on the first chunk that comes out after it
        was first seen."""
        created = self._created
        if created is None:
            created = self._created = created_from_text(response.create_time)
        if created is not None and out:
            out[0] = msgspec.structs.replace(out[0], created=created)
            self._stamped = True

    def fail(self, error: LLMError) -> StreamChunk:
        """The error chunk for ``error``; the stream ends with it."""
        self.failed = True
        return StreamChunk(
            id=self._id, provider=self.provider, model=self.model, error=error.info()
        )

    def finish(self) -> list[StreamChunk]:
        """At end of body: an error chunk unless the stream finished or already failed."""
        if self.done or self.failed:
            return []
        error = StreamingFailed(
            "the Gemini stream ended before a finishReason", provider=self.provider
        )
        return [self.fail(error)]

    def _candidate(
        self,
        candidate: Candidate,
        response_id: str,
        model: str,
        usage: Usage | None,
        out: list[StreamChunk],
    ) -> None:
        choice = candidate.index
        state = self._first if choice == 0 else self._states.get(choice)
        if state is None:
            state = self._states[choice] = _CandidateState()
        provider = self.provider
        text = ""
        reasoning = ""
        signature: str | None = None
        calls: list[ToolCallDelta] | None = None
        stage = 0  # how far into one chunk's order we are: 1 thinking, 2 signature, 3 text
        content = candidate.content
        if content is not None:
            for part in content.parts:
                call = part.function_call
                if call is not None:
                    deltas = state.call(call, part.thought_signature, response_id, choice)
                    if calls is None:
                        calls = deltas
                    else:
                        calls.extend(deltas)
                    continue
                piece = part.text
                part_signature = part.thought_signature
                if part.thought:
                    if stage > 1:
                        out.append(
                            StreamChunk(
                                id=response_id,
                                provider=provider,
                                model=model,
                                choice=choice,
                                text=text,
                                reasoning=reasoning,
                                reasoning_signature=signature,
                            )
                        )
                        text = reasoning = ""
                        signature = None
                    if piece:
                        reasoning += piece
                    stage = 1
                    if part_signature is not None:
                        signature = part_signature
                        stage = 2
                    continue
                if part_signature is not None:
                    if stage >= 2:
                        out.append(
                            StreamChunk(
                                id=response_id,
                                provider=provider,
                                model=model,
                                choice=choice,
                                text=text,
                                reasoning=reasoning,
                                reasoning_signature=signature,
                            )
                        )
                        text = reasoning = ""
                    signature = part_signature
                    stage = 2
                if piece:
                    text += piece
                    stage = 3
        finish = None
        metadata = None
        native = candidate.finish_reason
        if native is not None:
            if state.open is not None:
                if calls is None:
                    calls = []
                state.close(calls)
            finish = finish_reason(native, called_tools=state.calls > 0)
            metadata = {"native_finish_reason": native}
            if candidate.finish_message:
                metadata["finish_message"] = candidate.finish_message
            state.finished = True
            self.done = all(s.finished for s in self._states.values())
        if text or reasoning or signature is not None or calls or finish or usage is not None:
            out.append(
                StreamChunk(
                    id=response_id,
                    provider=provider,
                    model=model,
                    choice=choice,
                    text=text,
                    reasoning=reasoning,
                    reasoning_signature=signature,
                    tool_calls=calls or None,
                    finish_reason=finish,
                    usage=usage,
                    metadata=metadata,
                )
            )


# -- the JSON-array framing ---------------------------------------------------------------------


class MalformedStream(ValueError):
    """The body is not a JSON array of objects."""


# Everything up to the next brace or unterminated string: plain bytes and complete strings.
_SKIP: Final = re.compile(rb'(?:[^"{}]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.S)
# The rest of a string whose opening quote was in an earlier read (stops before the quote).
_STRING_REST: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_BETWEEN: Final = re.compile(rb"[^\s,\[]")
_SEPARATORS: Final = b" \t\r\n,[]"


@final
class JSONArrayScanner:
    """Finds the complete top-level objects of a JSON array as its bytes arrive.

    Brace counting that skips strings (escapes included), resumable at any byte: a read may
    end inside a string, inside an escape or between the CR and LF of the separator. The
    separators (``[``, ``,``, ``]`` and whitespace) are skipped; a bare top-level object is
    accepted too. A regex jumps over plain bytes and whole strings from brace to brace, so an
    object costs one Python step per brace it holds, not one per byte or per string.
    """

    __slots__ = ("_buf", "_depth", "_in_string", "_pos", "_start")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._start = 0
        self._depth = 0
        self._in_string = False

    @property
    def pending(self) -> bool:
        """Whether an object has started and not ended (a truncated body if at EOF)."""
        return self._depth > 0

    @property
    def idle(self) -> bool:
        """Whether the scanner is between objects with nothing buffered."""
        return not self._buf

    def feed(self, data: bytes) -> list[bytes]:
        """The objects ``data`` completes, each as its bytes.

        Raises:
            MalformedStream: something other than an object or a separator at the top level.
        """
        buf = self._buf + data if self._buf else data
        end = len(buf)
        pos = self._pos
        start = self._start
        depth = self._depth
        in_string = self._in_string
        objects: list[bytes] = []
        while pos < end:
            if in_string:
                stop = _STRING_REST.match(buf, pos).end()  # pyright: ignore[reportOptionalMemberAccess]
                if stop >= end or buf[stop] != _QUOTE:
                    pos = stop  # the read ended inside the string (maybe inside an escape)
                    break
                pos = stop + 1
                in_string = False
                continue
            if depth == 0:
                match = _BETWEEN.search(buf, pos)
                if match is None:
                    pos = end
                    break
                first = buf[match.start()]
                if first == _OPEN:
                    start = match.start()
                    depth = 1
                elif first != _CLOSE_ARRAY:
                    raise MalformedStream(
                        f"unexpected {bytes([first])!r} between the objects of a JSON array"
                    )
                pos = match.end()
                continue
            pos = _SKIP.match(buf, pos).end()  # pyright: ignore[reportOptionalMemberAccess]
            if pos >= end:
                break
            first = buf[pos]
            pos += 1
            if first == _QUOTE:
                in_string = True  # an opening quote without its closing one yet
            elif first == _OPEN:
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    objects.append(buf[start:pos])
        keep = start if depth else pos
        self._buf = buf[keep:]
        self._pos = pos - keep
        self._start = 0
        self._depth = depth
        self._in_string = in_string
        return objects


# -- the decoders -------------------------------------------------------------------------------


@final
class GeminiSSEDecoder(StreamDecoder):
    """Decoder of a ``streamGenerateContent?alt=sse`` body."""

    __slots__ = ("_converter", "_parser", "_previous", "_tail")

    def __init__(self, *, provider: str, model: str) -> None:
        self._parser = SSEParser()
        self._converter = ChunkConverter(provider=provider, model=model)
        self._tail = b""
        self._previous = b""

    @property
    def done(self) -> bool:
        """Whether a ``finishReason`` (or a prompt block, or an error) ended the stream."""
        return self._converter.done or self._converter.failed

    def feed(self, data: bytes) -> list[StreamChunk]:
        """Decode the chunks completed by ``data`` (one network read)."""
        self._previous = self._tail
        self._tail = data
        events = self._parser.feed(data)
        if not events:
            return []
        converter = self._converter
        if len(events) == 1:
            return converter.payload(events[0].data)
        out: list[StreamChunk] = []
        for event in events:
            out.extend(converter.payload(event.data))
        return out

    def close(self) -> list[StreamChunk]:
        """End of body: the last chunks; an error chunk when no ``finishReason`` came.

        An error object the server wrote outside ``data:`` lines (python-genai looks for
        those) is reported as that error.
        """
        converter = self._converter
        out: list[StreamChunk] = []
        for event in self._parser.flush():
            out.extend(converter.payload(event.data))
        if not (converter.done or converter.failed):
            error = _stray_error(self._previous + self._tail, converter.provider)
            if error is not None:
                out.append(converter.fail(error))
        out.extend(converter.finish())
        return out


def _stray_error(tail: bytes, provider: str) -> LLMError | None:
    """The error object in the last bytes of a body, if one is there whole."""
    at = tail.find(b'"error"')
    while at >= 0:
        start = tail.rfind(b"{", 0, at)
        if start >= 0:
            try:
                objects = JSONArrayScanner().feed(tail[start:])
                envelope = _ENVELOPE_DECODER.decode(objects[0]) if objects else None
            except (MalformedStream, *JSON_ERRORS):
                envelope = None
            if envelope is not None and envelope.error is not None:
                status = envelope.error
                return error_from_status(status.code or 500, status, provider=provider)
        at = tail.find(b'"error"', at + 1)
    return None


@final
class GeminiJSONArrayDecoder(StreamDecoder):
    """Decoder of a ``streamGenerateContent`` body without ``alt=sse`` (one JSON array)."""

    __slots__ = ("_converter", "_scanner")

    def __init__(self, *, provider: str, model: str) -> None:
        self._scanner = JSONArrayScanner()
        self._converter = ChunkConverter(provider=provider, model=model)

    @property
    def done(self) -> bool:
        """Whether a ``finishReason`` (or a prompt block, or an error) ended the stream."""
        return self._converter.done or self._converter.failed

    def feed(self, data: bytes) -> list[StreamChunk]:
        """Decode the chunks completed by ``data`` (one network read).

        Gemini writes each element in one piece (``,\\r\\n{...}\\n``), so a read usually holds
        exactly one whole object: when the scanner is between objects and the read, less its
        separators, decodes as one object, that object is used at once. This is sound because
        a JSON object is never a proper prefix of another: bytes from a ``{`` to a ``}`` that
        decode completely are exactly one element. Anything else (a split or several objects
        in one read) goes through the scanner.
        """
        converter = self._converter
        if converter.failed:
            return []
        scanner = self._scanner
        if scanner.idle:
            first = _BETWEEN.search(data)
            last = data.rfind(b"}")
            if (
                first is not None
                and data[first.start()] == _OPEN
                and last > first.start()
                and not data[last + 1 :].strip(_SEPARATORS)
            ):
                try:
                    response = _RESPONSE_DECODER.decode(data[first.start() : last + 1])
                except JSON_ERRORS:
                    pass
                else:
                    return converter.convert(response)
        try:
            objects = scanner.feed(data)
        except MalformedStream as exc:
            return [converter.malformed(str(exc), exc)]
        if not objects:
            return []
        if len(objects) == 1:
            return converter.payload(objects[0])
        out: list[StreamChunk] = []
        for obj in objects:
            out.extend(converter.payload(obj))
        return out

    def close(self) -> list[StreamChunk]:
        """End of body: an error chunk when no ``finishReason`` came."""
        return self._converter.finish()
