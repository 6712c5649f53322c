"""`settings_for`: a provider's `HttpSettings` from the configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from ..config import Config, ProviderConfig
from ..errors import ConfigProblem, ConfigurationError
from ._pool import HttpSettings
from ._proxy import proxy_rules
from ._tls import build_ssl_context, environment_problem, needs_early_context

__all__ = ["settings_for"]


def settings_for(
    config: Config, provider: ProviderConfig, *, environ: Mapping[str, str] | None = None
) -> HttpSettings:
    """How the provider entry ``provider`` of ``config`` sends its requests.

    The provider's ``proxy`` and ``trust_env`` override the global ones. What the settings
    name is checked now, so that a mistake shows when the client starts: the proxy variables
    of the environment (when they apply), ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (that they
    exist), and the provider's own TLS files, loaded now into its TLS context (otherwise the
    context is made at the first https connection).

    Raises:
        ConfigurationError: a proxy variable of the environment is not a proxy URL, or a TLS
            file cannot be loaded (missing, unreadable, wrong key or password); each problem
            names the provider's field and, when it came from there, the variable.
    """
    env = os.environ if environ is None else environ
    where = _path_of(config, provider)
    timeouts = config.timeouts
    proxy = provider.proxy if provider.proxy is not None else config.proxy
    trust_env = config.trust_env if provider.trust_env is None else provider.trust_env
    settings = HttpSettings(
        connect_timeout=timeouts.connect,
        # The session's watchdogs enforce the first-chunk and idle limits precisely and name
        # them; the transport's read timeout is only a backstop, a second later.
        read_timeout=max(timeouts.first_chunk, timeouts.idle_chunk) + 1.0,
        write_timeout=timeouts.connect,
        max_connections=provider.max_connections,
        proxy=proxy,
        trust_env=trust_env,
        verify=provider.verify,
        client_cert=provider.client_cert,
        client_key=provider.client_key,
        client_key_password=provider.client_key_password,
    )
    _, problems = proxy_rules(proxy=proxy, trust_env=trust_env, environ=env)
    if problems:
        own = provider.proxy is not None
        raise ConfigurationError(
            problems=[
                ConfigProblem(
                    path="proxy" if variable == "proxy" and not own else f"{where}.proxy",
                    message=message,
                    source=None if variable == "proxy" else f"env {variable}",
                )
                for variable, message in problems
            ]
        )
    if provider.verify is True and (
        problem := environment_problem(trust_env=trust_env, environ=env)
    ):
        variable, message = problem
        raise ConfigurationError(
            problems=[
                ConfigProblem(path=f"{where}.verify", message=message, source=f"env {variable}")
            ]
        )
    if not needs_early_context(verify=provider.verify, client_cert=provider.client_cert):
        return settings
    try:
        context = build_ssl_context(
            provider=where.removeprefix("providers."),
            verify=provider.verify,
            client_cert=provider.client_cert,
            client_key=provider.client_key,
            client_key_password=provider.client_key_password,
            trust_env=trust_env,
            environ=env,
        )
    except ConfigurationError as error:
        raise ConfigurationError(
            problems=[
                ConfigProblem(path=f"{where}.{p.path}", message=p.message, source=p.source)
                for p in error.problems
            ]
        ) from error
    return msgspec.structs.replace(settings, ssl_context=context)


def _path_of(config: Config, provider: ProviderConfig) -> str:
    """``providers.<name>`` of the entry ``provider`` (the default provider's, if no other)."""
    for name, entry in config.providers.items():
        if entry is provider:
            return f"providers.{name}"
    for name, entry in config.providers.items():
        if entry == provider:
            return f"providers.{name}"
    return f"providers.{config.default_provider}"
