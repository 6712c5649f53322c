"""The ``llm-invocation`` command line (also ``python -m llm_invocation``).

::

    llm-invocation chat "Explain trio nurseries"        # one-shot, streamed to the terminal
    cat notes.txt | llm-invocation chat "summarize"     # the piped text, then the prompt
    llm-invocation chat                                  # interactive session (on a terminal)
    llm-invocation chat -m mock:mock-large -s "be brief" "hello"
    llm-invocation complete "Once upon a time"
    llm-invocation models [--provider openai]            # the names -m accepts
    llm-invocation tokens -m gpt-4o "some text"
    llm-invocation usage [--ledger usage.sqlite3] [--group-by provider,model]
    llm-invocation serve [--host 127.0.0.1] [--port 8765]
    llm-invocation config check
    llm-invocation demo [--calls 200]
    llm-invocation --version

Configuration comes from the environment (``LLM_*`` and the providers' keys), an optional
``--config`` YAML file (before or after the command) and the options. When none of them names
a provider or gives a key, the built-in mock provider answers, and the command says so; a
provider that needs a key and has none is an error (``missing_api_key``).

``chat`` and ``complete`` record their usage in the configuration's ``ledger_path``, else in
``${XDG_DATA_HOME:-~/.local/share}/llm-invocation/ledger.sqlite3``, which ``usage`` reads;
``--no-log`` or ``LLM_LEDGER=off`` turns that default ledger off.

Errors print as one line on stderr with a non-zero exit status (2 for a bad command line);
Ctrl-C exits with status 130. Tracebacks only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import msgspec
import trio

from .._version import __version__
from ..config import Config
from ..errors import ConfigurationError, InvalidRequest, LLMError
from ..observability._logging import use_log_format
from ..store.ledger import LedgerError
from ._input import LineReader, is_terminal, piped_text, prompt_text
from ._interrupt import Interrupt, interruptible
from ._parser import (
    Parser,
    ParserExit,
    Streams,
    VersionAction,
    count,
    port,
    temperature,
)
from ._paths import config_source, default_ledger_path, ledger_wanted

if TYPE_CHECKING:
    from ..client import Client
    from ..types import ModelInfo, Response

__all__ = ["main"]

EXIT_ERROR: Final = 1
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


def _build_parser(streams: Streams) -> Parser:
    parser = Parser(
        prog="llm-invocation",
        description="A trio-native runtime for invoking LLMs.",
        streams=streams,
    )
    parser.add_argument(
        "--version", action=VersionAction, version=__version__, help="print the version and exit"
    )
    _common_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> Parser:
        sub = commands.add_parser(name, help=help, description=help, streams=streams)
        _common_options(sub, top=False)
        return sub

    def invoke_options(sub: Parser) -> None:
        sub.add_argument("-m", "--model", help="the model, as 'models' lists it (provider:model)")
        sub.add_argument(
            "-s", "--system", help="a system prompt (complete then asks the chat endpoint)"
        )
        sub.add_argument("--provider", help="the provider (default: from the configuration)")
        sub.add_argument("--max-tokens", type=count, help="limit the reply's length")
        sub.add_argument("--temperature", type=temperature, help="sampling temperature")
        sub.add_argument("--json", action="store_true", help="print the response as JSON")
        sub.add_argument(
            "-n",
            "--no-log",
            action="store_true",
            help="do not record the usage in the default ledger (also: LLM_LEDGER=off)",
        )

    chat = command("chat", "chat with a model (interactive on a terminal without PROMPT)")
    chat.add_argument("prompt", nargs="*", help="the message, after any piped standard input")
    invoke_options(chat)

    complete = command("complete", "complete a prompt")
    complete.add_argument("prompt", nargs="*", help="the prompt, after any piped standard input")
    invoke_options(complete)

    models = command("models", "list the models that can be used, by the name -m takes")
    models.add_argument("--provider", help="only this provider")
    models.add_argument("--json", action="store_true", help="print JSON")

    tokens = command("tokens", "count the tokens of a text for a model")
    tokens.add_argument("text", nargs="*", help="the text (default: piped standard input)")
    tokens.add_argument("-m", "--model", default="gpt-4o", help="the model (default gpt-4o)")

    usage = command("usage", "a usage report from the ledger")
    usage.add_argument("--ledger", help="the SQLite ledger (default: ledger_path, else the user's)")
    usage.add_argument(
        "--group-by",
        default="provider,model",
        help="comma-separated: provider, model, status, tag:<name>, period:hour|day|month",
    )
    usage.add_argument("--json", action="store_true", help="print JSON")

    serve = command("serve", "serve the WebSocket front and the chat page")
    serve.add_argument("--host", help="address to listen on (default: websocket.host)")
    serve.add_argument("--port", type=port, help="port (default: websocket.port)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback --host without tokens (anyone who reaches it can spend)",
    )

    config = command("config", "configuration commands")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check", help="validate and print the effective configuration", streams=streams
    )
    _common_options(check, top=False)

    demo = command("demo", "run the main job (offline unless a key is set)")
    demo.add_argument("--calls", type=count, default=200, help="number of concurrent calls")
    demo.add_argument("--offline", action="store_true", help="ignore API keys; use the fake server")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument(
        "--runtime", action="store_true", help="the bare actor runtime demo (no providers)"
    )
    return parser


def _common_options(parser: Parser, *, top: bool) -> None:
    """``-v`` and ``--config``, taken before or after the command (the later one wins)."""
    unset: Any = None if top else argparse.SUPPRESS  # a command's parser leaves them alone
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="log with tracebacks",
    )
    parser.add_argument(
        "--config", metavar="FILE", default=unset, help="a YAML configuration file (or YAML text)"
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        default=os.environ.get("LLM_LOG_LEVEL", "warning").lower() if top else argparse.SUPPRESS,
        help="the library's log level (default: LLM_LOG_LEVEL, else warning)",
    )


# -- configuration -------------------------------------------------------------------------------


def _load_config(args: argparse.Namespace) -> Config:
    keywords: dict[str, Any] = {}
    provider = getattr(args, "provider", None)
    model = getattr(args, "model", None)
    if provider:
        keywords["provider"] = provider
    if model:
        keywords["model"] = model
    if args.config is None:
        return Config.load(**keywords)
    return Config.load(yaml=config_source(args.config), **keywords)


def _with_default_ledger(args: argparse.Namespace, config: Config) -> Config:
    """``config`` recording its usage in the user's ledger, unless one is configured or the
    user opted out.

    Raises:
        ConfigurationError: ``LLM_LEDGER`` is invalid, or the ledger's folder cannot be made.
    """
    if config.ledger_path is not None or not ledger_wanted(os.environ, no_log=args.no_log):
        return config
    path = default_ledger_path(os.environ)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigurationError(
            f"cannot make the usage ledger's folder {os.fspath(path.parent)!r}: {reason} "
            "(pass --no-log or set LLM_LEDGER=off to record nothing)"
        ) from error
    return config.replace(ledger_path=os.fspath(path))


def _announce(config: Config, err: TextIO) -> None:
    """Say so when the mock answers because nothing names a provider or gives a key."""
    if config.mock_fallback:
        err.write(
            "note: no provider or API key configured: using the built-in mock provider "
            "(set LLM_API_KEY, OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, "
            "or LLM_PROVIDER, for a real model)\n"
        )


# -- commands ------------------------------------------------------------------------------------


def _prompt(args: argparse.Namespace, stdin: TextIO | None) -> str | None:
    """The prompt of ``chat`` or ``complete``; None for an interactive chat on a terminal.

    Raises:
        InvalidRequest: the prompt is empty, or there is none and no terminal to ask.
    """
    piped = piped_text(stdin)
    if piped is None and not args.prompt:
        if args.command == "chat" and is_terminal(stdin):
            return None
        raise InvalidRequest(
            "no prompt: give it as an argument or pipe it to standard input",
            details={"reason": "empty_prompt"},
        )
    return prompt_text(piped, args.prompt)


def _request_options(args: argparse.Namespace) -> dict[str, Any]:
    from ..types import ModelOptions

    options: dict[str, Any] = {}
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        options["temperature"] = args.temperature
    return {"options": ModelOptions(**options)} if options else {}


def _model(args: argparse.Namespace, config: Config, client: Client) -> str:
    """The model to ask: ``-m``, else the configured one, else the provider's first."""
    model = args.model or config.default_model
    if model is None:
        known = client.codec(config.default_provider).known_models()
        model = f"{config.default_provider}:{known[0].id}" if known else "default"
    return model


