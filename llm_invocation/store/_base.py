"""Shared-state backends: what the governor and the accountant need from a store.

Two interfaces, each with an in-memory implementation (one process) and a Redis one (several
processes, atomic Lua scripts):

`RateStore`
    Token buckets for requests and tokens per minute, and concurrency leases, under string
    keys (``"global"``, ``"openai"``, ``"openai:gpt-4o"``). `RateStore.acquire` takes from
    every key of a request at once or from none (all or nothing), so a request never holds a
    partial grant. A lease expires after its TTL, so a process that died with leases in hand
    gives them back by itself; `RateStore.settle` releases a lease and corrects the token
    bucket by the difference between the tokens reserved and those used. `RateStore.observe`
    tightens a key from what the provider reported (rate-limit headers, a 429's
    retry-after): the next request waits before anything is sent.

    Waiting is first come, first served across every user of the store: a refused request
    that will wait registers a `Ticket` on each key where it does not fit; older tickets
    have a prior claim on a key's free capacity, so a younger request (or a newcomer) is
    refused while what is free would not cover the older claims and its own. Tickets expire
    unless asked again, so a process that died stops claiming. `RateStore.watch` tells a
    waiting user when another user released capacity on keys somebody waits for.

`BudgetStore`
    Spend per scope (``"global"``, ``"provider:openai"``, ``"model:openai:gpt-4o"``,
    ``"tag:team=search"``) over rolling windows or calendar periods. `BudgetStore.reserve`
    admits a request's worst-case cost against every budget at once or refuses; its
    reservation expires after a TTL; `BudgetStore.settle` replaces it with the actual cost.
    Concurrent requests therefore cannot overshoot a budget together. `BudgetStore.claim_alert`
    lets exactly one process fire a threshold alert once per period.

Money crosses the interfaces as `Decimal` US dollars and is kept as integer nano-dollars,
so sums are exact and Redis can add them atomically.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Final, Literal

import msgspec

__all__ = [
    "MAX_OBSERVED_COUNT",
    "MAX_OBSERVED_SECONDS",
    "TICKET_TTL",
    "Budget",
    "BudgetCheck",
    "BudgetLevel",
    "BudgetStore",
    "Calendar",
    "Grant",
    "RateLimit",
    "RateObservation",
    "RateStore",
    "StoreUnavailable",
    "Ticket",
    "bucket_width",
    "checked_observation",
    "from_nanos",
    "period_bounds",
    "period_id",
    "to_nanos",
]

NANOS: Final = Decimal(1_000_000_000)

Calendar = Literal["rolling", "day", "week", "month"]


def to_nanos(amount: Decimal, *, up: bool = False) -> int:
    """Dollars as integer nano-dollars (rounded half-even, or up for worst cases)."""
    scaled = amount * NANOS
    return int(scaled.to_integral_value(rounding=ROUND_CEILING if up else ROUND_HALF_EVEN))


def from_nanos(nanos: int) -> Decimal:
    """Integer nano-dollars as exact dollars."""
    return Decimal(nanos) / NANOS


class StoreUnavailable(Exception):
    """The shared store (Redis) cannot be reached; the caller applies its fail mode."""


# -- rate limits -------------------------------------------------------------------------------


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of one key. None means unlimited for that dimension."""

    key: str
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    concurrency: int | None = None

    @property
    def unlimited(self) -> bool:
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and self.concurrency is None
        )


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of `RateStore.acquire`.

    Attributes:
        granted: everything was taken and the lease registered.
        wait: when not granted, seconds until the request may fit (``inf``: it never will,
            for example more tokens than a bucket holds). A request refused for
            ``"concurrency"`` only may fit as soon as a lease is released, which the store
            cannot foresee: its wait is 0 (`RateStore.watch` says when to ask again).
        key: the key that refused, when not granted.
        reason: "requests", "tokens", "concurrency" or "blocked" (a provider's retry-after).
        now: the store's clock when it decided (`Ticket.since` is on this clock).
    """

    granted: bool
    wait: float = 0.0
    key: str | None = None
    reason: str | None = None
    now: float = 0.0


TICKET_TTL: Final = 5.0
"""Seconds a waiter's ticket lives unless the waiter asks again (a dead waiter stops
claiming)."""


class Ticket(msgspec.Struct, frozen=True, kw_only=True):
    """A request's place in the line of waiters, shared by every user of the store.

    Attributes:
        since: when the request started waiting, on the store's clock (`Grant.now`); None
            for now. Older tickets are served first; equal ones by lease id.
        ttl: seconds the store keeps the ticket unless the request asks again.
    """

    since: float | None = None
    ttl: float = TICKET_TTL


class RateObservation(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider said about a key's limits (headers or a 429).

    Stores and the governor use only values in range (`checked_observation`).
    """

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None
    retry_after: float | None = None


