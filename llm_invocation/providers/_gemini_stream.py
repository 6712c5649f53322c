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
the object's last chunk.

Function calls arrive whole and become one `ToolCallDelta` each, numbered by a running
ordinal, with the id ``call_<responseId>_<ordinal>`` (Vertex's own ``id`` when it sends one).
Vertex's argument streaming (``partialArgs`` fragments with a JSON path each, a call opened by
``{"name", "willContinue": true}`` and closed by an empty ``functionCall``) is turned into
argument text as it arrives: the deltas of one call concatenate to the compact JSON of its
arguments, exactly what a whole call would have carried (see `PartialCall`).
"""

from __future__ import annotations

import re
from typing import Final, final

import msgspec

from ..errors import LLMError, StreamingFailed
from ..types import StreamChunk, ToolCallDelta, Usage
from ._base import JSON_ERRORS, StreamDecoder
from ._gemini_wire import (
    Candidate,
    ErrorEnvelope,
    FunctionCall,
    GenerateContentResponse,
    PartialArg,
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


# -- Vertex partialArgs -------------------------------------------------------------------------

_PATH_STEP: Final = re.compile(r"""\.([^.\[\]]+)|\[(\d+)\]|\[(['"])(.*?)\3\]""")

Segment = str | int


def parse_json_path(path: str) -> tuple[Segment, ...] | None:
    """The steps of a ``partialArgs`` JSON path: ``$.a.b[0]['c.d']`` is ``("a", "b", 0, "c.d")``.

    Returns None for a path that is not of this form or has no step.
    """
    if path[:1] != "$":
        return None
    steps: list[Segment] = []
    pos = 1
    end = len(path)
    while pos < end:
        match = _PATH_STEP.match(path, pos)
        if match is None:
            return None
        key, number, _, quoted = match.groups()
        if key is not None:
            steps.append(key)
        elif number is not None:
            steps.append(int(number))
        else:
            steps.append(quoted)
        pos = match.end()
    return tuple(steps) or None


def _value_json(fragment: PartialArg) -> str | None:
    if fragment.string_value is not None:
        return _ENCODER.encode(fragment.string_value).decode()
    if fragment.number_value is not None:
        return _ENCODER.encode(fragment.number_value).decode()
    if fragment.bool_value is not None:
        return "true" if fragment.bool_value else "false"
    if fragment.null_value is not msgspec.UNSET:
        return "null"
    return None


class _Level:
    __slots__ = ("count", "is_array", "step")

    def __init__(self, step: Segment, *, is_array: bool) -> None:
        self.step = step
        self.is_array = is_array
        self.count = 0


@final
class PartialCall:
    """Turns one call's ``partialArgs`` fragments into argument text as they arrive.

    The fragments of a call name their values by JSON path in document order (the model
    writes the arguments left to right). The text emitted so far is always a prefix of the
    compact JSON of the arguments: containers are opened and closed as the paths move, and a
    string value that continues (``willContinue``) stays open until its last piece. `close`
    returns the brackets still open, so all deltas concatenated are the whole JSON object.
    A path that goes back into a closed container yields a repeated key (the JSON stays valid).
    """

    __slots__ = ("_leaf", "_stack", "_string_open", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self._stack: list[_Level] = []
        self._string_open = False
        self._leaf = ""

    def feed(self, fragments: list[PartialArg]) -> str:
        """The argument text the fragments add."""
        out: list[str] = []
        for fragment in fragments:
            path = fragment.json_path
            piece = fragment.string_value
            if piece is not None and path == self._leaf:
                if self._string_open:
                    out.append(_ENCODER.encode(piece).decode()[1:-1])
                    if not fragment.will_continue:
                        out.append('"')
                        self._string_open = False
                    continue
                if not piece:
                    continue  # an empty end-of-string marker after the string closed
            value = _value_json(fragment)
            steps = parse_json_path(path) if value is not None else None
            if value is None or steps is None:
                continue
            self._leaf = path
            self._navigate(steps, out)
            if piece is not None and fragment.will_continue:
                out.append(value[:-1])
                self._string_open = True
            else:
                out.append(value)
        return "".join(out)

    def close(self) -> str:
        """The text that closes the arguments (``{}`` when no fragment came)."""
        if not self._stack:
            return "{}"
        out = ['"'] if self._string_open else []
        self._string_open = False
        while self._stack:
            out.append("]" if self._stack.pop().is_array else "}")
        return "".join(out)

    def _navigate(self, steps: tuple[Segment, ...], out: list[str]) -> None:
        stack = self._stack
        if self._string_open:
            out.append('"')
            self._string_open = False
        if not stack:
            stack.append(_Level("", is_array=False))
            out.append("{")
        containers = steps[:-1]
        common = 0
        while (
            common < len(containers)
            and common + 1 < len(stack)
            and stack[common + 1].step == containers[common]
            and type(stack[common + 1].step) is type(containers[common])
        ):
            common += 1
        while len(stack) > common + 1:
            out.append("]" if stack.pop().is_array else "}")
        for i in range(common, len(containers)):
            step = containers[i]
            self._member(step, out)
            child = containers[i + 1] if i + 1 < len(containers) else steps[-1]
            is_array = isinstance(child, int)
            out.append("[" if is_array else "{")
            stack.append(_Level(step, is_array=is_array))
        self._member(steps[-1], out)

    def _member(self, step: Segment, out: list[str]) -> None:
        parent = self._stack[-1]
        if parent.count:
            out.append(",")
        parent.count += 1
        if not parent.is_array:
            out.append(_ENCODER.encode(str(step)).decode())
            out.append(":")


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

    __slots__ = ("_first", "_id", "_states", "done", "failed", "model", "provider")

    def __init__(self, *, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.done = False
        self.failed = False
        self._id = ""
        self._first = _CandidateState()
        self._states: dict[int, _CandidateState] = {0: self._first}

    def payload(self, data: bytes) -> list[StreamChunk]:
        """The chunks of one serialised object (an SSE ``data`` payload or array element)."""
        if self.failed or not data:
            return []
        try:
            response = _RESPONSE_DECODER.decode(data)
        except JSON_ERRORS as exc:
            error = StreamingFailed(
                f"malformed Gemini stream object: {exc}", provider=self.provider
            )
            error.__cause__ = exc  # travels with the chunk's ErrorInfo in this process
            return [self.fail(error)]
        return self.convert(response)

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
            return out
        last = len(candidates) - 1
        for n, candidate in enumerate(candidates):
            self._candidate(candidate, response_id, model, usage if n == last else None, out)
        return out

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
            error = StreamingFailed(str(exc), provider=converter.provider)
            error.__cause__ = exc
            return [converter.fail(error)]
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
