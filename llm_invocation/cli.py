"""The ``llm-invocation`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial

__all__ = ["main"]


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


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLine("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("llm_invocation")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-invocation", description="A trio-native runtime for invoking LLMs."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log with tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the main job (offline unless a key is set)")
    demo.add_argument("--calls", type=int, default=200, help="number of concurrent calls")
    demo.add_argument("--offline", action="store_true", help="ignore API keys; use the fake server")
    demo.add_argument(
        "--runtime", action="store_true", help="the bare actor runtime demo (no providers)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    if args.command == "demo":
        if args.runtime:
            from ._demo_runtime import run_runtime_demo

            run_runtime_demo(sys.stdout, jobs=args.calls)
            return 0
        import trio

        from ._demo import run_demo

        if not args.verbose:  # the summary reports retries and fallbacks
            logging.getLogger("llm_invocation").setLevel(logging.ERROR)
        trio.run(partial(run_demo, sys.stdout, calls=args.calls, offline=args.offline or None))
    return 0
