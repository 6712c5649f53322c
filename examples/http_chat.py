"""HTTP chat server: seed 000's web-framework example (``POST /chat`` answers with JSON,
``POST /chat/stream`` streams), served by the front's OpenAI-compatible gateway.

``POST /v1/chat/completions`` is ``/chat`` (JSON in, JSON out) and, with
``"stream": true``, ``/chat/stream`` (server-sent events). Every call is governed: rate
limits, budgets and the ledger, under the name of the token it came with.

    python examples/http_chat.py            # serves on 127.0.0.1:8765 until Ctrl-C
    python examples/http_chat.py --check    # starts, chats twice over HTTP, stops

Any OpenAI SDK or tool talks to it too::

    curl http://127.0.0.1:8765/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\
      -d '{"model": "mock", "messages": [{"role": "user", "content": "Hi"}]}'
"""

from __future__ import annotations

import json
import os
import secrets
import sys

import httpx
import trio

import llm_invocation as llm
from llm_invocation.actors.websocket import WebSocketFront


async def chat(http: httpx.AsyncClient, url: str, model: str) -> None:
    """``/chat``: one question, the whole answer as JSON."""
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}]}
    answer = await http.post(f"{url}/chat/completions", json=body)
    reply = answer.json()
    print(f"POST /v1/chat/completions -> {answer.status_code}")
    print(f"  answer: {reply['choices'][0]['message']['content']!r}")
    print(f"  usage: {reply['usage']['total_tokens']} tokens")


async def chat_stream(http: httpx.AsyncClient, url: str, model: str) -> None:
    """``/chat/stream``: the answer as it is written, one event per piece."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Count to five"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    pieces: list[str] = []
    async with http.stream("POST", f"{url}/chat/completions", json=body) as answer:
        async for line in answer.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            pieces.extend(choice["delta"].get("content") or "" for choice in event["choices"])
    print(f"POST /v1/chat/completions (stream) -> {answer.status_code}")
    print(f"  streamed {len([p for p in pieces if p])} pieces: {''.join(pieces)!r}")


async def main(check: bool) -> None:
    # A real provider with a key in the environment, the mock otherwise.
    token = os.environ.get("HTTP_CHAT_TOKEN") or secrets.token_urlsafe(24)
    websocket = {"host": "127.0.0.1", "port": 0 if check else 8765, "tokens": {"example": token}}
    config = llm.Config.load(websocket=websocket)
    async with llm.open_client(config) as client:
        front = WebSocketFront(client, config.websocket)
        await client.runtime.start_child(front.child_spec())
        url = f"{front.url}v1"
        print(f"OpenAI-compatible chat at {url}")
        if not check:
            if "HTTP_CHAT_TOKEN" not in os.environ:
                print(f"token (set HTTP_CHAT_TOKEN to choose it): {token}")
            await trio.sleep_forever()
        model = config.model or "mock"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=headers) as http:
            await chat(http, url, model)
            await chat_stream(http, url, model)
        report = await client.usage(group_by=["tag:token"])
        for row in report.rows:
            print(f"ledger: token {row.group['tag:token']!r} made {row.calls} calls")


if __name__ == "__main__":
    trio.run(main, "--check" in sys.argv)
