"""What only the Redis stores do: scripts, key layout, errors, reports; and the response caches.

The semantics the Redis stores share with the memory stores are in
``tests/test_store_contract.py``.
"""

from __future__ import annotations

import functools
import gc
import secrets
import socket
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import trio

from llm_invocation.store import _redis_lua
from llm_invocation.store._base import (
    Budget,
    RateLimit,
    RateObservation,
    StoreUnavailable,
    Ticket,
    period_id,
)
from llm_invocation.store.cache import (
    MemoryResponseCache,
    RedisResponseCache,
    ResponseCache,
    cache_key,
)
from llm_invocation.store.redis import RedisBudgetStore, RedisRateStore, open_redis_stores
from llm_invocation.types import ModelOptions, Request, ToolSpec, user

from .store_worker import redis_url_or_skip

PASSWORD = "hunter2-s3cr%40t"
PASSWORD_DECODED = "hunter2-s3cr@t"


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(6)}:"


async def run(store: Any, operation: Any) -> Any:
    """A raw coredis command through a store's connection (for inspecting Redis)."""
    return await store._conn.run("test", operation)


async def keys_under(store: Any, prefix: str) -> dict[str, int]:
    """Every key containing ``prefix``, with its PTTL in milliseconds."""
    script = (
        "local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
        "out[#out + 1] = k; out[#out + 1] = redis.call('PTTL', k) end return out"
    )
    flat = await run(store, lambda client: client.eval(script, [], [f"*{prefix}*"]))
    return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}


async def delete_under(store: Any, prefix: str) -> None:
    script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
    await run(store, lambda client: client.eval(script, [], [f"*{prefix}*"]))


@pytest.fixture
async def redis_stores(
    redis_url: str, prefix: str
) -> AsyncIterator[tuple[RedisRateStore, RedisBudgetStore]]:
    async with open_redis_stores(redis_url, prefix=prefix) as (rate, budget):
        try:
            yield rate, budget
        finally:
            await delete_under(rate, prefix)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_password(url: str, password: str, user: str = "") -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{password}@{host}").geturl()


# coredis (6.9) makes a connection's anyio memory streams before it connects and closes them
# only once connected: every failed connection attempt leaves them to the garbage collector,
# which warns. Tests that make connections fail ignore that warning and collect the garbage
# before they end, so it cannot surface in a later test.
tolerates_failed_connections = pytest.mark.filterwarnings(
    r"ignore:Unclosed <MemoryObject(Send|Receive)Stream:ResourceWarning"
)


def leaks(exc: BaseException) -> bool:
    text = "".join(traceback.format_exception(exc))
    return PASSWORD in text or PASSWORD_DECODED in text


# -- scripts --------------------------------------------------------------------------------


@pytest.mark.redis
async def test_scripts_are_loaded_again_after_script_flush(
    redis_stores: tuple[RedisRateStore, RedisBudgetStore],
) -> None:
    rate, budget = redis_stores
    limit = RateLimit(key="k", requests_per_minute=60)
    started = time.monotonic()
    assert (await rate.acquire([limit], lease="l1", tokens=0, ttl=10)).granted
    await run(rate, lambda client: client.script_flush())
    assert (await rate.acquire([limit], lease="l2", tokens=0, ttl=10)).granted
    assert (
        await budget.reserve(
            [Budget(scope="g", limit=Decimal(1))], reservation="r", amount=Decimal("0.1"), ttl=10
        )
    ).ok
    requests = (await rate.levels(limit))["requests"]
    # Two taken; the bucket refills one a second while the test runs.
    assert 58 - 1e-6 <= requests <= 58 + (time.monotonic() - started) + 0.01


