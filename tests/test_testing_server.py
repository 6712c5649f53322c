"""The fake provider server over real sockets on 127.0.0.1, driven with httpx."""

from __future__ import annotations

import itertools
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trustme
from hypothesis import event, given, settings
from hypothesis import strategies as st

from llm_invocation.providers._sse import SSEParser
from llm_invocation.testing import (
    SEND_TIME,
    Disconnect,
    FakeServer,
    HttpError,
    OpenAIRenderer,
    Scenario,
    Scenarios,
    ServerStatistics,
    Stall,
    WireFormat,
    open_fake_server,
    serve_fake_server,
)
from llm_invocation.testing.fake_server import main as fake_server_main
from llm_invocation.testing.fake_server import scenario_from_options, tls_context

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello server"}]}
STREAM = {**CHAT, "stream": True}
ANTHROPIC = {
    "model": "claude-test",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hello server"}],
}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hello server"}]}]}


@pytest.fixture
async def server() -> AsyncGenerator[FakeServer]:
    scenarios = Scenarios(Scenario(text="The fake server answers.", chunk_chars=5))
    async with open_fake_server(scenarios) as running:
        yield running


def client(server: FakeServer, provider: WireFormat = "openai", **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url(provider), **kwargs)


def events_of(body: bytes) -> list[Any]:
    parser = SSEParser()
    out = [*parser.feed(body), *parser.flush()]
    return [json.loads(event.data) for event in out if event.data != b"[DONE]"]


async def test_base_urls_name_each_provider_prefix(server: FakeServer) -> None:
    assert server.port > 0
    assert server.base_url("openai") == f"http://127.0.0.1:{server.port}/openai/v1"
    assert server.base_url("anthropic") == f"http://127.0.0.1:{server.port}/anthropic/v1"
    assert server.base_url("gemini") == f"http://127.0.0.1:{server.port}/gemini/v1beta"


async def test_openai_chat_completion(server: FakeServer) -> None:
    async with client(server) as http:
        response = await http.post("/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(response.content))
    assert response.json()["choices"][0]["message"]["content"] == "The fake server answers."


async def test_openai_chat_stream(server: FakeServer) -> None:
    async with client(server) as http:
        response = await http.post("/chat/completions", json=STREAM)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content.endswith(b"data: [DONE]\n\n")
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events_of(response.content)
    )
    assert text == "The fake server answers."


async def test_openai_legacy_completions(server: FakeServer) -> None:
    async with client(server) as http:
        response = await http.post("/completions", json={"model": "instruct", "prompt": "hi"})
    assert response.json()["object"] == "text_completion"
    assert response.json()["choices"][0]["text"] == "The fake server answers."


@pytest.mark.parametrize(
    ("provider", "key"), [("openai", "data"), ("anthropic", "data"), ("gemini", "models")]
)
async def test_model_lists(server: FakeServer, provider: WireFormat, key: str) -> None:
    server.scenarios.add("my-model", Scenario())
    async with client(server, provider) as http:
        response = await http.get("/models")
    assert response.status_code == 200
    assert "my-model" in json.dumps(response.json()[key])


async def test_anthropic_message_and_stream(server: FakeServer) -> None:
    async with client(server, "anthropic") as http:
        whole = await http.post("/messages", json=ANTHROPIC)
        streamed = await http.post("/messages", json={**ANTHROPIC, "stream": True})
    assert whole.json()["content"][0]["text"] == "The fake server answers."
    events = events_of(streamed.content)
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "message_stop"


async def test_anthropic_count_tokens(server: FakeServer) -> None:
    async with client(server, "anthropic") as http:
        response = await http.post("/messages/count_tokens", json=ANTHROPIC)
    assert response.json() == {"input_tokens": 2}


async def test_gemini_generate_stream_and_count(server: FakeServer) -> None:
    async with client(server, "gemini") as http:
        whole = await http.post("/models/gemini-x:generateContent", json=GEMINI)
        streamed = await http.post(
            "/models/gemini-x:streamGenerateContent", params={"alt": "sse"}, json=GEMINI
        )
        count = await http.post("/models/gemini-x:countTokens", json=GEMINI)
    assert whole.json()["modelVersion"] == "gemini-x"
    assert streamed.headers["content-type"] == "text/event-stream"
    assert b"\r\n\r\n" in streamed.content
    chunks = events_of(streamed.content)
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert count.json()["totalTokens"] == 2
    assert [r.model for r in server.requests] == ["gemini-x"] * 3


