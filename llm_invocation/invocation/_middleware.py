"""Middleware: a client's own hooks around every invocation and every HTTP attempt.

::

    class Audit(llm.Middleware):
        async def before_request(self, call: llm.CallInfo, request: llm.Request) -> llm.Request:
            return request.with_options(temperature=0)

        async def after_response(self, call: llm.CallInfo, response: llm.Response) -> None:
            log.info("%s answered %s", call.provider, call.id)

    client.add_middleware(Audit())

A `Middleware` overrides the hooks it needs; the others are no-ops and cost nothing (a hook
nobody overrides is never awaited, so a client without ``on_chunk`` hooks adds no await per
chunk). Per invocation (one model turn; each turn of the tool loop is one):

* ``before_request(call, request)``: return a changed request (or None to keep it), or
  raise an `LLMError` to veto it: the caller gets that error, the ledger records the call as
  an error with its code, and nothing is sent;
* ``before_attempt(call)`` and ``after_attempt(call, error)``: around each HTTP attempt,
  retries and fallbacks included (``error`` is None when the attempt succeeded). An
  `LLMError` from ``before_attempt`` refuses the attempt like a budget or a rate limit would:
  a fallback takes over when the error allows it;
* ``on_chunk(call, chunk)``: every chunk the caller receives (a non-streamed answer is one
  chunk);
* ``after_response(call, response)``: the whole response, settled (its usage has its cost);
* ``on_error(call, error)``: the invocation failed with ``error`` (once, whatever the hook
  or step that failed). Its own failures are logged, never raised: the caller gets the
  original error.

Order: like the layers of an onion. ``before_*`` hooks run in the order the middleware was
added; ``after_attempt``, ``on_chunk``, ``after_response`` and ``on_error`` in the reverse
order, so the first middleware added is the outermost: it sees the request first and the
answer last.

Containment: an exception other than an `LLMError` from any hook becomes a `ProviderError`
for that call (``details["reason"] == "middleware_failed"``, the exception chained as its
``__cause__``); the call is settled as an error, its reservation and lease are given back,
and no actor is touched. Cancellation is the caller's: a cancelled call runs no more hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, final

from .._ids import new_id
from .._secrets import redact
from ..errors import LLMError, ProviderError
from ..types import Request, Response, StreamChunk

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["CallInfo", "Middleware", "MiddlewareChain", "middleware_failed"]

log = logging.getLogger("llm_invocation.invocation")

MIDDLEWARE_FAILED: Final = "middleware_failed"
_HOOKS: Final = (
    "before_request",
    "before_attempt",
    "after_attempt",
    "on_chunk",
    "after_response",
    "on_error",
)


@final
class CallInfo:
    """What a hook knows about the invocation it runs for (made by the client, one per
    invocation).

    Attributes:
        id: a local id of the invocation (the same in every hook it runs, and the ``id``
            of its audit record).
        request: the request (as the ``before_request`` hooks so far left it).
        step: the step of the tool loop this invocation is (from 0), None outside a loop.
        state: a scratch dict for middleware to keep per-invocation data in (timings, spans);
            key it by something of your own.
        cached: the answer came from the response cache (nothing was sent).
    """

    __slots__ = ("_final", "_run", "cached", "id", "request", "state", "step")

    def __init__(
        self, request: Request, *, step: int | None = None, run: Run | None = None
    ) -> None:
        self.id = new_id()
        self.request = request
        self.step = step
        self.state: dict[str, Any] = {}
        self.cached = False
        self._run = run  # the invocation layer's: provider, model and attempts come from it
        self._final: tuple[str, str, int, list[str]] | None = None  # once it ended

    def ended(self, provider: str, model: str, attempt: int, attempted: list[str]) -> None:
        """The invocation ended: keep what it ended with, and let go of its run (which
        refers to this object: no cycle is left for the garbage collector)."""
        self._final = (provider, model, attempt, list(attempted))
        self._run = None

    @property
    def provider(self) -> str:
        """The provider serving the invocation now (a fallback once one took over)."""
        if self._run is not None:
            return self._run.provider
        return self._final[0] if self._final is not None else (self.request.provider or "")

    @property
    def model(self) -> str:
        """The model serving the invocation now."""
        if self._run is not None:
            return self._run.model
        return self._final[1] if self._final is not None else self.request.model

    @property
    def attempt(self) -> int:
        """The number of the current attempt on the current provider (from 1; 0 before)."""
        if self._run is not None:
            return self._run.attempt
        return self._final[2] if self._final is not None else 0

    @property
    def attempted(self) -> list[str]:
        """The ``provider:model`` candidates tried so far, in order."""
        if self._run is not None:
            return list(self._run.attempted)
        return list(self._final[3]) if self._final is not None else []

    @property
    def streamed(self) -> bool:
        """Whether the answer is streamed (``request.stream``)."""
        return self.request.stream

    def __repr__(self) -> str:
        return f"<CallInfo {self.id} {self.provider}:{self.model} attempt {self.attempt}>"


class Middleware:
    """Hooks around a client's invocations: override the ones you need (see the module).

    Every hook is async and a no-op here. ``name`` (the class name by default) names the
    middleware in errors.
    """

    @property
    def name(self) -> str:
        return type(self).__name__

    async def before_request(self, call: CallInfo, request: Request) -> Request | None:
        """Before the invocation: return a changed request (None keeps it).

        Raises:
            LLMError: to veto the request (the caller gets this error; nothing is sent).
        """
        return None

    async def before_attempt(self, call: CallInfo) -> None:
        """Before each HTTP attempt (``call.provider``, ``call.model``, ``call.attempt``).

        Raises:
            LLMError: to refuse the attempt (a fallback may take over, as for a rate limit).
        """

    async def after_attempt(self, call: CallInfo, error: LLMError | None) -> None:
        """After each HTTP attempt: ``error`` is its failure, None when it succeeded."""

    async def on_chunk(self, call: CallInfo, chunk: StreamChunk) -> None:
        """Each chunk, before the caller receives it."""

    async def after_response(self, call: CallInfo, response: Response) -> None:
        """The whole response, once settled (its usage carries the cost)."""

    async def on_error(self, call: CallInfo, error: LLMError) -> None:
        """The invocation failed with ``error`` (not called for the caller's cancellation)."""


def _name(middleware: Middleware) -> str:
    try:
        name = middleware.name
    except Exception:  # noqa: BLE001 - a broken name property must not break the error
        name = None
    return name if isinstance(name, str) and name else type(middleware).__name__


def middleware_failed(middleware: Middleware, hook: str, exc: Exception) -> ProviderError:
    """The typed error of a hook that raised ``exc``, which is not an `LLMError`."""
    name = _name(middleware)
    text = redact(str(exc))[:200]
    error = ProviderError(
        f"middleware {name!r} failed in {hook}: {type(exc).__name__}"
        + (f": {text}" if text else ""),
        details={
            "reason": MIDDLEWARE_FAILED,
            "middleware": name,
            "hook": hook,
            "exception": type(exc).__name__,
        },
    )
    error.__cause__ = exc
    return error


def _vetoed(middleware: Middleware, error: LLMError) -> None:
    error.details.setdefault("middleware", _name(middleware))


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook, None) is not getattr(Middleware, hook)


