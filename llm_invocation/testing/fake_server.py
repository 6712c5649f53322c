"""Run the fake LLM provider server: ``python -m llm_invocation.testing.fake_server``.

Prints exactly one line, ``READY http://HOST:PORT``, once it listens, then serves the OpenAI,
Anthropic and Gemini paths (see ``llm_invocation.testing.open_fake_server``) until SIGINT or
SIGTERM, and exits 0. Every model gets one scenario built from the options::

    python -m llm_invocation.testing.fake_server --port 0 --chunks 100 --chunk-chars 8 \\
        --interval 0.01 --ttft 0.2

``--chunks N`` answers with N chunks of ``--chunk-chars`` characters each; without it the
answer echoes the last user message (``"You said: ..."``, 12 words). With ``--stamp`` each of
the N chunks is the time the server wrote it (``SEND_TIME``, 16 characters), for latency
measurements.

With ``--tls-cert PEM`` it serves https (and prints ``READY https://HOST:PORT``): the file holds
the certificate chain, and its private key unless ``--tls-key PEM`` names another file::

    python -m llm_invocation.testing.fake_server --port 0 --tls-cert server.pem
"""

from __future__ import annotations

import argparse
import itertools
import signal
import ssl
import sys
from collections.abc import Sequence
from functools import partial

import trio

from ..providers.mock import Scenario, Scenarios
from ._server import SEND_TIME, FakeServer, serve_fake_server

__all__ = ["main"]

_WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


def _text(length: int) -> str:
    source = itertools.cycle(_WORDS)
    return "".join(itertools.islice(source, length))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm_invocation.testing.fake_server",
        description="A fake OpenAI / Anthropic / Gemini server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    parser.add_argument("--chunks", type=int, default=None, help="streamed chunks per answer")
    parser.add_argument("--chunk-chars", type=int, default=8, help="characters per chunk")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds to the first chunk")
    parser.add_argument(
        "--stamp",
        action="store_true",
        help="each chunk is the server's time.monotonic() when written (needs --chunks)",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="serve https with this certificate chain (and its key, unless --tls-key)",
    )
    parser.add_argument(
        "--tls-key", default=None, metavar="PEM", help="the private key of --tls-cert"
    )
    return parser


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server's TLS context for ``--tls-cert`` and ``--tls-key`` (None: plain http).

    Raises:
        ValueError: ``--tls-key`` without ``--tls-cert``, or the files cannot be loaded.
    """
    if cert is None:
        if key is not None:
            raise ValueError("--tls-key needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load --tls-cert/--tls-key: {error}") from error
    return context


def scenario_from_options(
    *, chunks: int | None, chunk_chars: int, interval: float, ttft: float, stamp: bool = False
) -> Scenario:
    """The scenario the command-line options describe.

    Raises:
        ValueError: an option is out of range.
    """
    if chunks is not None and chunks < 0:
        raise ValueError("--chunks must be >= 0")
    if stamp:
        if chunks is None:
            raise ValueError("--stamp needs --chunks")
        return Scenario(
            text=SEND_TIME * chunks, chunk_chars=len(SEND_TIME), interval=interval, ttft=ttft
        )
    text = None if chunks is None else _text(chunks * chunk_chars)
    return Scenario(text=text, chunk_chars=chunk_chars, interval=interval, ttft=ttft)


async def _serve(scenario: Scenario, host: str, port: int, context: ssl.SSLContext | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: FakeServer = await nursery.start(
                partial(
                    serve_fake_server,
                    Scenarios(scenario),
                    host=host,
                    port=port,
                    ssl_context=context,
                )
            )
            sys.stdout.write(f"READY {server.url}\n")
            sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, serve until SIGINT or SIGTERM, return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        scenario = scenario_from_options(
            chunks=args.chunks,
            chunk_chars=args.chunk_chars,
            interval=args.interval,
            ttft=args.ttft,
            stamp=args.stamp,
        )
        context = tls_context(args.tls_cert, args.tls_key)
    except ValueError as error:
        parser.error(str(error))
    trio.run(_serve, scenario, args.host, args.port, context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
