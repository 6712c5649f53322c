"""The interactive chat on a real terminal (a pseudo-terminal): its lines, Ctrl-D and Ctrl-C."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

CTRL_C = b"\x03"
CTRL_D = b"\x04"
#: How long anything may take that waits on the child's start-up or a reply.
PATIENCE = 30.0
#: How long the session may take to say it was interrupted after Ctrl-C: "at once", on a
#: loaded machine (it takes some 20-40 ms). The interpreter's own exit comes after that.
AT_ONCE = 2.0


class Terminal:
    """``llm-invocation chat`` with a pseudo-terminal as its controlling terminal."""

    def __init__(self, data: Path) -> None:
        self.master, slave = os.openpty()
        self.settings = termios.tcgetattr(self.master)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith("_API_KEY") and not k.startswith("LLM_")
        }
        env["XDG_DATA_HOME"] = str(data)

        def take_the_terminal() -> None:  # Ctrl-C reaches the foreground process group
            import fcntl

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "llm_invocation", "chat"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=take_the_terminal,  # runs after setsid: the terminal can be taken
        )
        os.close(slave)
        self.seen = b""

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait_for(self, pattern: bytes, *, after: int = 0) -> int:
        """Read until ``pattern`` (a regular expression) shows after offset ``after``;
        return the offset of its end."""
        deadline = time.monotonic() + PATIENCE
        compiled = re.compile(pattern)
        while (found := compiled.search(self.seen, after)) is None:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(left, 0))
            if not ready:
                pytest.fail(f"{pattern!r} did not show in {PATIENCE}s; seen: {self.seen!r}")
            self.read_some()
        return found.end()

    def read_some(self) -> bool:
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: every process holding the terminal is gone
            return False
        self.seen += chunk
        return bool(chunk)

    def read_the_rest(self) -> str:
        while select.select([self.master], [], [], 0)[0] and self.read_some():
            pass
        return self.seen.decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    session = Terminal(tmp_path / "user-data")
    try:
        yield session
    finally:
        session.close()


def ask(terminal: Terminal, text: str, *, after: int) -> tuple[int, int, int]:
    """Type ``text`` at the prompt; return (prompt tokens, completion tokens, offset)."""
    terminal.type(text.encode() + b"\n")
    end = terminal.wait_for(
        rb"\[mock:mock\] (\d+) prompt \+ (\d+) completion[^\n]*\n> ", after=after
    )
    usage = re.search(rb"(\d+) prompt \+ (\d+) completion", terminal.seen[after:end])
    assert usage is not None
    return int(usage[1]), int(usage[2]), end


def test_an_interactive_session_keeps_the_history(terminal: Terminal) -> None:
    start = terminal.wait_for(rb"> ")
    first_prompt, first_reply, after = ask(terminal, "first", after=start)
    second_prompt, _, after = ask(terminal, "second", after=after)
    terminal.type(b"/exit\n")
    assert terminal.process.wait(timeout=PATIENCE) == 0
    shown = terminal.read_the_rest()
    assert "You said: first" in shown and "You said: second" in shown
    # The second turn sends the first question and its answer along with the new line.
    assert second_prompt >= first_prompt + first_reply + 1


def test_ctrl_d_at_the_prompt_ends_the_session_with_status_0(terminal: Terminal) -> None:
    terminal.wait_for(rb"> ")
    terminal.type(CTRL_D)
    assert terminal.process.wait(timeout=PATIENCE) == 0
    assert "Traceback" not in terminal.read_the_rest()


def test_ctrl_c_at_the_prompt_ends_the_session_at_once_with_130(terminal: Terminal) -> None:
    start = terminal.wait_for(rb"> ")
    pressed = time.monotonic()
    terminal.type(CTRL_C)
    terminal.wait_for(rb"interrupted\r?\n", after=start)
    assert time.monotonic() - pressed < AT_ONCE
    assert terminal.process.wait(timeout=PATIENCE) == 130
    shown = terminal.read_the_rest()
    assert "Traceback" not in shown
    said = [line for line in shown[start:].splitlines() if line.strip() not in ("", "^C")]
    assert said == ["interrupted"]


def test_ctrl_c_leaves_the_terminal_settings_as_they_were(terminal: Terminal) -> None:
    terminal.wait_for(rb"> ")
    terminal.type(CTRL_C)
    assert terminal.process.wait(timeout=PATIENCE) == 130
    assert termios.tcgetattr(terminal.master) == terminal.settings
