"""The child side of the tool sandbox: ``python -m llm_invocation.tools._sandbox_worker``.

Reads a `SandboxRequest` (JSON) from stdin, limits its own address space and CPU time, imports
the tool by ``module:qualname``, runs it and writes a `SandboxReply` (JSON) to the original
stdout. What the tool prints goes to stderr, so it cannot corrupt the answer.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from typing import Any, BinaryIO

import msgspec

from ..errors import LLMError
from ._core import describe_error, to_result
from ._decorator import FunctionTool
from ._sandbox import SandboxFailure, SandboxReply, SandboxRequest, memory_message

__all__ = ["main"]


def main() -> int:
    """Run one sandboxed tool call; the exit status is 0 whenever an answer was written."""
    answer: BinaryIO = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the tool's prints go to stderr
    raw = sys.stdin.buffer.read()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        request = msgspec.json.decode(raw, type=SandboxRequest)
    except msgspec.DecodeError as exc:
        failure = SandboxFailure(message=f"bad sandbox request: {exc}", reason="sandbox_failed")
        reply = SandboxReply(error=failure)
    else:
        _limit(request)
        reply = _run(request)
    with answer:
        answer.write(msgspec.json.encode(reply))
    return 0


def _limit(request: SandboxRequest) -> None:
    import resource  # POSIX only; the parent refuses to sandbox elsewhere

    def cap(kind: int, soft: int, hard: int) -> None:
        _, current = resource.getrlimit(kind)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(kind, (soft, hard))

    cap(resource.RLIMIT_CORE, 0, 0)
    cpu = max(1, math.ceil(request.cpu_time))
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)
    cap(resource.RLIMIT_AS, request.memory, request.memory)


def _run(request: SandboxRequest) -> SandboxReply:
    call_id = request.context.call_id if request.context is not None else ""
    try:
        tool = _resolve(request.target)
        call = tool.bind(request.arguments, context=request.context)
        if tool.is_async:
            import trio

            value: Any = trio.run(call)
        else:
            value = call()
        return SandboxReply(result=to_result(value, call_id=call_id, name=request.name))
    except MemoryError:
        failure = SandboxFailure(
            message=memory_message(request.name, request.memory),
            reason="memory_limit",
            details={"limit": request.memory},
        )
    except Exception as exc:  # noqa: BLE001 - any failure of the tool is its answer
        details = exc.info().details or {} if isinstance(exc, LLMError) else {}
        reason = details.pop("reason", None)
        failure = SandboxFailure(
            message=describe_error(exc),
            reason=reason if isinstance(reason, str) else "tool_execution_failed",
            details=details,
        )
    return SandboxReply(error=failure)


def _resolve(target: str) -> FunctionTool[..., Any]:
    module_name, _, qualname = target.partition(":")
    found: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    if isinstance(found, FunctionTool):
        return found  # pyright: ignore[reportUnknownVariableType]
    if callable(found):
        return FunctionTool(found, sandbox=False)
    raise TypeError(f"{target} is not a function")


if __name__ == "__main__":
    sys.exit(main())
