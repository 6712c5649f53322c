"""In-process stores: the embedded default, exact for one process.

Rate limits run on `trio.current_time` (monotonic, so tests under ``autojump_clock`` are
exact), and `MemoryRateStore.watch` tells every governor using the store about releases on
keys with waiters; budgets run on the wall clock (``time.time``), because calendar periods
are days, weeks and months of UTC. Both take a ``clock`` argument for tests.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import final

import trio

from ._base import (
    Budget,
    BudgetCheck,
    BudgetLevel,
    BudgetStore,
    Grant,
    RateLimit,
    RateObservation,
    RateStore,
    Ticket,
    bucket_width,
    checked_observation,
    from_nanos,
    period_id,
    to_nanos,
)

__all__ = ["MemoryBudgetStore", "MemoryRateStore"]

log = logging.getLogger("llm_invocation.store")


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class _Bucket:
    """A token bucket holding up to ``capacity``, refilled at ``capacity`` per minute."""

    __slots__ = ("capacity", "level", "updated")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, capacity: float, now: float) -> None:
        if capacity != self.capacity:
            self.level = min(self.level, capacity)
            self.capacity = capacity
        elapsed = now - self.updated
        if elapsed > 0:
            self.level = min(self.capacity, self.level + elapsed * self.capacity / 60.0)
        self.updated = now

    def wait_for(self, amount: float, claimed: float = 0.0) -> float:
        """Seconds until ``amount`` fits after what older waiters claim (inf: it never will)."""
        if amount > self.capacity:
            return math.inf
        missing = amount + claimed - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.capacity


class _Expiries:
    """When each live id expires, in a heap: finding the expired ones costs O(log n) each,
    not a scan of every live id on every call (thousands are held at once in a fan-out).

    Entries go lazily: an id given back or renewed leaves its old entry, skipped when it
    comes up; once such entries outnumber the live ids the heap is rebuilt from them.
    """

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def add(self, key: str, until: float, live: int) -> bool:
        """Remember that ``key`` expires at ``until``. True when stale entries outnumber
        the ``live`` ids held now: `rebuild` then."""
        heap = self._heap
        heapq.heappush(heap, (until, key))
        return len(heap) > 2 * live + 64

    def due(self, now: float, until_of: Callable[[str], float | None]) -> list[str]:
        """The live ids whose time is up: those whose current expiry (``until_of``, None
        for an id no longer held) is an entry at or before ``now``."""
        heap = self._heap
        found: dict[str, None] = {}  # an id held twice until the same time is found once
        while heap and heap[0][0] <= now:
            until, key = heapq.heappop(heap)
            if until_of(key) == until:
                found[key] = None
        return list(found)

    def rebuild(self, live: Iterable[tuple[str, float]]) -> None:
        """Keep only the live (id, expiry) pairs."""
        self._heap = [(until, key) for key, until in live]
        heapq.heapify(self._heap)


class _Ticket:
    __slots__ = ("expires", "serial", "since", "tokens")

    def __init__(self, since: float, expires: float, tokens: int, serial: int) -> None:
        self.since = since
        self.expires = expires
        self.tokens = tokens
        self.serial = serial  # the order of registration, for tickets of the same since


class _Line:
    """The live tickets of one key: by lease, in the line's order and by expiry.

    What a request's place in line claims (`claims`) is found by bisection, and expired
    tickets come off a heap: neither scans every ticket, so a line of thousands of waiters
    costs each of them O(log n) (and a prefix sum of the tokens ahead, from whichever end is
    nearer).
    """

    __slots__ = ("_expiries", "_order", "_tokens", "_total", "by_lease")

    def __init__(self) -> None:
        self.by_lease: dict[str, _Ticket] = {}
        self._order: list[tuple[float, int]] = []  # (since, serial) of each, in line order
        self._tokens: list[int] = []  # the tokens of each, in the same order
        self._total = 0
        self._expiries = _Expiries()

    def __len__(self) -> int:
        return len(self.by_lease)

    def __bool__(self) -> bool:
        return bool(self.by_lease)

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_lease)

    def get(self, lease: str) -> _Ticket | None:
        return self.by_lease.get(lease)

    def put(self, lease: str, ticket: _Ticket) -> None:
        """Register (or renew) ``lease``'s ticket."""
        self.pop(lease)
        self.by_lease[lease] = ticket
        place = (ticket.since, ticket.serial)
        index = bisect.bisect_left(self._order, place)
        self._order.insert(index, place)
        self._tokens.insert(index, ticket.tokens)
        self._total += ticket.tokens
        if self._expiries.add(lease, ticket.expires, len(self.by_lease)):
            self._expiries.rebuild((key, held.expires) for key, held in self.by_lease.items())

    def pop(self, lease: str) -> _Ticket | None:
        """Drop ``lease``'s ticket; the ticket, or None when it held none."""
        ticket = self.by_lease.pop(lease, None)
        if ticket is not None:
            index = bisect.bisect_left(self._order, (ticket.since, ticket.serial))
            del self._order[index]
            del self._tokens[index]
            self._total -= ticket.tokens
        return ticket

    def expire(self, now: float) -> None:
        """Drop the tickets whose time is up at ``now``."""
        for lease in self._expiries.due(now, self._expires):
            self.pop(lease)

    def _expires(self, lease: str) -> float | None:
        ticket = self.by_lease.get(lease)
        return ticket.expires if ticket is not None else None

    def claims(self, lease: str, since: float) -> tuple[int, int]:
        """How many live tickets are older than ``lease`` waiting since ``since``, and their
        tokens. Of the same since, the first registered is older; a request not registered
        here is younger than all of them."""
        own = self.by_lease.get(lease)
        serial: float = own.serial if own is not None else math.inf
        ahead = bisect.bisect_left(self._order, (since, serial))
        if ahead * 2 <= len(self._tokens):
            tokens = sum(self._tokens[:ahead])
        else:
            tokens = self._total - sum(self._tokens[ahead:])
        if own is not None and (own.since, own.serial) < (since, serial):
            ahead -= 1  # its own ticket, from an older since, is not ahead of it
            tokens -= own.tokens
        return ahead, tokens


