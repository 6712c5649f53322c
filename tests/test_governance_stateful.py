"""Hypothesis state machines: the memory stores against simple reference models.

The rate store is driven with random acquires, settles, observations and clock steps on a
manual clock, and with waiters that join the line (a ticket), ask again or leave. Two plain
reference buckets, advanced by hand, and a plain list of the waiters in line must make the
same grant decision for every acquire: a request fits when the buckets and the concurrency
cover it plus what every older waiter in line claims (one request, its tokens, one slot). No
window of L seconds admits more than ``capacity + rate * L`` requests; concurrency never
exceeds its limit; and a refusal's ``wait`` is honest when nobody waits in line: after
waiting exactly that long, with nothing else happening, the same request is admitted.

The budget store is checked against a plain list of (time, amount) spends: spent plus
reserved never exceeds the limit, and the reported spend of a rolling window equals the
reference sum to within one bucket's width.
"""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from typing import Any

import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llm_invocation.store._base import (
    Budget,
    Grant,
    RateLimit,
    RateObservation,
    Ticket,
    bucket_width,
)
from llm_invocation.store.memory import MemoryBudgetStore, MemoryRateStore

RPM = 30.0
TPM = 3000.0
CONCURRENCY = 4
LIMIT = RateLimit(key="k", requests_per_minute=RPM, tokens_per_minute=TPM, concurrency=CONCURRENCY)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=200, stateful_step_count=60, deadline=None)
class RateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = MemoryRateStore(clock=self.clock)
        self.next_lease = 0
        self.active: dict[str, int] = {}  # lease -> tokens reserved
        self.grants: list[tuple[float, int]] = []  # (time, tokens charged after settling)
        self.charge: dict[str, int] = {}  # lease -> index in grants
        self.blocked_until = -math.inf
        self.line: list[tuple[str, int, float]] = []  # waiters with a ticket, oldest first
        # The reference: two plain token buckets, advanced by hand.
        self.ref_requests = RPM
        self.ref_tokens = TPM
        self.ref_time = 0.0

    def _advance_reference(self) -> None:
        elapsed = self.clock.now - self.ref_time
        self.ref_time = self.clock.now
        self.ref_requests = min(RPM, self.ref_requests + elapsed * RPM / 60)
        self.ref_tokens = min(TPM, self.ref_tokens + elapsed * TPM / 60)

    def _fits(self, tokens: int, older: list[tuple[str, int, float]]) -> tuple[bool, bool]:
        """(the reference's decision, whether it is too close to call) for a request behind
        ``older`` waiters."""
        requests = self.ref_requests - len(older)
        spare = self.ref_tokens - sum(t for _, t, _ in older)
        expected = (
            requests >= 1
            and spare >= tokens
            and len(self.active) + len(older) < CONCURRENCY
            and self.clock.now >= self.blocked_until
        )
        borderline = abs(spare - tokens) < 1e-6 or abs(requests - 1) < 1e-9
        return expected, borderline

    def _granted(self, lease: str, tokens: int) -> None:
        self.ref_requests -= 1
        self.ref_tokens -= tokens
        assert self.clock.now >= self.blocked_until
        self.active[lease] = tokens
        self.charge[lease] = len(self.grants)
        self.grants.append((self.clock.now, tokens))

    def _new_lease(self) -> str:
        lease = f"l{self.next_lease}"
        self.next_lease += 1
        return lease

    @rule(tokens=st.sampled_from([100, 500, 1000, 1500]) | st.integers(1, 1500))
    def acquire(self, tokens: int) -> None:
        lease = self._new_lease()
        self._advance_reference()
        grant = self.store.acquire_nowait([LIMIT], lease=lease, tokens=tokens, ttl=1e9)
        expected, borderline = self._fits(tokens, self.line)
        if not borderline:
            assert grant.granted == expected, (grant, self.ref_requests, self.ref_tokens)
        if grant.granted:
            self._granted(lease, tokens)
            return
        self._check_refusal(grant, tokens)

    def _check_refusal(self, grant: Grant, tokens: int) -> None:
        if grant.reason == "concurrency":
            assert len(self.active) + len(self.line) >= CONCURRENCY
            assert grant.wait == 0  # as soon as a lease is released
            return
        assert grant.wait > 0
        if grant.wait == math.inf:
            assert tokens > TPM
            return
        if self.line:
            return  # the wait counts older claims, which may be served earlier or leave
        # An honest wait: on a copy of the state, waiting exactly that long admits it.
        probe = MemoryRateStore(clock=self.clock)
        probe._keys = _clone(self.store)  # pyright: ignore[reportPrivateUsage]
        saved = self.clock.now
        self.clock.now += grant.wait + 1e-9
        later = probe.acquire_nowait([LIMIT], lease="probe", tokens=tokens, ttl=1e9)
        self.clock.now = saved
        assert later.granted or later.reason == "concurrency", (grant, later)

    @rule(tokens=st.sampled_from([100, 500, 1000]) | st.integers(1, 1500))
    def join_the_line(self, tokens: int) -> None:
        lease = self._new_lease()
        self._advance_reference()
        ticket = Ticket(ttl=1e9)
        grant = self.store.acquire_nowait(
            [LIMIT], lease=lease, tokens=tokens, ttl=1e9, ticket=ticket
        )
        expected, borderline = self._fits(tokens, self.line)
        if not borderline:
            assert grant.granted == expected, (grant, self.line)
        if grant.granted:
            self._granted(lease, tokens)
        elif grant.wait < math.inf:
            self.line.append((lease, tokens, grant.now))

    @precondition(lambda self: bool(self.line))
    @rule(data=st.data())
    def ask_again(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.line) - 1))
        lease, tokens, since = self.line[index]
        self._advance_reference()
        ticket = Ticket(since=since, ttl=1e9)
        grant = self.store.acquire_nowait(
            [LIMIT], lease=lease, tokens=tokens, ttl=1e9, ticket=ticket
        )
        expected, borderline = self._fits(tokens, self.line[:index])
        if not borderline:
            assert grant.granted == expected, (index, grant, self.line)
        if grant.granted:
            del self.line[index]
            self._granted(lease, tokens)

    @precondition(lambda self: bool(self.line))
    @rule(data=st.data())
    def leave_the_line(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.line) - 1))
        lease, _, _ = self.line.pop(index)
        self.store.leave_nowait([LIMIT], lease=lease)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data(), ratio=st.floats(0, 1))
    def settle(self, data: st.DataObject, ratio: float) -> None:
        lease = data.draw(st.sampled_from(sorted(self.active)))
        reserved = self.active.pop(lease)
        used = int(reserved * ratio)
        self._advance_reference()
        self.ref_tokens = min(TPM, self.ref_tokens + reserved - used)
        self.store.settle_nowait([LIMIT], lease=lease, reserved=reserved, used=used)
        index = self.charge.pop(lease)
        self.grants[index] = (self.grants[index][0], used)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0]) | st.floats(0, 30))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(retry_after=st.floats(0.5, 10))
    def provider_says_wait(self, retry_after: float) -> None:
        self.store.observe_nowait(LIMIT, RateObservation(retry_after=retry_after))
        self.blocked_until = max(self.blocked_until, self.clock.now + retry_after)

    @invariant()
    def concurrency_never_exceeds_the_limit(self) -> None:
        assert len(self.active) <= CONCURRENCY

    @invariant()
    def the_store_holds_exactly_the_tickets_in_line(self) -> None:
        state = self.store._keys.get("k")  # pyright: ignore[reportPrivateUsage]
        tickets = set(state.tickets) if state is not None else set()
        assert tickets == {lease for lease, _, _ in self.line}

    @invariant()
    def no_window_admits_more_requests_than_the_bucket_allows(self) -> None:
        # Requests are never refunded, so the bucket's envelope holds for every window.
        # (Tokens are: a refund returns capacity, so their check is the exact comparison
        # with the reference buckets in `acquire`.)
        times = [t for t, _ in self.grants]
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= RPM + RPM * (times[j] - start) / 60 + 1e-6


