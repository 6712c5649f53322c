"""`Run`: one invocation's way through its candidates and attempts, shared by every path.

A run owns, for one invocation: the candidates (the provider and model asked for, then its
fallbacks), the reservation of the current candidate, one rate-limit lease per HTTP attempt,
the retry decision after a failed attempt (the session's advice, ``max_attempts``, the
backoff), the fallback decision, and settling each candidate exactly once. Streamed calls
(`InvocationStream`), non-streamed calls and the tool loop all go through it.

Deadlines: the invocation's ``timeout`` is ours, and starts once the first candidate is
admitted (waiting for rate-limit capacity is bounded by the governor's ``max_wait``); it
covers every attempt, backoff and fallback after that. The caller's own deadline or
cancellation is the caller's: before any error is raised, a run checks whether its caller
is cancelled, and if so the caller sees its own `trio.Cancelled` and the ledger records
``cancelled``, never a timeout.
"""

from __future__ import annotations

import copy
import logging
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Final, final

import msgspec
import trio

from ..actors._resilience import backoff_delay
from ..actors.provider_session import AttemptFailed, SessionMsg
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
from ..providers._base import checked_usage
from ..runtime import ActorCrashed, ActorDead, ActorRef
from ..types import Request, Response, Usage
from ._governance import Admission, Status
from ._middleware import EMPTY_CHAIN, CallInfo, MiddlewareChain

if TYPE_CHECKING:
    from ..actors.governor import Lease
    from ..observability._telemetry import InvocationTrace
    from ._invoker import Invoker

__all__ = ["RetryPolicy", "Run", "can_fall_back", "failure_of"]

log = logging.getLogger("llm_invocation.invocation")

