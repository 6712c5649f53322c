"""Embedding: the client lives inside your own trio task tree, next to your other tasks.

Cancelling the app cancels in-flight calls, closes their connections and settles their cost:
nothing outlives the nursery.

    python examples/embed_in_trio_app.py
"""

from __future__ import annotations

import trio

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios


async def heartbeat(stop: trio.Event) -> None:
    while not stop.is_set():
        print("[app] heartbeat")
        with trio.move_on_after(0.1):
            await stop.wait()


async def worker(client: llm.Client, inbox: trio.MemoryReceiveChannel[str]) -> None:
    async for question in inbox:
        reply = await client.chat([llm.user(question)])
        print(f"[worker] {question!r} -> {reply.messages[-1].content!r}")


async def main() -> None:
    scenarios = Scenarios(Scenario(text="an answer", interval=0.01))
    async with llm.open_mock_client(scenarios) as client:
        send, receive = trio.open_memory_channel[str](10)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat, stop)
            nursery.start_soon(worker, client, receive)
            async with send:
                for question in ("What is trio?", "Why structured concurrency?"):
                    await send.send(question)
            # A slow call that the app gives up on: the upstream call is cancelled with it.
            slow = llm.Request(model="mock", messages=[llm.user("slow")])
            with trio.move_on_after(0.05):
                await client.invoke_sync(slow)
            print("[app] gave up on a slow call; its connection is closed and its cost settled")
            await trio.sleep(0.2)
            stop.set()
        print("[app] done:", client.runtime.statistics().in_flight, "calls in flight")


if __name__ == "__main__":
    trio.run(main)
