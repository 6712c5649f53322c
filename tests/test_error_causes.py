"""Errors keep what failed below them as ``__cause__``, at the public API, without a secret in
any link of the chain; the error codes are the specification's, and earlier ones still read."""

from __future__ import annotations

import errno
import socket
import traceback
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, cast

import httpx
import msgspec
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.errors import ErrorCode, ErrorInfo, error_from_info, scrub_exception
from llm_invocation.testing import (
    HttpError,
    Malformed,
    MockTransport,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    Stall,
    WireFormat,
    open_fake_server,
)

from .http_servers import Certificates

FORMATS: Final[tuple[WireFormat, ...]] = ("openai", "anthropic", "gemini")
KEY: Final = "sk-test-CAUSE-KEY-0123456789abcdef"
GOOGLE_KEY: Final = "AIzaSyTESTcause0123456789abcdefghijklmno"


def settings(fmt: WireFormat, **provider: Any) -> dict[str, Any]:
    """One provider, no retries, limits and budgets lifted explicitly."""
    return {
        "provider": fmt,
        "timeout": 30,
        "retries": {"max_attempts": 1, "jitter": False},
        "timeouts": {"connect": 5, "first_chunk": 10, "idle_chunk": 5},
        "rate_limits": {
            "requests_per_minute": None,
            "tokens_per_minute": None,
            "concurrent_calls": None,
        },
        "cost_control": {"max_cost_per_request": None, "max_budget": None},
        "providers": {fmt: {"api_key": GOOGLE_KEY if fmt == "gemini" else KEY, **provider}},
    }


def request(fmt: str, model: str = "m", *, stream: bool = True) -> llm.Request:
    return llm.Request(model=f"{fmt}:{model}", messages=[llm.user("hello")], stream=stream)


