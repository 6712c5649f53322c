"""Private: the YAML layer of the configuration, read safely from hostile text.

The text is at most `MAX_YAML_BYTES`, valid UTF-8 without NUL or other unprintable
characters, one document, nested at most `~._checks.MAX_DEPTH` levels and at most
`~._checks.MAX_NODES` values once aliases are expanded (so an alias bomb or an alias that
holds itself is refused before anything is built). Only PyYAML's safe tags are read. Every
failure becomes a problem naming the line; nothing of the text is repeated but the parser's
reason. ``${VAR}`` and ``${VAR:-default}`` in strings are then read from the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Final, cast

from ..errors import ConfigProblem, ConfigurationError
from ._checks import MAX_DEPTH, MAX_NODES
from ._sources import Layer
from ._walk import join, key_text, show

__all__ = ["MAX_YAML_BYTES", "YamlInput", "yaml_layer"]

#: The largest YAML file or text read: 1 MiB.
MAX_YAML_BYTES: Final = 1 << 20

#: A YAML file name or path, YAML text, or YAML text as UTF-8 bytes.
YamlInput = str | bytes | os.PathLike[str]

_INTERPOLATION: Final = re.compile(
    r"\$(?P<escaped>\$)\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{)"
)
_MISSING_YAML: Final = (
    "reading YAML configuration needs PyYAML: install 'llm-invocation[yaml]'"
    " (pip install 'llm-invocation[yaml]')"
)
_TOO_LARGE: Final = f"is larger than {MAX_YAML_BYTES // 1024} KiB"


class _Problem(Exception):
    """A reason to give up on the YAML, raised inside the bounded loader."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _is_file(path_or_text: object) -> bool:
    if isinstance(path_or_text, bytes):
        return False
    if not isinstance(path_or_text, str):
        return True
    if "\n" in path_or_text:
        return False
    if path_or_text.strip().endswith((".yaml", ".yml", ".json")):
        return True
    try:
        return os.path.isfile(path_or_text)
    except (OSError, ValueError):  # a name too long, a NUL: not a file name then
        return False


def _read(path: object, origin: str | None) -> tuple[str, str] | ConfigProblem:
    """Return (label, text) of a YAML file, or the problem reading it."""
    try:
        name = os.fspath(cast("os.PathLike[str]", path))
    except TypeError:
        message = f"expected a YAML file name or YAML text, got {show(path)}"
        return ConfigProblem(path="<root>", message=message, source=origin or "yaml")
    name = name.decode(errors="replace") if isinstance(name, bytes) else name
    label = f"yaml {name}" if name.isprintable() else f"yaml {name!a}"
    try:
        with open(name, "rb") as file:
            raw = file.read(MAX_YAML_BYTES + 1)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        message = f"cannot read the YAML file {name!r}: {reason}"
        return ConfigProblem(path="<root>", message=message, source=origin or label)
    text = _decoded(raw)
    if isinstance(text, str):
        return label, text
    message = f"the YAML file {text.message}"
    return ConfigProblem(path="<root>", message=message, source=origin or label)


def _decoded(raw: bytes) -> str | _Problem:
    if len(raw) > MAX_YAML_BYTES:
        return _Problem(_TOO_LARGE, None)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        return _Problem(f"is not valid UTF-8 (line {line}, byte {error.start})", line)


