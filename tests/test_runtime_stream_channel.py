"""A stream's channel (`StreamState`) is a one-sender, one-receiver bounded channel written
for the runtime (fewer objects per stream than a trio memory channel): proven equal to
`trio.open_memory_channel` by a differential test over random sequences of operations,
parked senders and receivers, cancellations and closes included."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import given, settings

from llm_invocation.runtime._envelope import StreamState

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send_nowait"), st.integers(0, 99)),
        st.just(("receive_nowait", 0)),
        st.tuples(st.just("park_send"), st.integers(100, 199)),
        st.just(("park_receive", 0)),
        st.just(("cancel_oldest", 0)),
        st.just(("close_send", 0)),
        st.just(("close_receive", 0)),
    ),
    max_size=30,
)


class Trio:
    """trio's memory channel, one handle of each end."""

    def __init__(self, buffer: int) -> None:
        self.send_end, self.receive_end = trio.open_memory_channel[Any](buffer)

    def send_nowait(self, item: int) -> None:
        self.send_end.send_nowait(item)

    async def send(self, item: int) -> None:
        await self.send_end.send(item)

    def receive_nowait(self) -> Any:
        return self.receive_end.receive_nowait()

    async def receive(self) -> Any:
        return await self.receive_end.receive()

    def close_send(self) -> None:
        self.send_end.close()

    def close_receive(self) -> None:
        self.receive_end.close()

    def statistics(self) -> trio.MemoryChannelStatistics:
        return self.send_end.statistics()


class Ours:
    def __init__(self, buffer: int) -> None:
        self.state = StreamState("actor", buffer, "block")

    def send_nowait(self, item: int) -> None:
        self.state.send_nowait(item)

    async def send(self, item: int) -> None:
        await self.state.send(item)

    def receive_nowait(self) -> Any:
        return self.state.receive_nowait()

    async def receive(self) -> Any:
        return await self.state.receive()

    def close_send(self) -> None:
        self.state.close_send()

    def close_receive(self) -> None:
        self.state.close_receive()

    def statistics(self) -> trio.MemoryChannelStatistics:
        return self.state.statistics()


def _outcome(call: Any) -> str:
    try:
        return f"ok {call()!r}"
    except Exception as exc:
        return type(exc).__name__


async def _run(channel: Any, ops: list[tuple[str, int]]) -> list[list[str]]:
    log: list[str] = []
    scopes: list[trio.CancelScope] = []

    def stats() -> tuple[int, ...]:
        s = channel.statistics()
        return (
            s.current_buffer_used,
            s.max_buffer_size,
            s.tasks_waiting_send,
            s.tasks_waiting_receive,
        )

    async def parked(kind: str, item: int, scope: trio.CancelScope) -> None:
        with scope:
            try:
                if kind == "park_send":
                    await channel.send(item)
                    log.append(f"{kind} {item}: sent")
                else:
                    got = await channel.receive()
                    log.append(f"{kind}: got {got!r}")
            except Exception as exc:
                log.append(f"{kind} {item}: {type(exc).__name__}")
        if scope.cancelled_caught:
            log.append(f"{kind} {item}: cancelled")

    steps: list[list[str]] = []
    async with trio.open_nursery() as nursery:
        for op, item in ops:
            if op == "send_nowait":
                sent = _outcome(lambda item=item: channel.send_nowait(item))
                log.append(f"{op} {item}: {sent}")
            elif op == "receive_nowait":
                log.append(f"{op}: {_outcome(channel.receive_nowait)}")
            elif op in ("park_send", "park_receive"):
                scope = trio.CancelScope()
                scopes.append(scope)
                nursery.start_soon(parked, op, item, scope)
            elif op == "cancel_oldest":
                if scopes:
                    scopes.pop(0).cancel()
            elif op == "close_send":
                channel.close_send()
            else:
                channel.close_receive()
            await trio.testing.wait_all_tasks_blocked()
            log.append(f"stats {stats()}")
            # Tasks woken together run in an order trio may shuffle: what each step did is
            # compared, not the order in which its tasks logged it.
            steps.append(sorted(log))
            log.clear()
        for scope in scopes:  # whatever still waits
            scope.cancel()
    steps.append(sorted(log))
    return steps


@settings(max_examples=400, deadline=None)
@given(buffer=st.integers(0, 3), ops=_OPS)
def test_a_stream_channel_behaves_as_a_trio_memory_channel(
    buffer: int, ops: list[tuple[str, int]]
) -> None:
    expected = trio.run(_run, Trio(buffer), ops)
    got = trio.run(_run, Ours(buffer), ops)
    assert got == expected
