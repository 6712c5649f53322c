"""The SQLite usage ledger: durable appends with group commit, queries and reports."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing

from llm_invocation.store.ledger import (
    MAX_STORED_COUNT,
    SCHEMA_VERSION,
    LedgerEntry,
    LedgerError,
    LedgerWriter,
    SQLiteLedger,
    UsageReport,
    new_entry_id,
    open_ledger,
    open_ledger_writer,
)
from llm_invocation.types import Usage

REPO = Path(__file__).parents[1]
DAY1 = datetime(2026, 3, 1, 10, 30, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 2, 23, 59, tzinfo=UTC).timestamp()
APRIL = datetime(2026, 4, 5, 8, 0, tzinfo=UTC).timestamp()


def entry(
    provider: str = "openai",
    model: str = "gpt-4o-mini",
    *,
    cost: str | None = "0.001",
    at: float = DAY1,
    tags: dict[str, str] | None = None,
    prompt_tokens: int = 100,
    status: str = "ok",
    error_code: str | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        provider=provider,
        model=model,
        at=at,
        cost=None if cost is None else Decimal(cost),
        tags=tags or {},
        prompt_tokens=prompt_tokens,
        completion_tokens=10,
        status=status,  # type: ignore[arg-type]  # tests pass bad statuses on purpose
        error_code=error_code,
    )


def read_ids(path: Path) -> set[str]:
    """The ids in the ledger file, read with a separate connection."""
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM usage_entries")}


@pytest.fixture
async def ledger() -> AsyncIterator[SQLiteLedger]:
    async with open_ledger(None) as opened:
        yield opened


async def append_all(ledger: SQLiteLedger, entries: list[LedgerEntry]) -> None:
    async with trio.open_nursery() as nursery:
        for item in entries:
            nursery.start_soon(ledger.append, item)


# -- append and query --------------------------------------------------------------------------


async def test_an_appended_entry_reads_back_equal(ledger: SQLiteLedger) -> None:
    original = LedgerEntry(
        provider="anthropic",
        model="claude-sonnet-4-5",
        tags={"team": "search", "user": "ada"},
        prompt_tokens=1_200,
        completion_tokens=300,
        cache_read_tokens=1_000,
        cache_write_tokens=100,
        reasoning_tokens=50,
        cost=Decimal("0.0123456789"),
        estimated=True,
        status="error",
        error_code="rate_limit",
        duration=1.25,
        request_id="req_1",
    )

    await ledger.append(original)

    assert await ledger.entries() == [original]


async def test_an_unknown_cost_reads_back_as_none(ledger: SQLiteLedger) -> None:
    await ledger.append(entry(cost=None))

    [read] = await ledger.entries()

    assert read.cost is None


async def test_a_cost_finer_than_a_picodollar_reads_back_exactly(ledger: SQLiteLedger) -> None:
    fine = Decimal("0.041666666666666664") * 7 / 1_000_000

    await ledger.append(entry(cost=str(fine)))

    [read] = await ledger.entries()
    assert read.cost == fine


async def test_entry_from_usage_copies_tokens_cost_and_estimated(ledger: SQLiteLedger) -> None:
    usage = Usage(
        prompt_tokens=10,
        completion_tokens=5,
        cache_read_tokens=4,
        reasoning_tokens=2,
        cost=Decimal("0.5"),
        estimated=True,
    )

    made = LedgerEntry.from_usage(usage, provider="mock", model="mock", tags={"a": "b"})
    await ledger.append(made)

    [read] = await ledger.entries()
    assert (read.prompt_tokens, read.completion_tokens, read.cache_read_tokens) == (10, 5, 4)
    assert (read.reasoning_tokens, read.cost, read.estimated) == (2, Decimal("0.5"), True)
    assert read.tags == {"a": "b"}


def test_entry_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_entry_id() for _ in range(1_000)]

    assert len(set(ids)) == 1_000
    assert all(len(item) == 32 for item in ids)
    assert [item[:12] for item in ids] == sorted(item[:12] for item in ids)


async def test_entries_filter_by_time_provider_model_and_tags(ledger: SQLiteLedger) -> None:
    a = entry("openai", "gpt-4o", at=DAY1, tags={"team": "x"})
    b = entry("openai", "gpt-4o-mini", at=DAY2, tags={"team": "y"})
    c = entry("anthropic", "claude", at=APRIL, tags={"team": "x", "user": "u"})
    await append_all(ledger, [a, b, c])

    assert await ledger.entries() == [a, b, c]
    assert await ledger.entries(since=DAY2) == [b, c]
    assert await ledger.entries(until=DAY2) == [a]
    assert await ledger.entries(since=datetime(2026, 3, 2, tzinfo=UTC), until=APRIL) == [b]
    assert await ledger.entries(provider="openai") == [a, b]
    assert await ledger.entries(model="claude") == [c]
    assert await ledger.entries(tags={"team": "x"}) == [a, c]
    assert await ledger.entries(tags={"team": "x", "user": "u"}) == [c]
    assert await ledger.entries(limit=2) == [a, b]
    assert await ledger.entries(limit=1, newest_first=True) == [c]


async def test_appending_an_id_twice_records_it_once(ledger: SQLiteLedger) -> None:
    first = entry()

    await ledger.append(first)
    await ledger.append(first)

    assert await ledger.entries() == [first]


async def test_an_unknown_status_is_refused(ledger: SQLiteLedger) -> None:
    bad = entry(status="exploded")

    with pytest.raises(ValueError, match="status"):
        await ledger.append(bad)


async def test_a_cost_that_is_not_a_number_is_refused(ledger: SQLiteLedger) -> None:
    with pytest.raises(ValueError, match="finite"):
        await ledger.append(entry(cost="NaN"))


# -- group commit ------------------------------------------------------------------------------


async def test_concurrent_appends_share_a_few_commits(ledger: SQLiteLedger) -> None:
    entries = [entry(prompt_tokens=i) for i in range(1_000)]

    await append_all(ledger, entries)

    stats = ledger.statistics()
    assert stats.appended == 1_000
    assert stats.commits <= 3
    assert stats.largest_batch >= 500
    assert stats.pending == 0
    assert len(await ledger.entries()) == 1_000


async def test_sequential_appends_commit_one_by_one(ledger: SQLiteLedger) -> None:
    for _ in range(5):
        await ledger.append(entry())

    assert ledger.statistics().commits == 5


async def test_appends_cancelled_while_waiting_are_still_committed(ledger: SQLiteLedger) -> None:
    batch = [entry() for _ in range(10)]

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            for item in batch:
                nursery.start_soon(ledger.append, item)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    await ledger.append(entry())

    stored = {item.id for item in await ledger.entries()}
    assert {item.id for item in batch} <= stored
    assert len(stored) == 11


async def test_append_returns_only_after_the_row_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_ledger(path) as ledger:
        appended = [entry() for _ in range(20)]

        await append_all(ledger, appended)

        # Another connection sees every row: each one was committed before append returned.
        seen = await trio.to_thread.run_sync(read_ids, path)
        assert seen == {item.id for item in appended}


async def test_a_failed_commit_fails_every_append_of_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_ledger(path) as ledger:

        def drop_table() -> None:
            with sqlite3.connect(path) as conn:
                conn.execute("DROP TABLE usage_entries")

        await trio.to_thread.run_sync(drop_table)
        failures: list[BaseException] = []

        async def append(item: LedgerEntry) -> None:
            try:
                await ledger.append(item)
            except LedgerError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(append, entry())

    assert len(failures) == 10
    assert all(isinstance(exc.__cause__, sqlite3.Error) for exc in failures)


async def test_queries_do_not_wait_for_a_blocked_commit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_ledger(path, busy_timeout=10) as ledger:
        first = entry()
        await ledger.append(first)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ledger.append, entry())
                await trio.testing.wait_all_tasks_blocked()

                with trio.fail_after(5):
                    assert await ledger.entries() == [first]
                    assert (await ledger.report(())).total.calls == 1
                blocker.execute("ROLLBACK")
        finally:
            blocker.close()

        assert ledger.statistics().appended == 2


# -- durability --------------------------------------------------------------------------------


async def test_entries_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    written = [entry(cost=str(i)) for i in range(50)]
    async with open_ledger(path) as ledger:
        await append_all(ledger, written)

    async with open_ledger(path) as reopened:
        read = await reopened.entries()

    assert sorted(read, key=lambda item: item.id) == sorted(written, key=lambda item: item.id)


async def test_a_file_ledger_uses_wal_and_records_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_ledger(path):
        pass

    with sqlite3.connect(path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]

    assert (mode, version) == ("wal", SCHEMA_VERSION)


async def test_a_ledger_from_newer_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(LedgerError, match="newer"):
        async with open_ledger(path):
            pass


async def test_a_ledger_that_cannot_be_opened_raises_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="could not open"):
        async with open_ledger(tmp_path / "missing-dir" / "ledger.sqlite"):
            pass


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, trio
    from llm_invocation.store.ledger import LedgerEntry, open_ledger

    async def main(path):
        async with open_ledger(path) as ledger:
            async def writer(n):
                while True:
                    item = LedgerEntry(provider="openai", model="m", prompt_tokens=n)
                    await ledger.append(item)
                    os.write(1, (item.id + "\\n").encode())  # one atomic write per line

            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(writer, n)

    trio.run(main, sys.argv[1])
    """
)


