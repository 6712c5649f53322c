"""The tool protocol, tool results and the registry.

A tool is anything with a ``name``, a ``description``, JSON-schema ``parameters`` and an
async ``execute(arguments)``: local functions (the ``@tool`` decorator) and the tools of
MCP servers alike. The `ToolRegistry` holds them by name for the executor and the tool loop;
`ToolResult` is what a call produced, in the form every provider's codec can send back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol, final, runtime_checkable

import msgspec

from .errors import InvalidRequest, ToolExecutionFailed
from .types import ImagePart, Message, TextPart, ToolSpec, tool_result

__all__ = [
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "result_message",
]

log = logging.getLogger("llm_invocation.tools")

_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@runtime_checkable
class Tool(Protocol):
    """What the model can call (the second specification's Tool interface).

    Attributes:
        name: unique in the registry, ``[a-zA-Z0-9_-]{1,64}`` (every provider accepts it).
        description: what the tool does, for the model.
        parameters: the JSON schema of the arguments object.
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    async def execute(self, arguments: dict[str, Any]) -> Any:
        """Run with the model's arguments; return anything JSON-able, text or images.

        Raises:
            Exception: any failure; the executor turns it into an error result.
        """
        ...


class ToolResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The outcome of one tool call, as it goes back to the model.

    Attributes:
        call_id: the id of the `ToolCall` it answers.
        name: the tool's name.
        content: the text the model reads (JSON for structured results).
        is_error: the call failed; ``content`` says how, so the model can correct itself.
        error_code: ``tool_execution_failed``, ``timeout``, ``invalid_arguments`` or
            ``tool_not_found`` when ``is_error``.
        data: the structured result, when there is one.
        images: images the tool returned (sent where the provider accepts them).
        duration: seconds the call took.
    """

    call_id: str
    name: str
    content: str
    is_error: bool = False
    error_code: str | None = None
    data: Any = None
    images: list[ImagePart] = []
    duration: float = 0.0


def result_message(result: ToolResult) -> Message:
    """The ``tool`` message that carries ``result`` back to the model."""
    if result.images:
        return tool_result(
            result.call_id,
            [*_text_parts(result.content), *result.images],
            name=result.name,
            is_error=result.is_error,
        )
    return tool_result(result.call_id, result.content, name=result.name, is_error=result.is_error)


def _text_parts(text: str) -> list[TextPart]:
    return [TextPart(text=text)] if text else []


@final
class ToolRegistry:
    """Tools by name. Registration and lookup are synchronous and cheap.

    Listeners (``on_change``) hear about every registration and removal, so a running
    client always offers the current tools (MCP servers add and remove theirs at run time).
    """

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._listeners: list[Callable[[], None]] = []
        for tool in tools:
            self.register(tool)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def register(self, tool: Tool, *, replace: bool = False) -> None:
        """Add ``tool``.

        Raises:
            InvalidRequest: its name is invalid, or taken (unless ``replace``).
        """
        name = tool.name
        if not _NAME.match(name):
            raise InvalidRequest(
                f"tool name {name!r} is invalid: use 1-64 letters, digits, '_' or '-'",
                details={"field": "name"},
            )
        if name in self._tools and not replace and self._tools[name] is not tool:
            raise InvalidRequest(
                f"a tool named {name!r} is already registered",
                details={"field": "name", "name": name},
            )
        self._tools[name] = tool
        self._changed()

    def unregister(self, name: str) -> bool:
        """Remove the tool called ``name``; return whether there was one."""
        removed = self._tools.pop(name, None) is not None
        if removed:
            self._changed()
        return removed

    def get(self, name: str) -> Tool:
        """The tool called ``name``.

        Raises:
            ToolExecutionFailed: there is none (``details['available']`` lists the names).
        """
        tool = self._tools.get(name)
        if tool is None:
            raise ToolExecutionFailed(
                f"no tool named {name!r}",
                details={"reason": "tool_not_found", "available": sorted(self._tools)},
            )
        return tool

    def list(self) -> list[Tool]:
        """Every tool, sorted by name."""
        return [self._tools[name] for name in sorted(self._tools)]

    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self, names: Iterable[str] | None = None) -> list[ToolSpec]:
        """The tools (all, or those named) as `ToolSpec`s for a request.

        Raises:
            ToolExecutionFailed: a named tool does not exist.
        """
        chosen = self.list() if names is None else [self.get(name) for name in names]
        return [
            ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
            for t in chosen
        ]

    async def execute(self, name: str, arguments: dict[str, Any]) -> Any:
        """Run a tool directly (without the executor's timeouts and error capture).

        Raises:
            ToolExecutionFailed: there is no such tool.
            Exception: whatever the tool raised.
        """
        return await self.get(name).execute(arguments)

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every change; returns a function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("tool registry listener failed")
