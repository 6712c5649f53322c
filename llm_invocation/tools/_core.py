"""The tool protocol, tool results and the registry.

A tool is anything with a ``name``, a ``description``, JSON-schema ``parameters`` and an
async ``execute(arguments)``: local functions (the ``@tool`` decorator) and the tools of
MCP servers alike. The `ToolRegistry` holds them by name for the executor and the tool loop;
`ToolResult` is what a call produced, in the form every provider's codec can send back.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal, Protocol, cast, final, get_args, runtime_checkable

import msgspec

from .._secrets import redact
from ..errors import InvalidRequest, LLMError, ToolExecutionFailed
from ..types import ContentBlock, ImagePart, Message, TextPart, ToolCall, ToolSpec, tool_result

__all__ = [
    "MAX_RESULT_CHARS",
    "Tool",
    "ToolContext",
    "ToolErrorCode",
    "ToolRegistry",
    "ToolResult",
    "describe_error",
    "error_code_of",
    "error_result",
    "result_message",
    "to_result",
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

        The built-in tools (``@tool`` functions and MCP tools) return a `ToolResult`; any
        other value is made one by `to_result`.

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
        blocks: every content block as the tool returned it, typed, with its annotations
            and ``_meta`` (MCP tools fill it: audio, embedded resources and resource links
            are kept here; ``content`` and ``images`` are what the model gets of them).
    """

    call_id: str
    name: str
    content: str
    is_error: bool = False
    error_code: str | None = None
    data: Any = None
    images: list[ImagePart] = []
    duration: float = 0.0
    blocks: list[ContentBlock] = []


ToolErrorCode = Literal["tool_execution_failed", "timeout", "invalid_arguments", "tool_not_found"]
"""The ``error_code`` of a failed `ToolResult`."""

_ERROR_CODES: Final[frozenset[str]] = frozenset(get_args(ToolErrorCode))

MAX_RESULT_CHARS: Final = 100_000
"""Results whose text is longer than this many characters are cut, with a marker."""

_ENCODER: Final = msgspec.json.Encoder(order="deterministic")


