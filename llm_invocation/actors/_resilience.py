"""Retry delays and the circuit breaker of a provider session (its API keys: `_keys`)."""

from __future__ import annotations

import random
from typing import Literal, final

import trio

from ..errors import (
    InvocationTimeout,
    LLMError,
    ProviderError,
    ProviderOverloaded,
    StreamingFailed,
)

__all__ = ["BreakerState", "CircuitBreaker", "backoff_delay", "counts_against_breaker"]

BreakerState = Literal["closed", "open", "half_open"]


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float,
    jitter: bool,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(maximum, initial * m**n)].

    ``attempt`` is the number of attempts already failed, from 1.
    """
    base = min(maximum, initial * multiplier ** max(0, min(attempt - 1, 64)))
    if not jitter:
        return base
    return (rng or random).uniform(0, base)


def counts_against_breaker(error: LLMError) -> bool:
    """Whether ``error`` says the provider (not the request) is failing."""
    return isinstance(error, ProviderError | InvocationTimeout | StreamingFailed) and (
        error.status is None or error.status >= 500 or isinstance(error, ProviderOverloaded)
    )


@final
class CircuitBreaker:
    """Per provider and model: opens after ``threshold`` consecutive provider failures.

    While open, calls fail at once with `ProviderOverloaded` (``details['circuit'] ==
    'open'``) so a fallback can take over. After ``cooldown`` seconds one probe is let
    through (half-open): its success closes the circuit, its failure opens it again.
    """

    __slots__ = ("_failures", "_opened_at", "_probe", "cooldown", "name", "threshold")

    def __init__(self, name: str, *, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probe = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._probe or trio.current_time() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    @property
    def failures(self) -> int:
        return self._failures

    def before_call(self, provider: str) -> None:
        """Admit a call or refuse it.

        Raises:
            ProviderOverloaded: the circuit is open, or half-open with its probe in flight.
        """
        if self._opened_at is None:
            return
        waited = trio.current_time() - self._opened_at
        if waited >= self.cooldown and not self._probe:
            self._probe = True  # this call is the half-open probe
            return
        retry_after = max(0.0, self.cooldown - waited)
        raise ProviderOverloaded(
            f"circuit open for {self.name} after {self._failures} consecutive failures",
            provider=provider,
            retry_after=retry_after,
            retryable=False,
            details={"circuit": "open", "model": self.name},
        )

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe = False

    def failure(self) -> None:
        self._failures += 1
        if self._probe or self._failures >= self.threshold:
            self._opened_at = trio.current_time()
        self._probe = False

    def release_probe(self) -> None:
        """A probe ended without a verdict (cancelled, or a client-side error)."""
        self._probe = False