async def test_each_event_arrives_as_its_own_chunk(server: FakeServer) -> None:
    scenario = Scenario(text="x" * 50, chunk_chars=5)
    server.scenarios.add("chunky", scenario)
    expected = len(OpenAIRenderer().render_stream(scenario, STREAM))
    async with (
        client(server) as http,
        http.stream("POST", "/chat/completions", json={**STREAM, "model": "chunky"}) as response,
    ):
        pieces = [piece async for piece in response.aiter_raw()]
    assert len(pieces) == expected
    assert all(len(SSEParser().feed(piece)) == 1 for piece in pieces)


async def test_send_time_placeholders_carry_when_each_chunk_was_written(
    server: FakeServer,
) -> None:
    server.scenarios.add("probe", Scenario(text=SEND_TIME * 4, chunk_chars=16, interval=0.05))
    before = time.monotonic()
    async with (
        client(server) as http,
        http.stream("POST", "/chat/completions", json={**STREAM, "model": "probe"}) as response,
    ):
        body = b"".join([piece async for piece in response.aiter_raw()])
    after = time.monotonic()
    texts = [
        event["choices"][0]["delta"].get("content") for event in events_of(body) if event["choices"]
    ]
    stamps = [float(text) for text in texts if text]
    assert len(stamps) == 4 and all(len(text) == 16 for text in texts if text)
    assert before <= stamps[0] and stamps[-1] <= after
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(0.04 <= gap < 0.5 for gap in gaps), gaps  # paced: written 50 ms apart


def test_the_module_stamp_option_makes_a_probe_scenario() -> None:
    scenario = scenario_from_options(chunks=3, chunk_chars=4, interval=0.1, ttft=0, stamp=True)
    assert (scenario.text, scenario.chunk_chars) == (SEND_TIME * 3, 16)
    with pytest.raises(ValueError, match="--stamp needs --chunks"):
        scenario_from_options(chunks=None, chunk_chars=4, interval=0, ttft=0, stamp=True)


async def test_keep_alive_reuses_one_connection(server: FakeServer) -> None:
    async with client(server) as http:
        first = await http.post("/chat/completions", json=STREAM)
        second = await http.post("/chat/completions", json=CHAT)
    assert (first.status_code, second.status_code) == (200, 200)
    statistics = server.statistics()
    assert statistics.connections_total == 1
    assert statistics.requests_total == 2


async def test_connection_close_is_honoured(server: FakeServer) -> None:
    async with client(server) as http:
        first = await http.post("/chat/completions", json=CHAT, headers={"Connection": "close"})
        second = await http.post("/chat/completions", json=CHAT)
    assert first.headers["connection"] == "close"
    assert second.status_code == 200
    assert server.statistics().connections_total == 2


async def test_a_client_leaving_mid_stream_leaves_the_server_healthy(server: FakeServer) -> None:
    server.scenarios.add("slow", Scenario(text="y" * 400, chunk_chars=4, interval=0.01))
    body = json.dumps({**STREAM, "model": "slow"}).encode()
    head = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n"
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(head % len(body) + body)
        received = b""
        while b"data: " not in received:
            received += await stream.receive_some(65536)
    with trio.fail_after(10):
        statistics = await server.wait_statistics(lambda s: s.client_disconnects == 1)
    assert statistics.streams_in_progress == 0
    assert statistics.connections_open == 0
    async with client(server) as http:
        assert (await http.post("/chat/completions", json=CHAT)).status_code == 200
    assert server.last_error is None


async def test_disconnect_closes_the_connection_mid_body(server: FakeServer) -> None:
    server.scenarios.add(
        "cut", Scenario(text="z" * 40, chunk_chars=4, failure=Disconnect(after_chunks=3))
    )
    pieces: list[bytes] = []
    async with client(server) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            async with http.stream(
                "POST", "/chat/completions", json={**STREAM, "model": "cut"}
            ) as r:
                async for piece in r.aiter_raw():
                    pieces.append(piece)
        after = await http.post("/chat/completions", json=CHAT)
    assert len(pieces) == 4  # the role chunk and three text chunks
    assert after.status_code == 200
    assert server.statistics().scripted_disconnects == 1