@pytest.mark.redis
async def test_calendar_ids_in_lua_agree_with_period_id(
    redis_stores: tuple[RedisRateStore, RedisBudgetStore],
) -> None:
    rate, _ = redis_stores
    prelude = _redis_lua._BUDGET  # pyright: ignore[reportPrivateUsage]
    script = (
        f"local HEAD = 0\n{prelude}\nlocal out = {{}} for i = 2, #ARGV do "
        "out[#out + 1] = calendar_id(ARGV[1], tonumber(ARGV[i])) end return out"
    )
    moments: list[float] = []
    for year in range(1999, 2042):
        for day in (datetime(year, 12, 27, tzinfo=UTC) + timedelta(days=n) for n in range(9)):
            moments += [day.timestamp(), day.timestamp() + 86_399.999999]
    moments += [datetime(2024, 2, 29, 12, tzinfo=UTC).timestamp(), 0.0, time.time()]
    for calendar in ("day", "week", "month"):
        ids = await run(
            rate, lambda client, c=calendar: client.eval(script, [], [c, *map(repr, moments)])
        )
        assert [i.decode() for i in ids] == [period_id(calendar, m, 0) for m in moments]


# -- keys -------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_every_key_shares_the_prefix_hash_tag_and_expires(
    redis_stores: tuple[RedisRateStore, RedisBudgetStore], prefix: str
) -> None:
    rate, budget = redis_stores
    limit = RateLimit(key="openai", requests_per_minute=60, concurrency=4)
    rolling = Budget(scope="global", limit=Decimal(5))
    monthly = Budget(scope="global", limit=Decimal(50), calendar="month")
    await rate.acquire([limit], lease="l1", tokens=10, ttl=30)
    await rate.observe(limit, RateObservation(retry_after=5))
    await budget.reserve([rolling, monthly], reservation="r1", amount=Decimal("0.5"), ttl=30)
    await budget.reserve([rolling, monthly], reservation="r2", amount=Decimal("0.5"), ttl=30)
    levels = await budget.settle([rolling, monthly], reservation="r1", actual=Decimal("0.2"))
    await budget.claim_alert("global", 0.8, levels[1].period_id, 3600)
    keys = await keys_under(rate, prefix)
    tag = "{" + prefix + "}"
    today = (await budget.levels([Budget(scope="g", limit=Decimal(1), calendar="day")]))[0]
    assert set(keys) == {
        f"{tag}rate:openai",
        f"{tag}lease:openai",
        f"{tag}budget:rolling:86400.0:global",
        f"{tag}reservations:rolling:86400.0:global",
        f"{tag}reserved:rolling:86400.0:global",
        f"{tag}budget:month:86400.0:global",
        f"{tag}reservations:month:86400.0:global",
        f"{tag}reserved:month:86400.0:global",
        f"{tag}spend:{today.period_id}",
        f"{tag}alert:global:0.8:{levels[1].period_id}",
    }
    assert all(ttl > 0 for ttl in keys.values()), keys


@pytest.mark.redis
async def test_a_waiters_ticket_lives_under_the_hash_tag_and_expires(
    redis_stores: tuple[RedisRateStore, RedisBudgetStore], prefix: str
) -> None:
    rate, _ = redis_stores
    limit = RateLimit(key="openai", concurrency=1)
    await rate.acquire([limit], lease="l1", tokens=0, ttl=30)
    await rate.acquire([limit], lease="l2", tokens=0, ttl=30, ticket=Ticket(ttl=3))
    keys = await keys_under(rate, prefix)
    tag = "{" + prefix + "}"
    assert 0 < keys[f"{tag}wait:openai"] <= 4_000
    await rate.leave([limit], lease="l2")
    assert f"{tag}wait:openai" not in await keys_under(rate, prefix)


