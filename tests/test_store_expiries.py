"""The memory stores find expired reservations and leases in a heap (`_Expiries`) instead of
scanning every one held: proven equal to that scan for generated sequences of holds,
renewals, give-backs and the clock moving on."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from llm_invocation.store.memory import _Expiries  # pyright: ignore[reportPrivateUsage]

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
