"""``llm-invocation serve``: a client and its WebSocket front until SIGINT or SIGTERM.

The signal is caught (`trio.open_signal_receiver`), never delivered as a cancellation: the
front is stopped first, through its own graceful path (``terminate_child``: it stops
accepting, lets the streams in flight run through its grace, cancels what is left and
closes every connection with 1001), while the providers and the accountant still run, so
every stream ends with its own frame and its ledger row. Then the client closes normally.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TextIO

import msgspec
import trio

from ..config import Config, WebSocketConfig

if TYPE_CHECKING:
    from ..actors.websocket import WebSocketFront

__all__ = ["FRONT", "serve_command", "serve_front", "serve_settings"]

FRONT: Final = "websocket_front"
"""The front's name in the client's supervision tree."""

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def serve_settings(args: argparse.Namespace, config: Config) -> WebSocketConfig:
    """The front's settings: ``config.websocket`` with ``--host``, ``--port`` and
    ``--insecure-no-auth`` applied."""
    ws = config.websocket
    host: str | None = getattr(args, "host", None)
    port: int | None = getattr(args, "port", None)
    insecure: bool = bool(getattr(args, "insecure_no_auth", False))
    return msgspec.structs.replace(
        ws,
        host=host if host is not None else ws.host,
        port=port if port is not None else ws.port,
        insecure_no_auth=ws.insecure_no_auth or insecure,
    )


async def serve_front(
    config: Config,
    settings: WebSocketConfig,
    *,
    out: TextIO,
    until: Callable[[WebSocketFront], Awaitable[object]],
) -> None:
    """Open a client on ``config``, serve it over WebSocket until ``until(front)`` returns,
    then stop the front gracefully before the client closes.

    The page's address is written to ``out`` once the front listens (never a token).

    Raises:
        ConfigurationError: the configuration is invalid, or the front would listen on a
            non-loopback address without tokens (see ``insecure_no_auth``).
        OSError: the address cannot be bound.
    """
    from ..actors.websocket import WebSocketFront
    from ..client import open_client

    async with open_client(config) as client:
        front = WebSocketFront(client, settings)
        await client.runtime.start_child(front.child_spec(FRONT))
        hint = "?token=<token>" if settings.tokens else ""
        out.write(f"chat page: {front.url}{hint}\nWebSocket: {front.ws_url}\n")
        out.flush()
        await until(front)
        # Before the client closes: the streams in flight still need the providers, and
        # their cost the accountant.
        await client.runtime.terminate_child(FRONT)


async def serve_command(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    """Run ``serve`` until SIGINT or SIGTERM, then shut down gracefully; the exit status.

    Raises:
        ConfigurationError: see `serve_front`.
        OSError: the address cannot be bound.
    """
    settings = serve_settings(args, config)
    with trio.open_signal_receiver(*_SIGNALS) as signals:

        async def first_signal(front: WebSocketFront) -> None:
            async for signum in signals:
                name = signal.Signals(signum).name
                err.write(
                    f"{name}: shutting down (streams in flight get {settings.grace:g}s to finish)\n"
                )
                err.flush()
                return

        await serve_front(config, settings, out=out, until=first_signal)
    return 0
