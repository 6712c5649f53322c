"""A WebSocket client of the front: two invocations multiplexed on one connection, one of them
cancelled half-way.

    python examples/websocket_client.py            # starts its own front on the mock
    python examples/websocket_client.py ws://127.0.0.1:8765/ws?token=...   # or talks to one
"""

from __future__ import annotations

import json
import sys

import trio
from trio_websocket import open_websocket_url

import llm_invocation as llm
from llm_invocation.actors.websocket import (
    ChunkFrame,
    ChunksFrame,
    DoneFrame,
    ErrorFrame,
    WebSocketFront,
    decode_server_message,
)
from llm_invocation.config import WebSocketConfig
from llm_invocation.testing import Scenario, Scenarios


async def talk(url: str) -> None:
    async with open_websocket_url(url) as ws:
        for frame_id, prompt in (("story", "Tell me a long story."), ("joke", "A short joke?")):
            request = {"model": "mock", "messages": [{"role": "user", "content": prompt}]}
            await ws.send_message(
                json.dumps({"type": "invoke", "id": frame_id, "request": request})
            )
        texts: dict[str, str] = {"story": "", "joke": ""}
        open_ids = set(texts)
        cancelled = False
        while open_ids:
            for frame in decode_server_message(await ws.get_message()):
                match frame:
                    case ChunkFrame(id=frame_id, chunk=chunk):
                        texts[frame_id] += chunk.text
                    case ChunksFrame(id=frame_id, chunks=chunks):
                        texts[frame_id] += "".join(c.text for c in chunks)
                    case DoneFrame(id=frame_id):
                        open_ids.discard(frame_id)
                        print(f"{frame_id}: done")
                    case ErrorFrame(id=frame_id, code=code):
                        open_ids.discard(frame_id or "")
                        print(f"{frame_id}: error ({code})")
                    case _:
                        pass
                if "story" in open_ids and len(texts["story"]) > 40 and not cancelled:
                    cancelled = True  # a client's Stop button: the upstream call is cancelled
                    await ws.send_message(json.dumps({"type": "cancel", "id": "story"}))
        for frame_id, text in texts.items():
            print(f"{frame_id} ({len(text)} characters): {text[:60]!r}...")


async def main() -> None:
    if len(sys.argv) > 1:
        await talk(sys.argv[1])
        return
    scenarios = Scenarios(Scenario(completion_words=60, chunk_chars=4, interval=0.01))
    config = llm.Config(provider="mock", model="mock", websocket=WebSocketConfig(port=0))
    async with llm.open_client(config, scenarios=scenarios) as client:
        front = WebSocketFront(client, config.websocket)
        await client.runtime.start_child(front.child_spec())
        await talk(front.ws_url)


if __name__ == "__main__":
    trio.run(main)
