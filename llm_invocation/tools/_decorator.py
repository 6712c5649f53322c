"""The ``@tool`` decorator: a typed Python function as a `Tool` the model can call.

::

    @tool
    async def weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, float]:
        \"\"\"Current temperature in a city.

        Args:
            city: the city's name, in English.
            unit: Celsius or Fahrenheit.
        \"\"\"

The parameters become a msgspec Struct type, made once per tool with `msgspec.defstruct`;
its JSON schema (``msgspec.json.schema``) is the tool's ``parameters``, with the docstring's
``Args:`` descriptions folded in. The model's arguments are converted to that type in lax
mode (``"3"`` becomes ``3``) before the function runs, and a bad argument raises
`ToolExecutionFailed` with ``details["reason"] == "invalid_arguments"`` and the path of the
offending value, which the executor sends back to the model as an error it can correct.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
import sys
import types
import typing
from collections.abc import Awaitable, Callable, Mapping, Sized
from typing import Annotated, Any, Final, Generic, ParamSpec, TypeVar, cast, final, overload

import msgspec
import trio

from ..errors import ToolExecutionFailed
from ..types import ToolCall, ToolSpec
from ._core import ToolContext, ToolResult, to_result
from ._sandbox import SandboxLimits, SandboxRequest, module_root, run_sandboxed

__all__ = ["FunctionTool", "parse_docstring", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

_TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ARGS_SECTIONS: Final = frozenset({"args", "arguments", "parameters", "params"})
_SECTION: Final = re.compile(
    r"^(args|arguments|parameters|params|keyword args|keyword arguments|returns?|raises|"
    r"yields?|examples?|notes?|attributes|see also|warnings?|todo|references|methods)\s*:\s*$",
    re.IGNORECASE,
)
_ARG_LINE: Final = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_AT_PATH: Final = re.compile(r"^(?P<text>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_FIELD: Final = re.compile(
    r"^Object (?:missing required|contains unknown) field `(?P<field>[^`]+)`"
)
_MUTABLE: Final = (list, dict, set, bytearray)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its prose and its ``Args:`` descriptions.

    Returns:
        The text before the first section (``Args:``, ``Returns:``, ``Raises:`` ...), and a
        description per parameter name, continuation lines joined with spaces.
    """
    if not doc:
        return "", {}
    prose: list[str] = []
    arguments: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    entry_indent = 0
    for line in inspect.cleandoc(doc).splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(stripped) if indent == 0 else None
        if header is not None:
            section, current = header.group(1).lower(), None
            continue
        if section is None:
            prose.append(line)
            continue
        if section not in _ARGS_SECTIONS or not stripped:
            continue
        if indent == 0:
            section = current = None  # prose after the section
            prose.append(line)
            continue
        entry = _ARG_LINE.match(stripped)
        if entry is not None and (current is None or indent <= entry_indent):
            current, entry_indent = str(entry.group(1)), indent
            arguments[current] = str(entry.group(2)).strip()
        elif current is not None:
            arguments[current] = f"{arguments[current]} {stripped}".strip()
    return "\n".join(prose).strip(), arguments


