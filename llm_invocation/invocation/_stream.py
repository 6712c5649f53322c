"""`InvocationStream`: what `Client.invoke` returns, and the seed API's delta streams."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar, final

import msgspec
import trio

from ..actors.provider_session import Attempt
from ..errors import LLMError
from ..runtime import ActorError, StreamContext, StreamReceiver
from ..types import (
    ChatResponse,
    Choice,
    CompletionResponse,
    Response,
    StreamAggregator,
    StreamChunk,
    ToolCallDelta,
    Usage,
)
from ._governance import Status
from ._run import Run

if TYPE_CHECKING:
    from ._invoker import Invoker

__all__ = ["DeltaStream", "InvocationStream"]

T = TypeVar("T")

# Batches of chunks buffered between the provider session and the caller.
STREAM_BUFFER = 16


def _as_chunk(response: Response, choice: Choice) -> StreamChunk:
    calls = [
        ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments, metadata=c.metadata)
        for i, c in enumerate(choice.tool_calls)
    ]
    return StreamChunk(
        id=response.id,
        provider=response.provider,
        model=response.model,
        choice=choice.index,
        text=choice.message.text,
        reasoning=choice.message.reasoning,
        tool_calls=calls or None,
        finish_reason=choice.finish_reason,
        usage=response.usage if choice.index == 0 else None,
        metadata=response.metadata,
    )


def _has_content(batch: list[StreamChunk]) -> bool:
    return any(c.text or c.tool_calls or c.reasoning or c.finish_reason for c in batch)


@final
class InvocationStream:
    """A streaming invocation: an async context manager and an async iterator of chunks.

    ::

        async with client.invoke(request) as stream:
            async for chunk in stream:
                print(chunk.text, end="")
        print(stream.response.usage)

    Leaving the block early (or being cancelled) cancels the upstream call at once and
    settles what was streamed. `aggregate` reads what is left and returns the whole
    response, equal to what a non-streamed call would have returned for the same content.
    A failed attempt before any content is retried, or handed to a fallback provider, as
    the configuration says; after content has arrived, a failure ends the stream.
    """

    def __init__(self, invoker: Invoker, run: Run, *, cache_key: str | None) -> None:
        self._invoker = invoker
        self._run = run
        self._cache_key = cache_key
        self._context: StreamContext[list[StreamChunk]] | None = None
        self._receiver: StreamReceiver[list[StreamChunk]] | None = None
        self._aggregator = StreamAggregator()
        self._batch: list[StreamChunk] = []
        self._position = 0
        self._content_seen = False
        self._finished = False
        self._response: Response | None = None
        self._error: LLMError | None = None
        self._entered = False

    @property
    def provider(self) -> str:
        """The provider serving the stream now."""
        return self._run.provider

    @property
    def model(self) -> str:
        return self._run.model

    @property
    def attempted(self) -> list[str]:
        """The ``provider:model`` candidates tried, in order (fallbacks after the first)."""
        return self._run.attempted

    # -- opening and closing -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an invocation stream can be entered only once")
        self._entered = True
        key = self._cache_key
        if key is not None:
            cached = await self._invoker.cache_get(key)
            if cached is not None:
                self._replay(cached)
                return self
        try:
            await self._open()
        except BaseException as exc:
            if not self._finished:  # not settled yet (cancelled, or a runtime failure)
                self._finished = True
                status: Status = "cancelled" if isinstance(exc, trio.Cancelled) else "error"
                await self._close_attempt()
                await self._run.settle(status, self._aggregator.usage, partial=self._partial())
            raise
        return self

    def _replay(self, response: Response) -> None:
        """Serve a cached response as one chunk per choice; nothing is sent or charged."""
        self._finished = True
        self._response = response
        self._run.usage = response.usage
        self._batch = [_as_chunk(response, choice) for choice in response.choices]

    async def _open(self) -> None:
        """Admit and open the next attempt (a retry or a fallback when one failed before)."""
        run = self._run
        while True:
            await run.admit()
            self._aggregator = StreamAggregator()
            self._batch = []
            self._position = 0
            message = Attempt(request=run.attempt_request(), number=run.attempt)
            try:
                # The session's handler runs under the invocation's deadline (ours) as well
                # as under the caller's own.
                with trio.CancelScope(deadline=run.deadline) as scope:
                    context = run.session().stream(message, buffer=STREAM_BUFFER)
                    self._receiver = await context.__aenter__()
                    self._context = context
                if scope.cancelled_caught:
                    raise trio.TooSlowError
            except Exception as exc:  # noqa: BLE001 - re-raised typed unless another attempt follows
                await self._fail_attempt(exc)
                continue
            return

    async def _close_attempt(self) -> None:
        context, self._context, self._receiver = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def _fail_attempt(self, exc: Exception) -> None:
        """The current attempt failed: returns when another one may start, else raises."""
        await self._close_attempt()
        try:
            await self._run.retry_or_raise(
                exc,
                delivered=self._content_seen,
                usage=self._aggregator.usage,
                partial=self._partial(),
            )
        except LLMError as error:  # settled: the invocation failed
            self._finished = True
            self._error = error
            raise

    def _partial(self) -> Response | None:
        try:
            return self._aggregator.response(provider=self.provider, model=self.model)
        except LLMError:
            return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._finished:  # left before the end: the rest is cancelled
            self._finished = True
            await self._close_attempt()
            await self._run.settle("cancelled", self._aggregator.usage, partial=self._partial())

    async def aclose(self) -> None:
        """Cancel the upstream call (if still running) and settle what was streamed."""
        await self.__aexit__(None, None, None)

    # -- iteration -----------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._position < len(self._batch):
            chunk = self._batch[self._position]
            self._position += 1
            return chunk
        while True:
            receiver = self._receiver
            if receiver is None:
                if not self._entered:
                    raise RuntimeError("use `async with client.invoke(...) as stream:` first")
                raise StopAsyncIteration
            try:
                try:
                    # A batch already waiting needs no trip through the scheduler; the
                    # bounded buffer makes the producer block (and so yield) when it is full.
                    batch = receiver.receive_nowait()
                except trio.WouldBlock:
                    batch = await receiver.receive()
            except trio.EndOfChannel:
                await self._end()
                raise StopAsyncIteration from None
            except (LLMError, ActorError, trio.TooSlowError) as exc:
                await self._fail_attempt(exc)
                await self._open()
                continue
            if not batch:
                continue
            add = self._aggregator.add
            for chunk in batch:
                add(chunk)
            if not self._content_seen:
                self._content_seen = _has_content(batch)
            self._batch = batch
            self._position = 1
            return batch[0]

    async def _end(self) -> None:
        await self._close_attempt()
        self._finished = True
        run = self._run
        response = self._aggregator.response(
            provider=self.provider, model=self.model, created=datetime.now(UTC)
        )
        usage = await run.settle("ok", self._aggregator.usage, response=response)
        if usage is not None and usage is not response.usage:
            response = msgspec.structs.replace(response, usage=usage)
        self._response = response
        if self._cache_key is not None:
            await self._invoker.cache_put(self._cache_key, response)

    # -- results -------------------------------------------------------------------------------

    async def aggregate(self) -> Response:
        """Read the rest of the stream and return the whole response.

        Raises:
            LLMError: the invocation failed.
        """
        async for _ in self:
            pass
        return self.response

    @property
    def response(self) -> Response:
        """The aggregated response, once the stream has ended.

        Raises:
            LLMError: the stream failed (its error).
            RuntimeError: the stream has not ended yet.
        """
        if self._error is not None:
            raise self._error
        if self._response is None:
            raise RuntimeError("the stream has not ended yet: iterate it or await aggregate()")
        return self._response

    @property
    def usage(self) -> Usage | None:
        """Usage with its cost once settled; before that the provider's last report."""
        return self._run.usage or self._aggregator.usage

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return self._aggregator.text


