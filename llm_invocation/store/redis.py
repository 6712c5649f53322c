"""Redis stores: rate limits and budgets shared by every process using the same Redis.

`RedisRateStore` and `RedisBudgetStore` implement the interfaces of
`llm_invocation.store._base` with exactly the semantics of the in-memory stores
(`llm_invocation.store.memory`); one contract test suite runs against both. Every operation
is one atomic Lua script (EVALSHA, loaded again on NOSCRIPT), so an acquire over several
keys takes from all of them or from none, and a reservation is admitted against every
budget or none, however many processes race. The scripts read the time from Redis ``TIME``:
every process agrees on it, whatever its own clock says.

Use them through `open_redis_stores` (one connection pool for both)::

    async with open_redis_stores("redis://:secret@redis:6379/0", prefix="llm:") as (
        rate_store,
        budget_store,
    ):
        ...

or alone, each with its own pool: ``async with RedisRateStore(url) as store: ...``. Either
way the ``async with`` must be entered and left by the same task (coredis keeps a nursery).
Connecting is lazy: an unreachable Redis fails the first operation, not the ``async with``.

Errors. Every coredis, anyio or socket error, and an operation that takes longer than
``timeout`` (default 1 s), comes out as `StoreUnavailable`, with the lower-layer error as its
``__cause__``; the caller applies its fail mode. Neither messages nor reprs contain the
URL's password. Operations after `aclose` (or outside the ``async with``) raise
`StoreUnavailable` too. Nothing is retried but a script's load on NOSCRIPT: a script that
timed out or lost its connection may have run. So the first operation on a pooled
connection that Redis dropped without the pool noticing yet (a server restart) fails; the
next one connects again. An outage is logged by the connection the stores share: one ERROR
when it starts, one INFO when Redis answers again, both naming the fail mode
(``fail_mode``, or `RedisRateStore.set_fail_mode`); callers only count their errors.

Waiting. The line of waiters is kept in Redis, so it is one for every process: a refused
request that will wait registers a ticket (`Ticket`) on the keys where it does not fit,
and older tickets have a prior claim on what is freed (see `RateStore.acquire`). A script
that frees capacity on a key somebody waits for - a settle, a waiter leaving, a waiter
giving up a claim it no longer needs - publishes a notice on the channel ``P released``
naming the stores whose tickets are next in line (as many as slots were freed, everyone
for a bucket); `RedisRateStore.watch` keeps one subscription per store and passes on the
notices meant for it. A lost notice (a broken subscription) costs the waiter a poll.

Key layout. ``P`` is the prefix as a Redis Cluster hash tag: ``"llm:"`` gives ``"{llm:}"``,
so every key below hashes to the same slot and every script's keys are co-located (on a
cluster, one prefix lives on one node: shard by using several prefixes). The stores connect
to one Redis node (coredis ``Redis``); the layout is ready for ``RedisCluster``, which they
do not use yet. Each key carries an expiry, refreshed by the scripts that write it.

=========================================  =====  ==========================================
key                                        type   contents and expiry
=========================================  =====  ==========================================
``P rate:<key>``                           hash   the token buckets (capacity, level,
                                                  updated), ``blocked_until``, learned
                                                  limits and the tickets' serial of a rate
                                                  key; kept 24 h after the last use
                                                  (longer while blocked)
``P lease:<key>``                          zset   lease id -> expiry (unix seconds); until
                                                  the last lease expires
``P wait:<key>``                           hash   waiters' tickets: lease id -> "since
                                                  expires tokens serial owner"; until the
                                                  last ticket expires
``P budget:<calendar>:<period>:<scope>``   hash   spend in nano-dollars: a field per time
                                                  bucket index (rolling windows, buckets of
                                                  `bucket_width` seconds) or per period id
                                                  (calendar periods); a window plus a margin
``P reservations:<calendar>:...:<scope>``  zset   reservation id -> expiry; until the last
                                                  one expires
``P reserved:<calendar>:...:<scope>``      hash   ``r:<id>`` -> nano-dollars and ``total``;
                                                  same expiry as the zset
``P spend:<YYYY-MM-DD>``                   hash   scope -> nano-dollars settled that UTC
                                                  day, for `RedisBudgetStore.spend_report`;
                                                  90 days
``P alert:<scope>:<threshold>:<period>``   str    an alert claimed (SET NX PX); its TTL
=========================================  =====  ==========================================

Scripts and their keys: ``acquire``, ``settle`` and ``leave`` take the ``rate``, ``lease``
and ``wait`` keys of every limit; ``renew`` the ``lease`` keys; ``observe`` the ``rate``
and ``lease`` keys of one limit, ``levels`` its three keys; ``reserve``, ``settle`` and
``levels`` of budgets take the ``budget``, ``reservations`` and ``reserved`` keys of every
budget. Budget ``settle`` also increments the ``spend:<day>`` hash, whose name it computes
from ``TIME`` (undeclared, but in the same slot thanks to the hash tag). Expired leases and
reservations are pruned by the scripts that read them, expired tickets by the scripts that
read the ``wait`` hash; a reservation's amount is subtracted from the ``total`` when it is
pruned.

Differences from the memory stores, none of which shows when the stores are used as the
governor and the accountant use them: time is the Redis server's wall clock (the memory
rate store uses `trio.current_time`); learned limits are forgotten after 24 h without use;
a settle drops its reservation from the budgets it is given (the memory store from those it
was reserved against: pass the same budgets); a budget listed twice in one reserve is
reserved twice by the memory store and once here; `BudgetStore.claim_alert` with a
TTL below a millisecond holds for a millisecond; budget limits above about 9 million
dollars (2**53 nano-dollars) lose precision.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Final, final

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
from ._redis_conn import Connection, RedisUser

__all__ = ["RedisBudgetStore", "RedisRateStore", "open_redis_stores"]

log = logging.getLogger("llm_invocation.store")

RATE_STATE_TTL: Final = 86_400.0
"""Seconds a rate key's buckets and learned limits are kept after their last use."""

