"""`settings_for`: a provider's `HttpSettings` from the configuration."""

from __future__ import annotations

from ..config import Config, ProviderConfig
from ._pool import HttpSettings

__all__ = ["settings_for"]


def settings_for(config: Config, provider: ProviderConfig) -> HttpSettings:
    """How the provider entry ``provider`` of ``config`` sends its requests."""
    timeouts = config.timeouts
    return HttpSettings(
        connect_timeout=timeouts.connect,
        # The session's watchdogs enforce the first-chunk and idle limits precisely; the
        # transport's read timeout is only a backstop.
        read_timeout=max(timeouts.first_chunk, timeouts.idle_chunk),
        write_timeout=timeouts.connect,
        max_connections=provider.max_connections,
    )