@final
class FunctionTool(Generic[P, R]):
    """A Python function as a `Tool`: what ``@tool`` returns. Calling it calls the function.

    Attributes:
        name: the tool's name (the function's by default).
        description: for the model (the docstring's prose by default).
        parameters: the JSON schema of the arguments object.
        strict: ask the provider for schema-exact arguments (OpenAI ``strict``); None leaves
            the provider's default.
        timeout: seconds a call may take; None lets the executor decide.
        sandbox: the limits when every call runs in a subprocess, else None.
        function: the decorated function.
        arguments_type: the msgspec Struct type the arguments are converted to.
    """

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool | None = None,
        timeout: float | None = None,
        sandbox: bool | SandboxLimits | None = None,
    ) -> None:
        """Describe ``function`` as a tool; see `tool` for the options.

        Raises:
            TypeError: a parameter cannot be described to the model (``*args``, no annotation,
                a type without a JSON schema), or ``sandbox`` is asked of a function that
                cannot be imported by module and qualified name.
            ValueError: the name is not 1-64 letters, digits, ``_`` or ``-``, or the timeout
                is not positive.
        """
        if isinstance(function, FunctionTool):  # tool(tool(f)): describe f afresh
            function = cast("Callable[P, R]", function.function)
        self._function = function
        qualname = getattr(function, "__qualname__", None) or repr(function)
        self._name = name if name is not None else getattr(function, "__name__", "")
        if not _TOOL_NAME.match(self._name):
            raise ValueError(
                f"tool name {self._name!r} is invalid: use 1-64 letters, digits, '_' or '-'"
            )
        if timeout is not None and not timeout > 0:
            raise ValueError(f"the timeout of tool {self._name!r} must be positive")
        prose, documented = parse_docstring(getattr(function, "__doc__", None))
        self._description = prose if description is None else description
        self._strict = strict
        self._timeout = timeout
        self._is_async = inspect.iscoroutinefunction(function)
        self._order, self._context_param, self._arguments_type, self._parameters = _describe(
            function, self._name, qualname, documented
        )
        self._import_path = _import_path(function)
        if sandbox is not None and sandbox is not False and self._import_path is None:
            raise TypeError(
                f"tool {self._name!r} cannot be sandboxed: only functions defined at the top "
                f"level of an importable module can run in a subprocess (got {qualname} in "
                f"{getattr(function, '__module__', None)})"
            )
        self._sandbox: SandboxLimits | None = (
            SandboxLimits() if sandbox is True else sandbox if sandbox is not False else None
        )
        self._sandbox_refused = sandbox is False
        self._resolvable = False
        functools.update_wrapper(self, function, updated=())

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<FunctionTool {self._name!r} of {self._function!r}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters

    @property
    def strict(self) -> bool | None:
        return self._strict

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def sandbox(self) -> SandboxLimits | None:
        return self._sandbox

    @property
    def sandbox_allowed(self) -> bool:
        """Whether an executor with ``sandbox=True`` may run this tool in a subprocess.

        True unless the tool said ``sandbox=False`` or its import path does not name it.
        """
        return not self._sandbox_refused and self._import_path is not None and self._resolves()

    @property
    def import_path(self) -> str | None:
        """``module:qualname``, how a sandboxed child finds the tool; None when there is none."""
        return self._import_path

    @property
    def function(self) -> Callable[P, R]:
        return self._function

    @property
    def is_async(self) -> bool:
        return self._is_async

    @property
    def arguments_type(self) -> type[msgspec.Struct]:
        return self._arguments_type

    def spec(self) -> ToolSpec:
        """This tool as sent to the provider."""
        return ToolSpec(
            name=self._name,
            description=self._description,
            parameters=self._parameters,
            strict=self._strict,
        )

    def bind(
        self, arguments: Mapping[str, Any], *, context: ToolContext | None = None
    ) -> Callable[[], R]:
        """Validate and convert ``arguments``; return the function call, ready to make.

        Raises:
            ToolExecutionFailed: the arguments do not fit the parameters
                (``details["reason"] == "invalid_arguments"``, ``details["path"]`` the
                offending value's path, like ``$.items[2].price``).
        """
        try:
            values = msgspec.convert(arguments, self._arguments_type, strict=False)
        except msgspec.ValidationError as exc:
            raise self._invalid(exc) from exc
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for name, by_position in self._order:
            if name == self._context_param:
                value: Any = context if context is not None else self._bare_context(arguments)
            else:
                value = getattr(values, name)
            if by_position:
                positional.append(value)
            else:
                keywords[name] = value
        return functools.partial(self._function, *positional, **keywords)

    async def execute(
        self,
        arguments: Mapping[str, Any],
        *,
        context: ToolContext | None = None,
        sandbox: bool | SandboxLimits | None = None,
    ) -> ToolResult:
        """Run the function with the model's ``arguments``; return its `ToolResult`.

        What the function returned is made a `ToolResult` by `to_result` (its ``data`` is
        the JSON-able value, ``content`` the text the model reads), in this process or in
        the sandbox alike: the same type an MCP tool's ``execute`` returns. Call the tool
        object itself for the function's own return value. Async functions run in this
        task, sync ones in a worker thread that is abandoned when the call is cancelled.

        Args:
            arguments: the model's arguments, as decoded from JSON.
            context: injected into a parameter annotated `ToolContext`.
            sandbox: None follows the tool's own setting; False runs in this process; True or
                limits run in a subprocess (the tool's limits, or the ones given).

        Raises:
            ToolExecutionFailed: invalid arguments (see `bind`), or a sandboxed call failed.
            Exception: whatever the function raised.
        """
        limits = self._limits(sandbox)
        call = self.bind(arguments, context=context)
        call_id = context.call_id if context is not None else ""
        start = trio.current_time()
        if limits is not None:
            value: Any = await self._run_sandboxed(arguments, context, limits)
        elif self._is_async:
            value = await cast("Awaitable[Any]", call())
        else:
            value = await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        duration = trio.current_time() - start
        return to_result(value, call_id=call_id, name=self._name, duration=duration)

    # -- internals ---------------------------------------------------------------------------

    def _limits(self, sandbox: bool | SandboxLimits | None) -> SandboxLimits | None:
        if sandbox is None:
            return self._sandbox
        if sandbox is False:
            return None
        if sandbox is True:
            return self._sandbox or SandboxLimits()
        return sandbox

    def _resolves(self) -> bool:
        """Whether ``import_path`` names this tool (or its function) in the loaded module."""
        if not self._resolvable:  # only a success is remembered: the name may be bound later
            path = self._import_path
            found: object = None
            if path is not None:
                module, _, qualname = path.partition(":")
                found = sys.modules.get(module)
                for part in qualname.split("."):
                    found = getattr(found, part, None)
            self._resolvable = found is self or found is self._function
        return self._resolvable

    async def _run_sandboxed(
        self, arguments: Mapping[str, Any], context: ToolContext | None, limits: SandboxLimits
    ) -> Any:
        path = self._import_path
        if path is None or not self._resolves():
            raise ToolExecutionFailed(
                f"tool {self._name!r} cannot run in the sandbox: {path or 'its function'} "
                "does not name it in an importable module",
                details={"reason": "sandbox_failed"},
            )
        request = SandboxRequest(
            target=path,
            name=self._name,
            arguments=dict(arguments),
            context=context,
            memory=limits.memory,
            cpu_time=limits.cpu_time,
        )
        root = module_root(path.partition(":")[0])
        return await run_sandboxed(
            request, wall_time=limits.wall_time, pythonpath=[root] if root else []
        )

    def _bare_context(self, arguments: Mapping[str, Any]) -> ToolContext:
        try:
            raw = msgspec.json.encode(arguments).decode()
        except (TypeError, ValueError):
            raw = "{}"
        return ToolContext(call_id="", call=ToolCall(id="", name=self._name, arguments=raw))

    def _invalid(self, error: msgspec.ValidationError) -> ToolExecutionFailed:
        found = _AT_PATH.match(str(error))
        assert found is not None  # the pattern matches any text
        text, path = found.group("text"), found.group("path") or "$"
        field = _FIELD.match(text)
        if field is not None:
            path = f"{path}.{field.group('field')}"
        hint = ""
        if path.count(".") == 1 and text.startswith("Object contains unknown field"):
            names = [name for name, _ in self._order if name != self._context_param]
            hint = f"; the parameters are: {', '.join(names) or 'none'}"
        return ToolExecutionFailed(
            f"invalid arguments for tool {self._name!r} at {path}: {text}{hint}",
            details={"reason": "invalid_arguments", "path": path, "tool": self._name},
        )


