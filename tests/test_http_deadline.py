"""The caller's deadline for a whole exchange (`HttpPool.stream(..., deadline=)`): waiting for
a place, connecting, sending, the head and the body all stop at it with `trio.TooSlowError`,
and the connection is then closed, never reused. Our transport keeps it in the connection,
as it keeps its own read and write timeouts; another transport's exchange runs in a scope."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from llm_invocation.http import HttpPool, HttpSettings
from llm_invocation.http._transport import FastHTTPTransport, origin_of
from llm_invocation.http._wire import encode_request
from llm_invocation.providers._base import HttpRequest

from .http_servers import Certificates, Peer, ok, serve, serve_tls

# Far longer than the deadlines: only the caller's deadline can end a wait in these tests.
SETTINGS = HttpSettings(trust_env=False, read_timeout=60, write_timeout=60)


@contextmanager
def by_the_deadline() -> Iterator[None]:
    """The block must end at the deadline (0.2 s), long before the request's own timeouts."""
    with trio.move_on_after(5) as guard:
        yield
    assert not guard.cancelled_caught, "the deadline did not end the wait"


def post(url: str, body: bytes = b'{"model": "m"}') -> HttpRequest:
    return HttpRequest(
        method="POST", url=url, headers={"content-type": "application/json"}, body=body
    )


def soon(seconds: float = 0.2) -> float:
    return trio.current_time() + seconds


def open_connections(pool: HttpPool) -> int:
    transport = pool._fast  # pyright: ignore[reportPrivateUsage]
    assert transport is not None
    return transport.statistics().connections_open


async def silent(peer: Peer) -> None:
    """Read the request, never answer."""
    await peer.request()
    await peer.wait_closed()


async def test_a_head_not_in_by_the_deadline_is_too_slow_and_closes_its_connection() -> None:
    async with serve(silent) as server:
        pool = HttpPool(SETTINGS)
        try:
            with by_the_deadline(), pytest.raises(trio.TooSlowError):
                async with pool.stream(post(server.url), deadline=soon()):
                    pass
            assert open_connections(pool) == 0
            assert pool.statistics().active == 0
        finally:
            await pool.aclose()


async def test_over_tls_a_head_not_in_by_the_deadline_is_too_slow(tmp_path: Path) -> None:
    certificates = Certificates(tmp_path)
    async with serve_tls(silent, certificates.server_context()) as server:
        pool = HttpPool(
            HttpSettings(trust_env=False, read_timeout=60, verify=str(certificates.ca_file))
        )
        try:
            with by_the_deadline(), pytest.raises(trio.TooSlowError):
                async with pool.stream(post(server.url), deadline=soon()):
                    pass
            assert open_connections(pool) == 0
        finally:
            await pool.aclose()


async def test_a_body_that_stalls_past_the_deadline_is_too_slow_and_closes_its_connection() -> None:
    async def half(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"0123456789")[:-5])  # the head and half the body
        await peer.wait_closed()

    async with serve(half) as server:
        pool = HttpPool(SETTINGS)
        try:
            async with pool.stream(post(server.url), deadline=soon()) as response:
                assert response.status == 200
                with by_the_deadline(), pytest.raises(trio.TooSlowError):
                    await response.read()
            assert open_connections(pool) == 0
        finally:
            await pool.aclose()


async def test_a_deadline_already_past_sends_nothing() -> None:
    seen: list[object] = []

    async def recording(peer: Peer) -> None:
        seen.append(await peer.request())

    async with serve(recording) as server:
        pool = HttpPool(SETTINGS)
        try:
            with by_the_deadline(), pytest.raises(trio.TooSlowError):
                async with pool.stream(post(server.url), deadline=trio.current_time()):
                    pass
            await trio.testing.wait_all_tasks_blocked()
        finally:
            await pool.aclose()
    assert seen == []


async def test_waiting_for_a_place_stops_at_the_deadline() -> None:
    async with serve(silent) as server:
        pool = HttpPool(HttpSettings(trust_env=False, max_connections=1))
        try:
            async with trio.open_nursery() as nursery:

                async def hold() -> None:
                    async with pool.stream(post(server.url)):
                        await trio.sleep_forever()

                nursery.start_soon(hold)
                await trio.testing.wait_all_tasks_blocked()
                with by_the_deadline(), pytest.raises(trio.TooSlowError):
                    async with pool.stream(post(server.url), deadline=soon()):
                        pass
                assert pool.statistics().waiting == 0
                nursery.cancel_scope.cancel()
        finally:
            await pool.aclose()


async def test_our_transports_own_admission_waits_only_until_the_deadline() -> None:
    async with serve(silent) as server:
        transport = FastHTTPTransport(max_connections=1)
        request = httpx.Request("POST", server.url + "/x", content=b"{}")

        async def exchange(deadline: float = math.inf) -> None:
            await transport.exchange(
                origin_of(request.url),
                encode_request(request),
                method="POST",
                timeouts={"read": 60},
                marks={},
                deadline=deadline,
            )

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exchange)  # holds the one place, waiting for its head
                await trio.testing.wait_all_tasks_blocked()
                with by_the_deadline(), pytest.raises(trio.TooSlowError):
                    await exchange(soon())
                assert transport.statistics().waiting == 0
                nursery.cancel_scope.cancel()
        finally:
            await transport.aclose()


async def test_a_send_that_stalls_past_the_deadline_is_too_slow() -> None:
    async def deaf(peer: Peer) -> None:
        del peer
        await trio.sleep_forever()  # never reads

    async with serve(deaf) as server:
        pool = HttpPool(SETTINGS)
        try:
            # More than the kernel buffers of both ends hold: the send has to wait.
            with by_the_deadline(), pytest.raises(trio.TooSlowError):
                async with pool.stream(post(server.url, b"x" * (64 << 20)), deadline=soon()):
                    pass
            assert open_connections(pool) == 0
        finally:
            await pool.aclose()


async def test_a_deadline_not_reached_leaves_the_connection_for_the_next_request() -> None:
    async def later(peer: Peer) -> None:
        first = True
        while await peer.request() is not None:
            if not first:
                await trio.sleep(0.4)  # past the first request's deadline
            await peer.send(ok(b"{}"))
            first = False

    async with serve(later) as server:
        pool = HttpPool(SETTINGS)
        try:
            async with pool.stream(post(server.url), deadline=soon(0.3)) as response:
                assert await response.read() == b"{}"
            # The same connection, with no deadline now: the first one's is gone with it.
            async with pool.stream(post(server.url)) as response:
                assert await response.read() == b"{}"
            assert server.connections == 1
        finally:
            await pool.aclose()


async def test_another_transports_exchange_stops_at_the_deadline_too() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    pool = HttpPool(SETTINGS, transport=lambda: httpx.MockTransport(never))
    try:
        with by_the_deadline(), pytest.raises(trio.TooSlowError):
            async with pool.stream(post("http://api.provider.invalid/v1/x"), deadline=soon()):
                pass
        assert pool.statistics().active == 0
    finally:
        await pool.aclose()


async def test_direct_tells_whether_our_transport_takes_the_url() -> None:
    async with serve(silent) as running:
        ours = HttpPool(SETTINGS)
        injected = HttpPool(
            SETTINGS, transport=lambda: httpx.MockTransport(lambda _: httpx.Response(200))
        )
        try:
            assert ours.direct(running.url + "/v1/chat")
            assert not ours.direct("ftp://nowhere/x")  # cannot be sent: stream() says why
            assert not injected.direct(running.url + "/v1/chat")
        finally:
            await ours.aclose()
            await injected.aclose()
