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
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Final, Literal

import msgspec

__all__ = [
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
    "bucket_width",
    "from_nanos",
    "period_id",
    "period_bounds",
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
            for example more tokens than a bucket holds).
        key: the key that refused, when not granted.
        reason: "requests", "tokens", "concurrency" or "blocked" (a provider's retry-after).
    """

    granted: bool
    wait: float = 0.0
    key: str | None = None
    reason: str | None = None


class RateObservation(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider said about a key's limits (headers or a 429)."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None
    retry_after: float | None = None


class RateStore(abc.ABC):
    """Token buckets and concurrency leases, shared by everyone using the same store."""

    synchronous: bool = False
    """True when the ``*_nowait`` methods exist and do the same work without awaiting (the
    memory store): the governor then serves its whole queue in one scheduler pass."""

    def acquire_nowait(
        self, limits: Sequence[RateLimit], *, lease: str, tokens: int, ttl: float
    ) -> Grant:
        """`acquire` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    def settle_nowait(
        self, limits: Sequence[RateLimit], *, lease: str, reserved: int, used: int
    ) -> None:
        """`settle` without awaiting, for stores that are ``synchronous``."""
        raise NotImplementedError

    @abc.abstractmethod
    async def acquire(
        self, limits: Sequence[RateLimit], *, lease: str, tokens: int, ttl: float
    ) -> Grant:
        """Take one request, ``tokens`` tokens and a concurrency slot from every key, or nothing.

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
    async def renew(self, limits: Sequence[RateLimit], *, lease: str, ttl: float) -> None:
        """Extend a lease still in use (a long stream) by ``ttl`` from now."""

    @abc.abstractmethod
    async def observe(self, limit: RateLimit, observation: RateObservation) -> None:
        """Tighten ``limit.key`` by what the provider reported."""

    @abc.abstractmethod
    async def levels(self, limit: RateLimit) -> dict[str, float]:
        """The key's current levels: requests, tokens, leases, blocked_for (seconds)."""

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
    """A stable name of the current period (for alerts and report counters)."""
    when = datetime.fromtimestamp(now, UTC)
    if calendar == "day":
        return when.strftime("%Y-%m-%d")
    if calendar == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    if calendar == "month":
        return when.strftime("%Y-%m")
    # Rolling windows: name the window by its length and its index since the epoch, so an
    # alert re-arms once per window length.
    return f"rolling{period:g}s-{int(now // period)}"
