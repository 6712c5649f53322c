"""Private: what the user types or pipes in: the prompt, and the lines of an interactive chat.

A prompt is made of standard input, when it is piped or redirected, and the words given on
the command line: the input first, then a blank line, then the words (the input alone when
no words are given). A terminal is never read for a prompt: it is where an interactive
session reads its lines. A prompt that is empty once stripped is refused.

`LineReader` reads the terminal's lines in a worker thread that trio abandons when the call
is cancelled, so Ctrl-C (trio's ``KeyboardInterrupt``) ends a session waiting at the prompt at
once. It reads the file descriptor itself with ``os.read``: no Python-level lock is held by
the abandoned thread and the terminal's settings are never changed.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Sequence
from typing import Final, TextIO, final

import trio

from ..errors import InvalidRequest

__all__ = ["LineReader", "is_terminal", "piped_text", "prompt_text"]

_CHUNK: Final = 64 * 1024


def is_terminal(stream: TextIO | None) -> bool:
    """Whether ``stream`` is an open terminal."""
    if stream is None:
        return False
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed, or no file behind it
        return False


def piped_text(stream: TextIO | None) -> str | None:
    """The whole text of standard input when it is piped or redirected, else None.

    A terminal, a closed stream and one that cannot be read give None: nothing is read.

    Raises:
        InvalidRequest: the input is not text in the stream's encoding, or reading it
            failed.
    """
    if stream is None or is_terminal(stream):
        return None
    try:
        if not stream.readable():
            return None
    except (OSError, ValueError):
        return None
    try:
        return stream.read()
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            f"standard input is not valid {error.encoding} text (byte {error.start})"
        ) from error
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InvalidRequest(f"cannot read standard input: {reason}") from error


def prompt_text(piped: str | None, words: Sequence[str]) -> str:
    """The prompt: ``piped`` (trailing whitespace removed), a blank line, then ``words``.

    Raises:
        InvalidRequest: the prompt is empty once stripped.
    """
    argument = " ".join(words)
    parts = [part for part in (piped.rstrip() if piped else "", argument) if part.strip()]
    if not parts:
        raise InvalidRequest("the prompt is empty", details={"reason": "empty_prompt"})
    return "\n\n".join(parts)


@final
class LineReader:
    """Lines of a file descriptor (a terminal), read in a worker thread trio may abandon."""

    def __init__(self, fd: int, *, encoding: str = "utf-8") -> None:
        self._fd = fd
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._pending = ""
        self._eof = False
        self._abandoned = False

    def _read(self) -> bytes:
        return os.read(self._fd, _CHUNK)

    async def readline(self) -> str | None:
        """The next line without its line ending; None at end of input (Ctrl-D).

        Raises:
            InvalidRequest: the line is not valid text (the reader goes on with the next).
            OSError: reading failed.
            trio.ClosedResourceError: an earlier read was abandoned by a cancellation.
        """
        if self._abandoned:
            raise trio.ClosedResourceError("an earlier read was abandoned")
        while "\n" not in self._pending and not self._eof:
            self._abandoned = True
            chunk = await trio.to_thread.run_sync(self._read, abandon_on_cancel=True)
            self._abandoned = False
            try:
                self._pending += self._decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                self._decoder.reset()
                self._pending = ""
                raise InvalidRequest(
                    f"the line is not valid {error.encoding} text", details={"reason": "encoding"}
                ) from error
            self._eof = not chunk
        if not self._pending:
            return None
        line, _, rest = self._pending.partition("\n")
        self._pending = rest
        return line.removesuffix("\r")
