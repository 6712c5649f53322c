"""A provider of your own: a codec for a made-up wire format, registered on a running client.

"LineChat" is a protocol invented for this example. A request is one JSON object posted to
``/chat`` (the key in an ``x-line-key`` header); a streamed answer is JSON lines
(``application/x-ndjson``): ``{"type": "text", "text": ...}`` pieces, then
``{"type": "done", "reason": ..., "usage": {"in": ..., "out": ...}}``, or
``{"type": "error", ...}``; a whole answer is one JSON object; errors are HTTP statuses with
``{"error": {"code": ..., "message": ...}}``. The codec is sans-I/O: it only turns requests
into bytes and bytes into chunks, responses and typed errors. A small LineChat server runs
here on 127.0.0.1 (port 0), so the example runs offline.

    python examples/custom_provider.py
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import h11
import msgspec
import trio

import llm_invocation as llm
from llm_invocation.config import ProviderConfig
from llm_invocation.providers import (
    JSON_ERRORS,
    Choice,
    Feature,
    HttpRequest,
    Message,
    ModelInfo,
    ProviderCodec,
    RateLimitInfo,
    Request,
    Response,
    StreamChunk,
    StreamDecoder,
    Usage,
    checked_usage,
    error_for_status,
)

# -- the codec ---------------------------------------------------------------------------------


class LineUsage(msgspec.Struct):
    input: int = msgspec.field(name="in", default=0)
    output: int = msgspec.field(name="out", default=0)

    def usage(self) -> Usage | None:
        return checked_usage(Usage(prompt_tokens=self.input, completion_tokens=self.output))


class LineEvent(msgspec.Struct):
    type: str
    text: str = ""
    reason: str | None = None
    usage: LineUsage | None = None
    code: str = ""
    message: str = ""


class LineAnswer(msgspec.Struct):
    id: str
    text: str
    reason: str = "stop"
    usage: LineUsage | None = None


class LineError(msgspec.Struct):
    code: str = ""
    message: str = ""


class LineErrorBody(msgspec.Struct):
    error: LineError


_EVENT = msgspec.json.Decoder(LineEvent)
_ANSWER = msgspec.json.Decoder(LineAnswer)
_ERROR = msgspec.json.Decoder(LineErrorBody)
_MODELS = msgspec.json.Decoder(dict[str, list[str]])


def _finish(reason: str | None) -> Any:
    return {"stop": "stop", "max_tokens": "length"}.get(reason or "", "stop")


class LineDecoder(StreamDecoder):
    """Splits the body into lines and decodes one JSON event per line."""

    def __init__(self, provider: str, model: str) -> None:
        self._provider, self._model = provider, model
        self._buffer = b""
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> list[StreamChunk]:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return [self._chunk(_EVENT.decode(line)) for line in lines if line.strip()]

    def close(self) -> list[StreamChunk]:
        if self._buffer.strip():
            return self.feed(b"\n")
        if self._done:
            return []
        # A stream cut before its "done" line: an error chunk fails the attempt.
        error = llm.StreamingFailed("the stream ended early", provider=self._provider)
        return [StreamChunk(provider=self._provider, model=self._model, error=error.info())]

    def _chunk(self, event: LineEvent) -> StreamChunk:
        if event.type == "text":
            return StreamChunk(provider=self._provider, model=self._model, text=event.text)
        if event.type == "done":
            self._done = True
            usage = event.usage.usage() if event.usage else None
            finish = _finish(event.reason)
            return StreamChunk(
                provider=self._provider, model=self._model, finish_reason=finish, usage=usage
            )
        if event.type == "error":
            self._done = True
            error = _map_code(event.code, event.message, None, self._provider)
            return StreamChunk(provider=self._provider, model=self._model, error=error.info())
        raise ValueError(f"unknown LineChat event type {event.type!r}")  # a malformed answer


def _map_code(code: str, message: str, status: int | None, provider: str) -> llm.LLMError:
    """LineChat's error codes as typed errors; unknown ones by their HTTP status."""
    text = message or code or "LineChat error"
    details = {"line_code": code}
    if code == "bad_key":
        return llm.AuthenticationError(text, provider=provider, status=status, details=details)
    if code == "busy":
        return llm.ProviderOverloaded(text, provider=provider, status=status, details=details)
    if code == "too_many":
        return llm.RateLimited(text, provider=provider, status=status, details=details)
    return error_for_status(status or 500, text, provider=provider, details=details)


