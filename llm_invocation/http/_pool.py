"""HTTP for a provider session: one httpx client over our own HTTP/1.1 transport.

httpx's default transport (httpcore and h11) costs about 65 us of client CPU per streamed
chunk here, and its connection pool rescans every queued request against every connection
whenever one is added or removed: quadratic, so 1,000 concurrent streams through one pool
take 26 s for a 2 s job. `FastHTTPTransport` (``_http.py``) keeps httpx's API above a lean
transport with an O(1) pool: about 24 us per chunk, and 1,000 streams in 2.4 s.

A session uses it for every provider (plain HTTP on raw sockets, TLS through
`trio.SSLStream`), handing it httpx `Request` objects directly: `httpx.AsyncClient`'s own
work per request (URL merging, the cookie jar, auth and redirect hooks) is about half of our
per-request overhead and none of it applies to an API call. Tests and users may inject any
other httpx transport instead (the mock provider's in-process one, a proxying one); those go
through `httpx.AsyncClient`s sharded to at most ``shard_size`` requests each, so a quadratic
pool never grows large. Callers beyond ``max_connections`` wait in FIFO order, so a burst is
admitted gradually.

This module is the one boundary where httpx's exceptions become `LLMError`s
(`translate_http_error`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Final, final

import httpx
import msgspec
import trio

from ..errors import InvocationTimeout, LLMError, ProviderError, StreamingFailed
from ..providers._base import HttpRequest
from ._transport import FastHTTPTransport

__all__ = ["HttpPool", "PoolStatistics", "translate_http_error"]

DEFAULT_SHARD_SIZE: Final = 32


def translate_http_error(exc: httpx.HTTPError, *, provider: str, phase: str) -> LLMError:
    """The typed error for an httpx failure. ``phase`` is "connect", "request" or "stream"."""
    text = f"{phase} failed: {type(exc).__name__}: {exc}" if str(exc) else f"{phase} failed"
    if isinstance(exc, httpx.TimeoutException):
        return InvocationTimeout(text, provider=provider, retryable=True)
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        return ProviderError(text, provider=provider, retryable=True)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return StreamingFailed(text, provider=provider, retryable=True)
    return ProviderError(text, provider=provider, retryable=False)


class PoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """How a session's pool is used."""

    shards: int
    active: int
    waiting: int
    max_connections: int
    shard_size: int
    requests: int


@final
class _Shard:
    __slots__ = ("active", "client")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.active = 0


@final
class HttpPool:
    """Sharded httpx clients with FIFO admission up to ``max_connections`` requests at once."""

    def __init__(
        self,
        *,
        max_connections: int,
        shard_size: int = DEFAULT_SHARD_SIZE,
        timeout: httpx.Timeout,
        transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
        keepalive_expiry: float = 30.0,
    ) -> None:
        if max_connections < 1 or shard_size < 1:
            raise ValueError("max_connections and shard_size must be >= 1")
        self.max_connections = max_connections
        # Our own transport has an O(1) pool: one client holds every connection.
        self.shard_size = min(shard_size, max_connections) if transport else max_connections
        self._timeout = timeout
        self._transport = transport
        self._keepalive_expiry = keepalive_expiry
        self._shards: list[_Shard] = []
        self._admission = trio.Semaphore(max_connections)
        self._requests = 0
        self._closed = False
        self._timeouts = timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        self._fast: FastHTTPTransport | None = None
        if transport is None:
            self._fast = FastHTTPTransport(
                max_connections=max_connections,
                max_idle_per_origin=max_connections,
                keepalive_expiry=keepalive_expiry,
            )

    def _new_shard(self) -> _Shard:
        limits = httpx.Limits(
            max_connections=self.shard_size,
            max_keepalive_connections=self.shard_size,
            keepalive_expiry=self._keepalive_expiry,
        )
        transport = self._transport() if self._transport is not None else self._fast
        client = httpx.AsyncClient(
            limits=limits,
            timeout=self._timeout,
            transport=transport,
            trust_env=False,
            follow_redirects=False,
        )
        shard = _Shard(client)
        self._shards.append(shard)
        return shard

    def _pick(self) -> _Shard:
        best: _Shard | None = None
        for shard in self._shards:
            if shard.active < self.shard_size and (best is None or shard.active < best.active):
                best = shard
                if shard.active == 0:
                    break
        return best if best is not None else self._new_shard()

    @asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncGenerator[httpx.Response]:
        """Send ``request`` and yield the response with its body unread.

        Leaving the block (or being cancelled) closes the response at once; an unread body
        means its connection is closed rather than reused, so the pool stays consistent.

        Raises:
            httpx.HTTPError: the transport failed (translate with `translate_http_error`).
        """
        if self._closed:
            raise ProviderError("the session's connection pool is closed")
        fast = self._fast
        if fast is not None:
            async with self._admission:
                self._requests += 1
                built = httpx.Request(
                    request.method,
                    self._url(request.url),
                    headers=request.headers,
                    content=request.body,
                    extensions={"timeout": self._timeouts},
                )
                response = await fast.handle_async_request(built)
                response.request = built
                try:
                    yield response
                finally:
                    with trio.move_on_after(5, shield=True):
                        await response.aclose()
            return
        async with self._admission:
            shard = self._pick()
            shard.active += 1
            self._requests += 1
            try:
                built = shard.client.build_request(
                    request.method, request.url, headers=request.headers, content=request.body
                )
                response = await shard.client.send(built, stream=True)
                try:
                    yield response
                finally:
                    with trio.move_on_after(5, shield=True):
                        await response.aclose()
            finally:
                shard.active -= 1

    def _url(self, text: str) -> httpx.URL:
        url = self._urls.get(text)
        if url is None:
            if len(self._urls) > 256:
                self._urls.clear()
            url = self._urls[text] = httpx.URL(text)
        return url

    def statistics(self) -> PoolStatistics:
        active = sum(s.active for s in self._shards)
        if self._fast is not None:
            active = self._fast.statistics().in_use
        return PoolStatistics(
            shards=len(self._shards),
            active=active,
            waiting=self._admission.statistics().tasks_waiting,
            max_connections=self.max_connections,
            shard_size=self.shard_size,
            requests=self._requests,
        )

    async def aclose(self) -> None:
        """Close every shard's connections."""
        self._closed = True
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.client.aclose()
        if self._fast is not None:
            await self._fast.aclose()
