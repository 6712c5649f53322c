"""The OpenAI-compatible gateway: ``/v1`` on the front's port, for any OpenAI SDK or tool.

Endpoints: ``POST /v1/chat/completions`` (streamed as server-sent events or not),
``POST /v1/responses`` (text and function calls, streamed or not), ``GET /v1/models`` and
``GET /v1/models/{id}`` (the models of every configured provider, as ``provider:model``).
A request's ``model`` may name its provider (``"anthropic:claude-sonnet-4-5"``); a bare
name is resolved the way the client resolves it.

Every call runs through the service's ordinary invoke path (rate limits, budgets, the
ledger) with the name of the bearer token it came with in its metadata (``token``), so
``tag:token=<name>`` budgets apply and usage reports group by it. The gateway never runs
the tool loop: a request offers exactly the tools it lists (none when it lists none), and
the model's calls come back to the caller, who sends the results in the next request.

Access. With tokens configured, every request needs ``Authorization: Bearer <token>``
(401 otherwise). A request with an ``Origin`` header (a browser's) is refused with 403
unless the origin is allowed: listed in ``allowed_origins``, or, when neither those nor
tokens are configured, one of the front's own loopback origins.

Errors are OpenAI's error objects (``{"error": {"message", "type", "param", "code"}}``)
with the matching status: 400 for a malformed body or a field out of range, 401, 403, 404
for an unknown path, model or provider (``model_not_found``), 413 for a body over
``max_body_size``, 429 for a rate limit (``rate_limit_exceeded``) or a budget
(``insufficient_quota``), 502 and 503 when the provider fails, 504 when our own time limit
ran out. Once a stream has started, an error is its last event. A client that disconnects
cancels its upstream call (settled as cancelled). When the front stops, calls in flight
have the front's grace to finish, then end with a 503 error (``server_shutting_down``).
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol, TypeVar, final, runtime_checkable

import msgspec
import trio

from ...config import WebSocketConfig
from ...errors import (
    AuthenticationError,
    ConfigurationError,
    CostExceeded,
    InvalidRequest,
    InvocationTimeout,
    LLMError,
    ModelNotSupported,
    ProviderNotFound,
    ProviderOverloaded,
    RateLimited,
)
from ...types import ModelInfo, Request, Response, StreamChunk, Usage
from ._connection import Counters, FrontState
from ._exchange import Exchange, NamedTokens, bearer_token
from ._gateway_chat import CHAT_DECODER, ChatStreamWriter, chat_completion, chat_request
from ._gateway_responses import RESPONSES_DECODER, ResponsesStreamWriter, responses_request
from ._http import BadRequest, RequestHead, loopback_origins
from ._service import InvocationService

__all__ = ["PREFIX", "Gateway", "openai_error"]

log = logging.getLogger("llm_invocation.websocket")

PREFIX: Final = "/v1"
_ENCODER: Final = msgspec.json.Encoder()
_SSE: Final = "text/event-stream; charset=utf-8"
_STREAM_HEADERS: Final = [("Cache-Control", "no-store"), ("X-Accel-Buffering", "no")]

_LINGER: Final = 2.0
"""Seconds a refused client has to stop sending before its connection is closed."""

_ErrorBody = dict[str, Any]
_T = TypeVar("_T")


class _Refusal(Exception):
    """A request answered with an OpenAI error object and ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: _ErrorBody = {"message": message, "type": type, "param": param, "code": code}
        self.headers = headers or []


def _param(error: LLMError) -> str | None:
    details = error.details or {}
    for key in ("field", "path"):
        value = details.get(key)
        if isinstance(value, str) and value:
            return value.removeprefix("$.")
    return None


def openai_error(error: LLMError) -> tuple[int, _ErrorBody, list[tuple[str, str]]]:
    """The status, OpenAI error object and headers that answer ``error``."""
    message = error.message
    headers: list[tuple[str, str]] = []
    if error.retry_after is not None and error.retry_after >= 0:
        headers.append(("Retry-After", str(math.ceil(error.retry_after))))
    status: int
    kind, code = "server_error", error.code.value
    param: str | None = None
    match error:
        case InvalidRequest():
            status, kind, code, param = 400, "invalid_request_error", None, _param(error)
        case ProviderNotFound() | ModelNotSupported():
            status, kind, code = 404, "invalid_request_error", "model_not_found"
        case RateLimited():
            status, kind, code = 429, "rate_limit_error", "rate_limit_exceeded"
        case CostExceeded():
            status, kind, code = 429, "insufficient_quota", "insufficient_quota"
        case InvocationTimeout():
            status, kind, code = 504, "timeout", "timeout"
        case ProviderOverloaded():
            status, code = 503, "overloaded"
        case AuthenticationError():
            # the provider refused the server's own credentials: not the caller's fault
            status, code = 502, "upstream_authentication_failed"
            message = "the provider refused this server's credentials"
        case ConfigurationError():
            status, code = 503, "provider_unavailable"
        case _:
            status = 502
    return status, {"message": message, "type": kind, "param": param, "code": code}, headers


