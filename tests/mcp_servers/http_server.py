"""The demo server over streamable HTTP, with switches for the lifecycle tests.

``python http_server.py PORT [--no-get] [--record FILE]`` serves ``demo_server``'s tools at
``http://127.0.0.1:PORT/mcp``:

- ``--no-get``: refuse the standalone GET stream (HTTP 405, as the specification allows),
  so only requests can show the client that its session is gone;
- ``--record FILE``: append one line per ``DELETE`` request to FILE, ``DELETE <session id>``,
  and one per ``tools/call`` request received, ``CALL``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from demo_server import server
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def wrap(app: ASGIApp, *, no_get: bool, record: Path | None) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if no_get and method == "GET":
                await Response(status_code=405)(scope, receive, send)
                return
            if record is not None and method == "DELETE":
                headers: dict[str, Any] = {
                    key.decode(): value.decode() for key, value in scope["headers"]
                }
                with record.open("a") as file:
                    file.write(f"DELETE {headers.get('mcp-session-id', '')}\n")
            if record is not None and method == "POST":
                receive = await recorded(receive, record)
        await app(scope, receive, send)

    return wrapped


async def recorded(receive: Receive, record: Path) -> Receive:
    """Read the whole body (noting a ``tools/call``) and replay it to the app."""
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if b'"tools/call"' in body:
        with record.open("a") as file:
            file.write("CALL\n")

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--no-get", action="store_true")
    parser.add_argument("--record")
    options = parser.parse_args()
    record = Path(options.record) if options.record else None
    app = server.streamable_http_app()
    config = uvicorn.Config(
        wrap(app, no_get=options.no_get, record=record),
        host="127.0.0.1",
        port=options.port,
        log_level="warning",
        lifespan="on",
    )
    anyio.run(uvicorn.Server(config).serve)


if __name__ == "__main__":
    main()