async def test_stall_keeps_the_connection_open_until_the_client_leaves(server: FakeServer) -> None:
    server.scenarios.add("stuck", Scenario(text="s" * 40, failure=Stall(after_chunks=1)))
    pieces: list[bytes] = []
    timeout = httpx.Timeout(5.0, read=0.3)
    async with client(server, timeout=timeout) as http:
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream(
                "POST", "/chat/completions", json={**STREAM, "model": "stuck"}
            ) as r:
                async for piece in r.aiter_raw():
                    pieces.append(piece)
        assert len(pieces) == 2
        with trio.fail_after(10):
            await server.wait_statistics(lambda s: s.client_disconnects == 1)
        assert (await http.post("/chat/completions", json=CHAT)).status_code == 200


async def test_a_finite_stall_resumes_the_stream(server: FakeServer) -> None:
    server.scenarios.add(
        "pause", Scenario(text="p" * 16, failure=Stall(after_chunks=1, seconds=0.05))
    )
    async with client(server) as http:
        response = await http.post("/chat/completions", json={**STREAM, "model": "pause"})
    assert response.content.endswith(b"data: [DONE]\n\n")


async def test_http_error_with_retry_headers(server: FakeServer) -> None:
    server.scenarios.add(
        "limited", Scenario(failure=HttpError(status=429, retry_after=7)), Scenario(text="ok")
    )
    async with client(server, "anthropic") as http:
        first = await http.post("/messages", json={**ANTHROPIC, "model": "limited", "stream": True})
        second = await http.post("/messages", json={**ANTHROPIC, "model": "limited"})
    assert first.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert first.json()["error"]["type"] == "rate_limit_error"
    assert second.json()["content"][0]["text"] == "ok"


async def test_requests_are_recorded_with_credentials_masked(server: FakeServer) -> None:
    async with client(server, "anthropic", headers={"x-api-key": "sk-ant-secret"}) as http:
        await http.post("/messages", json=ANTHROPIC)
    (request,) = server.requests
    assert request.path == "/anthropic/v1/messages"
    assert request.url == f"{server.base_url('anthropic')}/messages"
    assert request.headers["x-api-key"] == "present"
    assert request.json == ANTHROPIC


async def send_raw(server: FakeServer, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_garbage_gets_a_400_and_the_server_goes_on(server: FakeServer) -> None:
    response = await send_raw(server, b"THIS IS NOT HTTP\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert server.statistics().bad_requests == 1
    async with client(server) as http:
        assert (await http.post("/chat/completions", json=CHAT)).status_code == 200


async def test_a_bad_header_line_gets_a_400(server: FakeServer) -> None:
    response = await send_raw(server, b"GET /openai/v1/models HTTP/1.1\r\nno colon here\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")


async def test_unknown_paths_get_a_404_in_the_prefix_format(server: FakeServer) -> None:
    async with client(server, "gemini") as http:
        response = await http.post("/nowhere", json={})
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


async def test_http_10_gets_a_close_delimited_stream(server: FakeServer) -> None:
    body = json.dumps(STREAM).encode()
    head = b"POST /openai/v1/chat/completions HTTP/1.0\r\ncontent-length: %d\r\n\r\n" % len(body)
    response = await send_raw(server, head + body)
    assert b"transfer-encoding" not in response.split(b"\r\n\r\n")[0]
    assert response.endswith(b"data: [DONE]\n\n")


async def test_two_hundred_concurrent_streams_complete(server: FakeServer) -> None:
    server.scenarios.add("load", Scenario(text="w" * 80, chunk_chars=4, interval=0.001))
    done: list[int] = []
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)

    async def one(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", "/chat/completions", json={**STREAM, "model": "load"}) as r:
            text = "".join(
                e["choices"][0]["delta"].get("content") or "" for e in events_of(await r.aread())
            )
        assert text == "w" * 80
        done.append(1)

    async with client(server, limits=limits, timeout=30) as http, trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one, http)
    assert len(done) == 200
    statistics = server.statistics()
    assert statistics.streams_total == 200
    assert statistics.streams_in_progress == 0
    assert statistics.client_disconnects == 0


async def test_serve_fake_server_runs_under_nursery_start() -> None:
    async with trio.open_nursery() as nursery:
        server: FakeServer = await nursery.start(serve_fake_server)
        async with client(server) as http:
            assert (await http.get("/models")).status_code == 200
        nursery.cancel_scope.cancel()
    statistics = server.statistics()
    assert isinstance(statistics, ServerStatistics)
    assert statistics.requests_total == 1


@pytest.mark.wall_limit(60)
async def test_the_module_runs_the_server_until_terminated() -> None:
    command = [
        sys.executable,
        "-m",
        "llm_invocation.testing.fake_server",
        "--port",
        "0",
        "--chunks",
        "3",
        "--chunk-chars",
        "4",
    ]
    async with trio.open_nursery() as nursery:
        # Leaving early (a failure) cancels run_process, which kills the server.
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
        )
        assert process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                data = await process.stdout.receive_some(1)
                assert data, "the server exited before READY"
                line += data
        word, url = line.decode().split()
        assert word == "READY"
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url + "/openai/v1") as http:
            response = await http.post("/chat/completions", json=CHAT)
        assert response.json()["choices"][0]["message"]["content"] == "lorem ipsum "
        process.terminate()
        assert await process.stdout.receive_some() == b"", "nothing but READY is printed"
    assert process.returncode == 0


