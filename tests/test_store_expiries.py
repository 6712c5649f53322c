"""The memory stores find expired reservations and leases in a heap (`_Expiries`) instead of
scanning every one held, and a waiter's place in a line of tickets by bisection (`_Line`)
instead of comparing it with every ticket: both proven equal to those scans for generated
sequences of holds, renewals, give-backs, questions and the clock moving on."""

from __future__ import annotations

import math

import hypothesis.strategies as st
from hypothesis import given, settings

from llm_invocation.store._base import RateLimit, Ticket
from llm_invocation.store.memory import (
    MemoryRateStore,
    _Expiries,  # pyright: ignore[reportPrivateUsage]
    _Line,  # pyright: ignore[reportPrivateUsage]
    _Ticket,  # pyright: ignore[reportPrivateUsage]
)

_IDS = st.sampled_from([f"id{n}" for n in range(6)])
_STEP = st.one_of(
    st.tuples(st.just("hold"), _IDS, st.integers(0, 20)),  # held (or renewed) for so long
    st.tuples(st.just("give back"), _IDS, st.just(0)),
    st.tuples(st.just("time"), st.just(""), st.integers(0, 10)),  # the clock moves on
)


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(_STEP, max_size=80))
def test_the_expired_are_those_a_scan_of_every_id_finds(steps: list[tuple[str, str, int]]) -> None:
    expiries = _Expiries()
    held: dict[str, float] = {}  # what the store holds, and until when
    now = 0.0
    for action, key, amount in steps:
        if action == "hold":
            held[key] = now + amount
            if expiries.add(key, now + amount, len(held)):
                expiries.rebuild(held.items())
        elif action == "give back":
            held.pop(key, None)
        else:
            now += amount
            scanned = sorted(key for key, until in held.items() if until <= now)
            found = sorted(expiries.due(now, held.get))
            assert found == scanned
            for key in found:
                del held[key]


def test_ids_given_back_do_not_pile_up() -> None:
    expiries = _Expiries()
    held: dict[str, float] = {}
    for number in range(10_000):  # held for long, given back at once: a busy fan-out
        key = f"r{number}"
        held[key] = 600.0
        if expiries.add(key, 600.0, len(held)):
            expiries.rebuild(held.items())
        del held[key]
    assert len(expiries._heap) <= 2 * len(held) + 65  # pyright: ignore[reportPrivateUsage]


_SINCE = st.integers(0, 4).map(float)  # few values: many tickets of the same since
_TICKET_STEP = st.one_of(
    # registered (or renewed) waiting since so long, for so many tokens, expiring so late
    st.tuples(st.just("put"), _IDS, _SINCE, st.integers(0, 50), st.integers(0, 20)),
    st.tuples(st.just("pop"), _IDS, st.just(0.0), st.just(0), st.just(0)),
    st.tuples(st.just("claims"), _IDS, _SINCE, st.just(0), st.just(0)),
    st.tuples(st.just("time"), st.just(""), st.just(0.0), st.just(0), st.integers(0, 10)),
)


def scanned_claims(tickets: dict[str, _Ticket], lease: str, since: float) -> tuple[int, int]:
    """The tickets older than ``lease`` waiting since ``since``, by comparing with each."""
    own = tickets.get(lease)
    serial = own.serial if own is not None else math.inf
    count = tokens = 0
    for other, ticket in tickets.items():
        if other != lease and (
            ticket.since < since or (ticket.since == since and ticket.serial < serial)
        ):
            count += 1
            tokens += ticket.tokens
    return count, tokens


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(_TICKET_STEP, max_size=80))
def test_a_place_in_line_is_what_comparing_with_every_ticket_finds(
    steps: list[tuple[str, str, float, int, int]],
) -> None:
    line = _Line()
    tickets: dict[str, _Ticket] = {}  # the scan's model of the same line
    now = 0.0
    serial = 0
    for action, lease, since, tokens, amount in steps:
        if action == "put":
            known = tickets.get(lease)
            if known is None:
                serial += 1
            ticket = _Ticket(since, now + amount, tokens, known.serial if known else serial)
            tickets[lease] = ticket
            line.put(lease, ticket)
        elif action == "pop":
            assert line.pop(lease) is tickets.pop(lease, None)
        elif action == "claims":
            assert line.claims(lease, since) == scanned_claims(tickets, lease, since)
        else:
            now += amount
            line.expire(now)
            tickets = {key: held for key, held in tickets.items() if held.expires > now}
        assert dict(line.by_lease) == tickets
        assert len(line) == len(tickets)
        for other in tickets:  # every ticket's own place, and a newcomer's
            assert line.claims(other, now) == scanned_claims(tickets, other, now)
        assert line.claims("newcomer", now) == scanned_claims(tickets, "newcomer", now)


def test_each_place_in_a_long_line_is_counted() -> None:
    # 20,000 waiters, three of each since: the tokens ahead come from either end.
    line = _Line()
    for number in range(20_000):
        line.put(f"w{number}", _Ticket(float(number // 3), 600.0, 1, number))
    for number in range(0, 20_000, 7):
        ahead, tokens = line.claims(f"w{number}", float(number // 3))
        assert (ahead, tokens) == (number, number)
    for number in range(20_000):
        line.pop(f"w{number}")
    assert not line


def test_a_ticket_waiting_since_nan_or_later_waits_since_now() -> None:
    # Such a since has no place in an ordered line: it is taken as now, never as a value
    # that compares false with every other (the line's order would break).
    clock = [100.0]
    store = MemoryRateStore(clock=lambda: clock[0])
    limits = [RateLimit(key="k", concurrency=1)]
    assert store.acquire_nowait(limits, lease="held", tokens=1, ttl=60).granted
    for number, since in enumerate([50.0, math.nan, math.inf, 500.0, 60.0]):
        clock[0] += 1
        ticket = Ticket(since=since)
        grant = store.acquire_nowait(limits, lease=f"w{number}", tokens=1, ttl=60, ticket=ticket)
        assert not grant.granted
    line = store._keys["k"].tickets  # pyright: ignore[reportPrivateUsage]
    assert [line.by_lease[f"w{n}"].since for n in range(5)] == [50.0, 102.0, 103.0, 104.0, 60.0]
    assert [line.claims(f"w{n}", line.by_lease[f"w{n}"].since)[0] for n in range(5)] == [
        0,
        2,
        3,
        4,
        1,
    ]
