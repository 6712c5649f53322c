"""Module-level tools for the sandbox tests: a sandboxed child imports them by name."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from llm_invocation.tools import SandboxLimits, ToolContext, tool

SMALL_MEMORY = 256 * 1024 * 1024


@tool(sandbox=True)
def read_env(name: str) -> str | None:
    """The value of the environment variable ``name`` in the process the tool runs in."""
    return os.environ.get(name)


@tool(sandbox=True)
def where(ctx: ToolContext) -> dict[str, object]:
    """The id of the process that runs the tool, and the call it runs for."""
    return {"pid": os.getpid(), "call_id": ctx.call_id}


@tool(sandbox=True)
async def add_async(a: int, b: int) -> int:
    """Add two numbers in an async function."""
    await trio.sleep(0)
    return a + b


@tool(sandbox=True)
def chatty(text: str) -> str:
    """Print to stdout, then answer: prints must not corrupt the answer."""
    print("noise on stdout")
    return text.upper()


@tool(sandbox=True)
def fail(message: str) -> None:
    """Raise ValueError(message)."""
    raise ValueError(message)


@tool(sandbox=True)
def sleep_forever(pid_file: str) -> None:
    """Write this process's id to ``pid_file``, then sleep until killed."""
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        time.sleep(3600)


@tool(sandbox=SandboxLimits(memory=SMALL_MEMORY))
def allocate(megabytes: int) -> int:
    """Allocate ``megabytes`` MiB and return how many bytes that was."""
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


@tool(sandbox=SandboxLimits(cpu_time=1))
def spin() -> None:
    """Burn CPU until the limit stops it."""
    while True:
        pass


@tool(sandbox=SandboxLimits(wall_time=0.5))
def nap(seconds: float) -> None:
    """Sleep ``seconds`` (beyond the half-second wall-clock limit)."""
    time.sleep(seconds)


@tool
def pid() -> int:
    """The id of the process that runs the tool (sandboxed when the executor says so)."""
    return os.getpid()


@tool(sandbox=False)
def pid_in_process() -> int:
    """Like `pid`, but never sandboxed."""
    return os.getpid()
