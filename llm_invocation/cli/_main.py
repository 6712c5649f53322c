"""The ``llm-invocation`` command line (also ``python -m llm_invocation``).

::

    llm-invocation chat "Explain trio nurseries"        # one-shot, streamed to the terminal
    llm-invocation chat                                  # interactive session
    llm-invocation complete "Once upon a time"
    llm-invocation models [--provider openai]
    llm-invocation tokens --model gpt-4o "some text"
    llm-invocation usage [--ledger usage.sqlite3] [--group-by provider,model]
    llm-invocation serve [--host 127.0.0.1] [--port 8765]
    llm-invocation config check
    llm-invocation demo [--calls 200]

Configuration comes from the environment (``LLM_*`` and the providers' keys), an optional
``--config`` YAML file and the options. When none of them names a provider or gives a key,
the built-in mock provider answers, and the command says so; a provider that needs a key and
has none is an error (``missing_api_key``). Errors print as one line on stderr with a
non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any, Final, TextIO, cast

import msgspec
import trio

from ..config import Config, WebSocketConfig
from ..errors import ConfigurationError, LLMError
from ..store.ledger import LedgerError

__all__ = ["main"]

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


class _OneLine(logging.Formatter):
    """Log records as one line, without tracebacks (they belong in --verbose output)."""

    def formatException(self, ei: object) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = None
        saved, record.exc_info = record.exc_info, None
        try:
            return super().format(record)
        finally:
            record.exc_info = saved


def _not_the_mock_note(record: logging.LogRecord) -> bool:
    """Leave out the client's line about the mock fallback: the command prints its note."""
    return not getattr(record, "mock_fallback", False)


def _configure_logging(verbose: bool, level: str = "warning") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_not_the_mock_note)
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLine("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("llm_invocation")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else getattr(logging, level.upper(), logging.WARNING))
    root.propagate = False


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-invocation", description="A trio-native runtime for invoking LLMs."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log with tracebacks")
    parser.add_argument("--config", metavar="FILE", help="a YAML configuration file")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--provider", help="the provider (default: from the configuration)")
        sub.add_argument("--model", help="the model, or provider:model")
        sub.add_argument("--max-tokens", type=int, help="limit the reply's length")
        sub.add_argument("--temperature", type=float, help="sampling temperature")
        sub.add_argument("--json", action="store_true", help="print the response as JSON")

    chat = commands.add_parser("chat", help="chat with a model (interactive without PROMPT)")
    chat.add_argument("prompt", nargs="*", help="the message (omit for an interactive session)")
    chat.add_argument("--system", help="a system prompt")
    model_options(chat)

    complete = commands.add_parser("complete", help="complete a prompt")
    complete.add_argument("prompt", nargs="+", help="the prompt")
    model_options(complete)

    models = commands.add_parser("models", help="list the models of the providers")
    models.add_argument("--provider", help="only this provider")
    models.add_argument("--json", action="store_true", help="print JSON")

    tokens = commands.add_parser("tokens", help="count the tokens of a text for a model")
    tokens.add_argument("text", nargs="*", help="the text (default: standard input)")
    tokens.add_argument("--model", default="gpt-4o", help="the model (default gpt-4o)")

    usage = commands.add_parser("usage", help="a usage report from the ledger")
    usage.add_argument("--ledger", help="the SQLite ledger (default: ledger_path)")
    usage.add_argument(
        "--group-by",
        default="provider,model",
        help="comma-separated: provider, model, status, tag:<name>, period:hour|day|month",
    )
    usage.add_argument("--json", action="store_true", help="print JSON")

    serve = commands.add_parser("serve", help="serve the WebSocket front and the chat page")
    serve.add_argument("--host", help="address to listen on (default: websocket.host)")
    serve.add_argument("--port", type=int, help="port (default: websocket.port)")

    config = commands.add_parser("config", help="configuration commands")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser("check", help="validate and print the effective configuration")

    demo = commands.add_parser("demo", help="run the main job (offline unless a key is set)")
    demo.add_argument("--calls", type=int, default=200, help="number of concurrent calls")
    demo.add_argument("--offline", action="store_true", help="ignore API keys; use the fake server")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument(
        "--runtime", action="store_true", help="the bare actor runtime demo (no providers)"
    )
    return parser


# -- configuration -------------------------------------------------------------------------------


def _load_config(args: argparse.Namespace) -> Config:
    keywords: dict[str, Any] = {}
    provider = getattr(args, "provider", None)
    model = getattr(args, "model", None)
    if provider:
        keywords["provider"] = provider
    if model:
        keywords["model"] = model
    return Config.load(yaml=args.config, **keywords) if args.config else Config.load(**keywords)


