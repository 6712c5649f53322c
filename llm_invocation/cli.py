"""The ``llm-invocation`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

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
    demo = commands.add_parser("demo", help="run the offline demo")
    demo.add_argument("--jobs", type=int, default=200, help="number of concurrent calls")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    if args.command == "demo":
        from ._demo_runtime import run_runtime_demo

        run_runtime_demo(sys.stdout, jobs=args.jobs)
    return 0