async def test_committed_rows_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    output = b""
    try:
        while output.count(b"\n") < 2_000:
            chunk = await proc.stdout.receive_some()
            assert chunk, "the writer exited early"
            output += chunk
    finally:
        proc.kill()  # SIGKILL: no cleanup, no final commit
        await proc.wait()
    while chunk := await proc.stdout.receive_some():
        output += chunk
    await proc.stdout.aclose()

    printed = [line.decode() for line in output.split(b"\n")[:-1]]  # the last may be partial
    assert proc.returncode == -signal.SIGKILL
    assert len(printed) >= 2_000
    stored = await trio.to_thread.run_sync(read_ids, path)
    assert set(printed) <= stored


# -- in memory and closing ---------------------------------------------------------------------


async def test_an_in_memory_ledger_works_without_a_file(tmp_path: Path) -> None:
    async with open_ledger(":memory:") as ledger:
        await ledger.append(entry())
        stats = ledger.statistics()
        assert len(await ledger.entries()) == 1

    assert stats.path is None
    assert os.listdir(tmp_path) == []


async def test_a_closed_ledger_refuses_appends() -> None:
    ledger = SQLiteLedger()
    await ledger.append(entry())
    await ledger.aclose()

    with pytest.raises(trio.ClosedResourceError, match="ledger is closed"):
        await ledger.append(entry())
    with pytest.raises(trio.ClosedResourceError):
        await ledger.entries()
    assert ledger.statistics().closed


