"""Settlement: never lost, visible at once, never waiting on the ledger or the store.

The caller prices what a call consumed and casts the settlement; the accountant applies
settlements in arrival order; a batching writer commits the ledger rows. These tests hold
that path to its promises: no success goes uncharged at high fan-out or behind a slow ledger,
a call is in every report as soon as it returned, a store that is down keeps the worst case
charged until the settlement can be applied, nothing an entry carries can crash the
accountant, and a killed process loses at most one batch of rows.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.actors.accountant import (
    Abandon,
    Accountant,
    AccountantMsg,
    AccountantStats,
    BudgetLevels,
    Flush,
    GetReport,
    Reservation,
    Reserve,
    Settle,
)
from llm_invocation.invocation import Governance
from llm_invocation.pricing import PriceBook
from llm_invocation.runtime import (
    Actor,
    ActorRef,
    ChildSpec,
    Context,
    Msg,
    SupervisorSpec,
    open_runtime,
)
from llm_invocation.store._base import (
    Budget,
    BudgetCheck,
    BudgetLevel,
    BudgetStore,
    StoreUnavailable,
)
from llm_invocation.store.ledger import SQLiteLedger, open_ledger
from llm_invocation.store.memory import MemoryBudgetStore
from llm_invocation.testing import Scenario, Scenarios, ScriptedUsage

from .store_worker import LONG_REDIS_TIMEOUT, redis_url_or_skip

REPO = Path(__file__).parents[1]
BUDGET = Budget(scope="global", limit=Decimal(1))
# The mock provider's price: $1 per million prompt tokens, $2 per million completion tokens.
CALL_COST = Decimal(5) / 1_000_000 + Decimal(2) * 20 / 1_000_000


def scripted() -> Scenarios:
    return Scenarios(
        Scenario(text="ok", usage=ScriptedUsage(prompt_tokens=5, completion_tokens=20))
    )


def ask(**metadata: str) -> llm.Request:
    return llm.Request(
        model="mock",
        messages=[llm.user("hello")],
        options=llm.ModelOptions(max_tokens=20),
        metadata=dict(metadata) or None,
    )


@asynccontextmanager
async def mock_client(**settings: Any) -> AsyncGenerator[llm.Client]:
    # Only the limits this test sets apply (Config.unlimited lifts the defaults).
    config = llm.Config.unlimited(**{"provider": "mock", "model": "mock", **settings})
    async with llm.open_client(config, scenarios=scripted()) as client:
        yield client


class SwitchableStore(BudgetStore):
    """A memory budget store that can be taken down, or held at a gate, for a while."""

    def __init__(self) -> None:
        self.inner = MemoryBudgetStore()
        self.down = False
        self.gate: trio.Event | None = None
        self.reserve_calls = 0

    async def _door(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.down:
            raise StoreUnavailable("the test took the store down")

    async def reserve(
        self, budgets: Sequence[Budget], *, reservation: str, amount: Decimal, ttl: float
    ) -> BudgetCheck:
        self.reserve_calls += 1
        await self._door()
        return await self.inner.reserve(budgets, reservation=reservation, amount=amount, ttl=ttl)

    async def settle(
        self, budgets: Sequence[Budget], *, reservation: str, actual: Decimal
    ) -> list[BudgetLevel]:
        await self._door()
        return await self.inner.settle(budgets, reservation=reservation, actual=actual)

    async def levels(self, budgets: Sequence[Budget]) -> list[BudgetLevel]:
        await self._door()
        return await self.inner.levels(budgets)

    async def claim_alert(self, scope: str, threshold: float, period_id: str, ttl: float) -> bool:
        await self._door()
        return await self.inner.claim_alert(scope, threshold, period_id, ttl)


@asynccontextmanager
async def running(
    store: BudgetStore, ledger: SQLiteLedger | None = None, **options: Any
) -> AsyncGenerator[ActorRef[AccountantMsg]]:
    """An accountant with one global budget of $1 over ``store`` (and ``ledger``)."""

    def make() -> Accountant:
        return Accountant(store, PriceBook(), ledger=ledger, budgets=[BUDGET], **options)

    spec = SupervisorSpec(children=[ChildSpec.actor("accountant", make)])
    async with open_runtime(spec) as runtime:
        yield runtime.ref("accountant", Accountant)


def reserve(rid: str, *, model: str = "mock") -> Reserve:
    # The mock's worst case for 1,000 prompt and 1,000 completion tokens: $0.003.
    return Reserve(
        provider="mock", model=model, prompt_tokens=1000, max_tokens=1000, reservation=rid
    )


def settle(reservation: Reservation, cost: str | None = "0.001", **usage: Any) -> Settle:
    counts = {"prompt_tokens": 10, "completion_tokens": 10, **usage}
    return Settle(
        reservation=reservation,
        usage=llm.Usage(cost=None if cost is None else Decimal(cost), **counts),
    )


# -- never lost, never waiting ----------------------------------------------------------------


async def test_a_call_returns_without_waiting_for_a_slow_ledger(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    real = SQLiteLedger.append_many

    async def slow(self: SQLiteLedger, entries: Sequence[Any]) -> int:
        await trio.sleep(30)  # a commit stuck behind a busy disk
        return await real(self, entries)

    monkeypatch.setattr(SQLiteLedger, "append_many", slow)
    async with mock_client(cost_control={"max_budget": "1"}) as client:
        started = trio.current_time()
        for _ in range(5):
            response = await client.invoke_sync(ask())
            assert response.usage is not None and response.usage.cost == CALL_COST
        returned = trio.current_time() - started
        report = await client.usage()
    assert returned < 1  # nothing waited for the 30 s commits
    assert report.total.calls == 5
    assert report.total.cost == 5 * CALL_COST


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_every_success_of_a_thousand_concurrent_calls_is_charged_and_recorded(
    store: str,
) -> None:
    if store == "redis":
        url = redis_url_or_skip()
        prefix = f"llmsettle{secrets.token_hex(4)}:"
        store = f"{url}{'&' if '?' in url else '?'}prefix={prefix}&timeout={LONG_REDIS_TIMEOUT}"
    outcomes: list[str] = []
    async with mock_client(store=store, cost_control={"max_budget": "0.02"}) as client:

        async def one() -> None:
            try:
                await client.invoke_sync(ask())
            except llm.CostExceeded as refusal:
                # The budget refuses; so may a store too slow to answer on a loaded machine.
                outcomes.append(refusal.details.get("reason", "budget"))
            else:
                outcomes.append("ok")

        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(one)
        (level,) = await client.budget_levels()
        report = await client.usage()
    ok = outcomes.count("ok")
    assert set(outcomes) <= {"ok", "budget", "store_unavailable"}
    assert outcomes.count("budget") > 0  # the budget was reached
    assert level.spent == ok * CALL_COST <= Decimal("0.02")
    assert report.total.calls == report.total.ok == ok


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_call_is_in_every_report_as_soon_as_it_returned(store: str) -> None:
    if store == "redis":
        url = redis_url_or_skip()
        prefix = f"llmryw{secrets.token_hex(4)}:"
        store = f"{url}{'&' if '?' in url else '?'}prefix={prefix}&timeout={LONG_REDIS_TIMEOUT}"
    async with mock_client(store=store, cost_control={"max_budget": "1"}) as client:
        for calls in range(1, 31):
            streamed = calls % 2 == 0
            if streamed:
                async with client.invoke(ask()) as stream:
                    await stream.aggregate()
            else:
                await client.invoke_sync(msgspec.structs.replace(ask(), stream=False))
            assert client.get_usage().cost == calls * CALL_COST
            assert (await client.usage()).total.calls == calls
            assert (await client.budget_levels())[0].spent == calls * CALL_COST


async def test_closing_the_client_records_every_settlement_already_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk and small batches: when the calls return, most settlements still wait in
    # the accountant's mailbox. (Real time: the file ledger writes in a worker thread.)
    from llm_invocation.store import _ledger_writer

    real_writer, real_append = _ledger_writer.open_ledger_writer, SQLiteLedger.append_many

    def small_batches(ledger: SQLiteLedger) -> Any:
        return real_writer(ledger, max_batch=5)

    async def slow(self: SQLiteLedger, entries: Sequence[Any]) -> int:
        await trio.sleep(0.01)
        return await real_append(self, entries)

    monkeypatch.setattr(_ledger_writer, "open_ledger_writer", small_batches)
    monkeypatch.setattr(SQLiteLedger, "append_many", slow)
    path = tmp_path / "usage.sqlite"
    async with mock_client(ledger_path=str(path)) as client, trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(client.invoke_sync, ask())
    async with open_ledger(path) as ledger:
        assert (await ledger.report(())).total.ok == 200


# -- the caller's side ------------------------------------------------------------------------


class Blocked(Actor[Msg]):
    """Takes one message, then blocks until ``opened`` is set; records what it handled."""

    def __init__(self, opened: trio.Event, seen: list[Msg]) -> None:
        self.opened = opened
        self.seen = seen

    async def handle(self, msg: Msg, ctx: Context) -> Any:
        await self.opened.wait()
        self.seen.append(msg)


@asynccontextmanager
async def full_mailbox(
    opened: trio.Event, seen: list[Msg]
) -> AsyncGenerator[tuple[Governance, ActorRef[Any]]]:
    """A governance whose accountant's mailbox (one slot) is full behind a blocked handler."""
    spec = SupervisorSpec(
        children=[ChildSpec.actor("stub", lambda: Blocked(opened, seen), mailbox=1)]
    )
    async with open_runtime(spec) as runtime:
        stub = runtime.ref("stub", Blocked)
        for _ in range(2):  # one in the handler, one in the mailbox
            await stub.send(Msg())
        await trio.testing.wait_all_tasks_blocked()
        yield Governance(stub, stub, {}, {}), stub


