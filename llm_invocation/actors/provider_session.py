"""The provider session actor: all I/O with one provider, one HTTP attempt at a time.

One session per configured provider. It owns the provider's HTTP pool (`llm_invocation.http`)
and does the I/O that the sans-I/O codec describes. The invocation layer above decides how
many attempts an invocation makes; a session runs one attempt per message and says whether
another one makes sense:

* `Attempt` sends one streamed HTTP request and, once its answer's head is in, lends the
  caller the body (`StreamBody`): the caller's task reads and decodes it, one wake-up per
  network read, and then applies the session's verdict itself; the body stays a loan of
  the session's incarnation (see ``_stream_body``). `AttemptOnce` sends one non-streamed
  request and returns the whole response. Both run on the caller's task when the runtime
  can (`Actor.inline_calls`), through the mailbox otherwise. `BeginOnce`, asked with
  `ActorRef.call_nowait`, lends the caller a whole attempt instead (`OnceAttempt`): the
  caller's task sends it and reads the answer without the inline call's cancel scope, the
  HTTP pool keeping the deadline; a session that ends otherwise than gracefully closes its
  pool, which stops it;
* watchdogs: ``first_chunk`` runs until the first event that carries content (text,
  reasoning, a tool-call delta, a finish), ``idle_chunk`` between events after that; the
  `InvocationTimeout` names the limit that fired;
* a circuit breaker per model; the provider's API keys (`KeyRing`, shared by every
  incarnation): rotation on 429, and on 401 that key set aside for that model family alone,
  with a short growing backoff, and an `AuthenticationError` that says so;
* retry advice: a failed attempt raises `AttemptFailed` with the typed error, whether the
  session advises another attempt (the codec's advice, ``x-should-retry``, a spare key, never
  after content reached the caller) and the delay the provider asked for;
* containment: nothing a provider sends can crash the session or touch another call. Any
  exception while decoding an answer (headers, JSON, SSE framing, numbers out of range,
  wrong types) becomes a `ProviderError` for that attempt alone, with
  ``details["reason"] == "malformed response"``, retryable only before content, logged once.
  The same holds for a codec that raises (a custom one, say): encoding fails that call with
  a `ProviderError` (``details["reason"] == "encode failed"``), nothing sent;
* cancellation: a caller that goes away (or is cancelled) closes the HTTP response at
  once (its connection is dropped, not reused); so does a session that crashes, restarts
  or stops past its grace while a caller reads a body it lent (the caller's next read
  returns None, and the body's verdict raises the runtime's error). A graceful stop lets
  the bodies in the callers' hands be read to their end.

Models and token counts (`ListModels`, `CountTokens`) are free endpoints outside any budget;
the session retries them itself, counted in its statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, final

import msgspec
import trio

from .._secrets import Secret, redact
from ..errors import (
    AuthenticationError,
    LLMError,
    ProviderError,
    RateLimited,
)
from ..http import HttpPool, HttpResponse, HttpSettings, PoolStatistics, TransportFactory
from ..providers._base import (
    HttpRequest,
    ProviderCodec,
    RateLimitInfo,
    RetryAdvice,
    checked_rate_limits,
)
from ..runtime import Actor, Call, Context, Loan, ReplyError
from ..types import ModelInfo, Request, Response
from ._keys import KeyRing, model_family
from ._resilience import CircuitBreaker, backoff_delay, counts_against_breaker
from ._stream_body import MALFORMED, StreamBody, chunk_timeout, malformed_response
from ._stream_body import Failed as _Failed
from ._watchdog import ChunkWatchdog

__all__ = [
    "Attempt",
    "AttemptFailed",
    "AttemptOnce",
    "CountTokens",
    "ListModels",
    "ProviderSession",
    "ResponseInfo",
    "SessionMsg",
    "SessionSettings",
    "SessionStatistics",
    "SessionStats",
    "StreamBody",
    "malformed_response",
]

log = logging.getLogger("llm_invocation.providers")

_MAX_ERROR_BODY: Final = 64 * 1024
_AUX_ATTEMPTS: Final = 3


class SessionSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a session watches streams, breaks circuits, honours delays and pools connections."""

    first_chunk_timeout: float = 60.0
    idle_chunk_timeout: float = 30.0
    max_retry_after: float = 60.0
    """A provider asking to wait longer than this is not retried."""
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    http: HttpSettings = HttpSettings()
    """Timeouts, pool size, proxy and TLS of the session's HTTP pool."""


class ResponseInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt's response told of rate limits: reported to observers (the
    governor)."""

    provider: str
    model: str
    status: int
    rate_limits: RateLimitInfo | None = None
    retry_after: float | None = None
    request_id: str | None = None


# -- protocol --------------------------------------------------------------------------------


class Attempt(Call[StreamBody], frozen=True, kw_only=True):
    """Open one streamed HTTP attempt of ``request`` (model already resolved for this
    provider) and return its body (`StreamBody`) once the answer's head is in and says 2xx.

    The caller reads the body to its end (until `StreamBody.next_batch` returns None), then
    asks for `StreamBody.verdict`: it returns at the attempt's end, or raises `AttemptFailed`
    with the session's advice; a caller that leaves before calls `StreamBody.abandon`. A
    failure before the body raises `AttemptFailed` at once.

    ``number`` counts the invocation's attempts on this provider from 1 (later ones are
    retries, counted in the session's statistics). ``trace``, when set, is the attempt
    span's W3C ``traceparent``, sent to the provider as that header.
    """

    request: Request
    number: int = 1
    trace: str | None = None


class AttemptOnce(Call[Response], frozen=True, kw_only=True):
    """Send one non-streamed HTTP attempt of ``request`` and return the whole response
    (``number`` and ``trace`` as for `Attempt`)."""

    request: Request
    number: int = 1
    trace: str | None = None


class BeginOnce(Call["OnceAttempt"], frozen=True, kw_only=True):
    """Begin one non-streamed HTTP attempt of ``request`` for the caller to run on its own
    task (``number`` and ``trace`` as for `Attempt`).

    The session counts the attempt, checks and encodes the request, picks its key and lends
    the caller the attempt (`OnceAttempt`); `OnceAttempt.run` sends it and reads the whole
    answer, keeping the caller's deadline without a cancel scope, then applies the session's
    verdict. Asked with `ActorRef.call_nowait`, it is answered at once on the caller's task;
    when it cannot be (`trio.WouldBlock`: the session is busy or restarting, its keys must
    first be fetched, or the request goes through a proxy or an injected transport),
    `AttemptOnce` does the whole attempt instead.
    """

    request: Request
    number: int = 1
    trace: str | None = None


class ListModels(Call[list[ModelInfo]], frozen=True, kw_only=True):
    pass


class CountTokens(Call[int], frozen=True, kw_only=True):
    """Count the prompt tokens with the provider's endpoint (when it has one)."""

    request: Request