def test_the_module_options_make_the_default_scenario() -> None:
    scenario = scenario_from_options(chunks=3, chunk_chars=5, interval=0.25, ttft=1.5)
    assert scenario.text is not None
    assert len(scenario.text) == 15
    assert (scenario.chunk_chars, scenario.interval, scenario.ttft) == (5, 0.25, 1.5)
    assert scenario_from_options(chunks=None, chunk_chars=8, interval=0, ttft=0).text is None


def test_the_module_rejects_bad_options() -> None:
    with pytest.raises(SystemExit) as raised:
        fake_server_main(["--chunk-chars", "0"])
    assert raised.value.code == 2


# -- the parser's edges ----------------------------------------------------------------------


async def test_an_unsupported_http_version_gets_a_505(server: FakeServer) -> None:
    response = await send_raw(server, b"GET /openai/v1/models HTTP/2.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 505 ")


async def test_an_oversized_head_gets_a_431(server: FakeServer) -> None:
    response = await send_raw(server, b"GET / HTTP/1.1\r\nx-big: " + b"a" * 70_000)
    assert response.startswith(b"HTTP/1.1 431 ")


async def test_a_chunked_request_body_is_read(server: FakeServer) -> None:
    body = json.dumps(CHAT).encode()
    head = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
    head += b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (body[:7], body[7:]))
    response = await send_raw(server, head + chunks + b"0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert server.requests[-1].json == CHAT


async def test_expect_100_continue_is_answered(server: FakeServer) -> None:
    body = json.dumps(CHAT).encode()
    head = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
    head += b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(head)
        interim = await stream.receive_some(65536)
        await stream.send_all(body)
        rest = b""
        while chunk := await stream.receive_some(65536):
            rest += chunk
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_pipelined_requests_are_answered_in_order(server: FakeServer) -> None:
    one = b"GET /openai/v1/models HTTP/1.1\r\nhost: x\r\n\r\n"
    last = b"GET /anthropic/v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    response = await send_raw(server, one + one + last)
    assert response.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert response.rstrip().endswith(b'"last_id":"claude-sonnet-4-5"}')


async def test_an_http_11_request_without_host_gets_a_400(server: FakeServer) -> None:
    # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request lacking Host (h11 does).
    response = await send_raw(server, b"GET /openai/v1/models HTTP/1.1\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"Host" in response


async def test_an_http_10_request_needs_no_host(server: FakeServer) -> None:
    response = await send_raw(server, b"GET /openai/v1/models HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_transfer_coding_other_than_chunked_gets_a_501(server: FakeServer) -> None:
    head = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
    response = await send_raw(server, head + b"transfer-encoding: gzip\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 501 ")
    assert server.statistics().bad_requests == 1


async def test_a_body_over_the_limit_gets_a_413_before_it_is_sent(server: FakeServer) -> None:
    head = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
    response = await send_raw(server, head + b"content-length: %d\r\n\r\n" % (33 << 20))
    assert response.startswith(b"HTTP/1.1 413 ")


async def test_a_chunked_body_over_the_limit_gets_a_413(server: FakeServer) -> None:
    head = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
    head += b"transfer-encoding: chunked\r\n\r\n"
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(head + b"%x\r\n" % (33 << 20))  # one chunk, over the limit
        piece = b"z" * (1 << 20)
        with trio.fail_after(20):
            try:
                for _ in range(33):
                    await stream.send_all(piece)
            except trio.BrokenResourceError:
                pass  # refused and closed while the body was still coming
            response = b""
            try:
                while chunk := await stream.receive_some(65536):
                    response += chunk
            except trio.BrokenResourceError:
                pass
    assert response.startswith(b"HTTP/1.1 413 ")


async def test_empty_lines_before_a_request_line_are_skipped(server: FakeServer) -> None:
    request = b"GET /openai/v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    response = await send_raw(server, b"\r\n\r\n" + request)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_pipelined_bodies_keep_their_boundaries(server: FakeServer) -> None:
    first, second = json.dumps(CHAT).encode(), json.dumps({**CHAT, "model": "m2"}).encode()
    path = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
    by_length = path + b"content-length: %d\r\n\r\n%b" % (len(first), first)
    chunked = path + b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    chunked += b"%x\r\n%b\r\n0\r\n\r\n" % (len(second), second)
    response = await send_raw(server, by_length + chunked)
    assert response.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert [r.json for r in server.requests] == [CHAT, {**CHAT, "model": "m2"}]


async def test_a_request_arriving_byte_by_byte_is_read(server: FakeServer) -> None:
    body = json.dumps(CHAT).encode()
    request = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    request += b"content-length: %d\r\n\r\n%b" % (len(body), body)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        for index in range(len(request)):
            await stream.send_all(request[index : index + 1])
        response = b""
        while chunk := await stream.receive_some(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert server.requests[-1].json == CHAT


async def test_a_bad_request_after_a_good_one_is_refused_after_its_answer(
    server: FakeServer,
) -> None:
    good = b"GET /openai/v1/models HTTP/1.1\r\nhost: x\r\n\r\n"
    response = await send_raw(server, good + b"NOT HTTP\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.count(b"HTTP/1.1 400 Bad Request\r\n") == 1
    assert server.statistics().requests_total == 1
    assert server.statistics().bad_requests == 1


async def test_a_client_leaving_mid_request_is_not_a_bad_request(server: FakeServer) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
    with trio.fail_after(5):
        statistics = await server.wait_statistics(lambda s: s.connections_open == 0)
    assert (statistics.bad_requests, statistics.internal_errors) == (0, 0)


REQUEST_LINES = [
    b"GET /openai/v1/models HTTP/1.1\r\nhost: x\r\n",
    b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
    b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\n",
    b"GET /openai/v1/models HTTP/1.1\r\n",
    b"GET /gemini/v1beta/models HTTP/1.0\r\n",
    b"GET / HTTP/2.0\r\n",
    b"\r\n",
]
FIELDS = [
    b"content-length: 2\r\n",
    b"content-length: 0\r\n",
    b"transfer-encoding: chunked\r\n",
    b"transfer-encoding: gzip\r\n",
    b"expect: 100-continue\r\n",
    b"connection: keep-alive\r\n",
    b"connection: close\r\n",
    b"x: \x00\r\n",
]
BODIES = [b"", b"{}", b"2\r\n{}\r\n0\r\n\r\n", b"zz\r\n"]
one_request = st.builds(
    lambda line, fields, body: line + b"".join(fields) + b"\r\n" + body,
    st.sampled_from(REQUEST_LINES),
    st.lists(st.sampled_from(FIELDS), max_size=3),
    st.sampled_from(BODIES),
)
pipelined = st.lists(one_request, min_size=1, max_size=3).map(b"".join)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        pipelined,
        st.tuples(pipelined, st.integers(min_value=0, max_value=300), st.binary(max_size=3)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
        ),
    )
)
async def test_any_bytes_get_well_formed_answers_and_never_crash_the_server(data: bytes) -> None:
    async with open_fake_server() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(data)
            await stream.send_eof()
            received = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    received += chunk
        with trio.fail_after(5):
            statistics = await server.wait_statistics(lambda s: s.connections_open == 0)
    assert server.last_error is None
    assert statistics.internal_errors == 0
    answers = whole_answers(received)
    event(f"{answers} answers, {statistics.bad_requests} refused")
    assert answers <= statistics.requests_total + statistics.bad_requests


def whole_answers(received: bytes) -> int:
    """How many final answers ``received`` holds, each read whole by h11's client.

    Interim ``100 Continue`` answers are skipped; one may come last when the client left
    before sending the body it announced.
    """
    reader = h11.Connection(h11.CLIENT)
    reader.receive_data(received)
    reader.receive_data(b"")
    answers = 0
    while reader.trailing_data[0]:
        reader.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        reader.send(h11.EndOfMessage())
        event = reader.next_event()
        while isinstance(event, h11.InformationalResponse):
            if not reader.trailing_data[0]:
                return answers
            event = reader.next_event()
        assert isinstance(event, h11.Response), event
        while not isinstance(reader.next_event(), h11.EndOfMessage):
            pass
        answers += 1
        if reader.their_state is not h11.DONE:  # the answer closes the connection
            break
        reader.start_next_cycle()
    assert not reader.trailing_data[0], "bytes after the last answer"
    return answers


async def test_a_whole_body_disconnect_sends_half_the_body(server: FakeServer) -> None:
    server.scenarios.add("half", Scenario(text="h" * 100, failure=Disconnect(after_chunks=0)))
    async with client(server) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/chat/completions", json={**CHAT, "model": "half"})
    assert server.statistics().scripted_disconnects == 1


async def test_a_whole_body_stall_waits_until_the_client_gives_up(server: FakeServer) -> None:
    server.scenarios.add("silent", Scenario(failure=Stall(after_chunks=0)))
    async with client(server, timeout=httpx.Timeout(5.0, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/chat/completions", json={**CHAT, "model": "silent"})
        with trio.fail_after(10):
            await server.wait_statistics(lambda s: s.client_disconnects == 1)
        assert (await http.post("/chat/completions", json=CHAT)).status_code == 200


async def test_headers_come_before_the_first_chunk_waits_ttft(server: FakeServer) -> None:
    server.scenarios.add("thinking", Scenario(text="late", ttft=0.05))
    async with (
        client(server) as http,
        http.stream("POST", "/chat/completions", json={**STREAM, "model": "thinking"}) as r,
    ):
        assert r.status_code == 200
        body = await r.aread()
    assert body.endswith(b"data: [DONE]\n\n")


async def test_gemini_stream_without_alt_sse_is_a_json_array(server: FakeServer) -> None:
    async with client(server, "gemini") as http:
        response = await http.post("/models/g:streamGenerateContent", json=GEMINI)
    chunks = response.json()
    assert response.headers["content-type"].startswith("application/json")
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


# -- TLS -----------------------------------------------------------------------------------------


class TlsFiles:
    """A CA made by trustme and a certificate for 127.0.0.1 signed by it, as PEM files."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.issued = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.cert_file = folder / "server.pem"  # the chain and the key
        self.issued.private_key_and_cert_chain_pem.write_to_path(self.cert_file)
        self.chain_file = folder / "server-chain.pem"  # the chain alone
        for blob in self.issued.cert_chain_pems:
            blob.write_to_path(self.chain_file, append=True)
        self.key_file = folder / "server-key.pem"
        self.issued.private_key_pem.write_to_path(self.key_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.issued.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path)


@pytest.fixture
async def tls_server(tls: TlsFiles) -> AsyncGenerator[FakeServer]:
    scenarios = Scenarios(Scenario(text="The fake server answers.", chunk_chars=5))
    async with open_fake_server(scenarios, ssl_context=tls.server_context()) as running:
        yield running


async def test_a_tls_server_has_https_urls(tls_server: FakeServer) -> None:
    assert tls_server.url == f"https://127.0.0.1:{tls_server.port}"
    assert tls_server.base_url("openai") == f"https://127.0.0.1:{tls_server.port}/openai/v1"


async def test_a_tls_server_answers_over_https(tls_server: FakeServer, tls: TlsFiles) -> None:
    async with client(tls_server, verify=tls.client_context()) as http:
        response = await http.post("/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "The fake server answers."


async def test_a_tls_server_streams_each_event_as_its_own_chunk(
    tls_server: FakeServer, tls: TlsFiles
) -> None:
    scenario = Scenario(text="x" * 50, chunk_chars=5)
    tls_server.scenarios.add("chunky", scenario)
    expected = len(OpenAIRenderer().render_stream(scenario, STREAM))
    async with (
        client(tls_server, verify=tls.client_context()) as http,
        http.stream("POST", "/chat/completions", json={**STREAM, "model": "chunky"}) as response,
    ):
        pieces = [piece async for piece in response.aiter_raw()]
    assert len(pieces) == expected
    assert all(len(SSEParser().feed(piece)) == 1 for piece in pieces)


async def test_a_tls_server_keeps_the_connection_alive(
    tls_server: FakeServer, tls: TlsFiles
) -> None:
    async with client(tls_server, verify=tls.client_context()) as http:
        for _ in range(3):
            assert (await http.post("/chat/completions", json=STREAM)).status_code == 200
    statistics = tls_server.statistics()
    assert (statistics.connections_total, statistics.requests_total) == (1, 3)


async def test_a_client_refusing_the_certificate_leaves_the_tls_server_healthy(
    tls_server: FakeServer, tls: TlsFiles
) -> None:
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(untrusting)  # another CA than the server's
    async with client(tls_server, verify=untrusting) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post("/chat/completions", json=CHAT)
    async with client(tls_server, verify=tls.client_context()) as http:
        assert (await http.post("/chat/completions", json=CHAT)).status_code == 200
    statistics = await tls_server.wait_statistics(lambda s: s.connections_open == 0)
    assert (statistics.bad_requests, statistics.internal_errors) == (0, 0)
    assert tls_server.last_error is None


def test_the_module_tls_options_load_a_certificate_with_its_key(tls: TlsFiles) -> None:
    assert isinstance(tls_context(str(tls.cert_file), None), ssl.SSLContext)
    assert isinstance(tls_context(str(tls.chain_file), str(tls.key_file)), ssl.SSLContext)
    assert tls_context(None, None) is None


@pytest.mark.parametrize(
    "which", ["key without cert", "cert without key", "missing file"], ids=str.split
)
def test_the_module_rejects_bad_tls_options(tls: TlsFiles, which: str) -> None:
    argv = {
        "key without cert": ["--tls-key", str(tls.key_file)],
        "cert without key": ["--tls-cert", str(tls.chain_file)],
        "missing file": ["--tls-cert", str(tls.ca_file.parent / "absent.pem")],
    }[which]
    with pytest.raises(SystemExit) as raised:
        fake_server_main(argv)
    assert raised.value.code == 2


@pytest.mark.wall_limit(60)
async def test_the_module_serves_https_with_tls_cert(tls: TlsFiles) -> None:
    command = [
        sys.executable,
        "-m",
        "llm_invocation.testing.fake_server",
        "--port",
        "0",
        "--chunks",
        "3",
        "--chunk-chars",
        "4",
        "--tls-cert",
        str(tls.cert_file),
    ]
    async with trio.open_nursery() as nursery:
        # Leaving early (a failure) cancels run_process, which kills the server.
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
        )
        assert process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                data = await process.stdout.receive_some(1)
                assert data, "the server exited before READY"
                line += data
        word, url = line.decode().split()
        assert (word, url.split(":")[0]) == ("READY", "https")
        async with httpx.AsyncClient(
            base_url=url + "/openai/v1", verify=tls.client_context()
        ) as http:
            response = await http.post("/chat/completions", json=CHAT)
        assert response.json()["choices"][0]["message"]["content"] == "lorem ipsum "
        process.terminate()
    assert process.returncode == 0
