"""Starts a stdio MCP server so that it dies with its host, even on SIGTERM or SIGKILL.

Run as ``python -I -S _launcher.py HOST_PID COMMAND [ARGS...]`` (standard library only, so
it starts in a few milliseconds and needs nothing on the path). On Linux the connection
starts every stdio server through it (`launch_command`):

- the launcher forks the server and stays as its parent; the server's stdin and stdout are
  the launcher's (the host's pipes), and the launcher lets go of its own copies;
- the server is given the parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so
  it is killed if the launcher is;
- the launcher watches the host (a ``pidfd``, else polling its parent pid): when the host
  is gone, however it ended, it sends SIGTERM to the process group (the server and what
  it started), waits up to 2 s and sends SIGKILL;
- it forwards SIGTERM, SIGINT and SIGHUP to the server and exits as the server does.

The parent-death signal cannot be set on the server straight from the host: trio starts
processes from a worker thread, and the signal follows the *thread* that forked, which
ends when idle. Elsewhere than Linux there is no launcher: a server outlives a host that is
killed (a normal exit, an exception, a cancellation or SIGINT still stop it).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Final

__all__ = ["LAUNCHER", "launch_command"]

LAUNCHER: Final = str(Path(__file__).resolve())
_PR_SET_PDEATHSIG: Final = 1
# Seconds between SIGTERM and SIGKILL once the host is gone.
_GRACE: Final = 2.0
# Seconds between looks at the parent pid when pidfds are not available.
_POLL: Final = 0.25


def launch_command(command: str, args: list[str]) -> tuple[str, list[str]]:
    """The command and arguments that start ``command`` through the launcher (Linux only).

    Elsewhere ``command`` and ``args`` are returned unchanged.
    """
    if sys.platform != "linux":
        return command, args
    return sys.executable, ["-I", "-S", LAUNCHER, str(os.getpid()), command, *args]


def _set_parent_death_signal(signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _exec_server(launcher: int, command: list[str]) -> None:
    """In the forked child: die with the launcher, then become the server."""
    try:
        _set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != launcher:  # the launcher died before the signal was set
            os._exit(1)
        os.execvp(command[0], command)  # noqa: S606 - the configured server, as the user gave it
    except OSError as exc:
        sys.stderr.write(f"could not start {command[0]!r}: {exc}\n")
        sys.stderr.flush()
    os._exit(127)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _stop_group(child: int) -> int:
    """The host is gone: SIGTERM the group, SIGKILL it after the grace; the exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)
    deadline = time.monotonic() + _GRACE
    while time.monotonic() < deadline:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return _exit_code(status)
        time.sleep(0.02)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(os.getpgrp(), signal.SIGKILL)
    return 137


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: _launcher.py HOST_PID COMMAND [ARGS...]\n")
        return 2
    host, command = int(argv[1]), argv[2:]
    if os.getppid() != host:  # the host is gone already
        return 1
    host_fd = _pidfd(host)
    launcher = os.getpid()
    child = os.fork()
    if child == 0:
        _exec_server(launcher, command)
    # Only the server holds the host's pipes now: its exit is what the host sees.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    child_fd = _pidfd(child)
    watched = [fd for fd in (host_fd, child_fd) if fd is not None]
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return _exit_code(status)
        if os.getppid() != host:
            return _stop_group(child)
        timeout = None if host_fd is not None and child_fd is not None else _POLL
        readable, _, _ = select.select(watched, [], [], timeout)
        if host_fd is not None and host_fd in readable:
            return _stop_group(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
