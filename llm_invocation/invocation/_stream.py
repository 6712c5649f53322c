"""`InvocationStream`: what `Client.invoke` returns, and the seed API's delta streams."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar, final

import msgspec
import trio

from ..actors.provider_session import Attempt, AttemptOnce, BeginOnce, StreamBody
from ..errors import LLMError
from ..runtime import ActorError
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
from ._middleware import EMPTY_CHAIN, CallInfo, MiddlewareChain
from ._run import Run

if TYPE_CHECKING:
    from ._invoker import Invoker

__all__ = ["DeltaStream", "InvocationStream", "whole_chunks"]

T = TypeVar("T")


def _as_chunk(response: Response, choice: Choice) -> StreamChunk:
    calls = [
        ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments, metadata=c.metadata)
        for i, c in enumerate(choice.tool_calls)
    ]
    first = choice.index == 0
    return StreamChunk(
        id=response.id,
        provider=response.provider,
        model=response.model,
        choice=choice.index,
        text=choice.message.text,
        reasoning=choice.message.reasoning,
        tool_calls=calls or None,
        finish_reason=choice.finish_reason,
        usage=response.usage if first else None,
        metadata=response.metadata,
        created=response.created if first else None,
        system_fingerprint=response.system_fingerprint if first else None,
    )


def whole_chunks(response: Response) -> list[StreamChunk]:
    """A whole response as the chunks a stream of it would end with: one per choice (the
    first carries the usage, the creation time and the fingerprint)."""
    chunks = [_as_chunk(response, choice) for choice in response.choices]
    if not chunks:
        chunks.append(
            StreamChunk(
                id=response.id,
                provider=response.provider,
                model=response.model,
                usage=response.usage,
                metadata=response.metadata,
                created=response.created,
                system_fingerprint=response.system_fingerprint,
            )
        )
    return chunks


def _has_content(batch: list[StreamChunk]) -> bool:
    return any(c.text or c.tool_calls or c.reasoning or c.finish_reason for c in batch)


@final
class InvocationStream:
    """An invocation: an async context manager and an async iterator of chunks.

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

    A request with ``stream=False`` is sent as one non-streamed HTTP request per attempt;
    its whole answer comes as one chunk (per choice) carrying the text, tool calls, finish
    reason and usage, and `response` is the provider's response itself.
    """

    def __init__(
        self,
        invoker: Invoker,
        run: Run,
        *,
        cache_key: str | None,
        chain: MiddlewareChain = EMPTY_CHAIN,
    ) -> None:
        self._invoker = invoker
        self._run = run
        self._cache_key = cache_key
        self._chain = chain
        self._chunk_hooks = bool(chain.on_chunk_hooks)
        self._body: StreamBody | None = None  # the current attempt's, until its verdict
        self._aggregator = StreamAggregator()
        self._batch: list[StreamChunk] = []
        self._position = 0
        self._content_seen = False
        self._finished = False
        self._whole: Response | None = None  # a whole answer, until the stream ends
        # A whole answer whose chunks are not made yet (`_expand`), and whether they are
        # to be delivered (`aggregate` needs none of them).
        self._unexpanded: Response | None = None
        self._chunks_wanted = True
        self._cached = False
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

    @property
    def call(self) -> CallInfo:
        """What the middleware's hooks are told about this invocation."""
        return self._run.call

    # -- opening and closing -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an invocation stream can be entered only once")
        self._entered = True
        self._run.start()
        try:
            await self._start()
        except LLMError as error:
            await self._failed(error)
            raise
        except BaseException as exc:
            if not self._finished:  # not settled yet (cancelled, or a runtime failure)
                self._finished = True
                status: Status = "cancelled" if isinstance(exc, trio.Cancelled) else "error"
                await self._close_attempt()
                await self._run.settle(status, self._aggregator.usage, partial=self._partial())
                self._run.finish(status)
            raise
        return self

    async def _start(self) -> None:
        if self._chain.before_request_hooks:
            await self._before_request()
        key = self._cache_key
        if key is not None:
            cached = await self._invoker.cache_get(key)
            if cached is not None:
                self._replay(cached)
                return
        await self._open()

    async def _before_request(self) -> None:
        """Run the middleware's ``before_request`` hooks; a veto is recorded and raised."""
        run = self._run
        original = run.request
        try:
            request = await self._chain.before_request(run.call, original)
        except LLMError as error:
            self._finished = True  # nothing was reserved or sent
            governance = self._invoker.governance
            if governance is not None:
                await governance.record_refusal(original, run.provider, run.model, error)
            raise
        if request is not original:
            prepared, candidates = self._invoker.prepare(request)
            run.reset(prepared, candidates)
            run.call.request = prepared
            self._cache_key = self._invoker.cache_key(prepared)

    def _replay(self, response: Response) -> None:
        """Serve a cached response as one chunk per choice; nothing is sent or charged."""
        self._finished = True
        self._cached = True
        self._run.usage = response.usage
        self._run.call.cached = True
        self._whole = self._response = self._unexpanded = response
        self._run.finish("ok", response=response)

    async def _open(self) -> None:
        """Admit and open the next attempt (a retry or a fallback when one failed before)."""
        run = self._run
        while True:
            await run.admit()
            trace = run.trace
            parent = None
            if trace is not None:
                parent = trace.attempt_started(run.provider, run.model, run.attempt)
            self._aggregator = StreamAggregator()
            self._batch = []
            self._position = 0
            self._body = None
            streamed = run.request.stream
            try:
                # The attempt runs under the invocation's deadline (ours: `trio.TooSlowError`)
                # as well as under the caller's own; a streamed body's reads stop at ours too.
                deadline = run.deadline
                if streamed:
                    message = Attempt(
                        request=run.attempt_request(), number=run.attempt, trace=parent
                    )
                    body = await run.session().call(message, deadline=deadline)
                    body.limit(deadline)
                    self._body = body
                else:
                    session = run.session()
                    request = run.attempt_request()
                    begin = BeginOnce(request=request, number=run.attempt, trace=parent)
                    try:
                        # Lent at once: run on this task, with no cancel scope of its own.
                        lent = session.call_nowait(begin)
                    except trio.WouldBlock:
                        once = AttemptOnce(request=request, number=run.attempt, trace=parent)
                        self._whole = await session.call(once, deadline=deadline)
                    else:
                        self._whole = await lent.run(deadline)
            except Exception as exc:  # noqa: BLE001 - re-raised typed unless another attempt follows
                await self._fail_attempt(exc)
                continue
            break
        whole = self._whole
        if whole is not None:
            # The whole answer is in: settled now (a caller that leaves before reading it
            # all does not make it a cancelled call), then delivered as one batch.
            self._finished = True
            usage = await run.settle("ok", whole.usage, response=whole)
            if usage is not None and usage is not whole.usage:
                whole = msgspec.structs.replace(whole, usage=usage)
            self._whole = self._response = self._unexpanded = whole
            self._content_seen = True
            if run.trace is not None:
                run.trace.first_chunk()
            run.finish("ok", response=whole)

    async def _close_attempt(self) -> None:
        body, self._body = self._body, None
        if body is not None:  # left before its verdict: its connection is closed
            await body.abandon()

    async def _fail_attempt(self, exc: Exception) -> None:
        """The current attempt failed: returns when another one may start, else raises."""
        await self._close_attempt()
        self._whole = None
        if self._run.trace is not None:
            self._run.trace.attempt_ended(exc)
        await self._run.retry_or_raise(
            exc,
            delivered=self._content_seen,
            usage=self._aggregator.usage,
            partial=self._partial(),
        )

    async def _failed(self, error: LLMError) -> None:
        """The invocation failed with ``error``: settle it (unless it is settled) and tell
        the middleware, once."""
        self._batch, self._position, self._whole = [], 0, None
        if not self._finished:
            self._finished = True
            await self._close_attempt()
            await self._run.settle(
                "error", self._aggregator.usage, error=error, partial=self._partial()
            )
        self._run.finish("error", error)
        if self._error is None:
            self._error = error
            if self._chain.on_error_hooks:
                await self._chain.on_error(self._run.call, error)

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
            self._run.finish("cancelled")

    async def aclose(self) -> None:
        """Cancel the upstream call (if still running) and settle what was streamed."""
        await self.__aexit__(None, None, None)

    # -- iteration -----------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    def _expand(self) -> None:
        """Make the chunks of a whole answer: aggregated, and delivered next unless
        `aggregate` took the answer without them."""
        whole, self._unexpanded = self._unexpanded, None
        if whole is None:
            return
        batch = whole_chunks(whole)
        add = self._aggregator.add
        for chunk in batch:
            add(chunk)
        if self._chunks_wanted:
            self._batch = batch
            self._position = 0

    async def __anext__(self) -> StreamChunk:
        if self._unexpanded is not None:
            self._expand()
        if self._position < len(self._batch):
            chunk = self._batch[self._position]
            self._position += 1
        else:
            try:
                chunk = await self._next_batch()
            except LLMError as error:
                await self._failed(error)
                raise
        if self._chunk_hooks:
            try:
                await self._chain.on_chunk(self._run.call, chunk)
            except LLMError as error:
                await self._failed(error)
                raise
        return chunk

    async def _next_batch(self) -> StreamChunk:
        """The first chunk of the next batch (the rest wait in ``_batch``).

        This task reads the body the session lent it: the chunks of one network read at a
        time. Once the body is done with, its verdict tells how the attempt ended.

        Raises:
            StopAsyncIteration: the stream ended (it is settled).
            LLMError: the invocation failed.
        """
        while True:
            body = self._body
            if body is None:
                if not self._entered:
                    raise RuntimeError("use `async with client.invoke(...) as stream:` first")
                if self._whole is not None:  # a whole answer, delivered: the end
                    await self._end()
                raise StopAsyncIteration
            batch = await body.next_batch()
            if batch:
                return self._take(batch)
            if batch is None:  # the body is done with: its session's verdict follows
                self._body = None
                try:
                    await body.verdict()
                except (LLMError, ActorError, trio.TooSlowError) as exc:
                    await self._fail_attempt(exc)
                    await self._open()
                    continue
                await self._end()
                raise StopAsyncIteration

    def _take(self, batch: list[StreamChunk]) -> StreamChunk:
        """Aggregate ``batch``, keep it for the next chunks and return its first."""
        add = self._aggregator.add
        for chunk in batch:
            add(chunk)
        if not self._content_seen:
            self._content_seen = _has_content(batch)
            if self._content_seen and self._run.trace is not None:
                self._run.trace.first_chunk()
        self._batch = batch
        self._position = 1
        return batch[0]

    async def _end(self) -> None:
        """The stream ended: settle it (a whole or cached answer is settled already), then
        the middleware's ``after_*`` hooks, then the cache."""
        await self._close_attempt()
        run = self._run
        chain = self._chain
        whole, self._whole = self._whole, None
        if whole is not None:
            response = whole
        else:
            response = self._aggregator.response(
                provider=self.provider, model=self.model, created=datetime.now(UTC)
            )
            self._finished = True
            usage = await run.settle("ok", self._aggregator.usage, response=response)
            if usage is not None and usage is not response.usage:
                response = msgspec.structs.replace(response, usage=usage)
            self._response = response
            run.finish("ok", response=response)
        if self._cached:  # nothing was sent: no attempt, nothing to cache
            if chain.after_response_hooks:
                await chain.after_response(run.call, response)
            return
        if chain.after_attempt_hooks:
            await chain.after_attempt(run.call, None)
        if chain.after_response_hooks:
            await chain.after_response(run.call, response)
        if self._cache_key is not None:
            await self._invoker.cache_put(self._cache_key, response)

    # -- results -------------------------------------------------------------------------------

    async def aggregate(self) -> Response:
        """Read the rest of the stream and return the whole response.

        Raises:
            LLMError: the invocation failed.
        """
        if self._whole is not None and self._body is None and not self._chunk_hooks:
            # A whole answer: its chunks need no walk (nobody sees them).
            self._chunks_wanted = False
            self._position = len(self._batch)
            try:
                await self._end()
            except LLMError as error:
                await self._failed(error)
                raise
            return self.response
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
        self._expand()
        return self._run.usage or self._aggregator.usage

    @property
    def text(self) -> str:
        """The text streamed so far."""
        self._expand()
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