@overload
def tool(function: Callable[P, R], /) -> FunctionTool[P, R]: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
    timeout: float | None = None,
    sandbox: bool | SandboxLimits | None = None,
) -> Callable[[Callable[P, R]], FunctionTool[P, R]]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
    timeout: float | None = None,
    sandbox: bool | SandboxLimits | None = None,
) -> Any:
    """Make a sync or async function a `FunctionTool`, bare (``@tool``) or with options.

    Args:
        function: the function (when used bare).
        name: the tool's name; by default the function's.
        description: for the model; by default the docstring's prose (``Args:`` entries go
            into the parameters' descriptions).
        strict: ask the provider for schema-exact arguments (OpenAI ``strict``).
        timeout: seconds one call may take (the executor's timeout otherwise).
        sandbox: True or `SandboxLimits`: every call runs in a subprocess with resource
            limits (module-level functions only). False: never, even when the executor
            sandboxes tools. None (the default): as the executor decides.

    Raises:
        TypeError: a parameter cannot be described (``*args``, ``**kwargs``, no annotation,
            a type without a JSON schema), or ``sandbox`` for a function that cannot be
            imported by a subprocess (nested functions, lambdas, ``__main__``).
        ValueError: an invalid name or a timeout that is not positive.
    """

    def decorate(fn: Callable[..., Any]) -> FunctionTool[..., Any]:
        return FunctionTool(
            fn,
            name=name,
            description=description,
            strict=strict,
            timeout=timeout,
            sandbox=sandbox,
        )

    return decorate if function is None else decorate(function)