def _say(error: LLMError, err: TextIO) -> None:
    err.write(f"error: {_one_line(str(error))} ({error.code.value})\n")


async def _chat(
    args: argparse.Namespace,
    config: Config,
    prompt: str | None,
    stdin: TextIO | None,
    out: TextIO,
    err: TextIO,
    interrupt: Interrupt,
) -> int:
    from ..client import open_client
    from ..invocation import ToolCallsEvent
    from ..types import Message, Request, StreamChunk, system, user

    history: list[Message] = [system(args.system)] if args.system else []
    extra = _request_options(args)
    async with open_client(config) as client:
        model = _model(args, config, client)
        printed = False

        async def turn(text: str) -> None:
            nonlocal printed
            printed = False
            request = Request(model=model, messages=[*history, user(text)], **extra)
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
                        printed = True
            response = loop.response
            history[:] = [*loop.messages, response.message]
            if args.json:
                out.write(msgspec.json.encode(response).decode() + "\n")
            else:
                out.write("\n")
                printed = False  # the reply's line is ended
                _usage_line(response, err)
            out.flush()

        async def session() -> int:
            if prompt is not None:
                await turn(prompt)
                return 0
            assert stdin is not None  # an interactive session needs a terminal
            reader = LineReader(stdin.fileno(), encoding=stdin.encoding or "utf-8")
            err.write("interactive chat: type a message, /exit or Ctrl-D to quit\n")
            while True:
                err.write("> ")
                err.flush()
                try:
                    line = await reader.readline()
                except InvalidRequest as error:
                    _say(error, err)
                    continue
                if line is None:  # Ctrl-D
                    err.write("\n")
                    return 0
                if line.strip() in ("/exit", "/quit"):
                    return 0
                if not line.strip():
                    continue
                try:
                    await turn(line.strip())
                except LLMError as error:  # this turn failed; the session goes on without it
                    if printed:
                        out.write("\n")
                    _say(error, err)

        with interrupt.scope():
            try:
                return await session()
            except trio.Cancelled:  # Ctrl-C: what is said next gets a line of its own
                (out if printed else err).write("\n")
                raise
    return EXIT_INTERRUPTED


