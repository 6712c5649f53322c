"""The tool executor actor: parallel batches, limits, failures as results, audit, sandbox."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from llm_invocation.actors.tools import (
    ExecuteTools,
    ExecutorStatistics,
    ExecutorStats,
    ToolExecutor,
    ToolsMsg,
)
from llm_invocation.config import ToolsConfig
from llm_invocation.runtime import ActorRef, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.tools import SandboxLimits, Tool, ToolRegistry, ToolResult, tool
from llm_invocation.types import ToolCall

from . import sandboxed_tools

AUDIT = "llm_invocation.tools.audit"


@asynccontextmanager
async def running(*tools: Tool, **options: Any) -> AsyncGenerator[ActorRef[ToolsMsg]]:
    registry = ToolRegistry(tools)
    spec = SupervisorSpec(
        children=[ChildSpec.actor("tools", lambda: ToolExecutor(registry, **options))]
    )
    async with open_runtime(spec) as runtime:
        yield runtime.ref("tools", ToolExecutor)


def call(name: str, call_id: str = "c1", /, **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=json.dumps(arguments))


async def run(ref: ActorRef[ToolsMsg], *calls: ToolCall) -> list[ToolResult]:
    return await ref.call(ExecuteTools(calls=list(calls)))


async def stats(ref: ActorRef[ToolsMsg]) -> ExecutorStatistics:
    return await ref.call(ExecutorStats())


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def nap(seconds: float) -> str:
    """Sleep a while."""
    await trio.sleep(seconds)
    return "rested"


@tool(timeout=0.5)
async def hasty(seconds: float) -> str:
    """Sleep a while, with half a second to do it."""
    await trio.sleep(seconds)
    return "rested"


@tool
async def explode(message: str) -> None:
    """Raise RuntimeError(message)."""
    raise RuntimeError(message)


@tool
async def double(x: int) -> int:
    """Twice x (async: no thread, so autojump_clock tests can use it)."""
    return 2 * x


# -- batches -------------------------------------------------------------------------------


async def test_the_calls_of_a_batch_run_at_the_same_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = trio.Event(), trio.Event()

    @tool
    async def ping() -> str:
        first.set()
        await second.wait()  # only returns if pong runs while ping waits
        return "ping"

    @tool
    async def pong() -> str:
        second.set()
        await first.wait()
        return "pong"

    async with running(ping, pong, timeout=5) as ref:
        results = await run(ref, call("ping", "a"), call("pong", "b"))
    assert [r.content for r in results] == ["ping", "pong"]


async def test_results_come_in_the_order_of_the_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    later_done = trio.Event()

    @tool
    async def waits() -> str:
        await later_done.wait()
        return "first call, finished last"

    @tool
    async def quick() -> str:
        later_done.set()
        return "second call, finished first"

    async with running(waits, quick) as ref:
        results = await run(ref, call("waits", "a"), call("quick", "b"))
    assert [(r.call_id, r.name) for r in results] == [("a", "waits"), ("b", "quick")]
    assert results[0].content == "first call, finished last"


async def test_the_concurrency_limit_bounds_running_calls_across_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = peak = 0

    @tool
    async def busy() -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await trio.sleep(1)
        now -= 1

    async with running(busy, max_concurrency=2) as ref:
        async with trio.open_nursery() as nursery:
            for batch in range(3):
                calls = [call("busy", f"{batch}-{i}") for i in range(3)]
                nursery.start_soon(run, ref, *calls)
        assert (await stats(ref)).executed == 9
    assert peak == 2


async def test_a_call_carries_how_long_it_took(autojump_clock: trio.testing.MockClock) -> None:
    async with running(nap) as ref:
        [result] = await run(ref, call("nap", seconds=3))
    assert result.duration == pytest.approx(3.0)


async def test_an_empty_batch_has_no_results() -> None:
    async with running(add) as ref:
        assert await run(ref) == []


async def test_a_tool_that_is_not_a_function_tool_runs_too() -> None:
    class Echo:
        name = "echo"
        description = "Echo the arguments."
        parameters: dict[str, Any] = {"type": "object"}  # noqa: RUF012 - read only

        async def execute(self, arguments: dict[str, Any]) -> Any:
            return arguments

    async with running(Echo()) as ref:
        [result] = await run(ref, call("echo", x=1))
    assert (result.content, result.data) == ('{"x":1}', {"x": 1})


def test_the_executor_follows_the_tools_configuration() -> None:
    config = ToolsConfig(timeout=5.0, max_concurrency=3, sandbox=True)
    executor = ToolExecutor.from_config(ToolRegistry(), config, redact_tool_arguments=False)
    assert (executor.timeout, executor.sandbox, executor.audit_arguments) == (
        5.0,
        SandboxLimits(),
        True,
    )
    assert executor.statistics().max_concurrency == 3


# -- failures become results ---------------------------------------------------------------


async def test_a_tool_that_runs_too_long_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with running(nap, timeout=2) as ref:
        [result] = await run(ref, call("nap", seconds=10))
    assert (result.is_error, result.error_code) == (True, "timeout")
    assert result.content == "Error: tool 'nap' did not finish within 2 seconds"
    assert result.duration == pytest.approx(2.0)


async def test_a_tools_own_timeout_wins_over_the_executors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(hasty, timeout=60) as ref:
        [slow, fast] = await run(
            ref, call("hasty", "a", seconds=1), call("hasty", "b", seconds=0.1)
        )
    assert slow.error_code == "timeout"
    assert fast.content == "rested"


async def test_a_tool_that_raises_gives_an_error_result_and_the_actor_lives_on() -> None:
    async with running(explode, add) as ref:
        [failed, fine] = await run(
            ref, call("explode", "a", message="boom"), call("add", "b", a=1, b=2)
        )
        again = await run(ref, call("add", a=2, b=2))
        assert ref.statistics().crashes == 0
    assert (failed.is_error, failed.error_code) == (True, "tool_execution_failed")
    assert failed.content == "Error: RuntimeError: boom"
    assert "Traceback" not in failed.content
    assert fine.content == "3"
    assert again[0].content == "4"


async def test_an_unknown_tool_is_reported_with_the_available_names() -> None:
    async with running(add, nap) as ref:
        [result] = await run(ref, call("subtract", a=1))
    assert (result.is_error, result.error_code, result.name) == (True, "tool_not_found", "subtract")
    assert result.content == (
        "Error: there is no tool named 'subtract'; the available tools are: add, nap"
    )


async def test_an_unknown_tool_with_no_tools_registered_says_so() -> None:
    async with running() as ref:
        [result] = await run(ref, call("anything"))
    assert "no tools are registered" in result.content


async def test_arguments_that_are_not_json_are_invalid_arguments() -> None:
    async with running(add) as ref:
        [result] = await run(ref, ToolCall(id="c1", name="add", arguments='{"a": 1,'))
    assert (result.is_error, result.error_code) == (True, "invalid_arguments")
    assert "not valid JSON" in result.content


async def test_arguments_that_are_not_an_object_are_invalid_arguments() -> None:
    async with running(add) as ref:
        [result] = await run(ref, ToolCall(id="c1", name="add", arguments="[1, 2]"))
    assert result.error_code == "invalid_arguments"
    assert "must be a JSON object" in result.content


async def test_arguments_that_do_not_fit_name_the_offending_path() -> None:
    async with running(add) as ref:
        [result] = await run(ref, call("add", a=1, b="two"))
    assert result.error_code == "invalid_arguments"
    assert result.content.startswith("Error: invalid arguments for tool 'add' at $.b:")
    assert result.data == {"reason": "invalid_arguments", "path": "$.b", "tool": "add"}


async def test_lax_arguments_are_converted_before_the_call() -> None:
    async with running(add) as ref:
        [result] = await run(ref, call("add", a="40", b=2))
    assert (result.content, result.data) == ("42", 42)


async def test_statistics_count_outcomes(autojump_clock: trio.testing.MockClock) -> None:
    async with running(double, explode, nap, timeout=1) as ref:
        await run(
            ref,
            call("double", "a", x=1),
            call("explode", "b", message="x"),
            call("nap", "c", seconds=5),
            call("missing", "d"),
        )
        seen = await stats(ref)
    assert (seen.batches, seen.executed, seen.succeeded, seen.failed, seen.timed_out) == (
        1,
        4,
        1,
        2,
        1,
    )
    assert (seen.running, seen.cancelled, seen.max_concurrency) == (0, 0, 16)


# -- cancellation --------------------------------------------------------------------------


async def test_cancelling_the_caller_cancels_every_running_tool() -> None:
    started = [trio.Event(), trio.Event()]
    cancelled = [trio.Event(), trio.Event()]

    @tool
    async def wait_forever(index: int) -> None:
        started[index].set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled[index].set()
            raise

    async with running(wait_forever) as ref:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                calls = [call("wait_forever", f"c{i}", index=i) for i in range(2)]
                nursery.start_soon(run, ref, *calls)
                for event in started:
                    await event.wait()
                nursery.cancel_scope.cancel()
            for event in cancelled:
                await event.wait()
        assert (await stats(ref)).cancelled == 2


async def test_cancelling_abandons_the_thread_of_a_sync_tool() -> None:
    started = trio.Event()
    release = threading.Event()

    @tool
    def block() -> str:
        trio.from_thread.run_sync(started.set)
        release.wait(30)
        return "released"

    executor = ToolExecutor(ToolRegistry([block]))
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(executor.execute, [call("block")])
                await started.wait()
                nursery.cancel_scope.cancel()
        assert not release.is_set()  # the call ended while its thread was still blocked
        assert executor.statistics().cancelled == 1
    finally:
        release.set()


# -- the audit log -------------------------------------------------------------------------


def audit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == AUDIT]


async def test_every_execution_is_audited_without_its_arguments_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    async with running(add) as ref:
        await run(ref, call("add", "c1", a=1, b=2), call("nope", "c2"))
    records = {r.call_id: r for r in audit_records(caplog)}  # type: ignore[attr-defined]
    first, second = records["c1"], records["c2"]
    assert first.levelno == logging.INFO
    assert (first.tool, first.call_id, first.outcome) == ("add", "c1", "ok")  # type: ignore[attr-defined]
    assert isinstance(first.duration, float)  # type: ignore[attr-defined]
    assert (second.tool, second.outcome) == ("nope", "tool_not_found")  # type: ignore[attr-defined]
    assert not hasattr(first, "arguments")
    assert first.getMessage().startswith("tool add call c1: ok in ")
    assert '"a"' not in first.getMessage()


async def test_the_audit_log_has_the_arguments_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    async with running(add, audit_arguments=True) as ref:
        await run(ref, call("add", a=1, b=2))
    [record] = audit_records(caplog)
    assert record.arguments == '{"a": 1, "b": 2}'  # type: ignore[attr-defined]
    assert '{"a": 1, "b": 2}' in record.getMessage()


async def test_secrets_in_audited_arguments_are_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz123456"

    @tool
    def login(api_key: str, note: str) -> str:
        return "ok"

    caplog.set_level(logging.INFO, logger=AUDIT)
    async with running(login, audit_arguments=True) as ref:
        await run(ref, call("login", api_key=key, note=f"the key is {key}"))
    [record] = audit_records(caplog)
    assert key not in record.getMessage()
    assert json.loads(record.arguments) == {  # type: ignore[attr-defined]
        "api_key": "***",
        "note": "the key is sk-***",
    }


async def test_timeouts_and_failures_are_audited_with_their_error_code(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    async with running(nap, explode, timeout=1) as ref:
        await run(ref, call("nap", "a", seconds=5), call("explode", "b", message="x"))
    outcomes = {r.call_id: r.outcome for r in audit_records(caplog)}  # type: ignore[attr-defined]
    assert outcomes == {"a": "timeout", "b": "tool_execution_failed"}


# -- the sandbox ---------------------------------------------------------------------------


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def read_pid(fifo: Path) -> int:
    """Wait for the sandboxed tool to write its pid into the named pipe ``fifo``."""
    return int(await trio.to_thread.run_sync(fifo.read_text, abandon_on_cancel=True))


async def test_a_sandboxed_tool_runs_in_another_process_with_its_call_id() -> None:
    async with running(sandboxed_tools.where) as ref:
        [result] = await run(ref, call("where", "call-42"))
    assert not result.is_error, result.content
    assert result.data["pid"] != os.getpid()
    assert result.data["call_id"] == "call-42"
    assert_gone(result.data["pid"])


async def test_api_keys_never_reach_a_sandboxed_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-children-1234567890")
    monkeypatch.setenv("HOME", "/home/sandbox-test")
    async with running(sandboxed_tools.read_env) as ref:
        [key, home] = await run(
            ref,
            call("read_env", "a", name="OPENAI_API_KEY"),
            call("read_env", "b", name="HOME"),
        )
    assert (key.is_error, key.content, key.data) == (False, "null", None)
    assert home.content == "/home/sandbox-test"  # the minimal environment is kept


async def test_a_sandboxed_async_tool_runs_under_trio() -> None:
    async with running(sandboxed_tools.add_async) as ref:
        [result] = await run(ref, call("add_async", a=2, b=3))
    assert (result.content, result.data) == ("5", 5)


async def test_what_a_sandboxed_tool_prints_does_not_corrupt_its_answer() -> None:
    async with running(sandboxed_tools.chatty) as ref:
        [result] = await run(ref, call("chatty", text="hi"))
    assert result.content == "HI"


async def test_a_sandboxed_tools_exception_is_an_error_result() -> None:
    async with running(sandboxed_tools.fail) as ref:
        [result] = await run(ref, call("fail", message="out of luck"))
    assert (result.error_code, result.content) == (
        "tool_execution_failed",
        "Error: ValueError: out of luck",
    )


async def test_invalid_arguments_of_a_sandboxed_tool_are_reported() -> None:
    async with running(sandboxed_tools.fail) as ref:
        [result] = await run(ref, call("fail"))
    assert result.error_code == "invalid_arguments"
    assert "$.message" in result.content


async def test_a_sandboxed_tool_over_its_memory_limit_gets_an_error_result() -> None:
    async with running(sandboxed_tools.allocate) as ref:
        [big, small] = await run(
            ref, call("allocate", "a", megabytes=1024), call("allocate", "b", megabytes=1)
        )
    assert big.is_error
    assert big.content == "Error: tool 'allocate' exceeded the sandbox memory limit of 256 MiB"
    assert small.data == 1024 * 1024


async def test_a_sandboxed_tool_over_its_cpu_limit_is_stopped() -> None:
    async with running(sandboxed_tools.spin) as ref:
        [result] = await run(ref, call("spin"))
    assert result.is_error
    assert "CPU time limit of 1 s" in result.content


async def test_a_sandboxed_tool_over_its_wall_clock_limit_times_out() -> None:
    async with running(sandboxed_tools.nap) as ref:
        [result] = await run(ref, call("nap", seconds=30))
    assert result.error_code == "timeout"
    assert "wall-clock limit of 0.5 s" in result.content


async def test_a_sandboxed_tool_that_times_out_is_killed(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    executor = ToolExecutor(ToolRegistry([sandboxed_tools.sleep_forever]), timeout=3)
    results: list[ToolResult] = []

    async def execute() -> None:
        results.extend(await executor.execute([call("sleep_forever", pid_file=str(fifo))]))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute)
            pid = await read_pid(fifo)
            os.kill(pid, 0)  # alive while the call runs
    assert results[0].error_code == "timeout"
    assert_gone(pid)


async def test_cancelling_the_batch_kills_the_sandboxed_process(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    executor = ToolExecutor(ToolRegistry([sandboxed_tools.sleep_forever]))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.execute, [call("sleep_forever", pid_file=str(fifo))])
            pid = await read_pid(fifo)
            os.kill(pid, 0)  # alive while the call runs
            nursery.cancel_scope.cancel()
    assert_gone(pid)
    assert executor.statistics().cancelled == 1


async def test_an_executor_wide_sandbox_runs_the_tools_that_allow_it() -> None:
    async with running(
        sandboxed_tools.pid, sandboxed_tools.pid_in_process, sandbox=SandboxLimits()
    ) as ref:
        [sandboxed, in_process] = await run(ref, call("pid", "a"), call("pid_in_process", "b"))
    assert sandboxed.data != os.getpid()
    assert in_process.data == os.getpid()


async def test_without_an_executor_wide_sandbox_tools_run_in_process() -> None:
    async with running(sandboxed_tools.pid) as ref:
        [result] = await run(ref, call("pid"))
    assert result.data == os.getpid()


async def test_an_executor_wide_sandbox_leaves_tools_it_cannot_import_in_process() -> None:
    @tool
    def local_pid() -> int:
        return os.getpid()

    async with running(local_pid, sandbox=True) as ref:
        [result] = await run(ref, call("local_pid"))
    assert result.data == os.getpid()
