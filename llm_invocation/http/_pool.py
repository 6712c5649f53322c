"""HTTP for a provider session: one path for every transport, FIFO admission, one error boundary.

`HttpPool.stream` builds the `httpx.Request` itself and hands it to a transport's
``handle_async_request``: no ``httpx.AsyncClient`` anywhere, so every transport sees the same
request and its response body is read the same way (from ``response.stream``). Our own
transport is handed the request's bytes instead (`FastHTTPTransport.exchange`): the bytes the
``httpx.Request`` would be sent as, proven equal by a differential test, without making it
or an ``httpx.Response``. The transport of a request is:

* our `FastHTTPTransport` for direct connections: one instance, whose pool is O(1) (about
  24 us per streamed chunk where httpcore spends 65 us, and 1,000 streams in 2.4 s instead
  of 26 s);
* httpx's stock ``httpx.AsyncHTTPTransport(proxy=...)`` for a request that goes through a
  proxy (``CONNECT`` for https), see ``_proxy.py``;
* the injected transport factory, when the pool was given one (tests, special set-ups): it
  serves every request, and proxies and TLS settings do not apply to it.

httpcore's connection pool rescans every queued request against every connection whenever
one is added or removed (quadratic), so transports that are not ours are sharded: at most
``shard_size`` requests run on one instance, and a new instance is made when all are full.
Callers beyond ``max_connections`` wait in FIFO order, so a burst of thousands of requests
is admitted gradually and in order.

**Headers.** Every request carries ``User-Agent: llm-invocation/<version>`` unless it has one,
and ``Accept-Encoding: identity`` when it is a stream (each event must arrive when it is
sent) or ``gzip`` when the whole answer is read at once. Whatever was asked, a response in
``gzip``, ``x-gzip`` or ``deflate`` is decoded (incrementally), and one in another coding is
a typed error. A header name that is not a token, or a value with CR, LF, NUL, VT or FF, is
refused before anything is sent (`InvalidRequest`); values lose leading and trailing blanks.

**Errors.** This is the one boundary where transport exceptions (httpx's, OS and TLS errors,
decoding errors) become typed `LLMError`s (`translate_http_error`), chained with
``__cause__``. Their ``details`` say the ``phase`` (``request`` or ``stream``), whether the
whole request had been ``sent`` (then the server may be working on it: only the session's
retry policy may send it again) and whether the connection was ``reused``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import ssl
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Final, final

import httpx
import msgspec
import trio

from .._secrets import Secret
from .._version import __version__
from ..config._sections import proxy_url_problem
from ..errors import (
    ConfigProblem,
    ConfigurationError,
    InvalidRequest,
    InvocationTimeout,
    LLMError,
    ProviderError,
    StreamingFailed,
    scrub_exception,
)
from ..providers._base import HttpRequest
from ._connection import Origin
from ._content import decode_body
from ._proxy import ProxyRules, describe_proxy, proxy_rules
from ._response import HttpResponse
from ._tls import build_ssl_context
from ._transport import REUSED, SENT, FastHTTPTransport, ResponseBody, origin_of
from ._wire import Message, message_of, request_line

__all__ = [
    "USER_AGENT",
    "HttpPool",
    "HttpSettings",
    "PoolStatistics",
    "TransportFactory",
    "translate_http_error",
]

log = logging.getLogger("llm_invocation.http")

TransportFactory = Callable[[], httpx.AsyncBaseTransport]
"""Makes an httpx transport (one per pool shard): tests and special set-ups inject one."""

USER_AGENT: Final = f"llm-invocation/{__version__}"
_NAME: Final = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+", re.ASCII)
_BAD_VALUE: Final = re.compile(r"[\x00\n\r\x0b\x0c]")
_CLOSE_GRACE: Final = 5.0
_URL_CACHE: Final = 256
_Field = tuple[bytes, bytes, bytes, int]
"""A request header checked and encoded: its name, value and line, and its kind bits."""
_FIELDS_KEPT: Final = 512
"""Header fields a pool keeps checked and encoded (`HttpPool._field`); then it starts over."""

# What a request header is to the pool (`HttpPool._field`), as bits.
_HOST: Final = 1
_LENGTH: Final = 2
_CODING: Final = 4
_CONNECTION: Final = 8
_CLOSE: Final = 16  # a Connection header that says close
_AGENT: Final = 32
_SKIPPED: Final = 64  # Accept-Encoding: the pool decides, as it decodes what it asked for
_FIELD_KINDS: Final = {
    "host": _HOST,
    "content-length": _LENGTH,
    "transfer-encoding": _CODING,
    "connection": _CONNECTION,
    "user-agent": _AGENT,
    "accept-encoding": _SKIPPED,
}
_AGENT_LINE: Final = f"User-Agent: {USER_AGENT}\r\n".encode("ascii")
_IDENTITY_LINE: Final = b"Accept-Encoding: identity\r\n"
_GZIP_LINE: Final = b"Accept-Encoding: gzip\r\n"


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How one provider's requests travel: timeouts, pool size, proxy and TLS."""

    connect_timeout: float | None = 10.0
    read_timeout: float | None = 60.0
    write_timeout: float | None = 10.0
    max_connections: int = 1024
    shard_size: int = 32
    """The most requests at once on one transport instance that is not ours."""
    keepalive_expiry: float = 30.0
    proxy: str | None = None
    """A proxy URL for every request (``http://``, ``https://``; credentials in the URL)."""
    trust_env: bool = True
    """Read ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``
    and ``SSL_CERT_DIR`` from the environment when nothing more specific is set."""
    verify: bool | str = True
    """Verify servers' certificates: True (certifi's roots, or the environment's), False, or
    a CA bundle path (a file, or a directory of hashed certificates)."""
    client_cert: str | None = None
    """A PEM file with the client certificate (and its key, unless ``client_key`` is set)."""
    client_key: str | None = None
    client_key_password: Secret | None = None
    ssl_context: ssl.SSLContext | None = None
    """A ready TLS context (`settings_for` makes one when the settings name files); when set,
    ``verify`` and the client certificate fields are not read again."""

    def __repr__(self) -> str:
        # The proxy URL may hold credentials: show where it goes, never who logs in.
        fields: list[str] = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "proxy" and value is not None:
                value = describe_proxy(value) if proxy_url_problem(value) is None else "<invalid>"
            fields.append(f"{name}={value!r}")
        return f"HttpSettings({', '.join(fields)})"


class PoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """How a session's pool is used."""

    shards: int
    """Transport instances made: our transport counts as one, each shard as one."""
    active: int
    """Requests admitted and not yet finished (their response still open)."""
    waiting: int
    """Requests waiting for admission (``max_connections`` reached)."""
    max_connections: int
    shard_size: int
    requests: int
    """Requests started since the pool was made."""


def translate_http_error(
    exc: BaseException,
    *,
    provider: str,
    phase: str,
    request: httpx.Request | None = None,
    marks: Mapping[str, Any] | None = None,
) -> LLMError:
    """The typed error for a transport failure (httpx's exceptions, OS, TLS or zlib errors).

    ``phase`` is ``"request"`` (before the response head) or ``"stream"`` (reading the body).
    When ``request`` (or the ``marks`` of `FastHTTPTransport.exchange`) is given, what the
    transport recorded on it says whether the request had been sent whole and on a reused
    connection; otherwise the exception's kind tells.

    ``exc`` becomes the error's cause (the caller raises ``from exc``): its text, and that of
    the exceptions it chains, is scrubbed of secrets here (`scrub_exception`).
    """
    if isinstance(exc, LLMError):
        return exc
    scrub_exception(exc)
    details: dict[str, object] = {"phase": phase}
    if marks is None and request is not None:
        marks = request.extensions
    sent = _sent(exc, phase, marks)
    if sent is not None:
        details["sent"] = sent
    if marks is not None and marks.get(REUSED):
        details["reused"] = True
    text = _text(exc)
    tls = _tls_failure(exc)
    if tls is not None:
        problem, retryable = tls
        details["tls"] = problem
        return ProviderError(
            f"TLS failed: {problem}", provider=provider, retryable=retryable, details=details
        )
    if isinstance(exc, httpx.TimeoutException):
        return InvocationTimeout(
            f"{phase} timed out: {text}", provider=provider, retryable=True, details=details
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
        return InvalidRequest(
            f"the request cannot be sent: {text}",
            provider=provider,
            retryable=False,
            details=details,
        )
    if isinstance(exc, httpx.ProxyError):
        retryable = not str(exc).startswith(("407", "403"))  # auth will not change by itself
        return ProviderError(
            f"the proxy refused: {text}", provider=provider, retryable=retryable, details=details
        )
    if isinstance(exc, zlib.error | httpx.DecodingError):
        details["reason"] = "malformed response"
        return ProviderError(
            f"malformed response: {text}", provider=provider, retryable=True, details=details
        )
    network = isinstance(
        exc, httpx.TransportError | OSError | trio.BrokenResourceError | trio.ClosedResourceError
    )
    if network and phase == "stream":
        return StreamingFailed(
            f"the stream broke: {text}", provider=provider, retryable=True, details=details
        )
    if network:
        if isinstance(exc, httpx.ConnectError):
            what = "could not connect"
        elif sent:
            what = "the connection failed after the request was sent"
        else:
            what = "the request could not be sent"
        return ProviderError(f"{what}: {text}", provider=provider, retryable=True, details=details)
    return ProviderError(
        f"{phase} failed: {text}", provider=provider, retryable=False, details=details
    )


def _text(exc: BaseException) -> str:
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}"[:300] if message else name


