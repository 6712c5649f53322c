"""Running a tool in a subprocess with resource limits: the sandbox.

A sandboxed call starts ``python -m llm_invocation.tools._sandbox_worker`` in a new session with a
minimal environment (``PATH``, ``PYTHONPATH``, ``HOME``, ``LANG``: never the API keys of this
process), writes a `SandboxRequest` as JSON to its stdin and reads a `SandboxReply` from its
stdout. The worker limits its own address space and CPU time with ``resource.setrlimit``
before it imports the tool; the wall-clock limit is kept here. When the call is cancelled or
runs out of time the whole process group gets SIGTERM, then SIGKILL after a short grace, and
is reaped before this returns: no process is ever left behind.

The sandbox bounds resources and keeps secrets out of reach of the tool's environment; it is
not a security boundary against hostile code (the child runs as the same user, with the same
file system and network).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, final

import msgspec
import trio

from .._secrets import redact
from ..errors import ToolExecutionFailed
from ._core import ToolContext, ToolResult

__all__ = [
    "ENVIRONMENT_KEPT",
    "SandboxFailure",
    "SandboxLimits",
    "SandboxReply",
    "SandboxRequest",
    "child_environment",
    "memory_message",
    "module_root",
    "run_sandboxed",
]

MIB: Final = 1024 * 1024
KILL_GRACE: Final = 0.5
"""Seconds between SIGTERM and SIGKILL when a sandboxed call is stopped."""
_REAP_TIMEOUT: Final = 5.0
_MAX_REPLY_BYTES: Final = 64 * MIB
_STDERR_TAIL: Final = 8192
_WORKER: Final = "llm_invocation.tools._sandbox_worker"

ENVIRONMENT_KEPT: Final = ("PATH", "HOME", "LANG")
"""The variables of this process's environment a sandboxed child gets (plus ``PYTHONPATH``)."""


@final
class SandboxLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The resources a sandboxed tool call may use.

    Attributes:
        memory: bytes of address space (``RLIMIT_AS``) of the child process, interpreter
            included; allocations beyond it fail with an error result naming the limit.
        cpu_time: CPU seconds (``RLIMIT_CPU``) of the child, interpreter start included
            (about 0.3 s).
        wall_time: wall-clock seconds, kept by the parent; the executor's timeout also applies.

    Raises:
        ValueError: a limit is not positive.
    """

    memory: int = 512 * MIB
    cpu_time: float = 60.0
    wall_time: float = 60.0

    def __post_init__(self) -> None:
        if self.memory <= 0 or self.cpu_time <= 0 or self.wall_time <= 0:
            raise ValueError("sandbox limits must be positive")


class SandboxRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker runs: the tool at ``target`` (``module:qualname``) with ``arguments``."""

    target: str
    name: str
    arguments: dict[str, Any]
    context: ToolContext | None = None
    memory: int
    cpu_time: float


class SandboxFailure(msgspec.Struct, frozen=True, kw_only=True):
    """The tool failed in the child: a message for the model, a reason, error details."""

    message: str
    reason: str = "tool_execution_failed"
    details: dict[str, Any] = {}


class SandboxReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The worker's answer: exactly one of ``result`` and ``error``."""

    result: ToolResult | None = None
    error: SandboxFailure | None = None


_ENCODER: Final = msgspec.json.Encoder()
_REPLY_DECODER: Final = msgspec.json.Decoder(SandboxReply)


def module_root(module: str) -> str | None:
    """The ``sys.path`` entry from which the loaded module ``module`` was imported."""
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if not isinstance(file, str):
        return None
    path = Path(file).resolve()
    depth = module.count(".") + (1 if path.stem == "__init__" else 0)
    return str(path.parents[depth])


def child_environment(pythonpath: Sequence[str] = ()) -> dict[str, str]:
    """The whole environment of a sandboxed child: `ENVIRONMENT_KEPT` and ``PYTHONPATH``.

    ``PYTHONPATH`` is ``pythonpath`` followed by this process's own ``PYTHONPATH``.
    """
    env = {key: os.environ[key] for key in ENVIRONMENT_KEPT if key in os.environ}
    env.setdefault("PATH", os.defpath)
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    paths = list(dict.fromkeys(p for p in (*pythonpath, *inherited) if p))
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