class _Key:
    __slots__ = (
        "blocked_until",
        "learned_rpm",
        "learned_tpm",
        "lease_expiries",
        "leases",
        "requests",
        "tickets",
        "tokens",
    )

    def __init__(self) -> None:
        self.requests: _Bucket | None = None
        self.tokens: _Bucket | None = None
        self.leases: dict[str, float] = {}  # written through `hold`
        self.lease_expiries = _Expiries()
        self.tickets = _Line()
        self.blocked_until = -math.inf
        self.learned_rpm: float | None = None
        self.learned_tpm: float | None = None

    def prepare(self, limit: RateLimit, now: float) -> None:
        rpm = _min(limit.requests_per_minute, self.learned_rpm)
        tpm = _min(limit.tokens_per_minute, self.learned_tpm)
        if rpm is None:
            self.requests = None
        elif self.requests is None:
            self.requests = _Bucket(rpm, now)
        else:
            self.requests.refill(rpm, now)
        if tpm is None:
            self.tokens = None
        elif self.tokens is None:
            self.tokens = _Bucket(tpm, now)
        else:
            self.tokens.refill(tpm, now)
        if self.leases:
            for lease in self.lease_expiries.due(now, self.leases.get):
                del self.leases[lease]
        if self.tickets:
            self.tickets.expire(now)

    def hold(self, lease: str, until: float) -> None:
        """Hold a concurrency slot for ``lease`` until ``until`` (or renew it)."""
        leases = self.leases
        leases[lease] = until
        if self.lease_expiries.add(lease, until, len(leases)):
            self.lease_expiries.rebuild(leases.items())