MAX_OBSERVED_COUNT: Final = 10**12
"""The largest limit or remaining count an observation may report (requests or tokens)."""
MAX_OBSERVED_SECONDS: Final = 86_400.0
"""The longest reset or retry-after an observation may report: one day."""

_COUNTS: Final = ("requests_limit", "requests_remaining", "tokens_limit", "tokens_remaining")
_SECONDS: Final = ("requests_reset", "tokens_reset", "retry_after")


def _in_range(value: object, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return low <= value <= high  # False for NaN; exact for big ints
    except OverflowError:  # pragma: no cover - int/float comparisons do not overflow
        return False


def checked_observation(observation: RateObservation) -> tuple[RateObservation, list[str]]:
    """``observation`` without its out-of-range values, and the names of those dropped.

    Counts (limits and remaining) must be whole numbers from 0 to `MAX_OBSERVED_COUNT` (a
    limit at least 1); resets and retry-after finite seconds from 0 to
    `MAX_OBSERVED_SECONDS`. Anything else (negative, NaN, infinite, absurdly large, not a
    number) is dropped, never trusted: a provider's header must not block a key forever or
    overflow a bucket.
    """
    dropped: list[str] = []
    for name in _COUNTS:
        value = getattr(observation, name)
        low = 1 if name.endswith("_limit") else 0
        if value is not None and not (
            _in_range(value, low, MAX_OBSERVED_COUNT) and float(value).is_integer()
        ):
            dropped.append(name)
    for name in _SECONDS:
        value = getattr(observation, name)
        if value is not None and not _in_range(value, 0.0, MAX_OBSERVED_SECONDS):
            dropped.append(name)
    if not dropped:
        return observation, dropped
    cleaned = msgspec.structs.replace(observation, **dict.fromkeys(dropped))
    return cleaned, dropped


class RateStore(abc.ABC):
    """Token buckets and concurrency leases, shared by everyone using the same store."""

    synchronous: bool = False
    """True when the ``*_nowait`` methods exist and do the same work without awaiting (the
    memory store): the governor then serves its whole queue in one scheduler pass."""

    logs_outages: bool = False
    """True when the store logs its own outages (once each, with the fail mode in force):
    its users then only count the `StoreUnavailable` errors they see."""

    def acquire_nowait(
        self,
        limits: Sequence[RateLimit],
        *,
        lease: str,
        tokens: int,
        ttl: float,
        ticket: Ticket | None = None,
    ) -> Grant:
        """`acquire` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    def settle_nowait(
        self, limits: Sequence[RateLimit], *, lease: str, reserved: int, used: int
    ) -> None:
        """`settle` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    def leave_nowait(self, limits: Sequence[RateLimit], *, lease: str) -> None:
        """`leave` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    def observe_nowait(self, limit: RateLimit, observation: RateObservation) -> None:
        """`observe` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    @abc.abstractmethod
    async def acquire(
        self,
        limits: Sequence[RateLimit],
        *,
        lease: str,
        tokens: int,
        ttl: float,
        ticket: Ticket | None = None,
    ) -> Grant:
        """Take one request, ``tokens`` tokens and a concurrency slot from every key, or nothing.

        Older waiters come first: capacity that the tickets of older waiters claim (one
        request, their tokens and one concurrency slot each, on the keys where they wait) is
        not free for this request. Without a ``ticket`` the request is a newcomer (younger
        than every ticket) and a refusal leaves nothing behind. With one, a refusal
        registers (or refreshes) the ticket ``lease`` on every key where the request does
        not fit and drops it from the others, unless the request can never fit (an
        infinite wait); a grant drops it everywhere.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def settle(
        self, limits: Sequence[RateLimit], *, lease: str, reserved: int, used: int
    ) -> None:
        """Release ``lease`` and give back ``reserved - used`` tokens (or take the excess).

        Raises:
            StoreUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def leave(self, limits: Sequence[RateLimit], *, lease: str) -> None:
        """Drop the ticket ``lease`` (its waiter gave up); nothing if there is none.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def watch(self, on_release: Callable[[frozenset[str]], None]) -> None:
        """Call ``on_release(keys)`` whenever another user of the store may have freed
        capacity on ``keys`` that somebody waits for (a settle, a waiter leaving); run until
        cancelled.

        Notices are hints: one may be lost (a broken connection), so waiters also ask again
        from time to time. Never raises but `trio.Cancelled`.
        """

    @abc.abstractmethod
    async def renew(self, limits: Sequence[RateLimit], *, lease: str, ttl: float) -> None:
        """Extend a lease still in use (a long stream) by ``ttl`` from now."""

    @abc.abstractmethod
    async def observe(self, limit: RateLimit, observation: RateObservation) -> None:
        """Tighten ``limit.key`` by what the provider reported.

        Out-of-range values are ignored (`checked_observation`), with one warning.
        """

    @abc.abstractmethod
    async def levels(self, limit: RateLimit) -> dict[str, float]:
        """The key's current levels: requests, tokens, leases, waiting (live tickets),
        blocked_for (seconds)."""

    def set_fail_mode(self, mode: str) -> None:
        """Name the fail mode its users apply when the store is unreachable, for the store's
        outage log lines (`logs_outages`); nothing for stores that never fail."""
        return

    async def aclose(self) -> None:
        """Release connections (nothing for the memory store)."""
        return


# -- budgets -----------------------------------------------------------------------------------


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """A spending limit on one scope.

    Attributes:
        scope: ``"global"``, ``"provider:<name>"``, ``"model:<provider>:<model>"`` or
            ``"tag:<name>=<value>"``.
        limit: dollars allowed per period.
        period: the rolling window in seconds (``calendar == "rolling"``).
        calendar: ``"rolling"``, or a UTC calendar ``"day"``, ``"week"`` (ISO, from Monday)
            or ``"month"``.
    """

    scope: str
    limit: Decimal
    period: float = 86_400.0
    calendar: Calendar = "rolling"


class BudgetCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of `BudgetStore.reserve`: admitted, or which budget refused and why."""

    ok: bool
    scope: str | None = None
    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    limit: Decimal | None = None


class BudgetLevel(msgspec.Struct, frozen=True, kw_only=True):
    """A budget's spend in its current period (after a settle)."""

    scope: str
    spent: Decimal
    limit: Decimal
    period_id: str

    @property
    def fraction(self) -> float:
        return float(self.spent / self.limit) if self.limit > 0 else math.inf


class BudgetStore(abc.ABC):
    """Spend per scope and period, with reservations, shared through the same store."""

    logs_outages: bool = False
    """True when the store logs its own outages (once each, with the fail mode in force):
    its users then only count the `StoreUnavailable` errors they see."""

    synchronous: bool = False
    """True when `reserve_nowait` and `settle_nowait` exist and do the same work as
    `reserve` and `settle` without awaiting (the memory store)."""

    def set_fail_mode(self, mode: str) -> None:
        """Name the fail mode its users apply when the store is unreachable, for the store's
        outage log lines (`logs_outages`); nothing for stores that never fail."""
        return

    def reserve_nowait(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        """`reserve` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    def settle_nowait(
        self, budgets: Sequence[Budget], *, reservation: str, actual: Decimal
    ) -> list[BudgetLevel]:
        """`settle` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    @abc.abstractmethod
    async def reserve(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        """Admit ``amount`` against every budget at once, or refuse without reserving.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def settle(
        self, budgets: Sequence[Budget], *, reservation: str, actual: Decimal
    ) -> list[BudgetLevel]:
        """Drop ``reservation`` and record ``actual`` spend now; return the new levels.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def levels(self, budgets: Sequence[Budget]) -> list[BudgetLevel]:
        """The current spend of each budget."""

    @abc.abstractmethod
    async def claim_alert(self, scope: str, threshold: float, period_id: str, ttl: float) -> bool:
        """True for exactly one caller per (scope, threshold, period): it fires the alert."""

    async def aclose(self) -> None:
        """Release connections (nothing for the memory store)."""
        return


def bucket_width(period: float) -> float:
    """Width of the time buckets a rolling window of ``period`` seconds is summed from.

    A hundredth of the window (at least one second), so the window's edge is accurate to 1%.
    """
    return max(1.0, period / 100.0)


def period_bounds(calendar: Calendar, now: float, period: float) -> tuple[float, float]:
    """The current window ``[start, end)`` as unix times."""
    if calendar == "rolling":
        return now - period, now
    when = datetime.fromtimestamp(now, UTC)
    if calendar == "day":
        start = when.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif calendar == "week":
        day = when.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


def period_id(calendar: Calendar, now: float, period: float) -> str:
    """A stable name of the current period (for alerts and report counters).

    Worked out once per period and kept (a settlement asks for it several times): a
    calendar period's name depends on the UTC day alone, a rolling window's on its index.
    """
    if calendar == "day" or calendar == "week" or calendar == "month":
        return _calendar_id(calendar, int(now // _DAY))
    return _rolling_id(period, int(now // period))


_DAY: Final = 86400.0


@functools.lru_cache(maxsize=64)
def _calendar_id(calendar: Calendar, day: int) -> str:
    when = datetime.fromtimestamp(day * _DAY, UTC)
    if calendar == "day":
        return when.strftime("%Y-%m-%d")
    if calendar == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    return when.strftime("%Y-%m")


@functools.lru_cache(maxsize=64)
def _rolling_id(period: float, index: int) -> str:
    # Named by its length and its index since the epoch, so an alert re-arms once per
    # window length.
    return f"rolling{period:g}s-{index}"
