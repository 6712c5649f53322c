"""Streaming: tool-call fragments, stream chunks and the aggregator that turns them into a
`Response`.

Re-exported by `llm_invocation.types`, which documents them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, final

import msgspec

from ..errors import ErrorInfo, error_from_info
from ._messages import Message, Part, ReasoningPart, TextPart, ToolCall
from ._requests import (
    ZERO_USAGE,
    ChatResponse,
    Choice,
    CompletionResponse,
    FinishReason,
    Response,
    Usage,
)

__all__ = ["StreamAggregator", "StreamChunk", "ToolCallDelta"]


@final
class ToolCallDelta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A fragment of a streamed tool call, OpenAI style.

    The first fragment of a call has ``index``, ``id`` and ``name``; later ones only ``index``
    and a piece of ``arguments``. Fragments are accumulated by ``index``, not by ``id``.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    metadata: dict[str, Any] | None = None


@final
class StreamChunk(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One streamed increment of a response.

    Attributes:
        id: the provider's response id (often only on the first chunks).
        provider: the provider answering.
        model: the model answering.
        choice: which choice this increment belongs to.
        text: a piece of answer text.
        reasoning: a piece of thinking text.
        reasoning_signature: the signature that closes the current thinking block.
        reasoning_redacted: ``reasoning_signature`` is a redacted thinking block's opaque
            data (Anthropic's ``redacted_thinking``), a block of its own: it becomes a
            `ReasoningPart` with ``redacted=True``.
        tool_calls: tool-call fragments.
        finish_reason: set on the chunk that ends the choice.
        usage: usage as the provider reports it mid-stream: cumulative or final, so the last
            non-None usage of a stream is its usage.
        error: the stream failed; no chunk follows.
        metadata: provider extras (``native_finish_reason``, ...); later chunks win per key.
        created: when the provider says the response was made (on the first chunk that
            comes out); the first one reported is the response's. In a stream, None when
            the provider sends none (Anthropic, the Gemini API): never a local clock reading.
        system_fingerprint: the provider's backend fingerprint (OpenAI), when reported; the
            first one reported is the response's.
    """

    id: str = ""
    provider: str = ""
    model: str = ""
    choice: int = 0
    text: str = ""
    reasoning: str = ""
    reasoning_signature: str | None = None
    reasoning_redacted: bool = False
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    metadata: dict[str, Any] | None = None
    created: datetime | None = None
    system_fingerprint: str | None = None

    def to_chat_response(self, *, created: datetime) -> ChatResponse:
        """Return this increment as a first-specification ``ChatResponse`` delta.

        ``created`` is used when the chunk carries no creation time of its own.
        """
        return ChatResponse(
            id=self.id,
            messages=[Message(role="assistant", content=self.text)],
            finish_reason=self.finish_reason,
            usage=self.usage or ZERO_USAGE,
            created=_aware(self.created) or created,
            model=self.model,
            system_fingerprint=self.system_fingerprint,
            provider=self.provider or None,
            error=self.error,
        )

    def to_completion_response(self, *, created: datetime) -> CompletionResponse:
        """Return this increment as a first-specification ``CompletionResponse`` delta.

        ``created`` is used when the chunk carries no creation time of its own.
        """
        return CompletionResponse(
            id=self.id,
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage or ZERO_USAGE,
            created=_aware(self.created) or created,
            model=self.model,
            system_fingerprint=self.system_fingerprint,
            provider=self.provider or None,
        )


