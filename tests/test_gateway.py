"""The OpenAI-compatible gateway's HTTP side, with raw requests over 127.0.0.1.

Requests are written byte by byte here (h11 on the client side reads the answers), so
bodies can be chunked, too large, malformed or cut short; the ``openai`` SDK's view is in
``test_gateway_openai_sdk.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import h11
import pytest
import trio

import llm_invocation as llm
from llm_invocation import errors
from llm_invocation.actors.websocket import WebSocketFront
from llm_invocation.actors.websocket._gateway import openai_error
from llm_invocation.config import WebSocketConfig
from llm_invocation.testing import Scenario, Scenarios, Stall

TOKEN = "gateway-raw-token-4c8e1b"
LIMIT = 4096
BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}).encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[str]:
        """The ``data:`` payloads of a server-sent event stream."""
        return [
            line.removeprefix("data: ")
            for line in self.body.decode().split("\n")
            if line.startswith("data: ")
        ]


@asynccontextmanager
async def front_port(
    *, tokens: Any = None, allowed_origins: list[str] | None = None, **options: Any
) -> AsyncGenerator[int]:
    ws = WebSocketConfig(
        port=0,
        tokens=tokens if tokens is not None else [TOKEN],
        allowed_origins=allowed_origins or [],
        max_body_size=LIMIT,
    )
    scripted = Scenarios(Scenario(text="raw hello", chunk_chars=3))
    async with (
        llm.open_client(llm.Config(provider="mock", model="mock"), scenarios=scripted) as client,
        trio.open_nursery() as nursery,
    ):
        front = WebSocketFront(client, ws, grace=0.5, **options)
        await nursery.start(front.serve)
        yield front.port
        nursery.cancel_scope.cancel()


def head(
    method: str,
    path: str,
    *,
    length: int | None = None,
    chunked: bool = False,
    token: str | None = TOKEN,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines += [f"{name}: {value}" for name, value in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes, **options: Any) -> bytes:
    return head("POST", path, length=len(body), **options) + body


def chunked(*pieces: bytes) -> bytes:
    out = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces)
    return out + b"0\r\n\r\n"


async def exchange(port: int, data: bytes) -> Answer:
    """Send ``data``, read the whole answer (the server closes after it)."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            return await read_answer(stream)