def admission() -> Any:
    from llm_invocation import tokens
    from llm_invocation.invocation._governance import Admission

    reservation = Reservation(
        id="r1", provider="mock", model="mock", worst_case=None, scopes=[], tags={}
    )
    estimate = tokens.TokenEstimate(
        prompt_tokens=5, max_completion_tokens=5, estimated=True, method="test"
    )
    return Admission("mock", "mock", estimate, reservation)


async def test_a_cancelled_caller_still_hands_its_settlement_to_a_full_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    opened, seen = trio.Event(), list[Msg]()
    async with full_mailbox(opened, seen) as (governance, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(set_after, opened, 1.0)
            with trio.CancelScope() as scope:
                scope.cancel()  # the caller is cancelled: the settlement still waits for room
                await governance.settle(admission(), llm.Usage(), status="cancelled")
        await trio.testing.wait_all_tasks_blocked()
    assert isinstance(seen[-1], Settle)
    assert seen[-1].status == "cancelled"
    assert governance.lost_casts == 0


async def set_after(event: trio.Event, seconds: float) -> None:
    await trio.sleep(seconds)
    event.set()


async def test_a_settlement_that_finds_no_room_is_given_up_once_and_logged_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    opened, seen = trio.Event(), list[Msg]()
    async with full_mailbox(opened, seen) as (governance, _):
        started = trio.current_time()
        for _ in range(2):
            await governance.settle(admission(), llm.Usage(), status="ok")
        waited = trio.current_time() - started
        opened.set()
    assert waited == pytest.approx(10)  # SETTLE_LIMIT, twice
    assert governance.lost_casts == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "keeps the worst case" in errors[0].getMessage()


# -- the accountant's side --------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(
    order=st.permutations(list(range(1, 13))),
    targets=st.lists(st.integers(min_value=0, max_value=12), max_size=8),
)
async def test_a_read_waits_for_exactly_the_settlements_numbered_up_to_its_own(
    order: list[int], targets: list[int]
) -> None:
    from llm_invocation.actors._budget_book import (
        _Progress,  # pyright: ignore[reportPrivateUsage]
    )

    progress = _Progress()
    for _ in range(12):
        progress.issue()
    released: set[int] = set()
    finished: set[int] = set()

    async def read(index: int, upto: int) -> None:
        await progress.wait(upto)
        released.add(index)

    async with trio.open_nursery() as nursery:
        for index, upto in enumerate(targets):
            nursery.start_soon(read, index, upto)
        for number in [None, *order]:
            if number is not None:
                progress.finish(number)
                finished.add(number)
            await trio.testing.wait_all_tasks_blocked()
            expected = {
                index
                for index, upto in enumerate(targets)
                if all(earlier in finished for earlier in range(1, upto + 1))
            }
            assert released == expected