async def test_closing_twice_is_harmless() -> None:
    async with SQLiteLedger() as ledger:
        await ledger.aclose()
    await ledger.aclose()

    assert ledger.statistics().closed


async def test_a_ledger_opens_itself_on_first_use() -> None:
    ledger = SQLiteLedger(None)
    try:
        await ledger.append(entry())
        assert len(await ledger.entries()) == 1
    finally:
        await ledger.aclose()


# -- reports -----------------------------------------------------------------------------------


@pytest.fixture
async def filled(ledger: SQLiteLedger) -> SQLiteLedger:
    await append_all(
        ledger,
        [
            entry("openai", "gpt-4o-mini", cost="0.0015", at=DAY1, tags={"team": "a"}),
            entry("openai", "gpt-4o-mini", cost="0.0025", at=DAY2, tags={"team": "b"}),
            entry("openai", "gpt-4o", cost="0.1", at=DAY2, status="error", error_code="timeout"),
            entry("anthropic", "claude", cost="0.3", at=APRIL, tags={"team": "a"}),
            entry("anthropic", "claude", cost=None, at=APRIL, status="cancelled"),
        ],
    )
    return ledger


async def test_report_by_provider_and_model_sums_exactly(filled: SQLiteLedger) -> None:
    report = await filled.report(("provider", "model"))

    rows = {tuple(row.group.values()): row for row in report.rows}
    assert list(rows) == [("anthropic", "claude"), ("openai", "gpt-4o"), ("openai", "gpt-4o-mini")]
    mini = rows["openai", "gpt-4o-mini"]
    assert (mini.calls, mini.ok, mini.prompt_tokens, mini.completion_tokens) == (2, 2, 200, 20)
    assert mini.cost == Decimal("0.004")
    claude = rows["anthropic", "claude"]
    assert (claude.calls, claude.cancelled, claude.unknown_cost_calls) == (2, 1, 1)
    assert claude.cost == Decimal("0.3")
    assert rows["openai", "gpt-4o"].error == 1
    assert report.total.calls == 5
    assert report.total.cost == Decimal("0.404")
    assert report.total.unknown_cost_calls == 1


