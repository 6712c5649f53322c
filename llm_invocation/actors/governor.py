"""The rate-limit governor: requests, tokens and concurrency per minute, fairly shared.

Every invocation asks the governor for a lease before anything is sent: one request and its
token estimate (prompt plus ``max_tokens``) from each key that applies - ``"global"`` (the
configured ``rate_limits``), ``"p:<provider>"`` (the provider's own ``rate_limits``) and
``"m:<provider>:<model>"`` (what the provider's headers taught us). When the invocation
ends, its lease is released and the token bucket is corrected by the actual usage.

Callers are served first come, first served: while anyone waits, a newcomer queues behind
them even if it would fit now. A caller waits at most ``max_wait`` seconds and at most
``max_queue`` callers wait; beyond either, `RateLimited` with a ``retry_after``. The
provider's rate-limit headers and a 429's retry-after tighten the model's key at once, so the
next request waits here instead of being refused there.

State lives in a `RateStore`: in memory for one process, in Redis to share limits across
processes. If Redis is unreachable, ``fail_mode`` decides: ``"open"`` admits (and logs),
``"closed"`` refuses with `RateLimited`.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Literal, final

import msgspec
import trio

from ..errors import LLMError, RateLimited
from ..runtime import Actor, Call, Context, Msg, ReplyHandle
from ..store._base import Grant, RateLimit, RateObservation, RateStore, StoreUnavailable

if TYPE_CHECKING:
    from ..config import Config, RateLimitConfig

__all__ = [
    "Abandon",
    "Acquire",
    "Governor",
    "GovernorMsg",
    "GovernorStatistics",
    "GovernorStats",
    "Lease",
    "Observe",
    "Release",
]

log = logging.getLogger("llm_invocation.governor")

LEASE_TTL: Final = 90.0
"""Seconds a concurrency lease lives unless renewed (a dead process's leases expire)."""
RENEW_EVERY: Final = 30.0


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """Permission to send one request: give it back with `Release`."""

    id: str
    keys: list[str]
    tokens: int
    waited: float = 0.0
    degraded: bool = False
    """Granted without checking because the shared store was unreachable (fail-open)."""


class Acquire(Call[Lease], frozen=True, kw_only=True):
    """Ask for a lease for one request of ``tokens`` estimated tokens.

    ``lease`` is the lease's id, chosen by the caller so that it can `Abandon` the lease
    when it is cancelled before the answer reaches it (None: the governor picks one).
    """

    provider: str
    model: str
    tokens: int
    lease: str | None = None


class Abandon(Msg, frozen=True, kw_only=True):
    """The caller of `Acquire` with this ``lease`` id gave up (it was cancelled): drop its
    place in the queue, or give the lease back if it was granted. Unknown ids are ignored."""

    lease: str


class Release(Msg, frozen=True, kw_only=True):
    """Give a lease back with the tokens the request actually used (prompt + completion)."""

    lease: Lease
    used: int


class Observe(Msg, frozen=True, kw_only=True):
    """What a provider's response said about its limits."""

    provider: str
    model: str
    observation: RateObservation


class GovernorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    granted: int
    refused: int
    waiting: int
    active: int
    waited_total: float
    degraded: int
    store_errors: int


class GovernorStats(Call[GovernorStatistics], frozen=True, kw_only=True):
    pass


GovernorMsg = Acquire | Release | Abandon | Observe | GovernorStats


class RateLimitSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of one key, and the queue's bounds (from `llm_invocation.config`)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    concurrency: int | None = None


@final
class _Waiter:
    __slots__ = ("deadline", "enqueued", "handle", "lease", "limits", "msg")

    def __init__(
        self,
        handle: ReplyHandle[Lease],
        msg: Acquire,
        limits: list[RateLimit],
        lease: str,
        enqueued: float,
        deadline: float,
    ) -> None:
        self.handle = handle
        self.msg = msg
        self.limits = limits
        self.lease = lease
        self.enqueued = enqueued
        self.deadline = deadline


class Governor(Actor[GovernorMsg]):
    """The governor actor; see the module documentation."""

    max_concurrency = 1
    reply_errors = (LLMError,)

    def __init__(
        self,
        store: RateStore,
        *,
        global_limits: RateLimitSettings | None = None,
        provider_limits: dict[str, RateLimitSettings] | None = None,
        max_wait: float = 30.0,
        max_queue: int = 10_000,
        fail_mode: Literal["open", "closed"] = "closed",
    ) -> None:
        self.store = store
        self._global = _limit("global", global_limits)
        self._providers = {
            name: _limit(f"p:{name}", settings)
            for name, settings in (provider_limits or {}).items()
        }
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.fail_mode = fail_mode
        self._queue: deque[_Waiter] = deque()
        self._active: dict[str, list[RateLimit]] = {}
        self._reserved: dict[str, int] = {}  # tokens of each active lease
        self._kick = trio.Event()
        self.granted = 0
        self.refused = 0
        self.waited_total = 0.0
        self.degraded = 0
        self.store_errors = 0
        self._outage_logged = False

    @classmethod
    def from_config(cls, store: RateStore, config: Config) -> Governor:
        """The governor of ``config``'s ``rate_limits`` and each provider's ones."""
        limits = config.rate_limits
        provider_limits = {
            name: _rate_settings(entry.rate_limits)
            for name, entry in config.providers.items()
            if entry.rate_limits is not None
        }
        return cls(
            store,
            global_limits=_rate_settings(limits),
            provider_limits=provider_limits,
            max_wait=limits.max_wait,
            max_queue=limits.max_queue,
            fail_mode=config.store_fail_mode,
        )

    def lifespan(self, ctx: Context) -> Any:
        ctx.nursery.start_soon(self._pump_loop)
        ctx.nursery.start_soon(self._renew_loop)
        return super().lifespan(ctx)

    # -- messages ------------------------------------------------------------------------------

    async def handle(self, msg: GovernorMsg, ctx: Context) -> Any:
        match msg:
            case Acquire():
                return await self._acquire(msg, ctx)
            case Release(lease=lease, used=used):
                await self._release(lease, used)
                return None
            case Abandon(lease=lease_id):
                await self._abandon(lease_id)
                return None
            case Observe(provider=provider, model=model, observation=observation):
                await self._observe(provider, model, observation)
                return None
            case GovernorStats():
                return GovernorStatistics(
                    granted=self.granted,
                    refused=self.refused,
                    waiting=len(self._queue),
                    active=len(self._active),
                    waited_total=self.waited_total,
                    degraded=self.degraded,
                    store_errors=self.store_errors,
                )

    def _limits(self, provider: str, model: str) -> list[RateLimit]:
        limits: list[RateLimit] = []
        if self._global is not None:
            limits.append(self._global)
        own = self._providers.get(provider)
        if own is not None:
            limits.append(own)
        # The model's key always exists: the provider's headers may teach it limits.
        limits.append(RateLimit(key=f"m:{provider}:{model}"))
        return limits

    async def _acquire(self, msg: Acquire, ctx: Context) -> Lease | None:
        limits = self._limits(msg.provider, msg.model)
        lease = msg.lease or secrets.token_hex(8)
        if not self._queue:  # nobody waits: try at once
            grant = await self._try(limits, lease, msg.tokens)
            if grant is None:
                return self._degraded_lease(lease, limits, msg.tokens)
            if grant.granted:
                return self._grant(lease, limits, msg.tokens, 0.0)
            self._check_refusal(grant, msg)
        elif len(self._queue) >= self.max_queue:
            self.refused += 1
            raise RateLimited(
                f"{len(self._queue)} calls already wait for rate-limit capacity",
                provider=msg.provider,
                retry_after=self.max_wait,
                details={"reason": "queue_full", "max_queue": self.max_queue},
            )
        now = trio.current_time()
        waiter = _Waiter(ctx.defer(msg), msg, limits, lease, now, now + self.max_wait)
        self._queue.append(waiter)
        self._kick.set()
        return None

    def _check_refusal(self, grant: Grant, msg: Acquire) -> None:
        """Refuse at once what waiting cannot fix."""
        if grant.wait == math.inf:
            self.refused += 1
            raise RateLimited(
                f"a request of {msg.tokens} tokens can never fit the {grant.reason} limit "
                f"of {grant.key}",
                provider=msg.provider,
                retryable=False,
                details={"reason": grant.reason, "key": grant.key, "tokens": msg.tokens},
            )
        if grant.wait > self.max_wait and grant.reason != "concurrency":
            self.refused += 1
            raise RateLimited(
                f"rate limit {grant.key} ({grant.reason}) needs {grant.wait:.1f}s, "
                f"more than max_wait {self.max_wait:g}s",
                provider=msg.provider,
                retry_after=grant.wait,
                details={"reason": grant.reason, "key": grant.key},
            )

    def _grant(self, lease: str, limits: list[RateLimit], tokens: int, waited: float) -> Lease:
        self.granted += 1
        self.waited_total += waited
        self._active[lease] = limits
        self._reserved[lease] = tokens
        return Lease(id=lease, keys=[limit.key for limit in limits], tokens=tokens, waited=waited)

    def _degraded_lease(self, lease: str, limits: list[RateLimit], tokens: int) -> Lease:
        if self.fail_mode == "closed":
            self.refused += 1
            raise RateLimited(
                "the rate-limit store is unreachable and fail_mode is 'closed'",
                retryable=True,
                retry_after=1.0,
                details={"reason": "store_unavailable"},
            )
        self.degraded += 1
        return Lease(id=lease, keys=[limit.key for limit in limits], tokens=tokens, degraded=True)

    async def _try(self, limits: list[RateLimit], lease: str, tokens: int) -> Grant | None:
        """Ask the store; None when it is unreachable."""
        try:
            if self.store.synchronous:
                grant = self.store.acquire_nowait(limits, lease=lease, tokens=tokens, ttl=LEASE_TTL)
            else:
                grant = await self.store.acquire(limits, lease=lease, tokens=tokens, ttl=LEASE_TTL)
        except StoreUnavailable as exc:
            self.store_errors += 1
            if not self._outage_logged:
                self._outage_logged = True
                log.error("rate-limit store unreachable (fail_mode=%s): %s", self.fail_mode, exc)
            return None
        if self._outage_logged:
            self._outage_logged = False
            log.warning("rate-limit store reachable again")
        return grant

    async def _abandon(self, lease_id: str) -> None:
        for waiter in self._queue:
            if waiter.lease == lease_id:
                self._queue.remove(waiter)
                waiter.handle.fail(RateLimited("abandoned by its caller"))
                return
        tokens = self._reserved.get(lease_id)
        if tokens is not None:
            keys = [limit.key for limit in self._active.get(lease_id, [])]
            await self._release(Lease(id=lease_id, keys=keys, tokens=tokens), 0)

    async def _release(self, lease: Lease, used: int) -> None:
        self._reserved.pop(lease.id, None)
        limits = self._active.pop(lease.id, None)
        if limits is None or lease.degraded:
            return
        try:
            if self.store.synchronous:
                self.store.settle_nowait(limits, lease=lease.id, reserved=lease.tokens, used=used)
            else:
                await self.store.settle(limits, lease=lease.id, reserved=lease.tokens, used=used)
        except StoreUnavailable as exc:
            self.store_errors += 1
            log.warning("could not release lease %s (it will expire): %s", lease.id, exc)
        self._kick.set()

    async def _observe(self, provider: str, model: str, observation: RateObservation) -> None:
        try:
            await self.store.observe(RateLimit(key=f"m:{provider}:{model}"), observation)
        except StoreUnavailable as exc:
            self.store_errors += 1
            log.warning("could not record rate-limit headers: %s", exc)

    # -- the queue -----------------------------------------------------------------------------

    async def _pump_loop(self) -> None:
        while True:
            delay = await self._pump()
            with trio.move_on_after(delay):
                await self._kick.wait()
            self._kick = trio.Event()

    async def _pump(self) -> float:
        """Serve waiters in order until the head must wait; return how long to sleep."""
        queue = self._queue
        while queue:
            waiter = queue[0]
            if waiter.handle.done:  # the caller gave up (cancelled or timed out)
                queue.popleft()
                continue
            now = trio.current_time()
            grant = await self._try(waiter.limits, waiter.lease, waiter.msg.tokens)
            if grant is None:
                queue.popleft()
                try:
                    lease = self._degraded_lease(waiter.lease, waiter.limits, waiter.msg.tokens)
                except RateLimited as error:
                    waiter.handle.fail(error)
                else:
                    waiter.handle.reply(lease)
                continue
            if grant.granted:
                queue.popleft()
                lease = self._grant(
                    waiter.lease, waiter.limits, waiter.msg.tokens, now - waiter.enqueued
                )
                if not waiter.handle.reply(lease):  # abandoned meanwhile: give it back
                    await self._release(lease, 0)
                continue
            remaining = waiter.deadline - now
            # A concurrency slot frees up on a release, which kicks the pump: its "wait" is
            # only an upper bound (the oldest lease's expiry), so it waits out max_wait.
            hopeless = grant.wait == math.inf or (
                grant.wait > remaining if grant.reason != "concurrency" else remaining <= 0
            )
            if hopeless:
                queue.popleft()
                self.refused += 1
                waiter.handle.fail(
                    RateLimited(
                        f"rate limit {grant.key} ({grant.reason}): no capacity within "
                        f"max_wait {self.max_wait:g}s",
                        provider=waiter.msg.provider,
                        retry_after=None if grant.wait == math.inf else grant.wait,
                        retryable=grant.wait != math.inf,
                        details={"reason": grant.reason, "key": grant.key},
                    )
                )
                continue
            # Buckets refill with time; a release or a new waiter kicks the pump earlier.
            return max(min(grant.wait, remaining), 0.001)
        return math.inf

    async def _renew_loop(self) -> None:
        while True:
            await trio.sleep(RENEW_EVERY)
            for lease, limits in list(self._active.items()):
                if any(limit.concurrency is not None for limit in limits):
                    try:
                        await self.store.renew(limits, lease=lease, ttl=LEASE_TTL)
                    except StoreUnavailable:
                        self.store_errors += 1


def _rate_settings(limits: RateLimitConfig) -> RateLimitSettings:
    return RateLimitSettings(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        concurrency=limits.concurrent_calls,
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
