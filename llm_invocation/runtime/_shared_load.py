"""A value loaded once per process in a worker thread, shared by every caller and trio run.

Data that is costly to load (a tokenizer's ranks, a price table) should neither delay start-up
nor stall an event loop, nor be loaded twice. A `SharedLoad` holds one such value:

* `SharedLoad.start` begins the load in a worker thread and returns at once (start-up calls
  it and does not wait);
* ``await load.wait()`` returns the value, starting the load if nobody has; every concurrent
  caller, in any trio run or thread, shares the one load in progress, and a cancelled waiter
  leaves it running for the others;
* `SharedLoad.get_blocking` is the same for synchronous code off the event loop;
* a load that fails raises its error to the callers waiting for it (each gets a copy, its
  cause the original), is logged once per run of failures, and is tried again by the next
  use.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast, final

import outcome
import trio

__all__ = ["SharedLoad"]

T = TypeVar("T")


@final
class _Attempt(Generic[T]):
    """One load in progress: who waits for it, and how it ended."""

    __slots__ = ("done", "result", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: outcome.Outcome[T] | None = None
        self.waiters: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []


@final
class SharedLoad(Generic[T]):
    """A value loaded at most once per process (until it is `reset`), in a worker thread.

    Thread-safe: usable from several trio runs and threads at once.

    Args:
        load: makes the value (blocking; runs in a worker thread, or in the thread of a
            `get_blocking` caller). What it raises is what the waiters get.
        name: what is loaded, for the log (``"the o200k_base encoding"``).
        logger: where a failed load is logged (once per run of failures).
    """

    def __init__(self, load: Callable[[], T], *, name: str, logger: logging.Logger) -> None:
        self._load = load
        self._name = name
        self._log = logger
        self._lock = threading.Lock()
        self._loaded = False
        self._value: T | None = None
        self._attempt: _Attempt[T] | None = None
        self._failing = False
        self.loads = 0
        """How many loads were started (a test's way to see that a load was shared)."""

    @property
    def loaded(self) -> bool:
        """Whether the value is loaded (so getting it costs nothing)."""
        return self._loaded

    @property
    def loading(self) -> bool:
        """Whether a load is in progress."""
        return self._attempt is not None

    def start(self) -> None:
        """Start loading in a worker thread unless the value is loaded or loading; never
        blocks, never raises (a failure reaches whoever waits for this load, and the log)."""
        attempt = self._begin()
        if attempt is not None:
            self._spawn(attempt)

    async def wait(self) -> T:
        """Return the value, loading it in a worker thread first if need be.

        Concurrent callers share one load. Cancelling the caller does not stop the load.

        Raises:
            Exception: a copy of what the load raised (the original is its ``__cause__``).
        """
        token = trio.lowlevel.current_trio_token()
        event = trio.Event()
        spawn = False
        with self._lock:
            if self._loaded:
                attempt = None
            else:
                attempt = self._attempt
                if attempt is None:
                    attempt = self._attempt = _Attempt()
                    self.loads += 1
                    spawn = True
                attempt.waiters.append((token, event))
        if attempt is None:
            await trio.lowlevel.checkpoint()
            return cast("T", self._value)  # loaded: the value was set before the flag
        if spawn:
            self._spawn(attempt)
        try:
            await event.wait()
        finally:
            if attempt.result is None:  # cancelled first: the load goes on without us
                with self._lock:
                    if (token, event) in attempt.waiters:
                        attempt.waiters.remove((token, event))
        return self._unwrap(attempt)

    def get_blocking(self) -> T:
        """Return the value, loading it in this thread, or waiting for the load in progress.

        For synchronous callers off the event loop (a worker thread, a script).

        Raises:
            Exception: a copy of what the load raised (the original is its ``__cause__``).
        """
        run_here = False
        with self._lock:
            if self._loaded:
                return cast("T", self._value)
            attempt = self._attempt
            if attempt is None:
                attempt = self._attempt = _Attempt()
                self.loads += 1
                run_here = True
        if run_here:
            self._finish(attempt, outcome.capture(self._load))
        else:
            attempt.done.wait()
        return self._unwrap(attempt)

    def reset(self) -> None:
        """Forget the loaded value (a load in progress completes for its own waiters)."""
        with self._lock:
            self._loaded = False
            self._value = None
            self._attempt = None

    # -- internals ------------------------------------------------------------------------------

    def _begin(self) -> _Attempt[T] | None:
        with self._lock:
            if self._loaded or self._attempt is not None:
                return None
            attempt = self._attempt = _Attempt()
            self.loads += 1
            return attempt

    def _spawn(self, attempt: _Attempt[T]) -> None:
        def deliver(result: outcome.Outcome[T]) -> None:
            self._finish(attempt, result)

        trio.lowlevel.start_thread_soon(self._load, deliver, name=f"load {self._name}")

    def _finish(self, attempt: _Attempt[T], result: outcome.Outcome[T]) -> None:
        failed = isinstance(result, outcome.Error)
        with self._lock:
            attempt.result = result
            current = self._attempt is attempt  # not forgotten by a reset meanwhile
            first_failure = current and failed and not self._failing
            if current:
                self._attempt = None
                self._failing = failed
                if isinstance(result, outcome.Value):
                    self._value = result.value
                    self._loaded = True
            waiters, attempt.waiters = attempt.waiters, []
        attempt.done.set()
        for token, event in waiters:
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass  # that run ended: nobody is left there to wake
        if isinstance(result, outcome.Error):
            level = logging.ERROR if first_failure else logging.DEBUG
            self._log.log(
                level,
                "loading %s failed (%s); the next use tries again",
                self._name,
                result.error,
            )

    @staticmethod
    def _unwrap(attempt: _Attempt[T]) -> T:
        result = attempt.result
        assert result is not None
        if isinstance(result, outcome.Value):
            return result.value
        assert isinstance(result, outcome.Error)
        error: BaseException = result.error
        raise copy.copy(error) from error