async def test_report_by_tag_puts_untagged_calls_in_a_none_group(filled: SQLiteLedger) -> None:
    report = await filled.report(("tag:team",))

    groups = {row.group["tag:team"]: (row.calls, row.cost) for row in report.rows}
    assert groups == {
        None: (2, Decimal("0.1")),
        "a": (2, Decimal("0.3015")),
        "b": (1, Decimal("0.0025")),
    }


async def test_report_by_period_groups_by_utc_day_hour_and_month(filled: SQLiteLedger) -> None:
    by_day = await filled.report(("period:day",))
    by_month = await filled.report(("period:month",))
    by_hour = await filled.report(("period:hour",), until=DAY2 + 1)

    assert [(row.group["period:day"], row.calls) for row in by_day.rows] == [
        ("2026-03-01", 1),
        ("2026-03-02", 2),
        ("2026-04-05", 2),
    ]
    assert [(row.group["period:month"], row.cost) for row in by_month.rows] == [
        ("2026-03", Decimal("0.104")),
        ("2026-04", Decimal("0.3")),
    ]
    assert [row.group["period:hour"] for row in by_hour.rows] == [
        "2026-03-01T10:00",
        "2026-03-02T23:00",
    ]


async def test_report_filters_by_time_and_provider(filled: SQLiteLedger) -> None:
    report = await filled.report(("model",), since=DAY2, provider="openai")

    assert [(row.group["model"], row.calls) for row in report.rows] == [
        ("gpt-4o", 1),
        ("gpt-4o-mini", 1),
    ]
    assert report.since == DAY2


async def test_report_without_groups_is_one_total(filled: SQLiteLedger) -> None:
    report = await filled.report(())

    assert len(report.rows) == 1
    assert report.rows[0] == report.total
    assert report.total.calls == 5


async def test_report_of_an_empty_ledger_has_no_rows(ledger: SQLiteLedger) -> None:
    report = await ledger.report(("provider",))

    assert report.rows == ()
    assert (report.total.calls, report.total.cost) == (0, Decimal(0))


async def test_report_sums_costs_finer_than_a_picodollar_exactly(ledger: SQLiteLedger) -> None:
    fine = Decimal("0.041666666666666664") / 1_000_000
    await append_all(ledger, [entry(cost=str(fine)), entry(cost="0.25"), entry(cost=str(fine))])

    report = await ledger.report(("provider",))

    assert report.total.cost == 2 * fine + Decimal("0.25")


async def test_report_sums_exactly_past_sqlite_integer_overflow(ledger: SQLiteLedger) -> None:
    # Each is 5e18 picodollars; their sum overflows SQLite's 64-bit SUM.
    await append_all(ledger, [entry(cost="5000000"), entry(cost="5000000"), entry(cost="0.5")])

    report = await ledger.report(("provider",))

    assert report.total.cost == Decimal("10000000.5")


async def test_report_refuses_an_unknown_group_key(ledger: SQLiteLedger) -> None:
    with pytest.raises(ValueError, match="cannot group"):
        await ledger.report(("colour",))


async def test_report_table_is_aligned_with_header_rows_and_total(filled: SQLiteLedger) -> None:
    report = await filled.report(("provider", "model"))

    lines = report.to_table().splitlines()

    assert len(lines) == 1 + 1 + 3 + 1 + 1  # header, rule, rows, rule, total
    assert lines[0].split()[:4] == ["provider", "model", "calls", "ok"]
    assert set(lines[1]) == {"-", " "}
    assert lines[-1].startswith("TOTAL")
    assert len({len(line) for line in lines}) == 1  # numbers are right-aligned to one edge
    assert re.search(r"\s0\.404000\s+1$", lines[-1])  # cost with 6 places, 1 unknown
    assert " 0.004000 " in lines[4]


async def test_report_table_rounds_money_to_six_places(ledger: SQLiteLedger) -> None:
    await ledger.append(entry(cost="0.0000015"))

    table = (await ledger.report(("provider",))).to_table()

    assert " 0.000002 " in table


