"""Streamable HTTP under the MCP session: lost sessions found at once, sessions closed.

The SDK's streamable HTTP client turns a server that no longer knows our session (it
restarted: HTTP 404, or 400 with a session error and a JSON-RPC error without an ``id``)
into a plain error for the one request that met it; nothing tells the connection. Here an
``httpx2`` transport wrapper watches every exchange with the server:

- a response that says the session is gone (404 to a request that carried our session id,
  or 400 whose body speaks of the session) reports the session lost, so the connection
  reconnects at once instead of waiting for the next keep-alive ping;
- a ``tools/call`` POST that the server refused that way, or that could not even be
  connected, was not delivered: the server cannot have run it. The call's `Delivery`
  record (a context variable set around the call; the SDK carries the caller's context
  into the task that POSTs the message) says so, and the call may be retried once.

On exit the session is closed at the server with a ``DELETE`` carrying its id, as the
specification asks, shielded and bounded (the SDK's own close runs unshielded, so a
cancelled connection, the usual way one ends, never sent it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Final, cast, final

import httpx2
import trio
from mcp.client._transport import TransportStreams
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from ._auth import MCPAuth, provided_headers

__all__ = ["Delivery", "open_sse", "open_streamable_http", "tracking_delivery"]

log = logging.getLogger("llm_invocation.mcp")

MCP_SESSION_ID: Final = "mcp-session-id"
# How long closing the session at the server (DELETE) may take, in seconds.
CLOSE_TIMEOUT: Final = 2.0


@final
class Delivery:
    """Whether one request certainly did not reach the server, and why."""

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused: str | None = None


_DELIVERY: ContextVar[Delivery | None] = ContextVar("llm_invocation_mcp_delivery", default=None)


@contextmanager
def tracking_delivery() -> Generator[Delivery]:
    """A `Delivery` record for the request sent inside the block."""
    record = Delivery()
    token = _DELIVERY.set(record)
    try:
        yield record
    finally:
        _DELIVERY.reset(token)


def _is_call(request: httpx2.Request) -> bool:
    """Whether ``request`` POSTs a ``tools/call`` request (only those are ever retried)."""
    if request.method != "POST":
        return False
    try:
        body: object = json.loads(request.content)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(body, dict):
        return False
    message = cast("dict[str, object]", body)
    return message.get("method") == "tools/call" and "id" in message


def _refuse(request: httpx2.Request, reason: str) -> None:
    record = _DELIVERY.get()
    if record is not None and record.refused is None and _is_call(request):
        record.refused = reason


@final
class _SessionWatch(httpx2.AsyncBaseTransport):
    """Wraps the real transport: records the session id, reports a lost session, and says
    when the server has answered the standalone ``GET`` stream."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport,
        on_lost: Callable[[str], None],
        on_listening: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._on_lost = on_lost
        self._on_listening = on_listening
        self.session_id: str | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        sent_session = request.headers.get(MCP_SESSION_ID)
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.ConnectError as exc:
            _refuse(request, f"could not connect: {exc}")
            raise
        if request.method == "GET" and sent_session is not None:
            # The standalone stream is open (or the server has none, 405): from here on,
            # what the server sends of its own accord (logs, roots requests, list changes)
            # reaches us, or never will.
            self._on_listening()
        if session_id := response.headers.get(MCP_SESSION_ID):
            self.session_id = session_id
        if sent_session is None or request.method == "DELETE":
            return response
        if response.status_code not in (400, 404):
            return response
        body = await response.aread()
        await response.aclose()
        replay = httpx2.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )
        if response.status_code == 404 or b"session" in body.lower():
            reason = f"the server no longer knows the session (HTTP {response.status_code})"
            _refuse(request, reason)
            self._on_lost(reason)
        return replay

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _close_session(client: httpx2.AsyncClient, url: str, session_id: str) -> None:
    """``DELETE`` the session at the server, shielded and bounded; a failure is logged."""
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
        try:
            response = await client.delete(url, headers={MCP_SESSION_ID: session_id})
        except httpx2.HTTPError as exc:
            log.debug("closing the MCP session at %s failed: %s", url, exc)
            return
        if response.status_code not in (200, 202, 204, 404, 405):
            log.debug("closing the MCP session at %s: HTTP %d", url, response.status_code)
    if scope.cancelled_caught:
        log.debug("closing the MCP session at %s took over %gs", url, CLOSE_TIMEOUT)


@asynccontextmanager
async def open_streamable_http(
    url: str,
    *,
    headers: dict[str, str],
    timeout: float,
    on_lost: Callable[[str], None],
    on_listening: Callable[[], None],
    auth: MCPAuth | None = None,
) -> AsyncGenerator[TransportStreams]:
    """The SDK's streamable HTTP transport, watched (see the module).

    ``on_lost`` is called (synchronously, maybe more than once) with the reason whenever a
    response shows the session is gone; ``on_listening`` whenever the server answers the
    standalone ``GET`` stream (the SDK opens it once the session is initialised). ``auth``
    is an ``httpx2.Auth`` or a header provider, called here, once per connection
    (`MCPAuth`).
    """
    headers, http_auth = await _authenticated(headers, auth)
    # No read timeout: the standalone GET stream idles until the server has something to
    # say, and the SDK gives up on that stream for good after two failed reads (tool list
    # changes would then go unheard). Calls have their own timeouts; pings find dead servers.
    http_timeout = httpx2.Timeout(timeout, read=None)
    watch = _SessionWatch(httpx2.AsyncHTTPTransport(), on_lost, on_listening)
    async with httpx2.AsyncClient(
        headers=headers, timeout=http_timeout, transport=watch, auth=http_auth
    ) as client:
        try:
            async with streamable_http_client(
                url, http_client=client, terminate_on_close=False
            ) as streams:
                yield streams
        finally:
            if watch.session_id is not None:
                await _close_session(client, url, watch.session_id)


async def _authenticated(
    headers: dict[str, str], auth: MCPAuth | None
) -> tuple[dict[str, str], httpx2.Auth | None]:
    """The headers and the ``httpx2.Auth`` of one connection: a provider is called now."""
    if auth is None or isinstance(auth, httpx2.Auth):
        return headers, auth
    return {**headers, **await provided_headers(auth)}, None


@asynccontextmanager
async def open_sse(
    url: str, *, headers: dict[str, str], timeout: float, read_timeout: float, auth: MCPAuth | None
) -> AsyncGenerator[TransportStreams]:
    """The SDK's legacy SSE transport, with `MCPAuth` (a provider is called once, here)."""
    headers, http_auth = await _authenticated(headers, auth)
    async with sse_client(
        url, headers=headers or None, timeout=timeout, sse_read_timeout=read_timeout, auth=http_auth
    ) as streams:
        yield streams