@final
class ToolContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a ``@tool`` function can ask for by annotating a parameter with this type.

    The parameter is injected by the executor, not part of the schema the model sees::

        @tool
        async def search(query: str, ctx: ToolContext) -> list[str]:
            log.info("call %s searches %r", ctx.call_id, query)

    Attributes:
        call_id: the id of the `ToolCall` being executed ("" when the tool runs outside the
            executor, with ``execute`` called directly).
        call: the call itself, with the model's raw arguments.
    """

    call_id: str
    call: ToolCall


def _unwrap(error: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one, as a tool's nursery raises."""
    while isinstance(error, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", error)
        if len(group.exceptions) != 1:
            return group
        error = group.exceptions[0]
    return error


def error_code_of(error: BaseException) -> ToolErrorCode:
    """The ``error_code`` a result made from ``error`` carries.

    A `ToolExecutionFailed` whose ``details["reason"]`` is one of the codes has that code; an
    `InvalidRequest` (arguments that are not a JSON object) is ``invalid_arguments``;
    anything else is ``tool_execution_failed``. An exception group of one error counts as
    that error.
    """
    error = _unwrap(error)
    if isinstance(error, LLMError):
        reason = error.details.get("reason")
        if isinstance(error, ToolExecutionFailed) and reason in _ERROR_CODES:
            return cast("ToolErrorCode", reason)
        if isinstance(error, InvalidRequest):
            return "invalid_arguments"
    return "tool_execution_failed"


def describe_error(error: BaseException) -> str:
    """A one-line, secret-free description of ``error`` for the model (never a traceback).

    The library's own errors give their message; others are ``"<Type>: <message>"``.
    """
    error = _unwrap(error)
    if isinstance(error, LLMError):
        return error.message
    text = str(error).strip()
    kind = type(error).__name__
    return redact(f"{kind}: {text}" if text else kind)


def error_result(
    error: BaseException | str,
    *,
    call_id: str,
    name: str,
    code: ToolErrorCode | None = None,
    duration: float = 0.0,
    max_chars: int = MAX_RESULT_CHARS,
) -> ToolResult:
    """An error result: ``content`` is ``"Error: <message>"``, scrubbed of secrets.

    Args:
        error: the exception (its message is used) or the message itself.
        call_id: the id of the call it answers.
        name: the tool's name.
        code: the error code; by default `error_code_of` the exception
            (``tool_execution_failed`` for a plain message).
        duration: seconds the call took.
        max_chars: the longest ``content`` kept (longer messages are cut).
    """
    if isinstance(error, str):
        message = redact(error)
        details: dict[str, Any] | None = None
        found: ToolErrorCode = "tool_execution_failed"
    else:
        error = _unwrap(error)
        message = describe_error(error)
        details = error.info().details if isinstance(error, LLMError) else None
        found = error_code_of(error)
    return ToolResult(
        call_id=call_id,
        name=name,
        content=_truncate(f"Error: {message}", max_chars),
        is_error=True,
        error_code=code or found,
        data=details,
        duration=duration,
    )


def to_result(
    value: object,
    *,
    call_id: str,
    name: str,
    duration: float = 0.0,
    max_chars: int = MAX_RESULT_CHARS,
) -> ToolResult:
    """Turn what a tool returned (or raised) into the `ToolResult` sent back to the model.

    ========================================  =============================================
    value                                     result
    ========================================  =============================================
    ``str``                                   ``content`` as is
    Struct, dataclass, dict, list, number,    ``content`` compact JSON (dict keys sorted),
    bool, None, enum, datetime ...            ``data`` that JSON decoded to builtins
    `ImagePart`, or a list of text            ``images``, and the text joined as
    (``str`` / `TextPart`) and images         ``content``
    ``bytes``                                 base64 in a JSON object with a note
    an ``Exception``                          an error result (see `error_result`)
    a `ToolResult`                            itself, for this call
    ========================================  =============================================

    Text longer than ``max_chars`` is cut with a marker saying how much was left out; a cut
    result drops its ``data``. A value that cannot be encoded as JSON gives an error result.
    """
    if isinstance(value, BaseException):
        return error_result(
            value, call_id=call_id, name=name, duration=duration, max_chars=max_chars
        )
    if isinstance(value, ToolResult):
        return msgspec.structs.replace(value, call_id=call_id, name=name, duration=duration)
    images: list[ImagePart] = []
    data: Any = None
    if isinstance(value, str):
        content = value
    elif isinstance(value, TextPart):
        content = value.text
    elif isinstance(value, ImagePart):
        content, images = "", [value]
    elif (parts := _parts(value)) is not None:
        texts = [p if isinstance(p, str) else p.text for p in parts if not isinstance(p, ImagePart)]
        content = "\n".join(texts)
        images = [p for p in parts if isinstance(p, ImagePart)]
    else:
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(cast("bytes", value))
            value = {
                "encoding": "base64",
                "data": base64.b64encode(raw).decode("ascii"),
                "note": f"binary data of {len(raw)} bytes, base64-encoded",
            }
        try:
            encoded = _ENCODER.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return error_result(
                f"the tool returned a {type(value).__name__} that cannot be encoded as JSON: {exc}",
                call_id=call_id,
                name=name,
                duration=duration,
                max_chars=max_chars,
            )
        content = encoded.decode()
        if len(content) <= max_chars:
            data = msgspec.json.decode(encoded)  # exactly the JSON the model reads
    cut = _truncate(content, max_chars)
    return ToolResult(
        call_id=call_id,
        name=name,
        content=cut,
        data=data,
        images=images,
        duration=duration,
    )


def _parts(value: object) -> list[str | TextPart | ImagePart] | None:
    """``value`` as text and image parts, when it is a list or tuple of them with an image."""
    if not isinstance(value, list | tuple) or not value:
        return None
    items = cast("list[object] | tuple[object, ...]", value)
    if not any(isinstance(item, ImagePart) for item in items):
        return None
    if not all(isinstance(item, str | TextPart | ImagePart) for item in items):
        return None
    return cast("list[str | TextPart | ImagePart]", list(items))


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    marker = f"\n[... truncated: {{}} of {len(text)} characters omitted]"
    keep = max(0, max_chars - len(marker.format(len(text))))
    return text[:keep] + marker.format(len(text) - keep)


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

    def spec(self, name: str) -> ToolSpec:
        """The tool called ``name`` as a `ToolSpec`, to offer it in a request::

            Request(model=..., messages=[...], tools=[client.tools.spec("get_weather")])

        Raises:
            InvalidRequest: there is no such tool (``details['available']`` lists the names).
        """
        if name not in self._tools:
            raise InvalidRequest(
                f"no tool named {name!r} is registered",
                details={"field": "tools", "name": name, "available": sorted(self._tools)},
            )
        return self.specs([name])[0]

    def specs(self, names: Iterable[str] | None = None) -> list[ToolSpec]:
        """The tools (all, or those named) as `ToolSpec`s for a request.

        Raises:
            ToolExecutionFailed: a named tool does not exist.
        """
        chosen = self.list() if names is None else [self.get(name) for name in names]
        return [
            ToolSpec(
                name=t.name,
                description=t.description,
                parameters=t.parameters,
                strict=_strict_of(t),
            )
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


def _strict_of(tool: Tool) -> bool | None:
    """A tool's ``strict`` option (``@tool(strict=...)``), None for tools without one."""
    strict = getattr(tool, "strict", None)
    return strict if isinstance(strict, bool) else None