def yaml_layer(
    path_or_text: YamlInput,
    environ: Mapping[str, str],
    *,
    origin: str | None = None,
) -> Layer:
    """Read YAML from a file or from text, interpolating ``${VAR}`` and ``${VAR:-default}``.

    A string is a file name when it is one line that ends in ``.yaml``, ``.yml`` or ``.json``
    or names an existing file; bytes and anything else are YAML text.

    Raises:
        ConfigurationError: when PyYAML is not installed. Anything wrong with the input is a
            problem of the returned layer.
    """
    try:
        import yaml
    except ImportError:
        raise ConfigurationError(_MISSING_YAML) from None
    del yaml  # imported again where it is used; here only to say clearly that it is missing
    if _is_file(path_or_text):
        read = _read(path_or_text, origin)
        if isinstance(read, ConfigProblem):
            return Layer({}, {}, [read])
        label, text = read
    else:
        label = "yaml <text>"
        decoded = _decoded(path_or_text) if isinstance(path_or_text, bytes) else path_or_text
        if isinstance(decoded, _Problem):
            message = f"the YAML {decoded.message}"
            problem = ConfigProblem(path="<root>", message=message, source=label)
            return Layer({}, {}, [problem])
        text = cast("str", decoded)
    if len(text) > MAX_YAML_BYTES:
        message = f"the YAML {_TOO_LARGE}"
        return Layer({}, {}, [ConfigProblem(path="<root>", message=message, source=label)])
    return _parse(text, label, environ)


def _parse(text: str, label: str, environ: Mapping[str, str]) -> Layer:
    problems: list[ConfigProblem] = []
    try:
        node, data = _load(text)
    except _Problem as error:
        where = f"{label}:{error.line}" if error.line is not None else label
        message = f"invalid YAML: {error.message}"
        return Layer({}, {}, [ConfigProblem(path="<root>", message=message, source=where)])
    lines: dict[str, str] = {"": label}
    if data is None:
        return Layer({}, lines, problems)
    if not isinstance(data, dict):
        message = f"the top level must be a mapping, got {_kind(data)}"
        problems.append(ConfigProblem(path="<root>", message=message, source=label))
        return Layer({}, lines, problems)
    _line_marks(node, "", label, lines, problems)
    if not isinstance(cast("object", environ), Mapping):
        message = f"the environment must be a mapping of names to strings, got {show(environ)}"
        problems.append(ConfigProblem(path="<root>", message=message, source=label))
        return Layer({}, lines, problems)
    interpolated = _interpolate(cast("dict[str, object]", data), "", environ, lines, problems)
    return Layer(cast("dict[str, Any]", interpolated), lines, problems)


def _kind(value: object) -> str:
    if isinstance(value, str):  # never the text itself: it may be a key pasted in error
        return "a string (is it the name of a file that does not exist?)"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _load(text: str) -> tuple[Any, object]:
    """Compose and construct one document; raises `_Problem` for anything wrong."""
    import yaml

    loader: Any = None
    try:
        loader = _loader_class()(text)
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_graph(node)
        return node, cast("object", loader.construct_document(node))
    except yaml.YAMLError as error:
        raise _yaml_problem(error, text) from None
    except RecursionError:
        raise _Problem(f"nests deeper than {MAX_DEPTH} levels", None) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(error: Exception, text: str) -> _Problem:
    """The problem a PyYAML error reports: only its reason and line, never a snippet."""
    position = getattr(error, "position", None)
    if isinstance(position, int):  # a ReaderError: an unprintable character
        character = getattr(error, "character", None)
        code = f" #x{character:04x}" if isinstance(character, int) else ""
        line = text.count("\n", 0, position) + 1
        return _Problem(f"unacceptable character{code}: special characters are not allowed", line)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line = getattr(mark, "line", None)
    reason = getattr(error, "problem", None) or "not valid YAML"
    return _Problem(str(reason), line + 1 if isinstance(line, int) else None)