async def run_sandboxed(
    request: SandboxRequest, *, wall_time: float, pythonpath: Sequence[str] = ()
) -> ToolResult:
    """Run ``request`` in a sandboxed child process and return the tool's result.

    The returned result's ``call_id`` and ``duration`` are the child's; callers set their own.

    Raises:
        ToolExecutionFailed: the tool failed (``details["reason"]`` as the worker reported),
            exceeded a limit (``timeout``, ``memory_limit``, ``cpu_limit``), or the child died
            without an answer (``sandbox_failed``).
    """
    if sys.platform == "win32":  # pragma: no cover - resource limits need POSIX
        raise ToolExecutionFailed(
            "the tool sandbox needs a POSIX system", details={"reason": "sandbox_failed"}
        )
    payload = _ENCODER.encode(request)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", _WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(pythonpath),
        start_new_session=True,
    )
    tail = bytearray()
    reply: bytes | None = b""
    try:
        with trio.move_on_after(wall_time) as wall:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_feed, process, payload)
                nursery.start_soon(_drain, process, tail)
                reply = await _read_reply(process)
                # The answer is in (or the child is gone): whatever is left of its process
                # group goes now, and stderr gets a moment to deliver its last lines.
                _signal_group(process, signal.SIGKILL)
                nursery.cancel_scope.deadline = trio.current_time() + KILL_GRACE
            await process.wait()
    finally:
        await _stop(process)
    if reply is None:
        raise ToolExecutionFailed(
            f"the answer of tool {request.name!r} exceeds {_MAX_REPLY_BYTES // MIB} MiB",
            details={"reason": "sandbox_failed"},
        )
    if wall.cancelled_caught:
        raise ToolExecutionFailed(
            f"tool {request.name!r} exceeded the sandbox wall-clock limit of {wall_time:g} s",
            details={"reason": "timeout", "limit": wall_time},
        )
    return _interpret(request, reply, process.returncode, bytes(tail))


async def _feed(process: trio.Process, payload: bytes) -> None:
    stdin = process.stdin
    assert stdin is not None
    try:
        await stdin.send_all(payload)
        await stdin.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the child exited before reading everything: its status says why


async def _drain(process: trio.Process, tail: bytearray) -> None:
    stderr = process.stderr
    assert stderr is not None
    try:
        while chunk := await stderr.receive_some():
            tail += chunk
            del tail[:-_STDERR_TAIL]
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _read_reply(process: trio.Process) -> bytes | None:
    """Everything the child writes to stdout; None when that is too much."""
    stdout = process.stdout
    assert stdout is not None
    reply = bytearray()
    while chunk := await stdout.receive_some():
        reply += chunk
        if len(reply) > _MAX_REPLY_BYTES:
            return None
    return bytes(reply)


def _signal_group(process: trio.Process, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


async def _stop(process: trio.Process) -> None:
    """Make sure the child and its group are dead and reaped, and the pipes closed."""
    with trio.move_on_after(KILL_GRACE + _REAP_TIMEOUT, shield=True):
        if process.returncode is None:
            _signal_group(process, signal.SIGTERM)
            with trio.move_on_after(KILL_GRACE):
                await process.wait()
            _signal_group(process, signal.SIGKILL)
        await process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


def _interpret(
    request: SandboxRequest, reply: bytes, status: int | None, tail: bytes
) -> ToolResult:
    if reply:
        try:
            answer = _REPLY_DECODER.decode(reply)
        except msgspec.DecodeError:
            answer = None
        if answer is not None and answer.result is not None:
            return answer.result
        if answer is not None and answer.error is not None:
            error = answer.error
            raise ToolExecutionFailed(
                error.message, details={**error.details, "reason": error.reason}
            )
    name = request.name
    stderr = tail.decode(errors="replace")
    if status in (-signal.SIGXCPU, -signal.SIGKILL):
        limit = math.ceil(request.cpu_time)
        how = "exceeded" if status == -signal.SIGXCPU else "was killed; it may have exceeded"
        raise ToolExecutionFailed(
            f"tool {name!r} {how} the sandbox CPU time limit of {limit} s",
            details={"reason": "cpu_limit", "limit": limit},
        )
    if "MemoryError" in stderr:
        raise ToolExecutionFailed(
            memory_message(name, request.memory),
            details={"reason": "memory_limit", "limit": request.memory},
        )
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    raise ToolExecutionFailed(
        f"the sandboxed process of tool {name!r} exited with status {status} without an answer"
        + (f": {redact(last.strip())}" if last else ""),
        details={"reason": "sandbox_failed", "status": status},
    )


def memory_message(name: str, memory: int) -> str:
    """What the model reads when tool ``name`` ran out of its ``memory`` bytes."""
    return f"tool {name!r} exceeded the sandbox memory limit of {memory / MIB:g} MiB"
