"""Providers of one's own: a codec for a made-up wire format ("Lines": JSON lines), registered
on a running client or passed at open, served end to end by a small server on real sockets.

The server answers by the request's model: ``ok`` streams (or returns) an answer with its
usage, ``down`` is a 503, ``auth`` a 401, ``err-line`` streams a text line then an error
line, ``garbage`` streams a line that is not JSON.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import msgspec
import pytest
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
    Request,
    Response,
    StreamChunk,
    StreamDecoder,
    Usage,
    error_for_status,
)

from .http_servers import CHUNKED_HEAD, Peer, Server, ok, serve

# -- the "Lines" format ------------------------------------------------------------------------


def _usage(data: Mapping[str, Any]) -> Usage:
    return Usage(prompt_tokens=data["in"], completion_tokens=data["out"])


class LinesDecoder(StreamDecoder):
    def __init__(self, codec: LinesCodec, model: str) -> None:
        self.codec, self.model = codec, model
        self.buffer = b""
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> list[StreamChunk]:
        if "feed" in self.codec.fail:
            raise RuntimeError("decoder bug")
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        out: list[StreamChunk] = []
        for line in lines:
            event = msgspec.json.decode(line)
            name = self.codec.name
            if "text" in event:
                out.append(StreamChunk(provider=name, model=self.model, text=event["text"]))
            elif "done" in event:
                self._done = True
                usage = _usage(event["done"])
                out.append(
                    StreamChunk(provider=name, model=self.model, finish_reason="stop", usage=usage)
                )
            else:
                self._done = True
                error = llm.ProviderOverloaded(event["error"], provider=name)
                out.append(StreamChunk(provider=name, model=self.model, error=error.info()))
        return out

    def close(self) -> list[StreamChunk]:
        return []


class LinesCodec(ProviderCodec):
    """JSON lines; ``fail`` names the methods that raise (to test containment)."""

    kind: ClassVar[str] = "lines"
    default_base_url: ClassVar[str] = "http://127.0.0.1:9"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail: set[str] = set()
        self.keys_seen: list[str | None] = []

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise RuntimeError(f"{method} bug")

    def known_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="ok", provider=self.name, max_output_tokens=100)]

    def supports(self, feature: Feature, model: str | None = None) -> bool:
        return False

    def validate(self, request: Request) -> None:
        self._maybe_fail("validate")

    def encode(self, request: Request, api_key: str | None) -> HttpRequest:
        self._maybe_fail("encode")
        self.keys_seen.append(api_key)
        body = {"model": request.model, "prompt": request.messages[-1].text}
        return HttpRequest(
            method="POST",
            url=f"{self.base_url}/{'stream' if request.stream else 'whole'}",
            headers={"content-type": "application/json", "x-key": api_key or ""},
            body=msgspec.json.encode(body),
            stream=request.stream,
        )

    def stream_decoder(self, request: Request) -> StreamDecoder:
        self._maybe_fail("stream_decoder")
        return LinesDecoder(self, request.model)

    def decode_response(self, request: Request, body: bytes) -> Response:
        self._maybe_fail("decode_response")
        data = msgspec.json.decode(body)
        return Response(
            id="lines-1",
            provider=self.name,
            model=request.model,
            created=datetime.now(UTC),
            choices=[Choice(message=Message(role="assistant", content=data["text"]))],
            usage=_usage(data["usage"]),
        )

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> llm.LLMError:
        self._maybe_fail("map_error")
        try:
            message = msgspec.json.decode(body)["error"]
        except JSON_ERRORS:
            message = f"HTTP {status}"
        if status == 503:
            return llm.ProviderOverloaded(message, provider=self.name, status=status)
        return error_for_status(status, message, provider=self.name)

    def list_models_request(self, api_key: str | None) -> HttpRequest:
        self._maybe_fail("list_models_request")
        return HttpRequest(method="GET", url=f"{self.base_url}/models", headers={})

    def decode_models(self, body: bytes) -> list[ModelInfo]:
        return [ModelInfo(id=m, provider=self.name) for m in msgspec.json.decode(body)]


async def lines_server(peer: Peer) -> None:
    while (request := await peer.request()) is not None:
        if request.target == "/models":
            await peer.send(ok(b'["ok", "down"]'))
            continue
        asked = msgspec.json.decode(request.body)
        model = asked["model"]
        if model == "down":
            await peer.send(ok(b'{"error": "resting"}').replace(b"200 OK", b"503 Unavailable"))
        elif model == "auth":
            await peer.send(ok(b'{"error": "who?"}').replace(b"200 OK", b"401 Unauthorized"))
        elif request.target == "/whole":
            usage = {"in": 3, "out": 2}
            await peer.send(ok(msgspec.json.encode({"text": "whole answer", "usage": usage})))
        else:
            if model == "err-line":
                lines = [b'{"text": "par"}', b'{"error": "overloaded mid-way"}']
            elif model == "garbage":
                lines = [b"this is not json"]
            else:
                lines = [b'{"text": "hello "}', b'{"text": "world"}']
                lines.append(b'{"done": {"in": 5, "out": 2}}')
            await peer.send(CHUNKED_HEAD)
            for line in lines:
                piece = line + b"\n"
                await peer.send(b"%x\r\n%b\r\n" % (len(piece), piece))
            await peer.send(b"0\r\n\r\n")


@asynccontextmanager
async def lines_provider() -> AsyncGenerator[Server]:
    async with serve(lines_server) as server:
        yield server


def make_config(**extra: Any) -> llm.Config:
    """Explicit limits: none, except where a test sets them; quick retries; priced models."""
    data: dict[str, Any] = {
        "provider": "mock",
        "retries": {"max_attempts": 1},
        "rate_limits": {
            "requests_per_minute": None,
            "tokens_per_minute": None,
            "concurrent_calls": None,
        },
        "cost_control": {
            "max_cost_per_request": None,
            "max_budget": None,
            "prices": {"lines:ok": {"input_per_mtok": "1000", "output_per_mtok": "2000"}},
        },
    }
    data.update(extra)
    return llm.Config.from_dict(data)


def ask(model: str, *, stream: bool = True) -> llm.Request:
    return llm.Request(model=f"lines:{model}", messages=[llm.user("hi")], stream=stream)


async def registered(client: llm.Client, server: Server) -> LinesCodec:
    codec = LinesCodec(name="lines", base_url=server.url)
    made = await client.register_provider("lines", codec)
    assert made is codec
    return codec


# -- registering -------------------------------------------------------------------------------


async def test_a_provider_registered_at_run_time_streams_end_to_end() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        await registered(client, server)
        assert "lines" in client.providers
        async with client.invoke(ask("ok")) as stream:
            texts = [chunk.text async for chunk in stream]
        assert "".join(texts) == "hello world"
        response = stream.response
        assert response.provider == "lines"
        assert response.finish_reason == "stop"
        assert response.usage is not None
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 2)


async def test_a_registered_provider_answers_non_streamed_requests() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        await registered(client, server)
        response = await client.invoke_sync(ask("ok", stream=False))
        assert response.text == "whole answer"
        assert response.usage is not None
        assert response.usage.total_tokens == 5


async def test_its_usage_is_priced_and_reported_under_its_name() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        await registered(client, server)
        await client.invoke_sync(ask("ok"))
        usage = client.get_usage()
        assert usage.total_tokens == 7
        # 5 prompt tokens at $1000 and 2 completion tokens at $2000 per million.
        assert usage.cost == Decimal("0.009")
        report = await client.usage(group_by=["provider"])
        rows = {row.group["provider"]: row for row in report.rows}
        assert rows["lines"].calls == 1


async def test_its_http_errors_are_mapped_by_its_codec() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        await registered(client, server)
        with pytest.raises(llm.ProviderOverloaded) as info:
            await client.invoke_sync(ask("down"))
        assert info.value.status == 503
        assert info.value.message == "resting"
        assert info.value.code is llm.ErrorCode.PROVIDER_ERROR


async def test_an_error_line_in_its_stream_ends_the_stream_with_that_error() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        await registered(client, server)
        texts: list[str] = []
        with pytest.raises(llm.ProviderOverloaded, match="overloaded mid-way"):
            async with client.invoke(ask("err-line")) as stream:
                async for chunk in stream:
                    texts.append(chunk.text)
        assert "".join(texts) == "par"


async def test_a_codec_class_or_a_factory_can_be_registered() -> None:
    made: list[tuple[str, ProviderConfig]] = []

    def factory(name: str, settings: ProviderConfig) -> ProviderCodec:
        made.append((name, settings))
        return LinesCodec(name=name, base_url=settings.base_url)

    async with lines_provider() as server, llm.open_client(make_config()) as client:
        settings = ProviderConfig(base_url=server.url, options={"x": 1})
        by_class = await client.register_provider("lines", LinesCodec, config=settings)
        assert isinstance(by_class, LinesCodec)
        assert by_class.base_url == server.url
        assert by_class.options == {"x": 1}
        by_factory = await client.register_provider("lines2", factory, config=settings)
        assert made == [("lines2", settings)]
        assert by_factory.name == "lines2"
        reply = await client.invoke_sync(llm.Request(model="lines2:ok", messages=[llm.user("x")]))
        assert reply.text == "hello world"


async def test_providers_of_ones_own_can_be_passed_at_open() -> None:
    async with lines_provider() as server:
        config = make_config(providers={"lines": {"base_url": server.url}})
        async with llm.open_client(config, providers={"lines": LinesCodec}) as client:
            assert "lines" in client.providers
            assert client.codec("lines").base_url == server.url
            reply = await client.invoke_sync(ask("ok"))
            assert reply.text == "hello world"


async def test_a_provider_of_ones_own_can_be_the_default_one() -> None:
    async with lines_provider() as server:
        config = make_config(provider="lines", base_url=server.url)
        async with llm.open_client(config, providers={"lines": LinesCodec}) as client:
            reply = await client.invoke_sync(llm.Request(model="ok", messages=[llm.user("x")]))
            assert (reply.provider, reply.text) == ("lines", "hello world")


async def test_a_custom_entry_that_names_a_built_in_kind_is_refused_at_open() -> None:
    config = make_config(providers={"lines": {"kind": "openai", "api_key": "sk-x-0123456789"}})
    with pytest.raises(llm.ConfigurationError, match="kind"):
        async with llm.open_client(config, providers={"lines": LinesCodec}):
            pass


# -- duplicates and bad codecs -----------------------------------------------------------------


async def test_registering_a_name_twice_is_a_typed_error() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        await registered(client, server)
        for name in ("lines", "mock"):  # a registered one and a configured one
            with pytest.raises(llm.ConfigurationError) as info:
                await client.register_provider(name, LinesCodec(name=name, base_url=server.url))
            assert info.value.details["reason"] == "duplicate_provider"
            assert info.value.code is llm.ErrorCode.CONFIGURATION


@pytest.mark.parametrize("name", ["", "a:b", "a b", "a/b"])
async def test_an_invalid_provider_name_is_refused(name: str) -> None:
    async with llm.open_client(make_config()) as client:
        with pytest.raises(llm.ConfigurationError) as info:
            await client.register_provider(name, LinesCodec)
        assert info.value.details["reason"] == "invalid_provider_name"


async def test_what_is_not_a_codec_named_for_the_provider_is_refused() -> None:
    def broken(name: str, settings: ProviderConfig) -> ProviderCodec:
        raise ValueError("cannot build")

    def wrong_name(name: str, settings: ProviderConfig) -> ProviderCodec:
        return LinesCodec(name="other")

    def not_a_codec(name: str, settings: ProviderConfig) -> Any:
        return object()

    async with llm.open_client(make_config()) as client:
        for spec in (broken, wrong_name, not_a_codec, LinesCodec(name="elsewhere"), 42):
            with pytest.raises(llm.ConfigurationError) as info:
                await client.register_provider("lines", spec)  # pyright: ignore[reportArgumentType]
            assert info.value.details["reason"] == "invalid_codec"
        assert "lines" not in client.providers


# -- governed like the others ------------------------------------------------------------------


async def test_the_configured_limits_of_its_name_govern_a_registered_provider() -> None:
    config = make_config(
        providers={
            "lines": {"enabled": False, "rate_limits": {"requests_per_minute": 1, "max_wait": 0}}
        }
    )
    async with lines_provider() as server, llm.open_client(config) as client:
        await registered(client, server)
        await client.invoke_sync(ask("ok"))
        with pytest.raises(llm.RateLimited) as info:
            await client.invoke_sync(ask("ok"))
        assert info.value.details["key"] == "p:lines"


async def test_limits_that_only_the_client_configuration_sets_are_refused_at_registration() -> None:
    async with llm.open_client(make_config()) as client:
        settings = ProviderConfig(rate_limits={"requests_per_minute": 5})  # pyright: ignore[reportArgumentType]
        with pytest.raises(llm.ConfigurationError) as info:
            await client.register_provider("lines", LinesCodec, config=settings)
        assert info.value.details == {
            "reason": "client_setting",
            "provider": "lines",
            "field": "rate_limits",
        }


async def test_a_cancelled_registration_leaves_nothing_behind() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.register_provider("lines", LinesCodec(name="lines", base_url=server.url))
        assert scope.cancelled_caught
        assert "lines" not in client.providers
        assert "provider.lines" not in client.runtime.names()
        await registered(client, server)  # the name is free again
        assert (await client.invoke_sync(ask("ok"))).text == "hello world"


# -- containment: a codec that raises fails one call, never the session ------------------------


async def test_a_codec_that_raises_fails_that_call_with_a_typed_error_only() -> None:
    async with lines_provider() as server, llm.open_client(make_config()) as client:
        codec = await registered(client, server)
        cases: list[tuple[str, str, bool, type[llm.LLMError], str | None]] = [
            ("validate", "ok", True, llm.ProviderError, "encode failed"),
            ("encode", "ok", True, llm.ProviderError, "encode failed"),
            ("encode", "ok", False, llm.ProviderError, "encode failed"),
            ("stream_decoder", "ok", True, llm.ProviderError, "malformed response"),
            ("feed", "ok", True, llm.ProviderError, "malformed response"),
            ("decode_response", "ok", False, llm.ProviderError, "malformed response"),
            ("map_error", "auth", True, llm.ProviderError, "malformed response"),
            ("map_error", "down", False, llm.ProviderError, "malformed response"),
        ]
        for method, model, stream, expected, reason in cases:
            codec.fail = {method}
            with pytest.raises(expected) as info:
                await client.invoke_sync(ask(model, stream=stream))
            if reason is not None:
                assert info.value.details["reason"] == reason, method
            codec.fail = set()
            assert (await client.invoke_sync(ask("ok"))).text == "hello world"
        with pytest.raises(llm.ProviderError, match="malformed response"):
            await client.invoke_sync(ask("garbage"))
        codec.fail = {"list_models_request"}  # the known models stand in for the listing
        assert [m.id for m in await client.list_models("lines", refresh=True)] == ["ok"]
        codec.fail = set()
        assert [m.id for m in await client.list_models("lines", refresh=True)] == ["ok", "down"]
        assert client.runtime.statistics().restarts == 0
        stats = (await client.session_statistics())["lines"]
        assert stats.malformed == 6