SPEND_REPORT_TTL: Final = 90 * 86_400.0
"""Seconds a day's spend report is kept."""

_CALENDAR_KEEP: Final = {"day": 2 * 86_400.0, "week": 8 * 86_400.0, "month": 32 * 86_400.0}


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _RedisStore(RedisUser):
    """What both stores share besides the connection: running the Lua scripts."""

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        self._check_open()
        return await self._conn.script(name, keys, args)


@final
class RedisRateStore(_RedisStore, RateStore):
    """Token buckets and concurrency leases in Redis, shared by every process using it.

    Waiters' tickets live in Redis too, so the line of waiters is one for every process. A
    script that frees capacity on a key that somebody waits for (a settle, a waiter leaving
    or giving up its claim) publishes a notice on the prefix's channel naming the stores
    whose waiters are next in line; `watch` passes on those meant for this store.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
            ``unix://``. The password never appears in reprs or error messages.
        prefix: the start of every key (as a Redis Cluster hash tag, see the module).
        timeout: seconds an operation may take before it raises `StoreUnavailable`.
        fail_mode: what the users do while Redis is unreachable, for the outage log lines.

    Raises:
        ValueError: the URL is not a Redis URL, the prefix is empty or the timeout is not
            positive.
    """

    logs_outages = True

    _origin: str
    _warned: bool

    def _setup(self, connection: Connection, *, owns: bool) -> None:
        super()._setup(connection, owns=owns)
        self._origin = secrets.token_hex(8)  # tells our own notices from the others'
        self._warned = False

    @property
    def channel(self) -> str:
        """The pub/sub channel of this prefix's release notices."""
        return f"{self._conn.base}released"

    def _keys(self, limit: RateLimit) -> list[str]:
        base = self._conn.base
        return [f"{base}rate:{limit.key}", f"{base}lease:{limit.key}", f"{base}wait:{limit.key}"]

    @staticmethod
    def _limit_args(limit: RateLimit) -> list[str]:
        concurrency = "" if limit.concurrency is None else str(int(limit.concurrency))
        return [
            _number(limit.requests_per_minute),
            _number(limit.tokens_per_minute),
            concurrency,
            limit.key,
        ]

    def _prepare(self, limits: Sequence[RateLimit]) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        args: list[str] = []
        for limit in limits:
            keys += self._keys(limit)
            args += self._limit_args(limit)
        return keys, args

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

        Older waiters' tickets come first; with a ``ticket`` a refusal registers it (see
        `RateStore.acquire`).

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if not limits:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return Grant(granted=True)
        keys, per_limit = self._prepare(limits)
        head = [
            lease,
            str(int(tokens)),
            _number(ttl),
            _number(RATE_STATE_TTL),
            "1" if ticket is not None else "",
            _number(ticket.since) if ticket is not None else "",
            _number(ticket.ttl) if ticket is not None else "",
            self.channel,
            self._origin,
        ]
        reply = await self._script("acquire", keys, head + per_limit)
        if int(reply[0]) == 1:
            return Grant(granted=True, now=float(reply[1]))
        return Grant(
            granted=False,
            wait=float(reply[1]),
            key=limits[int(reply[2]) - 1].key,
            reason=_text(reply[3]),
            now=float(reply[4]),
        )

    async def settle(
        self, limits: Sequence[RateLimit], *, lease: str, reserved: int, used: int
    ) -> None:
        """Release ``lease`` and give back ``reserved - used`` tokens (or take the excess).

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if not limits:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return
        keys, per_limit = self._prepare(limits)
        head = [
            lease,
            str(int(reserved)),
            str(int(used)),
            _number(RATE_STATE_TTL),
            self.channel,
            self._origin,
        ]
        await self._script("settle_rate", keys, head + per_limit)

    async def leave(self, limits: Sequence[RateLimit], *, lease: str) -> None:
        """Drop the ticket ``lease`` (its waiter gave up); nothing if there is none.

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if not limits:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return
        keys: list[str] = []
        args = [lease, self.channel, self._origin]
        for limit in limits:
            keys += self._keys(limit)
            args += ["" if limit.concurrency is None else str(int(limit.concurrency)), limit.key]
        await self._script("leave", keys, args)

    async def watch(self, on_release: Callable[[frozenset[str]], None]) -> None:
        """Pass on the release notices meant for this store, until cancelled.

        Never raises but `trio.Cancelled` (see `Connection.listen`).
        """

        def notice(data: bytes) -> None:
            _, *lines = data.decode(errors="replace").split("\n")
            keys = [
                name
                for name, _, owners in (line.partition("\t") for line in lines)
                if self._origin in owners.split(" ")
            ]
            if keys:
                on_release(frozenset(keys))

        await self._conn.listen(self.channel, notice)

    async def renew(self, limits: Sequence[RateLimit], *, lease: str, ttl: float) -> None:
        """Extend a lease still in use (a long stream) by ``ttl`` from now.

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if not limits:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return
        keys = [self._keys(limit)[1] for limit in limits]
        await self._script("renew", keys, [lease, _number(ttl)])

    async def observe(self, limit: RateLimit, observation: RateObservation) -> None:
        """Tighten ``limit.key`` by what the provider reported (out-of-range values are
        ignored, with one warning).

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        o, dropped = checked_observation(observation)
        if dropped and not self._warned:
            self._warned = True
            log.warning(
                "ignored out-of-range rate-limit values for %s: %s (reported once)",
                limit.key,
                ", ".join(f"{name}={getattr(observation, name)!r:.40}" for name in dropped),
            )
        # The memory store's truthiness tests, decided here: "" means "does not apply".
        block = o.requests_reset if o.requests_remaining == 0 and o.requests_reset else None
        args = [
            _number(limit.requests_per_minute),
            _number(limit.tokens_per_minute),
            _number(RATE_STATE_TTL),
            _number(o.requests_limit or None),
            _number(o.requests_remaining),
            _number(o.tokens_limit or None),
            _number(o.tokens_remaining),
            _number(block),
            _number(o.retry_after or None),
        ]
        await self._script("observe", self._keys(limit)[:2], args)

    async def levels(self, limit: RateLimit) -> dict[str, float]:
        """The key's current levels: requests, tokens, leases, waiting, blocked_for (seconds).

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        args = [
            _number(limit.requests_per_minute),
            _number(limit.tokens_per_minute),
            _number(RATE_STATE_TTL),
        ]
        reply = await self._script("rate_levels", self._keys(limit), args)
        return {
            "requests": float(reply[0]),
            "tokens": float(reply[1]),
            "leases": float(reply[2]),
            "waiting": float(reply[4]),
            "blocked_for": float(reply[3]),
        }


@final
class RedisBudgetStore(_RedisStore, BudgetStore):
    """Spend per scope and period, with reservations, in Redis.

    Besides the `BudgetStore` interface it keeps a spend report per UTC day across every
    process: see `spend_report`.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
            ``unix://``. The password never appears in reprs or error messages.
        prefix: the start of every key (as a Redis Cluster hash tag, see the module).
        timeout: seconds an operation may take before it raises `StoreUnavailable`.

    Raises:
        ValueError: the URL is not a Redis URL, the prefix is empty or the timeout is not
            positive.
    """

    logs_outages = True

    def _budget(self, budget: Budget) -> tuple[list[str], list[str]]:
        """The three keys and five arguments of one budget, as the scripts take them."""
        period = float(budget.period)
        state = f"{budget.calendar}:{period!r}:{budget.scope}"
        base = self._conn.base
        keys = [f"{base}budget:{state}", f"{base}reservations:{state}", f"{base}reserved:{state}"]
        width = bucket_width(period)
        if budget.calendar == "rolling":
            keep = period + 2 * width + 60.0
        else:
            keep = _CALENDAR_KEEP[budget.calendar]
        args = [
            budget.calendar,
            repr(period),
            repr(width),
            str(to_nanos(budget.limit)),
            repr(keep),
        ]
        return keys, args

    def _prepare(self, budgets: Sequence[Budget]) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        args: list[str] = []
        for budget in budgets:
            budget_keys, budget_args = self._budget(budget)
            keys += budget_keys
            args += budget_args
        return keys, args

    async def reserve(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        """Admit ``amount`` against every budget at once, or refuse without reserving.

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if not budgets:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return BudgetCheck(ok=True)
        keys, args = self._prepare(budgets)
        head = [reservation, str(to_nanos(amount, up=True)), _number(ttl)]
        reply = await self._script("reserve", keys, head + args)
        if int(reply[0]) == 1:
            return BudgetCheck(ok=True)
        budget = budgets[int(reply[1]) - 1]
        return BudgetCheck(
            ok=False,
            scope=budget.scope,
            spent=from_nanos(int(reply[2])),
            reserved=from_nanos(int(reply[3])),
            limit=budget.limit,
        )

    async def settle(
        self, budgets: Sequence[Budget], *, reservation: str, actual: Decimal
    ) -> list[BudgetLevel]:
        """Drop ``reservation`` and record ``actual`` spend now; return the new levels.

        The spend is also added to the day's spend report of each distinct scope.

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if not budgets:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return []
        keys, args = self._prepare(budgets)
        head = [
            reservation,
            str(to_nanos(actual)),
            f"{self._conn.base}spend:",
            _number(SPEND_REPORT_TTL),
        ]
        scopes = list(dict.fromkeys(budget.scope for budget in budgets))
        reply = await self._script("settle_budget", keys, head + args + scopes)
        return self._levels(budgets, reply)

    async def levels(self, budgets: Sequence[Budget]) -> list[BudgetLevel]:
        """The current spend of each budget.

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if not budgets:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return []
        keys, args = self._prepare(budgets)
        reply = await self._script("budget_levels", keys, args)
        return self._levels(budgets, reply)

    @staticmethod
    def _levels(budgets: Sequence[Budget], reply: Any) -> list[BudgetLevel]:
        now = float(reply[0])
        return [
            BudgetLevel(
                scope=budget.scope,
                spent=from_nanos(int(spent)),
                limit=budget.limit,
                period_id=period_id(budget.calendar, now, budget.period),
            )
            for budget, spent in zip(budgets, reply[1:], strict=True)
        ]

    async def claim_alert(self, scope: str, threshold: float, period_id: str, ttl: float) -> bool:
        """True for exactly one caller per (scope, threshold, period): it fires the alert.

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        self._check_open()
        from coredis.tokens import PureToken

        key = f"{self._conn.base}alert:{scope}:{float(threshold)!r}:{period_id}"
        px = self._conn.ms(ttl)
        return bool(
            await self._conn.run(
                "claim_alert",
                lambda client: client.set(key, b"1", condition=PureToken.NX, px=px),
            )
        )

    async def spend_report(self, day: str | None = None) -> dict[str, Decimal]:
        """Dollars settled per scope on a UTC day, by every process sharing this Redis.

        Only the Redis store keeps this report (the memory store's spend is the ledger's
        business). Each settle adds its actual cost to the day it happened (Redis time) for
        each distinct scope of its budgets; reports are kept 90 days.

        Args:
            day: ``"YYYY-MM-DD"``; None for today (UTC, by the Redis server's clock).

        Raises:
            ValueError: ``day`` is not an ISO date.
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        if day is not None:
            day = _dt.date.fromisoformat(day).isoformat()
        reply = await self._script("spend_report", [f"{self._conn.base}spend:"], [day or ""])
        flat: list[Any] = list(reply[1])  # HGETALL inside Lua: a flat field, value list
        return {
            _text(flat[i]): from_nanos(int(flat[i + 1]))
            for i in range(0, len(flat), 2)
            if int(flat[i + 1]) != 0
        }


@asynccontextmanager
async def open_redis_stores(
    url: str, *, prefix: str = "llm:", timeout: float = 1.0, fail_mode: str | None = None
) -> AsyncGenerator[tuple[RedisRateStore, RedisBudgetStore]]:
    """A rate store and a budget store on one Redis connection pool, for the block.

    Connecting is lazy: an unreachable Redis makes the first operation raise
    `StoreUnavailable`, not this. An exception from the block comes out as itself.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
            ``unix://``. The password never appears in reprs or error messages.
        prefix: the start of every key (as a Redis Cluster hash tag, see the module).
        timeout: seconds an operation may take before it raises `StoreUnavailable`.
        fail_mode: what the stores' users do while Redis is unreachable (``"closed"`` or
            ``"open"``: the configuration's ``store_fail_mode``), named in the one ERROR
            logged per outage and the one INFO when Redis is back.

    Raises:
        ValueError: the URL is not a Redis URL, the prefix is empty or the timeout is not
            positive.
    """
    connection = Connection(url, prefix=prefix, timeout=timeout, fail_mode=fail_mode)
    rate = RedisRateStore._on(connection)  # pyright: ignore[reportPrivateUsage]
    budget = RedisBudgetStore._on(connection)  # pyright: ignore[reportPrivateUsage]
    try:
        async with connection.open():
            yield rate, budget
    finally:
        rate._close()  # pyright: ignore[reportPrivateUsage]
        budget._close()  # pyright: ignore[reportPrivateUsage]
