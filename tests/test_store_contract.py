"""One contract for every store: the memory stores and the Redis stores answer alike.

Each test runs against `MemoryRateStore`/`MemoryBudgetStore` (on a fake clock that
`Stores.advance` moves at once) and against `RedisRateStore`/`RedisBudgetStore` (on the
Redis server's clock: `Stores.advance` sleeps for real, so the times here are short and the
comparisons allow for the milliseconds a round trip takes).
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_invocation.store._base import (
    Budget,
    BudgetCheck,
    BudgetStore,
    Calendar,
    RateLimit,
    RateObservation,
    RateStore,
    period_id,
)
from llm_invocation.store.memory import MemoryBudgetStore, MemoryRateStore
from llm_invocation.store.redis import open_redis_stores

from .store_worker import LONG_REDIS_TIMEOUT, redis_url_or_skip


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Stores:
    kind: str
    rate: RateStore
    budget: BudgetStore
    advance: Callable[[float], Awaitable[None]]
    started: float = dataclasses.field(default_factory=time.monotonic)

    def drift(self) -> float:
        """How far the store's clock may have run since the test began: nothing for the
        memory store's fake clock; on Redis, whose scripts read the server's clock, the time
        that passed (plus a little for the two clocks' granularity)."""
        if self.kind == "memory":
            return 0.0
        return time.monotonic() - self.started + 0.005


def refilled(stores: Stores, level: float, expected: float, per_second: float) -> None:
    """``level`` is ``expected`` plus at most what refilled while the store's clock ran."""
    assert expected - 1e-6 <= level <= expected + per_second * stores.drift() + 1e-6


def waits(stores: Stores, wait: float, expected: float) -> None:
    """``wait`` is ``expected`` less at most the time the store's clock ran."""
    assert expected - stores.drift() - 1e-6 <= wait <= expected + 1e-6


async def delete_prefixed(store: object, prefix: str) -> None:
    """Remove every key a Redis store made under ``prefix`` (tests leave nothing behind)."""
    conn = store._conn  # type: ignore[attr-defined]
    script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
    await conn.run("cleanup", lambda client: client.eval(script, [], [f"*{prefix}*"]))


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    if request.param == "memory":
        rate_clock, budget_clock = FakeClock(1_000.0), FakeClock(time.time())

        async def advance(seconds: float) -> None:
            rate_clock.now += seconds
            budget_clock.now += seconds
            await trio.lowlevel.checkpoint()

        yield Stores(
            "memory",
            MemoryRateStore(clock=rate_clock),
            MemoryBudgetStore(clock=budget_clock),
            advance,
        )
        return
    url = redis_url_or_skip()
    prefix = f"test-{secrets.token_hex(6)}:"
    async with open_redis_stores(url, prefix=prefix, timeout=LONG_REDIS_TIMEOUT) as (rate, budget):
        try:
            yield Stores("redis", rate, budget, trio.sleep)
        finally:
            await delete_prefixed(rate, prefix)


# -- rate limits: acquire ---------------------------------------------------------------------


async def test_acquire_takes_one_request_and_the_tokens_from_every_key(stores: Stores) -> None:
    a = RateLimit(key="a", requests_per_minute=60, tokens_per_minute=6_000)
    b = RateLimit(key="b", requests_per_minute=120)
    grant = await stores.rate.acquire([a, b], lease="l1", tokens=100, ttl=10)
    assert (grant.granted, grant.wait, grant.key, grant.reason) == (True, 0.0, None, None)
    level_a, level_b = await stores.rate.levels(a), await stores.rate.levels(b)
    refilled(stores, level_a["requests"], 59, 1)
    refilled(stores, level_a["tokens"], 5_900, 100)
    refilled(stores, level_b["requests"], 119, 2)
    assert level_b["tokens"] == math.inf
    assert level_a["leases"] == level_b["leases"] == 0


async def test_levels_of_an_unknown_key_are_unlimited(stores: Stores) -> None:
    levels = await stores.rate.levels(RateLimit(key="nothing-here"))
    assert levels == {
        "requests": math.inf,
        "tokens": math.inf,
        "leases": 0.0,
        "waiting": 0.0,
        "blocked_for": 0.0,
    }


async def test_a_key_without_limits_always_grants(stores: Stores) -> None:
    free = RateLimit(key="free")
    for number in range(3):
        grant = await stores.rate.acquire([free], lease=f"l{number}", tokens=10**9, ttl=10)
        assert grant.granted


async def test_acquire_takes_nothing_when_one_key_refuses(stores: Stores) -> None:
    a = RateLimit(key="a", requests_per_minute=60)
    b = RateLimit(key="b", tokens_per_minute=600)
    assert (await stores.rate.acquire([b], lease="drain", tokens=600, ttl=10)).granted
    grant = await stores.rate.acquire([a, b], lease="l1", tokens=300, ttl=10)
    assert not grant.granted
    assert (grant.key, grant.reason) == ("b", "tokens")
    waits(stores, grant.wait, 30.0)  # 300 tokens at 10 a second
    assert (await stores.rate.levels(a))["requests"] == 60


async def test_more_tokens_than_a_bucket_holds_never_fit(stores: Stores) -> None:
    limit = RateLimit(key="small", tokens_per_minute=1_000)
    grant = await stores.rate.acquire([limit], lease="l1", tokens=1_001, ttl=10)
    assert (grant.granted, grant.wait, grant.key, grant.reason) == (
        False,
        math.inf,
        "small",
        "tokens",
    )


async def test_the_refusal_names_the_key_with_the_longest_wait(stores: Stores) -> None:
    short = RateLimit(key="short", tokens_per_minute=6_000)  # 100 tokens a second
    long = RateLimit(key="long", tokens_per_minute=600)  # 10 tokens a second
    assert (await stores.rate.acquire([short], lease="l1", tokens=5_950, ttl=10)).granted
    assert (await stores.rate.acquire([long], lease="l2", tokens=600, ttl=10)).granted
    for order in ([short, long], [long, short]):
        grant = await stores.rate.acquire(order, lease="l3", tokens=100, ttl=10)
        assert (grant.granted, grant.key, grant.reason) == (False, "long", "tokens")
        waits(stores, grant.wait, 10)


# -- rate limits: refill -----------------------------------------------------------------------


async def test_tokens_refill_at_capacity_per_minute(stores: Stores) -> None:
    limit = RateLimit(key="t", tokens_per_minute=600)  # 10 tokens a second
    assert (await stores.rate.acquire([limit], lease="l1", tokens=600, ttl=10)).granted
    grant = await stores.rate.acquire([limit], lease="l2", tokens=3, ttl=10)
    assert not grant.granted
    waits(stores, grant.wait, 0.3)
    await stores.advance(0.35)
    assert (await stores.rate.acquire([limit], lease="l2", tokens=3, ttl=10)).granted


async def test_requests_refill_at_capacity_per_minute(stores: Stores) -> None:
    limit = RateLimit(key="r", requests_per_minute=600)  # 10 requests a second
    granted = 0
    while (await stores.rate.acquire([limit], lease=f"l{granted}", tokens=0, ttl=10)).granted:
        granted += 1
        assert granted < 700
    assert granted >= 600
    grant = await stores.rate.acquire([limit], lease="next", tokens=0, ttl=10)
    assert (grant.granted, grant.reason) == (False, "requests")
    assert 0 < grant.wait <= 0.1
    await stores.advance(grant.wait + 0.01)
    assert (await stores.rate.acquire([limit], lease="next", tokens=0, ttl=10)).granted


async def test_settle_gives_back_unused_tokens_and_takes_the_excess(stores: Stores) -> None:
    limit = RateLimit(key="s", tokens_per_minute=6_000)
    await stores.rate.acquire([limit], lease="l1", tokens=1_000, ttl=10)
    await stores.rate.settle([limit], lease="l1", reserved=1_000, used=200)
    refilled(stores, (await stores.rate.levels(limit))["tokens"], 5_800, 100)
    await stores.rate.acquire([limit], lease="l2", tokens=1_000, ttl=10)
    await stores.rate.settle([limit], lease="l2", reserved=1_000, used=1_500)
    refilled(stores, (await stores.rate.levels(limit))["tokens"], 4_300, 100)


async def test_a_refund_never_fills_a_bucket_beyond_its_capacity(stores: Stores) -> None:
    limit = RateLimit(key="cap", tokens_per_minute=1_000)
    await stores.rate.acquire([limit], lease="l1", tokens=100, ttl=10)
    await stores.rate.settle([limit], lease="l1", reserved=5_000, used=0)
    assert (await stores.rate.levels(limit))["tokens"] == 1_000


# -- rate limits: concurrency leases ------------------------------------------------------------


async def test_concurrency_admits_as_many_leases_as_allowed(stores: Stores) -> None:
    limit = RateLimit(key="c", concurrency=2)
    assert (await stores.rate.acquire([limit], lease="l1", tokens=0, ttl=10)).granted
    assert (await stores.rate.acquire([limit], lease="l2", tokens=0, ttl=10)).granted
    grant = await stores.rate.acquire([limit], lease="l3", tokens=0, ttl=10)
    assert (grant.granted, grant.key, grant.reason) == (False, "c", "concurrency")
    assert grant.wait == 0  # it fits as soon as a lease is released: nobody knows when
    assert (await stores.rate.levels(limit))["leases"] == 2


async def test_settle_releases_the_lease(stores: Stores) -> None:
    limit = RateLimit(key="c", concurrency=1)
    assert (await stores.rate.acquire([limit], lease="l1", tokens=0, ttl=10)).granted
    await stores.rate.settle([limit], lease="l1", reserved=0, used=0)
    assert (await stores.rate.levels(limit))["leases"] == 0
    assert (await stores.rate.acquire([limit], lease="l2", tokens=0, ttl=10)).granted


async def test_a_lease_expires_after_its_ttl(stores: Stores) -> None:
    limit = RateLimit(key="c", concurrency=1)
    assert (await stores.rate.acquire([limit], lease="dead", tokens=0, ttl=0.2)).granted
    grant = await stores.rate.acquire([limit], lease="l2", tokens=0, ttl=0.2)
    assert (grant.granted, grant.reason) == (False, "concurrency")
    await stores.advance(0.25)
    assert (await stores.rate.acquire([limit], lease="l2", tokens=0, ttl=0.2)).granted


async def test_renew_keeps_a_lease_past_its_first_ttl(stores: Stores) -> None:
    limit = RateLimit(key="c", concurrency=1)
    assert (await stores.rate.acquire([limit], lease="long", tokens=0, ttl=0.2)).granted
    await stores.rate.renew([limit], lease="long", ttl=1.0)
    await stores.advance(0.25)
    grant = await stores.rate.acquire([limit], lease="l2", tokens=0, ttl=0.2)
    assert (grant.granted, grant.reason) == (False, "concurrency")
    await stores.advance(0.8)  # the renewed lease ends a second after the renewal
    assert (await stores.rate.acquire([limit], lease="l2", tokens=0, ttl=0.2)).granted


async def test_renew_of_an_unknown_lease_adds_nothing(stores: Stores) -> None:
    limit = RateLimit(key="c", concurrency=1)
    await stores.rate.renew([limit], lease="ghost", ttl=10)
    assert (await stores.rate.levels(limit))["leases"] == 0


# -- rate limits: observations ----------------------------------------------------------------


async def test_retry_after_blocks_the_key_until_it_passes(stores: Stores) -> None:
    limit = RateLimit(key="o", requests_per_minute=600)
    await stores.rate.observe(limit, RateObservation(retry_after=0.2))
    waits(stores, (await stores.rate.levels(limit))["blocked_for"], 0.2)
    grant = await stores.rate.acquire([limit], lease="l1", tokens=0, ttl=10)
    assert (grant.granted, grant.key, grant.reason) == (False, "o", "blocked")
    waits(stores, grant.wait, 0.2)
    await stores.advance(0.25)
    assert (await stores.rate.acquire([limit], lease="l1", tokens=0, ttl=10)).granted


async def test_nothing_remaining_blocks_until_the_reset(stores: Stores) -> None:
    limit = RateLimit(key="o")
    await stores.rate.observe(limit, RateObservation(requests_remaining=0, requests_reset=0.2))
    grant = await stores.rate.acquire([limit], lease="l1", tokens=0, ttl=10)
    assert (grant.granted, grant.reason) == (False, "blocked")
    await stores.advance(0.25)
    assert (await stores.rate.acquire([limit], lease="l1", tokens=0, ttl=10)).granted


async def test_observed_limits_tighten_the_configured_ones(stores: Stores) -> None:
    limit = RateLimit(key="o", requests_per_minute=600)
    await stores.rate.observe(limit, RateObservation(requests_limit=60, tokens_limit=1_000))
    levels = await stores.rate.levels(limit)
    assert levels["requests"] == 60
    assert levels["tokens"] == 1_000


async def test_observed_remaining_lowers_the_levels(stores: Stores) -> None:
    limit = RateLimit(key="o", requests_per_minute=600, tokens_per_minute=60_000)
    await stores.rate.observe(limit, RateObservation(requests_remaining=5, tokens_remaining=100))
    levels = await stores.rate.levels(limit)
    refilled(stores, levels["requests"], 5, 10)
    refilled(stores, levels["tokens"], 100, 1_000)


# -- budgets ---------------------------------------------------------------------------------


def dollars(text: str | int) -> Decimal:
    return Decimal(text)


GLOBAL = Budget(scope="global", limit=dollars("1.00"))


async def reserve(
    stores: Stores, reservation: str, amount: str, *, ttl: float = 10, budget: Budget = GLOBAL
) -> BudgetCheck:
    return await stores.budget.reserve(
        [budget], reservation=reservation, amount=dollars(amount), ttl=ttl
    )


async def test_settle_records_the_actual_spend_not_the_reservation(stores: Stores) -> None:
    check = await reserve(stores, "r1", "0.30")
    assert check == BudgetCheck(ok=True)
    assert (await stores.budget.levels([GLOBAL]))[0].spent == 0
    (level,) = await stores.budget.settle([GLOBAL], reservation="r1", actual=dollars("0.25"))
    assert (level.scope, level.spent, level.limit) == ("global", dollars("0.25"), GLOBAL.limit)
    assert level.period_id.startswith("rolling86400s-")
    assert (await stores.budget.levels([GLOBAL]))[0].spent == dollars("0.25")


async def test_reserve_refuses_what_would_exceed_the_limit(stores: Stores) -> None:
    assert (await reserve(stores, "r1", "0.6")).ok
    check = await reserve(stores, "r2", "0.5")
    assert check == BudgetCheck(
        ok=False, scope="global", spent=dollars(0), reserved=dollars("0.6"), limit=dollars("1.00")
    )
    await stores.budget.settle([GLOBAL], reservation="r1", actual=dollars("0.6"))
    assert (await reserve(stores, "r3", "0.4")).ok
    check = await reserve(stores, "r4", "0.000000001")
    assert (check.ok, check.spent, check.reserved) == (False, dollars("0.6"), dollars("0.4"))


async def test_reserve_takes_nothing_when_one_budget_refuses(stores: Stores) -> None:
    provider = Budget(scope="provider:x", limit=dollars("0.10"))
    check = await stores.budget.reserve(
        [GLOBAL, provider], reservation="r1", amount=dollars("0.2"), ttl=10
    )
    assert (check.ok, check.scope, check.limit) == (False, "provider:x", dollars("0.10"))
    assert (await reserve(stores, "r2", "1")).ok


async def test_settle_drops_the_reservation(stores: Stores) -> None:
    assert (await reserve(stores, "r1", "0.9")).ok
    await stores.budget.settle([GLOBAL], reservation="r1", actual=dollars(0))
    assert (await reserve(stores, "r2", "1")).ok


async def test_reserving_the_same_id_again_replaces_it(stores: Stores) -> None:
    assert (await reserve(stores, "r1", "0.4")).ok
    assert (await reserve(stores, "r1", "0.4")).ok
    assert (await reserve(stores, "r2", "0.6")).ok


async def test_a_reservation_expires_after_its_ttl(stores: Stores) -> None:
    assert (await reserve(stores, "dead", "1", ttl=0.2)).ok
    check = await reserve(stores, "r2", "0.01")
    assert (check.ok, check.reserved) == (False, dollars(1))
    await stores.advance(0.25)
    assert (await reserve(stores, "r2", "1")).ok


async def test_spend_leaves_a_rolling_window_after_its_period(stores: Stores) -> None:
    window = Budget(scope="w", limit=dollars(1), period=1.0)
    (level,) = await stores.budget.settle([window], reservation="none", actual=dollars("0.5"))
    assert level.spent == dollars("0.5")
    refused = await reserve(stores, "r1", "0.6", budget=window)
    assert (refused.ok, refused.spent) == (False, dollars("0.5"))
    await stores.advance(1.05)
    assert (await stores.budget.levels([window]))[0].spent == 0
    assert (await reserve(stores, "r1", "0.6", budget=window)).ok


async def test_calendar_periods_count_per_utc_period(stores: Stores) -> None:
    day = Budget(scope="team", limit=dollars(10), calendar="day")
    week = Budget(scope="team", limit=dollars(10), calendar="week")
    month = Budget(scope="team", limit=dollars(10), calendar="month")
    rolling = Budget(scope="team", limit=dollars(10))
    levels = await stores.budget.settle([day, month], reservation="none", actual=dollars("1.5"))
    now = time.time()
    assert [(lv.spent, lv.period_id) for lv in levels] == [
        (dollars("1.5"), period_id("day", now, 0)),
        (dollars("1.5"), period_id("month", now, 0)),
    ]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", levels[0].period_id)
    assert re.fullmatch(r"\d{4}-\d{2}", levels[1].period_id)
    week_level, rolling_level = await stores.budget.levels([week, rolling])
    assert (week_level.spent, rolling_level.spent) == (0, 0)
    assert week_level.period_id == period_id("week", now, 0)
    assert re.fullmatch(r"\d{4}-W\d{2}", week_level.period_id)


async def test_budgets_of_one_scope_and_different_windows_are_separate(stores: Stores) -> None:
    daily = Budget(scope="global", limit=dollars(1), period=86_400)
    hourly = Budget(scope="global", limit=dollars("0.1"), period=3_600)
    await stores.budget.settle([daily], reservation="none", actual=dollars("0.5"))
    daily_level, hourly_level = await stores.budget.levels([daily, hourly])
    assert (daily_level.spent, hourly_level.spent) == (dollars("0.5"), 0)


async def test_claim_alert_answers_true_once_per_scope_threshold_and_period(stores: Stores) -> None:
    claim = stores.budget.claim_alert
    assert await claim("global", 0.8, "2025-01-01", 60)
    assert not await claim("global", 0.8, "2025-01-01", 60)
    assert await claim("global", 0.9, "2025-01-01", 60)
    assert await claim("global", 0.8, "2025-01-02", 60)
    assert await claim("provider:x", 0.8, "2025-01-01", 60)


async def test_claim_alert_rearms_after_its_ttl(stores: Stores) -> None:
    assert await stores.budget.claim_alert("global", 0.5, "p", 0.2)
    assert not await stores.budget.claim_alert("global", 0.5, "p", 0.2)
    await stores.advance(0.25)
    assert await stores.budget.claim_alert("global", 0.5, "p", 0.2)


def _period_by_date(calendar: str, now: float, period: float) -> str:
    """What a period is named, worked out from the date every time (the reference)."""
    when = datetime.fromtimestamp(now, UTC)
    if calendar == "day":
        return when.strftime("%Y-%m-%d")
    if calendar == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    if calendar == "month":
        return when.strftime("%Y-%m")
    return f"rolling{period:g}s-{int(now // period)}"


@settings(max_examples=2000, deadline=None)
@given(
    calendar=st.sampled_from(["rolling", "day", "week", "month"]),
    day=st.integers(min_value=0, max_value=4 * 10**9 // 86400),
    into=st.one_of(
        st.floats(min_value=0, max_value=86399.999, allow_nan=False),
        st.sampled_from([0.0, 1e-6, 86399.999999]),
    ),
    period=st.sampled_from([0.5, 60.0, 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0]),
)
def test_a_period_is_named_as_its_date_says_at_any_time(
    calendar: Calendar, day: int, into: float, period: float
) -> None:
    now = day * 86400.0 + into
    assert period_id(calendar, now, period) == _period_by_date(calendar, now, period)
    assert period_id(calendar, now, period) == _period_by_date(calendar, now, period)  # kept
