"""The tool executor: runs a batch of tool calls in parallel, with timeouts and an audit log.

`ExecuteTools` answers with one `ToolResult` per call, in the order of the calls. Failures
never crash the actor: an unknown tool (``tool_not_found``, listing the available names),
arguments that are not a JSON object or do not fit the parameters (``invalid_arguments``), a
tool that runs out of time (``timeout``) or raises (``tool_execution_failed``) each become an
error result the model can read and act on.

The calls of a batch run concurrently, bounded by one `trio.CapacityLimiter` shared by every
batch (``max_concurrency``); each has its own deadline (the tool's ``timeout``, else the
executor's), counted from when it starts running. A caller that gives up cancels its batch:
async tools see `trio.Cancelled`, sync tools' worker threads are abandoned, sandboxed tools'
processes are killed and reaped.

Every execution is logged on ``llm_invocation.tools.audit`` at INFO, with the fields
``tool``, ``call_id``, ``duration``, ``outcome`` (``ok``, an error code, or ``cancelled``)
as ``extra`` attributes of the record, and ``arguments`` (scrubbed of secrets) only when the
executor was made with ``audit_arguments=True``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, cast, final

import msgspec
import trio

from .._secrets import redact
from ..errors import InvalidRequest, ToolExecutionFailed
from ..runtime import Actor, Call, Context
from ..tools._core import (
    Tool,
    ToolContext,
    ToolRegistry,
    ToolResult,
    error_result,
    to_result,
)
from ..tools._decorator import FunctionTool
from ..tools._sandbox import SandboxLimits
from ..types import ToolCall

if TYPE_CHECKING:
    from ..config import ToolsConfig
    from ..observability._telemetry import Telemetry

__all__ = [
    "ExecuteTools",
    "ExecutorStatistics",
    "ExecutorStats",
    "ToolExecutor",
    "ToolsMsg",
]

audit_log = logging.getLogger("llm_invocation.tools.audit")

_AUDIT_ARGUMENTS_MAX: Final = 4096


class ExecuteTools(Call[list[ToolResult]], frozen=True, kw_only=True):
    """Run ``calls``; the answer has one result per call, in the same order.

    ``trace`` is the W3C ``traceparent`` of the caller's span, the parent of the calls'
    spans (when tracing is on).
    """

    calls: list[ToolCall]
    trace: str | None = None


@final
class ExecutorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What the executor has done since it (re)started.

    Attributes:
        running: calls running now (holding a slot of ``max_concurrency``).
        waiting: calls waiting for a slot.
        batches: `ExecuteTools` messages handled.
        executed: calls finished (successfully or not; cancelled ones are not counted).
        succeeded: calls with a result that is not an error.
        failed: error results other than timeouts (``failed`` + ``timed_out`` + ``succeeded``
            = ``executed``).
        timed_out: calls that ran out of time.
        cancelled: calls cancelled with their caller.
        max_concurrency: the limit of calls running at once.
    """

    running: int
    waiting: int
    batches: int
    executed: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    max_concurrency: int


class ExecutorStats(Call[ExecutorStatistics], frozen=True, kw_only=True):
    """Ask for the executor's `ExecutorStatistics`."""


ToolsMsg = ExecuteTools | ExecutorStats