async def test_report_json_has_exact_decimal_strings(filled: SQLiteLedger) -> None:
    report = await filled.report(("provider",))

    data = json.loads(report.to_json())

    assert data == report.to_dict()
    assert data["group_by"] == ["provider"]
    assert data["total"]["cost"] == "0.404"
    assert Decimal(data["rows"][0]["cost"]) == Decimal("0.3")
    assert data["rows"][0]["group"] == {"provider": "anthropic"}
    assert data["rows"][0]["unknown_cost_calls"] == 1


def test_a_report_builds_its_total_from_its_rows() -> None:
    report = UsageReport.build((), [], since=None, until=None)

    assert report.total.calls == 0
    assert report.to_table().splitlines()[-1].startswith("TOTAL")


# -- entries the ledger cannot trust -----------------------------------------------------------


async def test_counts_out_of_range_are_stored_clamped(ledger: SQLiteLedger) -> None:
    wild = LedgerEntry(provider="p", model="m", prompt_tokens=2**70, completion_tokens=-3)

    await ledger.append(wild)

    [read] = await ledger.entries()
    assert (read.prompt_tokens, read.completion_tokens) == (MAX_STORED_COUNT, 0)
    assert ledger.statistics().clamped == 1


async def test_append_many_refuses_an_entry_it_cannot_store_alone(
    ledger: SQLiteLedger, caplog: pytest.LogCaptureFixture
) -> None:
    good = [entry(), entry()]
    batch = [good[0], entry(status="exploded"), entry(cost="NaN"), good[1]]

    stored = await ledger.append_many(batch)

    assert stored == 2
    assert {item.id for item in await ledger.entries()} == {item.id for item in good}
    assert ledger.statistics().refused == 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def poison(path: Path) -> None:
    """Make the database refuse rows of the model "poison" (and only those)."""

    def create() -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON usage_entries "
                "WHEN NEW.model = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
            )

    await trio.to_thread.run_sync(create)


async def test_a_row_the_database_refuses_does_not_fail_the_others_of_its_batch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_ledger(path) as ledger:
        await poison(path)
        batch = [entry(), entry(model="poison"), entry()]

        stored = await ledger.append_many(batch)

        assert stored == 2
        assert len(await ledger.entries()) == 2


async def test_a_refused_append_fails_alone_in_its_group_commit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    failures: list[str] = []
    async with open_ledger(path) as ledger:
        await poison(path)

        async def append(item: LedgerEntry) -> None:
            try:
                await ledger.append(item)
            except LedgerError:
                failures.append(item.model)

        async with trio.open_nursery() as nursery:
            for model in ("a", "poison", "b", "c"):
                nursery.start_soon(append, entry(model=model))

        assert failures == ["poison"]
        assert sorted(item.model for item in await ledger.entries()) == ["a", "b", "c"]


async def test_report_token_sums_are_exact_past_sqlite_integer_overflow(
    ledger: SQLiteLedger,
) -> None:
    huge = [entry(prompt_tokens=2**60) for _ in range(1_100)]  # clamped to MAX_STORED_COUNT
    await ledger.append_many(huge)

    report = await ledger.report(())

    assert report.total.prompt_tokens == 1_100 * MAX_STORED_COUNT


# -- the batching writer -----------------------------------------------------------------------


async def test_the_writer_commits_what_was_put_meanwhile_in_one_transaction(
    ledger: SQLiteLedger,
) -> None:
    async with open_ledger_writer(ledger) as writer:
        for _ in range(500):
            writer.put_nowait(entry())
        await writer.flush()
        stats = writer.statistics()

    assert (stats.committed, stats.batches, stats.largest_batch) == (500, 1, 500)
    assert len(await ledger.entries()) == 500


async def test_no_more_than_one_batch_of_entries_waits_for_its_commit(
    ledger: SQLiteLedger,
) -> None:
    async with open_ledger_writer(ledger, max_batch=3) as writer:
        for _ in range(3):
            writer.put_nowait(entry())
        with pytest.raises(trio.WouldBlock):
            writer.put_nowait(entry())
        await writer.put(entry())  # waits for the first three to commit
        assert writer.statistics().committed >= 3
        await writer.flush()

    assert len(await ledger.entries()) == 4


