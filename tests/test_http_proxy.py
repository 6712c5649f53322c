"""Proxies: the environment read as httpx reads it, settings, and requests through a proxy.

The resolver is checked against httpx's own (private) functions on generated environments
and URLs. The end-to-end tests point providers at hosts under ``.invalid`` (which never
resolve), so a request that reached the origin directly would fail: the test proxy answers
every request itself, like a provider.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from httpx._utils import URLPattern, get_environment_proxies  # the oracle
from hypothesis import given, settings
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.http import HttpPool, HttpSettings, settings_for
from llm_invocation.http._proxy import ProxyRules, environment_proxies, proxy_rules
from llm_invocation.providers._base import HttpRequest
from llm_invocation.testing import Scenario, Scenarios, open_fake_server

from .http_servers import Certificates, Peer, serve, serve_proxy

KEY = "sk-test-PROXY-0123456789abcdef"
PASSWORD = "pr0xy-Pa55word-9876"
VARIABLES = [
    "HTTP_PROXY",
    "http_proxy",
    "Http_Proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "FTP_PROXY",
    "REQUEST_METHOD",
]

# -- the resolver, against httpx ---------------------------------------------------------------

proxy_values = st.sampled_from(
    ["", "http://proxy.a:3128", "proxy.b:8080", "https://user:pw@proxy.c", "http://[::1]:3128"]
)
no_proxy_entries = st.sampled_from(
    [
        "*",
        "example.com",
        ".example.com",
        "EXAMPLE.com",
        "localhost",
        "LocalHost",
        "127.0.0.1",
        "10.0.0.0/8",
        "::1",
        "http://internal.test",
        "https://internal.test:8443",
        "api.test:8080",
        " spaced.test ",
        "",
        "sub.example.com",
        "invalid",
    ]
)
environments = st.lists(
    st.tuples(
        st.sampled_from(VARIABLES),
        st.one_of(proxy_values, st.lists(no_proxy_entries, max_size=4).map(",".join)),
    ),
    max_size=6,
).map(dict)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(
        [
            "example.com",
            "api.example.com",
            "notexample.com",
            "localhost",
            "sub.localhost",
            "127.0.0.1",
            "10.0.0.0",
            "10.1.2.3",
            "[::1]",
            "internal.test",
            "api.test",
            "spaced.test",
            "api.provider.invalid",
        ]
    ),
    st.sampled_from(["", ":80", ":443", ":8080", ":8443"]),
    st.sampled_from(["", "/v1/chat"]),
)


def httpx_proxy_for(rules: dict[str, str | None], url: httpx.URL) -> str | None:
    """The proxy httpx's client would pick for ``url`` (its mounts, most specific first)."""
    for pattern, proxy in sorted(
        ((URLPattern(key), value) for key, value in rules.items()), key=lambda item: item[0]
    ):
        if pattern.matches(url):
            return proxy
    return None


@settings(max_examples=600, deadline=None)
@given(env=environments, targets=st.lists(urls, min_size=1, max_size=4))
def test_environment_proxies_are_resolved_as_httpx_resolves_them(
    env: dict[str, str], targets: list[str]
) -> None:
    with mock.patch.dict(os.environ, env, clear=True):
        expected = get_environment_proxies()
    ours = environment_proxies(env)
    assert {pattern: proxy for pattern, (proxy, _) in ours.items()} == expected
    rules = ProxyRules({pattern: proxy for pattern, (proxy, _) in ours.items()})
    for target in targets:
        url = httpx.URL(target)
        assert rules.proxy_for(url) == httpx_proxy_for(expected, url)


def test_a_proxy_rule_names_the_variable_it_came_from() -> None:
    rules = environment_proxies({"https_proxy": "proxy:1", "NO_PROXY": "a.test"})
    assert rules == {
        "https://": ("http://proxy:1", "https_proxy"),
        "all://*a.test": (None, "NO_PROXY"),
    }


def test_an_explicit_proxy_serves_every_url_and_ignores_the_environment() -> None:
    env = {"HTTP_PROXY": "http://env.proxy:1", "NO_PROXY": "*"}
    rules, problems = proxy_rules(proxy="http://mine:3128", trust_env=True, environ=env)
    assert problems == []
    for url in ("http://a.test", "https://b.test:8443/x"):
        assert rules.proxy_for(httpx.URL(url)) == "http://mine:3128"


def test_without_trust_env_the_environment_is_not_read() -> None:
    rules, problems = proxy_rules(
        proxy=None, trust_env=False, environ={"ALL_PROXY": "socks5://bad:1"}
    )
    assert (problems, bool(rules)) == ([], False)


def test_an_unusable_environment_proxy_is_reported_with_its_variable() -> None:
    env = {"HTTPS_PROXY": "socks5://localhost:1080", "HTTP_PROXY": "http://fine:1"}
    rules, problems = proxy_rules(proxy=None, trust_env=True, environ=env)
    assert problems == [
        ("HTTPS_PROXY", "SOCKS proxies are not supported: use an http:// or https:// proxy")
    ]
    assert rules.proxy_for(httpx.URL("http://a.test")) == "http://fine:1"