async def test_a_settlement_the_store_cannot_take_keeps_the_worst_case_until_it_can() -> None:
    store = SwitchableStore()
    async with running(store) as accountant:
        reservation = await accountant.call(reserve("r1"))
        store.down = True
        await accountant.send(settle(reservation, cost="0.001"))
        await accountant.call(Flush())
        pending = (await accountant.call(AccountantStats())).pending
        held = store.inner.reserved(BUDGET)
        with pytest.raises(llm.CostExceeded) as info:
            await accountant.call(BudgetLevels())
        store.down = False
        (level,) = await accountant.call(BudgetLevels())
    assert pending == 1
    assert held == Decimal("0.003")  # the worst case stayed charged, never zero
    assert info.value.details["reason"] == "store_unavailable"
    assert level.spent == Decimal("0.001")
    assert store.inner.reserved(BUDGET) == 0


async def test_kept_settlements_are_applied_by_themselves_once_the_store_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SwitchableStore()
    async with running(store) as accountant:
        reservations = [await accountant.call(reserve(f"r{n}")) for n in range(3)]
        store.down = True
        for reservation in reservations:
            await accountant.send(settle(reservation, cost="0.001"))
        await trio.sleep(5)  # retried with backoff meanwhile, in vain
        store.down = False
        await trio.sleep(10)
        (level,) = await store.inner.levels([BUDGET])
        stats = await accountant.call(AccountantStats())
    assert level.spent == Decimal("0.003")
    assert store.inner.reserved(BUDGET) == 0
    assert (stats.pending, stats.dropped) == (0, 0)
    assert stats.store_errors >= 3