def _announce(config: Config, err: TextIO) -> None:
    """Say so when the mock answers because nothing names a provider or gives a key."""
    if config.mock_fallback:
        err.write(
            "note: no provider or API key configured: using the built-in mock provider "
            "(set LLM_API_KEY, OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, "
            "or LLM_PROVIDER, for a real model)\n"
        )


# -- commands ------------------------------------------------------------------------------------


def _request_options(args: argparse.Namespace) -> dict[str, Any]:
    from ..types import ModelOptions

    options: dict[str, Any] = {}
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        options["temperature"] = args.temperature
    return {"options": ModelOptions(**options)} if options else {}


async def _chat(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from ..client import open_client
    from ..invocation import ToolCallsEvent
    from ..types import Message, Request, StreamChunk, system, user

    history: list[Message] = [system(args.system)] if args.system else []
    extra = _request_options(args)
    async with open_client(config) as client:
        model = args.model or config.default_model
        if model is None:
            known = client.codec(config.default_provider).known_models()
            model = f"{config.default_provider}:{known[0].id}" if known else "default"

        async def turn(text: str) -> None:
            history.append(user(text))
            request = Request(model=model, messages=list(history), **extra)
            # The registered tools (the configured MCP servers') are offered and run here:
            # a chat that let the model call tools nobody runs would stall on its next turn.
            async with client.invoke(request, tool_mode="auto") as loop:
                async for item in loop:
                    if isinstance(item, ToolCallsEvent):
                        names = ", ".join(call.name for call in item.calls)
                        err.write(f"[tools: {names}]\n")
                    elif isinstance(item, StreamChunk) and item.text and not args.json:
                        out.write(item.text)
                        out.flush()
            response = loop.response
            history[:] = [*loop.messages, response.message]
            if args.json:
                out.write(msgspec.json.encode(response).decode() + "\n")
            else:
                out.write("\n")
                usage = response.usage
                if usage is not None:
                    cost = f", ${usage.cost:.6f}" if usage.cost is not None else ""
                    err.write(
                        f"[{response.provider}:{response.model}] {usage.prompt_tokens} prompt + "
                        f"{usage.completion_tokens} completion tokens{cost}\n"
                    )
            out.flush()

        if args.prompt:
            await turn(" ".join(args.prompt))
            return 0
        err.write("interactive chat: type a message, /exit or Ctrl-D to quit\n")
        while True:
            err.write("> ")
            err.flush()
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line or line.strip() in ("/exit", "/quit"):
                return 0
            if line.strip():
                await turn(line.strip())


async def _complete(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from ..client import open_client
    from ..types import CompletionRequest

    async with open_client(config) as client:
        request = CompletionRequest(
            prompt=" ".join(args.prompt), max_tokens=args.max_tokens, temperature=args.temperature
        )
        if args.json:
            response = await client.complete(request, model=args.model)
            out.write(msgspec.json.encode(response).decode() + "\n")
            return 0
        async with client.stream_complete(request, model=args.model) as deltas:
            async for delta in deltas:
                out.write(delta.text)
                out.flush()
        out.write("\n")
    return 0


async def _models(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from ..client import open_client

    async with open_client(config) as client:
        models = await client.list_models(args.provider)
    if args.json:
        out.write(msgspec.json.encode(models).decode() + "\n")
        return 0
    for info in sorted(models, key=lambda m: (m.provider, m.id)):
        window = f"{info.context_window:>9,}" if info.context_window else f"{'-':>9}"
        features = ",".join(sorted(f.value for f in info.features))
        out.write(f"{info.provider:12} {info.id:40} {window}  {features}\n")
    return 0


def _tokens(args: argparse.Namespace, out: TextIO) -> int:
    from .. import tokens

    text = " ".join(args.text) if args.text else sys.stdin.read()
    count = tokens.count_text(text, model=args.model)
    encoding = tokens.encoding_for_model(args.model).name
    out.write(f"{count} tokens ({encoding}, {len(text)} characters)\n")
    return 0


async def _usage(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from ..store.ledger import open_ledger

    path = args.ledger or config.ledger_path
    if path is None:
        raise ConfigurationError(
            "no ledger to read: pass --ledger FILE or set ledger_path in the configuration"
        )
    if not await trio.Path(path).exists():  # reading a report must not create an empty ledger
        raise ConfigurationError(f"no ledger at {os.fspath(path)!r}")
    group_by = tuple(part.strip() for part in args.group_by.split(",") if part.strip())
    async with open_ledger(path) as ledger:
        report = await ledger.report(group_by=group_by)
    out.write((report.to_json().decode() if args.json else report.to_table()) + "\n")
    return 0


async def serve_forever(config: Config, settings: WebSocketConfig, *, out: TextIO) -> None:
    """Open a client on ``config`` and serve it over WebSocket until cancelled.

    The front is a service child of the client's supervision tree; the page's address is
    written to ``out`` once it listens (never a token).

    Raises:
        ConfigurationError: the configuration is invalid.
        OSError: the address cannot be bound.
    """
    from ..actors.websocket import WebSocketFront
    from ..client import open_client

    async with open_client(config) as client:
        front = WebSocketFront(client, settings)
        await client.runtime.start_child(front.child_spec())
        hint = "?token=<token>" if settings.tokens else ""
        out.write(f"chat page: {front.url}{hint}\nWebSocket: {front.ws_url}\n")
        out.flush()
        await trio.sleep_forever()


async def _serve(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    ws = config.websocket
    settings = msgspec.structs.replace(
        ws,
        host=args.host if args.host is not None else ws.host,
        port=args.port if args.port is not None else ws.port,
    )
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(serve_forever, config, settings, out=out))
                async for signum in signals:
                    err.write(f"{signal.Signals(signum).name}: shutting down\n")
                    nursery.cancel_scope.cancel()  # connections close with 1001
                    break
    except BaseExceptionGroup as group:
        raise _lone(group) from None
    return 0


def _lone(error: BaseException) -> BaseException:
    """The one exception a group (of groups) of one holds; else the error itself.

    A nursery wraps what its tasks raise: an error that stopped ``serve`` (a port in use, a
    bad configuration) comes out as itself, so it prints as one line.
    """
    if isinstance(error, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = error  # pyright: ignore[reportUnknownVariableType]
        if len(group.exceptions) == 1:
            return _lone(group.exceptions[0])
        return group
    return error


def _config_check(config: Config, out: TextIO) -> int:
    """Print the effective configuration: the provider and model as resolved."""
    data = config.redacted()
    data["provider"] = config.default_provider
    data["model"] = config.default_model
    out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return 0


async def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._demo import run_demo

    progress = None
    if not args.no_progress:
        progress = _ProgressBar(err, enabled=err.isatty())
    summary = await run_demo(out, calls=args.calls, offline=args.offline or None, progress=progress)
    if progress is not None:
        progress.close()
    return 0 if summary.failed == 0 else EXIT_ERROR


class _ProgressBar:
    """A one-line progress bar on a terminal (a line per 10% otherwise)."""

    def __init__(self, stream: TextIO, *, enabled: bool, width: int = 30) -> None:
        self._stream = stream
        self._enabled = enabled
        self._width = width
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        fraction = done / total
        if self._enabled:
            filled = round(self._width * fraction)
            bar = "#" * filled + "." * (self._width - filled)
            self._stream.write(f"\r[{bar}] {done}/{total}")
            self._stream.flush()
            return
        decile = int(fraction * 10)
        if decile != self._last_decile:
            self._last_decile = decile
            self._stream.write(f"progress: {done}/{total}\n")

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")


# -- entry point -----------------------------------------------------------------------------


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    command = args.command
    if command == "demo":
        if args.runtime:
            from ._demo_runtime import run_runtime_demo

            run_runtime_demo(out, jobs=args.calls)
            return 0
        if not args.verbose:  # the summary reports retries and fallbacks
            logging.getLogger("llm_invocation").setLevel(logging.ERROR)
        return trio.run(_demo, args, out, err)
    if command == "tokens":
        return _tokens(args, out)
    config = _load_config(args)
    if command == "config":
        return _config_check(config, out)
    if command in ("chat", "complete", "models", "serve"):
        _announce(config, err)
    runners = {
        "chat": _chat,
        "complete": _complete,
        "models": _models,
        "usage": _usage,
        "serve": _serve,
    }
    return trio.run(partial(runners[command], args, config, out, err))


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command line; returns the process exit status.

    Every `LLMError` (configuration included), an unreadable ledger and an operating-system
    error print as one line on stderr with status 1; a keyboard interrupt exits with 130.
    Tracebacks only with ``--verbose``.
    """
    out = out if out is not None else cast("TextIO", sys.stdout)
    err = err if err is not None else cast("TextIO", sys.stderr)
    args = _build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return _run(args, out, err)
    except LLMError as error:
        if args.verbose:
            raise
        err.write(f"error: {error} ({error.code.value})\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    except (OSError, LedgerError) as error:
        if args.verbose:
            raise
        err.write(f"error: {error}\n")
        return EXIT_ERROR