def _error_json(body: _ErrorBody) -> bytes:
    return _ENCODER.encode({"error": body})


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        _, sep, path = text.rpartition(" - at `")
        param = path.rstrip("`").removeprefix("$").removeprefix(".") if sep else None
        raise _Refusal(400, f"invalid request body: {text}", param=param or None) from None
    except msgspec.DecodeError:
        raise _Refusal(400, "the request body is not valid JSON", code="invalid_json") from None


class _Writer(Protocol):
    def chunk(self, chunk: StreamChunk) -> bytes: ...

    def end(self, usage: Usage | None) -> bytes: ...

    def error(self, body: _ErrorBody) -> bytes: ...


@runtime_checkable
class _ModelLister(Protocol):
    async def list_models(
        self, provider: str | None = None, *, refresh: bool = False
    ) -> list[ModelInfo]: ...


Ending = Literal["gone", "shutdown"]


@final
class _Call:
    """One invocation the gateway relays: its cancel scope and why it was cut short."""

    __slots__ = ("ending", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.ending: Ending | None = None

    def end(self, why: Ending) -> None:
        if self.ending is None:
            self.ending = why
        self.scope.cancel()


@final
class Gateway:
    """Serves the ``/v1`` endpoints of one front (see the module docstring).

    Args:
        service: what runs the invocations.
        config: the front's configuration (tokens, origins, ``max_body_size``).
        counters: the front's counters (requests, refusals).
        read_timeout: seconds a client has to send its request body (longer: 408).
    """

    __slots__ = ("_config", "_counters", "_read_timeout", "_service", "_tokens")

    def __init__(
        self,
        service: InvocationService,
        config: WebSocketConfig,
        counters: Counters,
        *,
        read_timeout: float = 10.0,
    ) -> None:
        self._service = service
        self._read_timeout = read_timeout
        self._config = config
        self._counters = counters
        self._tokens = NamedTokens(
            {name: token.reveal() for name, token in config.named_tokens().items()}
        )

    @staticmethod
    def serves(head: RequestHead) -> bool:
        """Whether ``head`` is for the gateway (a path under ``/v1``)."""
        return head.path == PREFIX or head.path.startswith(PREFIX + "/")

    async def serve(
        self, stream: trio.abc.Stream, head: RequestHead, state: FrontState, *, port: int
    ) -> None:
        """Answer one request whose head was read.

        Raises:
            BadRequest: the head does not parse again as a request (the front answers).
            trio.BrokenResourceError: the client went away (nothing is left to answer).
        """
        self._counters.http_requests += 1
        exchange = Exchange(stream, head)
        try:
            await self._route(exchange, state, port)
        except BadRequest as exc:
            code = "request_too_large" if exc.status == 413 else None
            await self._refuse(exchange, _Refusal(exc.status, str(exc), code=code))
        except _Refusal as refusal:
            await self._refuse(exchange, refusal)
        except LLMError as error:
            status, body, headers = openai_error(error)
            await self._refuse(exchange, _Refusal(status, "", headers=headers), body)

    async def _refuse(
        self, exchange: Exchange, refusal: _Refusal, body: _ErrorBody | None = None
    ) -> None:
        if exchange.response_started:  # pragma: no cover - streams answer their own errors
            return
        await exchange.respond(
            refusal.status, _error_json(body or refusal.body), headers=refusal.headers
        )
        with trio.move_on_after(_LINGER):
            await exchange.linger()

    # -- access and routing --------------------------------------------------------------------

    def _check_access(self, head: RequestHead, port: int) -> str | None:
        """The name of the request's token (None without tokens).

        Raises:
            _Refusal: 403 for an origin not allowed, 401 for a missing or unknown token.
        """
        origin = head.header("origin")
        if origin is not None:
            allowed = frozenset(self._config.allowed_origins)
            if not allowed and self._tokens.open:
                allowed = loopback_origins(port)
            if allowed and origin not in allowed:
                self._counters.origin_rejections += 1
                raise _Refusal(403, "origin not allowed", code="origin_not_allowed")
        if self._tokens.open:
            return None
        presented = bearer_token(head)
        name = self._tokens.name_of(presented) if presented is not None else None
        if name is None:
            self._counters.auth_failures += 1
            message = "invalid bearer token" if presented is not None else "no bearer token"
            raise _Refusal(
                401,
                f"{message}: send Authorization: Bearer <token>",
                code="invalid_api_key",
                headers=[("WWW-Authenticate", 'Bearer realm="llm"')],
            )
        return name

    async def _route(self, exchange: Exchange, state: FrontState, port: int) -> None:
        head = exchange.head
        token = self._check_access(head, port)
        path, method = head.path, head.method
        endpoint: Callable[[], Any] | None = None
        allow = "GET"
        if path in ("/v1/chat/completions", "/v1/responses"):
            allow = "POST"
            if method == "POST":
                api = "chat" if path.endswith("completions") else "responses"
                endpoint = lambda: self._create(exchange, state, api, token)  # noqa: E731 - one use
        elif path == "/v1/models":
            if method == "GET":
                endpoint = lambda: self._models(exchange)  # noqa: E731 - one use
        elif path.startswith("/v1/models/"):
            if method == "GET":
                model = urllib.parse.unquote(path.removeprefix("/v1/models/"))
                endpoint = lambda: self._model(exchange, model)  # noqa: E731 - one use
        else:
            raise _Refusal(404, f"no endpoint {method} {path}", code="unknown_url")
        if endpoint is None:
            raise _Refusal(
                405,
                f"{path} takes {allow} only",
                code="method_not_allowed",
                headers=[("Allow", allow)],
            )
        await endpoint()

    # -- models --------------------------------------------------------------------------------

    async def _list(self) -> list[ModelInfo]:
        service = self._service
        if isinstance(service, _ModelLister):
            return await service.list_models()
        model = service.config.model
        if not model:
            return []
        provider, _, name = model.rpartition(":")
        return [ModelInfo(id=name, provider=provider or service.config.default_provider)]

    @staticmethod
    def _entry(info: ModelInfo) -> dict[str, Any]:
        created = int(info.created.timestamp()) if info.created is not None else 0
        return {
            "id": f"{info.provider}:{info.id}",
            "object": "model",
            "created": created,
            "owned_by": info.provider,
        }

    async def _models(self, exchange: Exchange) -> None:
        data = [self._entry(info) for info in await self._list()]
        await exchange.respond(200, _ENCODER.encode({"object": "list", "data": data}))

    async def _model(self, exchange: Exchange, model: str) -> None:
        for info in await self._list():
            if model in (f"{info.provider}:{info.id}", info.id):
                await exchange.respond(200, _ENCODER.encode(self._entry(info)))
                return
        raise _Refusal(
            404, f"the model {model!r} does not exist", code="model_not_found", param="model"
        )

    # -- invocations ---------------------------------------------------------------------------

    async def _create(
        self,
        exchange: Exchange,
        state: FrontState,
        api: Literal["chat", "responses"],
        token: str | None,
    ) -> None:
        body = b""
        with trio.move_on_after(self._read_timeout) as reading:
            body = await exchange.read_body(limit=self._config.max_body_size)
        if reading.cancelled_caught:
            raise _Refusal(408, "the request body did not arrive in time", code="request_timeout")
        if state.closing.is_set():
            raise _Refusal(
                503, "the server is shutting down", type="server_error", code="server_shutting_down"
            )
        tags: dict[str, Any] = {"token": token} if token is not None else {}
        stamp = int(time.time())
        writer: _Writer | None
        if api == "chat":
            chat = _decode(CHAT_DECODER, body)
            request = chat_request(chat, metadata=tags)
            id = f"chatcmpl-{uuid.uuid4().hex}"
            include_usage = chat.stream_options is not None and chat.stream_options.include_usage
            writer = (
                _ChatWriter(id=id, model=chat.model, include_usage=include_usage)
                if chat.stream
                else None
            )

            def whole(response: Response) -> dict[str, Any]:
                return chat_completion(response, id=id, model=chat.model, created=stamp)
        else:
            spec = _decode(RESPONSES_DECODER, body)
            request = responses_request(spec, metadata=tags)
            id = f"resp_{uuid.uuid4().hex}"
            responses = ResponsesStreamWriter(id=id, model=spec.model, body=spec, created=stamp)
            writer = responses if spec.stream else None

            def whole(response: Response) -> dict[str, Any]:
                return responses.whole(response, model=spec.model)

        call = _Call()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_peer, exchange, call)
            nursery.start_soon(self._watch_shutdown, state, call)
            try:
                await self._invoke(exchange, call, request, writer, whole)
            finally:
                nursery.cancel_scope.cancel()
        if call.ending == "shutdown":
            refusal = _Refusal(
                503,
                "cancelled: the server is shutting down",
                type="server_error",
                code="server_shutting_down",
            )
            await self._fail(exchange, writer, refusal.status, refusal.body, [])

    async def _watch_peer(self, exchange: Exchange, call: _Call) -> None:
        await exchange.wait_peer_closed()
        call.end("gone")

    @staticmethod
    async def _watch_shutdown(state: FrontState, call: _Call) -> None:
        await state.closing.wait()
        await trio.sleep_until(state.grace_deadline)
        call.end("shutdown")

    async def _invoke(
        self,
        exchange: Exchange,
        call: _Call,
        request: Request,
        writer: _Writer | None,
        whole: Callable[[Response], dict[str, Any]],
    ) -> None:
        with call.scope:
            try:
                relay = self._service.invoke(request)
                async with relay:
                    async for item in relay:
                        if writer is not None and isinstance(item, StreamChunk):
                            await self._send(exchange, call, writer.chunk(item))
                if writer is None:
                    await self._deliver(exchange, call, _ENCODER.encode(whole(relay.response)))
                else:
                    await self._send(exchange, call, writer.end(relay.usage), last=True)
            except LLMError as error:
                status, body, headers = openai_error(error)
                log.debug("gateway call failed: %s", error.code.value)
                await self._fail(exchange, writer, status, body, headers)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                call.end("gone")
            except Exception:  # a bug in one call must not take the front down
                log.exception("gateway call failed unexpectedly")
                body = {
                    "message": "the call failed unexpectedly (see the server's log)",
                    "type": "server_error",
                    "param": None,
                    "code": "internal_error",
                }
                await self._fail(exchange, writer, 500, body, [])
        if call.ending == "gone":
            log.debug("gateway client went away: its call was cancelled")

    async def _send(
        self, exchange: Exchange, call: _Call, data: bytes, *, last: bool = False
    ) -> None:
        """Send events; a broken connection ends the call (its upstream call is cancelled)."""
        try:
            if not exchange.response_started:
                await exchange.start(200, content_type=_SSE, headers=_STREAM_HEADERS, first=data)
                if last:
                    await exchange.finish()
            elif last:
                await exchange.finish(data)
            else:
                await exchange.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            call.end("gone")
            await trio.lowlevel.checkpoint()  # raises Cancelled: the call's scope is cancelled

    async def _deliver(self, exchange: Exchange, call: _Call, body: bytes) -> None:
        try:
            await exchange.respond(200, body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            call.end("gone")

    async def _fail(
        self,
        exchange: Exchange,
        writer: _Writer | None,
        status: int,
        body: _ErrorBody,
        headers: list[tuple[str, str]],
    ) -> None:
        """Answer an error: as the response when none started, else as the stream's end
        (nothing when the whole response went out already)."""
        try:
            if exchange.response_complete:
                return
            if not exchange.response_started:
                await exchange.respond(status, _error_json(body), headers=headers)
            elif writer is not None:
                await exchange.finish(writer.error(body))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("gateway client went away before its error was sent")


@final
class _ChatWriter:
    """`ChatStreamWriter` plus the in-stream error event."""

    __slots__ = ("_inner",)

    def __init__(self, *, id: str, model: str, include_usage: bool) -> None:
        self._inner = ChatStreamWriter(id=id, model=model, include_usage=include_usage)

    def chunk(self, chunk: StreamChunk) -> bytes:
        return self._inner.chunk(chunk)

    def end(self, usage: Usage | None) -> bytes:
        return self._inner.end(usage)

    def error(self, body: _ErrorBody) -> bytes:
        return b"data: " + _error_json(body) + b"\n\n"
