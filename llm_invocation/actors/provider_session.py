"""The provider session actor: all I/O with one provider.

One session per configured provider. It owns a sharded httpx pool and does the I/O that the
sans-I/O codec describes, with everything a production caller needs around it:

* timeouts: connect (httpx), a first-chunk watchdog, an idle-chunk watchdog, and the
  caller's own deadline over the whole call (it travels with the message);
* retries with exponential backoff and full jitter, honouring ``retry-after-ms``,
  ``Retry-After`` (seconds or an HTTP date, up to a cap) and ``x-should-retry``; an error
  event that arrives before any content is retried like an HTTP error; nothing is retried
  once content has reached the caller;
* a circuit breaker per model, and rotation over several API keys on 401 and 429;
* cancellation: a caller that goes away cancels the handler, which closes the HTTP response
  at once (its connection is dropped, not reused).

Streams forward all the chunks decoded from one network read as one message, so a channel
hop is paid per read, not per event.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, final

import msgspec
import trio

from .._secrets import Secret
from ..errors import (
    AuthenticationError,
    InvocationTimeout,
    LLMError,
    ProviderError,
    RateLimited,
    error_from_info,
)
from ..http import HttpPool, HttpResponse, HttpSettings, PoolStatistics, TransportFactory
from ..providers._base import HttpRequest, ProviderCodec, RateLimitInfo
from ..runtime import Actor, Call, Context, Stream
from ..types import ModelInfo, Request, Response, StreamChunk, user
from ._resilience import CircuitBreaker, KeyRing, backoff_delay, counts_against_breaker

__all__ = [
    "CountTokens",
    "Invoke",
    "InvokeOnce",
    "ListModels",
    "ProviderSession",
    "ResponseInfo",
    "SessionMsg",
    "SessionSettings",
    "SessionStatistics",
    "SessionStats",
]

log = logging.getLogger("llm_invocation.providers")

_MAX_ERROR_BODY: Final = 64 * 1024


class SessionSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a session retries, times out, breaks circuits and pools connections."""

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: bool = True
    max_retry_after: float = 60.0
    first_chunk_timeout: float = 60.0
    idle_chunk_timeout: float = 30.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    http: HttpSettings = HttpSettings()
    """Timeouts, pool size, proxy and TLS of the session's HTTP pool."""


class ResponseInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt's response told: reported to observers (the governor)."""

    provider: str
    model: str
    status: int
    rate_limits: RateLimitInfo | None = None
    retry_after: float | None = None
    request_id: str | None = None


# -- protocol --------------------------------------------------------------------------------


class Invoke(Stream[list[StreamChunk]], frozen=True, kw_only=True):
    """Stream ``request`` (model already resolved for this provider)."""

    request: Request


class InvokeOnce(Call[Response], frozen=True, kw_only=True):
    """Send ``request`` without streaming and return the whole response."""

    request: Request


class ListModels(Call[list[ModelInfo]], frozen=True, kw_only=True):
    pass


class CountTokens(Call[int], frozen=True, kw_only=True):
    """Count the prompt tokens with the provider's endpoint (when it has one)."""

    request: Request


