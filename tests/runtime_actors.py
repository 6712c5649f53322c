"""Small actors and helpers shared by the runtime tests."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import trio

from llm_invocation.runtime import Actor, Call, Context, Msg, ReplyError, Stream


class Get(Call[int], frozen=True, kw_only=True):
    pass


class Add(Msg, frozen=True, kw_only=True):
    amount: int = 1


class Fail(Call[int], frozen=True, kw_only=True):
    message: str = "boom"


class Refuse(Call[int], frozen=True, kw_only=True):
    pass


class Sleep(Call[str], frozen=True, kw_only=True):
    seconds: float


class Deadline(Call[tuple[float, float]], frozen=True, kw_only=True):
    pass


class Count(Stream[int], frozen=True, kw_only=True):
    upto: int
    fail_at: int | None = None


class Forever(Stream[int], frozen=True, kw_only=True):
    pass


CounterMsg = Get | Add | Fail | Refuse | Sleep | Deadline | Count | Forever


class Journal:
    """Records what actors did, shared by a test and its actors."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.cancelled: list[str] = []
        self.started = trio.Event()
        self.handling = trio.Event()

    def add(self, event: str) -> None:
        self.events.append(event)


@asynccontextmanager
async def journaled(journal: Journal, name: str) -> AsyncGenerator[None]:
    """A lifespan that notes its start and its stop in ``journal``."""
    journal.add(f"start {name}")
    try:
        yield
    finally:
        journal.add(f"stop {name}")


class Counter(Actor[CounterMsg]):
    """A counter that can sleep, fail, refuse and stream; it logs to a journal."""

    def __init__(self, journal: Journal | None = None, name: str = "counter") -> None:
        self.journal = journal or Journal()
        self.name = name
        self.n = 0

    def lifespan(self, ctx: Context) -> Any:
        return journaled(self.journal, self.name)

    async def handle(self, msg: CounterMsg, ctx: Context) -> Any:
        match msg:
            case Get():
                self.n += 1
                return self.n
            case Add(amount=amount):
                self.n += amount
                return None
            case Fail(message=message):
                raise ValueError(message)
            case Refuse():
                raise ReplyError("refused")
            case Sleep(seconds=seconds):
                self.journal.handling.set()
                try:
                    await trio.sleep(seconds)
                except trio.Cancelled:
                    self.journal.cancelled.append(f"sleep {seconds}")
                    raise
                return f"slept {seconds}"
            case Deadline():
                return ctx.deadline, trio.current_effective_deadline()
            case Count(upto=upto, fail_at=fail_at):
                sink = ctx.sink(msg)
                for i in range(upto):
                    if i == fail_at:
                        raise ValueError(f"failed at {i}")
                    await sink.send(i)
                return None
            case Forever():
                sink = ctx.sink(msg)
                i = 0
                try:
                    while True:
                        await sink.send(i)
                        i += 1
                except trio.Cancelled:
                    self.journal.cancelled.append(f"forever at {i}")
                    raise


def count_tasks() -> int:
    """Number of live tasks in this trio run."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())
