"""`StreamBody`: the body of one streamed attempt, read by the caller's own task.

A provider session does the admission side of a streamed attempt in its own task: circuit
breaker, key, encoding, sending the request, the response's status and headers (rate-limit
headers, the error of a non-2xx answer). Then it lends the body to the caller, whose task
reads it, decodes the events with the codec's stream decoder and gets the chunks of each
network read at once: one task woken per network read, where a hop through the session's
task would wake two.

What stays the session's:

* the chunk limits: ``first_chunk`` until the first event that carries content (text,
  reasoning, a tool-call delta, a finish), ``idle_chunk`` for each wait after that. They are
  deadlines of the reads themselves (`HttpResponse.receive`), and only time spent waiting
  for the provider counts: a caller that comes back late to read finds a fresh limit. The
  `InvocationTimeout` names the limit that fired;
* containment: whatever decoding raises becomes a `ProviderError` (``details["reason"] ==
  "malformed response"``), an error event ends the attempt after the chunks before it;
* the verdict: the body hands its end (or its failure, and whether content was delivered)
  back to the session, which keeps its statistics, breakers and keys and answers the
  attempt's stream with its retry advice (`AttemptFailed`) or its end, as for any attempt;
* lifetime: the session holds the response open while the caller reads. If the session's
  handler ends first (the session restarts or stops, our deadline passes, the caller left),
  it revokes the body: a read in progress stops at once, later reads return ``None``, and
  the connection is closed. The attempt's stream then says what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, final

import trio

from .._secrets import redact
from ..errors import InvocationTimeout, LLMError, ProviderError, error_from_info
from ..http import HttpResponse
from ..providers._base import StreamDecoder
from ..types import StreamChunk

__all__ = [
    "MALFORMED",
    "Failed",
    "StreamBody",
    "chunk_timeout",
    "has_content",
    "malformed_response",
]

MALFORMED: Final = "malformed response"
# How long the handler waits, once it revoked a body, for the caller's read to stop.
_REVOKE_LIMIT: Final = 5.0


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

    The caller calls `next_batch` until it returns None; the session waits for that with
    `wait` and ends with `revoke`.
    """

    __slots__ = (
        "_deadline",
        "_decoder",
        "_delivered",
        "_ended",
        "_finished",
        "_first",
        "_headers",
        "_idle",
        "_outcome",
        "_provider",
        "_reading",
        "_response",
        "_revoked",
        "_unwound",
    )

    def __init__(
        self,
        response: HttpResponse,
        decoder: StreamDecoder,
        *,
        provider: str,
        deadline: float,
        first: float,
        idle: float,
    ) -> None:
        self._response = response
        self._decoder = decoder
        self._provider = provider
        self._headers: Mapping[str, str] = response.headers
        self._deadline = deadline  # of the first content
        self._first = first
        self._idle = idle
        self._delivered = False
        self._ended = False  # no more reads: the outcome is known
        self._outcome: Failed | None = None
        self._finished = trio.Event()  # the outcome is handed to the session
        self._revoked = False
        self._reading = False
        self._unwound: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<StreamBody {self._provider!r} delivered={self._delivered}>"

    @property
    def delivered(self) -> bool:
        """Whether content reached the caller (no retry after that)."""
        return self._delivered

    # -- the caller's side ---------------------------------------------------------------------

    async def next_batch(self) -> list[StreamChunk] | None:
        """The chunks of the next network read (``[]`` when it completed no event), or None
        when the body is done with: then the attempt's stream tells how it ended (its end,
        `AttemptFailed`, or the runtime's error when the session went away).

        A failed read, a malformed answer, an error event or a chunk limit is not raised
        here: it is handed to the session, which answers with its advice.

        Raises:
            trio.Cancelled: the caller's own cancellation (the connection is then closed).
        """
        if self._ended or self._revoked:
            self._finish()
            await trio.lowlevel.checkpoint()
            return None
        self._reading = True
        try:
            if self._delivered:
                timeout = self._idle
            else:
                timeout = self._deadline - trio.current_time()
                if timeout <= 0:  # passed while the caller was away, not waiting on a read
                    timeout = self._first
                    self._deadline = trio.current_time() + timeout
            data = await self._response.receive(timeout)
        except StopAsyncIteration:
            data = None
        except trio.TooSlowError:
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
        finally:
            self._reading = False
            if self._unwound is not None:
                self._unwound.set()
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
            self._finish()
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
            self._finish()

    def _finish(self) -> None:
        if not self._finished.is_set():
            self._finished.set()

    # -- the session's side --------------------------------------------------------------------

    async def wait(self) -> Failed | None:
        """Wait until the caller is done with the body; its failure, or None at its end."""
        await self._finished.wait()
        return self._outcome

    async def revoke(self) -> None:
        """Take the body back: a read in progress stops (waited for, within a bound), later
        reads return None, and the connection is closed unless the body was read to its end.
        """
        self._revoked = True
        self._response.abort()
        if self._reading:
            unwound = self._unwound = trio.Event()
            with trio.move_on_after(_REVOKE_LIMIT, shield=True):
                await unwound.wait()
