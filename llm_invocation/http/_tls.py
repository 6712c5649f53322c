"""The TLS context of a provider: which servers to trust, and the client certificate.

One `ssl.SSLContext` per provider, made here and shared by our transport and by the proxy
transport:

* ``verify=True``: ``SSL_CERT_FILE`` (a CA bundle) or else ``SSL_CERT_DIR`` (a directory of
  hashed certificates) when ``trust_env``, else certifi's bundle, as httpx does;
* ``verify=<path>``: that CA bundle file, or that directory;
* ``verify=False``: no verification at all (logged as a warning once per context);
* ``client_cert`` (PEM; its key too unless ``client_key`` names it), ``client_key_password``.

ALPN offers ``http/1.1``.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping

import certifi

from .._secrets import Secret
from ..errors import ConfigProblem, ConfigurationError

__all__ = ["build_ssl_context", "environment_problem", "needs_early_context"]

log = logging.getLogger("llm_invocation.http")


def needs_early_context(*, verify: bool | str, client_cert: str | None) -> bool:
    """Whether the settings name TLS files of their own: then the context is made when the
    client starts, so that a wrong file, key or password shows at once."""
    return verify is not True or client_cert is not None


def environment_problem(*, trust_env: bool, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, message) when ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` names nothing usable.

    Only checks that the path exists: loading a system bundle costs tens of milliseconds, so
    the context that reads it is made at the first https connection.
    """
    if not trust_env:
        return None
    if cafile := environ.get("SSL_CERT_FILE"):
        if not os.path.isfile(cafile):
            return "SSL_CERT_FILE", f"no CA bundle file at {cafile!r}"
    elif (capath := environ.get("SSL_CERT_DIR")) and not os.path.isdir(capath):
        return "SSL_CERT_DIR", f"no CA certificate directory at {capath!r}"
    return None


def build_ssl_context(
    *,
    provider: str,
    verify: bool | str,
    client_cert: str | None,
    client_key: str | None,
    client_key_password: Secret | None,
    trust_env: bool,
    environ: Mapping[str, str],
) -> ssl.SSLContext:
    """Make the TLS context these settings describe.

    Raises:
        ConfigurationError: a file is missing or unreadable, or the certificate, key or
            password is wrong; each problem names its field (``verify``, ``client_cert``...)
            and, for ``SSL_CERT_FILE``/``SSL_CERT_DIR``, the variable.
    """
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning(
            "%s: TLS certificate verification is off (verify: false): anyone on the path can "
            "read and change the traffic",
            provider or "http",
        )
    else:
        field, source, path = "verify", None, None
        if isinstance(verify, str):
            path = verify
        elif trust_env and environ.get("SSL_CERT_FILE"):
            path, source = environ["SSL_CERT_FILE"], "env SSL_CERT_FILE"
        elif trust_env and environ.get("SSL_CERT_DIR"):
            path, source = environ["SSL_CERT_DIR"], "env SSL_CERT_DIR"
        try:
            if path is None:
                context = ssl.create_default_context(cafile=certifi.where())
            elif os.path.isdir(path):
                context = ssl.create_default_context(capath=path)
            else:
                context = ssl.create_default_context(cafile=path)
        except (OSError, ValueError) as exc:
            raise _problem(
                field, f"cannot load the CA certificates: {_reason(exc)}", source
            ) from exc
    if client_cert is not None:
        _load_client_certificate(context, client_cert, client_key, client_key_password)
    context.set_alpn_protocols(["http/1.1"])
    return context


class _NoPassword(Exception):
    """The client key is encrypted and no password was given."""


def _no_password() -> str:
    # Without this, OpenSSL would prompt on the terminal for the password of an encrypted key.
    raise _NoPassword


def _load_client_certificate(
    context: ssl.SSLContext, cert: str, key: str | None, password: Secret | None
) -> None:
    """Load the client certificate and key into ``context``.

    Raises:
        ConfigurationError: naming ``client_cert``, ``client_key`` or
            ``client_key_password`` (never the password itself).
    """
    try:
        context.load_cert_chain(cert, key, password.reveal() if password else _no_password)
    except _NoPassword:
        raise _problem(
            "client_key_password", "is needed: the private key is encrypted", None
        ) from None
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            if password is not None:
                field, text = "client_key_password", "does not decrypt the private key"
                text += ", or the key does not match client_cert"
            else:
                field = "client_key" if key is not None else "client_cert"
                text = "is not a PEM certificate with its matching private key"
        else:
            field = "client_cert" if not os.path.isfile(cert) else "client_key"
            text = f"cannot be read: {_reason(exc)}"
        raise _problem(field, text, None) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _problem(path: str, message: str, source: str | None) -> ConfigurationError:
    return ConfigurationError(problems=[ConfigProblem(path=path, message=message, source=source)])
