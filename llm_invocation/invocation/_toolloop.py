"""The automatic tool loop: model, tool calls, results, model again, streamed throughout.

``client.invoke(request, tool_mode="auto")`` returns a `ToolLoopStream`. It yields the
chunks of every step as they arrive, a `ToolCallsEvent` when a step ends with tool calls, and
a `ToolResultsEvent` once the executor has run them (in parallel, with timeouts: a failing
tool becomes an error result the model can read). The results go back in the next request,
in each provider's own format via its codec (OpenAI tool messages, Anthropic tool_result
blocks, Gemini functionResponse parts), images returned by tools included, where each API
takes them (``docs/tools.md``, "Images from tools"), and the loop continues until the model
stops calling tools or ``max_steps`` requests have been made. Usage and cost add up across
the steps.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, final

import msgspec

from ..errors import LLMError, ToolExecutionFailed
from ..runtime import ActorError
from ..tools._core import ToolResult, result_message
from ..types import Message, Request, Response, StreamChunk, ToolCall, Usage
from ._stream import InvocationStream

if TYPE_CHECKING:
    from ._invoker import Invoker

__all__ = ["LoopItem", "ToolCallsEvent", "ToolLoopStream", "ToolResultsEvent"]


class ToolCallsEvent(msgspec.Struct, frozen=True, kw_only=True, tag="tool_call"):
    """Step ``step`` ended with these tool calls; they run next."""

    step: int
    calls: list[ToolCall]

    @property
    def type(self) -> Literal["tool_call"]:
        return "tool_call"


class ToolResultsEvent(msgspec.Struct, frozen=True, kw_only=True, tag="tool_result"):
    """The results of step ``step``'s tool calls, in the order of the calls."""

    step: int
    results: list[ToolResult]

    @property
    def type(self) -> Literal["tool_result"]:
        return "tool_result"


LoopItem = StreamChunk | ToolCallsEvent | ToolResultsEvent


def _sum_usage(total: Usage | None, usage: Usage | None) -> Usage | None:
    if usage is None:
        return total
    return usage if total is None else total + usage


@final
class ToolLoopStream:
    """An automatic tool loop, streamed: see the module documentation.

    ::

        async with client.invoke(request, tool_mode="auto") as loop:
            async for item in loop:
                match item:
                    case llm.StreamChunk(text=text): print(text, end="")
                    case llm.ToolCallsEvent(calls=calls): ...
                    case llm.ToolResultsEvent(results=results): ...
        print(loop.response.text, loop.response.usage)
    """

    def __init__(
        self,
        invoker: Invoker,
        request: Request,
        *,
        max_steps: int,
        timeout: float | None,
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self._invoker = invoker
        self._request = request
        self._messages: list[Message] = list(request.messages)
        self._max_steps = max_steps
        self._timeout = timeout
        self._step = 0
        self._stream: InvocationStream | None = None
        self._pending: list[ToolCallsEvent | ToolResultsEvent] = []
        self._usage: Usage | None = None
        self._response: Response | None = None
        self._entered = False
        self.steps: list[Response] = []
        """The response of every step, in order."""

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a tool loop can be entered only once")
        self._entered = True
        await self._open_step()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.__aexit__(exc_type, exc, tb)

    async def _open_step(self) -> None:
        request = msgspec.structs.replace(self._request, messages=list(self._messages))
        stream = self._invoker.stream(request, timeout=self._timeout, step=self._step)
        await stream.__aenter__()
        self._stream = stream

    # -- iteration -----------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LoopItem:
        if not self._entered:
            raise RuntimeError("use `async with client.invoke(..., tool_mode='auto')` first")
        while True:
            if self._pending:
                return self._pending.pop(0)
            stream = self._stream
            if stream is None:
                raise StopAsyncIteration
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                pass
            self._stream = None
            await stream.__aexit__(None, None, None)
            response = stream.response
            self.steps.append(response)
            self._usage = _sum_usage(self._usage, response.usage)
            self._step += 1
            calls = response.tool_calls
            if not calls or self._step >= self._max_steps:
                self._finish(response, pending_calls=bool(calls))
                raise StopAsyncIteration
            await self._run_tools(response, calls)

    async def _run_tools(self, response: Response, calls: list[ToolCall]) -> None:
        step = self._step - 1
        self._pending.append(ToolCallsEvent(step=step, calls=calls))
        try:
            results = await self._invoker.execute_tools(calls)
        except (LLMError, ActorError) as exc:
            raise ToolExecutionFailed(f"the tool executor failed: {exc}") from exc
        self._pending.append(ToolResultsEvent(step=step, results=results))
        self._messages.append(response.message)
        self._messages.extend(result_message(result) for result in results)
        await self._open_step()

    def _finish(self, last: Response, *, pending_calls: bool) -> None:
        metadata = dict(last.metadata or {})
        metadata["steps"] = self._step
        metadata["tool_calls"] = sum(len(r.tool_calls) for r in self.steps[:-1])
        if pending_calls:
            metadata["max_steps_reached"] = True
        self._response = msgspec.structs.replace(last, usage=self._usage, metadata=metadata)

    # -- results -------------------------------------------------------------------------------

    async def aggregate(self) -> Response:
        """Run the loop to its end and return the final response (usage summed).

        Raises:
            LLMError: a step failed.
        """
        async for _ in self:
            pass
        return self.response

    @property
    def response(self) -> Response:
        """The last step's response, with the usage and cost of every step summed.

        ``metadata`` says how many ``steps`` ran, how many ``tool_calls`` were executed, and
        ``max_steps_reached`` when the model still wanted tools at the limit.

        Raises:
            RuntimeError: the loop has not ended yet.
        """
        if self._response is None:
            raise RuntimeError("the tool loop has not ended yet: iterate it or await aggregate()")
        return self._response

    @property
    def usage(self) -> Usage | None:
        """Usage of the steps finished so far."""
        return self._usage

    @property
    def messages(self) -> list[Message]:
        """The conversation so far: the request's messages, then each step's assistant
        message and tool results."""
        return list(self._messages)