async def test_a_reservation_whose_caller_left_while_the_store_answered_is_given_back() -> None:
    store = SwitchableStore()
    store.gate = trio.Event()
    async with running(store) as accountant:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accountant.call, reserve("r1"))
            await trio.testing.wait_all_tasks_blocked()  # the store holds it at the gate
            nursery.cancel_scope.cancel()  # the caller leaves
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        await accountant.call(Flush())
        stats = await accountant.call(AccountantStats())
    assert store.reserve_calls == 1
    assert store.inner.reserved(BUDGET) == 0
    assert (stats.reserved, stats.released, stats.held) == (0, 1, 0)


async def test_abandoning_a_granted_reservation_gives_it_back() -> None:
    store = SwitchableStore()
    async with running(store) as accountant:
        await accountant.call(reserve("r1"))
        held = store.inner.reserved(BUDGET)
        await accountant.send(Abandon(reservation="r1", provider="mock", model="mock"))
        await accountant.call(Flush())
        stats = await accountant.call(AccountantStats())
    assert held == Decimal("0.003")
    assert store.inner.reserved(BUDGET) == 0
    assert (stats.released, stats.held) == (1, 0)


async def test_abandoning_an_unknown_reservation_changes_nothing() -> None:
    store = SwitchableStore()
    async with running(store) as accountant:
        kept = await accountant.call(reserve("kept"))
        await accountant.send(Abandon(reservation="never-made", provider="mock", model="mock"))
        await accountant.send(settle(kept, cost="0.002"))
        (level,) = await accountant.call(BudgetLevels())
    assert level.spent == Decimal("0.002")
    assert store.inner.reserved(BUDGET) == 0


async def test_an_unknown_cost_is_charged_at_its_worst_case_never_zero() -> None:
    store = SwitchableStore()
    reservation = Reservation(
        id="r1",
        provider="local",
        model="unpriced",
        worst_case=Decimal("0.003"),
        scopes=["global"],
        tags={},
    )
    async with running(store) as accountant:
        await accountant.send(settle(reservation, cost=None))
        (level,) = await accountant.call(BudgetLevels())
        stats = await accountant.call(AccountantStats())
    assert level.spent == Decimal("0.003")
    assert stats.unknown_cost == 1


