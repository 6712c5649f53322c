"""Web integration: seed 000's web-framework example, as the WebSocket front with its chat
page. ``/`` serves the page and ``/ws`` streams tokens; a browser's Stop button cancels the
upstream call.

    python examples/web_integration.py            # serves until Ctrl-C
    python examples/web_integration.py --check    # starts, fetches the page, stops
"""

from __future__ import annotations

import sys

import httpx
import trio

import llm_invocation as llm
from llm_invocation.actors.websocket import WebSocketFront


async def main(check: bool) -> None:
    # A real provider with a key in the environment, the mock otherwise.
    config = llm.Config.load(websocket={"host": "127.0.0.1", "port": 0 if check else 8765})
    async with llm.open_client(config) as client:
        front = WebSocketFront(client, config.websocket)
        await client.runtime.start_child(front.child_spec())
        print(f"chat page at {front.url} (WebSocket {front.ws_url})")
        if check:
            async with httpx.AsyncClient() as http:
                page = await http.get(front.url)
            print(f"GET / -> {page.status_code}, {len(page.text)} bytes")
            return
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, "--check" in sys.argv)