def _usage_line(response: Response, err: TextIO) -> None:
    usage = response.usage
    if usage is not None:
        cost = f", ${usage.cost:.6f}" if usage.cost is not None else ""
        err.write(
            f"[{response.provider}:{response.model}] {usage.prompt_tokens} prompt + "
            f"{usage.completion_tokens} completion tokens{cost}\n"
        )


async def _complete(
    args: argparse.Namespace,
    config: Config,
    prompt: str,
    out: TextIO,
    err: TextIO,
    interrupt: Interrupt,
) -> int:
    from ..client import open_client
    from ..types import CompletionRequest, system

    async with open_client(config) as client:
        with interrupt.scope():
            request = CompletionRequest(
                prompt=prompt, max_tokens=args.max_tokens, temperature=args.temperature
            ).to_request(_model(args, config, client))
            if args.system:  # the completions endpoint has no place for one: the chat's has
                request = msgspec.structs.replace(
                    request, messages=[system(args.system), *request.messages], metadata={}
                )
            if args.json:
                response = await client.invoke_sync(request)
                out.write(msgspec.json.encode(response.to_completion_response()).decode() + "\n")
                return 0
            async with client.invoke(request) as stream:
                async for item in stream:
                    if item.text:
                        out.write(item.text)
                        out.flush()
            out.write("\n")
            out.flush()
            return 0
    return EXIT_INTERRUPTED