# -- requests through a proxy ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in ("REQUEST_METHOD", "LLM_PROXY"):
            monkeypatch.delenv(name)


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


def config(**overrides: Any) -> llm.Config:
    settings_: dict[str, Any] = {
        "provider": "openai",
        "providers": {"openai": {"api_key": KEY, "base_url": "http://api.provider.invalid/v1"}},
        "retries": {"max_attempts": 1},
    }
    for key, value in overrides.items():
        if key == "openai":
            settings_["providers"]["openai"].update(value)
        else:
            settings_[key] = value
    # Not about limits, and model "m" has no price: nothing is limited.
    return llm.Config.unlimited(**settings_)


def ask() -> llm.Request:
    return llm.Request(model="openai:m", messages=[llm.user("hi")], stream=False)


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://proxy-user:{PASSWORD}@")


async def test_http_proxy_from_the_environment_gets_the_request_instead_of_the_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serve_proxy(Scenarios(Scenario(text="via the proxy"))) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with llm.open_client(config()) as client:
            assert (await client.invoke_sync(ask())).text == "via the proxy"
    assert proxy.lines == ["POST http://api.provider.invalid/v1/chat/completions HTTP/1.1"]


async def test_https_goes_through_a_connect_tunnel_of_the_proxy(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates
) -> None:
    tunnel = certificates.server_context()
    async with serve_proxy(Scenarios(Scenario(text="tunnelled")), tunnel_tls=tunnel) as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        openai = {
            "base_url": "https://api.provider.invalid/v1",
            "verify": str(certificates.ca_file),
        }
        async with llm.open_client(config(openai=openai)) as client:
            assert (await client.invoke_sync(ask())).text == "tunnelled"
    assert proxy.lines == [
        "CONNECT api.provider.invalid:443 HTTP/1.1",
        "(tunnel api.provider.invalid) POST /v1/chat/completions HTTP/1.1",
    ]


async def test_all_proxy_serves_both_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve_proxy(Scenarios(Scenario(text="all"))) as proxy:
        monkeypatch.setenv("all_proxy", proxy.url)
        async with llm.open_client(config()) as client:
            assert (await client.invoke_sync(ask())).text == "all"
    assert len(proxy.lines) == 1


async def test_no_proxy_sends_a_host_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    async with (
        serve_proxy() as proxy,
        open_fake_server(Scenarios(Scenario(text="direct"))) as origin,
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "example.test, 127.0.0.1")
        openai = {"base_url": origin.base_url("openai")}
        async with llm.open_client(config(openai=openai)) as client:
            assert (await client.invoke_sync(ask())).text == "direct"
    assert proxy.lines == []
    assert origin.statistics().requests_total == 1


async def test_a_provider_s_own_proxy_overrides_the_global_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with (
        serve_proxy(Scenarios(Scenario(text="global"))) as global_proxy,
        serve_proxy(Scenarios(Scenario(text="own"))) as own_proxy,
    ):
        anthropic = {"api_key": KEY, "base_url": "http://api.other.invalid/v1"}
        overrides = {
            "proxy": global_proxy.url,
            "openai": {"proxy": own_proxy.url},
        }
        cfg = config(**overrides).merged_with({"providers": {"anthropic": anthropic}})
        async with llm.open_client(cfg) as client:
            assert (await client.invoke_sync(ask())).text == "own"
            other = llm.Request(model="anthropic:m", messages=[llm.user("hi")], stream=False)
            assert (await client.invoke_sync(other)).text == "global"
    assert own_proxy.lines == ["POST http://api.provider.invalid/v1/chat/completions HTTP/1.1"]
    assert global_proxy.lines == ["POST http://api.other.invalid/v1/messages HTTP/1.1"]


