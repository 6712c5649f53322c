"""The fake provider's request handling, and `MockTransport`, which serves it in-process.

`FakeProvider` is sans-I/O: given a request's method, path, headers and body it picks the
scenario and renders a `Reply` (status, headers, events and pacing). `MockTransport` plays
replies to an ``httpx.AsyncClient`` without sockets; the fake server of
`llm_invocation.testing` writes them to real ones. Both route by the end of the URL path, so
any base URL works:

=====================================================  =================================
path ends with                                         answer
=====================================================  =================================
``/chat/completions``                                  OpenAI chat completion
``/completions``                                       OpenAI legacy text completion
``/responses``                                         OpenAI Responses API answer
``/responses/input_tokens``                            OpenAI input token count
``/messages``                                          Anthropic message
``/messages/count_tokens``                             Anthropic token count
``/models/{model}:generateContent``                    Gemini answer
``/models/{model}:streamGenerateContent``              Gemini stream (SSE with ``alt=sse``,
                                                       a JSON array without)
``/models/{model}:countTokens``                        Gemini token count
``/models``                                            the model list of the format
=====================================================  =================================

The format of a model list or of an error for an unknown path is the path's first segment
when it is ``openai``, ``anthropic`` or ``gemini`` (the fake server's prefixes), else told by
the headers (``anthropic-version``, ``x-goog-api-key``), else the transport's default.
"""

from __future__ import annotations

import collections
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, final

import httpx
import msgspec
import trio

from ._render import Event, Renderer, WireFormat, as_dict
from ._render_anthropic import AnthropicRenderer
from ._render_gemini import GeminiRenderer
from ._render_openai import OpenAIRenderer
from ._render_responses import ResponsesRenderer
from ._scenario import Disconnect, HttpError, Scenario, Scenarios, Stall

__all__ = [
    "FakeProvider",
    "MAX_RECORDED",
    "MockTransport",
    "RecordedRequest",
    "Reply",
    "renderer_for",
]

MAX_RECORDED: Final = 1000
"""How many requests the transport and the server remember (the most recent ones)."""

SECRET_HEADERS: Final = frozenset(
    ("authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie")
)
_CHUNKED_CUT: Final = (
    "peer closed connection without sending complete message body (incomplete chunked read)"
)
_JSON_ANY: Final = msgspec.json.Decoder()

_RENDERERS: Final[Mapping[WireFormat, Renderer]] = {
    "openai": OpenAIRenderer(),
    "anthropic": AnthropicRenderer(),
    "gemini": GeminiRenderer(),
}
_CHAT: Final = OpenAIRenderer(legacy=False)
_LEGACY: Final = OpenAIRenderer(legacy=True)
_RESPONSES: Final = ResponsesRenderer()
_GEMINI_ARRAY: Final = GeminiRenderer(sse=False)


def renderer_for(format: WireFormat) -> Renderer:
    """The renderer of a wire format (OpenAI's decides chat or legacy by the request body).

    Raises:
        KeyError: ``format`` is not a known wire format.
    """
    return _RENDERERS[format]