# -- the arguments type and its schema ---------------------------------------------------------


def _describe(
    function: Callable[..., Any], name: str, qualname: str, documented: Mapping[str, str]
) -> tuple[list[tuple[str, bool]], str | None, type[msgspec.Struct], dict[str, Any]]:
    """The call order, the context parameter, the arguments type and its schema."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool {name!r}: the signature of {qualname} is unknown: {exc}") from exc
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # NameError and friends from unresolved forward references
        raise TypeError(
            f"tool {name!r}: the type hints of {qualname} cannot be resolved: {exc}"
        ) from exc
    order: list[tuple[str, bool]] = []
    context: str | None = None
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    listed_defaults: dict[str, Any] = {}
    for param in signature.parameters.values():
        where = f"parameter {param.name!r} of tool {name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{where}: *args and **kwargs cannot be described to a model")
        if param.name not in hints:
            raise TypeError(f"{where} has no type annotation: annotate it with its type")
        hint = hints[param.name]
        order.append((param.name, param.kind is param.POSITIONAL_ONLY))
        if _is_context(hint):
            context = param.name
            continue
        try:
            msgspec.json.schema(hint)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: {hint!r} has no JSON schema: {exc}") from exc
        default: Any = param.default
        if default is param.empty:
            fields.append((param.name, hint))
        elif _is_mutable(default):
            factory = _copier(default)
            fields.append((param.name, hint, msgspec.field(default_factory=factory)))
            listed_defaults[param.name] = default
        else:
            fields.append((param.name, hint, default))
    try:
        arguments_type = msgspec.defstruct(
            f"{name}_arguments",
            fields,
            kw_only=True,
            forbid_unknown_fields=True,
            module=getattr(function, "__module__", None),
        )
        schema = msgspec.json.schema(arguments_type)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool {name!r}: its parameters cannot be described: {exc}") from exc
    return order, context, arguments_type, _object_schema(schema, documented, listed_defaults)


def _import_path(function: Callable[..., Any]) -> str | None:
    """``module:qualname`` of a function a subprocess can import, else None."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module == "__main__" or "<" in qualname:  # nested functions, lambdas, scripts
        return None
    return f"{module}:{qualname}"


def _is_mutable(default: object) -> bool:
    """A non-empty mutable collection: msgspec wants a factory for such defaults."""
    return isinstance(default, _MUTABLE) and len(cast("Sized", default)) > 0


def _copier(default: Any) -> Callable[[], Any]:
    return lambda: copy.deepcopy(default)


def _is_context(hint: Any) -> bool:
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if hint is ToolContext:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = set(typing.get_args(hint))
        return members == {ToolContext, type(None)}
    return False


def _object_schema(
    schema: dict[str, Any], documented: Mapping[str, str], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Make the root of msgspec's schema the arguments object, with ``$defs`` beside it."""
    definitions = dict(cast("dict[str, Any]", schema.get("$defs", {})))
    root = cast("dict[str, Any]", definitions.pop(str(schema["$ref"]).rsplit("/", 1)[-1]))
    properties = cast("dict[str, dict[str, Any]]", root.get("properties", {}))
    for name, text in documented.items():
        prop = properties.get(name)
        if prop is not None and text and "description" not in prop:
            properties[name] = {"description": text, **prop}
    for name, value in defaults.items():
        properties[name]["default"] = msgspec.to_builtins(value)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if root.get("required"):
        out["required"] = root["required"]
    out["additionalProperties"] = False
    if definitions:
        out["$defs"] = definitions
    return out
