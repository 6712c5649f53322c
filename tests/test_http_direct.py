"""The pool sends a request through our transport from its bytes, without httpx's request:
proven equal to the bytes of the httpx request it would otherwise build (`HttpPool._build`,
then `encode_request`), for generated requests."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from llm_invocation.http._pool import HttpPool
from llm_invocation.http._wire import encode_request
from llm_invocation.providers._base import HttpRequest

_TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
    min_size=1,
    max_size=12,
)
_SPECIAL = st.sampled_from(
    [
        "Host",
        "host",
        "Content-Length",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "connection",
        "User-Agent",
        "user-agent",
        "Accept-Encoding",
        "Authorization",
        "Content-Type",
    ]
)
_VALUE = st.text(
    alphabet=st.characters(blacklist_characters="\x00\n\r\x0b\x0c", blacklist_categories=["Cs"]),
    max_size=30,
)
_BODY = st.one_of(st.none(), st.just(b""), st.binary(max_size=64))
_URL = st.sampled_from(
    [
        "http://127.0.0.1:8080/v1/chat/completions",
        "http://example.test/v1/models?limit=5&after=a%20b",
        "https://api.example.test/v1beta/models/x:generateContent?alt=sse",
        "http://[::1]:9000/",
    ]
)


_REQUEST = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST"]),
        "url": _URL,
        "headers": st.dictionaries(st.one_of(_SPECIAL, _TOKEN), _VALUE, max_size=6),
        "body": _BODY,
        "stream": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(_REQUEST, min_size=1, max_size=4), repeat=st.booleans())
def test_the_bytes_sent_without_httpx_are_those_of_the_httpx_request(
    requests: list[dict[str, Any]], repeat: bool
) -> None:
    # One pool for them all: what it remembers of one request's headers (and of its
    # target's request line) never changes another's bytes.
    pool = HttpPool(provider="p")
    for fields in requests * (2 if repeat else 1):
        request = HttpRequest(**fields)
        target = pool._resolve(request.url)  # pyright: ignore[reportPrivateUsage]
        direct = pool._message(request, target)  # pyright: ignore[reportPrivateUsage]
        through_httpx = encode_request(pool._build(request, target.url))  # pyright: ignore[reportPrivateUsage]
        assert direct == through_httpx


def test_a_pool_that_saw_many_header_values_still_sends_each_request_its_own() -> None:
    pool = HttpPool(provider="p")
    url = "http://127.0.0.1:8080/v1/chat/completions"
    target = pool._resolve(url)  # pyright: ignore[reportPrivateUsage]
    for number in range(1500):  # more distinct fields than a pool keeps
        headers = {"traceparent": f"00-{number:032x}-{number:016x}-01", "a": "b"}
        request = HttpRequest(method="POST", url=url, headers=headers, body=b"{}")
        direct = pool._message(request, target)  # pyright: ignore[reportPrivateUsage]
        assert direct == encode_request(pool._build(request, target.url))  # pyright: ignore[reportPrivateUsage]


def test_a_large_body_is_sent_after_the_head_as_through_httpx() -> None:
    pool = HttpPool(provider="p")
    url = "http://127.0.0.1:8080/v1/chat/completions"
    request = HttpRequest(method="POST", url=url, headers={"a": "b"}, body=b"x" * 300_000)
    target = pool._resolve(url)  # pyright: ignore[reportPrivateUsage]
    direct = pool._message(request, target)  # pyright: ignore[reportPrivateUsage]
    assert direct.rest == request.body
    assert direct == encode_request(pool._build(request, target.url))  # pyright: ignore[reportPrivateUsage]