@final
class MemoryRateStore(RateStore):
    """Token buckets and leases in this process."""

    synchronous = True

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or trio.current_time
        self._keys: dict[str, _Key] = {}
        self._watchers: list[Callable[[frozenset[str]], None]] = []
        self._warned = False
        self._serial = 0

    def _key(self, name: str) -> _Key:
        state = self._keys.get(name)
        if state is None:
            state = self._keys[name] = _Key()
        return state

    async def acquire(
        self,
        limits: Sequence[RateLimit],
        *,
        lease: str,
        tokens: int,
        ttl: float,
        ticket: Ticket | None = None,
    ) -> Grant:
        await trio.lowlevel.checkpoint()
        return self.acquire_nowait(limits, lease=lease, tokens=tokens, ttl=ttl, ticket=ticket)

    def acquire_nowait(
        self,
        limits: Sequence[RateLimit],
        *,
        lease: str,
        tokens: int,
        ttl: float,
        ticket: Ticket | None = None,
    ) -> Grant:
        """`acquire` without a checkpoint (the governor's hot path)."""
        now = self._clock()
        since = now
        if ticket is not None and ticket.since is not None and ticket.since <= now:
            since = ticket.since  # a later or unordered (nan) since is now
        worst = Grant(granted=True, now=now)
        states: list[tuple[RateLimit, _Key, bool]] = []
        for limit in limits:
            state = self._key(limit.key)
            state.prepare(limit, now)
            older, older_tokens = state.tickets.claims(lease, since) if state.tickets else (0, 0)
            wait, reason = 0.0, None
            if state.blocked_until > now:
                wait, reason = state.blocked_until - now, "blocked"
            if state.requests is not None:
                needed = state.requests.wait_for(1, older)
                if needed > wait:
                    wait, reason = needed, "requests"
            if state.tokens is not None and tokens > 0:
                needed = state.tokens.wait_for(tokens, older_tokens)
                if needed > wait:
                    wait, reason = needed, "tokens"
            if (
                limit.concurrency is not None
                and len(state.leases) + older >= limit.concurrency
                and reason is None
            ):
                reason = "concurrency"  # fits when a lease is released: nobody knows when
            states.append((limit, state, reason is not None))
            if reason is not None and (worst.granted or wait > worst.wait):
                worst = Grant(granted=False, wait=wait, key=limit.key, reason=reason, now=now)
        if not worst.granted:
            if ticket is not None and worst.wait < math.inf:  # it will wait: hold its place
                expires = now + ticket.ttl
                freed: list[str] = []
                for limit, state, misfit in states:
                    if misfit:
                        known = state.tickets.get(lease)
                        if known is None:
                            self._serial += 1
                            serial = self._serial
                        else:
                            serial = known.serial
                        state.tickets.put(lease, _Ticket(since, expires, tokens, serial))
                    elif state.tickets.pop(lease) is not None and state.tickets:
                        freed.append(limit.key)  # its claim here is given up: wake the next
                self._notify(freed)
            return worst
        for limit, state, _ in states:
            if state.requests is not None:
                state.requests.level -= 1
            if state.tokens is not None:
                state.tokens.level -= tokens
            if limit.concurrency is not None:
                state.hold(lease, now + ttl)
            if state.tickets:
                state.tickets.pop(lease)
        return worst

    async def settle(
        self, limits: Sequence[RateLimit], *, lease: str, reserved: int, used: int
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.settle_nowait(limits, lease=lease, reserved=reserved, used=used)

    def settle_nowait(
        self, limits: Sequence[RateLimit], *, lease: str, reserved: int, used: int
    ) -> None:
        now = self._clock()
        waited_on: list[str] = []
        for limit in limits:
            state = self._key(limit.key)
            state.prepare(limit, now)
            state.leases.pop(lease, None)
            if state.tokens is not None and reserved != used:
                state.tokens.level = min(
                    state.tokens.capacity, state.tokens.level + (reserved - used)
                )
            if state.tickets:
                waited_on.append(limit.key)
        self._notify(waited_on)

    async def leave(self, limits: Sequence[RateLimit], *, lease: str) -> None:
        await trio.lowlevel.checkpoint()
        self.leave_nowait(limits, lease=lease)

    def leave_nowait(self, limits: Sequence[RateLimit], *, lease: str) -> None:
        waited_on: list[str] = []
        for limit in limits:
            state = self._keys.get(limit.key)
            if state is not None and state.tickets.pop(lease) is not None and state.tickets:
                waited_on.append(limit.key)
        self._notify(waited_on)

    def _notify(self, keys: list[str]) -> None:
        if not keys or not self._watchers:
            return
        released = frozenset(keys)
        for watcher in list(self._watchers):
            try:
                watcher(released)
            except Exception:  # another user's bug must not fail this caller's settle
                log.exception("a rate-store watcher failed; it is dropped")
                self._watchers.remove(watcher)

    async def watch(self, on_release: Callable[[frozenset[str]], None]) -> None:
        self._watchers.append(on_release)
        try:
            await trio.sleep_forever()
        finally:
            if on_release in self._watchers:
                self._watchers.remove(on_release)

    async def renew(self, limits: Sequence[RateLimit], *, lease: str, ttl: float) -> None:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        for limit in limits:
            state = self._keys.get(limit.key)
            if state is not None and lease in state.leases:
                state.hold(lease, now + ttl)

    async def observe(self, limit: RateLimit, observation: RateObservation) -> None:
        await trio.lowlevel.checkpoint()
        self.observe_nowait(limit, observation)

    def observe_nowait(self, limit: RateLimit, observation: RateObservation) -> None:
        o, dropped = checked_observation(observation)
        if dropped and not self._warned:
            self._warned = True
            log.warning(
                "ignored out-of-range rate-limit values for %s: %s (reported once)",
                limit.key,
                ", ".join(f"{name}={getattr(observation, name)!r:.40}" for name in dropped),
            )
        now = self._clock()
        state = self._key(limit.key)
        if o.requests_limit:
            state.learned_rpm = float(o.requests_limit)
        if o.tokens_limit:
            state.learned_tpm = float(o.tokens_limit)
        state.prepare(limit, now)
        if o.requests_remaining is not None and state.requests is not None:
            state.requests.level = min(state.requests.level, float(o.requests_remaining))
        if o.tokens_remaining is not None and state.tokens is not None:
            state.tokens.level = min(state.tokens.level, float(o.tokens_remaining))
        if o.requests_remaining == 0 and o.requests_reset:
            state.blocked_until = max(state.blocked_until, now + o.requests_reset)
        if o.retry_after:
            state.blocked_until = max(state.blocked_until, now + o.retry_after)

    async def levels(self, limit: RateLimit) -> dict[str, float]:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        state = self._key(limit.key)
        state.prepare(limit, now)
        return {
            "requests": state.requests.level if state.requests else math.inf,
            "tokens": state.tokens.level if state.tokens else math.inf,
            "leases": float(len(state.leases)),
            "waiting": float(len(state.tickets)),
            "blocked_for": max(0.0, state.blocked_until - now),
        }


class _Window:
    """Spend of one budget: time buckets (rolling) or one counter per calendar period."""

    __slots__ = ("buckets", "periods")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.periods: dict[str, int] = {}

    def spent(self, budget: Budget, now: float) -> int:
        if budget.calendar != "rolling":
            return self.periods.get(period_id(budget.calendar, now, budget.period), 0)
        width = bucket_width(budget.period)
        oldest = math.floor((now - budget.period) / width)
        stale = [index for index in self.buckets if index <= oldest]
        for index in stale:
            del self.buckets[index]
        return sum(self.buckets.values())

    def add(self, budget: Budget, now: float, nanos: int) -> None:
        if budget.calendar != "rolling":
            key = period_id(budget.calendar, now, budget.period)
            self.periods[key] = self.periods.get(key, 0) + nanos
            return
        index = math.floor(now / bucket_width(budget.period))
        self.buckets[index] = self.buckets.get(index, 0) + nanos


def _state_key(budget: Budget) -> tuple[str, str, float]:
    return (budget.scope, budget.calendar, budget.period)


@final
class MemoryBudgetStore(BudgetStore):
    """Budgets and reservations in this process."""

    synchronous = True

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._windows: dict[tuple[str, str, float], _Window] = {}
        self._reserved: dict[tuple[str, str, float], int] = {}
        self._reservations: dict[str, tuple[list[tuple[str, str, float]], int, float]] = {}
        self._expiries = _Expiries()
        self._alerts: dict[tuple[str, float, str], float] = {}

    def _window(self, budget: Budget) -> _Window:
        key = _state_key(budget)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        return window

    def _expire(self, now: float) -> None:
        for rid in self._expiries.due(now, self._until):
            self._drop(rid)

    def _until(self, reservation: str) -> float | None:
        entry = self._reservations.get(reservation)
        return entry[2] if entry is not None else None

    def _drop(self, reservation: str) -> None:
        entry = self._reservations.pop(reservation, None)
        if entry is None:
            return
        keys, nanos, _ = entry
        for key in keys:
            left = self._reserved.get(key, 0) - nanos
            if left > 0:
                self._reserved[key] = left
            else:
                self._reserved.pop(key, None)

    async def reserve(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        await trio.lowlevel.checkpoint()
        return self.reserve_nowait(budgets, reservation=reservation, amount=amount, ttl=ttl)

    def reserve_nowait(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        now = self._clock()
        self._expire(now)
        nanos = to_nanos(amount, up=True)
        for budget in budgets:
            key = _state_key(budget)
            spent = self._window(budget).spent(budget, now)
            reserved = self._reserved.get(key, 0)
            limit = to_nanos(budget.limit)
            if spent + reserved + nanos > limit:
                return BudgetCheck(
                    ok=False,
                    scope=budget.scope,
                    spent=from_nanos(spent),
                    reserved=from_nanos(reserved),
                    limit=budget.limit,
                )
        keys = [_state_key(b) for b in budgets]
        self._drop(reservation)
        self._reservations[reservation] = (keys, nanos, now + ttl)
        held = self._reservations
        if self._expiries.add(reservation, now + ttl, len(held)):
            self._expiries.rebuild((rid, entry[2]) for rid, entry in held.items())
        for key in keys:
            self._reserved[key] = self._reserved.get(key, 0) + nanos
        return BudgetCheck(ok=True)

    async def settle(
        self, budgets: Sequence[Budget], *, reservation: str, actual: Decimal
    ) -> list[BudgetLevel]:
        await trio.lowlevel.checkpoint()
        return self.settle_nowait(budgets, reservation=reservation, actual=actual)

    def settle_nowait(
        self, budgets: Sequence[Budget], *, reservation: str, actual: Decimal
    ) -> list[BudgetLevel]:
        now = self._clock()
        self._drop(reservation)
        nanos = to_nanos(actual)
        levels: list[BudgetLevel] = []
        for budget in budgets:
            window = self._window(budget)
            if nanos:
                window.add(budget, now, nanos)
            levels.append(self._level(budget, window, now))
        return levels

    def _level(self, budget: Budget, window: _Window, now: float) -> BudgetLevel:
        return BudgetLevel(
            scope=budget.scope,
            spent=from_nanos(window.spent(budget, now)),
            limit=budget.limit,
            period_id=period_id(budget.calendar, now, budget.period),
        )

    async def levels(self, budgets: Sequence[Budget]) -> list[BudgetLevel]:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        return [self._level(b, self._window(b), now) for b in budgets]

    async def claim_alert(self, scope: str, threshold: float, period_id: str, ttl: float) -> bool:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        key = (scope, threshold, period_id)
        until = self._alerts.get(key)
        if until is not None and until > now:
            return False
        self._alerts[key] = now + ttl
        return True

    def reserved(self, budget: Budget) -> Decimal:
        """Dollars reserved now against ``budget`` (for tests and statistics)."""
        return from_nanos(self._reserved.get(_state_key(budget), 0))
