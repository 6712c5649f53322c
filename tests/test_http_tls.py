"""TLS settings per provider: CA bundles, the environment's CA variables, mutual TLS.

A trio TLS server on 127.0.0.1 answers like a provider, with a certificate from a CA made
by trustme for the test.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import llm_invocation as llm
from llm_invocation.http import HttpPool, HttpSettings, settings_for
from llm_invocation.http._tls import build_ssl_context
from llm_invocation.providers._base import HttpRequest
from llm_invocation.testing import MockTransport, Scenario, Scenarios

from .http_servers import Certificates, Peer, Server, answer_like_a_provider, serve_tls

KEY = "sk-test-TLS-0123456789abcdef"
KEY_PASSWORD = "key-passw0rd-4242"


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture(autouse=True)
def no_ca_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


@asynccontextmanager
async def provider_over_tls(
    certificates: Certificates, *, require_client: bool = False
) -> AsyncGenerator[Server]:
    provider = MockTransport(Scenarios(Scenario(text="over tls")))

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await answer_like_a_provider(peer, request, provider, host="127.0.0.1")

    context = certificates.server_context(require_client=require_client)
    async with serve_tls(handler, context) as server:
        yield server


def config(server: Server, **openai: Any) -> llm.Config:
    # Not about limits, and model "m" has no price: nothing is limited.
    return llm.Config.unlimited(
        provider="openai",
        providers={"openai": {"api_key": KEY, "base_url": server.url + "/v1", **openai}},
        retries={"max_attempts": 1},
    )


def ask() -> llm.Request:
    return llm.Request(model="openai:m", messages=[llm.user("hi")], stream=False)


async def answer(cfg: llm.Config) -> str:
    async with llm.open_client(cfg) as client:
        return (await client.invoke_sync(ask())).text


async def refusal(cfg: llm.Config) -> llm.ProviderError:
    async with llm.open_client(cfg) as client:
        with pytest.raises(llm.ProviderError) as caught:
            await client.invoke_sync(ask())
    return caught.value


def hashed_directory(certificates: Certificates, folder: Path) -> Path:
    """A directory holding the CA certificate under its OpenSSL subject hash."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to name a hashed CA directory")
    digest = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(certificates.ca_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder.mkdir()
    shutil.copy(certificates.ca_file, folder / f"{digest}.0")
    return folder


async def test_a_ca_bundle_file_in_verify_is_trusted(certificates: Certificates) -> None:
    async with provider_over_tls(certificates) as server:
        assert await answer(config(server, verify=str(certificates.ca_file))) == "over tls"


async def test_a_ca_directory_in_verify_is_trusted(
    certificates: Certificates, tmp_path: Path
) -> None:
    folder = hashed_directory(certificates, tmp_path / "cas")
    async with provider_over_tls(certificates) as server:
        assert await answer(config(server, verify=str(folder))) == "over tls"


async def test_the_default_roots_refuse_an_unknown_ca_with_a_typed_error_naming_it(
    certificates: Certificates,
) -> None:
    async with provider_over_tls(certificates) as server:
        error = await refusal(config(server))
    assert not error.retryable
    assert "certificate verify failed" in error.message
    assert "unable to get local issuer certificate" in error.message
    assert error.details["tls"].startswith("certificate verify failed")
    assert error.provider == "openai"


async def test_ssl_cert_file_is_honoured_with_trust_env(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    async with provider_over_tls(certificates) as server:
        assert await answer(config(server)) == "over tls"


async def test_ssl_cert_dir_is_honoured_with_trust_env(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed_directory(certificates, tmp_path / "cas")))
    async with provider_over_tls(certificates) as server:
        assert await answer(config(server)) == "over tls"


async def test_trust_env_false_ignores_ssl_cert_file(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    async with provider_over_tls(certificates) as server:
        error = await refusal(config(server, trust_env=False))
    assert "certificate verify failed" in error.message


async def test_a_missing_ssl_cert_file_fails_the_client_start_naming_the_variable(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nowhere.pem"))
    async with provider_over_tls(certificates) as server:
        with pytest.raises(llm.ConfigurationError) as caught:
            await answer(config(server))
    (problem,) = caught.value.problems
    assert (problem.path, problem.source) == ("providers.openai.verify", "env SSL_CERT_FILE")


async def test_verify_false_accepts_any_certificate_and_warns_once(
    certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    async with provider_over_tls(certificates) as server:
        cfg = config(server, verify=False)
        async with llm.open_client(cfg) as client:
            for _ in range(2):
                assert (await client.invoke_sync(ask())).text == "over tls"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "llm_invocation.http" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "openai: TLS certificate verification is off" in warnings[0]


async def test_mutual_tls_works_with_a_client_certificate_file(
    certificates: Certificates,
) -> None:
    async with provider_over_tls(certificates, require_client=True) as server:
        cfg = config(
            server, verify=str(certificates.ca_file), client_cert=str(certificates.client_file)
        )
        assert await answer(cfg) == "over tls"


async def test_mutual_tls_works_with_a_separate_key_file(certificates: Certificates) -> None:
    async with provider_over_tls(certificates, require_client=True) as server:
        cfg = config(
            server,
            verify=str(certificates.ca_file),
            client_cert=str(certificates.client_cert_file),
            client_key=str(certificates.client_key_file),
        )
        assert await answer(cfg) == "over tls"


async def test_mutual_tls_works_with_an_encrypted_key_and_its_password(
    certificates: Certificates,
) -> None:
    key = certificates.encrypted_client_key(KEY_PASSWORD.encode())
    async with provider_over_tls(certificates, require_client=True) as server:
        cfg = config(
            server,
            verify=str(certificates.ca_file),
            client_cert=str(certificates.client_cert_file),
            client_key=str(key),
            client_key_password=KEY_PASSWORD,
        )
        assert await answer(cfg) == "over tls"
        assert KEY_PASSWORD not in repr(cfg) and KEY_PASSWORD not in cfg.to_json().decode()


@asynccontextmanager
async def refusing_tls_server(context: ssl.SSLContext) -> AsyncGenerator[str]:
    """A TLS server (stdlib, in a thread) that, unlike trio's, sends its alert when the
    handshake fails, as servers in the wild do; it serves one connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()  # fails, and sends the alert
        except ssl.SSLError:
            with socket.socket(fileno=tls.detach()) as raw:
                raw.recv(65536)  # what the client sent meanwhile: then close with a FIN
        else:
            tls.close()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.to_thread.run_sync, serve_one, abandon_on_cancel=True))
            yield f"https://127.0.0.1:{port}"
    finally:
        listener.close()


async def test_a_server_that_wants_a_client_certificate_refuses_none_with_a_typed_error(
    certificates: Certificates,
) -> None:
    context = certificates.server_context(require_client=True)
    async with refusing_tls_server(context) as url:
        error = await refusal(config(Server(url), verify=str(certificates.ca_file)))
    assert not error.retryable
    assert "certificate required" in error.message


async def test_a_wrong_key_password_fails_the_client_start_naming_the_field(
    certificates: Certificates,
) -> None:
    key = certificates.encrypted_client_key(KEY_PASSWORD.encode())
    async with provider_over_tls(certificates) as server:
        cfg = config(
            server,
            client_cert=str(certificates.client_cert_file),
            client_key=str(key),
            client_key_password="not-the-password-1234",
        )
        with pytest.raises(llm.ConfigurationError) as caught:
            await answer(cfg)
    (problem,) = caught.value.problems
    assert problem.path == "providers.openai.client_key_password"
    assert "not-the-password" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("verify", "/no/such/bundle.pem", "no CA bundle file or directory"),
        ("verify", 3, "expected true, false or a CA bundle path"),
        ("client_cert", "/no/such/cert.pem", "no such file"),
        ("client_key", "/no/such/key.pem", "no such file"),
    ],
    ids=["verify-path", "verify-type", "client-cert", "client-key"],
)
def test_unusable_tls_settings_are_configuration_errors_naming_the_field(
    certificates: Certificates, field: str, value: object, message: str
) -> None:
    entry: dict[str, Any] = {field: value}
    if field == "client_key":
        entry["client_cert"] = str(certificates.client_cert_file)
    with pytest.raises(llm.ConfigurationError) as caught:
        llm.Config.from_dict({"providers": {"openai": {"api_key": KEY, **entry}}})
    (problem,) = caught.value.problems
    assert problem.path == f"providers.openai.{field}"
    assert message in problem.message


@pytest.mark.parametrize("field", ["client_key", "client_key_password"])
def test_a_key_or_password_without_a_certificate_is_a_configuration_error(
    certificates: Certificates, field: str
) -> None:
    value = str(certificates.client_key_file) if field == "client_key" else KEY_PASSWORD
    with pytest.raises(llm.ConfigurationError) as caught:
        llm.Config.from_dict({"providers": {"openai": {field: value}}})
    (problem,) = caught.value.problems
    assert (problem.path, problem.message) == (f"providers.openai.{field}", "needs client_cert")


def test_verify_accepts_the_words_true_and_false(certificates: Certificates) -> None:
    cfg = llm.Config.from_dict({"providers": {"openai": {"verify": "False"}}})
    assert cfg.providers["openai"].verify is False


async def test_one_tls_context_serves_our_transport_and_the_proxy_transport(
    certificates: Certificates,
) -> None:
    cfg = llm.Config.from_dict(
        {"providers": {"openai": {"api_key": KEY, "verify": str(certificates.ca_file)}}}
    )
    settings = settings_for(cfg, cfg.providers["openai"])
    context = settings.ssl_context
    assert context is not None
    pool = HttpPool(settings, provider="openai")
    try:
        fast = pool._route_for(httpx.URL("https://127.0.0.1/"))
        proxied = HttpPool(
            HttpSettings(proxy="http://127.0.0.1:9", ssl_context=context), provider="openai"
        )
        route = proxied._route_for(httpx.URL("https://api.provider.invalid/"))
        assert not isinstance(route, type(fast))
        transport = route.pick().transport
        assert isinstance(transport, httpx.AsyncHTTPTransport)
        assert transport._pool._ssl_context is context  # the proxy transport's
        assert fast._context() is context  # ours
        await proxied.aclose()
    finally:
        await pool.aclose()


async def test_the_pool_makes_its_context_once_at_the_first_https_connection(
    certificates: Certificates,
) -> None:
    async with provider_over_tls(certificates) as server:
        pool = HttpPool(HttpSettings(verify=str(certificates.ca_file)), provider="openai")
        try:
            request = HttpRequest(method="GET", url=server.url + "/v1/models", headers={})
            for _ in range(2):
                async with pool.stream(request) as response:
                    assert response.status == 200
                    await response.read()
            first = pool._ssl
            assert first is not None
            assert pool._ssl_context() is first
        finally:
            await pool.aclose()


def test_an_encrypted_key_without_a_password_is_refused_without_prompting(
    certificates: Certificates,
) -> None:
    with pytest.raises(llm.ConfigurationError) as caught:
        build_ssl_context(
            provider="p",
            verify=True,
            client_cert=str(certificates.client_cert_file),
            client_key=str(certificates.encrypted_client_key(KEY_PASSWORD.encode())),
            client_key_password=None,
            trust_env=False,
            environ={},
        )
    (problem,) = caught.value.problems
    assert (problem.path, problem.message) == (
        "client_key_password",
        "is needed: the private key is encrypted",
    )


# -- read deadlines over TLS --------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["head", "body"])
async def test_a_silent_tls_server_trips_the_read_timeout_and_the_connection_is_closed(
    certificates: Certificates, stage: str
) -> None:
    quiet = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        if stage == "body":
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        await quiet.wait()  # never says more

    settings = HttpSettings(verify=str(certificates.ca_file), read_timeout=0.3)
    async with serve_tls(handler, certificates.server_context()) as server:
        pool = HttpPool(settings, provider="openai")
        request = HttpRequest(method="GET", url=server.url + "/v1/models", headers={})
        start = trio.current_time()
        try:
            with pytest.raises(llm.InvocationTimeout):
                async with pool.stream(request) as response:
                    await response.read()
            elapsed = trio.current_time() - start
            assert 0.3 <= elapsed < 2
            assert pool.statistics().active == 0
        finally:
            quiet.set()
            await pool.aclose()
