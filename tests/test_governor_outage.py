"""A Redis outage, as the governor and the stores live it: one ERROR per outage per store
connection and one INFO when Redis is back, both naming the fail mode; the fail mode applies
to every call meanwhile, and the governor only counts the errors.

Redis is reached through a local TCP relay the tests can cut (every connection closed, new
ones refused) and restore.
"""

from __future__ import annotations

import gc
import logging
import secrets
import urllib.parse
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import trio

from llm_invocation.actors.governor import Acquire, Governor, GovernorStats, RateLimitSettings
from llm_invocation.errors import RateLimited
from llm_invocation.runtime import ActorRef, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.store._base import Budget, RateLimit, StoreUnavailable
from llm_invocation.store.redis import RedisBudgetStore, RedisRateStore, open_redis_stores

from .store_worker import redis_url_or_skip

pytestmark = [
    pytest.mark.redis,
    # coredis leaves the streams of a failed connection attempt to the garbage collector
    # (see tests/test_store_redis.py); the tests collect them before they end.
    pytest.mark.filterwarnings(
        r"ignore:Unclosed <MemoryObject(Send|Receive)Stream:ResourceWarning"
    ),
]


class Relay:
    """Forwards connections to Redis until `cut`, which closes them all and refuses new
    ones until `restore`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.links: set[trio.CancelScope] = set()
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._link, listeners)

    async def _link(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            with trio.CancelScope() as scope:
                self.links.add(scope)
                try:
                    server = await trio.open_tcp_stream(*self.target)
                    async with server, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, client, server, nursery.cancel_scope)
                        nursery.start_soon(self._pipe, server, client, nursery.cancel_scope)
                finally:
                    self.links.discard(scope)

    @staticmethod
    async def _pipe(
        source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    def cut(self) -> None:
        self.up = False
        for scope in list(self.links):
            scope.cancel()

    def restore(self) -> None:
        self.up = True


@asynccontextmanager
async def relayed() -> AsyncGenerator[tuple[Relay, str]]:
    """A relay to the test Redis, and the Redis URL through it."""
    url = redis_url_or_skip()
    parts = urllib.parse.urlsplit(url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 6379)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@127.0.0.1:{relay.port}" if userinfo else f"127.0.0.1:{relay.port}"
        yield relay, parts._replace(netloc=netloc).geturl()
        nursery.cancel_scope.cancel()
    gc.collect()


@asynccontextmanager
async def governed(
    store: RedisRateStore, fail_mode: str = "closed"
) -> AsyncGenerator[ActorRef[Any]]:
    def make() -> Governor:
        return Governor(
            store,
            global_limits=RateLimitSettings(requests_per_minute=6000, concurrency=50),
            fail_mode=fail_mode,  # type: ignore[arg-type]
        )

    spec = SupervisorSpec(children=[ChildSpec.actor("gov", make)])
    async with open_runtime(spec) as runtime:
        yield runtime.ref("gov", Governor)


def acquire() -> Acquire:
    return Acquire(provider="p", model="m", tokens=10, lease=secrets.token_hex(6))


def store_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "llm_invocation.store" and r.levelno == level
    ]


async def cleanup(store: RedisRateStore | RedisBudgetStore, prefix: str) -> None:
    script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
    await store._conn.run(  # pyright: ignore[reportPrivateUsage]
        "cleanup", lambda client: client.eval(script, [], [f"*{prefix}*"])
    )


async def until_reachable(gov: ActorRef[Any]) -> Any:
    """Acquire until the store answers again (the first call after an outage may meet a
    pooled connection Redis closed meanwhile); fails after 10 s."""
    with trio.fail_after(10):
        while True:
            try:
                return await gov.call(acquire())
            except RateLimited as error:
                if error.details["reason"] != "store_unavailable":
                    raise
            await trio.sleep(0.05)


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_an_outage_is_logged_once_and_its_end_once_naming_the_fail_mode(
    fail_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"test-outage-{secrets.token_hex(4)}:"
    caplog.set_level(logging.INFO)
    async with (
        relayed() as (relay, url),
        open_redis_stores(url, prefix=prefix, fail_mode=fail_mode) as (rate, budget),
        governed(rate, fail_mode) as gov,
    ):
        await gov.call(acquire())
        relay.cut()
        for _ in range(5):
            if fail_mode == "closed":
                with pytest.raises(RateLimited) as info:
                    await gov.call(acquire())
                assert info.value.details["reason"] == "store_unavailable"
            else:
                assert (await gov.call(acquire())).degraded
        with pytest.raises(StoreUnavailable):  # the budget store shares the outage
            await budget.levels([Budget(scope="g", limit=Decimal(1))])
        errors = store_lines(caplog, logging.ERROR)
        relay.restore()
        await until_reachable(gov)
        stats = await gov.call(GovernorStats())
        await cleanup(rate, prefix)
    assert len(errors) == 1, errors
    assert "unreachable" in errors[0] and f"store_fail_mode={fail_mode}" in errors[0]
    infos = [line for line in store_lines(caplog, logging.INFO) if "reachable again" in line]
    assert len(infos) == 1, infos
    assert f"store_fail_mode={fail_mode}" in infos[0]
    assert stats.store_errors >= 5
    governor_lines = [r for r in caplog.records if r.name == "llm_invocation.governor"]
    assert governor_lines == []  # the governor counts; the connection logs


async def test_each_outage_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    prefix = f"test-outage-{secrets.token_hex(4)}:"
    caplog.set_level(logging.INFO)
    async with (
        relayed() as (relay, url),
        open_redis_stores(url, prefix=prefix, fail_mode="closed") as (rate, _),
        governed(rate) as gov,
    ):
        for _ in range(2):
            await until_reachable(gov)
            relay.cut()
            with pytest.raises(RateLimited):
                await gov.call(acquire())
            relay.restore()
        await until_reachable(gov)
        await cleanup(rate, prefix)
    assert len(store_lines(caplog, logging.ERROR)) == 2
    assert len([m for m in store_lines(caplog, logging.INFO) if "reachable again" in m]) == 2


async def test_the_governor_names_its_fail_mode_to_its_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = f"test-outage-{secrets.token_hex(4)}:"
    async with (
        relayed() as (relay, url),
        RedisRateStore(url, prefix=prefix) as rate,
        governed(rate, "open") as gov,
    ):
        relay.cut()
        assert (await gov.call(acquire())).degraded
    (line,) = store_lines(caplog, logging.ERROR)
    assert "store_fail_mode=open" in line


async def test_a_store_call_in_an_outage_fails_quickly() -> None:
    async with (
        relayed() as (relay, url),
        RedisRateStore(url, prefix="test-outage:", timeout=1.0) as rate,
    ):
        relay.cut()
        started = trio.current_time()
        with pytest.raises(StoreUnavailable):
            await rate.acquire([RateLimit(key="k", concurrency=1)], lease="l", tokens=0, ttl=1)
        assert trio.current_time() - started < 1.0


async def test_a_client_in_an_outage_logs_one_error_for_its_stores_and_its_cache(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The governor, the accountant and the response cache share one Redis connection: calls
    # that use all three during an outage leave one ERROR line, not one per call or per user.
    import llm_invocation as llm

    prefix = f"test-outage-{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO)
    async with relayed() as (relay, url):
        config = llm.Config(
            provider="mock",
            model="mock",
            store=f"{url}?prefix={prefix}:",
            store_fail_mode="open",
            cost_control={"max_budget": 100},
        )
        async with llm.open_client(config) as client:
            await client.invoke_sync(model="mock", messages=[llm.user("before")], cache=True)
            relay.cut()
            for index in range(5):
                response = await client.invoke_sync(
                    model="mock", messages=[llm.user(f"during {index}")], cache=True
                )
                assert response.text
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # (Closing the client during the outage says once more what it had to give up.)
    assert [r.name for r in errors] == ["llm_invocation.store"], [r.getMessage() for r in errors]
    assert "store_fail_mode=open" in errors[0].getMessage()


async def test_the_store_urls_timeout_sets_how_long_an_operation_may_take() -> None:
    import llm_invocation as llm

    url = redis_url_or_skip()
    store = f"{url}{'&' if '?' in url else '?'}timeout=7.5&prefix=t{secrets.token_hex(4)}:"
    async with llm.open_client(llm.Config.unlimited(provider="mock", store=store)) as client:
        governor = client.runtime.ref("governor", Governor)
        stats = await governor.call(GovernorStats())
        assert stats.active == 0
        from llm_invocation.client import _tree

        assert _tree._store_options(store)[2] == 7.5  # pyright: ignore[reportPrivateUsage]