@pytest.mark.parametrize("where", ["global", "provider"])
async def test_trust_env_false_ignores_the_proxy_variables(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    async with (
        serve_proxy() as proxy,
        open_fake_server(Scenarios(Scenario(text="direct"))) as origin,
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        openai: dict[str, Any] = {"base_url": origin.base_url("openai")}
        if where == "provider":
            cfg = config(openai={**openai, "trust_env": False})
        else:
            cfg = config(openai=openai, trust_env=False)
        async with llm.open_client(cfg) as client:
            assert (await client.invoke_sync(ask())).text == "direct"
    assert proxy.lines == []


async def test_llm_proxy_sets_the_global_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve_proxy(Scenarios(Scenario(text="from LLM_PROXY"))) as proxy:
        cfg = llm.Config.from_env(
            {
                "LLM_PROXY": proxy.url,
                "LLM_PROVIDER": "openai",
                "OPENAI_API_KEY": KEY,
                "OPENAI_BASE_URL": "http://api.provider.invalid/v1",
                "LLM_MAX_RETRIES": "0",
                # model "m" has no price: no cap, no budget
                "LLM_MAX_COST_PER_REQUEST": "0",
                "LLM_MAX_BUDGET": "0",
            }
        )
        assert cfg.proxy == proxy.url
        async with llm.open_client(cfg) as client:
            assert (await client.invoke_sync(ask())).text == "from LLM_PROXY"
    assert len(proxy.lines) == 1


async def test_the_way_out_is_logged_once_per_provider_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llm_invocation.http")
    async with (
        serve_proxy(Scenarios(Scenario(text="a"))) as proxy,
        llm.open_client(config(proxy=with_credentials(proxy.url))) as client,
    ):
        for _ in range(3):
            await client.invoke_sync(ask())
    port = proxy.url.rsplit(":", 1)[1]
    lines = [r.getMessage() for r in caplog.records if "via proxy" in r.getMessage()]
    assert lines == [
        f"openai: requests to http://api.provider.invalid go via proxy http://127.0.0.1:{port}"
    ]
    assert PASSWORD not in caplog.text and "proxy-user" not in caplog.text


async def test_a_direct_route_is_logged_once() -> None:
    pool = HttpPool(HttpSettings(trust_env=False), provider="p")
    with mock.patch("llm_invocation.http._pool.log") as log:
        async with open_fake_server() as origin:
            request = HttpRequest(
                method="GET", url=origin.base_url("openai") + "/models", headers={}
            )
            for _ in range(2):
                async with pool.stream(request) as response:
                    await response.read()
        await pool.aclose()
    assert [call.args[0] % call.args[1:] for call in log.info.call_args_list] == [
        f"p: requests to http://127.0.0.1:{origin.port} go direct"
    ]


async def test_proxy_credentials_are_sent_to_the_proxy_and_shown_nowhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_proxy(Scenarios(Scenario(text="a"))) as proxy:
        cfg = config(openai={"proxy": with_credentials(proxy.url)})
        async with llm.open_client(cfg) as client:
            await client.invoke_sync(ask())
    expected = base64.b64encode(f"proxy-user:{PASSWORD}".encode()).decode()
    assert proxy.authorizations == [f"Basic {expected}"]
    shown = [repr(cfg), str(cfg.redacted()), cfg.to_json().decode(), caplog.text]
    shown.append(repr(settings_for(cfg, cfg.providers["openai"])))
    assert [text for text in shown if PASSWORD in text] == []


async def test_a_proxy_that_refuses_is_a_typed_error_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")

    async with serve(refuse) as proxy:
        openai = {
            "base_url": "https://api.provider.invalid/v1",
            "proxy": with_credentials(proxy.url),
        }
        async with llm.open_client(config(openai=openai)) as client:
            with pytest.raises(llm.ProviderError) as caught:
                await client.invoke_sync(ask())
    error = caught.value
    assert not error.retryable
    assert "407" in error.message
    assert PASSWORD not in str(error) and PASSWORD not in repr(error)
    assert PASSWORD not in str(error.info())


async def test_the_header_policy_applies_through_a_proxy() -> None:
    seen: list[dict[str, str]] = []

    async def record(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            seen.append(request.headers())
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    async with serve(record) as proxy:
        pool = HttpPool(HttpSettings(proxy=proxy.url))
        try:
            request = HttpRequest(
                method="POST", url="http://api.provider.invalid/x", headers={}, body=b"{}"
            )
            async with pool.stream(request) as response:
                assert await response.read() == b"{}"
        finally:
            await pool.aclose()
    assert seen[0]["user-agent"].startswith("llm-invocation/")
    assert seen[0]["accept-encoding"] == "gzip"


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("socks5://u:secret-pw-1@host:1080", "SOCKS proxies are not supported"),
        ("ftp://host:21", "expected an http:// or https:// proxy URL"),
        ("http://", "has no valid host"),
        ("http://u:secret-pw-1@host:3128/path", "without a path"),
        ("http://host:notaport", "is not a valid proxy URL"),
    ],
    ids=["socks", "scheme", "no-host", "path", "port"],
)
@pytest.mark.parametrize("where", ["global", "provider"])
def test_an_invalid_proxy_url_is_a_configuration_error_naming_the_field(
    proxy: str, message: str, where: str
) -> None:
    overrides: dict[str, Any] = (
        {"proxy": proxy} if where == "global" else {"openai": {"proxy": proxy}}
    )
    with pytest.raises(llm.ConfigurationError) as caught:
        config(**overrides)
    (problem,) = caught.value.problems
    assert problem.path == ("proxy" if where == "global" else "providers.openai.proxy")
    assert message in problem.message
    assert "secret-pw-1" not in str(caught.value)


async def test_an_unusable_proxy_variable_fails_the_client_start_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://u:secret-pw-1@localhost:1080")
    with pytest.raises(llm.ConfigurationError) as caught:
        async with llm.open_client(config()):
            pass
    problem = caught.value.problems[0]
    assert (problem.path, problem.source) == ("providers.openai.proxy", "env HTTPS_PROXY")
    assert "secret-pw-1" not in str(caught.value)