class SessionStatistics(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    requests: int
    attempts: int
    retries: int
    failures: dict[str, int]
    breakers: dict[str, str]
    key_rotations: int
    pool: PoolStatistics


class SessionStats(Call[SessionStatistics], frozen=True, kw_only=True):
    pass


SessionMsg = Invoke | InvokeOnce | ListModels | CountTokens | SessionStats


class _AttemptFailed(Exception):
    """One attempt failed with ``error``; ``delivered`` tells if content reached the caller."""

    def __init__(self, error: LLMError, headers: Mapping[str, str], delivered: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.headers = headers
        self.delivered = delivered


def _any_content(batch: list[StreamChunk]) -> bool:
    for chunk in batch:
        if (
            chunk.text
            or chunk.reasoning
            or chunk.tool_calls
            or chunk.finish_reason
            or chunk.reasoning_signature
        ):
            return True
    return False


@final
class _Watch:
    __slots__ = ("deadline", "expired", "scope")

    def __init__(self, scope: trio.CancelScope, deadline: float) -> None:
        self.scope = scope
        self.deadline = deadline
        self.expired = False


@final
class ChunkWatchdog:
    """First-chunk and idle-chunk deadlines of every stream of a session, in one task.

    A stream only moves its ``deadline`` forward as chunks arrive (an attribute write); the
    watchdog sleeps until the earliest deadline and cancels the scope of each stream whose
    deadline has passed. That costs nothing per chunk, where moving a cancel scope's
    deadline per chunk costs several microseconds.
    """

    def __init__(self) -> None:
        self._watches: set[_Watch] = set()
        self._kick = trio.Event()
        self._target = math.inf

    def watch(self, scope: trio.CancelScope, deadline: float) -> _Watch:
        watch = _Watch(scope, deadline)
        self._watches.add(watch)
        if deadline < self._target:
            self._kick.set()
        return watch

    def touch(self, watch: _Watch, deadline: float) -> None:
        """Move a stream's deadline (waking the watchdog if it is now the earliest)."""
        watch.deadline = deadline
        if deadline < self._target:
            self._target = deadline
            self._kick.set()

    def unwatch(self, watch: _Watch) -> None:
        self._watches.discard(watch)

    async def run(self) -> None:
        while True:
            now = trio.current_time()
            nearest = math.inf
            for watch in list(self._watches):
                if watch.deadline <= now:
                    watch.expired = True
                    watch.scope.cancel()
                    self._watches.discard(watch)
                elif watch.deadline < nearest:
                    nearest = watch.deadline
            self._target = nearest
            with trio.move_on_at(nearest):
                await self._kick.wait()
            self._kick = trio.Event()


class ProviderSession(Actor[SessionMsg]):
    """I/O with one provider: see the module documentation."""

    max_concurrency = 1 << 20  # bounded by the pool's admission, not by the actor
    reply_errors = (LLMError,)

    def __init__(
        self,
        codec: ProviderCodec,
        *,
        keys: list[Secret] | None = None,
        settings: SessionSettings | None = None,
        transport: TransportFactory | None = None,
        on_response: Callable[[ResponseInfo], None] | None = None,
    ) -> None:
        self.codec = codec
        self.provider = codec.name
        self.settings = settings or SessionSettings()
        self.keys = KeyRing(keys or [])
        self._transport = transport
        self._on_response = on_response
        self._breakers: dict[str, CircuitBreaker] = {}
        self._pool: HttpPool | None = None
        self._watchdog = ChunkWatchdog()
        self.requests = 0
        self.attempts = 0
        self.retries = 0
        self.failures: dict[str, int] = {}

    # -- lifespan ------------------------------------------------------------------------------

    def lifespan(self, ctx: Context) -> Any:
        ctx.nursery.start_soon(self._watchdog.run)
        return _SessionLifespan(self)

    def _open_pool(self) -> HttpPool:
        self._pool = HttpPool(self.settings.http, provider=self.provider, transport=self._transport)
        return self._pool

    # -- dispatch ------------------------------------------------------------------------------

    async def handle(self, msg: SessionMsg, ctx: Context) -> Any:
        match msg:
            case Invoke(request=request):
                sink = ctx.sink(msg)

                async def forward(batch: list[StreamChunk]) -> None:
                    # The next network read is a checkpoint: do not yield here as well.
                    try:
                        sink.send_nowait(batch)
                    except trio.WouldBlock:
                        await sink.send(batch)

                await self._invoke(request, forward)
                return None
            case InvokeOnce(request=request):
                return await self._invoke_once(request)
            case ListModels():
                return await self._list_models()
            case CountTokens(request=request):
                return await self._count_tokens(request)
            case SessionStats():
                return self.statistics()

    def statistics(self) -> SessionStatistics:
        assert self._pool is not None
        return SessionStatistics(
            provider=self.provider,
            requests=self.requests,
            attempts=self.attempts,
            retries=self.retries,
            failures=dict(self.failures),
            breakers={model: b.state for model, b in self._breakers.items()},
            key_rotations=self.keys.rotations,
            pool=self._pool.statistics(),
        )

    def _breaker(self, model: str) -> CircuitBreaker:
        breaker = self._breakers.get(model)
        if breaker is None:
            breaker = CircuitBreaker(
                f"{self.provider}:{model}",
                threshold=self.settings.breaker_threshold,
                cooldown=self.settings.breaker_cooldown,
            )
            self._breakers[model] = breaker
        return breaker

    # -- the retry loop ------------------------------------------------------------------------

    async def _attempts(
        self,
        request: Request,
        attempt_fn: Callable[[HttpRequest, Secret | None], Any],
        *,
        encode: Callable[[Secret | None], HttpRequest],
    ) -> Any:
        """Run ``attempt_fn`` until it succeeds or retrying stops making sense."""
        self.requests += 1
        breaker = self._breaker(request.model)
        settings = self.settings
        attempt = 0
        while True:
            attempt += 1
            breaker.before_call(self.provider)
            key = self.keys.current()
            self.attempts += 1
            verdict = False
            try:
                result = await attempt_fn(encode(key), key)
            except _AttemptFailed as failed:
                error = failed.error
                self.failures[error.code.value] = self.failures.get(error.code.value, 0) + 1
                if counts_against_breaker(error):
                    breaker.failure()
                    verdict = True
                if failed.delivered:
                    raise error from None
                advice = self.codec.retry_advice(error, failed.headers)
                delay = advice.delay
                retryable = advice.retryable
                if isinstance(error, AuthenticationError) and error.status == 401:
                    retryable = self.keys.reject(key)
                    delay = 0.0
                elif isinstance(error, RateLimited) and self.keys.rotate(key):
                    delay = 0.0 if advice.retryable else None
                    retryable = True
                if delay is not None and delay > settings.max_retry_after:
                    retryable = False  # the provider asks for longer than we will wait
                if not retryable or attempt >= settings.max_attempts:
                    if attempt > 1:
                        error.details.setdefault("attempts", attempt)
                    raise error from None
                if delay is None:
                    delay = backoff_delay(
                        attempt,
                        initial=settings.initial_delay,
                        maximum=settings.max_delay,
                        multiplier=settings.multiplier,
                        jitter=settings.jitter,
                    )
                self.retries += 1
                log.info(
                    "%s: attempt %d failed (%s); retrying in %.2fs",
                    self.provider,
                    attempt,
                    error.code.value,
                    delay,
                )
                await trio.sleep(delay)
            else:
                breaker.success()
                verdict = True
                return result
            finally:
                if not verdict:
                    breaker.release_probe()

    def _report(self, request: Request, status: int, headers: Mapping[str, str]) -> None:
        if self._on_response is None:
            return
        rate_limits = self.codec.parse_rate_limits(headers)
        info = ResponseInfo(
            provider=self.provider,
            model=request.model,
            status=status,
            rate_limits=rate_limits,
            retry_after=rate_limits.retry_after if rate_limits is not None else None,
            request_id=headers.get("x-request-id") or headers.get("request-id"),
        )
        try:
            self._on_response(info)
        except Exception:
            log.exception("%s: response observer failed", self.provider)

    async def _error_from(self, response: HttpResponse, headers: Mapping[str, str]) -> LLMError:
        try:
            body = await response.read(_MAX_ERROR_BODY)
        except LLMError:
            body = b""
        return self.codec.map_error(response.status, headers, body)

    # -- streaming -----------------------------------------------------------------------------

    async def _invoke(
        self,
        request: Request,
        forward: Callable[[list[StreamChunk]], Any],
    ) -> None:
        self.codec.validate(request)
        if not request.stream:
            request = msgspec.structs.replace(request, stream=True)

        async def attempt(http_request: HttpRequest, key: Secret | None) -> None:
            await self._stream_once(request, http_request, forward)

        await self._attempts(request, attempt, encode=lambda key: self._encode(request, key))

    def _encode(self, request: Request, key: Secret | None) -> HttpRequest:
        return self.codec.encode(request, key.reveal() if key is not None else None)

    async def _stream_once(
        self,
        request: Request,
        http_request: HttpRequest,
        forward: Callable[[list[StreamChunk]], Any],
    ) -> None:
        assert self._pool is not None
        settings = self.settings
        delivered = False
        headers: dict[str, str] = {}
        idle = settings.idle_chunk_timeout
        scope = trio.CancelScope()
        watch = self._watchdog.watch(scope, trio.current_time() + settings.first_chunk_timeout)
        with scope:
            try:
                async with self._pool.stream(http_request) as response:
                    headers = response.headers
                    self._report(request, response.status, headers)
                    if response.status >= 300:
                        error = await self._error_from(response, headers)
                        raise _AttemptFailed(error, headers, delivered=False)
                    decoder = self.codec.stream_decoder(request)
                    feed = decoder.feed
                    clock = trio.current_time
                    touch = self._watchdog.touch
                    async for data in response:
                        touch(watch, clock() + idle)
                        batch = feed(data)
                        if batch:
                            delivered = await self._deliver(batch, forward, headers, delivered)
                    tail = decoder.close()
                    if tail:
                        delivered = await self._deliver(tail, forward, headers, delivered)
            except _AttemptFailed:
                raise
            except LLMError as exc:
                raise _AttemptFailed(exc, headers, delivered) from exc
            finally:
                self._watchdog.unwatch(watch)
        if watch.expired:
            what = "chunk" if delivered else "first chunk"
            limit = idle if delivered else settings.first_chunk_timeout
            raise _AttemptFailed(
                InvocationTimeout(
                    f"no {what} within {limit:g}s", provider=self.provider, retryable=True
                ),
                headers,
                delivered,
            )

    async def _deliver(
        self,
        batch: list[StreamChunk],
        forward: Callable[[list[StreamChunk]], Any],
        headers: Mapping[str, str],
        delivered: bool,
    ) -> bool:
        """Forward ``batch``; turn an error chunk into a failed attempt (after what precedes)."""
        for index, chunk in enumerate(batch):
            if chunk.error is not None:
                before = batch[:index]
                if before:
                    await forward(before)
                    delivered = delivered or _any_content(before)
                raise _AttemptFailed(error_from_info(chunk.error), headers, delivered)
        await forward(batch)
        return delivered or _any_content(batch)

    # -- whole responses, models and tokens ----------------------------------------------------

    async def _invoke_once(self, request: Request) -> Response:
        self.codec.validate(request)
        if request.stream:
            request = msgspec.structs.replace(request, stream=False)

        async def attempt(http_request: HttpRequest, key: Secret | None) -> Response:
            body = await self._fetch(request, http_request)
            try:
                return self.codec.decode_response(request, body)
            except LLMError as error:
                raise _AttemptFailed(error, {}, delivered=False) from None

        result: Response = await self._attempts(
            request, attempt, encode=lambda key: self._encode(request, key)
        )
        return result

    async def _fetch(self, request: Request | None, http_request: HttpRequest) -> bytes:
        assert self._pool is not None
        headers: dict[str, str] = {}
        try:
            async with self._pool.stream(http_request) as response:
                headers = response.headers
                if request is not None:
                    self._report(request, response.status, headers)
                if response.status >= 300:
                    error = await self._error_from(response, headers)
                    raise _AttemptFailed(error, headers, delivered=False)
                return await response.read()
        except _AttemptFailed:
            raise
        except LLMError as exc:
            raise _AttemptFailed(exc, headers, delivered=False) from exc

    async def _simple(self, build: Callable[[Secret | None], HttpRequest | None]) -> bytes:
        """Fetch an auxiliary endpoint (models, token counts) with the retry policy."""

        async def attempt(http_request: HttpRequest, key: Secret | None) -> bytes:
            return await self._fetch(None, http_request)

        def encode(key: Secret | None) -> HttpRequest:
            built = build(key)
            if built is None:
                raise ProviderError(
                    "this provider has no such endpoint", provider=self.provider, retryable=False
                )
            return built

        result: bytes = await self._attempts(_AUX_REQUEST, attempt, encode=encode)
        return result

    async def _list_models(self) -> list[ModelInfo]:
        body = await self._simple(
            lambda key: self.codec.list_models_request(key.reveal() if key else None)
        )
        return self.codec.decode_models(body)

    async def _count_tokens(self, request: Request) -> int:
        body = await self._simple(
            lambda key: self.codec.count_tokens_request(request, key.reveal() if key else None)
        )
        return self.codec.decode_count_tokens(body)


class _SessionLifespan:
    """Opens the session's pool and closes it (bounded) when the incarnation ends."""

    def __init__(self, session: ProviderSession) -> None:
        self._session = session

    async def __aenter__(self) -> None:
        self._session._open_pool()  # pyright: ignore[reportPrivateUsage]

    async def __aexit__(self, *exc_info: object) -> None:
        pool = self._session._pool  # pyright: ignore[reportPrivateUsage]
        if pool is not None:
            with trio.move_on_after(5, shield=True):
                await pool.aclose()


# Models and token-count requests share the retry loop; their breaker is keyed "(aux)".
_AUX_REQUEST: Final = Request(model="(aux)", messages=[user("-")], stream=False)