def _clone(store: MemoryRateStore) -> Any:
    return copy.deepcopy(store._keys)  # pyright: ignore[reportPrivateUsage]


@settings(max_examples=60, stateful_step_count=50, deadline=None)
class BudgetMachine(RuleBasedStateMachine):
    PERIOD = 100.0
    BUDGET = Budget(scope="global", limit=Decimal("1.00"), period=PERIOD)

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.clock.now = 1_000_000.0
        self.store = MemoryBudgetStore(clock=self.clock)
        self.next = 0
        self.reserved: dict[str, Decimal] = {}
        self.spends: list[tuple[float, Decimal]] = []

    def _spent(self) -> Decimal:
        start = self.clock.now - self.PERIOD
        return sum((a for t, a in self.spends if t > start), Decimal(0))

    @rule(cents=st.integers(1, 60))
    def reserve(self, cents: int) -> None:
        amount = Decimal(cents) / 100
        rid = f"r{self.next}"
        self.next += 1
        check = trio.run(self._reserve, rid, amount)  # the memory store only checkpoints
        fits = self._spent() + sum(self.reserved.values(), Decimal(0)) + amount <= Decimal(1)
        width = Decimal(bucket_width(self.PERIOD) / self.PERIOD)  # the window's edge error
        if check.ok:
            self.reserved[rid] = amount
            assert fits or self._near_edge(width)
        else:
            assert not fits or self._near_edge(width)

    async def _reserve(self, rid: str, amount: Decimal) -> Any:
        return await self.store.reserve([self.BUDGET], reservation=rid, amount=amount, ttl=1e9)

    def _near_edge(self, width: Decimal) -> bool:
        edge = self.clock.now - self.PERIOD
        return any(abs(t - edge) <= float(width) * self.PERIOD for t, _ in self.spends)

    @precondition(lambda self: bool(self.reserved))
    @rule(data=st.data(), ratio=st.integers(0, 100))
    def settle(self, data: st.DataObject, ratio: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.reserved)))
        amount = self.reserved.pop(rid) * ratio / 100
        trio.run(self._settle, rid, amount)
        self.spends.append((self.clock.now, amount))

    async def _settle(self, rid: str, amount: Decimal) -> None:
        await self.store.settle([self.BUDGET], reservation=rid, actual=amount)

    @rule(seconds=st.floats(0, 60))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def spent_plus_reserved_never_exceeds_the_limit(self) -> None:
        levels = trio.run(self.store.levels, [self.BUDGET])
        assert levels[0].spent + self.store.reserved(self.BUDGET) <= Decimal(1)

    @invariant()
    def the_window_sum_matches_the_reference(self) -> None:
        levels = trio.run(self.store.levels, [self.BUDGET])
        width = bucket_width(self.PERIOD)
        low = sum(
            (a for t, a in self.spends if t > self.clock.now - self.PERIOD + width), Decimal(0)
        )
        high = sum(
            (a for t, a in self.spends if t > self.clock.now - self.PERIOD - width), Decimal(0)
        )
        assert low <= levels[0].spent <= high


TestRateMachine = RateMachine.TestCase
TestBudgetMachine = BudgetMachine.TestCase