async def _models(
    args: argparse.Namespace, config: Config, out: TextIO, err: TextIO, interrupt: Interrupt
) -> int:
    from ..client import open_client

    models: list[ModelInfo] | None = None
    async with open_client(config) as client:
        with interrupt.scope():
            models = _usable(config, client, await client.list_models(args.provider), args.provider)
    if models is None:  # Ctrl-C
        return EXIT_INTERRUPTED
    models.sort(key=lambda m: (m.provider, m.id))
    if args.json:
        rows = [{"name": _name(m), **msgspec.to_builtins(m)} for m in models]
        out.write(json.dumps(rows) + "\n")
        return 0
    for info in models:
        window = f"{info.context_window:>9,}" if info.context_window else f"{'-':>9}"
        features = ",".join(sorted(f.value for f in info.features))
        out.write(f"{_name(info):52} {window}  {features}\n")
    return 0


def _name(info: ModelInfo) -> str:
    """The name ``-m`` takes for ``info``."""
    return f"{info.provider}:{info.id}"


def _usable(
    config: Config, client: Client, listed: list[ModelInfo], provider: str | None
) -> list[ModelInfo]:
    """The models of ``listed`` a chat can use: the mock's own names (it answers any, but
    lists a sample), and of the others those that stream a chat and that the provider's
    configured ``models``, if any, allow."""
    from ..types import Feature

    names = [provider] if provider is not None else client.providers
    mocks = {name for name in names if client.codec(name).kind == "mock"}
    usable = [info for name in sorted(mocks) for info in client.codec(name).known_models()]
    for info in listed:
        if info.provider in mocks or Feature.STREAMING not in info.features:
            continue
        entry = config.providers.get(info.provider)
        if entry is not None and entry.models and info.id not in entry.models:
            continue
        usable.append(info)
    return usable


def _tokens(args: argparse.Namespace, stdin: TextIO | None, out: TextIO) -> int:
    from .. import tokens

    text = " ".join(args.text) if args.text else piped_text(stdin)
    if text is None:
        raise InvalidRequest(
            "no text to count: give it as an argument or pipe it to standard input"
        )
    count = tokens.count_text(text, model=args.model)
    encoding = tokens.encoding_for_model(args.model).name
    out.write(f"{count} tokens ({encoding}, {len(text)} characters)\n")
    return 0


