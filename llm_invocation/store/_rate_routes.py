"""Which rate-limit keys apply to a call, with which limits and bounds, from the settings.

A call to ``provider``'s ``model`` takes from up to three keys of the `RateStore`:

- ``"global"``: the configured ``rate_limits``;
- ``"p:<provider>"``: ``providers.<name>.rate_limits``;
- ``"m:<provider>:<model>"``: ``providers.<name>.model_rate_limits[<model>]``, tightened by
  what the provider's headers teach the store. This key always applies, even without
  configured limits.

Its line of waiters is bounded by the most specific ``max_wait`` and ``max_queue`` (the
model's, else the provider's, else the global ones); ``max_queue`` then counts the waiters
of that model, that provider or all. `Routes` resolves and caches this per (provider,
model). `tpm_problems` is the configuration check: a tokens-per-minute limit must admit one
call that sets no ``max_tokens``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, final

import msgspec

from ..errors import ConfigProblem, RateLimited
from ._base import Grant, RateLimit

if TYPE_CHECKING:
    from ..config import Config, RateLimitConfig

__all__ = [
    "PROMPT_ALLOWANCE",
    "ConfiguredLimits",
    "RateLimitSettings",
    "Route",
    "Routes",
    "configured_limits",
    "refusal_of",
    "too_large",
    "tpm_problems",
]

PROMPT_ALLOWANCE: Final = 256
"""Prompt tokens the configuration check adds to ``cost_control.default_max_tokens``: a
tokens-per-minute limit must admit at least one call of that size."""
_ROUTES_KEPT: Final = 4096


class RateLimitSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of one key, and the bounds of its line (from `llm_invocation.config`).

    ``max_wait`` and ``max_queue`` None: those of the broader settings apply.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    concurrency: int | None = None
    max_wait: float | None = None
    max_queue: int | None = None


@final
class Route:
    """What applies to one (provider, model): its keys and the bounds of its line.

    Attributes:
        limits: the keys, broadest first (the model's key last).
        names: the keys' names.
        max_wait: seconds a caller may wait.
        max_queue: callers of ``scope`` that may wait.
        scope: whose waiters ``max_queue`` counts: ``"*"`` (all), ``"p:<provider>"`` or
            ``"m:<provider>:<model>"``.
        scopes: every count a waiter of this route is in.
    """

    __slots__ = ("limits", "max_queue", "max_wait", "names", "scope", "scopes")

    def __init__(
        self,
        limits: list[RateLimit],
        max_wait: float,
        max_queue: int,
        scope: str,
        scopes: tuple[str, ...],
    ) -> None:
        self.limits = limits
        self.names = frozenset(limit.key for limit in limits)
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.scope = scope
        self.scopes = scopes


@final
class Routes:
    """The `Route` of every (provider, model), built on first use and cached.

    Args:
        global_limits: the ``"global"`` key's limits.
        provider_limits: each provider's, by provider name.
        model_limits: each model's, by ``"<provider>:<model>"``.
        max_wait: the global bound of a caller's wait.
        max_queue: the global bound of the number of waiters.
    """

    def __init__(
        self,
        *,
        global_limits: RateLimitSettings | None,
        provider_limits: dict[str, RateLimitSettings],
        model_limits: dict[str, RateLimitSettings],
        max_wait: float,
        max_queue: int,
    ) -> None:
        self._global = _limit("global", global_limits)
        self._providers = provider_limits
        self._models = model_limits
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._routes: dict[tuple[str, str], Route] = {}

    def get(self, provider: str, model: str) -> Route:
        """The route of ``provider``'s ``model``."""
        key = (provider, model)
        route = self._routes.get(key)
        if route is not None:
            return route
        if len(self._routes) >= _ROUTES_KEPT:
            self._routes.clear()  # cheap to build again; lines keep their own
        own = self._providers.get(provider)
        mine = self._models.get(f"{provider}:{model}")
        limits = [self._global] if self._global is not None else []
        provider_limit = _limit(f"p:{provider}", own)
        if provider_limit is not None:
            limits.append(provider_limit)
        model_key = f"m:{provider}:{model}"
        limits.append(_limit(model_key, mine) or RateLimit(key=model_key))
        max_wait, max_queue, scope = self.max_wait, self.max_queue, "*"
        for settings, name in ((own, f"p:{provider}"), (mine, model_key)):
            if settings is not None and settings.max_wait is not None:
                max_wait = settings.max_wait
            if settings is not None and settings.max_queue is not None:
                max_queue, scope = settings.max_queue, name
        scopes = ("*", f"p:{provider}", model_key)
        route = self._routes[key] = Route(limits, max_wait, max_queue, scope, scopes)
        return route


def too_large(route: Route, tokens: int, provider: str) -> RateLimited | None:
    """The refusal of a request larger than a configured tokens-per-minute limit of
    ``route`` (it can never fit: not retryable), or None."""
    for limit in route.limits:
        tpm = limit.tokens_per_minute
        if tpm is not None and tokens > tpm:
            return RateLimited(
                f"this request's estimate of {tokens} tokens (prompt plus max_tokens) can "
                f"never fit the limit of {tpm:g} tokens per minute of {limit.key!r}: lower "
                "its max_tokens or raise the limit",
                provider=provider,
                retryable=False,
                details={"reason": "tokens", "key": limit.key, "tokens": tokens, "limit": tpm},
            )
    return None


def refusal_of(
    route: Route, grant: Grant, tokens: int, provider: str, remaining: float, *, first: bool
) -> RateLimited | None:
    """The refusal of a request the store refused, or None if it may wait.

    ``remaining`` is what is left of its ``max_wait``; ``first`` says whether the store
    refused it for the first time (a bucket wait beyond ``max_wait`` is then refused at
    once, with the wait as ``retry_after``). A concurrency wait has no end the store knows
    of: it is refused only when ``max_wait`` has passed.
    """
    key, reason = grant.key, grant.reason
    if grant.wait == math.inf:
        return RateLimited(
            f"this request's estimate of {tokens} tokens can never fit the {reason} limit of "
            f"{key!r} (learned from the provider): lower its max_tokens",
            provider=provider,
            retryable=False,
            details={"reason": reason, "key": key, "tokens": tokens},
        )
    if reason == "concurrency":
        if remaining > 0:
            return None
        return RateLimited(
            f"rate limit {key!r} (concurrency): no slot freed within max_wait {route.max_wait:g}s",
            provider=provider,
            details={"reason": reason, "key": key},
        )
    if first and grant.wait > route.max_wait:
        return RateLimited(
            f"rate limit {key!r} ({reason}) needs {grant.wait:.1f}s, more than max_wait "
            f"{route.max_wait:g}s",
            provider=provider,
            retry_after=grant.wait,
            details={"reason": reason, "key": key},
        )
    if grant.wait > remaining:
        return RateLimited(
            f"rate limit {key!r} ({reason}): no capacity within max_wait {route.max_wait:g}s",
            provider=provider,
            retry_after=grant.wait,
            details={"reason": reason, "key": key},
        )
    return None


class ConfiguredLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The settings `Routes` takes, as a `Config` gives them."""

    global_limits: RateLimitSettings
    provider_limits: dict[str, RateLimitSettings]
    model_limits: dict[str, RateLimitSettings]
    max_wait: float
    max_queue: int


DEFAULT_MAX_WAIT: Final = 30.0
"""Seconds a call may wait for capacity when no section sets ``max_wait``."""
DEFAULT_MAX_QUEUE: Final = 10_000
"""Calls that may wait when no section sets ``max_queue``."""


def configured_limits(config: Config) -> ConfiguredLimits:
    """The rate-limit settings of ``config``: ``rate_limits``, each provider's
    ``rate_limits`` and each model's ``model_rate_limits``."""
    limits = config.rate_limits
    return ConfiguredLimits(
        global_limits=_settings(config.rate_limits),
        provider_limits={
            name: _settings(entry.rate_limits)
            for name, entry in config.providers.items()
            if entry.rate_limits is not None
        },
        model_limits={
            f"{name}:{model}": _settings(settings)
            for name, entry in config.providers.items()
            for model, settings in entry.model_rate_limits.items()
        },
        max_wait=DEFAULT_MAX_WAIT if limits.max_wait is None else limits.max_wait,
        max_queue=DEFAULT_MAX_QUEUE if limits.max_queue is None else limits.max_queue,
    )


def tpm_problems(config: Config) -> list[ConfigProblem]:
    """The tokens-per-minute limits of ``config`` that cannot admit one call.

    A call without ``max_tokens`` reserves ``cost_control.default_max_tokens`` completion
    tokens plus its prompt; the check counts `PROMPT_ALLOWANCE` prompt tokens. Each problem
    names the field and the fix.
    """
    default = config.cost_control.default_max_tokens
    needed = default + PROMPT_ALLOWANCE
    sections: list[tuple[str, RateLimitConfig]] = [("rate_limits", config.rate_limits)]
    for name, entry in config.providers.items():
        if entry.rate_limits is not None:
            sections.append((f"providers.{name}.rate_limits", entry.rate_limits))
        for model, settings in entry.model_rate_limits.items():
            sections.append((f"providers.{name}.model_rate_limits.{model}", settings))
    problems: list[ConfigProblem] = []
    for path, section in sections:
        tpm = section.tokens_per_minute
        if tpm is None or tpm >= needed:
            continue
        problems.append(
            ConfigProblem(
                path=f"{path}.tokens_per_minute",
                message=(
                    f"{tpm} tokens per minute cannot admit one call: a call without max_tokens "
                    f"reserves cost_control.default_max_tokens ({default}) plus its prompt "
                    f"(counted here as {PROMPT_ALLOWANCE}). Raise it to at least {needed}, or "
                    f"lower cost_control.default_max_tokens to at most "
                    f"{max(tpm - PROMPT_ALLOWANCE, 1)} and set max_tokens on the requests "
                    "that need longer answers"
                ),
            )
        )
    return problems


def _settings(limits: RateLimitConfig) -> RateLimitSettings:
    return RateLimitSettings(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        concurrency=limits.concurrent_calls,
        max_wait=limits.max_wait,
        max_queue=limits.max_queue,
    )


def _limit(key: str, settings: RateLimitSettings | None) -> RateLimit | None:
    if settings is None:
        return None
    limit = RateLimit(
        key=key,
        requests_per_minute=settings.requests_per_minute,
        tokens_per_minute=settings.tokens_per_minute,
        concurrency=settings.concurrency,
    )
    return None if limit.unlimited else limit