@final
class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request as the fake provider saw it, credentials masked.

    Attributes:
        method: the HTTP method.
        url: the full URL; a ``key`` query parameter's value is ``"present"``.
        path: the URL path.
        headers: the headers, names in lower case; credential headers (``authorization``,
            ``x-api-key``, ``x-goog-api-key``, ``api-key``...) have the value ``"present"``.
        json: the decoded JSON body (None without one, or when it is not JSON).
        model: the model the request named (in its body or, for Gemini, its path).
    """

    method: str
    url: str
    path: str
    headers: dict[str, str]
    json: Any = None
    model: str | None = None


class Reply:
    """A rendered answer and how to play it.

    Attributes:
        status: the HTTP status.
        headers: the response headers (no framing headers: the player adds those).
        streaming: the body is a stream of events (chunked); else it has a known length.
        events: the body: bytes to send, with `Stall` and `Disconnect` markers.
        content_length: the body's full length when not streaming.
        ttft: seconds before the first body byte (a non-streamed answer's headers wait too).
        interval: seconds between two streamed events.
    """

    __slots__ = ("content_length", "events", "headers", "interval", "status", "streaming", "ttft")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        events: list[Event],
        *,
        streaming: bool = False,
        ttft: float = 0.0,
        interval: float = 0.0,
    ) -> None:
        self.status = status
        self.headers = headers
        self.events = events
        self.streaming = streaming
        self.ttft = ttft
        self.interval = interval
        self.content_length = 0
        if not streaming:
            self.content_length = sum(len(e) for e in events if isinstance(e, bytes))


def _redact_url(url: str, query: str) -> str:
    if "key=" not in query:
        return url
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    masked = urllib.parse.urlencode([(k, "present" if k == "key" else v) for k, v in pairs])
    return url.replace(query, masked) if query in url else url


def _detect_format(
    path: str, headers: Mapping[str, str], query: str, default: WireFormat
) -> WireFormat:
    first = path.lstrip("/").partition("/")[0]
    if first == "openai":
        return "openai"
    if first == "anthropic":
        return "anthropic"
    if first == "gemini":
        return "gemini"
    if "anthropic-version" in headers:
        return "anthropic"
    if "x-goog-api-key" in headers or "key=" in query:
        return "gemini"
    return default


@final
class FakeProvider:
    """Sans-I/O request handling shared by `MockTransport` and the fake server.

    Args:
        scenarios: the scripts to answer from.
        default_format: the format of model lists and errors when nothing else tells.
    """

    __slots__ = ("_recorded", "default_format", "scenarios")

    def __init__(self, scenarios: Scenarios, *, default_format: WireFormat = "openai") -> None:
        self.scenarios = scenarios
        self.default_format: WireFormat = default_format
        self._recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=MAX_RECORDED)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The recorded requests, oldest first (the last `MAX_RECORDED`)."""
        return list(self._recorded)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        self._recorded.clear()

    def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        url: str,
    ) -> Reply:
        """Answer one request.

        Args:
            method: the HTTP method, upper case.
            path: the decoded URL path.
            query: the raw query string (without ``?``).
            headers: the request headers, names in lower case.
            body: the request body.
            url: the full URL, for the record.
        """
        payload: Any = None
        bad_json = False
        if body:
            try:
                payload = _JSON_ANY.decode(body)
            except msgspec.DecodeError:
                bad_json = True
        format_ = _detect_format(path, headers, query, self.default_format)
        last = path.rpartition("/")[2]
        gemini_model: str | None = None
        gemini_method = ""
        if ":" in last and "/models/" in path:
            gemini_model, _, gemini_method = last.rpartition(":")
            format_ = "gemini"
        model = gemini_model
        if model is None:
            named = as_dict(payload).get("model")
            model = named if isinstance(named, str) else None
        masked = {k: "present" if k in SECRET_HEADERS else v for k, v in headers.items()}
        self._recorded.append(
            RecordedRequest(
                method=method,
                url=_redact_url(url, query),
                path=path,
                headers=masked,
                json=payload,
                model=model,
            )
        )
        renderer = renderer_for(format_)
        if path.rstrip("/").endswith("/models"):
            if method != "GET":
                return _reply_error(renderer, 405, f"method {method} is not allowed on {path}")
            names = [renderer.default_model]
            names.extend(name for name in self.scenarios.names() if name not in names)
            return Reply(200, dict(renderer.json_headers), [renderer.render_models(names)])
        if method != "POST":
            known = path.endswith(
                ("/completions", "/responses", "/messages", "/count_tokens", "/input_tokens")
            )
            status = 405 if known or gemini_method else 404
            return _reply_error(renderer, status, f"no route for {method} {path}")
        if bad_json or not isinstance(payload, dict):
            return _reply_error(renderer, 400, "the request body is not a JSON object")
        request: dict[str, Any] = payload  # pyright: ignore[reportUnknownVariableType]
        if gemini_method:
            return self._gemini(gemini_method, model or "", request, query)
        if path.endswith(("/messages/count_tokens", "/responses/input_tokens")):
            target = _RENDERERS["anthropic" if path.endswith("/count_tokens") else "openai"]
            return Reply(200, dict(target.json_headers), [target.render_count_tokens(request)])
        if path.endswith("/chat/completions"):
            chosen: Renderer = _CHAT
        elif path.endswith("/completions"):
            chosen = _LEGACY
        elif path.endswith("/responses"):
            chosen = _RESPONSES
        elif path.endswith("/messages"):
            chosen = _RENDERERS["anthropic"]
        else:
            return _reply_error(renderer, 404, f"no route for {method} {path}")
        if not model:
            return _reply_error(chosen, 400, "model: field required")
        scenario = self.scenarios.next(model)
        return _answer(chosen, scenario, request, model, stream=request.get("stream") is True)

    def _gemini(self, method: str, model: str, request: dict[str, Any], query: str) -> Reply:
        renderer = _RENDERERS["gemini"]
        if method == "countTokens":
            return Reply(200, dict(renderer.json_headers), [renderer.render_count_tokens(request)])
        if method == "generateContent":
            stream = False
        elif method == "streamGenerateContent":
            stream = True
            if "alt=sse" not in query:
                renderer = _GEMINI_ARRAY
        else:
            return _reply_error(renderer, 404, f"unknown method {method!r}")
        if not model:
            return _reply_error(renderer, 400, "the path names no model")
        scenario = self.scenarios.next(model)
        return _answer(renderer, scenario, request, model, stream=stream)


