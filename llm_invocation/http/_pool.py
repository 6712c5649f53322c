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

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, final

import httpx
import msgspec
import trio

from .._secrets import Secret
from ..errors import InvocationTimeout, LLMError, ProviderError, StreamingFailed
from ..providers._base import HttpRequest
from ._response import HttpResponse
from ._transport import FastHTTPTransport, ResponseBody

__all__ = ["HttpPool", "HttpSettings", "PoolStatistics", "TransportFactory", "translate_http_error"]

TransportFactory = Callable[[], httpx.AsyncBaseTransport]
"""Makes an httpx transport (one per pool shard): tests and special set-ups inject one."""


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How one provider's requests travel: timeouts, pool size, proxy and TLS."""

    connect_timeout: float | None = 10.0
    read_timeout: float | None = 60.0
    write_timeout: float | None = 10.0
    max_connections: int = 1024
    shard_size: int = 32
    keepalive_expiry: float = 30.0
    proxy: str | None = None
    """A proxy URL for every request (``http://``, ``https://``; credentials in the URL)."""
    trust_env: bool = True
    """Read ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``
    and ``SSL_CERT_DIR`` from the environment when nothing more specific is set."""
    verify: bool | str = True
    """Verify servers' certificates: True (system/certifi roots), False, or a CA bundle path
    (a file, or a directory of hashed certificates)."""
    client_cert: str | None = None
    """A PEM file with the client certificate (and its key, unless ``client_key`` is set)."""
    client_key: str | None = None
    client_key_password: Secret | None = None


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
        settings: HttpSettings | None = None,
        *,
        provider: str = "",
        transport: TransportFactory | None = None,
    ) -> None:
        settings = settings or HttpSettings()
        max_connections, shard_size = settings.max_connections, settings.shard_size
        keepalive_expiry = settings.keepalive_expiry
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=None,
        )
        if max_connections < 1 or shard_size < 1:
            raise ValueError("max_connections and shard_size must be >= 1")
        self.provider = provider
        self.settings = settings
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
    async def stream(self, request: HttpRequest) -> AsyncGenerator[HttpResponse]:
        """Send ``request`` and yield the response with its body unread.

        Leaving the block (or being cancelled) closes the response at once; an unread body
        means its connection is closed rather than reused, so the pool stays consistent.

        Raises:
            LLMError: the request could not be sent or answered (translated here, the one
                boundary for httpx's exceptions).
        """
        if self._closed:
            raise ProviderError("the session's connection pool is closed", provider=self.provider)
        async with self._admission:
            shard: _Shard | None = None
            self._requests += 1
            try:
                if self._fast is not None:
                    built = httpx.Request(
                        request.method,
                        self._url(request.url),
                        headers=request.headers,
                        content=request.body,
                        extensions={"timeout": self._timeouts},
                    )
                    response = await self._fast.handle_async_request(built)
                    response.request = built
                else:
                    shard = self._pick()
                    shard.active += 1
                    built = shard.client.build_request(
                        request.method, request.url, headers=request.headers, content=request.body
                    )
                    response = await shard.client.send(built, stream=True)
            except (httpx.HTTPError, httpx.StreamError) as exc:
                if shard is not None:
                    shard.active -= 1
                raise self._translate_request(exc) from exc
            except BaseException:
                if shard is not None:
                    shard.active -= 1
                raise
            try:
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in response.headers.raw
                }
                yield HttpResponse(
                    response.status_code, headers, _raw(response), self._translate_stream
                )
            finally:
                with trio.move_on_after(5, shield=True):
                    await response.aclose()
                if shard is not None:
                    shard.active -= 1

    def _translate_request(self, exc: Exception) -> LLMError:
        if isinstance(exc, httpx.HTTPError):
            return translate_http_error(exc, provider=self.provider, phase="request")
        return ProviderError(f"request failed: {exc}", provider=self.provider)

    def _translate_stream(self, exc: Exception) -> LLMError:
        if isinstance(exc, httpx.HTTPError):
            return translate_http_error(exc, provider=self.provider, phase="stream")
        return StreamingFailed(f"stream failed: {exc}", provider=self.provider, retryable=True)

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


def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The response body's raw pieces: straight from our transport's stream when it is one
    (a plain async iterator), else through httpx's ``aiter_raw``."""
    stream = response.stream
    if isinstance(stream, ResponseBody):
        return stream.__aiter__()
    return response.aiter_raw()