@asynccontextmanager
async def mock_client(
    scenarios: Scenarios, fmt: WireFormat, **overrides: Any
) -> AsyncGenerator[llm.Client]:
    """A client whose provider ``fmt`` is answered in-process by the scenarios."""
    config = llm.Config.from_dict({**settings(fmt), **overrides})
    transport = MockTransport(scenarios, format=fmt)
    async with llm.open_client(
        config, transports={fmt: lambda: transport}, scenarios=scenarios
    ) as client:
        yield client


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port with a socket bound to it that does not listen: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception it chains (causes, contexts, group members)."""
    out: list[BaseException] = []
    pending = [error]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in out):
            continue
        out.append(current)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(cast("BaseExceptionGroup[BaseException]", current).exceptions)
    return out


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    printed = "".join(traceback.format_exception(error))
    for secret in secrets:
        assert secret not in printed
        for link in chain(error):
            assert secret not in str(link)
            assert secret not in repr(link)


# -- the paths to the caller -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_refused_connection_is_the_cause(
    fmt: WireFormat, stream: bool, refusing_port: int
) -> None:
    config = llm.Config.from_dict(
        settings(fmt, base_url=f"http://127.0.0.1:{refusing_port}/{fmt}/v1")
    )
    async with llm.open_client(config) as client:
        with pytest.raises(llm.ProviderError) as caught:
            await client.invoke_sync(request(fmt, stream=stream))
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "could not connect" in caught.value.message
    assert_no_secret(caught.value, KEY, GOOGLE_KEY)


async def test_a_refused_connection_is_the_cause_through_complete(refusing_port: int) -> None:
    config = llm.Config.from_dict(
        settings("openai", base_url=f"http://127.0.0.1:{refusing_port}/openai/v1")
    )
    async with llm.open_client(config) as client:
        with pytest.raises(llm.ProviderError) as caught:
            await client.complete(llm.CompletionRequest(prompt="hello", model="openai:gpt-4o"))
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_tls_failure_is_the_cause(tmp_path: Path) -> None:
    certificates = Certificates(tmp_path)
    server_context = certificates.server_context()
    async with open_fake_server(Scenarios(), ssl_context=server_context) as server:
        # The client does not trust the test CA.
        config = llm.Config.from_dict(settings("openai", base_url=server.base_url("openai")))
        async with llm.open_client(config) as client:
            with pytest.raises(llm.ProviderError) as caught:
                await client.invoke_sync(request("openai"))
    error = caught.value
    assert "certificate verify failed" in error.details["tls"]
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert any(isinstance(link, OSError) for link in chain(error.__cause__))


@pytest.mark.wall_limit(60)
async def test_an_http_read_timeout_is_the_cause() -> None:
    scenarios = Scenarios(Scenario(text="late", failure=Stall(after_chunks=0)))
    async with open_fake_server(scenarios) as server:
        overrides = settings("openai", base_url=server.base_url("openai"))
        # The HTTP read timeout is the longer watchdog plus one second.
        overrides["timeouts"] = {"connect": 5, "first_chunk": 0.05, "idle_chunk": 0.05}
        async with llm.open_client(llm.Config.from_dict(overrides)) as client:
            with pytest.raises(llm.InvocationTimeout) as caught:
                await client.invoke_sync(request("openai", stream=False))
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_stream_watchdog_names_its_limit_with_trio_s_timeout_as_cause(
    fmt: WireFormat, autojump_clock: trio.testing.MockClock
) -> None:
    scenarios = Scenarios(Scenario(text="abcd", chunk_chars=2, failure=Stall(after_chunks=1)))
    async with mock_client(scenarios, fmt) as client:
        with pytest.raises(llm.InvocationTimeout) as caught:
            await client.invoke_sync(request(fmt))
    assert caught.value.details["limit"] == "idle_chunk"
    assert isinstance(caught.value.__cause__, trio.TooSlowError)


async def test_the_call_s_own_timeout_has_trio_s_timeout_as_cause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios(Scenario(text="late", failure=Stall(after_chunks=0)))
    async with mock_client(scenarios, "openai", timeout=3) as client:
        with pytest.raises(llm.InvocationTimeout) as caught:
            await client.invoke_sync(request("openai"))
    assert isinstance(caught.value.__cause__, trio.TooSlowError)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_malformed_stream_keeps_the_decoding_exception(fmt: WireFormat) -> None:
    scenarios = Scenarios(Scenario(text="hello", failure=Malformed(after_chunks=0)))
    async with mock_client(scenarios, fmt) as client:
        with pytest.raises(llm.StreamingFailed) as caught:
            await client.invoke_sync(request(fmt))
    assert isinstance(caught.value.__cause__, msgspec.DecodeError)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_malformed_body_keeps_the_decoding_exception(fmt: WireFormat) -> None:
    scenarios = Scenarios(Scenario(text="hello", failure=Malformed(after_chunks=0)))
    async with mock_client(scenarios, fmt) as client:
        with pytest.raises(llm.ProviderError) as caught:
            await client.invoke_sync(request(fmt, stream=False))
    assert isinstance(caught.value.__cause__, msgspec.DecodeError)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_error_status_has_no_cause_and_carries_the_provider_s_words(
    fmt: WireFormat, stream: bool
) -> None:
    scenarios = Scenarios(Scenario(failure=HttpError(status=400, message="bad field 'x'")))
    async with mock_client(scenarios, fmt) as client:
        with pytest.raises(llm.InvalidRequest) as caught:
            await client.invoke_sync(request(fmt, stream=stream))
    assert caught.value.__cause__ is None
    assert caught.value.status == 400
    assert "bad field 'x'" in caught.value.message


async def test_an_open_circuit_has_the_failure_that_opened_it_as_cause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios(Scenario(failure=HttpError(status=500)))
    async with mock_client(scenarios, "openai") as client:
        last: llm.LLMError | None = None
        for _ in range(5):  # the session's breaker opens after five failures in a row
            with pytest.raises(llm.ProviderError) as failed:
                await client.invoke_sync(request("openai"))
            last = failed.value
        with pytest.raises(llm.ProviderOverloaded) as refused:
            await client.invoke_sync(request("openai"))
    assert refused.value.details["circuit"] == "open"
    assert last is not None
    assert refused.value.__cause__ is last
    assert scenarios.calls("m") == 5


async def test_an_mcp_server_that_cannot_start_has_the_os_error_as_cause() -> None:
    config = llm.Config.from_dict(settings("openai"))
    async with llm.open_client(config) as client:
        missing = {"transport": "stdio", "command": "/nonexistent/llm-invocation-mcp", "timeout": 5}
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await client.register_mcp_server("absent", missing)
    assert isinstance(caught.value.__cause__, OSError)


async def test_an_unreachable_mcp_server_keeps_its_cause_and_no_key_of_its_url(
    refusing_port: int,
) -> None:
    config = llm.Config.from_dict(settings("openai"))
    url = f"http://127.0.0.1:{refusing_port}/mcp?key={GOOGLE_KEY}"
    async with llm.open_client(config) as client:
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await client.register_mcp_server("remote", {"transport": "http", "url": url})
    assert caught.value.__cause__ is not None
    assert_no_secret(caught.value, GOOGLE_KEY)


async def test_a_tool_that_raises_is_an_error_result_in_the_loop_and_its_own_exception_direct() -> (
    None
):
    @llm.tool
    async def forecast(city: str) -> str:
        """The weather in a city."""
        raise LookupError(f"no forecast for {city}")

    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(tool_calls=[ScriptedToolCall(name="forecast", arguments={"city": "Oslo"})]),
        Scenario(text="No forecast today."),
    )
    async with mock_client(scenarios, "openai") as client:
        client.register_tool(forecast)
        async with client.invoke(request("openai"), tool_mode="auto") as loop:
            items = [item async for item in loop]
        (results,) = [item for item in items if isinstance(item, llm.ToolResultsEvent)]
        assert results.results[0].is_error
        assert "no forecast for Oslo" in results.results[0].content
        assert loop.response.text == "No forecast today."
        with pytest.raises(LookupError, match="no forecast for Oslo"):
            await client.tools.execute("forecast", {"city": "Oslo"})


async def test_the_caller_s_cancellation_is_trio_s_not_an_error() -> None:
    scenarios = Scenarios(Scenario(text="late", failure=Stall(after_chunks=0)))
    async with mock_client(scenarios, "openai") as client:
        with trio.CancelScope() as scope:
            async with client.invoke(request("openai")) as stream:
                scope.cancel()
                async for _ in stream:
                    pass
        assert scope.cancelled_caught


# -- no secret in any link ---------------------------------------------------------------------


class LeakyTransport(httpx.AsyncBaseTransport):
    """A transport whose failures quote the key, the URL with a ``?key=`` and the headers."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        key = (
            headers.get("x-goog-api-key")
            or headers.get("x-api-key")
            or headers.get("authorization", "").removeprefix("Bearer ")
        )
        try:
            raise OSError(errno.ECONNREFUSED, f"refused for {key}", f"/var/run/{key}.sock")
        except OSError as exc:
            error = httpx.ConnectError(
                f"cannot reach {request.url}?key={key} with headers {headers}", request=request
            )
            error.add_note(f"the key was {key}")
            raise error from exc


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_no_link_of_the_chain_shows_the_key(fmt: WireFormat, stream: bool) -> None:
    transport = LeakyTransport()
    config = llm.Config.from_dict(settings(fmt))
    async with llm.open_client(config, transports={fmt: lambda: transport}) as client:
        with pytest.raises(llm.ProviderError) as caught:
            await client.invoke_sync(request(fmt, stream=stream))
    cause = caught.value.__cause__
    assert isinstance(cause, httpx.ConnectError)
    assert isinstance(cause.__cause__, ConnectionRefusedError)
    assert cause.__cause__.errno == errno.ECONNREFUSED
    assert_no_secret(caught.value, KEY, GOOGLE_KEY)