def _reply_error(renderer: Renderer, status: int, message: str) -> Reply:
    status, headers, data = renderer.render_error(HttpError(status=status, message=message))
    return Reply(status, headers, [data])


def _answer(
    renderer: Renderer,
    scenario: Scenario,
    request: dict[str, Any],
    model: str,
    *,
    stream: bool,
) -> Reply:
    failure = scenario.failure
    if stream and not isinstance(failure, HttpError):
        return Reply(
            200,
            renderer.stream_headers(scenario),
            renderer.render_stream(scenario, request, model=model),
            streaming=True,
            ttft=scenario.ttft,
            interval=scenario.interval,
        )
    status, headers, body = renderer.render_body(scenario, request, model=model)
    events: list[Event] = [body]
    if isinstance(failure, Stall):
        events = [failure, body]
    elif isinstance(failure, Disconnect):
        events = [body[: len(body) // 2], failure]
    reply = Reply(status, headers, events, ttft=scenario.ttft)
    reply.content_length = len(body)
    return reply


# -- the in-process transport -------------------------------------------------------------


class _ReplyStream(httpx.AsyncByteStream):
    """A reply's body, paced with ``trio.sleep``.

    A plain async iterator, not an async generator: a consumer that stops early (after an
    error event, say) leaves nothing for trio's async-generator finalizer to warn about.
    """

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._next = 0
        self._received = 0
        self._sent_any = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        reply = self._reply
        events = reply.events
        while self._next < len(events):
            if self._next == 0 and reply.streaming:
                await trio.sleep(reply.ttft)
            event = events[self._next]
            self._next += 1
            if isinstance(event, bytes):
                if reply.streaming and self._sent_any:
                    await trio.sleep(reply.interval)
                self._sent_any = True
                self._received += len(event)
                return event
            if isinstance(event, Stall):
                if reply.streaming:
                    await trio.sleep(event.seconds)
            elif reply.streaming:
                raise httpx.RemoteProtocolError(_CHUNKED_CUT)
            else:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    f"(received {self._received} bytes, expected {reply.content_length})"
                )
        raise StopAsyncIteration


@final
class MockTransport(httpx.AsyncBaseTransport):
    """An in-process fake provider for ``httpx.AsyncClient(transport=...)``: no sockets.

    Streams are paced with ``trio.sleep`` (exact under ``autojump_clock``): the headers come
    back at once, the body waits ``ttft`` and then ``interval`` between events. A `Stall`
    sleeps (cancellable), a `Disconnect` raises ``httpx.RemoteProtocolError`` from the body.
    A non-streamed answer waits ``ttft`` (and a `Stall`) before its headers.

    Args:
        scenarios: the scripts to answer from (a fresh default registry when None).
        format: the wire format of model lists and errors on paths that do not tell.
    """

    def __init__(
        self, scenarios: Scenarios | None = None, *, format: WireFormat = "openai"
    ) -> None:
        self.scenarios = scenarios if scenarios is not None else Scenarios()
        self._provider = FakeProvider(self.scenarios, default_format=format)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests seen, oldest first (at most the last 1000), credentials masked."""
        return self._provider.requests

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        self._provider.clear_requests()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer ``request`` from the scenarios.

        Raises:
            trio.Cancelled: the caller gave up while a non-streamed answer was delayed.
        """
        body = await request.aread()
        url = request.url
        query = url.query.decode("ascii", "replace")
        headers: dict[str, str] = {}
        for name, value in request.headers.multi_items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        reply = self._provider.handle(
            request.method.upper(), url.path, query, headers, body, url=str(url)
        )
        if not reply.streaming:
            await trio.sleep(reply.ttft)
            first = reply.events[0]
            if isinstance(first, Stall):
                await trio.sleep(first.seconds)
        response_headers = list(reply.headers.items())
        if reply.streaming:
            response_headers.append(("transfer-encoding", "chunked"))
        else:
            response_headers.append(("content-length", str(reply.content_length)))
        return httpx.Response(
            reply.status,
            headers=response_headers,
            stream=_ReplyStream(reply),
            extensions={"http_version": b"HTTP/1.1"},
        )
