"""The streamed-body decoder of OpenAI Chat Completions (and legacy completions).

Hot path, per ``data:`` line: the SSE split (`SSEParser`), one typed msgspec decode into the
small Structs of ``_openai_wire`` and one `StreamChunk`. Nothing else is built for a chunk
that only carries text: no dict walking, no regex, no per-chunk decoder.

Grammar handled (WIRE-FORMATS 0.1, 1.4 and 5):

* ``data: {chunk}`` repeated, ``data: [DONE]`` at the end; comments (``: OPENROUTER
  PROCESSING``) are dropped by the SSE parser;
* text in ``delta.content`` (``choices[].text`` for ``text_completion`` chunks), reasoning in
  ``delta.reasoning_content`` (DeepSeek) or ``delta.reasoning`` (Ollama, Groq, OpenRouter);
* tool-call fragments accumulated by ``index``: a fragment that repeats the id and name of the
  call at its index (OpenRouter/Novita) is passed on without them, so no consumer can
  concatenate a name twice;
* usage on a final ``choices: []`` chunk (``include_usage``), on the finish chunk (Groq, also
  in ``x_groq.usage``) or on an extra chunk after it (OpenRouter);
* errors after HTTP 200: a payload with a truthy ``error`` key, or an ``event: error``
  (Groq). They end the stream with an error chunk, as does malformed JSON (retryable only
  when no content came out before it, as in every format);
* end of body without ``[DONE]``: accepted when a finish reason was seen (some compatible
  servers), an error chunk ("stream ended before completion") otherwise;
* ``created`` and ``system_fingerprint``: the first ones the stream reports travel on the
  first chunk that comes out (not on every chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec

from ..errors import LLMError, StreamingFailed
from ..types import FinishReason, StreamChunk, ToolCallDelta, Usage
from ._base import JSON_ERRORS, StreamDecoder, datetime_from_unix, has_content
from ._openai_wire import (
    CHUNK_DECODER,
    FINISH_REASONS,
    StreamPayload,
    ToolCallFragment,
    usage_from_wire,
)
from ._sse import SSEEvent, SSEParser

__all__ = ["OpenAIStreamDecoder"]

_DONE: Final = b"[DONE]"
_ERROR: Final = "error"
_ANY_JSON: Final = msgspec.json.Decoder()
_MAX_QUOTED: Final = 200


class OpenAIStreamDecoder(StreamDecoder):
    """Decode one streamed Chat Completions (or legacy completions) body.

    ``done`` turns true once nothing more will come out: after ``[DONE]``, after an error
    chunk, or after `close`. Feeding a finished decoder returns nothing.
    """

    __slots__ = (
        "_calls",
        "_content",
        "_created",
        "_done",
        "_fingerprint",
        "_id",
        "_map_error",
        "_model",
        "_parser",
        "_provider",
        "_refusals",
        "_saw_finish",
        "_slots",
        "_stamped",
    )

    def __init__(self, *, provider: str, map_error: Callable[[Any], LLMError]) -> None:
        """Make a decoder.

        Args:
            provider: the provider name put on every chunk.
            map_error: turns an in-stream error payload (the decoded JSON object) into the
                typed error; the codec's ``map_stream_error``.
        """
        self._parser = SSEParser()
        self._provider = provider
        self._map_error = map_error
        self._done = False
        self._saw_finish = False
        self._id = ""
        self._model = ""
        # (choice, index) -> [id, name] of the tool call being streamed there.
        self._calls: dict[tuple[int, int], list[str | None]] = {}
        # choice -> [last tool-call index used, next free index]; present once it calls tools.
        self._slots: dict[int, list[int]] = {}
        self._refusals: dict[int, list[str]] | None = None
        # The creation time and fingerprint seen, until a chunk has carried them out.
        self._created: datetime | None = None
        self._fingerprint: str | None = None
        self._stamped = False
        self._content = False  # a chunk with content came out (see `_malformed`)

    @property
    def done(self) -> bool:
        """Whether the stream is over: ``[DONE]``, an error, or `close` was called."""
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
            self._event(event, out)
            if self._done:
                break
        if out and not self._content:
            self._content = has_content(out)
        return out

    def close(self) -> list[StreamChunk]:
        """End of body: decode a last unterminated event, then check the stream finished.

        Returns an error chunk (`StreamingFailed`, "stream ended before completion") when
        neither ``[DONE]`` nor any finish reason was seen.
        """
        if self._done:
            return []
        out: list[StreamChunk] = []
        for event in self._parser.flush():
            self._event(event, out)
            if self._done:
                return out
        self._done = True
        if not self._saw_finish:
            out.append(
                self._error_chunk(
                    StreamingFailed("stream ended before completion", provider=self._provider)
                )
            )
        return out

    # -- events -----------------------------------------------------------------------------

    def _event(self, event: SSEEvent, out: list[StreamChunk]) -> None:
        data = event.data
        if event.event == _ERROR:
            out.append(self._error_event(data))
            return
        if data == _DONE:
            self._done = True
            return
        if not data:
            return
        try:
            payload = CHUNK_DECODER.decode(data)
        except JSON_ERRORS as exc:
            out.append(self._malformed(data, exc, content=self._content or has_content(out)))
            return
        if payload.error:
            out.append(self._error_chunk(self._map_error({"error": payload.error})))
            return
        self._payload(payload, out)

    def _payload(self, payload: StreamPayload, out: list[StreamChunk]) -> None:
        chunk_id = payload.id
        model = payload.model
        if not self._id:
            self._id = chunk_id
            self._model = model
        provider = self._provider
        start = len(out)
        for choice in payload.choices:
            index = choice.index
            delta = choice.delta
            tool_calls: list[ToolCallDelta] | None = None
            if delta is not None:
                text = delta.content or ""
                reasoning = delta.reasoning_content or delta.reasoning or ""
                if delta.tool_calls:
                    tool_calls = self._tool_calls(index, delta.tool_calls)
                if delta.refusal:
                    self._add_refusal(index, delta.refusal)
            else:
                text = choice.text or ""
                reasoning = ""
            native = choice.finish_reason
            if native is None:
                if not (text or reasoning or tool_calls):
                    continue
                out.append(
                    StreamChunk(
                        id=chunk_id,
                        provider=provider,
                        model=model,
                        choice=index,
                        text=text,
                        reasoning=reasoning,
                        tool_calls=tool_calls,
                    )
                )
                continue
            self._saw_finish = True
            metadata: dict[str, Any] = {"native_finish_reason": native}
            refusals = self._refusals
            if refusals is not None and index in refusals:
                metadata["refusal"] = "".join(refusals.pop(index))
            out.append(
                StreamChunk(
                    id=chunk_id,
                    provider=provider,
                    model=model,
                    choice=index,
                    text=text,
                    reasoning=reasoning,
                    tool_calls=tool_calls,
                    finish_reason=self._finish(index, native),
                    metadata=metadata,
                )
            )
        wire_usage = payload.usage
        if wire_usage is None and payload.x_groq is not None:
            wire_usage = payload.x_groq.usage
        usage = usage_from_wire(wire_usage) if wire_usage is not None else None
        if usage is not None:
            self._attach_usage(usage, payload, start, out)
        if not self._stamped:
            self._stamp(payload, start, out)

    def _stamp(self, payload: StreamPayload, start: int, out: list[StreamChunk]) -> None:
        """Put the stream's creation time and fingerprint on the first chunk that comes out."""
        if self._created is None and payload.created is not None:
            self._created = datetime_from_unix(payload.created)
        if self._fingerprint is None and payload.system_fingerprint:
            self._fingerprint = payload.system_fingerprint
        if len(out) > start:
            self._stamped = True
            if self._created is not None or self._fingerprint is not None:
                out[start] = msgspec.structs.replace(
                    out[start], created=self._created, system_fingerprint=self._fingerprint
                )

    def _attach_usage(
        self, usage: Usage, payload: StreamPayload, start: int, out: list[StreamChunk]
    ) -> None:
        if len(out) > start:
            out[-1] = msgspec.structs.replace(out[-1], usage=usage)
        else:
            out.append(
                StreamChunk(
                    id=payload.id, provider=self._provider, model=payload.model, usage=usage
                )
            )

    def _tool_calls(
        self, choice: int, fragments: list[ToolCallFragment]
    ) -> list[ToolCallDelta] | None:
        calls = self._calls
        slots = self._slots.get(choice)
        if slots is None:
            slots = self._slots[choice] = [0, 0]  # last index used, next free index
        deltas: list[ToolCallDelta] = []
        for fragment in fragments:
            function = fragment.function
            name = (function.name or None) if function is not None else None
            arguments = (function.arguments or "") if function is not None else ""
            call_id = fragment.id or None
            index = fragment.index
            if index is None:
                # Gemini's endpoint sends no index: a fragment naming a tool starts a call,
                # anything else continues the last one.
                index = slots[1] if name is not None or slots[1] == 0 else slots[0]
            slots[0] = index
            if index >= slots[1]:
                slots[1] = index + 1
            key = (choice, index)
            seen = calls.get(key)
            if seen is None or (call_id is not None and seen[0] is not None and call_id != seen[0]):
                # The first fragment of a call (a new id at a taken index is a new call).
                calls[key] = [call_id, name]
            else:
                # A later fragment: pass on only what is new (OpenRouter repeats id and name).
                if call_id is not None:
                    if seen[0] is None:
                        seen[0] = call_id
                    else:
                        call_id = None
                if name is not None:
                    if seen[1] is None:
                        seen[1] = name
                    else:
                        name = None
                if not (call_id or name or arguments or fragment.extra_content):
                    continue
            deltas.append(
                ToolCallDelta(
                    index=index,
                    id=call_id,
                    name=name,
                    arguments=arguments,
                    metadata={"extra_content": fragment.extra_content}
                    if fragment.extra_content
                    else None,
                )
            )
        return deltas or None

    def _finish(self, choice: int, native: str) -> FinishReason:
        finish = FINISH_REASONS.get(native, "other")
        if finish == "stop" and choice in self._slots:
            # Tool calls that end with "stop": OpenAI with a forced tool, Gemini always.
            return "tool_calls"
        return finish

    def _add_refusal(self, choice: int, text: str) -> None:
        if self._refusals is None:
            self._refusals = {}
        self._refusals.setdefault(choice, []).append(text)

    # -- errors -----------------------------------------------------------------------------

    def _error_chunk(self, error: LLMError) -> StreamChunk:
        self._done = True
        return StreamChunk(
            id=self._id, provider=self._provider, model=self._model, error=error.info()
        )

    def _error_event(self, data: bytes) -> StreamChunk:
        try:
            payload: Any = _ANY_JSON.decode(data)
        except JSON_ERRORS:
            payload = None
        if not isinstance(payload, dict) or "error" not in payload:
            text = data.decode("utf-8", "replace").strip() or "error event without a message"
            payload = {"error": {"message": text}}
        return self._error_chunk(self._map_error(payload))

    def _malformed(self, data: bytes, exc: Exception, *, content: bool) -> StreamChunk:
        """The error chunk for a payload that does not decode: retryable only when no
        content came out before it (the rule of every format, docs/providers.md)."""
        quoted = data[:_MAX_QUOTED].decode("utf-8", "replace")
        error = StreamingFailed(
            f"malformed JSON in the stream: {exc}",
            provider=self._provider,
            retryable=not content,
            details={"reason": "malformed response", "data": quoted},
        )
        error.__cause__ = exc  # travels with the chunk's ErrorInfo in this process
        return self._error_chunk(error)