_NO_USAGE: Final = Usage()
_CACHED: Final = Usage(cost=Decimal(0))  # an answer from the cache: nothing sent, no cost


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How many attempts an invocation makes on one candidate, and the backoff between."""

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: bool = True

    def delay(self, failed: int) -> float:
        """The backoff after ``failed`` failed attempts (from 1)."""
        return backoff_delay(
            failed,
            initial=self.initial_delay,
            maximum=self.max_delay,
            multiplier=self.multiplier,
            jitter=self.jitter,
        )


def can_fall_back(error: LLMError) -> bool:
    """Whether a fallback provider may take over after ``error`` (nothing delivered yet)."""
    if isinstance(error, InvalidRequest | ModelNotSupported | CostExceeded | AuthenticationError):
        return False
    if isinstance(error, ProviderOverloaded | RateLimited):
        return True
    return error.retryable or error.details.get("circuit") == "open"


def failure_of(exc: BaseException, provider: str) -> tuple[LLMError, bool, float | None]:
    """The typed error of a failed attempt, whether to try again and after how long.

    ``exc`` is what the session or the runtime raised: the session's `AttemptFailed`, an
    `LLMError`, the runtime's own errors, or `trio.TooSlowError` (our timeout).
    """
    if isinstance(exc, AttemptFailed):
        return exc.error, exc.retry, exc.delay
    if isinstance(exc, LLMError):
        return exc, False, None
    if isinstance(exc, trio.TooSlowError):
        error: LLMError = InvocationTimeout(
            "the invocation did not finish within its timeout", provider=provider, retryable=False
        )
        error.__cause__ = exc
        return error, False, None
    if isinstance(exc, ActorCrashed):
        error = ProviderError(
            "the provider session crashed during the attempt", provider=provider, retryable=True
        )
    elif isinstance(exc, ActorDead):
        error = ProviderError("the client is closed", provider=provider)
    else:
        error = ProviderError(f"the attempt failed: {exc}", provider=provider)
    error.__cause__ = exc
    return error, error.retryable, None


@final
class Run:
    """One invocation's candidates, attempts and settlements: see the module documentation."""

    __slots__ = (
        "_active",
        "_admission",
        "_attempt",
        "_chain",
        "_deadline",
        "_ended",
        "_index",
        "_invoker",
        "_lease",
        "_made",
        "_pending_usage",
        "_since",
        "_started",
        "_timeout",
        "attempted",
        "attempts",
        "call",
        "candidates",
        "id",
        "request",
        "retries",
        "spent",
        "trace",
        "usage",
    )

    def __init__(
        self,
        invoker: Invoker,
        request: Request,
        candidates: list[tuple[str, str]],
        *,
        timeout: float | None,
        chain: MiddlewareChain = EMPTY_CHAIN,
        step: int | None = None,
    ) -> None:
        self._invoker = invoker
        self.request = request
        self.candidates = candidates
        self._chain = chain
        self.call = CallInfo(request, step=step, run=self)
        """What the middleware's hooks are told about this invocation."""
        self._index = 0
        self._timeout = timeout
        self._deadline = math.inf
        self._admission: Admission | None = None
        self._active = False  # a candidate was begun and is not settled yet
        self._lease: Lease | None = None
        self._attempt = 0
        self._pending_usage: Usage | None = None  # reported by failed attempts of a candidate
        self._started = False  # an attempt of the current candidate was let through
        self.usage: Usage | None = None
        """The settled usage (with cost) of the last candidate settled."""
        self.attempted: list[str] = []
        """The ``provider:model`` candidates tried, in order (fallbacks after the first)."""
        self.attempts = 0
        """HTTP attempts let through, on every candidate."""
        self.retries = 0
        self.spent: Usage | None = None
        """The settled usage of every candidate, summed."""
        self.id = ""
        self.trace: InvocationTrace | None = None
        """The invocation's spans and metrics (None: telemetry is off)."""
        self._since = 0.0
        self._ended = False
        self._made: tuple[Request, str, str, Request] | None = None  # see `attempt_request`

    @property
    def provider(self) -> str:
        return self.candidates[self._index][0]

    @property
    def model(self) -> str:
        return self.candidates[self._index][1]

    @property
    def deadline(self) -> float:
        """When the invocation's own timeout passes (inf before admission, or none)."""
        return self._deadline

    @property
    def attempt(self) -> int:
        """The number of the current attempt on the current candidate (from 1)."""
        return self._attempt

    def session(self) -> ActorRef[SessionMsg]:
        return self._invoker.session_ref(self.provider)

    def attempt_request(self) -> Request:
        """The request as the current candidate's session receives it (made once per request
        and candidate: a `Request` is frozen)."""
        provider, model = self.candidates[self._index]
        made = self._made
        if made is not None and made[0] is self.request and made[1:3] == (provider, model):
            return made[3]
        original = self.request
        if original.provider == provider and original.model == model:
            request = original
        elif not model:
            request = msgspec.structs.replace(original, provider=provider, model=model)  # raises
        else:
            # Only the provider and the model change, and the rest was checked when the
            # request was made: a copy, without checking it all again.
            request = copy.copy(original)
            msgspec.structs.force_setattr(request, "provider", provider)
            msgspec.structs.force_setattr(request, "model", model)
        self._made = (original, provider, model, request)
        return request

    def reset(self, request: Request, candidates: list[tuple[str, str]]) -> None:
        """Run ``request`` on ``candidates`` instead (the middleware changed the request);
        only before the first attempt."""
        assert not self._active and not self.attempted, "reset after the run began"
        self.request = request
        self.candidates = candidates
        self._index = 0

    def start(self) -> None:
        """The invocation begins: tell the client's observer (audit, spans, metrics)."""
        # One id names the invocation everywhere: its hooks' `CallInfo`, its audit record
        # and its spans.
        self.id = self.call.id
        self._since, self.trace = self._invoker.observer.start(
            self.request, self.provider, self.model, self.id
        )

    def finish(
        self, status: Status, error: LLMError | None = None, response: Response | None = None
    ) -> None:
        """The invocation ended: its audit record, spans and metrics, once."""
        if self._ended or not self.id:
            return
        self._ended = True
        self._invoker.observer.finished(
            invocation_id=self.id,
            started=self._since,
            trace=self.trace,
            request=self.request,
            provider=self.provider,
            model=self.model,
            status=status,
            error=error,
            response=response,
            usage=self.spent if self.spent is not None or not self.call.cached else _CACHED,
            attempts=self.attempts,
            retries=self.retries,
            attempted=self.attempted,
            cached=self.call.cached,
            step=self.call.step,
        )
        self.call.ended(self.provider, self.model, self._attempt, self.attempted)

    # -- attempts ------------------------------------------------------------------------------

    async def begin(self) -> None:
        """Admit the next attempt: reserve the candidate's budget (first attempt on it), take
        a rate-limit lease, then run the middleware's ``before_attempt`` hooks.

        Raises:
            CostExceeded: a cap or a budget refuses the candidate.
            RateLimited: the governor refuses the attempt.
            InvocationTimeout: the invocation's timeout passed while waiting.
            LLMError: a middleware refused the attempt, or failed.
        """
        governance = self._invoker.governance
        self._attempt += 1
        self._active = True
        if self._attempt == 1:
            self.attempted.append(f"{self.provider}:{self.model}")
        try:
            if governance is None:
                await self._before_attempt()
                self._started = True
                self.attempts += 1
                return
            if self._admission is None:
                self._admission = await governance.reserve(
                    self.attempt_request(), self.provider, self.model
                )
            admission = self._admission
            if self._deadline == math.inf:
                self._lease = await governance.acquire(admission)
            else:
                with trio.CancelScope(deadline=self._deadline) as scope:
                    self._lease = await governance.acquire(admission)
                if scope.cancelled_caught:
                    raise InvocationTimeout(
                        "the invocation's timeout passed while it waited for rate-limit capacity",
                        provider=self.provider,
                        retryable=False,
                    )
            if self.trace is not None and self._lease is not None and self._lease.waited > 0:
                self.trace.rate_limit_wait(self._lease.waited)
            await self._before_attempt()
            self._started = True
            self.attempts += 1
        finally:
            if self._timeout is not None and self._deadline == math.inf:
                self._deadline = trio.current_time() + self._timeout

    async def _before_attempt(self) -> None:
        """The middleware's ``before_attempt`` hooks (the attempt is not let through yet).

        Raises:
            LLMError: a hook refused the attempt, or failed.
        """
        if self._chain.before_attempt_hooks:
            await self._chain.before_attempt(self.call)

    def end_attempt(self, usage: Usage | None, *, failed: bool) -> None:
        """The current attempt is over: give its lease back with the tokens it used.

        ``usage`` is what the attempt reported, checked (`checked_usage`: counts that
        cannot be true are none reported). A failed attempt's is kept and settled with its
        candidate.
        """
        if failed and usage is not None:
            self._pending_usage = (
                usage if self._pending_usage is None else self._pending_usage + usage
            )
        lease, self._lease = self._lease, None
        governance = self._invoker.governance
        if lease is not None and governance is not None:
            used = usage.total_tokens if usage is not None else 0
            if not used and self._admission is not None:
                used = self._admission.estimate.prompt_tokens
            governance.release(lease, used)

    async def retry_or_raise(
        self,
        exc: BaseException,
        *,
        delivered: bool,
        usage: Usage | None = None,
        partial: Response | None = None,
    ) -> None:
        """After a failed attempt: return to try again (the same candidate after its backoff,
        or the next candidate), or settle and raise the invocation's error.

        ``usage`` is what the failed attempt reported; ``partial`` what it streamed.

        Raises:
            trio.Cancelled: the caller is cancelled (the ledger records ``cancelled``).
            LLMError: the invocation failed.
        """
        error, retry, delay = failure_of(exc, self.provider)
        self.end_attempt(checked_usage(usage) if usage is not None else None, failed=True)
        # The caller's own cancellation wins over whatever the attempt ran into.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._chain.after_attempt_hooks:
            try:
                await self._chain.after_attempt(self.call, error)
            except LLMError as hook_error:
                await self._fail(hook_error, partial)
        policy = self._invoker.retry_policy
        if not delivered and retry and self._attempt < policy.max_attempts:
            wait = policy.delay(self._attempt) if delay is None else delay
            self._invoker.note_retry(self.provider, self._attempt, error, wait)
            self.retries += 1
            if self.trace is not None:
                self.trace.retried()
            if trio.current_time() + wait >= self._deadline:
                await self._fail(self._timed_out(error), partial)
            await trio.sleep(wait)
            return
        if self._attempt > 1:
            error.details.setdefault("attempts", self._attempt)
        if not delivered and self._index + 1 < len(self.candidates) and can_fall_back(error):
            await self.settle("error", None, error=error, partial=partial)
            self._invoker.note_fallback(self.provider, error)
            self._index += 1
            self._attempt = 0
            self._admission = None
            self._pending_usage = None
            self._started = False
            if self.trace is not None:
                self.trace.fell_back(self.provider, self.model)
            return
        await self._fail(error, partial)

    async def admit(self) -> None:
        """`begin` the next attempt, falling back to the next candidate when one is refused.

        Raises:
            CostExceeded, RateLimited, InvocationTimeout: refused, with no fallback for it.
        """
        while True:
            try:
                await self.begin()
            except Exception as exc:  # noqa: BLE001 - refused() re-raises it unless a fallback takes over
                await self.refused(exc)
                continue
            return

    async def refused(self, exc: Exception) -> None:
        """`begin` failed (a budget, a rate limit, our timeout) or a middleware refused the
        attempt: give its lease back unused, settle the candidate's reservation untouched,
        then fall back or re-raise.

        Raises:
            Exception: ``exc`` again, when no fallback takes over.
        """
        lease, self._lease = self._lease, None
        governance = self._invoker.governance
        if lease is not None and governance is not None:  # refused after its lease came
            governance.release(lease, 0)
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(exc, LLMError):
            await self.settle("error", _NO_USAGE)
            raise exc
        if self._index + 1 < len(self.candidates) and can_fall_back(exc):
            await self.settle("error", _NO_USAGE, error=exc)
            self._invoker.note_fallback(self.provider, exc)
            self._index += 1
            self._attempt = 0
            self._admission = None
            self._pending_usage = None
            self._started = False
            if self.trace is not None:
                self.trace.fell_back(self.provider, self.model)
            return
        await self.settle("error", _NO_USAGE, error=exc)
        raise exc

    def _timed_out(self, cause: LLMError) -> LLMError:
        error = InvocationTimeout(
            f"the invocation did not finish within its timeout of {self._timeout:g}s "
            f"(the last attempt failed: {cause.message})",
            provider=self.provider,
            retryable=False,
        )
        error.__cause__ = cause
        return error

    async def _fail(self, error: LLMError, partial: Response | None) -> None:
        await self.settle("error", None, error=error, partial=partial)
        raise error

    # -- settling ------------------------------------------------------------------------------

    async def settle(
        self,
        status: Status,
        usage: Usage | None,
        *,
        error: LLMError | None = None,
        partial: Response | None = None,
        response: Response | None = None,
    ) -> Usage | None:
        """Settle the current candidate once; returns its usage with the cost.

        ``usage`` is what the last attempt reported (None: nothing, counted locally from
        ``partial`` when the call did not succeed); earlier failed attempts' usage is added.
        A candidate none of whose attempts was let through (refused, or cancelled while it
        waited for its lease) consumed nothing.
        """
        if not self._active:
            return None
        self._active = False
        if usage is not None:
            usage = checked_usage(usage)
        self.end_attempt(usage, failed=False)
        reported = usage
        if self._pending_usage is not None:
            reported = self._pending_usage if usage is None else self._pending_usage + usage
            self._pending_usage = None
        if reported is None and not self._started:
            reported = _NO_USAGE
        admission, self._admission = self._admission, None
        governance = self._invoker.governance
        settled = reported
        if admission is not None and governance is not None:
            settled = await governance.settle(
                admission,
                reported,
                status=status,
                error=error,
                response=response if status == "ok" else partial,
            )
        if settled is not None:
            self.usage = settled
            self.spent = settled if self.spent is None else self.spent + settled
            self._invoker.record_usage(settled)
        return settled