@pytest.mark.redis
async def test_settling_every_reservation_leaves_no_reservation_keys(
    redis_stores: tuple[RedisRateStore, RedisBudgetStore], prefix: str
) -> None:
    rate, budget = redis_stores
    limit = RateLimit(key="k", concurrency=2)
    scope = Budget(scope="s", limit=Decimal(1))
    await rate.acquire([limit], lease="l1", tokens=0, ttl=30)
    await rate.settle([limit], lease="l1", reserved=0, used=0)
    await budget.reserve([scope], reservation="r1", amount=Decimal("0.5"), ttl=30)
    await budget.settle([scope], reservation="r1", actual=Decimal(0))
    names = set(await keys_under(rate, prefix))
    assert not any(":lease:" in n or ":reservations:" in n or ":reserved:" in n for n in names)


@pytest.mark.redis
async def test_an_expired_reservation_is_subtracted_when_pruned(
    redis_stores: tuple[RedisRateStore, RedisBudgetStore], prefix: str
) -> None:
    _, budget = redis_stores
    scope = Budget(scope="s", limit=Decimal(1))
    await budget.reserve([scope], reservation="gone", amount=Decimal("0.7"), ttl=0.05)
    await budget.reserve([scope], reservation="kept", amount=Decimal("0.2"), ttl=30)
    await trio.sleep(0.1)
    check = await budget.reserve([scope], reservation="new", amount=Decimal("0.9"), ttl=30)
    assert (check.ok, check.reserved) == (False, Decimal("0.2"))
    tag = "{" + prefix + "}"
    amounts = await run(budget, lambda client: client.hgetall(f"{tag}reserved:rolling:86400.0:s"))
    assert amounts == {b"r:kept": b"200000000", b"total": b"200000000"}


# -- spend report -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_spend_report_sums_every_process_per_scope(redis_url: str, prefix: str) -> None:
    team = Budget(scope="tag:team=search", limit=Decimal(10))
    everyone = Budget(scope="global", limit=Decimal(100))
    monthly = Budget(scope="global", limit=Decimal(100), calendar="month")
    async with open_redis_stores(redis_url, prefix=prefix) as (rate, first):
        async with open_redis_stores(redis_url, prefix=prefix) as (_, second):
            await first.settle([team, everyone, monthly], reservation="a", actual=Decimal("0.10"))
            await second.settle([team, everyone], reservation="b", actual=Decimal("0.25"))
            await second.settle([everyone], reservation="c", actual=Decimal("1.000000001"))
            expected = {"tag:team=search": Decimal("0.35"), "global": Decimal("1.350000001")}
            assert await first.spend_report() == expected
            assert await second.spend_report() == expected
            today = period_id("day", time.time(), 0)
            assert await first.spend_report(today) == expected
            assert await first.spend_report("2000-01-01") == {}
            with pytest.raises(ValueError):
                await first.spend_report("yesterday")
        await delete_under(rate, prefix)


# -- errors ---------------------------------------------------------------------------------


@tolerates_failed_connections
async def test_an_unreachable_redis_raises_store_unavailable_quickly() -> None:
    url = with_password(f"redis://127.0.0.1:{closed_port()}/0", PASSWORD)
    async with open_redis_stores(url, timeout=1.0) as (rate, budget):
        started = trio.current_time()
        with pytest.raises(StoreUnavailable) as caught:
            await rate.acquire([RateLimit(key="k", concurrency=1)], lease="l", tokens=0, ttl=1)
        with pytest.raises(StoreUnavailable):
            await budget.levels([Budget(scope="g", limit=Decimal(1))])
        assert trio.current_time() - started < 1.0
    assert caught.value.__cause__ is not None
    assert "127.0.0.1" in str(caught.value)
    assert not leaks(caught.value)
    gc.collect()


@tolerates_failed_connections
async def test_a_silent_redis_times_out_with_store_unavailable() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            while await stream.receive_some():
                pass

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, host="127.0.0.1"), silent, 0
        )
        port = listener.socket.getsockname()[1]
        async with open_redis_stores(f"redis://127.0.0.1:{port}/0", timeout=0.2) as (rate, _):
            started = trio.current_time()
            with pytest.raises(StoreUnavailable):
                await rate.levels(RateLimit(key="k"))
            assert trio.current_time() - started < 1.0
        nursery.cancel_scope.cancel()
    gc.collect()