async def _usage(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from ..store.ledger import open_ledger

    path = args.ledger or config.ledger_path
    if path is None:
        path = default_ledger_path(os.environ)
        if not await trio.Path(path).exists():
            raise ConfigurationError(
                f"no ledger at {os.fspath(path)!r}: nothing recorded yet (chat and complete "
                "record there; pass --ledger FILE or set ledger_path for another one)"
            )
    if not await trio.Path(path).exists():  # reading a report must not create an empty ledger
        raise ConfigurationError(f"no ledger at {os.fspath(path)!r}")
    group_by = tuple(part.strip() for part in args.group_by.split(",") if part.strip())
    async with open_ledger(path) as ledger:
        try:
            report = await ledger.report(group_by=group_by)
        except ValueError as error:  # a group key the ledger does not know
            raise InvalidRequest(f"--group-by: {error}") from error
    out.write((report.to_json().decode() if args.json else report.to_table()) + "\n")
    return 0


async def _serve(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from ._serve import serve_command

    return await serve_command(args, config, out, err)


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


def _run(args: argparse.Namespace, stdin: TextIO | None, out: TextIO, err: TextIO) -> int:
    command = args.command
    if command == "demo":
        if args.runtime:
            from ._demo_runtime import run_runtime_demo

            run_runtime_demo(out, jobs=args.calls)
            return 0
        if not args.verbose:  # the summary reports retries and fallbacks
            logging.getLogger("llm_invocation").setLevel(logging.ERROR)
        return trio.run(interruptible, _whole(partial(_demo, args, out, err)))
    if command == "tokens":
        return _tokens(args, stdin, out)
    config = _load_config(args)
    use_log_format(config.logging.format)  # JSON lines when the configuration says so
    if command == "config":
        return _config_check(config, out)
    if command in ("chat", "complete"):
        prompt = _prompt(args, stdin)
        config = _with_default_ledger(args, config)
        _announce(config, err)
        if command == "chat":
            chat = partial(_chat, args, config, prompt, stdin, out, err)
            return trio.run(partial(interruptible, chat, graceful=True))
        assert prompt is not None  # only a chat is interactive
        complete = partial(_complete, args, config, prompt, out, err)
        return trio.run(partial(interruptible, complete, graceful=True))
    if command in ("models", "serve"):
        _announce(config, err)
    if command == "serve":  # it handles SIGINT and SIGTERM itself, gracefully
        return trio.run(partial(_serve, args, config, out, err))
    if command == "models":
        models = partial(_models, args, config, out, err)
        return trio.run(partial(interruptible, models, graceful=True))
    return trio.run(interruptible, _whole(partial(_usage, args, config, out, err)))


def _whole(command: Callable[[], Awaitable[int]]) -> Callable[[Interrupt], Awaitable[int]]:
    """``command`` as one that Ctrl-C cancels as a whole (it opens no client)."""

    async def run(interrupt: Interrupt) -> int:
        del interrupt
        return await command()

    return run


def _one_line(text: str) -> str:
    """``text`` on one line: a heading and its list (``"2 problems\\n  - a\\n  - b"``) become
    ``"2 problems: a; b"``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    items = "; ".join(line.removeprefix("- ") for line in lines[1:])
    return f"{lines[0].rstrip(':')}: {items}"


def _interrupted(error: BaseException) -> bool:
    """Whether ``error`` is Ctrl-C, alone or in a (nested) exception group."""
    if isinstance(error, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = error  # pyright: ignore[reportUnknownVariableType]
        return group.subgroup(KeyboardInterrupt) is not None
    return isinstance(error, KeyboardInterrupt)


def _only(error: BaseException) -> BaseException:
    """The one exception a group (of groups) of one holds; else ``error`` itself."""
    while isinstance(error, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = error  # pyright: ignore[reportUnknownVariableType]
        if len(group.exceptions) != 1:
            return group
        error = group.exceptions[0]
    return error


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the command line; returns the process exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        out: where results go (default: standard output).
        err: where notes and errors go (default: standard error).
        stdin: where prompts are read (default: standard input); piped or redirected input
            is read whole, a terminal only by an interactive chat.

    Every `LLMError` (configuration included), an unreadable ledger and an operating-system
    error print as one line on ``err`` with status 1; a bad command line prints one line with
    status 2 (``--help`` and ``--version`` print to ``out`` with status 0); Ctrl-C exits with
    130. Tracebacks only with ``--verbose``.

    Raises:
        BaseException: with ``--verbose`` only, whatever failed, with its traceback.
    """
    out = out if out is not None else cast("TextIO", sys.stdout)
    err = err if err is not None else cast("TextIO", sys.stderr)
    stdin = stdin if stdin is not None else cast("TextIO | None", sys.stdin)
    try:
        args = _build_parser(Streams(out, err)).parse_args(argv)
    except ParserExit as done:
        return done.status
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    verbose = bool(args.verbose)
    try:
        _configure_logging(verbose, args.log_level)
        return _run(args, stdin, out, err)
    except BaseException as error:  # the command line ends here, in one line
        if _interrupted(error):
            err.write("interrupted\n")
            return EXIT_INTERRUPTED
        if verbose or not isinstance(error, Exception):
            raise  # SystemExit and other exits go on as they are
        return _report(_only(error), err)


def _report(error: BaseException, err: TextIO) -> int:
    """Print ``error`` as one line on ``err``; return the exit status."""
    if isinstance(error, LLMError):
        _say(error, err)
    elif isinstance(error, (OSError, LedgerError)):
        err.write(f"error: {_one_line(str(error))}\n")
    else:  # a failure nobody foresaw: still one line, with what it was
        name = type(error).__name__
        detail = _one_line(str(error))
        err.write(
            f"error: unexpected {name}{': ' + detail if detail else ''} "
            "(--verbose shows where it happened)\n"
        )
    return EXIT_ERROR