def _sent(exc: BaseException, phase: str, marks: Mapping[str, Any] | None) -> bool | None:
    """Whether the whole request had been sent when ``exc`` happened, when that is known."""
    if phase == "stream":
        return True
    if marks is not None:
        recorded = marks.get(SENT)
        if isinstance(recorded, bool):
            return recorded
    if isinstance(
        exc,
        httpx.ConnectError
        | httpx.ConnectTimeout
        | httpx.PoolTimeout
        | httpx.WriteError
        | httpx.WriteTimeout
        | httpx.ProxyError
        | httpx.UnsupportedProtocol
        | httpx.LocalProtocolError,
    ):
        return False
    if isinstance(exc, httpx.ReadError | httpx.ReadTimeout | httpx.RemoteProtocolError):
        return True
    return None


def _tls_failure(exc: BaseException) -> tuple[str, bool] | None:
    """The TLS problem behind ``exc`` (walking its causes): (description, retryable)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = getattr(seen, "verify_message", None) or str(seen)
            return f"certificate verify failed: {reason}", False
        if isinstance(seen, ssl.SSLError) and not isinstance(
            seen, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLWantReadError
        ):
            reason = str(seen.reason or seen).lower().replace("_", " ")
            return reason, False
        seen = seen.__cause__ or seen.__context__
    return None


@final
class _Shard:
    __slots__ = ("active", "transport")

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.active = 0


@final
class _Sharded:
    """Transports that are not ours, at most ``size`` requests on each instance."""

    __slots__ = ("factory", "shards", "size")

    def __init__(self, factory: TransportFactory, size: int) -> None:
        self.factory = factory
        self.size = size
        self.shards: list[_Shard] = []

    def pick(self) -> _Shard:
        """The least busy shard with room, or a new one."""
        best: _Shard | None = None
        for shard in self.shards:
            if shard.active < self.size and (best is None or shard.active < best.active):
                best = shard
                if not shard.active:
                    break
        if best is None:
            best = _Shard(self.factory())
            self.shards.append(best)
        return best


_Route = FastHTTPTransport | _Sharded


@final
class _Target:
    """A request URL, parsed once: its route, and what our transport sends it with."""

    __slots__ = ("host_line", "netloc", "origin", "path", "route", "starts", "url")

    def __init__(self, url: httpx.URL, route: _Route) -> None:
        self.url = url
        self.route = route
        self.origin: Origin = origin_of(url)
        self.path: bytes = url.raw_path
        self.netloc: bytes = url.netloc
        self.host_line = b"Host: %s\r\n" % self.netloc
        self.starts: dict[str, bytes] = {}
        """The request line, by method."""


@final
class HttpPool:
    """Sends a provider's requests (see the module docstring); FIFO admission up to
    ``max_connections`` requests at once.

    Args:
        settings: timeouts, pool size, proxy and TLS (`settings_for` reads them from the
            configuration); default `HttpSettings()`.
        provider: the provider's name, set on every error and log line.
        transport: a factory of httpx transports that then serves every request (one
            instance per shard of ``shard_size`` requests); proxies and TLS settings do not
            apply to it.
        environ: where the proxy and CA variables are read when ``trust_env`` (default:
            ``os.environ``).

    Raises:
        ValueError: ``max_connections`` or ``shard_size`` is below 1.
    """

    def __init__(
        self,
        settings: HttpSettings | None = None,
        *,
        provider: str = "",
        transport: TransportFactory | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        settings = settings or HttpSettings()
        if settings.max_connections < 1 or settings.shard_size < 1:
            raise ValueError("max_connections and shard_size must be >= 1")
        self.provider = provider
        self.settings = settings
        self.max_connections = settings.max_connections
        self.shard_size = min(settings.shard_size, settings.max_connections)
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeouts: dict[str, float | None] = {
            "connect": settings.connect_timeout,
            "read": settings.read_timeout,
            "write": settings.write_timeout,
            "pool": None,
        }
        self._admission = trio.Semaphore(settings.max_connections)
        self._requests = 0
        self._active = 0
        self._closed = False
        self._injected: _Sharded | None = None
        if transport is not None:
            self._injected = _Sharded(transport, self.shard_size)
        self._fast: FastHTTPTransport | None = None
        self._proxied: dict[str, _Sharded] = {}
        self._rules: ProxyRules | None = None
        self._rule_problems: list[tuple[str, str]] = []
        self._routes: dict[tuple[str, str, int | None], _Route] = {}
        self._urls: dict[str, _Target] = {}
        self._fields: dict[tuple[str, str], _Field] = {}
        self._ssl: ssl.SSLContext | None = settings.ssl_context
        # One bound method for every response: made per response, it would be one more
        # object for the collector to track per open stream.
        self._translator: Callable[[Exception], LLMError] = self._translate

    def __repr__(self) -> str:
        stats = self.statistics()
        return f"<HttpPool {self.provider!r} active={stats.active} waiting={stats.waiting}>"

    # -- routes ----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        """The provider's TLS context, made once (at the first https connection).

        Raises:
            ConfigurationError: a TLS file cannot be loaded.
        """
        if self._ssl is None:
            settings = self.settings
            self._ssl = build_ssl_context(
                provider=self.provider,
                verify=settings.verify,
                client_cert=settings.client_cert,
                client_key=settings.client_key,
                client_key_password=settings.client_key_password,
                trust_env=settings.trust_env,
                environ=self._environ,
            )
        return self._ssl

    def _resolve(self, text: str) -> _Target:
        """The parsed URL and the route of a request URL (cached).

        Raises:
            InvalidRequest: the URL is not a valid http:// or https:// URL.
            ConfigurationError: the proxy settings of the environment are invalid.
        """
        try:
            url = httpx.URL(text)
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidRequest(
                f"the request URL is invalid: {exc}", provider=self.provider, retryable=False
            ) from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidRequest(
                "the request URL must be an http:// or https:// URL with a host",
                provider=self.provider,
                retryable=False,
            )
        key = (url.scheme, url.host, url.port)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._route_for(url)
        if len(self._urls) >= _URL_CACHE:
            self._urls.clear()
        target = self._urls[text] = _Target(url, route)
        return target

    def _route_for(self, url: httpx.URL) -> _Route:
        """How requests to ``url``'s origin travel; logged once per origin.

        Raises:
            ConfigurationError: the proxy settings of the environment are invalid.
        """
        origin = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"
        if self._injected is not None:
            log.debug("%s: requests to %s go through an injected transport", self.provider, origin)
            return self._injected
        if self._rules is None:
            settings = self.settings
            self._rules, self._rule_problems = proxy_rules(
                proxy=settings.proxy, trust_env=settings.trust_env, environ=self._environ
            )
        if self._rule_problems:
            problems = [
                ConfigProblem(
                    path="proxy",
                    message=message,
                    source=None if variable == "proxy" else f"env {variable}",
                )
                for variable, message in self._rule_problems
            ]
            raise ConfigurationError(problems=problems, provider=self.provider)
        proxy = self._rules.proxy_for(url)
        if proxy is None:
            log.info("%s: requests to %s go direct", self.provider, origin)
            if self._fast is None:
                self._fast = FastHTTPTransport(
                    max_connections=self.max_connections,
                    max_idle_per_origin=self.max_connections,
                    keepalive_expiry=self.settings.keepalive_expiry,
                    connect_timeout=self.settings.connect_timeout,
                    ssl_context=self._ssl_context,
                )
            return self._fast
        log.info("%s: requests to %s go via proxy %s", self.provider, origin, describe_proxy(proxy))
        route = self._proxied.get(proxy)
        if route is None:
            route = self._proxied[proxy] = _Sharded(self._proxy_factory(proxy), self.shard_size)
        return route

    def _proxy_factory(self, proxy: str) -> TransportFactory:
        limits = httpx.Limits(
            max_connections=self.shard_size,
            max_keepalive_connections=self.shard_size,
            keepalive_expiry=self.settings.keepalive_expiry,
        )

        secure = httpx.URL(proxy).scheme == "https"

        def factory() -> httpx.AsyncBaseTransport:
            context = self._ssl_context()
            return httpx.AsyncHTTPTransport(
                # An https:// proxy is reached over TLS with the provider's context too.
                proxy=httpx.Proxy(proxy, ssl_context=context if secure else None),
                verify=context,
                trust_env=False,
                limits=limits,
            )

        return factory

    # -- requests --------------------------------------------------------------------------

    def _build(self, request: HttpRequest, url: httpx.URL) -> httpx.Request:
        """The httpx request for ``request``, with the header policy applied.

        Raises:
            InvalidRequest: a header name is not a token, or a value holds CR, LF, NUL, VT
                or FF (the message names the header, never its value).
        """
        return httpx.Request(
            request.method,
            url,
            headers=self._headers(request),
            content=request.body,
            extensions={"timeout": self._timeouts},
        )

    def _message(self, request: HttpRequest, target: _Target) -> Message:
        """The bytes `_build`'s httpx request would be sent as by our transport, made
        without it: the same headers in the same order (httpx puts ``Host`` first, then a
        ``Content-Length: 0`` for a POST without a body, and appends the body's
        ``Content-Length`` unless one is given). Each header is checked and encoded once
        per pool (`_field`), the request line once per target and method.

        Raises:
            InvalidRequest: as `_build`.
            httpx.LocalProtocolError: the method is not a token.
        """
        method = request.method
        start = target.starts.get(method)
        if start is None:
            start = request_line(method.encode("ascii"), target.path)
            target.starts[method] = start
        fields, kinds = self._given(request)
        body = request.body or b""
        parts = [start]
        if not kinds & _HOST:
            parts.append(target.host_line)
        if not body and method == "POST" and not kinds & (_LENGTH | _CODING):
            parts.append(b"Content-Length: 0\r\n")
        parts += [line for _, _, line, _ in fields]
        if not kinds & _AGENT:
            parts.append(_AGENT_LINE)
        parts.append(_IDENTITY_LINE if request.stream else _GZIP_LINE)
        if body and not kinds & _LENGTH:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        if not kinds & _CONNECTION:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return message_of(parts, body, close=bool(kinds & _CLOSE))

    def _headers(self, request: HttpRequest) -> list[tuple[bytes, bytes]]:
        """``request``'s headers with the header policy applied (see `_build`)."""
        fields, kinds = self._given(request)
        headers = [(name, value) for name, value, _, _ in fields]
        if not kinds & _AGENT:
            headers.append((b"User-Agent", USER_AGENT.encode("ascii")))
        headers.append((b"Accept-Encoding", b"identity" if request.stream else b"gzip"))
        return headers

    def _given(self, request: HttpRequest) -> tuple[list[_Field], int]:
        """``request``'s own headers that are sent (`_field`), and their kinds together.

        Raises:
            InvalidRequest: as `_field`.
        """
        fields: list[_Field] = []
        kinds = 0
        for name, value in request.headers.items():
            field = self._field(name, value)
            kind = field[3]
            kinds |= kind
            if not kind & _SKIPPED:
                fields.append(field)
        return fields, kinds

    def _field(self, name: str, value: str) -> _Field:
        """The header ``name: value`` checked and encoded: its name, value and line, and
        what it is to the pool (the `_HOST`... bits). Remembered: a session sends the same
        few headers again and again.

        Raises:
            InvalidRequest: the name is not a token, or the value holds a line break or NUL.
        """
        key = (name, value)
        try:
            field = self._fields.get(key)
        except TypeError:  # unhashable: not text, refused below
            field = None
        if field is not None:
            return field
        if not isinstance(name, str) or not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequest(
                f"a header's name and value must be text, not {type(name).__name__} and "
                f"{type(value).__name__}",
                provider=self.provider,
                retryable=False,
            )
        if not _NAME.fullmatch(name):
            raise InvalidRequest(
                f"header name {name[:40]!r} is not a valid HTTP token",
                provider=self.provider,
                retryable=False,
            )
        stripped = value.strip(" \t")
        if _BAD_VALUE.search(stripped):
            raise InvalidRequest(
                f"the value of header {name!r} contains CR, LF, NUL or another line break",
                provider=self.provider,
                retryable=False,
            )
        raw_name = name.encode("ascii")
        raw_value = stripped.encode("utf-8")
        lower = name.lower()
        kind = _FIELD_KINDS.get(lower, 0)
        if kind & _CONNECTION and b"close" in raw_value.lower():
            kind |= _CLOSE
        field = (raw_name, raw_value, b"%s: %s\r\n" % (raw_name, raw_value), kind)
        if len(self._fields) >= _FIELDS_KEPT:
            self._fields.clear()
        self._fields[key] = field
        return field

    def direct(self, url: str) -> bool:
        """Whether requests to ``url`` go through our own transport: it keeps a `stream`'s
        deadline without a cancel scope, and `aclose` stops its sends and reads at once.
        False for a proxy's or an injected transport, and for a URL that cannot be sent
        (`stream` raises its error)."""
        target = self._urls.get(url)
        if target is None:
            try:
                target = self._resolve(url)
            except LLMError:
                return False
        return isinstance(target.route, FastHTTPTransport)

    def stream(
        self, request: HttpRequest, *, deadline: float = math.inf
    ) -> AbstractAsyncContextManager[HttpResponse]:
        """Send ``request`` on entering the block, which gets the response with its body
        unread: ``async with pool.stream(request) as response:``.

        Leaving the block (or being cancelled) closes the response at once; an unread body
        means its connection is closed rather than reused, so the pool stays consistent.

        ``deadline`` (a `trio.current_time` value) is the caller's for the whole exchange,
        the body's reads included: past it, what waits raises `trio.TooSlowError` (the
        response is closed). Our transport keeps it without a cancel scope (see
        `FastHTTPTransport.exchange`).

        Raises:
            InvalidRequest: the URL or a header cannot be sent (nothing was sent).
            ConfigurationError: the proxy or TLS settings are invalid.
            LLMError: the request could not be sent or answered (`ProviderError`,
                `InvocationTimeout`...; see `translate_http_error`). Reading the response
                raises only `LLMError`s too.
            trio.TooSlowError: ``deadline`` passed.
        """
        return _Exchange(self, request, deadline)

    async def _enter(
        self, request: HttpRequest, deadline: float = math.inf
    ) -> tuple[HttpResponse, ResponseBody | AbstractAsyncContextManager[HttpResponse]]:
        """Send ``request`` for `stream`: the response, and what closes it (our transport's
        body, for `_leave`, or the context of `_foreign`, for its ``__aexit__``)."""
        provider = self.provider
        if self._closed:
            raise ProviderError("the session's connection pool is closed", provider=provider)
        target = self._urls.get(request.url) or self._resolve(request.url)
        route = target.route
        if not isinstance(route, FastHTTPTransport):
            foreign = (
                self._foreign(request, target)
                if deadline == math.inf
                else self._foreign_until(request, target, deadline)
            )
            return await foreign.__aenter__(), foreign
        # Our transport takes the request's bytes: no httpx request or response, and nothing
        # of the request (nor the raw response head) is kept while the body is read.
        try:
            message = self._message(request, target)
        except LLMError:
            raise
        except Exception as exc:
            raise translate_http_error(exc, provider=provider, phase="request") from exc
        admission = self._admission
        try:
            admission.acquire_nowait()  # a free place: no trip through the scheduler
        except trio.WouldBlock:
            with trio.fail_at(deadline):
                await admission.acquire()
        try:
            if self._closed:
                raise ProviderError("the session's connection pool is closed", provider=provider)
            self._requests += 1
            self._active += 1
            try:
                marks: dict[str, Any] = {}
                try:
                    head, body = await route.exchange(
                        target.origin,
                        message,
                        method=request.method,
                        timeouts=self._timeouts,
                        marks=marks,
                        deadline=deadline,
                    )
                except (LLMError, trio.TooSlowError):
                    raise
                except Exception as exc:
                    raise translate_http_error(
                        exc, provider=provider, phase="request", marks=marks
                    ) from exc
                try:
                    headers = _joined(head.headers)
                    pieces: AsyncIterator[bytes] = body
                    coding = headers.get("content-encoding")
                    if coding is not None:
                        pieces = decode_body(pieces, coding, provider=provider, status=head.status)
                    raw = body if pieces is body else None  # no content coding in between
                    return HttpResponse(head.status, headers, pieces, self._translator, raw), body
                except BaseException:
                    await body.aclose()  # closes at once, never checkpoints
                    raise
            except BaseException:
                self._active -= 1
                raise
        except BaseException:
            admission.release()
            raise

    async def _leave(self, body: ResponseBody) -> None:
        """Close a response of our transport opened by `_enter`."""
        try:
            await body.aclose()  # closes at once, never checkpoints
        finally:
            self._active -= 1
            self._admission.release()

    @asynccontextmanager
    async def _foreign_until(
        self, request: HttpRequest, target: _Target, deadline: float
    ) -> AsyncGenerator[HttpResponse]:
        """`_foreign` until ``deadline`` (then `trio.TooSlowError`): another transport's
        waits take a cancel scope."""
        with trio.fail_at(deadline):
            async with self._foreign(request, target) as response:
                yield response

    @asynccontextmanager
    async def _foreign(self, request: HttpRequest, target: _Target) -> AsyncGenerator[HttpResponse]:
        """`stream` through another transport (an injected one, or a proxy's), via httpx."""
        provider = self.provider
        route = target.route
        assert not isinstance(route, FastHTTPTransport)
        built = self._build(request, target.url)
        async with self._admission:
            if self._closed:
                raise ProviderError("the session's connection pool is closed", provider=provider)
            self._requests += 1
            self._active += 1
            shard: _Shard | None = None
            try:
                try:
                    shard = route.pick()
                    shard.active += 1
                    response = await shard.transport.handle_async_request(built)
                except LLMError:
                    raise
                except Exception as exc:
                    raise translate_http_error(
                        exc, provider=provider, phase="request", request=built
                    ) from exc
                stream = response.stream
                ours = stream if isinstance(stream, ResponseBody) else None
                pieces: AsyncIterator[bytes] | None = None
                if ours is not None:
                    body: AsyncIterator[bytes] = ours
                elif isinstance(stream, httpx.AsyncByteStream):
                    pieces = body = aiter(stream)
                else:
                    pieces = body = _SyncPieces(stream)
                headers = _headers(response)
                try:
                    coding = headers.get("content-encoding")
                    if coding is not None:
                        body = decode_body(
                            body, coding, provider=provider, status=response.status_code
                        )
                    raw = ours if body is ours else None  # no content coding in between
                    yield HttpResponse(response.status_code, headers, body, self._translator, raw)
                finally:
                    if ours is not None:
                        await ours.aclose()  # closes at once, never checkpoints
                    elif pieces is not None:
                        await self._close_foreign(stream, pieces)
            finally:
                self._active -= 1
                if shard is not None:
                    shard.active -= 1

    async def _close_foreign(
        self, stream: httpx.AsyncByteStream | httpx.SyncByteStream, pieces: AsyncIterator[bytes]
    ) -> None:
        """Close a body that is not ours, bounded and shielded; failures are logged once."""
        with trio.move_on_after(_CLOSE_GRACE, shield=True) as scope:
            try:
                close = getattr(pieces, "aclose", None)
                if close is not None:  # an async generator: closed, not left to the GC
                    await close()
                if isinstance(stream, httpx.AsyncByteStream):
                    await stream.aclose()
                else:
                    stream.close()
            except Exception as exc:  # noqa: BLE001 - the response is done with: log, go on
                log.warning("%s: closing a response failed: %s", self.provider, _text(exc))
        if scope.cancelled_caught:
            log.warning(
                "%s: closing a response took longer than %gs: left to the transport",
                self.provider,
                _CLOSE_GRACE,
            )

    def _translate(self, exc: Exception) -> LLMError:
        return translate_http_error(exc, provider=self.provider, phase="stream")

    def statistics(self) -> PoolStatistics:
        """How the pool is used now."""
        shards = sum(len(route.shards) for route in self._proxied.values())
        if self._injected is not None:
            shards += len(self._injected.shards)
        if self._fast is not None:
            shards += 1
        return PoolStatistics(
            shards=shards,
            active=self._active,
            waiting=self._admission.statistics().tasks_waiting,
            max_connections=self.max_connections,
            shard_size=self.shard_size,
            requests=self._requests,
        )

    async def aclose(self) -> None:
        """Close every connection; later requests fail with `ProviderError`.

        Bounded: transports that do not close within a few seconds are left behind (logged).
        """
        self._closed = True
        if self._fast is not None:
            await self._fast.aclose()  # never blocks
        routes = list(self._proxied.values())
        if self._injected is not None:
            routes.append(self._injected)
        with trio.move_on_after(_CLOSE_GRACE, shield=True) as scope:
            for route in routes:
                shards, route.shards = route.shards, []
                for shard in shards:
                    try:
                        await shard.transport.aclose()
                    except Exception as exc:  # noqa: BLE001 - close the others all the same
                        log.warning("%s: closing a transport failed: %s", self.provider, _text(exc))
        if scope.cancelled_caught:
            log.warning(
                "%s: closing the pool took longer than %gs: the rest is left to the GC",
                self.provider,
                _CLOSE_GRACE,
            )


