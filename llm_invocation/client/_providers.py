"""The provider sessions of one client: their child specs, their API keys, and providers of
your own, passed at open or registered while the client runs.

Every provider has a `ProviderSession` under the ``providers`` supervisor and a `KeyRing`
that outlives the session's restarts (``client.set_api_keys`` replaces its keys in place).
A provider registered at run time gets the same: a supervised session, governed like the
others by the client's rate limits and budgets, which apply by the provider's name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final, final

import trio

from ..actors._keys import ApiKeys, KeyBackoff, KeyRing, checked_keys
from ..actors.provider_session import ProviderSession, ResponseInfo, SessionSettings
from ..config import Config, ProviderConfig
from ..errors import ConfigurationError, ProviderNotFound
from ..http import TransportFactory
from ..http import settings_for as http_settings_for
from ..invocation._invoker import SESSION_PREFIX
from ..providers._base import ProviderCodec
from ..providers._registry import (
    CodecSpec,
    ProviderRegistry,
    custom_codec,
    duplicate_provider,
    provider_name_problem,
)
from ..runtime import ActorError, ChildSpec, Runtime, UsageError

__all__ = ["PROVIDERS", "ProviderSessions", "custom_entry", "session_settings"]

log = logging.getLogger("llm_invocation.client")

PROVIDERS: Final = "providers"
"""The name of the supervisor of the provider sessions."""
_STOP_LIMIT: Final = 10.0
# Settings the client reads by provider name from its own configuration (the governor's
# limits, the invoker's fallbacks): a provider registered at run time cannot bring others.
_CLIENT_FIELDS: Final = ("rate_limits", "model_rate_limits", "fallback")


def session_settings(config: Config, provider: ProviderConfig) -> SessionSettings:
    """The session settings of ``provider`` under ``config``."""
    timeouts = config.timeouts
    return SessionSettings(
        first_chunk_timeout=timeouts.first_chunk,
        idle_chunk_timeout=timeouts.idle_chunk,
        max_retry_after=config.retries.max_retry_after,
        http=http_settings_for(config, provider),
    )


def custom_entry(config: Config, name: str) -> ProviderConfig:
    """The settings of a provider of one's own called ``name``: its entry in ``config`` if
    there is one (for the default provider, with the top-level ``api_key``...), else none.

    Raises:
        ConfigurationError: the entry sets ``kind``, which names a built-in codec.
    """
    try:
        entry = config.provider_config(name)
    except ProviderNotFound:
        return ProviderConfig()
    if entry.kind is not None:
        raise ConfigurationError(
            f"providers.{name}.kind is {entry.kind!r}, but a codec of its own is given for "
            f"{name!r}: leave kind unset",
            provider=name,
            details={"reason": "invalid_codec", "provider": name},
        )
    return entry


def _key_ring(name: str, entry: ProviderConfig, keys: ApiKeys | None) -> KeyRing:
    backoff = KeyBackoff(initial=entry.key_backoff, maximum=entry.key_backoff_max)
    ring = KeyRing(entry.keys(), provider=name, file=entry.api_key_file, backoff=backoff)
    if keys is not None:
        ring.replace(keys if callable(keys) else checked_keys(keys, where=f"api_keys[{name!r}]"))
    return ring


@final
class ProviderSessions:
    """The provider sessions of one client: see the module documentation.

    Args:
        config: the client's configuration.
        registry: the client's provider registry (providers registered here join it).
        transports: per provider name, a factory of httpx transports.
        observer: told what a response's headers said of rate limits (the governor's feed).
    """

    def __init__(
        self,
        config: Config,
        registry: ProviderRegistry,
        *,
        transports: Mapping[str, TransportFactory],
        observer: Callable[[ResponseInfo], None],
    ) -> None:
        self._config = config
        self._registry = registry
        self._transports = transports
        self._observer = observer
        self._rings: dict[str, KeyRing] = {}
        self._pending: set[str] = set()
        self._runtime: Runtime | None = None

    def bind(self, runtime: Runtime) -> None:
        """The running tree: providers may be registered from now on."""
        self._runtime = runtime

    def child_spec(
        self, name: str, codec: ProviderCodec, entry: ProviderConfig, keys: ApiKeys | None = None
    ) -> ChildSpec:
        """The supervised session of provider ``name``, with its key ring (``keys``, when
        given, replaces the entry's).

        Raises:
            ConfigurationError: ``keys`` is an empty list or holds a key that is not a
                non-empty string (never showing a value).
        """
        ring = _key_ring(name, entry, keys)
        settings = session_settings(self._config, entry)
        transport = self._transports.get(name)
        observer = self._observer

        def factory() -> ProviderSession:
            return ProviderSession(
                codec, keys=ring, settings=settings, transport=transport, on_response=observer
            )

        self._rings[name] = ring
        return ChildSpec.actor(SESSION_PREFIX + name, factory, mailbox=65536)

    def specs(
        self,
        codecs: Mapping[str, ProviderCodec],
        entries: Mapping[str, ProviderConfig],
        keys: Mapping[str, ApiKeys],
    ) -> list[ChildSpec]:
        """The sessions of the providers the client opens with, by name."""
        return [
            self.child_spec(name, codec, entries[name], keys.get(name))
            for name, codec in sorted(codecs.items())
        ]

    # -- at run time ---------------------------------------------------------------------------

    def _entry_for(self, name: str, config: ProviderConfig | None) -> ProviderConfig:
        known = custom_entry(self._config, name)
        if config is None:
            return known
        if config.kind is not None:
            raise ConfigurationError(
                f"the settings of provider {name!r} set kind={config.kind!r}, but a codec of "
                "its own is given: leave kind unset",
                provider=name,
                details={"reason": "invalid_codec", "provider": name},
            )
        for field in _CLIENT_FIELDS:
            given: object = getattr(config, field)
            if given and given != getattr(known, field):
                raise ConfigurationError(
                    f"the settings of provider {name!r} set {field}, which a provider "
                    f"registered at run time takes from the client's configuration: set "
                    f"providers.{name}.{field} there (with enabled: false, nothing starts "
                    "before it is registered)",
                    provider=name,
                    details={"reason": "client_setting", "provider": name, "field": field},
                )
        return config

    async def register(
        self, name: str, codec: CodecSpec, config: ProviderConfig | None = None
    ) -> ProviderCodec:
        """Start a supervised session for a provider of one's own and add it to the registry.

        Raises:
            ConfigurationError: the name is taken (``details["reason"] ==
                "duplicate_provider"``) or invalid, the codec is not one, or ``config``
                sets what the client's configuration decides (see `_CLIENT_FIELDS`).
            ActorDead: the client is closing.
        """
        if (problem := provider_name_problem(name)) is not None:
            raise ConfigurationError(
                f"provider name {name!r} {problem}", details={"reason": "invalid_provider_name"}
            )
        if name in self._registry or name in self._pending:
            raise duplicate_provider(name)
        runtime = self._runtime
        if runtime is None:
            raise ConfigurationError("the client is not running yet")
        entry = self._entry_for(name, config)
        made = custom_codec(name, codec, entry)
        self._pending.add(name)
        try:
            spec = self.child_spec(name, made, entry)
            try:
                await runtime.start_child(spec, supervisor=PROVIDERS)
            except UsageError as exc:  # the runtime's only complaint here: the name is taken
                raise duplicate_provider(name) from exc
            except BaseException:
                # Cancelled while the supervisor starts it (it starts anyway): stop it again,
                # so that a cancelled registration leaves nothing behind.
                with trio.move_on_after(_STOP_LIMIT, shield=True):
                    try:
                        await runtime.terminate_child(SESSION_PREFIX + name, supervisor=PROVIDERS)
                    except ActorError:
                        pass  # it did not start
                raise
            self._registry.register(made, models=entry.models)
        except BaseException:
            if name not in self._registry:
                self._rings.pop(name, None)
            raise
        finally:
            self._pending.discard(name)
        log.info("provider %r registered (%s codec)", name, made.kind)
        return made

    def set_api_keys(self, provider: str, keys: ApiKeys) -> None:
        """Replace the keys of ``provider`` (see ``Client.set_api_keys``).

        Raises:
            ProviderNotFound: no such provider runs.
            ConfigurationError: ``keys`` is empty or holds something that is not a key.
        """
        ring = self._rings.get(provider)
        if ring is None or provider not in self._registry:
            available = self._registry.names()
            raise ProviderNotFound(
                f"provider {provider!r} is not configured; available: {', '.join(available)}",
                provider=provider,
                details={"available": available},
            )
        if callable(keys):
            ring.replace(keys)
            log.info("%s: API keys now come from a function", provider)
        else:
            checked = checked_keys(keys, where="keys")
            ring.replace(checked)
            log.info("%s: API keys replaced (%d keys)", provider, len(checked))
