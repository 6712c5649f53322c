"""`StreamBody`: the body of one streamed attempt, read by the caller's own task.

A provider session opens a streamed attempt on the call that asks for it (on the caller's
task when the runtime can, `Actor.inline_calls`): circuit breaker, key, encoding, sending
the request, the response's status and headers (rate-limit headers, the error of a non-2xx
answer). Then it lends the body to the caller, whose task reads it, decodes the events with
the codec's stream decoder and gets the chunks of each network read at once: one task woken
per network read, and no task of the session's waiting for the caller.

What stays the session's:

* the chunk limits: ``first_chunk`` until the first event that carries content (text,
  reasoning, a tool-call delta, a finish), ``idle_chunk`` for each wait after that. They are
  deadlines of the reads themselves (`HttpResponse.receive`), and only time spent waiting
  for the provider counts: a caller that comes back late to read finds a fresh limit. The
  `InvocationTimeout` names the limit that fired;
* containment: whatever decoding raises becomes a `ProviderError` (``details["reason"] ==
  "malformed response"``), an error event ends the attempt after the chunks before it;
* the verdict: once the caller has read the body to its end it calls `verdict`, which
  closes the HTTP exchange and applies the session's verdict on the caller's task, as for
  any attempt: statistics, breaker and key, then the end, or `AttemptFailed` with the
  session's retry advice;
* lifetime: the body is a loan of the session's incarnation (`Context.lend`). A graceful
  stop of the session waits for it; any other end of the incarnation (a crash, a restart,
  a stop past its grace) revokes it: a read in progress stops at once, later reads return
  ``None``, the connection is closed, and `verdict` raises the runtime's error
  (`ActorCrashed`, or `ActorDead` for a stop for good). A caller that leaves before the end
  calls `abandon`: the connection is closed, not reused, and no verdict is given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol, final

import trio

from .._secrets import redact
from ..errors import InvocationTimeout, LLMError, ProviderError, error_from_info
from ..http import HttpResponse
from ..providers._base import StreamDecoder
from ..runtime import Loan
from ..types import StreamChunk

__all__ = [
    "MALFORMED",
    "Failed",
    "Judge",
    "StreamBody",
    "chunk_timeout",
    "has_content",
    "malformed_response",
]

log = logging.getLogger("llm_invocation.providers")

MALFORMED: Final = "malformed response"
# How long closing an exchange may take once the body is done with, even when cancelled.
_CLOSE_LIMIT: Final = 5.0


class Judge(Protocol):
    """The session's side of a lent body: its verdict, given once, on the caller's task."""

    async def judge(self, outcome: Failed | None) -> None:
        """Apply the verdict of an attempt read to its end (``outcome``: its failure).

        Raises:
            Exception: the session's answer to a failure (its `AttemptFailed`).
        """
        ...

    def release(self) -> None:
        """No verdict: the attempt ended without one (left early, revoked, timed out)."""
        ...


class Failed(Exception):
    """Inside a session: an attempt failed with ``error``, with or without content out."""

    def __init__(self, error: LLMError, headers: Mapping[str, str], delivered: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.headers = headers
        self.delivered = delivered


def malformed_response(exc: BaseException, *, provider: str, delivered: bool) -> ProviderError:
    """The typed error for an answer that could not be decoded (``exc`` is the cause)."""
    text = redact(str(exc))[:200]
    error = ProviderError(
        f"{MALFORMED}: {type(exc).__name__}: {text}" if text else f"{MALFORMED}",
        provider=provider,
        retryable=not delivered,
        details={"reason": MALFORMED, "exception": type(exc).__name__},
    )
    error.__cause__ = exc
    return error


def chunk_timeout(
    provider: str, *, delivered: bool, first: float, idle: float
) -> InvocationTimeout:
    """The error of a chunk limit that passed: ``idle_chunk`` once content was delivered,
    else ``first_chunk``; its cause is a `trio.TooSlowError` (our own deadline)."""
    if delivered:
        what, limit, name = "no chunk for", idle, "idle_chunk"
    else:
        what, limit, name = "no content within", first, "first_chunk"
    timeout = InvocationTimeout(
        f"{what} {limit:g}s (the {name} limit)",
        provider=provider,
        retryable=True,
        details={"limit": name, "seconds": limit},
    )
    timeout.__cause__ = trio.TooSlowError(f"the {name} limit of {limit:g}s passed")
    return timeout


def has_content(batch: list[StreamChunk]) -> bool:
    """Whether a chunk of ``batch`` carries content (what stops a failed attempt's retry)."""
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
class StreamBody:
    """The body of one streamed attempt, lent by its session: see the module documentation.

    The caller calls `next_batch` until it returns None, then `verdict`; or `abandon` when
    it leaves before that. The session's incarnation takes it back with `revoke`.
    """

    __slots__ = (
        "_closed",
        "_deadline",
        "_decoder",
        "_delivered",
        "_ended",
        "_exchange",
        "_expired",
        "_first",
        "_headers",
        "_idle",
        "_judge",
        "_limit",
        "_loan",
        "_outcome",
        "_provider",
        "_response",
        "_revoked",
    )

    def __init__(
        self,
        response: HttpResponse,
        decoder: StreamDecoder,
        *,
        exchange: AbstractAsyncContextManager[HttpResponse],
        judge: Judge,
        provider: str,
        deadline: float,
        first: float,
        idle: float,
    ) -> None:
        self._response = response
        self._exchange = exchange
        self._decoder = decoder
        self._judge = judge
        self._provider = provider
        self._headers: Mapping[str, str] = response.headers
        self._deadline = deadline  # of the first content
        self._first = first
        self._idle = idle
        self._limit = math.inf  # the caller's own deadline for the whole attempt
        self._delivered = False
        self._ended = False  # no more reads: the outcome is known
        self._expired = False  # the caller's deadline passed during a read
        self._outcome: Failed | None = None
        self._revoked = False
        self._closed = False  # the verdict was asked for, or the body abandoned
        self._loan: Loan | None = None

    def __repr__(self) -> str:
        return f"<StreamBody {self._provider!r} delivered={self._delivered}>"

    @property
    def delivered(self) -> bool:
        """Whether content reached the caller (no retry after that)."""
        return self._delivered

    def lent(self, loan: Loan) -> None:
        """The session's side: the loan that holds the body (ended by `verdict`/`abandon`)."""
        self._loan = loan

    # -- the caller's side ---------------------------------------------------------------------

    def limit(self, deadline: float) -> None:
        """Stop reading at ``deadline`` (the caller's, for the whole attempt): a read still
        waiting then makes `next_batch` return None, and `verdict` raises
        `trio.TooSlowError`."""
        self._limit = deadline

    async def next_batch(self) -> list[StreamChunk] | None:
        """The chunks of the next network read (``[]`` when it completed no event), or None
        when the body is done with: then `verdict` tells how the attempt ended.

        A failed read, a malformed answer, an error event or a chunk limit is not raised
        here: it is kept for the session's verdict, which answers with its advice.

        Raises:
            trio.Cancelled: the caller's own cancellation (`abandon` then closes the
                connection).
        """
        if self._ended or self._revoked:
            await trio.lowlevel.checkpoint()
            return None
        try:
            now = trio.current_time()
            if self._delivered:
                timeout = self._idle
            else:
                timeout = self._deadline - now
                if timeout <= 0:  # passed while the caller was away, not waiting on a read
                    timeout = self._first
                    self._deadline = now + timeout
            left = self._limit - now
            if left < timeout:
                timeout = max(left, 0.0)
            data = await self._response.receive(timeout)
        except StopAsyncIteration:
            data = None
        except trio.TooSlowError:
            if trio.current_time() >= self._limit and not self._revoked:
                self._ended = self._expired = True
                return None
            return self._fail(
                chunk_timeout(
                    self._provider, delivered=self._delivered, first=self._first, idle=self._idle
                )
            )
        except LLMError as error:
            return self._fail(error)
        except Exception as exc:  # noqa: BLE001 - whatever a transport raises: contained
            return self._fail(
                malformed_response(exc, provider=self._provider, delivered=self._delivered)
            )
        if self._revoked:
            return None
        try:
            if data is None:
                self._ended = True
                batch = self._decoder.close()
            else:
                batch = self._decoder.feed(data)
            for chunk in batch:
                if chunk.error is not None:
                    return self._error_event(batch, chunk)
            if not self._delivered and has_content(batch):
                self._delivered = True
        except LLMError as error:
            return self._fail(error)
        except Exception as exc:  # noqa: BLE001 - nothing a provider sends escapes as a crash
            return self._fail(
                malformed_response(exc, provider=self._provider, delivered=self._delivered)
            )
        if self._ended and not batch:
            return None
        return batch

    def _error_event(self, batch: list[StreamChunk], event: StreamChunk) -> list[StreamChunk]:
        """An error event ends the attempt: the chunks before it still go out."""
        error = event.error
        assert error is not None
        before = batch[: next(i for i, chunk in enumerate(batch) if chunk is event)]
        if not self._delivered and has_content(before):
            self._delivered = True
        self._ended = True
        self._outcome = Failed(error_from_info(error), self._headers, self._delivered)
        return before

    def _fail(self, error: LLMError) -> None:
        if not self._revoked:
            self._ended = True
            self._outcome = Failed(error, self._headers, self._delivered)

    async def verdict(self) -> None:
        """Once `next_batch` returned None: close the exchange (its connection goes back to
        the pool only when the body was read to its end) and apply the session's verdict.

        Raises:
            AttemptFailed: the attempt failed (the session's advice).
            ActorCrashed: the session crashed or restarted while the body was lent.
            ActorDead: the session stopped for good while the body was lent.
            trio.TooSlowError: the caller's deadline (`limit`) passed during a read.
        """
        if self._closed:
            raise RuntimeError("the body's verdict was asked for already")
        self._closed = True
        judge = self._judge
        loan = self._loan
        try:
            await self._close()
            if loan is not None and loan.error is not None:
                raise loan.error
            if self._expired:
                raise trio.TooSlowError("the caller's deadline passed during a read")
            if not self._ended:
                raise RuntimeError("verdict() before the body was read to its end")
            await judge.judge(self._outcome)
        finally:
            judge.release()
            if loan is not None:
                loan.end()

    async def abandon(self) -> None:
        """The caller leaves before the verdict: the response is aborted and its connection
        closed (within a bound, even when cancelled), and no verdict is given."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close()
        finally:
            self._judge.release()
            if self._loan is not None:
                self._loan.end()

    async def _close(self) -> None:
        self._response.abort()
        with trio.move_on_after(_CLOSE_LIMIT, shield=True):
            try:
                await self._exchange.__aexit__(None, None, None)
            except Exception:  # the body is done with: its closing tells nothing
                log.debug("%s: closing a streamed response failed", self._provider, exc_info=True)

    # -- the session's side --------------------------------------------------------------------

    def revoke(self) -> None:
        """Take the body back (its incarnation ended): a read in progress stops, later reads
        return None; the caller's `verdict` or `abandon` closes the exchange."""
        self._revoked = True
        self._response.abort()
