"""`InvocationStream`: what `Client.invoke` returns, and the seed API's delta streams."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Literal, Self, TypeVar, final

import msgspec
import trio

from ..actors.provider_session import Invoke
from ..errors import (
    AuthenticationError,
    CostExceeded,
    InvalidRequest,
    InvocationTimeout,
    LLMError,
    ModelNotSupported,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
)
from ..runtime import ActorCrashed, ActorDead, ActorError, StreamContext, StreamReceiver
from ..types import (
    ChatResponse,
    Choice,
    CompletionResponse,
    Request,
    Response,
    StreamAggregator,
    StreamChunk,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from ..client import Client
    from ._governance import Admission

Status = Literal["ok", "error", "cancelled"]


def _as_llm(exc: BaseException) -> LLMError | None:
    return exc if isinstance(exc, LLMError) else None


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


__all__ = ["DeltaStream", "InvocationStream", "can_fall_back", "translate_actor_error"]

T = TypeVar("T")

# Batches of chunks buffered between the provider session and the caller.
STREAM_BUFFER = 16


def translate_actor_error(exc: BaseException, provider: str) -> LLMError:
    """The client's typed error for a runtime failure under an invocation."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, trio.TooSlowError):
        error: LLMError = InvocationTimeout(
            "the invocation did not finish within its timeout", provider=provider
        )
    elif isinstance(exc, ActorCrashed):
        error = ProviderError(
            "the provider session crashed during the invocation", provider=provider, retryable=True
        )
    elif isinstance(exc, ActorDead):
        error = ProviderError("the client is closed", provider=provider)
    else:
        error = ProviderError(f"invocation failed: {exc}", provider=provider)
    error.__cause__ = exc
    return error


def can_fall_back(error: LLMError) -> bool:
    """Whether a fallback provider may take over after ``error`` (nothing delivered yet)."""
    if isinstance(error, InvalidRequest | ModelNotSupported | CostExceeded | AuthenticationError):
        return False
    if isinstance(error, ProviderOverloaded | RateLimited):
        return True
    return error.retryable or error.details.get("circuit") == "open"


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
    """

    def __init__(
        self,
        client: Client,
        request: Request,
        candidates: list[tuple[str, str]],
        *,
        timeout: float | None,
    ) -> None:
        self._client = client
        self._request = request
        self._candidates = candidates
        self._candidate = -1
        self._timeout = timeout
        self._deadline = math.inf
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
        self._admission: Admission | None = None
        self._settled_usage: Usage | None = None
        self._cache_key: str | None = None
        self.attempted: list[str] = []
        """The ``provider:model`` candidates tried, in order (fallbacks after the first)."""

    @property
    def provider(self) -> str:
        """The provider serving the stream now."""
        return self._candidates[max(self._candidate, 0)][0]

    @property
    def model(self) -> str:
        return self._candidates[max(self._candidate, 0)][1]

    # -- opening and closing -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an invocation stream can be entered only once")
        self._entered = True
        key = self._client.cache_key(self._request)
        if key is not None:
            cached = await self._client.cache_get(key)
            if cached is not None:
                self._replay(cached)
                return self
            self._cache_key = key
        try:
            await self._open_next()
        except BaseException:
            self._finished = True
            raise
        return self

    def _replay(self, response: Response) -> None:
        """Serve a cached response as one chunk per choice; nothing is sent or charged."""
        self._finished = True
        self._response = response
        self._settled_usage = response.usage
        self._batch = [_as_chunk(response, choice) for choice in response.choices]

    async def _open_next(self) -> None:
        self._candidate += 1
        provider, model = self._candidates[self._candidate]
        self.attempted.append(f"{provider}:{model}")
        request = msgspec.structs.replace(self._request, provider=provider, model=model)
        ref = self._client.session_ref(provider)
        self._aggregator = StreamAggregator()
        self._batch = []
        self._position = 0
        try:
            # Waiting for rate-limit capacity is bounded by the governor's max_wait (and the
            # caller's own deadline); the invocation's timeout starts once admitted.
            governance = self._client.governance
            if governance is not None:
                self._admission = await governance.admit(self._request, provider, model)
            if self._timeout is not None and self._candidate == 0:
                self._deadline = trio.current_time() + self._timeout
            with trio.CancelScope(deadline=self._deadline) as scope:
                context = ref.stream(Invoke(request=request), buffer=STREAM_BUFFER)
                self._receiver = await context.__aenter__()
                self._context = context
            if scope.cancelled_caught:
                raise InvocationTimeout(
                    "the invocation did not start within its timeout", provider=provider
                )
        except BaseException as exc:
            error = translate_actor_error(exc, provider) if isinstance(exc, ActorError) else None
            status: Status = "cancelled" if isinstance(exc, trio.Cancelled) else "error"
            await self._release(status, error if error is not None else _as_llm(exc))
            if error is not None:
                raise error from exc
            raise

    async def _release(self, status: Status, error: LLMError | None = None) -> None:
        """Close the current attempt's stream and settle what it consumed, once."""
        context, self._context, self._receiver = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)
        admission, self._admission = self._admission, None
        usage = self._aggregator.usage
        if admission is not None and self._client.governance is not None:
            partial: Response | None = None
            if status != "ok":
                try:
                    partial = self._aggregator.response(provider=self.provider, model=self.model)
                except LLMError:
                    partial = None
            usage = await self._client.governance.settle(
                admission,
                usage,
                status=status,
                error=error,
                response=partial if status != "ok" else self._response,
            )
        self._client.record_usage(usage)
        self._settled_usage = usage

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._finished:  # left before the end: the rest is cancelled
            self._finished = True
            await self._release("cancelled")

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
        if self._receiver is None:
            if not self._entered:
                raise RuntimeError("use `async with client.invoke(...) as stream:` first")
            raise StopAsyncIteration
        while True:
            try:
                try:
                    # A batch already waiting needs no trip through the scheduler; the
                    # bounded buffer makes the producer block (and so yield) when it is full.
                    batch = self._receiver.receive_nowait()
                except trio.WouldBlock:
                    batch = await self._receiver.receive()
            except trio.EndOfChannel:
                await self._end()
                raise StopAsyncIteration from None
            except (LLMError, ActorError, trio.TooSlowError) as exc:
                error = translate_actor_error(exc, self.provider)
                if (
                    not self._content_seen
                    and self._candidate + 1 < len(self._candidates)
                    and can_fall_back(error)
                ):
                    await self._release("error", error)
                    self._client.note_fallback(self.provider, error)
                    await self._open_next()
                    continue
                self._error = error
                self._finished = True
                await self._release("error", error)
                if error is exc:
                    raise
                raise error from exc
            if not batch:
                continue
            add = self._aggregator.add
            for chunk in batch:
                add(chunk)
            if not self._content_seen:
                self._content_seen = any(
                    c.text or c.tool_calls or c.reasoning or c.finish_reason for c in batch
                )
            self._batch = batch
            self._position = 1
            return batch[0]

    async def _end(self) -> None:
        self._finished = True
        response = self._aggregator.response(
            provider=self.provider, model=self.model, created=datetime.now(UTC)
        )
        self._response = response
        await self._release("ok")
        usage = self._settled_usage
        if usage is not None and usage is not response.usage:
            self._response = msgspec.structs.replace(response, usage=usage)
        if self._cache_key is not None:
            await self._client.cache_put(self._cache_key, self._response)

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
        return self._settled_usage or self._aggregator.usage

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
