"""The rate-limit governor: requests, tokens and concurrency per minute, fairly shared.

Every invocation asks the governor for a lease before anything is sent: one request and its
token estimate (prompt plus ``max_tokens``) from each key that applies: ``"global"``,
``"p:<provider>"`` and ``"m:<provider>:<model>"`` (`llm_invocation.store._rate_routes`).
When the invocation ends, its lease is released and the token bucket is corrected by the
actual usage.

Callers are served first come, first served, across every process sharing the store: each
``(provider, model)`` has a line of waiters here, and the head of each line holds a ticket
in the store (`llm_invocation.store._base.Ticket`), which gives it a prior claim over
younger requests from anywhere on the keys where it waits. A newcomer therefore queues
behind older waiters even if it would fit now. The store's release notices
(`RateStore.watch`) wake the lines whose keys another process released; a waiter also asks
again at least every `POLL` seconds, so a lost notice costs little.

A caller waits at most ``max_wait`` seconds, and at most ``max_queue`` callers wait (the
model's, provider's or global settings, the most specific first); beyond either,
`RateLimited` with a ``retry_after`` when one is known. A request whose token estimate
exceeds a tokens-per-minute limit can never fit and is refused at once (not retryable).
The provider's rate-limit headers and a 429's retry-after tighten the model's key at once,
so the next request waits here instead of being refused there; out-of-range values are
ignored.

A caller that gives up (cancelled) sends `Abandon` with the lease id it chose: its place in
line is dropped, or the lease it was granted meanwhile is given back. Nothing of it is left
in the store.

With a store in memory, an `Acquire` that carries its lease id is granted at once on the
caller's task (`ActorRef.call_nowait`, `Governor.handle_nowait`) when nobody waits in its
line and there is room now, exactly as the handler would grant it; one that would wait or
be refused goes through the mailbox. Releases and observations are taken at once the same
way. A remote store is asked by the governor's own tasks alone.

State lives in a `RateStore`: in memory for one process, in Redis to share limits across
processes. If Redis is unreachable, ``fail_mode`` decides: ``"open"`` admits, ``"closed"``
refuses with `RateLimited`; the store logs the outage once (its connection does), the
governor counts the errors in its statistics.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Literal, final

import msgspec
import trio

from .._ids import new_id
from ..errors import ConfigurationError, LLMError, RateLimited
from ..runtime import Actor, Call, Context, Msg, ReplyHandle
from ..store._base import (
    Grant,
    RateLimit,
    RateObservation,
    RateStore,
    StoreUnavailable,
    Ticket,
    checked_observation,
)
from ..store._rate_routes import (
    PROMPT_ALLOWANCE,
    RateLimitSettings,
    Route,
    Routes,
    configured_limits,
    refusal_of,
    too_large,
    tpm_problems,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..config import Config

__all__ = [
    "LEASE_TTL",
    "POLL",
    "PROMPT_ALLOWANCE",
    "Abandon",
    "Acquire",
    "Governor",
    "GovernorMsg",
    "GovernorStatistics",
    "GovernorStats",
    "Lease",
    "Observe",
    "RateLimitSettings",
    "Release",
]

log = logging.getLogger("llm_invocation.governor")

LEASE_TTL: Final = 90.0
"""Seconds a concurrency lease lives unless renewed (a dead process's leases expire)."""
RENEW_EVERY: Final = 30.0
POLL: Final = 0.5
"""Seconds a waiter for a concurrency slot waits at most before it asks the store again,
when no release notice came (one may be lost)."""
REFRESH: Final = 1.5
"""Seconds a waiter for a bucket waits at most before it asks again (keeping its ticket)."""


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
    when it is cancelled before the answer reaches it (None: the governor picks one). An
    id already waiting or held is refused (`RateLimited`, not retryable).
    """

    provider: str
    model: str
    tokens: int
    lease: str | None = None


class Abandon(Msg, frozen=True, kw_only=True):
    """The caller of `Acquire` with this ``lease`` id gave up (it was cancelled): drop its
    place in line (and its ticket in the store), or give the lease back if it was granted
    meanwhile. Unknown ids are ignored."""

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
    """Counters since the governor started.

    Attributes:
        granted: leases granted (degraded ones not included).
        refused: acquires refused with `RateLimited`.
        waiting: callers waiting now.
        active: leases held now.
        waited_total: seconds waited by the callers granted.
        degraded: leases granted unchecked (fail-open while the store was unreachable).
        store_errors: store operations that failed (`StoreUnavailable`).
        abandoned: callers that gave up (cancelled, or `Abandon`) while waiting or before
            the lease reached them.
        ignored_observations: provider observations with out-of-range values ignored.
    """

    granted: int
    refused: int
    waiting: int
    active: int
    waited_total: float
    degraded: int
    store_errors: int
    abandoned: int = 0
    ignored_observations: int = 0


class GovernorStats(Call[GovernorStatistics], frozen=True, kw_only=True):
    pass


GovernorMsg = Acquire | Release | Abandon | Observe | GovernorStats


@final
class _Waiter:
    __slots__ = (
        "abandoned",
        "deadline",
        "enqueued",
        "handle",
        "last",
        "lease",
        "provider",
        "queue",
        "since",
        "ticketed",
        "tokens",
        "trying",
    )

    def __init__(
        self,
        handle: ReplyHandle[Lease],
        queue: _Queue,
        provider: str,
        lease: str,
        tokens: int,
        enqueued: float,
    ) -> None:
        self.handle = handle
        self.queue = queue
        self.provider = provider
        self.lease = lease
        self.tokens = tokens
        self.enqueued = enqueued
        self.deadline = enqueued + queue.route.max_wait
        self.since: float | None = None  # its place in line, on the store's clock
        self.ticketed = False  # the store may hold its ticket
        self.trying = False  # the store is being asked for it right now
        self.abandoned = False
        self.last: Grant | None = None  # the store's last refusal


@final
class _Queue:
    """The line of one (provider, model): only its head asks the store."""

    __slots__ = ("due", "key", "route", "waiters", "wakes")

    def __init__(self, key: tuple[str, str], route: Route) -> None:
        self.key = key
        self.route = route
        self.waiters: deque[_Waiter] = deque()
        self.due = -math.inf  # when the head asks the store next
        self.wakes = 0  # release notices so far (one that came during an ask is not lost)


@final
class _Held:
    __slots__ = ("limits", "names", "tokens")

    def __init__(self, route: Route, tokens: int) -> None:
        self.limits = route.limits
        self.names = route.names
        self.tokens = tokens


class Governor(Actor[GovernorMsg]):
    """The governor actor; see the module documentation.

    Args:
        store: where buckets, leases and tickets live.
        global_limits: the ``"global"`` key's limits.
        provider_limits: each provider's limits (``"p:<provider>"``), by provider name.
        model_limits: each model's limits (``"m:<provider>:<model>"``), by
            ``"<provider>:<model>"``.
        max_wait: seconds a caller may wait, unless its provider's or model's settings say.
        max_queue: callers that may wait, unless its provider's or model's settings say.
        fail_mode: while the store is unreachable, admit (``"open"``) or refuse
            (``"closed"``).
    """

    max_concurrency = 1
    reply_errors = (LLMError,)

    def __init__(
        self,
        store: RateStore,
        *,
        global_limits: RateLimitSettings | None = None,
        provider_limits: dict[str, RateLimitSettings] | None = None,
        model_limits: dict[str, RateLimitSettings] | None = None,
        max_wait: float = 30.0,
        max_queue: int = 10_000,
        fail_mode: Literal["open", "closed"] = "closed",
    ) -> None:
        self.store = store
        self._routes = Routes(
            global_limits=global_limits,
            provider_limits=dict(provider_limits or {}),
            model_limits=dict(model_limits or {}),
            max_wait=max_wait,
            max_queue=max_queue,
        )
        self.fail_mode = fail_mode
        store.set_fail_mode(fail_mode)
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._counts: dict[str, int] = {}
        self._active: dict[str, _Held] = {}
        self._kick = trio.Event()
        self._offset: float | None = None  # the store's clock minus ours
        self._offset_spread = math.inf  # the round trip of the sample it came from
        self._offset_at = 0.0
        self.granted = 0
        self.refused = 0
        self.waited_total = 0.0
        self.degraded = 0
        self.store_errors = 0
        self.abandoned = 0
        self.ignored_observations = 0
        self._outage_logged = False
        self._observation_warned = False

    @classmethod
    def from_config(cls, store: RateStore, config: Config) -> Governor:
        """The governor of ``config``'s ``rate_limits``, each provider's ``rate_limits`` and
        each model's ``model_rate_limits``.

        Raises:
            ConfigurationError: a tokens-per-minute limit cannot admit one call of
                ``cost_control.default_max_tokens`` plus `PROMPT_ALLOWANCE` prompt tokens;
                the problem names the field and the fix.
        """
        problems = tpm_problems(config)
        if problems:
            raise ConfigurationError(problems=problems)
        limits = configured_limits(config)
        return cls(
            store,
            global_limits=limits.global_limits,
            provider_limits=limits.provider_limits,
            model_limits=limits.model_limits,
            max_wait=limits.max_wait,
            max_queue=limits.max_queue,
            fail_mode=config.store_fail_mode,
        )

    def lifespan(self, ctx: Context) -> Any:
        ctx.nursery.start_soon(self._pump_loop)
        ctx.nursery.start_soon(self._renew_loop)
        ctx.nursery.start_soon(self.store.watch, self._wake)
        return super().lifespan(ctx)

    # -- messages ------------------------------------------------------------------------------

    async def handle(self, msg: GovernorMsg, ctx: Context) -> Any:
        match msg:
            case Acquire():
                return self._acquire(msg, ctx)
            case Release(lease=lease, used=used):
                await self._release(lease.id, used, degraded=lease.degraded)
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
                    waiting=len(self._waiters),
                    active=len(self._active),
                    waited_total=self.waited_total,
                    degraded=self.degraded,
                    store_errors=self.store_errors,
                    abandoned=self.abandoned,
                    ignored_observations=self.ignored_observations,
                )

    def handle_nowait(self, msg: GovernorMsg) -> Any:
        """Grant a lease at once when the store is in memory, nobody waits in the caller's
        line and there is room now; give a lease back and take an observation at once when
        the store is in memory. Anything else goes through the mailbox (`trio.WouldBlock`),
        before anything changes: a request that must wait, or would be refused, is asked
        again there and queued or refused as usual.

        Raises:
            trio.WouldBlock: the message must go through the mailbox.
        """
        store = self.store
        if not store.synchronous:
            raise trio.WouldBlock  # a remote store is asked by the pump alone
        # (isinstance, not `match`: class patterns with keywords cost more on this path)
        if isinstance(msg, Acquire):
            return self._acquire_nowait(msg)
        if isinstance(msg, Release):
            lease = msg.lease
            self._release_nowait(lease.id, msg.used, degraded=lease.degraded)
            return None
        if isinstance(msg, Observe):
            self._observe_nowait(msg.provider, msg.model, msg.observation)
            return None
        raise trio.WouldBlock

    def _acquire_nowait(self, msg: Acquire) -> Lease:
        """A lease granted at once, or `trio.WouldBlock` with nothing changed."""
        key = (msg.provider, msg.model)
        lease = msg.lease
        if lease is None or key in self._queues or lease in self._waiters or lease in self._active:
            raise trio.WouldBlock
        route = self._routes.get(msg.provider, msg.model)
        tokens = max(0, int(msg.tokens))
        if too_large(route, tokens, msg.provider) is not None:
            raise trio.WouldBlock
        try:
            # No ticket: a refusal leaves no place in line behind (the mailbox asks again).
            grant = self.store.acquire_nowait(
                route.limits, lease=lease, tokens=tokens, ttl=LEASE_TTL
            )
        except StoreUnavailable:
            raise trio.WouldBlock from None
        if not grant.granted:
            raise trio.WouldBlock
        self._store_ok()
        now = trio.current_time()
        self._clock_sample(grant.now, now, now)
        return self._grant(lease, route, tokens, 0.0)

    def _acquire(self, msg: Acquire, ctx: Context) -> Lease | None:
        route = self._routes.get(msg.provider, msg.model)
        lease = msg.lease or new_id()
        if lease in self._waiters or lease in self._active:
            self.refused += 1
            raise RateLimited(
                f"lease id {lease!r} is already waiting or held",
                provider=msg.provider,
                retryable=False,
                details={"reason": "duplicate_lease"},
            )
        tokens = max(0, int(msg.tokens))
        oversized = too_large(route, tokens, msg.provider)
        if oversized is not None:
            self.refused += 1
            raise oversized
        key = (msg.provider, msg.model)
        queue = self._queues.get(key)
        if queue is not None:  # others wait in this line: queue behind them
            if self._counts.get(route.scope, 0) >= route.max_queue:
                self.refused += 1
                raise self._queue_full(route, msg.provider)
            self._enqueue(queue, ctx.defer(msg), msg.provider, lease, tokens)
            return None
        if not self.store.synchronous:
            # Only the pump asks a remote store, so a caller's cancellation never cuts a
            # store operation short (a grant or a ticket nobody would know of).
            queue = self._queues[key] = _Queue(key, route)
            self._enqueue(queue, ctx.defer(msg), msg.provider, lease, tokens)
            self._kick.set()
            return None
        # In memory, nobody waiting in this line: ask at once, without a checkpoint.
        grant = self._ask_nowait(route.limits, lease, tokens, Ticket())
        if grant is None:
            return self._degraded_lease(lease, route, tokens, msg.provider)
        now = trio.current_time()
        self._clock_sample(grant.now, now, now)
        if grant.granted:
            return self._grant(lease, route, tokens, 0.0)
        refusal = refusal_of(route, grant, tokens, msg.provider, math.inf, first=True)
        if refusal is None and self._counts.get(route.scope, 0) >= route.max_queue:
            refusal = self._queue_full(route, msg.provider)
        if refusal is not None:
            self.refused += 1
            self._leave_nowait(route.limits, lease)
            raise refusal
        queue = self._queues[key] = _Queue(key, route)
        waiter = self._enqueue(queue, ctx.defer(msg), msg.provider, lease, tokens)
        waiter.since, waiter.ticketed, waiter.last = grant.now, True, grant
        queue.due = now + _pause(grant)
        self._kick.set()
        return None

    def _enqueue(
        self, queue: _Queue, handle: ReplyHandle[Lease], provider: str, lease: str, tokens: int
    ) -> _Waiter:
        waiter = _Waiter(handle, queue, provider, lease, tokens, trio.current_time())
        queue.waiters.append(waiter)
        self._waiters[lease] = waiter
        for scope in queue.route.scopes:
            self._counts[scope] = self._counts.get(scope, 0) + 1
        return waiter

    def _forget(self, waiter: _Waiter) -> None:
        """Take ``waiter`` out of its line and the counts (its ticket is the caller's)."""
        queue = waiter.queue
        if queue.waiters and queue.waiters[0] is waiter:
            queue.waiters.popleft()
            queue.due = -math.inf  # the next one asks at once
        else:
            try:
                queue.waiters.remove(waiter)
            except ValueError:
                pass
        if not queue.waiters and self._queues.get(queue.key) is queue:
            del self._queues[queue.key]
        if self._waiters.get(waiter.lease) is waiter:
            del self._waiters[waiter.lease]
            for scope in queue.route.scopes:
                left = self._counts.get(scope, 0) - 1
                if left > 0:
                    self._counts[scope] = left
                else:
                    self._counts.pop(scope, None)

    def _queue_full(self, route: Route, provider: str) -> RateLimited:
        waiting = self._counts.get(route.scope, 0)
        return RateLimited(
            f"{waiting} calls already wait for rate-limit capacity (max_queue {route.max_queue})",
            provider=provider,
            retry_after=route.max_wait if route.max_wait < math.inf else None,
            details={"reason": "queue_full", "max_queue": route.max_queue},
        )

    def _grant(self, lease: str, route: Route, tokens: int, waited: float) -> Lease:
        self.granted += 1
        self.waited_total += waited
        self._active[lease] = _Held(route, tokens)
        keys = [limit.key for limit in route.limits]
        return Lease(id=lease, keys=keys, tokens=tokens, waited=waited)

    def _degraded_lease(self, lease: str, route: Route, tokens: int, provider: str) -> Lease:
        if self.fail_mode == "closed":
            self.refused += 1
            raise RateLimited(
                "the rate-limit store is unreachable and fail_mode is 'closed'",
                provider=provider,
                retryable=True,
                retry_after=1.0,
                details={"reason": "store_unavailable"},
            )
        self.degraded += 1
        keys = [limit.key for limit in route.limits]
        return Lease(id=lease, keys=keys, tokens=tokens, degraded=True)

    async def _abandon(self, lease_id: str) -> None:
        waiter = self._waiters.get(lease_id)
        if waiter is not None:
            self.abandoned += 1
            waiter.abandoned = True
            if waiter.trying:
                return  # the pump gives back whatever the store answers
            self._forget(waiter)
            waiter.handle.fail(RateLimited("abandoned by its caller"))
            if waiter.ticketed:
                await self._leave(waiter.queue.route.limits, lease_id)
            self._kick.set()
            return
        if lease_id in self._active:
            self.abandoned += 1
            await self._release(lease_id, 0)

    async def _release(self, lease_id: str, used: int, *, degraded: bool = False) -> None:
        if self.store.synchronous:
            self._release_nowait(lease_id, used, degraded=degraded)
            return
        held = self._active.pop(lease_id, None)
        if held is None or degraded:
            return
        used = max(0, int(used))
        try:
            await self.store.settle(held.limits, lease=lease_id, reserved=held.tokens, used=used)
        except StoreUnavailable as exc:
            self._store_error(exc)  # the lease expires by itself
        # The store tells the waiters next in line (here or in other processes) to ask again.

    def _release_nowait(self, lease_id: str, used: int, *, degraded: bool = False) -> None:
        """`_release` with a synchronous store."""
        held = self._active.pop(lease_id, None)
        if held is None or degraded:
            return
        used = max(0, int(used))
        try:
            self.store.settle_nowait(held.limits, lease=lease_id, reserved=held.tokens, used=used)
        except StoreUnavailable as exc:
            self._store_error(exc)  # the lease expires by itself

    async def _observe(self, provider: str, model: str, observation: RateObservation) -> None:
        if self.store.synchronous:
            self._observe_nowait(provider, model, observation)
            return
        checked = self._checked(provider, model, observation)
        try:
            await self.store.observe(RateLimit(key=f"m:{provider}:{model}"), checked)
        except StoreUnavailable as exc:
            self._store_error(exc)

    def _observe_nowait(self, provider: str, model: str, observation: RateObservation) -> None:
        """`_observe` with a synchronous store."""
        checked = self._checked(provider, model, observation)
        try:
            self.store.observe_nowait(RateLimit(key=f"m:{provider}:{model}"), checked)
        except StoreUnavailable as exc:
            self._store_error(exc)

    def _checked(self, provider: str, model: str, observation: RateObservation) -> RateObservation:
        """``observation`` without its out-of-range values (counted, and warned of once)."""
        checked, dropped = checked_observation(observation)
        if dropped:
            self.ignored_observations += 1
            if not self._observation_warned:
                self._observation_warned = True
                log.warning(
                    "ignored out-of-range rate-limit values from %s for %s: %s (reported once)",
                    provider,
                    model,
                    ", ".join(dropped),
                )
        return checked

    # -- the store -----------------------------------------------------------------------------

    def _store_error(self, exc: StoreUnavailable) -> None:
        self.store_errors += 1
        if not self.store.logs_outages and not self._outage_logged:
            self._outage_logged = True
            log.error("rate-limit store unreachable (fail_mode=%s): %s", self.fail_mode, exc)

    def _store_ok(self) -> None:
        if self._outage_logged:
            self._outage_logged = False
            log.info("rate-limit store reachable again (fail_mode=%s)", self.fail_mode)

    def _ask_nowait(
        self, limits: Sequence[RateLimit], lease: str, tokens: int, ticket: Ticket
    ) -> Grant | None:
        try:
            grant = self.store.acquire_nowait(
                limits, lease=lease, tokens=tokens, ttl=LEASE_TTL, ticket=ticket
            )
        except StoreUnavailable as exc:
            self._store_error(exc)
            return None
        self._store_ok()
        return grant

    async def _ask(
        self, limits: Sequence[RateLimit], lease: str, tokens: int, ticket: Ticket
    ) -> Grant | None:
        """Ask the store for a grant; None when it is unreachable."""
        if self.store.synchronous:
            return self._ask_nowait(limits, lease, tokens, ticket)
        try:
            grant = await self.store.acquire(
                limits, lease=lease, tokens=tokens, ttl=LEASE_TTL, ticket=ticket
            )
        except StoreUnavailable as exc:
            self._store_error(exc)
            return None
        self._store_ok()
        return grant

    def _leave_nowait(self, limits: Sequence[RateLimit], lease: str) -> None:
        try:
            self.store.leave_nowait(limits, lease=lease)
        except StoreUnavailable as exc:  # the ticket expires by itself
            self._store_error(exc)

    async def _leave(self, limits: Sequence[RateLimit], lease: str) -> None:
        if self.store.synchronous:
            self._leave_nowait(limits, lease)
            return
        try:
            await self.store.leave(limits, lease=lease)
        except StoreUnavailable as exc:  # the ticket expires by itself
            self._store_error(exc)

    def _wake(self, keys: frozenset[str]) -> None:
        """Capacity was released on ``keys``: the lines waiting on them ask again now."""
        woken = False
        for queue in self._queues.values():
            if not queue.route.names.isdisjoint(keys):
                queue.due = -math.inf
                queue.wakes += 1
                woken = True
        if woken:
            self._kick.set()

    # -- the lines -----------------------------------------------------------------------------

    async def _pump_loop(self) -> None:
        while True:
            delay = await self._pump()
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._kick.wait()
            else:
                await trio.lowlevel.checkpoint()
            self._kick = trio.Event()

    async def _pump(self) -> float:
        """Serve every line whose head is due, oldest head first; return how long to sleep."""
        while True:
            now = trio.current_time()
            due = [
                queue
                for queue in self._queues.values()
                if queue.due <= now or queue.waiters[0].deadline <= now
            ]
            if not due:
                break
            due.sort(key=lambda queue: queue.waiters[0].enqueued)
            for queue in due:
                if self._queues.get(queue.key) is queue:
                    await self._serve(queue)
        wake = min(
            (min(q.due, q.waiters[0].deadline) for q in self._queues.values()), default=math.inf
        )
        return wake - trio.current_time()

    async def _serve(self, queue: _Queue) -> None:
        """Grant the line's waiters in order until its head must wait (or the store is down)."""
        route = queue.route
        while queue.waiters:
            waiter = queue.waiters[0]
            if waiter.abandoned or waiter.handle.done:  # the caller gave up
                if not waiter.abandoned:
                    self.abandoned += 1
                self._forget(waiter)
                if waiter.ticketed:
                    await self._leave(route.limits, waiter.lease)
                continue
            now = trio.current_time()
            last = waiter.last
            if last is not None and now >= waiter.deadline:
                self._refuse(
                    waiter,
                    refusal_of(route, last, waiter.tokens, waiter.provider, 0.0, first=False),
                )
                await self._leave(route.limits, waiter.lease)
                continue
            since = waiter.since
            if since is None and self._offset is not None:
                since = waiter.enqueued + self._offset
            wakes = queue.wakes
            waiter.trying = True
            try:
                grant = await self._ask(
                    route.limits, waiter.lease, waiter.tokens, Ticket(since=since)
                )
            finally:
                waiter.trying = False
            if grant is None:
                self._store_down()
                return
            self._clock_sample(grant.now, now, trio.current_time())
            now = trio.current_time()
            if waiter.abandoned or waiter.handle.done:  # it left while the store answered
                self._forget(waiter)
                if grant.granted:
                    await self._give_back(route, waiter)
                else:
                    await self._leave(route.limits, waiter.lease)
                continue
            if grant.granted:
                self._forget(waiter)
                lease = self._grant(waiter.lease, route, waiter.tokens, now - waiter.enqueued)
                if not waiter.handle.reply(lease):  # abandoned meanwhile: give it back
                    await self._release(lease.id, 0)
                continue
            first = waiter.last is None
            waiter.since = grant.now if since is None else since
            waiter.ticketed, waiter.last = True, grant
            refusal = refusal_of(
                route, grant, waiter.tokens, waiter.provider, waiter.deadline - now, first=first
            )
            if refusal is None and first and self._counts.get(route.scope, 0) > route.max_queue:
                refusal = self._queue_full(route, waiter.provider)
            if refusal is not None:
                self._refuse(waiter, refusal)
                await self._leave(route.limits, waiter.lease)
                continue
            # A release noticed while the store answered may have freed what it needs.
            queue.due = now + _pause(grant) if queue.wakes == wakes else -math.inf
            return

    def _clock_sample(self, store_now: float, before: float, after: float) -> None:
        """Learn the store's clock: the sample of the quickest round trip is the most exact
        (its error is at most half the round trip); older ones count for less and less, and
        a clock that stepped by a second or more is followed at once."""
        sample, spread = store_now - (before + after) / 2, after - before
        known, best = self._offset, self._offset_spread + (after - self._offset_at) * 0.01
        if known is None or spread <= best or abs(sample - known) >= 1.0:
            self._offset, self._offset_spread, self._offset_at = sample, spread, after

    def _refuse(self, waiter: _Waiter, error: RateLimited | None) -> None:
        self._forget(waiter)
        self.refused += 1
        waiter.handle.fail(error or RateLimited("no rate-limit capacity within max_wait"))

    async def _give_back(self, route: Route, waiter: _Waiter) -> None:
        """Release a grant nobody received (its caller left while the store answered)."""
        self._active[waiter.lease] = _Held(route, waiter.tokens)
        await self._release(waiter.lease, 0)

    def _store_down(self) -> None:
        """The store is unreachable: apply the fail mode to every waiter at once."""
        for queue in list(self._queues.values()):
            while queue.waiters:
                waiter = queue.waiters[0]
                self._forget(waiter)
                if waiter.handle.done:
                    continue
                try:
                    lease = self._degraded_lease(
                        waiter.lease, queue.route, waiter.tokens, waiter.provider
                    )
                except RateLimited as error:
                    waiter.handle.fail(error)
                else:
                    waiter.handle.reply(lease)

    async def _renew_loop(self) -> None:
        while True:
            await trio.sleep(RENEW_EVERY)
            for lease, held in list(self._active.items()):
                if any(limit.concurrency is not None for limit in held.limits):
                    try:
                        await self.store.renew(held.limits, lease=lease, ttl=LEASE_TTL)
                    except StoreUnavailable as exc:
                        self._store_error(exc)


def _pause(grant: Grant) -> float:
    """How long a refused head waits before it asks again, unless a release wakes it."""
    if grant.reason == "concurrency":
        return POLL
    return min(max(grant.wait, 0.001), REFRESH)