@final
class ToolExecutor(Actor[ToolsMsg]):
    """The tool executor actor; see the module documentation.

    Args:
        registry: where tools are looked up, by name, at every call (tools may come and go).
        timeout: seconds a call may run when its tool has no ``timeout`` of its own.
        max_concurrency: calls running at once across all batches.
        audit_arguments: put the call's arguments (scrubbed of secrets) in the audit log.
        sandbox: True or `SandboxLimits`: run ``@tool`` functions that allow it in a
            subprocess (see `FunctionTool.sandbox_allowed`); tools that ask for the sandbox
            themselves always get it.
        telemetry: the client's spans and metrics (``execute_tool`` spans, MCP calls'
            spans, calls counted by outcome); None: off.
    """

    max_concurrency = 1024  # handlers mostly wait on tools: many batches at once

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        timeout: float = 60.0,
        max_concurrency: int = 16,
        audit_arguments: bool = False,
        sandbox: bool | SandboxLimits = False,
        telemetry: Telemetry | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.registry = registry
        self.timeout = timeout
        self.audit_arguments = audit_arguments
        self.sandbox: SandboxLimits | None = (
            SandboxLimits() if sandbox is True else sandbox if sandbox is not False else None
        )
        self._limiter = trio.CapacityLimiter(max_concurrency)
        self.telemetry = telemetry
        self._batches = 0
        self._succeeded = 0
        self._failed = 0
        self._timed_out = 0
        self._cancelled = 0

    @classmethod
    def from_config(
        cls,
        registry: ToolRegistry,
        config: ToolsConfig,
        *,
        redact_tool_arguments: bool = True,
        telemetry: Telemetry | None = None,
    ) -> ToolExecutor:
        """An executor set up by the ``tools`` configuration section.

        ``redact_tool_arguments`` is ``logging.redact_tool_arguments``: when it is False the
        audit log carries the arguments (still scrubbed of secrets).
        """
        return cls(
            registry,
            timeout=config.timeout,
            max_concurrency=config.max_concurrency,
            sandbox=config.sandbox,
            audit_arguments=not redact_tool_arguments,
            telemetry=telemetry,
        )

    async def handle(self, msg: ToolsMsg, ctx: Context) -> Any:
        match msg:
            case ExecuteTools(calls=calls, trace=trace):
                return await self.execute(calls, trace=trace)
            case ExecutorStats():
                return self.statistics()

    def statistics(self) -> ExecutorStatistics:
        limiter = self._limiter.statistics()
        return ExecutorStatistics(
            running=limiter.borrowed_tokens,
            waiting=limiter.tasks_waiting,
            batches=self._batches,
            executed=self._succeeded + self._failed + self._timed_out,
            succeeded=self._succeeded,
            failed=self._failed,
            timed_out=self._timed_out,
            cancelled=self._cancelled,
            max_concurrency=int(limiter.total_tokens),
        )

    async def execute(self, calls: list[ToolCall], *, trace: str | None = None) -> list[ToolResult]:
        """Run ``calls`` concurrently and return one result per call, in their order.

        A failing call gives an error result, never an exception; cancellation cancels every
        call of the batch (and counts them as ``cancelled``). The actor's handler calls this;
        it also works on an executor used without a runtime. ``trace`` is the parent of the
        calls' spans (see `ExecuteTools`).
        """
        self._batches += 1
        results: list[ToolResult | None] = [None] * len(calls)
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                if self.telemetry is None:
                    nursery.start_soon(self._run, call, index, results)
                else:
                    nursery.start_soon(self._run_traced, call, index, results, trace)
        assert all(result is not None for result in results)  # every task stored its result
        return cast("list[ToolResult]", results)

    # -- one call -----------------------------------------------------------------------------

    async def _run(self, call: ToolCall, index: int, results: list[ToolResult | None]) -> None:
        start = trio.current_time()
        outcome = "cancelled"
        try:
            result = await self._outcome(call)
            outcome = result.error_code or "ok"
            result = msgspec.structs.replace(result, duration=trio.current_time() - start)
            results[index] = result
        finally:
            self._count(outcome)
            self._audit(call, outcome, trio.current_time() - start)

    async def _run_traced(
        self, call: ToolCall, index: int, results: list[ToolResult | None], trace: str | None
    ) -> None:
        telemetry = self.telemetry
        assert telemetry is not None
        outcome = "cancelled"
        with telemetry.tool_span(call, trace) as span:
            try:
                await self._run(call, index, results)
                result = results[index]
                outcome = (result.error_code or "ok") if result is not None else "cancelled"
                span.outcome(outcome, result)
            finally:
                if outcome == "cancelled":
                    span.outcome(outcome)
                telemetry.tool_done(call.name, outcome)

    async def _outcome(self, call: ToolCall) -> ToolResult:
        try:
            tool = self.registry.get(call.name)
        except ToolExecutionFailed:
            available = self.registry.names()
            listing = ", ".join(available) if available else "none (no tools are registered)"
            return error_result(
                f"there is no tool named {call.name!r}; the available tools are: {listing}",
                call_id=call.id,
                name=call.name,
                code="tool_not_found",
            )
        try:
            arguments = call.parsed_arguments()
        except InvalidRequest as exc:
            return error_result(exc, call_id=call.id, name=call.name, code="invalid_arguments")
        own = getattr(tool, "timeout", None)
        timeout = own if isinstance(own, int | float) and own > 0 else self.timeout
        value: Any = None
        async with self._limiter:
            with trio.move_on_after(timeout) as scope:
                try:
                    value = await self._invoke(tool, call, arguments)
                except Exception as exc:  # noqa: BLE001 - a failing tool is an error result
                    return error_result(exc, call_id=call.id, name=call.name)
        if scope.cancelled_caught:
            return error_result(
                f"tool {call.name!r} did not finish within {timeout:g} seconds",
                call_id=call.id,
                name=call.name,
                code="timeout",
            )
        return to_result(value, call_id=call.id, name=call.name)

    async def _invoke(self, tool: Tool, call: ToolCall, arguments: dict[str, Any]) -> Any:
        if not isinstance(tool, FunctionTool):
            telemetry = self.telemetry
            server, remote = getattr(tool, "server", None), getattr(tool, "remote_name", None)
            if telemetry is None or not isinstance(server, str) or not isinstance(remote, str):
                return await tool.execute(arguments)
            with telemetry.mcp_span(server, remote) as span:  # an MCP server's tool
                result = await tool.execute(arguments)
                span.outcome(getattr(result, "error_code", None) or "ok")
                return result
        function_tool = cast("FunctionTool[..., Any]", tool)
        sandbox = None  # the tool's own setting
        executor_wide = self.sandbox is not None and function_tool.sandbox is None
        if executor_wide and function_tool.sandbox_allowed:
            sandbox = self.sandbox
        context = ToolContext(call_id=call.id, call=call)
        return await function_tool.execute(arguments, context=context, sandbox=sandbox)

    def _count(self, outcome: str) -> None:
        if outcome == "ok":
            self._succeeded += 1
        elif outcome == "cancelled":
            self._cancelled += 1
        elif outcome == "timeout":
            self._timed_out += 1
        else:
            self._failed += 1

    def _audit(self, call: ToolCall, outcome: str, duration: float) -> None:
        if not audit_log.isEnabledFor(logging.INFO):
            return
        extra: dict[str, Any] = {
            "tool": call.name,
            "call_id": call.id,
            "duration": duration,
            "outcome": outcome,
        }
        if self.audit_arguments:
            arguments = redact(call.arguments)
            if len(arguments) > _AUDIT_ARGUMENTS_MAX:
                arguments = arguments[:_AUDIT_ARGUMENTS_MAX] + "...[truncated]"
            extra["arguments"] = arguments
            audit_log.info(
                "tool %s call %s: %s in %.3fs, arguments %s",
                call.name,
                call.id,
                outcome,
                duration,
                arguments,
                extra=extra,
            )
        else:
            audit_log.info(
                "tool %s call %s: %s in %.3fs", call.name, call.id, outcome, duration, extra=extra
            )