@cache
def _loader_class() -> type[Any]:
    """PyYAML's safe loader, refusing deep nesting and values it cannot build."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise _Problem(f"nests deeper than {MAX_DEPTH} levels", _next_line(self))
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            except (ValueError, OverflowError, TypeError) as error:
                reason = f"cannot read the value at this line ({type(error).__name__})"
                raise _Problem(reason, node.start_mark.line + 1) from None

    return BoundedLoader


def _next_line(loader: Any) -> int:
    """The line of the event the loader reads next."""
    return cast("int", loader.peek_event().start_mark.line) + 1


def _check_graph(root: Any) -> None:
    """Refuse a document deeper than `MAX_DEPTH` or larger than `MAX_NODES` once its aliases
    are expanded (an alias bomb, or an alias inside its own anchor). Nothing recurses.
    """
    stack: list[tuple[Any, int]] = [(root, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        line = node.start_mark.line + 1
        if count > MAX_NODES:
            raise _Problem(f"holds more than {MAX_NODES} values once aliases are expanded", None)
        if depth > MAX_DEPTH:
            message = f"nests deeper than {MAX_DEPTH} levels once aliases are expanded"
            raise _Problem(f"{message} (or an alias refers to itself)", line)
        if node.id == "sequence":
            stack.extend((item, depth + 1) for item in node.value)
        elif node.id == "mapping":
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


def _line_marks(
    node: Any, path: str, label: str, out: dict[str, str], problems: list[ConfigProblem]
) -> None:
    """Record ``"<label>:<line>"`` for every key and list item under ``node``, and report
    a key written twice in one mapping (YAML would silently keep the last)."""
    value = getattr(node, "value", None)
    if node.id == "mapping":
        seen: set[str] = set()
        for key_node, value_node in cast("list[tuple[Any, Any]]", value):
            key = _key_path(key_node)
            here = join(path, key)
            line = f"{label}:{key_node.start_mark.line + 1}"
            if key_node.id == "scalar" and key != "<<":
                if key in seen:
                    message = "is written twice in one mapping (remove one)"
                    problems.append(ConfigProblem(path=here, message=message, source=line))
                seen.add(key)
            out[here] = line
            _line_marks(value_node, here, label, out, problems)
    elif node.id == "sequence":
        for index, item in enumerate(cast("list[Any]", value)):
            here = f"{path}[{index}]"
            out[here] = f"{label}:{item.start_mark.line + 1}"
            _line_marks(item, here, label, out, problems)


_KEY_TYPES: Final[dict[str, Callable[[str], object]]] = {
    "tag:yaml.org,2002:null": lambda text: None,
    "tag:yaml.org,2002:bool": lambda text: text.lower() in ("yes", "true", "on"),
    "tag:yaml.org,2002:int": lambda text: int(text.replace("_", ""), 0),
}


def _key_path(node: Any) -> str:
    """A mapping key as the walker will name it once built (``None``, ``True``, ``8``)."""
    if node.id != "scalar":
        return f"<a {node.id}>"
    text = cast("str", node.value)
    convert = _KEY_TYPES.get(cast("str", node.tag))
    try:
        return key_text(convert(text) if convert is not None else text)
    except ValueError:
        return text


def _interpolate(
    value: object,
    path: str,
    environ: Mapping[str, str],
    lines: Mapping[str, str],
    problems: list[ConfigProblem],
) -> object:
    if isinstance(value, dict):
        return {
            key: _interpolate(item, join(path, key_text(key)), environ, lines, problems)
            for key, item in cast("dict[object, object]", value).items()
        }
    if isinstance(value, list):
        return [
            _interpolate(item, f"{path}[{index}]", environ, lines, problems)
            for index, item in enumerate(cast("list[object]", value))
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "${"
        name = match.group("name")
        if name is None:
            message = "invalid ${...} reference: use ${NAME}, ${NAME:-default} or $${ for '${'"
            problems.append(ConfigProblem(path=path, message=message, source=lines.get(path)))
            return ""
        found = cast("object", environ.get(name))
        default = match.group("default")
        if default is not None and not found:
            return default
        if found is None:
            message = f"environment variable {name} is not set (write ${{{name}:-default}})"
            problems.append(ConfigProblem(path=path, message=message, source=lines.get(path)))
            return ""
        if not isinstance(found, str):
            message = f"environment variable {name} is not a string"
            problems.append(ConfigProblem(path=path, message=message, source=lines.get(path)))
            return ""
        return found

    return _INTERPOLATION.sub(substitute, value)