class SessionStatistics(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    requests: int
    """Invocations sent (first attempts)."""
    attempts: int
    """HTTP attempts, first ones and retries."""
    retries: int
    """Attempts after the first of an invocation, and retried model or token requests."""
    failures: dict[str, int]
    """Failed attempts by error code."""
    malformed: int
    """Attempts failed by a response that could not be decoded."""
    breakers: dict[str, str]
    key_rotations: int
    pool: PoolStatistics
    keys: int = 0
    """API keys known now."""
    keys_set_aside: int = 0
    """(key, model family) pairs set aside after a 401, now."""
    key_refreshes: int = 0
    """Times the keys were read again from their file or function."""


class SessionStats(Call[SessionStatistics], frozen=True, kw_only=True):
    pass


SessionMsg = Attempt | AttemptOnce | BeginOnce | ListModels | CountTokens | SessionStats


class AttemptFailed(ReplyError):
    """One attempt failed with ``error``.

    Attributes:
        error: the typed error of the attempt.
        retry: whether the session advises another attempt (never after content).
        delay: how long the provider asked to wait first (None: the caller's backoff).
    """

    def __init__(self, error: LLMError, *, retry: bool, delay: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.delay = delay


class ProviderSession(Actor[SessionMsg]):
    """I/O with one provider: see the module documentation."""

    max_concurrency = 1 << 20  # bounded by the pool's admission, not by the actor
    inline_calls = True  # a whole (non-streamed) attempt runs on its caller's task
    reply_errors = (LLMError, AttemptFailed)

    def __init__(
        self,
        codec: ProviderCodec,
        *,
        keys: KeyRing | Sequence[Secret] | None = None,
        settings: SessionSettings | None = None,
        transport: TransportFactory | None = None,
        on_response: Callable[[ResponseInfo], None] | None = None,
    ) -> None:
        self.codec = codec
        self.provider = codec.name
        self.settings = settings or SessionSettings()
        # A ring passed in outlives this incarnation: its keys and their state survive a
        # restart, and ``client.set_api_keys`` changes them in place.
        self.keys = (
            keys if isinstance(keys, KeyRing) else KeyRing(keys or (), provider=self.provider)
        )
        self._transport = transport
        self._on_response = on_response
        self._breakers: dict[str, CircuitBreaker] = {}
        # The last failure that counted against each model's breaker: the cause of the
        # "circuit open" errors that follow it.
        self._tripped: dict[str, LLMError] = {}
        self._pool: HttpPool | None = None
        self._lender: Context | None = None  # the lifespan's: lends `OnceAttempt`s
        self._watchdog = ChunkWatchdog()
        self.requests = 0
        self.attempts = 0
        self.retries = 0
        self.malformed = 0
        self.failures: dict[str, int] = {}

    # -- lifespan ------------------------------------------------------------------------------

    def lifespan(self, ctx: Context) -> Any:
        ctx.nursery.start_soon(self._watchdog.run)
        self._lender = ctx
        return _SessionLifespan(self)

    def _open_pool(self) -> HttpPool:
        self._pool = HttpPool(self.settings.http, provider=self.provider, transport=self._transport)
        return self._pool

    # -- dispatch ------------------------------------------------------------------------------

    async def handle(self, msg: SessionMsg, ctx: Context) -> Any:
        match msg:
            case Attempt(request=request, number=number, trace=trace):
                body = await self._attempt(request, number, self._stream_once, ctx, trace)
                if ctx.abandoned:  # its caller gave up as it came (a call through the mailbox)
                    await body.abandon()
                return body
            case AttemptOnce(request=request, number=number, trace=trace):
                return await self._attempt(request, number, self._fetch_once, None, trace)
            case BeginOnce():
                return self._begin_once(msg, ctx)
            case ListModels():
                return await self._list_models()
            case CountTokens(request=request):
                return await self._count_tokens(request)
            case SessionStats():
                return self.statistics()

    def handle_nowait(self, msg: SessionMsg) -> Any:
        """`BeginOnce`, answered at once when it can be (see there); nothing else."""
        if isinstance(msg, BeginOnce):
            lender = self._lender
            if lender is None or self._pool is None or not self.keys.ready:
                raise trio.WouldBlock
            return self._begin_once(msg, lender)
        raise trio.WouldBlock

    def statistics(self) -> SessionStatistics:
        assert self._pool is not None
        keys = self.keys.statistics()
        return SessionStatistics(
            provider=self.provider,
            requests=self.requests,
            attempts=self.attempts,
            retries=self.retries,
            failures=dict(self.failures),
            malformed=self.malformed,
            breakers={model: b.state for model, b in self._breakers.items()},
            key_rotations=self.keys.rotations,
            pool=self._pool.statistics(),
            keys=keys.keys,
            keys_set_aside=keys.set_aside,
            key_refreshes=keys.refreshes,
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

    # -- one attempt ---------------------------------------------------------------------------

    async def _attempt(
        self,
        request: Request,
        number: int,
        once: Callable[[Request, HttpRequest, _Verdict, Any], Any],
        forward: Any,
        trace: str | None = None,
    ) -> Any:
        """Run one attempt; on failure raise `AttemptFailed` with the session's advice.

        A streamed attempt returns its body with the verdict still to come: the body gives
        it (`_Verdict`) once the caller has read it.

        Raises:
            AttemptFailed: the attempt failed (the typed error and whether to try again).
        """
        verdict = self._count(request, number)
        try:
            try:
                self._admit(request, verdict)
                verdict.key = await self.keys.pick(verdict.family)
                http_request = self._encode(request, verdict.key, trace)
            except LLMError as error:
                raise _Failed(error, {}, delivered=False) from None
            except Exception as exc:
                log.exception("%s: encoding a request failed", self.provider)
                raise _Failed(self._encode_failed(exc), {}, delivered=False) from None
            # The encoded request is the callee's alone: it may drop it once it is sent.
            pending = once(request, http_request, verdict, forward)
            del http_request
            result = await pending
        except _Failed as failed:
            await verdict.judge(failed)
            raise AssertionError("unreachable: a failure's verdict raises") from None
        except BaseException:
            verdict.release()
            raise
        if isinstance(result, StreamBody):
            return result  # the verdict comes from the body, once read
        verdict.succeed()
        return result

    def _count(self, request: Request, number: int) -> _Verdict:
        """Count an attempt (``number`` 1 is an invocation's first); its verdict to come."""
        if number <= 1:
            self.requests += 1
        else:
            self.retries += 1
        self.attempts += 1
        return _Verdict(self, request.model)

    def _admit(self, request: Request, verdict: _Verdict) -> None:
        """Check ``request`` with the codec, then ask the model's breaker.

        Raises:
            LLMError: the codec refuses the request, or the breaker is open.
        """
        self.codec.validate(request)
        try:
            verdict.breaker.before_call(self.provider)
        except LLMError as refused:
            refused.__cause__ = self._tripped.get(request.model)
            raise

    def _encode(self, request: Request, key: Secret | None, trace: str | None) -> HttpRequest:
        """The HTTP request of ``request`` with ``key`` (and the caller's ``trace``)."""
        http_request = self.codec.encode(request, key.reveal() if key else None)
        if not isinstance(http_request, HttpRequest):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"encode() returned a {type(http_request).__name__}")
        if trace is not None:  # the caller's trace, asked to reach the provider
            http_request = msgspec.structs.replace(
                http_request, headers={**http_request.headers, "traceparent": trace}
            )
        return http_request

    def _encode_failed(self, exc: Exception) -> ProviderError:
        """A request the codec cannot check or encode is ours, not the provider's: the
        error of that attempt."""
        error = ProviderError(
            f"the request could not be encoded: {type(exc).__name__}: {exc}",
            provider=self.provider,
            details={"reason": "encode failed", "exception": type(exc).__name__},
        )
        error.__cause__ = exc
        return error

    def _begin_once(self, msg: BeginOnce, lender: Context) -> OnceAttempt:
        """`BeginOnce`: the attempt counted, checked, keyed and encoded (a failure on the
        way is the attempt's, given by `OnceAttempt.run`), lent by ``lender``."""
        request = msg.request
        verdict = self._count(request, msg.number)
        http_request: HttpRequest | None = None
        failure: _Failed | None = None
        try:
            self._admit(request, verdict)
            verdict.key = self.keys.pick_nowait(verdict.family)
            http_request = self._encode(request, verdict.key, msg.trace)
        except LLMError as error:
            failure = _Failed(error, {}, delivered=False)
        except Exception as exc:  # the attempt's failure, given by run()
            log.exception("%s: encoding a request failed", self.provider)
            failure = _Failed(self._encode_failed(exc), {}, delivered=False)
        once = OnceAttempt(self, request, http_request, verdict, failure)
        once.lent(lender.lend(once.revoke))
        return once

    async def _advice(
        self,
        error: LLMError,
        headers: Mapping[str, str],
        key: Secret | None,
        family: str,
        *,
        delivered: bool,
    ) -> tuple[LLMError, bool, float | None]:
        """The error to report, whether another attempt makes sense after it, and after how
        long. A 401 sets ``key`` aside for ``family`` and says so in the error."""
        if isinstance(error, AuthenticationError) and error.status == 401 and key is not None:
            rejection = await self.keys.reject(key, family)
            error = rejection.explain(error, self.provider)
            log.warning("%s: %s", self.provider, error.message)
            return error, rejection.usable and not delivered, 0.0
        if delivered or error.details.get("circuit") == "open":
            return error, False, None
        try:
            advice = self.codec.retry_advice(error, headers)
        except Exception as exc:  # noqa: BLE001 - a header we cannot read gives no advice
            log.warning("%s: retry advice failed (%s); using the error's", self.provider, exc)
            advice = RetryAdvice(retryable=error.retryable, delay=error.retry_after)
        delay = advice.delay
        retryable = advice.retryable
        if isinstance(error, RateLimited) and self.keys.rotate(key):
            delay = 0.0 if advice.retryable else None
            retryable = True
        if delay is not None and delay > self.settings.max_retry_after:
            retryable = False  # the provider asks for longer than we will wait
        return error, retryable, delay

    def _report(self, request: Request, status: int, headers: Mapping[str, str]) -> None:
        """Tell the observer (the governor) what the response's headers said of rate limits,
        when they said something.

        Rate-limit headers are advisory: one that cannot be read is logged and ignored, it
        never fails the call.
        """
        if self._on_response is None:
            return
        try:
            rate_limits = self.codec.parse_rate_limits(headers)
            if rate_limits is not None:
                rate_limits = checked_rate_limits(rate_limits)
        except Exception as exc:  # noqa: BLE001 - advisory headers never fail a call
            log.warning(
                "%s: unreadable rate-limit headers ignored (%s: %s)",
                self.provider,
                type(exc).__name__,
                redact(str(exc))[:200],
            )
            rate_limits = None
        retry_after = rate_limits.retry_after if rate_limits is not None else None
        if status == 429 and len(self.keys) > 1:
            # With several keys a 429 holds back the key that got it (the next attempt
            # rotates), not the whole provider.
            retry_after = None
        if rate_limits is None and retry_after is None:
            return  # nothing was said of rate limits: nothing to tell
        info = ResponseInfo(
            provider=self.provider,
            model=request.model,
            status=status,
            rate_limits=rate_limits,
            retry_after=retry_after,
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
        error = self.codec.map_error(response.status, headers, body)
        if not isinstance(error, LLMError):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"map_error() returned a {type(error).__name__}")  # malformed
        return error

    def _malformed(self, exc: BaseException, *, delivered: bool) -> LLMError:
        return malformed_response(exc, provider=self.provider, delivered=delivered)

    # -- streaming -----------------------------------------------------------------------------

    async def _stream_once(
        self, request: Request, http_request: HttpRequest, verdict: _Verdict, ctx: Context
    ) -> StreamBody:
        """Send ``http_request`` and, once its head is in, lend its body to the caller (a
        loan of this incarnation, see ``_stream_body``).

        Raises:
            _Failed: the attempt failed before the body.
        """
        assert self._pool is not None
        settings = self.settings
        first = settings.first_chunk_timeout
        idle = settings.idle_chunk_timeout
        headers: Mapping[str, str] = {}
        body: StreamBody | None = None
        watchdog = self._watchdog
        deadline = trio.current_time() + first
        scope = trio.CancelScope()
        # Until the body is lent, the watchdog keeps the first_chunk limit by cancelling
        # this scope; after that the caller's reads keep it (and the idle_chunk limit).
        watch = watchdog.watch(scope, deadline)
        exchange = self._pool.stream(http_request)
        del http_request  # the exchange drops it once it is encoded
        with scope:
            try:
                response = await exchange.__aenter__()
                try:
                    headers = response.headers
                    self._report(request, response.status, headers)
                    if response.status >= 300:
                        error = await self._error_from(response, headers)
                        raise _Failed(error, headers, delivered=False)
                    decoder = self.codec.stream_decoder(request)
                    body = StreamBody(
                        response,
                        decoder,
                        exchange=exchange,
                        judge=verdict,
                        provider=self.provider,
                        deadline=deadline,
                        first=first,
                        idle=idle,
                    )
                except BaseException as exc:
                    with trio.move_on_after(5, shield=True):
                        await exchange.__aexit__(type(exc), exc, exc.__traceback__)
                    raise
            except _Failed:
                raise
            except LLMError as error:
                raise _Failed(error, headers, delivered=False) from error
            except Exception as exc:
                raise _Failed(
                    self._malformed(exc, delivered=False), headers, delivered=False
                ) from exc
            finally:
                watchdog.unwatch(watch)
        if body is None:  # the first_chunk limit, before the body was lent
            timeout = chunk_timeout(self.provider, delivered=False, first=first, idle=idle)
            raise _Failed(timeout, headers, delivered=False)
        body.lent(ctx.lend(body.revoke))
        return body

    # -- whole responses, models and tokens ----------------------------------------------------

    async def _fetch_once(
        self, request: Request, http_request: HttpRequest, _: _Verdict, __: Any
    ) -> Response:
        return await self._fetch_whole(request, http_request)

    async def _fetch_whole(
        self, request: Request, http_request: HttpRequest, deadline: float = math.inf
    ) -> Response:
        """Send ``http_request`` and decode its whole answer, by ``deadline`` at the latest.

        Raises:
            _Failed: the attempt failed (its typed error).
            trio.TooSlowError: ``deadline`` passed.
        """
        body = await self._fetch(request, http_request, deadline)
        try:
            response = self.codec.decode_response(request, body)
            if not isinstance(response, Response):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(f"decode_response() returned a {type(response).__name__}")
            return response
        except LLMError as error:
            raise _Failed(error, {}, delivered=False) from None
        except Exception as exc:
            raise _Failed(self._malformed(exc, delivered=False), {}, delivered=False) from exc

    async def _fetch(
        self, request: Request | None, http_request: HttpRequest, deadline: float = math.inf
    ) -> bytes:
        assert self._pool is not None
        headers: Mapping[str, str] = {}
        try:
            async with self._pool.stream(http_request, deadline=deadline) as response:
                headers = response.headers
                if request is not None:
                    self._report(request, response.status, headers)
                if response.status >= 300:
                    error = await self._error_from(response, headers)
                    raise _Failed(error, headers, delivered=False)
                return await response.read()
        except (_Failed, trio.TooSlowError):
            raise
        except LLMError as error:
            raise _Failed(error, headers, delivered=False) from error
        except Exception as exc:
            raise _Failed(self._malformed(exc, delivered=False), headers, delivered=False) from exc

    async def _auxiliary(
        self, build: Callable[[str | None], HttpRequest | None], decode: Callable[[bytes], Any]
    ) -> Any:
        """Fetch and decode an auxiliary endpoint (models, token counts), retrying it here.

        Raises:
            LLMError: the endpoint is missing or failed on every attempt.
        """
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            key: Secret | None = None
            family = ""  # models and token counts are no one model family's
            try:
                key = await self.keys.pick(family)
                try:
                    http_request = build(key.reveal() if key else None)
                except LLMError:
                    raise
                except Exception as exc:
                    # A codec that cannot build the request: this call fails, typed.
                    log.warning(
                        "%s: building a request failed (%s)", self.provider, type(exc).__name__
                    )
                    raise ProviderError(
                        f"the request could not be encoded: {type(exc).__name__}",
                        provider=self.provider,
                        details={"reason": "encode failed", "exception": type(exc).__name__},
                    ) from exc
                if http_request is None:
                    raise ProviderError(
                        "this provider has no such endpoint",
                        provider=self.provider,
                        retryable=False,
                    )
                body = await self._fetch(None, http_request)
                try:
                    return decode(body)
                except LLMError:
                    raise
                except Exception as exc:
                    raise _Failed(
                        self._malformed(exc, delivered=False), {}, delivered=False
                    ) from exc
            except _Failed as failed:
                error, retry, delay = await self._advice(
                    failed.error, failed.headers, key, family, delivered=False
                )
            except LLMError as error:
                raise error from error.__cause__  # keeps its cause, drops the retry loop's
            if not retry or attempt >= _AUX_ATTEMPTS:
                raise error
            self.retries += 1
            if delay is None:
                delay = backoff_delay(attempt, initial=0.5, maximum=4.0, multiplier=2, jitter=True)
            await trio.sleep(delay)

    async def _list_models(self) -> list[ModelInfo]:
        result: list[ModelInfo] = await self._auxiliary(
            self.codec.list_models_request, self.codec.decode_models
        )
        return result

    async def _count_tokens(self, request: Request) -> int:
        result: int = await self._auxiliary(
            lambda key: self.codec.count_tokens_request(request, key),
            self.codec.decode_count_tokens,
        )
        return result


@final
class OnceAttempt:
    """One non-streamed attempt lent to its caller (`BeginOnce`): `run` sends it and reads
    the whole answer on the caller's task, then applies the session's verdict.

    It is a loan of the session's incarnation. A graceful stop lets it finish. Any other end
    (a crash, a restart, a stop past its grace) closes the session's pool, which stops a
    send or a read in progress at once; `run` then raises the runtime's error, as a call the
    session handled would. A request already answered keeps its answer. A request that goes
    through another transport (a proxy's, an injected one) runs in a cancel scope that
    revoking cancels.
    """

    __slots__ = ("_failure", "_http", "_loan", "_request", "_scope", "_session", "_verdict")

    def __init__(
        self,
        session: ProviderSession,
        request: Request,
        http_request: HttpRequest | None,
        verdict: _Verdict,
        failure: _Failed | None,
    ) -> None:
        self._session = session
        self._request = request
        self._http = http_request
        self._verdict = verdict
        self._failure = failure
        self._loan: Loan | None = None
        self._scope: trio.CancelScope | None = None

    def lent(self, loan: Loan) -> None:
        """The session's side: the loan that holds the attempt (ended by `run`)."""
        self._loan = loan

    def revoke(self) -> None:
        """The session's incarnation ended: stop the attempt (its pool closes next)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, deadline: float = math.inf) -> Response:
        """Send the request and return the whole response, by ``deadline`` at the latest;
        once only.

        Raises:
            AttemptFailed: the attempt failed (the session's advice).
            ActorCrashed: the session crashed or restarted during the attempt.
            ActorDead: the session stopped for good during the attempt.
            trio.TooSlowError: ``deadline`` passed.
        """
        session = self._session
        verdict = self._verdict
        loan = self._loan
        http_request, self._http = self._http, None
        try:
            try:
                if loan is not None and loan.error is not None:
                    raise loan.error  # the session ended before the attempt began
                if self._failure is not None:
                    raise self._failure
                if http_request is None:
                    raise RuntimeError("a lent attempt runs once")
                pool = session._pool  # pyright: ignore[reportPrivateUsage]
                if pool is not None and pool.direct(http_request.url):
                    fetched = session._fetch_whole(self._request, http_request, deadline)  # pyright: ignore[reportPrivateUsage]
                    del http_request  # the exchange drops it once it is sent
                    response = await fetched
                else:
                    response = await self._run_scoped(http_request, deadline)
            except _Failed as failed:
                if loan is not None and loan.error is not None:
                    verdict.release()
                    raise loan.error from None  # the session ended under it
                await verdict.judge(failed)
                raise AssertionError("unreachable: a failure's verdict raises") from None
            except BaseException:
                verdict.release()
                raise
        finally:
            if loan is not None:
                loan.end()
        verdict.succeed()
        return response

    async def _run_scoped(self, http_request: HttpRequest, deadline: float) -> Response:
        """`run` through another transport: in a scope that `revoke` cancels."""
        with trio.CancelScope() as self._scope:
            return await self._session._fetch_whole(self._request, http_request, deadline)  # pyright: ignore[reportPrivateUsage]
        loan = self._loan
        if loan is not None and loan.error is not None:
            raise loan.error
        raise RuntimeError("a lent attempt was cancelled by its session")  # pragma: no cover


@final
class _Verdict:
    """One attempt's verdict for its session: breaker, key, statistics, retry advice (the
    `Judge` of a streamed attempt's body, applied on the caller's task)."""

    __slots__ = ("breaker", "family", "key", "model", "session", "settled")

    def __init__(self, session: ProviderSession, model: str) -> None:
        self.session = session
        self.model = model
        self.breaker = session._breaker(model)  # pyright: ignore[reportPrivateUsage]
        self.family = model_family(model)
        self.key: Secret | None = None
        self.settled = False

    def succeed(self) -> None:
        session = self.session
        self.settled = True
        self.breaker.success()
        session._tripped.pop(self.model, None)  # pyright: ignore[reportPrivateUsage]
        session.keys.accept(self.key, self.family)

    async def judge(self, outcome: _Failed | None) -> None:
        """The verdict of an attempt: its success, or its failure counted and advised.

        Raises:
            AttemptFailed: the attempt failed (the typed error and whether to try again).
        """
        if outcome is None:
            self.succeed()
            return
        session = self.session
        error = outcome.error
        code = error.code.value
        session.failures[code] = session.failures.get(code, 0) + 1
        if error.details.get("reason") == MALFORMED:  # ours or the codec's own
            session.malformed += 1
            log.warning("%s: malformed response: %s", session.provider, error.message)
        if counts_against_breaker(error):
            self.breaker.failure()
            session._tripped[self.model] = error  # pyright: ignore[reportPrivateUsage]
            self.settled = True
        else:
            self.release()
        error, retry, delay = await session._advice(  # pyright: ignore[reportPrivateUsage]
            error, outcome.headers, self.key, self.family, delivered=outcome.delivered
        )
        raise AttemptFailed(error, retry=retry, delay=delay) from None

    def release(self) -> None:
        if not self.settled:
            self.settled = True
            self.breaker.release_probe()


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