async def test_flush_returns_once_everything_put_before_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    put = [entry() for _ in range(50)]
    async with open_ledger(path) as ledger, open_ledger_writer(ledger) as writer:
        for item in put:
            await writer.put(item)

        await writer.flush()

        assert await trio.to_thread.run_sync(read_ids, path) == {item.id for item in put}


async def test_a_failing_transaction_is_retried(
    ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    real = SQLiteLedger.append_many
    attempts: list[int] = []

    async def once_locked(self: SQLiteLedger, entries: Sequence[LedgerEntry]) -> int:
        attempts.append(len(entries))
        if len(attempts) == 1:
            raise LedgerError("database is locked")
        return await real(self, entries)

    monkeypatch.setattr(SQLiteLedger, "append_many", once_locked)
    async with open_ledger_writer(ledger) as writer:
        writer.put_nowait(entry())
        await writer.flush()

    assert attempts == [1, 1]
    assert len(await ledger.entries()) == 1


async def test_a_transaction_failing_every_attempt_is_given_up_and_logged_once(
    ledger: SQLiteLedger,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(self: SQLiteLedger, entries: Sequence[LedgerEntry]) -> int:
        await trio.lowlevel.checkpoint()
        raise LedgerError("disk I/O error")

    monkeypatch.setattr(SQLiteLedger, "append_many", broken)
    async with open_ledger_writer(ledger) as writer:
        for _ in range(3):
            writer.put_nowait(entry())
            await writer.flush()  # each is its own batch, given up in turn
        stats = writer.statistics()

    assert (stats.failed, stats.committed, stats.pending) == (3, 0, 0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "could not write 1 usage ledger entries after 5 attempts" in errors[0].getMessage()


async def test_closing_the_writer_commits_what_it_accepted(ledger: SQLiteLedger) -> None:
    async with open_ledger_writer(ledger) as writer:
        for _ in range(10):
            writer.put_nowait(entry())

    assert len(await ledger.entries()) == 10
    with pytest.raises(trio.ClosedResourceError):
        writer.put_nowait(entry())


async def test_a_cancelled_block_still_commits_what_the_writer_accepted(
    ledger: SQLiteLedger,
) -> None:
    with trio.CancelScope() as scope:
        async with open_ledger_writer(ledger) as writer:
            for _ in range(10):
                writer.put_nowait(entry())
            scope.cancel()
            await trio.sleep_forever()

    assert len(await ledger.entries()) == 10


async def test_an_exception_from_the_writers_block_comes_out_as_itself(
    ledger: SQLiteLedger,
) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_ledger_writer(ledger):
            raise KeyError("mine")


async def test_entries_that_trickle_in_share_one_commit_while_the_writer_lingers(
    ledger: SQLiteLedger, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_ledger_writer(ledger, linger=10) as writer:
        for _ in range(3):
            writer.put_nowait(entry())
            await trio.sleep(1)
        assert writer.statistics().committed == 0  # still lingering
        before = trio.current_time()
        await writer.flush()  # someone waits: the linger ends now
        assert trio.current_time() - before < 10
        stats = writer.statistics()

    assert (stats.committed, stats.batches, stats.largest_batch) == (3, 1, 3)


async def test_a_lingering_batch_commits_by_itself_when_its_time_is_up(
    ledger: SQLiteLedger, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_ledger_writer(ledger, linger=5) as writer:
        writer.put_nowait(entry())
        await trio.sleep(4)
        assert writer.statistics().committed == 0
        await trio.sleep(2)
        assert writer.statistics().committed == 1


async def test_half_a_full_batch_commits_without_lingering(
    ledger: SQLiteLedger, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    async with open_ledger_writer(ledger, max_batch=4, linger=1000) as writer:
        writer.put_nowait(entry())
        writer.put_nowait(entry())
        while writer.statistics().committed < 2:
            await trio.sleep(0.01)
        assert trio.current_time() - start < 1000
        # closing ends a linger too: the last entry does not wait for its time
        writer.put_nowait(entry())
    assert trio.current_time() - start < 1000
    assert len(await ledger.entries()) == 3


@pytest.mark.parametrize("linger", [-1.0, math.inf, math.nan])
async def test_a_linger_that_is_not_a_number_of_seconds_is_refused(
    ledger: SQLiteLedger, linger: float
) -> None:
    with pytest.raises(ValueError, match="linger"):
        LedgerWriter(ledger, linger=linger)
