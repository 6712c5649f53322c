"""Static checks of the runtime's generic API: pyright (strict) checks this file.

``reveal_type(x, expected_text=...)`` fails the type check when the inferred type differs.
It is not a test module: nothing here runs under pytest.
"""

from __future__ import annotations

from typing import assert_type

import trio

from llm_invocation.runtime import (
    Actor,
    ActorRef,
    ActorStatistics,
    Call,
    Context,
    Msg,
    ReplyHandle,
    Runtime,
    Stream,
    StreamReceiver,
    StreamSink,
)


class Get(Call[int], frozen=True, kw_only=True):
    key: str


class Names(Call[list[str]], frozen=True, kw_only=True):
    pass


class Ticks(Stream[float], frozen=True, kw_only=True):
    count: int


class Reset(Msg, frozen=True, kw_only=True):
    pass


Protocol = Get | Names | Ticks | Reset


class Store(Actor[Protocol]):
    async def handle(self, msg: Protocol, ctx: Context) -> object:
        match msg:
            case Get():
                handle = ctx.defer(msg)
                reveal_type(handle, expected_text="ReplyHandle[int]")
                handle.reply(1)
                return None
            case Ticks():
                sink = ctx.sink(msg)
                reveal_type(sink, expected_text="StreamSink[float]")
                await sink.send(0.5)
                return None
            case Names() | Reset():
                return None


async def replies_are_typed_by_their_message(ref: ActorRef[Protocol]) -> None:
    reveal_type(await ref.call(Get(key="a")), expected_text="int")
    reveal_type(await ref.call(Names()), expected_text="list[str]")
    async with ref.stream(Ticks(count=3)) as ticks:
        reveal_type(ticks, expected_text="StreamReceiver[float]")
        async for tick in ticks:
            reveal_type(tick, expected_text="float")
    await ref.send(Reset())
    ref.send_nowait(Get(key="b"))
    reveal_type(ref.call_nowait(Get(key="a")), expected_text="int")
    reveal_type(ref.call_nowait(Names()), expected_text="list[str]")
    assert_type(ref.cast_nowait(Reset()), None)
    assert_type(ref.statistics(), ActorStatistics)


async def typed_refs_come_from_the_actor_class(runtime: Runtime) -> None:
    ref = runtime.ref("store", Store)
    reveal_type(ref, expected_text="ActorRef[Get | Names | Ticks | Reset]")
    untyped = runtime.ref("store")
    reveal_type(untyped, expected_text="ActorRef[Any]")
    with trio.fail_after(1):
        assert_type(await ref.call(Get(key="c")), int)


def handles_and_sinks_are_generic(handle: ReplyHandle[str], sink: StreamSink[bytes]) -> None:
    assert_type(handle.reply("x"), bool)
    sink.send_nowait(b"x")


def receivers_are_channels(receiver: StreamReceiver[int]) -> trio.abc.ReceiveChannel[int]:
    return receiver