async def test_the_password_is_never_in_reprs() -> None:
    url = with_password("redis://127.0.0.1:6379/0", PASSWORD)
    in_query = f"redis://127.0.0.1:6379/0?password={PASSWORD}"
    for thing in (
        RedisRateStore(url),
        RedisBudgetStore(url),
        RedisResponseCache(url),
        RedisRateStore(in_query),
    ):
        assert "***" in repr(thing)
        assert PASSWORD not in repr(thing)
        assert PASSWORD_DECODED not in repr(thing)


def test_a_bad_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError) as caught:
        RedisRateStore(with_password("http://example.com/0", PASSWORD))
    assert not leaks(caught.value)
    with pytest.raises(ValueError, match="prefix"):
        RedisRateStore("redis://127.0.0.1:6379/0", prefix="")
    with pytest.raises(ValueError, match="timeout"):
        RedisBudgetStore("redis://127.0.0.1:6379/0", timeout=0)


@pytest.mark.redis
@tolerates_failed_connections
async def test_a_wrong_password_is_store_unavailable_without_the_password(redis_url: str) -> None:
    # A user that does not exist: a server whose default user has no password accepts any.
    url = with_password(redis_url, PASSWORD, user=f"nobody-{secrets.token_hex(4)}")
    async with open_redis_stores(url) as (rate, _):
        with pytest.raises(StoreUnavailable) as caught:
            await rate.levels(RateLimit(key="k"))
    assert not leaks(caught.value)
    gc.collect()


async def test_a_closed_store_raises_store_unavailable() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    async with open_redis_stores(url) as (rate, budget):
        await rate.aclose()
        with pytest.raises(StoreUnavailable, match="closed"):
            await rate.levels(RateLimit(key="k"))
        await budget.aclose()
        with pytest.raises(StoreUnavailable, match="closed"):
            await budget.claim_alert("g", 0.5, "p", 1)
    with pytest.raises(StoreUnavailable, match="not open"):
        await RedisRateStore(url).levels(RateLimit(key="k"))


async def test_an_exception_from_the_block_comes_out_unwrapped() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    with pytest.raises(KeyError):
        async with open_redis_stores(url):
            raise KeyError("mine")
    with pytest.raises(KeyError):
        async with RedisRateStore(url):
            raise KeyError("mine")


# -- one process, many tasks --------------------------------------------------------------------


@pytest.mark.redis
async def test_a_store_opened_alone_works(redis_url: str, prefix: str) -> None:
    async with RedisRateStore(redis_url, prefix=prefix) as rate:
        assert (
            await rate.acquire([RateLimit(key="k", concurrency=1)], lease="l", tokens=0, ttl=10)
        ).granted
        await delete_under(rate, prefix)


@pytest.mark.redis
async def test_concurrent_acquires_never_take_more_than_the_capacity(
    redis_stores: tuple[RedisRateStore, RedisBudgetStore],
) -> None:
    rate, budget = redis_stores
    limit = RateLimit(key="k", requests_per_minute=50, tokens_per_minute=5_000)
    spend = Budget(scope="s", limit=Decimal("0.30"))
    granted: list[str] = []
    admitted: list[str] = []

    async def one(number: int) -> None:
        lease = f"l{number}"
        if (await rate.acquire([limit], lease=lease, tokens=100, ttl=10)).granted:
            granted.append(lease)
        if (await budget.reserve([spend], reservation=lease, amount=Decimal("0.01"), ttl=10)).ok:
            admitted.append(lease)

    async with trio.open_nursery() as nursery:
        for number in range(120):
            nursery.start_soon(one, number)
    assert len(granted) == 50
    assert len(admitted) == 30


# -- response caches ----------------------------------------------------------------------------


