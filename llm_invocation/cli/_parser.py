"""Private: an argument parser that writes where it is told and reports a mistake in one line.

`Parser` is `argparse.ArgumentParser` with its output sent to the streams the command line
was given (so ``--help``, ``--version`` and usage errors can be read by whoever runs it in
process) and its errors said in one line: ``error: <what>`` followed by where to find help,
with exit status 2 raised as `ParserExit`. The argument types refuse what makes no sense
(a count of zero, a port out of range, a temperature that is not a finite non-negative
number) with a message that says so.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO, final

__all__ = [
    "EXIT_USAGE",
    "Parser",
    "ParserExit",
    "Streams",
    "VersionAction",
    "count",
    "port",
    "temperature",
]

EXIT_USAGE = 2


class ParserExit(Exception):
    """The parser is done: ``--help`` or ``--version`` was printed, or the arguments are bad."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@final
class Streams:
    """Where a parser writes: ``out`` for help and version, ``err`` for errors."""

    __slots__ = ("err", "out")

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` writing to `Streams` and failing in one line."""

    def __init__(self, *args: Any, streams: Streams, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams = streams

    def print_usage(self, file: Any = None) -> None:
        super().print_usage(self.streams.out if file is None else file)

    def print_help(self, file: Any = None) -> None:
        super().print_help(self.streams.out if file is None else file)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self.streams.err.write(message)
        raise ParserExit(status)

    def error(self, message: str) -> NoReturn:
        flat = " ".join(message.split())
        self.streams.err.write(f"error: {flat} (see '{self.prog} --help')\n")
        raise ParserExit(EXIT_USAGE)

    def _print_message(self, message: str, file: Any = None) -> None:
        if not message:
            return
        if file is None or file is sys.stdout:
            file = self.streams.out
        elif file is sys.stderr:
            file = self.streams.err
        file.write(message)


class VersionAction(argparse.Action):
    """``--version``: print the program's name and version to the output and stop."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, version: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.version = version

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        out = parser.streams.out if isinstance(parser, Parser) else sys.stdout
        out.write(f"{parser.prog} {self.version}\n")
        parser.exit(0)


def count(text: str) -> int:
    """A whole number of at least 1 (a number of calls or of tokens).

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def temperature(text: str) -> float:
    """A finite number of at least 0.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text!r}")
    return value
