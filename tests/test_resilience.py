"""Backoff and the circuit breaker of provider sessions (their keys: test_key_management)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from llm_invocation.actors._resilience import (
    CircuitBreaker,
    backoff_delay,
    counts_against_breaker,
)
from llm_invocation.errors import (
    AuthenticationError,
    InvalidRequest,
    InvocationTimeout,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
    StreamingFailed,
)


def test_backoff_grows_exponentially_up_to_its_cap_without_jitter() -> None:
    delays = [
        backoff_delay(n, initial=0.5, maximum=4, multiplier=2, jitter=False) for n in range(1, 7)
    ]
    assert delays == [0.5, 1, 2, 4, 4, 4]


def test_full_jitter_draws_between_zero_and_the_exponential_delay() -> None:
    rng = random.Random(3)
    for attempt in range(1, 8):
        cap = min(8.0, 0.5 * 2 ** (attempt - 1))
        draws = [
            backoff_delay(attempt, initial=0.5, maximum=8, multiplier=2, jitter=True, rng=rng)
            for _ in range(200)
        ]
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.8  # the whole range is used
        assert min(draws) < cap * 0.2


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (ProviderError("boom", status=500, retryable=True), True),
        (ProviderOverloaded("busy", status=529), True),
        (InvocationTimeout("slow"), True),
        (StreamingFailed("cut"), True),
        (RateLimited("429", status=429), False),
        (InvalidRequest("bad", status=400), False),
        (AuthenticationError("no", status=401), False),
    ],
)
def test_only_provider_side_failures_count_against_the_breaker(
    error: ProviderError, counts: bool
) -> None:
    assert counts_against_breaker(error) is counts


async def test_the_breaker_opens_after_consecutive_failures_and_probes_after_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("p:m", threshold=3, cooldown=10)
    for _ in range(2):
        breaker.before_call("p")
        breaker.failure()
    assert breaker.state == "closed"
    breaker.before_call("p")
    breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(ProviderOverloaded) as info:
        breaker.before_call("p")
    assert info.value.details["circuit"] == "open"
    assert info.value.retry_after == pytest.approx(10)
    assert not info.value.retryable
    await trio.sleep(10)
    breaker.before_call("p")  # the half-open probe
    assert breaker.state == "half_open"
    with pytest.raises(ProviderOverloaded):
        breaker.before_call("p")  # only one probe at a time
    breaker.success()
    assert breaker.state == "closed"
    breaker.before_call("p")


async def test_a_failed_probe_opens_the_breaker_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("p:m", threshold=1, cooldown=5)
    breaker.failure()
    await trio.sleep(5)
    breaker.before_call("p")
    breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(ProviderOverloaded):
        breaker.before_call("p")


async def test_a_probe_released_without_verdict_lets_the_next_call_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("p:m", threshold=1, cooldown=5)
    breaker.failure()
    await trio.sleep(5)
    breaker.before_call("p")
    breaker.release_probe()
    breaker.before_call("p")  # admitted as the new probe