async def test_impossible_counts_neither_crash_the_accountant_nor_cost_other_rows() -> None:
    from llm_invocation.store.ledger import MAX_STORED_COUNT

    counts: list[dict[str, int]] = [{} for _ in range(8)]
    counts[3] = {"prompt_tokens": 2**70}  # beyond any SQLite integer
    counts[5] = {"completion_tokens": -5}
    async with open_ledger(None) as ledger, running(MemoryBudgetStore(), ledger) as accountant:
        for number, extra in enumerate(counts):
            reservation = Reservation(
                id=f"r{number}", provider="mock", model="mock", worst_case=None, scopes=[], tags={}
            )
            await accountant.send(settle(reservation, **extra))
        report = await accountant.call(GetReport(group_by=[]))
        actor = accountant.statistics()
        clamped = ledger.statistics().clamped
    assert report.total.calls == 8
    assert report.total.prompt_tokens == 7 * 10 + MAX_STORED_COUNT
    assert report.total.completion_tokens == 7 * 10  # the negative count stored as 0
    assert clamped == 2
    assert (actor.crashes, actor.restarts) == (0, 0)


@pytest.mark.parametrize("cost", ["NaN", "-1", "Infinity"])
async def test_a_cost_that_cannot_be_true_is_priced_again(cost: str) -> None:
    reservation = Reservation(
        id="r1", provider="mock", model="mock", worst_case=None, scopes=["global"], tags={}
    )
    async with open_ledger(None) as ledger, running(MemoryBudgetStore(), ledger) as accountant:
        await accountant.send(settle(reservation, cost=cost))
        (level,) = await accountant.call(BudgetLevels())
        report = await accountant.call(GetReport(group_by=[]))
        actor = accountant.statistics()
    price = Decimal(10) / 1_000_000 + Decimal(20) / 1_000_000  # the mock's, for 10 + 10 tokens
    assert level.spent == report.total.cost == price
    assert (actor.crashes, actor.restarts) == (0, 0)


async def test_store_errors_are_counted_never_logged_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SwitchableStore()
    store.down = True
    async with running(store, fail_mode="open") as accountant:
        for number in range(10):
            reservation = await accountant.call(reserve(f"r{number}"))
            assert reservation.degraded  # admitted unchecked: fail_mode="open"
            await accountant.send(settle(reservation))
        await accountant.call(Flush())
        stats = await accountant.call(AccountantStats())
        logged = [
            record
            for record in caplog.records
            if record.name == "llm_invocation.accountant" and record.levelno >= logging.WARNING
        ]
        store.down = False  # so that closing applies what was kept
    assert stats.store_errors >= 20
    assert logged == []


# -- durability -------------------------------------------------------------------------------

_KILLED_SETTLER = textwrap.dedent(
    """
    import os, sys, trio
    from llm_invocation.store._ledger_writer import open_ledger_writer
    from llm_invocation.store.ledger import LedgerEntry, open_ledger

    async def main(path, max_batch):
        async with open_ledger(path) as ledger:
            async with open_ledger_writer(ledger, max_batch=max_batch) as writer:
                async def settle(task):
                    number = 0
                    while True:
                        entry = LedgerEntry(
                            id=f"{task}-{number}", provider="mock", model="m", prompt_tokens=1
                        )
                        await writer.put(entry)
                        os.write(1, (entry.id + "\\n").encode())  # accepted: one atomic write
                        number += 1

                async with trio.open_nursery() as nursery:
                    for task in range(20):
                        nursery.start_soon(settle, task)

    trio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


def read_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM usage_entries")}


async def test_a_killed_process_loses_at_most_one_batch_of_settled_rows(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path, max_batch = tmp_path / "usage.sqlite", 256
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _KILLED_SETTLER, str(path), str(max_batch)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    output = b""
    try:
        while output.count(b"\n") < 20_000:
            chunk = await proc.stdout.receive_some()
            assert chunk, "the settling process exited early"
            output += chunk
    finally:
        proc.kill()  # SIGKILL, mid-stream: no cleanup, no last commit
        await proc.wait()
    while chunk := await proc.stdout.receive_some():
        output += chunk
    await proc.stdout.aclose()
    accepted = {line.decode() for line in output.split(b"\n")[:-1]}  # the last may be partial
    stored = await trio.to_thread.run_sync(read_ids, path)
    lost = len(accepted - stored)
    request.node.user_properties.append(("rows_lost", lost))  # in the JUnit report
    assert proc.returncode == -signal.SIGKILL
    assert len(stored) >= 10_000
    assert lost <= max_batch, f"{lost} accepted rows were lost (one batch is {max_batch})"