def parse_answer(raw: bytes) -> Answer:
    """The answer in ``raw``, every byte the server sent."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    client.receive_data(b"")
    status, headers, body = 0, {}, bytearray()
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
    return Answer(status, headers, bytes(body))


async def read_answer(stream: trio.SocketStream) -> Answer:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    status, headers, body = 0, {}, bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.InformationalResponse):
            continue
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return Answer(status, headers, bytes(body))
        else:
            raise AssertionError(f"unexpected {event!r}")


def assert_openai_error(answer: Answer, status: int, code: str | None) -> dict[str, Any]:
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


# -- bodies ----------------------------------------------------------------------------------------


async def test_a_chunked_body_is_read_whole() -> None:
    async with front_port() as port:
        data = head("POST", "/v1/chat/completions", chunked=True) + chunked(BODY[:10], BODY[10:])
        answer = await exchange(port, data)
    assert answer.status == 200
    assert answer.json()["choices"][0]["message"]["content"] == "raw hello"


async def test_a_body_sent_after_100_continue_is_read() -> None:
    async with front_port() as port:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                expect = [("Expect", "100-continue")]
                await stream.send_all(
                    head("POST", "/v1/chat/completions", length=len(BODY), extra=expect)
                )
                interim = await stream.receive_some(1024)
                await stream.send_all(BODY)
                answer = await read_answer(stream)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert answer.status == 200


async def test_a_body_announced_larger_than_the_limit_is_refused_with_413() -> None:
    body = b"x" * (LIMIT + 1)
    async with front_port() as port:
        answer = await exchange(port, post("/v1/chat/completions", body))
    assert_openai_error(answer, 413, "request_too_large")


async def test_a_chunked_body_growing_past_the_limit_is_refused_with_413() -> None:
    pieces = [b"y" * 1000] * 5
    async with front_port() as port:
        answer = await exchange(
            port, head("POST", "/v1/chat/completions", chunked=True) + chunked(*pieces)
        )
    assert_openai_error(answer, 413, "request_too_large")


async def test_a_body_that_is_not_json_is_a_400() -> None:
    async with front_port() as port:
        answer = await exchange(port, post("/v1/chat/completions", b"{not json"))
    error = assert_openai_error(answer, 400, "invalid_json")
    assert error["type"] == "invalid_request_error"


async def test_a_message_with_an_unknown_role_is_a_400_naming_where() -> None:
    body = json.dumps({"model": "mock", "messages": [{"role": "robot", "content": "hi"}]})
    async with front_port() as port:
        answer = await exchange(port, post("/v1/chat/completions", body.encode()))
    error = assert_openai_error(answer, 400, None)
    assert error["param"] == "messages[0].role"


async def test_a_body_cut_short_is_a_400() -> None:
    async with front_port() as port:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(post("/v1/chat/completions", BODY)[:-5])
                await stream.send_eof()
                answer = await read_answer(stream)
    assert_openai_error(answer, 400, None)


async def test_a_body_that_stops_arriving_is_a_408() -> None:
    async with front_port(handshake_timeout=2.0) as port:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(post("/v1/chat/completions", BODY)[:-5])
                answer = await read_answer(stream)
    assert_openai_error(answer, 408, "request_timeout")


# -- routing and access ----------------------------------------------------------------------------


async def test_a_request_without_a_token_is_a_401_in_openai_form() -> None:
    async with front_port() as port:
        answer = await exchange(port, post("/v1/chat/completions", BODY, token=None))
    assert_openai_error(answer, 401, "invalid_api_key")
    assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_a_refused_token_shows_in_no_answer_and_no_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-token-93fa0d"
    caplog.set_level(logging.DEBUG)
    async with front_port() as port:
        answer = await exchange(port, post("/v1/chat/completions", BODY, token=wrong))
    assert answer.status == 401
    assert wrong not in answer.body.decode()
    assert wrong not in caplog.text and TOKEN not in caplog.text


async def test_an_unknown_path_under_v1_is_a_404() -> None:
    async with front_port() as port:
        answer = await exchange(port, post("/v1/embeddings", BODY))
    assert_openai_error(answer, 404, "unknown_url")


async def test_a_get_of_chat_completions_is_a_405_naming_post() -> None:
    async with front_port() as port:
        answer = await exchange(port, head("GET", "/v1/chat/completions"))
    assert_openai_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "POST"


async def test_without_tokens_a_page_of_another_origin_is_refused() -> None:
    async with front_port(tokens=[]) as port:
        origin = [("Origin", "https://evil.example")]
        answer = await exchange(port, post("/v1/chat/completions", BODY, token=None, extra=origin))
    assert_openai_error(answer, 403, "origin_not_allowed")


async def test_without_tokens_the_fronts_own_loopback_origin_is_served() -> None:
    async with front_port(tokens=[]) as port:
        origin = [("Origin", f"http://127.0.0.1:{port}")]
        answer = await exchange(port, post("/v1/chat/completions", BODY, token=None, extra=origin))
    assert answer.status == 200


async def test_without_tokens_a_request_without_origin_is_served() -> None:
    async with front_port(tokens=[]) as port:
        answer = await exchange(port, post("/v1/chat/completions", BODY, token=None))
    assert answer.status == 200


async def test_with_allowed_origins_another_origin_is_refused_even_with_a_token() -> None:
    async with front_port(allowed_origins=["https://app.example"]) as port:
        origin = [("Origin", "https://other.example")]
        refused = await exchange(port, post("/v1/chat/completions", BODY, extra=origin))
        listed = [("Origin", "https://app.example")]
        served = await exchange(port, post("/v1/chat/completions", BODY, extra=listed))
    assert_openai_error(refused, 403, "origin_not_allowed")
    assert served.status == 200


# -- streams ---------------------------------------------------------------------------------------


async def test_a_stream_is_chunked_server_sent_events_ending_with_done() -> None:
    body = json.dumps({**json.loads(BODY), "stream": True}).encode()
    async with front_port() as port:
        answer = await exchange(port, post("/v1/chat/completions", body))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["transfer-encoding"] == "chunked"
    events = answer.events()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text == "raw hello"


async def test_a_stream_to_an_http_1_0_client_ends_with_the_connection() -> None:
    body = json.dumps({**json.loads(BODY), "stream": True}).encode()
    request = post("/v1/chat/completions", body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    async with front_port() as port:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                raw = b""
                while data := await stream.receive_some(65536):
                    raw += data
    head_bytes, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head_bytes.lower()
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_a_stream_in_flight_when_the_front_stops_ends_with_a_shutdown_error() -> None:
    scripted = Scenarios(Scenario(text="z" * 100, chunk_chars=2, failure=Stall(after_chunks=2)))
    body = json.dumps({**json.loads(BODY), "stream": True}).encode()
    async with (
        llm.open_client(llm.Config(provider="mock", model="mock"), scenarios=scripted) as client,
        trio.open_nursery() as nursery,
    ):
        front = WebSocketFront(client, WebSocketConfig(port=0, tokens=[TOKEN]), grace=0.2)
        serving = trio.CancelScope()

        async def run_front(*, task_status: trio.TaskStatus[int]) -> None:
            with serving:
                await front.serve(task_status=task_status)

        port = await nursery.start(run_front)
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(post("/v1/chat/completions", body))
                raw = b""
                while b"data: " not in raw:
                    raw += await stream.receive_some(65536)
                serving.cancel()
                while data := await stream.receive_some(65536):
                    raw += data
    events = parse_answer(raw).events()
    assert json.loads(events[0])["object"] == "chat.completion.chunk"
    assert json.loads(events[-1])["error"]["code"] == "server_shutting_down"
    assert "[DONE]" not in events


# -- the error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (errors.InvalidRequest("bad"), 400, "invalid_request_error", None),
        (errors.ProviderNotFound("no"), 404, "invalid_request_error", "model_not_found"),
        (errors.ModelNotSupported("no"), 404, "invalid_request_error", "model_not_found"),
        (errors.RateLimited("slow down"), 429, "rate_limit_error", "rate_limit_exceeded"),
        (errors.CostExceeded("spent"), 429, "insufficient_quota", "insufficient_quota"),
        (errors.InvocationTimeout("late"), 504, "timeout", "timeout"),
        (errors.ProviderOverloaded("busy"), 503, "server_error", "overloaded"),
        (errors.MissingAPIKey("no key"), 503, "server_error", "provider_unavailable"),
        (errors.ProviderError("broke"), 502, "server_error", "provider_error"),
        (errors.StreamingFailed("cut"), 502, "server_error", "streaming_failed"),
        (
            errors.AuthenticationError("key revoked"),
            502,
            "server_error",
            "upstream_authentication_failed",
        ),
    ],
)
def test_each_error_maps_to_its_status_and_openai_error_object(
    error: errors.LLMError, status: int, kind: str, code: str | None
) -> None:
    got_status, body, _ = openai_error(error)
    assert (got_status, body["type"], body["code"]) == (status, kind, code)
    assert set(body) == {"message", "type", "param", "code"}


def test_a_rate_limit_says_when_to_retry() -> None:
    _, _, headers = openai_error(errors.RateLimited("slow down", retry_after=1.2))
    assert headers == [("Retry-After", "2")]


def test_the_providers_refusal_of_the_servers_key_is_not_passed_on() -> None:
    _, body, _ = openai_error(errors.AuthenticationError("Incorrect API key sk-abc...xyz"))
    assert body["message"] == "the provider refused this server's credentials"