def test_scrub_exception_masks_args_attributes_notes_and_groups() -> None:
    class Custom(Exception):
        def __init__(self, token: str) -> None:
            super().__init__("failed")
            self.token = token

        def __str__(self) -> str:
            return f"failed with {self.token}"

    inner = Custom(KEY)
    group = ExceptionGroup("several", [ValueError(f"api_key={KEY}"), inner])
    outer = RuntimeError(f"GET https://example.test/v1?key={GOOGLE_KEY}")
    outer.__cause__ = group
    outer.add_note(f"Authorization: Bearer {KEY}")
    scrub_exception(outer)
    assert_no_secret(outer, KEY, GOOGLE_KEY)
    assert isinstance(outer.__cause__, ExceptionGroup)
    assert str(inner).startswith("failed with sk-")


# -- codes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (llm.ProviderNotFound("x"), "provider_not_found"),
        (llm.ModelNotSupported("x"), "model_not_supported"),
        (llm.RateLimited("x"), "rate_limit_exceeded"),
        (llm.InvalidRequest("x"), "invalid_request"),
        (llm.ToolExecutionFailed("x"), "tool_execution_failed"),
        (llm.StreamingFailed("x"), "streaming_failed"),
    ],
)
def test_codes_are_the_specification_s_spellings(error: llm.LLMError, code: str) -> None:
    assert error.code == code
    assert msgspec.json.decode(msgspec.json.encode(error.info()))["code"] == code


def test_the_earlier_rate_limit_code_still_reads_as_rate_limited() -> None:
    assert ErrorCode("rate_limit") is ErrorCode.RATE_LIMIT_EXCEEDED
    assert ErrorCode.RATE_LIMIT is ErrorCode.RATE_LIMIT_EXCEEDED
    info = msgspec.json.decode(
        b'{"code": "rate_limit", "message": "slow down", "retry_after": 2.0}', type=ErrorInfo
    )
    error = error_from_info(info)
    assert isinstance(error, llm.RateLimited)
    assert error.retry_after == 2.0
    assert error.code == "rate_limit_exceeded"


def test_an_unknown_code_is_a_provider_error_that_keeps_it() -> None:
    info = ErrorInfo(code="teapot", message="short and stout")  # pyright: ignore[reportArgumentType]
    error = error_from_info(info)
    assert type(error) is llm.ProviderError
    assert error.details["code"] == "teapot"


def test_the_cause_survives_the_wire_form_in_this_process_only() -> None:
    cause = ValueError("below")
    error = llm.StreamingFailed("broke")
    error.__cause__ = cause
    info = error.info()
    assert error_from_info(info).__cause__ is cause
    decoded = msgspec.json.decode(msgspec.json.encode(info), type=ErrorInfo)
    assert decoded == info
    assert error_from_info(decoded).__cause__ is None


def test_canceled_is_invocation_canceled_on_a_client_that_reads_frames() -> None:
    error = error_from_info(ErrorInfo(code=ErrorCode.CANCELED, message="cancelled by the client"))
    assert isinstance(error, llm.InvocationCanceled)