def _aware(value: datetime | None) -> datetime | None:
    """``value`` as a timezone-aware time: a naive one (which no codec should report) is
    read as UTC, so a chunk can never make a response invalid."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        return value.replace(tzinfo=UTC)
    return value


_TEXT: Final = 1
_REASONING: Final = 2
_REDACTED: Final = 3  # a redacted thinking block: no text, its opaque data as the signature


class _CallState:
    __slots__ = ("args", "id", "metadata", "name")

    def __init__(self, delta: ToolCallDelta) -> None:
        self.id = delta.id or None
        self.name = delta.name or None
        self.args: list[str] = [delta.arguments] if delta.arguments else []
        self.metadata: dict[str, Any] | None = dict(delta.metadata) if delta.metadata else None


class _ChoiceState:
    __slots__ = ("buf", "calls", "finish_reason", "kind", "segments")

    def __init__(self) -> None:
        # Finished runs of text or reasoning, in arrival order: (kind, text, signature).
        self.segments: list[tuple[int, str, str | None]] = []
        self.kind = 0  # kind of the run being collected in buf: 0 (none), _TEXT, _REASONING
        self.buf: list[str] = []
        self.calls: dict[int, list[_CallState]] = {}
        self.finish_reason: FinishReason | None = None

    def close_run(self, signature: str | None = None) -> None:
        if self.kind:
            self.segments.append((self.kind, "".join(self.buf), signature))
            self.buf = []
            self.kind = 0

    def add_calls(self, deltas: list[ToolCallDelta]) -> None:
        calls = self.calls
        for delta in deltas:
            slot = calls.get(delta.index)
            if slot is None:
                calls[delta.index] = [_CallState(delta)]
                continue
            call = slot[-1]
            if delta.id and call.id and delta.id != call.id:
                # A different id at a taken index: a server that numbers every call 0.
                slot.append(_CallState(delta))
                continue
            # A repeated id or name (OpenRouter re-sends both) must not be appended again.
            if call.id is None and delta.id:
                call.id = delta.id
            if call.name is None and delta.name:
                call.name = delta.name
            if delta.arguments:
                call.args.append(delta.arguments)
            if delta.metadata:
                if call.metadata is None:
                    call.metadata = dict(delta.metadata)
                else:
                    call.metadata.update(delta.metadata)

    def text(self) -> str:
        pieces = [text for kind, text, _ in self.segments if kind == _TEXT]
        if self.kind == _TEXT:
            pieces.extend(self.buf)
        return "".join(pieces)

    def choice(self, index: int, provider: str | None) -> Choice:
        self.close_run()
        text_only = True
        for kind, _, _ in self.segments:
            if kind != _TEXT:
                text_only = False
                break
        content: str | list[Part] | None
        if text_only:
            content = "".join([text for _, text, _ in self.segments]) or None
        else:
            content = [
                TextPart(text=text)
                if kind == _TEXT
                else ReasoningPart(
                    text=text, signature=signature, redacted=kind == _REDACTED, provider=provider
                )
                for kind, text, signature in self.segments
            ]
        tool_calls: list[ToolCall] = []
        for call_index in sorted(self.calls):
            for n, call in enumerate(self.calls[call_index]):
                arguments = "".join(call.args)
                tool_calls.append(
                    ToolCall(
                        id=call.id or (f"call_{call_index}_{n}" if n else f"call_{call_index}"),
                        name=call.name or "",
                        arguments=arguments if arguments.strip() else "{}",
                        metadata=call.metadata,
                    )
                )
        finish = self.finish_reason
        if finish is None and tool_calls:
            finish = "tool_calls"
        return Choice(
            index=index,
            message=Message(role="assistant", content=content, tool_calls=tool_calls or None),
            finish_reason=finish,
        )


class StreamAggregator:
    """Collect the chunks of a stream into a complete `Response`.

    ``add`` only appends to lists; the strings are joined once, by ``response``. Not
    thread-safe: one aggregator belongs to one task.

    - text and reasoning are concatenated, in arrival order; a ``reasoning_signature`` closes
      the current thinking block, so each signed block is echoed back as its own part; every
      `ReasoningPart` records the response's provider as its ``provider``;
    - tool calls are accumulated by ``index`` and come out ordered by it. ``id`` and
      ``name`` come from the first fragment that has them, and a fragment repeating them
      does not repeat the name; a fragment with a *different* id at a taken index starts a
      new call. Empty arguments become ``"{}"``; a call without an id gets ``call_<index>``;
    - the finish reason of a choice is its last non-None one (``tool_calls`` when none came
      and the choice called tools); usage is the last non-None one;
    - id, provider, model, ``created`` and ``system_fingerprint`` come from the first chunk
      that has them; metadata is merged, later chunks winning per key;
    - every ``choice`` index gets its own `Choice`.
    """

    __slots__ = (
        "_choices",
        "_created",
        "_error",
        "_fingerprint",
        "_id",
        "_last",
        "_last_index",
        "_metadata",
        "_model",
        "_provider",
        "_usage",
    )

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._last_index = -1
        self._last: _ChoiceState | None = None
        self._id = ""
        self._provider = ""
        self._model = ""
        self._usage: Usage | None = None
        self._error: ErrorInfo | None = None
        self._metadata: dict[str, Any] | None = None
        self._created: datetime | None = None
        self._fingerprint: str | None = None

    def add(self, chunk: StreamChunk) -> None:
        """Add the next chunk of the stream."""
        index = chunk.choice
        state = self._last
        if state is None or index != self._last_index:
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            self._last = state
            self._last_index = index
        if chunk.reasoning:
            if state.kind != _REASONING:
                state.close_run()
                state.kind = _REASONING
            state.buf.append(chunk.reasoning)
        if chunk.reasoning_signature is not None:
            if chunk.reasoning_redacted:
                state.close_run()
                state.segments.append((_REDACTED, "", chunk.reasoning_signature))
            else:
                if state.kind != _REASONING:
                    state.close_run()
                    state.kind = _REASONING
                state.close_run(chunk.reasoning_signature)
        if chunk.text:
            if state.kind != _TEXT:
                state.close_run()
                state.kind = _TEXT
            state.buf.append(chunk.text)
        if chunk.tool_calls:
            state.add_calls(chunk.tool_calls)
        if chunk.finish_reason is not None:
            state.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if not self._id and chunk.id:
            self._id = chunk.id
        if not self._provider and chunk.provider:
            self._provider = chunk.provider
        if not self._model and chunk.model:
            self._model = chunk.model
        if self._created is None and chunk.created is not None:
            self._created = _aware(chunk.created)
        if self._fingerprint is None and chunk.system_fingerprint:
            self._fingerprint = chunk.system_fingerprint
        if chunk.metadata:
            if self._metadata is None:
                self._metadata = dict(chunk.metadata)
            else:
                self._metadata.update(chunk.metadata)
        if chunk.error is not None and self._error is None:
            self._error = chunk.error

    @property
    def text(self) -> str:
        """The text of the first choice so far."""
        state = self._choices.get(0)
        return state.text() if state is not None else ""

    @property
    def usage(self) -> Usage | None:
        """The last usage seen so far (what a cancelled stream settles)."""
        return self._usage

    @property
    def error(self) -> ErrorInfo | None:
        """The first error a chunk carried, if any."""
        return self._error

    def response(
        self,
        *,
        id: str = "",
        provider: str = "",
        model: str = "",
        created: datetime | None = None,
    ) -> Response:
        """Build the aggregate response.

        Args:
            id: the id to use when no chunk carried one.
            provider: the provider to use when no chunk carried one.
            model: the model to use when no chunk carried one.
            created: the creation time to use when no chunk carried one (the provider
                sent none); now (UTC) by default, which is what the invocation passes when
                the stream ends: the time the whole answer had arrived.

        Raises:
            LLMError: the typed error (`llm_invocation.errors.error_from_info`) when a chunk
                carried an error.
            InvalidRequest: when ``created`` is naive.
        """
        if self._error is not None:
            raise error_from_info(self._error)
        states = self._choices or {0: _ChoiceState()}
        source = self._provider or provider
        return Response(
            id=self._id or id,
            provider=source,
            model=self._model or model,
            created=self._created or created or datetime.now(UTC),
            choices=[states[i].choice(i, source or None) for i in sorted(states)],
            usage=self._usage,
            metadata=self._metadata,
            system_fingerprint=self._fingerprint,
        )