def _headers(response: httpx.Response) -> dict[str, str]:
    """Lower-case names; a repeated header's values joined with ``", "``."""
    return _joined(response.headers.raw)


_NAMES: dict[bytes, str] = {}
"""Header names as sent to their lower-case text: a provider sends the same few names on
every response. At most `_NAMES_KEPT` are kept (names are the server's to choose)."""
_NAMES_KEPT: Final = 256


def _joined(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case names; a repeated header's values joined with ``", "``."""
    out: dict[str, str] = {}
    names = _NAMES
    for raw_name, raw_value in raw:
        name = names.get(raw_name)
        if name is None:
            name = raw_name.decode("latin-1").lower()
            if len(names) < _NAMES_KEPT:
                names[raw_name] = name
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


@final
class _Exchange:
    """What `HttpPool.stream` returns: the response while the block runs, closed on leaving.

    Through our transport it holds the response's body alone, not a suspended generator
    with the request in it."""

    __slots__ = ("_closer", "_deadline", "_pool", "_request")

    def __init__(self, pool: HttpPool, request: HttpRequest, deadline: float) -> None:
        self._pool = pool
        self._request: HttpRequest | None = request
        self._deadline = deadline
        self._closer: ResponseBody | AbstractAsyncContextManager[HttpResponse] | None = None

    async def __aenter__(self) -> HttpResponse:
        request, self._request = self._request, None
        if request is None:
            raise RuntimeError("a response can be opened only once")
        response, self._closer = await self._pool._enter(request, self._deadline)  # pyright: ignore[reportPrivateUsage]
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        closer, self._closer = self._closer, None
        if closer is None:
            return None
        if isinstance(closer, ResponseBody):
            await self._pool._leave(closer)  # pyright: ignore[reportPrivateUsage]
            return None
        return await closer.__aexit__(exc_type, exc, tb)


@final
class _SyncPieces:
    """The pieces of a sync body (an injected transport's), with a checkpoint between."""

    __slots__ = ("_pieces",)

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self._pieces = iter(stream)

    def __aiter__(self) -> _SyncPieces:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return next(self._pieces)
        except StopIteration:
            raise StopAsyncIteration from None
