"""Work an incarnation lends out beyond a message (`Context.lend`): a graceful stop waits for
it to come back, a crash, a restart or a stop past the grace revokes it before the lifespan
closes, and the borrower learns the runtime's error."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.runtime import (
    Actor,
    ActorCrashed,
    ActorDead,
    Call,
    ChildSpec,
    Context,
    Loan,
    SupervisorSpec,
    open_runtime,
)


class Borrow(Call[Loan], frozen=True, kw_only=True):
    pass


class Crash(Call[None], frozen=True, kw_only=True):
    pass


class Lender(Actor[Borrow | Crash]):
    events: list[str]

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def lifespan(self, ctx: Context) -> Any:
        return self._lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[None]:
        self.events.append("start")
        try:
            yield
        finally:
            self.events.append("stop")

    async def handle(self, msg: Borrow | Crash, ctx: Context) -> Any:
        match msg:
            case Borrow():
                return ctx.lend(lambda: self.events.append("revoked"))
            case Crash():
                raise RuntimeError("crashed on purpose")


KINDS = [(1, False), (8, False), (8, True)]  # one at a time; concurrent; with inline calls


def spec(events: list[str], places: int, inline: bool, shutdown: float) -> SupervisorSpec:
    class Variant(Lender):
        max_concurrency = places
        inline_calls = inline

    return SupervisorSpec(
        children=[ChildSpec.actor("lender", lambda: Variant(events), shutdown=shutdown)]
    )


@pytest.mark.parametrize(("places", "inline"), KINDS)
async def test_a_graceful_stop_waits_for_a_loan_to_end_before_the_lifespan_closes(
    places: int, inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    async with open_runtime(spec(events, places, inline, shutdown=10)) as runtime:
        loan = await runtime.ref("lender", Lender).call(Borrow())

        async def give_back() -> None:
            await trio.sleep(3)
            events.append("ended")
            loan.end()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(give_back)
            await runtime.terminate_child("lender")
            assert trio.current_time() == pytest.approx(3)
    assert events == ["start", "ended", "stop"]
    assert loan.error is None


@pytest.mark.parametrize(("places", "inline"), KINDS)
async def test_a_loan_that_outlasts_the_grace_is_revoked_with_actor_dead(
    places: int, inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    async with open_runtime(spec(events, places, inline, shutdown=2)) as runtime:
        loan = await runtime.ref("lender", Lender).call(Borrow())
        await runtime.terminate_child("lender")
        assert trio.current_time() == pytest.approx(2)
    assert events == ["start", "revoked", "stop"]
    assert isinstance(loan.error, ActorDead)
    loan.end()  # harmless once revoked


@pytest.mark.parametrize(("places", "inline"), KINDS)
async def test_a_crash_revokes_the_loans_before_the_lifespan_closes_and_the_actor_restarts(
    places: int, inline: bool
) -> None:
    events: list[str] = []
    async with open_runtime(spec(events, places, inline, shutdown=10)) as runtime:
        ref = runtime.ref("lender", Lender)
        loans = [await ref.call(Borrow()), await ref.call(Borrow())]
        loans[0].end()  # back in time: not revoked
        with pytest.raises(ActorCrashed):
            await ref.call(Crash())
        fresh = await ref.call(Borrow())  # from the new incarnation
        assert events == ["start", "revoked", "stop", "start"]
        assert loans[0].error is None
        error = loans[1].error
        assert isinstance(error, ActorCrashed)
        assert isinstance(error.__cause__, RuntimeError)
        assert fresh.error is None
        fresh.end()
        assert ref.statistics().restarts == 1


class Slow(Call[bool], frozen=True, kw_only=True):
    pass


class Watcher(Actor[Slow]):
    seen: list[bool]

    def __init__(self, seen: list[bool]) -> None:
        self.seen = seen

    async def handle(self, msg: Slow, ctx: Context) -> Any:
        with trio.CancelScope(shield=True):
            await trio.sleep(5)
        self.seen.append(ctx.abandoned)  # an answer returned now would reach nobody
        return True


async def test_a_handler_sees_that_its_caller_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[bool] = []
    spec = SupervisorSpec(children=[ChildSpec.actor("watcher", lambda: Watcher(seen))])
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("watcher", Watcher)
        assert await ref.call(Slow())
        with trio.move_on_after(1):
            await ref.call(Slow())
        await trio.sleep(10)
    assert seen == [False, True]