class CacheHarness:
    def __init__(self, cache: ResponseCache, advance: Any) -> None:
        self.cache = cache
        self.advance = advance


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def caches(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[CacheHarness]:
    if request.param == "memory":
        clock = [0.0]

        async def advance(seconds: float) -> None:
            clock[0] += seconds
            await trio.lowlevel.checkpoint()

        yield CacheHarness(MemoryResponseCache(clock=lambda: clock[0]), advance)
        return
    async with RedisResponseCache(redis_url_or_skip(), prefix=prefix) as cache:
        try:
            yield CacheHarness(cache, trio.sleep)
        finally:
            await delete_under(cache, prefix)


async def test_a_cached_response_is_found_until_its_ttl_passes(caches: CacheHarness) -> None:
    await caches.cache.set("k", b"\x00answer", ttl=0.15)
    assert await caches.cache.get("k") == b"\x00answer"
    await caches.advance(0.2)
    assert await caches.cache.get("k") is None


async def test_an_unknown_key_misses(caches: CacheHarness) -> None:
    assert await caches.cache.get("never-set") is None


async def test_a_ttl_of_zero_removes_the_entry(caches: CacheHarness) -> None:
    await caches.cache.set("k", b"old", ttl=10)
    await caches.cache.set("k", b"new", ttl=0)
    assert await caches.cache.get("k") is None


async def test_setting_a_key_again_replaces_the_value(caches: CacheHarness) -> None:
    await caches.cache.set("k", b"one", ttl=10)
    await caches.cache.set("k", b"two", ttl=10)
    assert await caches.cache.get("k") == b"two"


async def test_the_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryResponseCache(max_entries=2)
    await cache.set("a", b"1", ttl=60)
    await cache.set("b", b"2", ttl=60)
    assert await cache.get("a") == b"1"  # "b" is now the least recently used
    await cache.set("c", b"3", ttl=60)
    assert (await cache.get("a"), await cache.get("b"), await cache.get("c")) == (b"1", None, b"3")
    assert len(cache) == 2


@pytest.mark.redis
async def test_the_redis_cache_keys_are_under_the_prefix(redis_url: str, prefix: str) -> None:
    async with RedisResponseCache(redis_url, prefix=prefix) as cache:
        await cache.set("abc", b"v", ttl=60)
        keys = await keys_under(cache, prefix)
        assert list(keys) == [f"{prefix}cache:abc"]
        assert 0 < keys[f"{prefix}cache:abc"] <= 60_000
        await delete_under(cache, prefix)
        await cache.aclose()
        with pytest.raises(StoreUnavailable, match="closed"):
            await cache.get("abc")


def request(**changes: Any) -> Request:
    fields: dict[str, Any] = {"model": "openai:gpt-4o-mini", "messages": [user("Hi")]}
    fields.update(changes)
    return Request(**fields)


def test_cache_key_ignores_metadata_stream_and_cache() -> None:
    key = cache_key(request())
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert cache_key(request(metadata={"trace": "x"}, stream=False, cache=True)) == key


def test_cache_key_changes_with_what_determines_the_answer() -> None:
    keys = {
        cache_key(request()),
        cache_key(request(messages=[user("Hello")])),
        cache_key(request(options=ModelOptions(temperature=0.5))),
        cache_key(request(model="openai:gpt-4o")),
        cache_key(request(provider="azure")),
        cache_key(request(tools=[ToolSpec(name="search")])),
        cache_key(request(tools=[ToolSpec(name="search")], tool_choice="required")),
    }
    assert len(keys) == 7


def test_cache_key_does_not_depend_on_how_options_were_spelled() -> None:
    assert cache_key(request(options=ModelOptions())) == cache_key(request())
    assert cache_key(request(options=ModelOptions(temperature=0.2, max_tokens=5))) == cache_key(
        request(options=ModelOptions(max_tokens=5, temperature=0.2))
    )