@final
class DeltaStream(Generic[T]):
    """The first specification's streams: ``ChatResponse`` or ``CompletionResponse`` deltas.

    Errors do not raise: as in that specification, a failed stream ends with one delta whose
    ``error`` is set (`ChatResponse`), or raises for `CompletionResponse` which has no error
    field. Pass ``raise_errors=True`` to `Client.stream_chat` to raise instead.
    """

    def __init__(
        self,
        inner: InvocationStream,
        convert: Callable[[StreamChunk, datetime], T],
        on_error: Callable[[LLMError, datetime], T] | None,
    ) -> None:
        self._inner = inner
        self._convert = convert
        self._on_error = on_error
        self._created = datetime.now(UTC)
        self._done = False

    async def __aenter__(self) -> Self:
        try:
            await self._inner.__aenter__()
        except LLMError as error:
            if self._on_error is None:
                raise
            self._pending_error: LLMError | None = error
        else:
            self._pending_error = None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        if self._pending_error is not None and self._on_error is not None:
            self._done = True
            return self._on_error(self._pending_error, self._created)
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._done = True
            raise
        except LLMError as error:
            if self._on_error is None:
                raise
            self._done = True
            return self._on_error(error, self._created)
        return self._convert(chunk, self._created)

    @property
    def response(self) -> Response:
        """The aggregated response once the stream ended (see `InvocationStream.response`)."""
        return self._inner.response


def chat_delta(chunk: StreamChunk, created: datetime) -> ChatResponse:
    return chunk.to_chat_response(created=created)


def completion_delta(chunk: StreamChunk, created: datetime) -> CompletionResponse:
    return chunk.to_completion_response(created=created)


def chat_error(error: LLMError, created: datetime) -> ChatResponse:
    return ChatResponse(
        id="",
        messages=[],
        finish_reason="error",
        created=created,
        model="",
        provider=error.provider,
        error=error.info(),
    )