class LineChatCodec(ProviderCodec):
    """The LineChat wire format."""

    kind: ClassVar[str] = "linechat"
    default_base_url: ClassVar[str] = "http://127.0.0.1:8080"

    def known_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="line-1", provider=self.name, max_output_tokens=1024)]

    def supports(self, feature: Feature, model: str | None = None) -> bool:
        return False  # text only: no tools, images or JSON mode

    def validate(self, request: Request) -> None:
        if any(message.images for message in request.messages):
            raise llm.ModelNotSupported("LineChat reads text only", provider=self.name)

    def encode(self, request: Request, api_key: str | None) -> HttpRequest:
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": [{"role": m.role, "text": m.text} for m in request.messages],
            "stream": request.stream,
        }
        if request.options.max_tokens is not None:
            body["max_tokens"] = request.options.max_tokens
        headers = {"content-type": "application/json", **self.extra_headers}
        if api_key:
            headers["x-line-key"] = api_key
        return HttpRequest(
            method="POST",
            url=f"{self.base_url}/chat",
            headers=headers,
            body=msgspec.json.encode(body),
            stream=request.stream,
        )

    def stream_decoder(self, request: Request) -> StreamDecoder:
        return LineDecoder(self.name, request.model)

    def decode_response(self, request: Request, body: bytes) -> Response:
        answer = _ANSWER.decode(body)
        message = Message(role="assistant", content=answer.text)
        return Response(
            id=answer.id,
            provider=self.name,
            model=request.model,
            created=datetime.now(UTC),
            choices=[Choice(message=message, finish_reason=_finish(answer.reason))],
            usage=answer.usage.usage() if answer.usage else None,
        )

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> llm.LLMError:
        try:
            error = _ERROR.decode(body).error
        except JSON_ERRORS:
            return error_for_status(status, f"HTTP {status}", provider=self.name)
        return _map_code(error.code, error.message, status, self.name)

    def parse_rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        left = headers.get("x-line-requests-left")
        return RateLimitInfo(requests_remaining=int(left)) if left else None

    def list_models_request(self, api_key: str | None) -> HttpRequest:
        headers = {"x-line-key": api_key} if api_key else {}
        return HttpRequest(method="GET", url=f"{self.base_url}/models", headers=headers)

    def decode_models(self, body: bytes) -> list[ModelInfo]:
        return [ModelInfo(id=m, provider=self.name) for m in _MODELS.decode(body)["models"]]


# -- a LineChat server, for the example --------------------------------------------------------

KEY = "line-example-key-" + uuid.uuid4().hex  # made up here: never printed


def _answer(target: str, key: str | None, body: bytes) -> tuple[int, list[bytes]]:
    if target == "/models":
        return 200, [msgspec.json.encode({"models": ["line-1"]})]
    if key != KEY:
        return 401, [b'{"error": {"code": "bad_key", "message": "unknown key"}}']
    asked = msgspec.json.decode(body)
    model, prompt = asked["model"], asked["prompt"][-1]["text"]
    if model == "line-busy":
        return 529, [b'{"error": {"code": "busy", "message": "try again later"}}']
    words = f"LineChat heard: {prompt}".split(" ")
    usage = {"in": len(prompt.split()), "out": len(words)}
    if not asked["stream"]:
        answer = {"id": "ln-1", "text": " ".join(words), "reason": "stop", "usage": usage}
        return 200, [msgspec.json.encode(answer)]
    lines: list[dict[str, Any]] = [{"type": "text", "text": w + " "} for w in words]
    lines.append({"type": "done", "reason": "stop", "usage": usage})
    return 200, [msgspec.json.encode(line) + b"\n" for line in lines]


async def _serve_connection(stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    while True:
        request: h11.Request | None = None
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if request is None:
            return
        key = dict(request.headers).get(b"x-line-key")
        status, pieces = _answer(request.target.decode(), key.decode() if key else None, body)
        kind = b"application/x-ndjson" if len(pieces) > 1 else b"application/json"
        head = [(b"content-type", kind), (b"x-line-requests-left", b"99")]
        await stream.send_all(connection.send(h11.Response(status_code=status, headers=head)))
        for piece in pieces:  # one write per line: the client reads them as they come
            await stream.send_all(connection.send(h11.Data(data=piece)))
        await stream.send_all(connection.send(h11.EndOfMessage()))
        if connection.our_state is h11.MUST_CLOSE:
            return
        connection.start_next_cycle()


# -- using it ----------------------------------------------------------------------------------


async def main() -> None:
    config = llm.Config.from_dict(
        {
            "provider": "mock",
            "retries": {"max_attempts": 2, "initial_delay": 0.01, "jitter": False},
            "rate_limits": {"requests_per_minute": 600, "concurrent_calls": 10},
            "cost_control": {
                "max_cost_per_request": "0.50",
                "prices": {  # a custom provider's prices are keyed by its name
                    "linechat:line-1": {"input_per_mtok": "1.00", "output_per_mtok": "2.00"},
                    "linechat:line-busy": {"input_per_mtok": "1.00", "output_per_mtok": "2.00"},
                },
            },
        }
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), _serve_connection, 0
        )
        port = listeners[0].socket.getsockname()[1]
        settings = ProviderConfig(base_url=f"http://127.0.0.1:{port}", api_key=llm.Secret(KEY))
        async with llm.open_client(config) as client:
            await client.register_provider("linechat", LineChatCodec, config=settings)
            print("providers:", ", ".join(client.providers))

            request = llm.Request(model="linechat:line-1", messages=[llm.user("hello there")])
            async with client.invoke(request) as stream:
                async for chunk in stream:
                    print(chunk.text, end="", flush=True)
            print(f"[{stream.response.finish_reason}]")
            usage = stream.response.usage
            assert usage is not None
            print(f"streamed usage: {usage.prompt_tokens} in, {usage.completion_tokens} out")

            once = llm.Request(model="linechat:line-1", messages=[llm.user("hi")], stream=False)
            whole = await client.invoke_sync(once)
            print(f"whole answer: {whole.text!r}")

            busy = llm.Request(model="linechat:line-busy", messages=[llm.user("hi")])
            try:
                await client.invoke_sync(busy)
            except llm.ProviderOverloaded as error:
                print(
                    f"busy model: {type(error).__name__} ({error.code.value}, HTTP {error.status})"
                )

            try:
                await client.register_provider("linechat", LineChatCodec, config=settings)
            except llm.ConfigurationError as error:
                print(f"registered twice: {error.details['reason']}")

            models = await client.list_models("linechat")
            print("models:", [m.id for m in models])
            total = client.get_usage()
            print(f"total: {total.total_tokens} tokens, cost ${total.cost}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
