"""The governor's limits per provider and per model, its bounds (max_wait, max_queue), the
configuration it is built from, and requests that can never fit."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.actors.governor import (
    PROMPT_ALLOWANCE,
    Acquire,
    Governor,
    GovernorStats,
    RateLimitSettings,
    Release,
)
from llm_invocation.errors import ConfigurationError, RateLimited
from llm_invocation.runtime import ActorRef, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.store.memory import MemoryRateStore


@asynccontextmanager
async def running(make: Any) -> AsyncGenerator[ActorRef[Any]]:
    spec = SupervisorSpec(children=[ChildSpec.actor("gov", make)])
    async with open_runtime(spec) as runtime:
        yield runtime.ref("gov", Governor)


def governor(**kwargs: Any) -> Any:
    store = MemoryRateStore()
    return running(lambda: Governor(store, **kwargs))


def configured(**settings: Any) -> Any:
    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    config = llm.Config.unlimited(**{"provider": "mock", "model": "mock", **settings})
    store = MemoryRateStore()
    return running(lambda: Governor.from_config(store, config))


def acquire(provider: str = "p", model: str = "m", tokens: int = 10) -> Acquire:
    return Acquire(provider=provider, model=model, tokens=tokens)


async def refused_after(gov: ActorRef[Any], msg: Acquire) -> tuple[RateLimited, float]:
    started = trio.current_time()
    with pytest.raises(RateLimited) as info:
        await gov.call(msg)
    return info.value, trio.current_time() - started


# -- max_wait ---------------------------------------------------------------------------------


async def test_a_providers_max_wait_bounds_its_callers_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = RateLimitSettings(concurrency=1, max_wait=0.3)
    async with governor(provider_limits={"slow": slow}, max_wait=30) as gov:
        await gov.call(acquire(provider="slow"))
        error, waited = await refused_after(gov, acquire(provider="slow"))
    assert waited == pytest.approx(0.3, abs=0.01)
    assert error.details["reason"] == "concurrency"


async def test_a_models_max_wait_wins_over_its_providers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(
        provider_limits={"p": RateLimitSettings(concurrency=10, max_wait=100)},
        model_limits={"p:m": RateLimitSettings(concurrency=1, max_wait=2)},
    ) as gov:
        await gov.call(acquire(model="m"))
        _, waited = await refused_after(gov, acquire(model="m"))
    assert waited == pytest.approx(2, abs=0.01)


async def test_without_own_settings_the_global_max_wait_applies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(global_limits=RateLimitSettings(concurrency=1), max_wait=5) as gov:
        await gov.call(acquire())
        _, waited = await refused_after(gov, acquire(provider="other"))
    assert waited == pytest.approx(5, abs=0.01)


async def test_a_bucket_wait_beyond_the_providers_max_wait_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = {"p": RateLimitSettings(requests_per_minute=1, max_wait=10)}
    async with governor(provider_limits=limits, max_wait=1000) as gov:
        await gov.call(acquire())
        error, waited = await refused_after(gov, acquire())
    assert waited == 0
    assert error.retry_after == pytest.approx(60, abs=0.1)


# -- limits per model -------------------------------------------------------------------------


async def test_a_models_limits_apply_to_that_model_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    models = {"p:m": RateLimitSettings(requests_per_minute=1)}
    async with governor(model_limits=models, max_wait=math.inf) as gov:
        lease = await gov.call(acquire(model="m"))
        assert lease.keys == ["m:p:m"]
        for _ in range(5):
            await gov.call(acquire(model="other"))
        assert trio.current_time() == 0
        await gov.call(acquire(model="m"))
        assert trio.current_time() == pytest.approx(60, abs=0.1)


async def test_model_provider_and_global_limits_all_apply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(
        global_limits=RateLimitSettings(requests_per_minute=600),
        provider_limits={"p": RateLimitSettings(tokens_per_minute=6000)},
        model_limits={"p:m": RateLimitSettings(concurrency=1)},
        max_wait=math.inf,
    ) as gov:
        first = await gov.call(acquire(tokens=100))
        assert first.keys == ["global", "p:p", "m:p:m"]
        got: list[float] = []

        async def second() -> None:
            await gov.call(acquire(tokens=100))
            got.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second)
            await trio.sleep(3)
            await gov.send(Release(lease=first, used=100))
    assert got == [pytest.approx(3, abs=0.01)]  # the model's concurrency held it


# -- max_queue --------------------------------------------------------------------------------


async def test_a_models_max_queue_counts_that_models_waiters_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(
        global_limits=RateLimitSettings(concurrency=1),
        model_limits={"p:m": RateLimitSettings(max_queue=1)},
        max_queue=100,
        max_wait=math.inf,
    ) as gov:
        await gov.call(acquire(model="other"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gov.call, acquire(model="m"))
            for _ in range(3):
                nursery.start_soon(gov.call, acquire(model="other"))
            await trio.testing.wait_all_tasks_blocked()
            error, _ = await refused_after(gov, acquire(model="m"))
            assert error.details == {"reason": "queue_full", "max_queue": 1}
            stats = await gov.call(GovernorStats())
            assert stats.waiting == 4  # the other model's waiters were not refused
            nursery.cancel_scope.cancel()


async def test_the_global_max_queue_counts_every_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with governor(
        global_limits=RateLimitSettings(concurrency=1), max_queue=2, max_wait=math.inf
    ) as gov:
        await gov.call(acquire(model="a"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gov.call, acquire(model="a"))
            nursery.start_soon(gov.call, acquire(model="b"))
            await trio.testing.wait_all_tasks_blocked()
            error, _ = await refused_after(gov, acquire(model="c"))
            assert error.details["reason"] == "queue_full"
            nursery.cancel_scope.cancel()


# -- from the configuration --------------------------------------------------------------------


async def test_from_config_honours_provider_and_model_sections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with configured(
        rate_limits={"max_wait": 60},
        providers={
            "openai": {
                "rate_limits": {"concurrent_calls": 1, "max_wait": 0.3},
                "model_rate_limits": {"gpt-4o": {"requests_per_minute": 1, "max_wait": 5}},
            }
        },
    ) as gov:
        lease = await gov.call(acquire("openai", "gpt-4o-mini"))
        assert lease.keys == ["p:openai", "m:openai:gpt-4o-mini"]
        _, waited = await refused_after(gov, acquire("openai", "gpt-4o-mini"))
        assert waited == pytest.approx(0.3, abs=0.01)
        await gov.send(Release(lease=lease, used=0))
        await gov.call(acquire("openai", "gpt-4o"))
        error, waited = await refused_after(gov, acquire("openai", "gpt-4o"))
        assert waited == 0  # a minute's wait is beyond the model's max_wait of 5 s
        assert (error.details["key"], error.details["reason"]) == ("m:openai:gpt-4o", "requests")


async def test_a_model_section_without_max_wait_inherits_its_providers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A model section that sets only a limit keeps its provider's 0.3 s, not a default 30 s.
    async with configured(
        providers={
            "openai": {
                "rate_limits": {"max_wait": 0.3},
                "model_rate_limits": {"gpt-4o": {"concurrent_calls": 1}},
            }
        },
    ) as gov:
        await gov.call(acquire("openai", "gpt-4o"))
        _, waited = await refused_after(gov, acquire("openai", "gpt-4o"))
    assert waited == pytest.approx(0.3, abs=0.01)


def tpm_config(**settings: Any) -> llm.Config:
    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    return llm.Config.unlimited(**{"provider": "mock", "model": "mock", **settings})


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"rate_limits": {"tokens_per_minute": 1000}}, "rate_limits.tokens_per_minute"),
        (
            {"providers": {"openai": {"rate_limits": {"tokens_per_minute": 4000}}}},
            "providers.openai.rate_limits.tokens_per_minute",
        ),
        (
            {
                "providers": {
                    "openai": {"model_rate_limits": {"gpt-4o": {"tokens_per_minute": 2000}}}
                }
            },
            "providers.openai.model_rate_limits.gpt-4o.tokens_per_minute",
        ),
    ],
)
def test_a_tpm_limit_below_one_calls_reservation_is_a_configuration_error(
    settings: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Governor.from_config(MemoryRateStore(), tpm_config(**settings))
    (problem,) = info.value.problems
    assert problem.path == path
    assert f"at least {4096 + PROMPT_ALLOWANCE}" in problem.message
    assert "cost_control.default_max_tokens" in problem.message
    assert "max_tokens on the requests" in problem.message


def test_a_tpm_limit_that_fits_the_default_max_tokens_is_accepted() -> None:
    config = tpm_config(
        rate_limits={"tokens_per_minute": 1000},
        cost_control={"default_max_tokens": 1000 - PROMPT_ALLOWANCE},
    )
    assert isinstance(Governor.from_config(MemoryRateStore(), config), Governor)


async def test_open_client_fails_on_a_tpm_limit_below_one_call() -> None:
    config = tpm_config(providers={"mock": {"rate_limits": {"tokens_per_minute": 100}}})
    with pytest.raises(ConfigurationError) as info:
        async with llm.open_client(config):
            pytest.fail("the client opened")
    assert [p.path for p in info.value.problems] == ["providers.mock.rate_limits.tokens_per_minute"]


# -- requests that can never fit ----------------------------------------------------------------


async def test_a_request_larger_than_a_tpm_limit_is_refused_at_once_naming_both() -> None:
    async with governor(provider_limits={"p": RateLimitSettings(tokens_per_minute=5000)}) as gov:
        with pytest.raises(RateLimited) as info:
            await gov.call(acquire(tokens=6000))
    error = info.value
    assert not error.retryable
    assert error.details == {"reason": "tokens", "key": "p:p", "tokens": 6000, "limit": 5000}
    assert "6000 tokens" in str(error)
    assert "5000 tokens per minute" in str(error)


async def test_a_request_larger_than_a_learned_tpm_limit_is_refused_at_once() -> None:
    from llm_invocation.actors.governor import Observe
    from llm_invocation.store._base import RateObservation

    async with governor() as gov:
        await gov.send(
            Observe(provider="p", model="m", observation=RateObservation(tokens_limit=1000))
        )
        with pytest.raises(RateLimited) as info:
            await gov.call(acquire(tokens=1500))
    assert not info.value.retryable
    assert (info.value.details["key"], info.value.details["tokens"]) == ("m:p:m", 1500)


async def test_a_lease_id_already_held_is_refused() -> None:
    async with governor() as gov:
        await gov.call(Acquire(provider="p", model="m", tokens=1, lease="mine"))
        with pytest.raises(RateLimited) as info:
            await gov.call(Acquire(provider="p", model="m", tokens=1, lease="mine"))
    assert info.value.details["reason"] == "duplicate_lease"