@final
class MiddlewareChain:
    """A client's middleware, in order, with the hooks each overrides (immutable: adding
    or removing middleware makes a new chain, so invocations in flight keep theirs)."""

    __slots__ = (
        "after_attempt_hooks",
        "after_response_hooks",
        "before_attempt_hooks",
        "before_request_hooks",
        "items",
        "on_chunk_hooks",
        "on_error_hooks",
    )

    def __init__(self, items: Sequence[Middleware] = ()) -> None:
        """Raises: TypeError (an item is not a `Middleware`), ValueError (one is twice)."""
        for index, item in enumerate(items):
            if not isinstance(item, Middleware):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(
                    f"middleware must be llm_invocation.Middleware instances, got {item!r}"
                )
            if any(other is item for other in items[:index]):
                raise ValueError(f"middleware {_name(item)!r} is given twice")
        self.items: tuple[Middleware, ...] = tuple(items)
        ordered = self.items
        reverse = tuple(reversed(ordered))
        self.before_request_hooks = tuple(m for m in ordered if _overrides(m, _HOOKS[0]))
        self.before_attempt_hooks = tuple(m for m in ordered if _overrides(m, _HOOKS[1]))
        self.after_attempt_hooks = tuple(m for m in reverse if _overrides(m, _HOOKS[2]))
        self.on_chunk_hooks = tuple(m for m in reverse if _overrides(m, _HOOKS[3]))
        self.after_response_hooks = tuple(m for m in reverse if _overrides(m, _HOOKS[4]))
        self.on_error_hooks = tuple(m for m in reverse if _overrides(m, _HOOKS[5]))

    def __len__(self) -> int:
        return len(self.items)

    def added(self, middleware: Middleware) -> MiddlewareChain:
        """This chain with ``middleware`` added last (innermost).

        Raises:
            TypeError: ``middleware`` is not a `Middleware`.
            ValueError: it was added already.
        """
        if any(item is middleware for item in self.items):
            raise ValueError(f"middleware {_name(middleware)!r} was added already")
        return MiddlewareChain((*self.items, middleware))

    def removed(self, middleware: Middleware) -> MiddlewareChain:
        """This chain without ``middleware``.

        Raises:
            ValueError: it is not in the chain.
        """
        kept = tuple(item for item in self.items if item is not middleware)
        if len(kept) == len(self.items):
            raise ValueError(f"middleware {_name(middleware)!r} is not added")
        return MiddlewareChain(kept)

    # -- running the hooks ---------------------------------------------------------------------

    async def before_request(self, call: CallInfo, request: Request) -> Request:
        """Run the ``before_request`` hooks; returns the request as they left it.

        Raises:
            LLMError: a hook vetoed the request (``details["middleware"]`` names it), or
                failed (`ProviderError`, ``details["reason"] == "middleware_failed"``).
        """
        for middleware in self.before_request_hooks:
            try:
                result = await middleware.before_request(call, request)
            except LLMError as error:
                _vetoed(middleware, error)
                raise
            except Exception as exc:
                raise middleware_failed(middleware, "before_request", exc) from exc
            if result is None:
                continue
            if not isinstance(result, Request):  # pyright: ignore[reportUnnecessaryIsInstance]
                bad = TypeError(f"returned {type(result).__name__}, not a Request or None")
                raise middleware_failed(middleware, "before_request", bad)
            request = call.request = result
        return request

    async def before_attempt(self, call: CallInfo) -> None:
        """Run the ``before_attempt`` hooks.

        Raises:
            LLMError: a hook refused the attempt, or failed (see `before_request`).
        """
        for middleware in self.before_attempt_hooks:
            try:
                await middleware.before_attempt(call)
            except LLMError as error:
                _vetoed(middleware, error)
                raise
            except Exception as exc:
                raise middleware_failed(middleware, "before_attempt", exc) from exc

    async def after_attempt(self, call: CallInfo, error: LLMError | None) -> None:
        """Run the ``after_attempt`` hooks (reverse order).

        Raises:
            LLMError: a hook raised one, or failed (see `before_request`).
        """
        for middleware in self.after_attempt_hooks:
            try:
                await middleware.after_attempt(call, error)
            except LLMError:
                raise
            except Exception as exc:
                raise middleware_failed(middleware, "after_attempt", exc) from exc

    async def on_chunk(self, call: CallInfo, chunk: StreamChunk) -> None:
        """Run the ``on_chunk`` hooks (reverse order).

        Raises:
            LLMError: a hook raised one, or failed (see `before_request`).
        """
        for middleware in self.on_chunk_hooks:
            try:
                await middleware.on_chunk(call, chunk)
            except LLMError:
                raise
            except Exception as exc:
                raise middleware_failed(middleware, "on_chunk", exc) from exc

    async def after_response(self, call: CallInfo, response: Response) -> None:
        """Run the ``after_response`` hooks (reverse order).

        Raises:
            LLMError: a hook raised one, or failed (see `before_request`).
        """
        for middleware in self.after_response_hooks:
            try:
                await middleware.after_response(call, response)
            except LLMError:
                raise
            except Exception as exc:
                raise middleware_failed(middleware, "after_response", exc) from exc

    async def on_error(self, call: CallInfo, error: LLMError) -> None:
        """Run the ``on_error`` hooks (reverse order); a hook that fails is logged and the
        next one still runs (the caller gets ``error`` whatever they do)."""
        for middleware in self.on_error_hooks:
            try:
                await middleware.on_error(call, error)
            except Exception as exc:  # noqa: BLE001 - the caller's error wins; logged here
                log.warning(
                    "middleware %r failed in on_error (%s: %s); the call's own error stands",
                    _name(middleware),
                    type(exc).__name__,
                    redact(str(exc))[:200],
                )


EMPTY_CHAIN: Final = MiddlewareChain()
