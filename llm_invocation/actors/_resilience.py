"""Retry delays, the circuit breaker and API-key rotation of a provider session."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final, Literal, final

import msgspec
import trio

from .._secrets import Secret
from ..errors import (
    AuthenticationError,
    InvocationTimeout,
    LLMError,
    ProviderError,
    ProviderOverloaded,
    StreamingFailed,
)

__all__ = ["BreakerState", "CircuitBreaker", "KeyRing", "backoff_delay", "counts_against_breaker"]

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


class KeyStatistics(msgspec.Struct, frozen=True, kw_only=True):
    keys: int
    usable: int
    rotations: int


_DISABLE_FOR: Final = 300.0


@final
class KeyRing:
    """Several API keys of one provider: rotate on 429, set aside on 401 for a while."""

    __slots__ = ("_disabled_until", "_index", "_keys", "rotations")

    def __init__(self, keys: Sequence[Secret]) -> None:
        self._keys = list(keys)
        self._index = 0
        self._disabled_until = [0.0] * len(self._keys)
        self.rotations = 0

    def __len__(self) -> int:
        return len(self._keys)

    def current(self) -> Secret | None:
        """The key to use now (None when the provider needs no key).

        Raises:
            AuthenticationError: every key was rejected recently.
        """
        if not self._keys:
            return None
        now = trio.current_time()
        for step in range(len(self._keys)):
            index = (self._index + step) % len(self._keys)
            if self._disabled_until[index] <= now:
                self._index = index
                return self._keys[index]
        raise AuthenticationError(
            f"all {len(self._keys)} API keys were rejected in the last {_DISABLE_FOR:g}s"
        )

    def rotate(self, key: Secret | None) -> bool:
        """Move past ``key`` (after a 429); return whether another key is available."""
        if key is None or len(self._keys) < 2:
            return False
        if self._keys[self._index] is key:
            self._index = (self._index + 1) % len(self._keys)
            self.rotations += 1
        return True

    def reject(self, key: Secret | None) -> bool:
        """Set ``key`` aside after a 401; return whether another key is usable."""
        if key is None:
            return False
        for index, candidate in enumerate(self._keys):
            if candidate is key:
                self._disabled_until[index] = trio.current_time() + _DISABLE_FOR
        self.rotations += 1
        now = trio.current_time()
        return any(until <= now for until in self._disabled_until)

    def statistics(self) -> KeyStatistics:
        now = trio.current_time()
        usable = sum(until <= now for until in self._disabled_until)
        return KeyStatistics(keys=len(self._keys), usable=usable, rotations=self.rotations)
