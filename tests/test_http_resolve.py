"""The transport's resolver: numeric addresses without a lookup, host names looked up once
per TTL (concurrent first lookups shared), failures never kept."""

from __future__ import annotations

import math
import socket
from typing import Any

import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.http import HttpPool, HttpSettings
from llm_invocation.http._resolve import Resolver
from llm_invocation.providers._base import HttpRequest

_ADDRESS = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 443))]


class FakeDNS:
    """Stands in for `trio.socket.getaddrinfo`: counts lookups, can fail or take time."""

    def __init__(self) -> None:
        self.lookups: list[str] = []
        self.fail = False
        self.delay = 0.0

    async def __call__(self, host: str, port: int, **_: Any) -> list[Any]:
        self.lookups.append(host)
        await trio.sleep(self.delay)
        if self.fail:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(_ADDRESS)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(trio.socket, "getaddrinfo", fake)
    return fake


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.1.2.3"])
async def test_a_numeric_address_needs_no_lookup(host: str, dns: FakeDNS) -> None:
    resolver = Resolver()
    infos = await resolver.resolve(host, 8080)
    assert infos[0][4][0] == host
    assert await resolver.resolve(host, 8080) == infos
    assert dns.lookups == []
    assert resolver.lookups == 0


async def test_a_host_name_is_looked_up_once_per_ttl(
    dns: FakeDNS, autojump_clock: trio.testing.MockClock
) -> None:
    resolver = Resolver(ttl=10)
    dns.delay = 0.5
    results: list[Any] = []

    async def resolve() -> None:
        results.append(await resolver.resolve("api.example.test", 443))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(resolve)
    assert results == [_ADDRESS] * 50
    assert dns.lookups == ["api.example.test"]  # the concurrent first lookups shared one
    await trio.sleep(5)
    await resolver.resolve("api.example.test", 443)
    assert len(dns.lookups) == 1
    await trio.sleep(6)  # past the TTL
    await resolver.resolve("api.example.test", 443)
    assert len(dns.lookups) == 2
    await resolver.resolve("other.example.test", 443)  # each name its own
    assert dns.lookups[-1] == "other.example.test"


async def test_a_failed_lookup_is_not_kept(dns: FakeDNS) -> None:
    resolver = Resolver()
    dns.fail = True
    for _ in range(2):
        with pytest.raises(socket.gaierror):
            await resolver.resolve("nowhere.example.test", 443)
    assert len(dns.lookups) == 2
    dns.fail = False
    assert await resolver.resolve("nowhere.example.test", 443) == _ADDRESS


async def test_waiters_of_a_cancelled_lookup_look_up_for_themselves(
    dns: FakeDNS, autojump_clock: trio.testing.MockClock
) -> None:
    resolver = Resolver()
    dns.delay = 1
    got: list[Any] = []

    async def waiter() -> None:
        got.append(await resolver.resolve("api.example.test", 443))

    async with trio.open_nursery() as nursery:
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                await resolver.resolve("api.example.test", 443)

        nursery.start_soon(lead)
        await trio.testing.wait_all_tasks_blocked()  # the leader's lookup is under way
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()  # the waiter waits for it
        leader.cancel()
    assert got == [_ADDRESS]
    assert dns.lookups == ["api.example.test"] * 2  # the waiter's own, after the cancel


async def test_without_a_ttl_every_connection_looks_up(dns: FakeDNS) -> None:
    resolver = Resolver(ttl=0)
    for _ in range(3):
        await resolver.resolve("api.example.test", 443)
    assert len(dns.lookups) == 3


@pytest.mark.parametrize("ttl", [-1.0, math.nan])
def test_a_ttl_that_is_not_a_number_of_seconds_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match="DNS cache"):
        Resolver(ttl)


@pytest.mark.parametrize("host", ["a..b", "x" * 70 + ".example.test"])
async def test_a_host_name_that_cannot_be_looked_up_is_a_typed_error_of_that_call(
    host: str,
) -> None:
    pool = HttpPool(HttpSettings(trust_env=False), provider="openai")
    request = HttpRequest(method="POST", url=f"http://{host}:9/v1", headers={}, body=b"{}")
    try:
        with pytest.raises(llm.LLMError):
            async with pool.stream(request):
                pass
        assert pool.statistics().active == 0
    finally:
        await pool.aclose()
