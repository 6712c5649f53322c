"""Private: the conversion walker, durations and layer merging behind `Config`.

One walker converts loose values (YAML scalars, environment strings, keyword arguments) into
the types a `msgspec.Struct` declares, driven by `msgspec.inspect.type_info`. Constraints
come from ``msgspec.Meta`` (``gt``/``ge``/``lt``/``le``, lengths) and from a ``format`` key in
``Meta.extra``:

- ``"duration"``: a number of seconds or a string such as ``"1h30m"`` (see `parse_duration`);
- ``"path"``: a string or an ``os.PathLike``;
- ``"http-url"``: an ``http://`` or ``https://`` URL;
- ``"store"``: ``"memory"`` or a ``redis://`` / ``rediss://`` URL.

A ``schema`` key in ``Meta.extra`` validates a free-form ``dict`` against a Struct, keeping only
the keys that were given. Every problem is collected in a `Walk` with its dotted path and the
source that supplied the value; nothing is raised halfway, so one run reports every problem.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect as mi

from .._secrets import Secret, redact
from ..errors import ConfigProblem, ConfigurationError

__all__ = [
    "INVALID",
    "Walk",
    "build",
    "check_fields",
    "convert",
    "format_duration",
    "join",
    "label_all",
    "merge",
    "parse_duration",
    "plain",
    "scrub",
    "show",
    "struct_info",
]


class _Invalid:
    """The marker a conversion returns after it recorded a problem."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()

# ------------------------------------------------------------------------------- durations

_UNITS: Final[dict[str, Decimal]] = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_NUMBER: Final = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_PART: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION_HINT: Final = "expected seconds or a duration such as '100ms', '30s', '1h30m', '2d'"


def parse_duration(text: str | float) -> float:
    """Return the number of seconds a duration stands for.

    Accepts a non-negative number of seconds (``30``, ``1.5``, ``"30"``) or a string of one or
    more ``<number><unit>`` parts with units ``ns``, ``us``, ``ms``, ``s``, ``m``, ``h`` and
    ``d``: ``"100ms"``, ``"1.5s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, Go's ``"6m0s"``.

    Raises:
        ValueError: when ``text`` is negative, not finite, a bool, or not a duration.
    """
    if isinstance(text, bool) or not isinstance(cast("object", text), str | int | float):
        raise ValueError(f"expected a duration, got {type(text).__name__}")
    if not isinstance(text, str):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"a duration must be a finite number >= 0, got {text!r}")
        return float(text)
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        return float(stripped)
    total = Decimal(0)
    position = 0
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: {_DURATION_HINT}")
        total += Decimal(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0:
        raise ValueError(f"invalid duration {text!r}: {_DURATION_HINT}")
    return float(total)


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as the shortest readable duration: ``"100ms"``, ``"30s"``, ``"1h30m"``.

    `parse_duration` reads the result back (to the microsecond).

    Raises:
        ValueError: when ``seconds`` is negative or not finite.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number >= 0, got {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{_decimal_text(seconds * 1000)}ms"
    parts: list[str] = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count = int(rest // size)
        if count:
            parts.append(f"{count}{unit}")
            rest -= count * size
    text = _decimal_text(rest)
    if text != "0" or not parts:
        parts.append(f"{text}s")
    return "".join(parts)


def _decimal_text(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


# ------------------------------------------------------------------------------------ paths


def join(path: str, key: str) -> str:
    """Return the dotted path of ``key`` below ``path`` (``key`` may be a rendered sub-path)."""
    if not path:
        return key
    if not key or key.startswith("["):
        return path + key
    return f"{path}.{key}"


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


# ------------------------------------------------------------------------------------- walk


class Walk:
    """Collects problems while converting; knows which source supplied each path."""

    __slots__ = ("default_source", "problems", "sources")

    def __init__(
        self, sources: Mapping[str, str] | None = None, default_source: str | None = None
    ) -> None:
        self.sources: Mapping[str, str] = {} if sources is None else sources
        self.default_source = default_source
        self.problems: list[ConfigProblem] = []

    def add(self, path: str, message: str, *, source: str | None = None) -> None:
        """Record a problem at ``path``; the message is scrubbed of secrets."""
        self.problems.append(
            ConfigProblem(
                path=scrub(path) or "<root>",
                message=scrub(message),
                source=source if source is not None else self.source_of(path),
            )
        )

    def source_of(self, path: str) -> str | None:
        """Return the source of ``path``, or of its nearest ancestor that has one."""
        while True:
            source = self.sources.get(path)
            if source is not None:
                return source
            if not path:
                return self.default_source
            path = _parent(path)

    def error(self) -> ConfigurationError:
        """Return the error listing every problem recorded."""
        return ConfigurationError(problems=self.problems)


def show(value: object) -> str:
    """Describe ``value`` for a message without echoing anything long enough to be a key."""
    if isinstance(value, Secret):
        return "a secret"
    if isinstance(value, str):
        return repr(value) if len(value) <= 24 else f"a {len(value)}-character string"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    return f"a {type(value).__name__}"


def _number_text(value: float | Decimal) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def _to_bool(value: object, path: str, walk: Walk) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    walk.add(path, f"expected true or false, got {show(value)}")
    return INVALID


def _to_number(t: mi.IntType | mi.FloatType, value: object, path: str, walk: Walk) -> object:
    integer = isinstance(t, mi.IntType)
    number: int | float
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        number = math.nan
    elif isinstance(value, str):
        try:
            number = int(value.strip()) if integer else float(value.strip())
        except ValueError:
            number = math.nan
    else:
        number = value
    if integer and not isinstance(number, int):
        walk.add(path, f"expected an integer, got {show(value)}")
        return INVALID
    if not math.isfinite(number):
        walk.add(path, f"expected a finite number, got {show(value)}")
        return INVALID
    number = number if integer else float(number)
    return number if _in_bounds(t, number, path, walk) else INVALID


def _in_bounds(t: mi.IntType | mi.FloatType, value: float, path: str, walk: Walk) -> bool:
    low, high = t.ge if t.ge is not None else t.gt, t.le if t.le is not None else t.lt
    too_low = (t.gt is not None and value <= t.gt) or (t.ge is not None and value < t.ge)
    too_high = (t.lt is not None and value >= t.lt) or (t.le is not None and value > t.le)
    if not (too_low or too_high):
        return True
    if t.ge is not None and t.le is not None:
        bound = f"between {_number_text(t.ge)} and {_number_text(t.le)}"
    elif too_low:
        bound = f"{'>=' if t.ge is not None else '>'} {_number_text(cast('float', low))}"
    else:
        bound = f"{'<=' if t.le is not None else '<'} {_number_text(cast('float', high))}"
    walk.add(path, f"must be {bound}, got {_number_text(value)}")
    return False


def _to_decimal(value: object, path: str, walk: Walk) -> object:
    number: Decimal | None = None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            number = None
    if number is None or not number.is_finite():
        walk.add(path, f"expected an amount of money such as 0.50, got {show(value)}")
        return INVALID
    if number < 0:
        walk.add(path, f"must not be negative, got {number}")
        return INVALID
    return number


def _to_str(t: mi.StrType, value: object, path: str, walk: Walk) -> object:
    if not isinstance(value, str):
        walk.add(path, f"expected a string, got {show(value)}")
        return INVALID
    if t.min_length is not None and len(value) < t.min_length:
        walk.add(path, "must not be empty" if t.min_length == 1 else "is too short")
        return INVALID
    if t.max_length is not None and len(value) > t.max_length:
        walk.add(path, f"must be at most {t.max_length} characters long")
        return INVALID
    return value


def _to_literal(t: mi.LiteralType, value: object, path: str, walk: Walk) -> object:
    if value in t.values:
        return value
    if isinstance(value, str) and value.strip().lower() in t.values:
        return value.strip().lower()
    choices = ", ".join(repr(v) for v in t.values)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(v) for v in t.values], n=1)
        hint = f" - did you mean {close[0]!r}?" if close else ""
    walk.add(path, f"must be one of {choices}, got {show(value)}{hint}")
    return INVALID


def _to_list(t: mi.ListType, value: object, path: str, walk: Walk) -> object:
    if not isinstance(value, list | tuple):
        walk.add(path, f"expected a list, got {show(value)}")
        return INVALID
    items = cast("list[object] | tuple[object, ...]", value)
    if t.max_length is not None and len(items) > t.max_length:
        walk.add(path, f"takes at most {t.max_length} items, got {len(items)}")
        return INVALID
    out = [convert(t.item_type, item, f"{path}[{i}]", walk) for i, item in enumerate(items)]
    return INVALID if any(item is INVALID for item in out) else out


def _to_dict(t: mi.DictType, value: object, path: str, walk: Walk) -> object:
    if not isinstance(value, Mapping):
        walk.add(path, f"expected a mapping, got {show(value)}")
        return INVALID
    out: dict[str, object] = {}
    valid = True
    for key, item in cast("Mapping[object, object]", value).items():
        if not isinstance(key, str):
            walk.add(join(path, str(key)), f"keys must be strings, got {show(key)}")
            valid = False
            continue
        converted = convert(t.value_type, item, join(path, key), walk)
        valid = valid and converted is not INVALID
        out[key] = converted
    return out if valid else INVALID


def _to_secret(value: object, path: str, walk: Walk) -> object:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        if not value.strip():
            walk.add(path, "must not be empty")
            return INVALID
        return Secret(value)
    walk.add(path, f"expected a secret string, got {show(value)}")
    return INVALID


def _check_http_url(value: str, path: str, walk: Walk) -> object:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        walk.add(path, f"expected an http:// or https:// URL, got {show(value)}")
        return INVALID
    return value


def _check_store(value: str, path: str, walk: Walk) -> object:
    if value == "memory":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.netloc:
        walk.add(path, "expected 'memory' or a redis:// or rediss:// URL")
        return INVALID
    return value


_CHECKS: Final[dict[str, Callable[[str, str, Walk], object]]] = {
    "http-url": _check_http_url,
    "store": _check_store,
}


def _to_formatted(t: mi.Metadata, value: object, path: str, walk: Walk) -> object:
    extra = cast("Mapping[str, object]", t.extra or {})  # pyright: ignore[reportUnknownMemberType] - msgspec types it as a bare dict
    kind = extra.get("format")
    if kind == "duration" and isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            value = parse_duration(value)
        except ValueError:
            walk.add(path, f"{_DURATION_HINT}, got {show(value)}")
            return INVALID
    elif kind == "path" and isinstance(value, os.PathLike):
        value = os.fspath(cast("os.PathLike[str]", value))
    converted = convert(t.type, value, path, walk)
    if converted is INVALID:
        return INVALID
    check = _CHECKS.get(kind) if isinstance(kind, str) else None
    if check is not None and isinstance(converted, str):
        return check(converted, path, walk)
    schema = extra.get("schema")
    if isinstance(schema, type) and isinstance(converted, dict):
        given = cast("dict[str, object]", converted)
        checked = build(struct_info(cast("type[msgspec.Struct]", schema)), given, path, walk)
        if checked is INVALID:
            return INVALID
        return {name: getattr(checked, name) for name in given}
    return converted


def _to_union(t: mi.UnionType, value: object, path: str, walk: Walk) -> object:
    optional = any(isinstance(option, mi.NoneType) for option in t.types)
    if optional and (value is None or value == ""):
        return None
    options = [option for option in t.types if not isinstance(option, mi.NoneType)]
    if len(options) != 1:  # the config schema only uses ``X | None``
        raise AssertionError(f"unsupported union at {path}: {t}")
    return convert(options[0], value, path, walk)


def convert(t: mi.Type, value: object, path: str, walk: Walk) -> object:
    """Return ``value`` converted to type ``t``, or `INVALID` after recording a problem."""
    result: object
    if isinstance(t, mi.AnyType):
        result = value
    elif isinstance(t, mi.Metadata):
        result = _to_formatted(t, value, path, walk)
    elif isinstance(t, mi.UnionType):
        result = _to_union(t, value, path, walk)
    elif isinstance(t, mi.BoolType):
        result = _to_bool(value, path, walk)
    elif isinstance(t, mi.IntType | mi.FloatType):
        result = _to_number(t, value, path, walk)
    elif isinstance(t, mi.DecimalType):
        result = _to_decimal(value, path, walk)
    elif isinstance(t, mi.StrType):
        result = _to_str(t, value, path, walk)
    elif isinstance(t, mi.LiteralType):
        result = _to_literal(t, value, path, walk)
    elif isinstance(t, mi.ListType):
        result = _to_list(t, value, path, walk)
    elif isinstance(t, mi.DictType):
        result = _to_dict(t, value, path, walk)
    elif isinstance(t, mi.StructType):
        result = build(t, value, path, walk)
    elif isinstance(t, mi.CustomType) and t.cls is Secret:
        result = _to_secret(value, path, walk)
    else:
        raise AssertionError(f"unsupported configuration type at {path}: {t}")
    return result


# ---------------------------------------------------------------------------------- structs

_struct_infos: dict[type[msgspec.Struct], mi.StructType] = {}


def struct_info(cls: type[msgspec.Struct]) -> mi.StructType:
    """Return (and cache) the `msgspec.inspect` description of a Struct class."""
    info = _struct_infos.get(cls)
    if info is None:
        found = mi.type_info(cls)
        if not isinstance(found, mi.StructType):
            raise AssertionError(f"{cls!r} is not a plain Struct")
        info = _struct_infos[cls] = found
    return info


def _unknown(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" - did you mean {close[0]!r}?" if close else ""
    return f"unknown field {show(key)}{hint}"


def build(info: mi.StructType, data: object, path: str, walk: Walk) -> object:
    """Build the Struct ``info`` describes from a mapping, recording every problem.

    An instance of the Struct is returned as it is: it validated itself when it was made.
    """
    cls = info.cls
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        walk.add(path, f"expected a mapping, got {show(data)}")
        return INVALID
    given = cast("Mapping[object, object]", data)
    fields = {field.name: field for field in info.fields}
    before = len(walk.problems)
    values: dict[str, object] = {}
    for key, raw in given.items():
        if not isinstance(key, str):
            walk.add(join(path, str(key)), f"keys must be strings, got {show(key)}")
            continue
        field = fields.get(key)
        if field is None:
            walk.add(join(path, key), _unknown(key, list(fields)))
            continue
        values[key] = convert(field.type, raw, join(path, key), walk)
    for field in info.fields:
        if field.required and field.name not in given:
            walk.add(join(path, field.name), "is required")
    if len(walk.problems) > before:
        return INVALID
    try:
        return cls(**values)
    except ConfigurationError as error:  # cross-field checks of the section's __post_init__
        for problem in error.problems:
            walk.add(join(path, problem.path), problem.message)
        return INVALID


def check_fields(obj: msgspec.Struct, walk: Walk) -> None:
    """Convert and validate the fields of a Struct in place (for ``__post_init__``)."""
    for field in struct_info(type(obj)).fields:
        value = getattr(obj, field.name)
        converted = convert(field.type, value, field.name, walk)
        if converted is not INVALID and converted is not value:
            msgspec.structs.force_setattr(obj, field.name, converted)


# ---------------------------------------------------------------------------------- layers


def plain(value: object) -> object:
    """Return a deep copy of ``value`` with Structs and mappings as dicts, sequences as lists."""
    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in cast("Mapping[object, object]", value).items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in cast("list[object] | tuple[object, ...]", value)]
    return value


def label_all(
    value: object, label: str, path: str = "", out: dict[str, str] | None = None
) -> dict[str, str]:
    """Return a sources map giving ``label`` to ``path`` and every path below it."""
    out = {} if out is None else out
    out[path] = label
    if isinstance(value, Mapping):
        for key, item in cast("Mapping[object, object]", value).items():
            label_all(item, label, join(path, str(key)), out)
    elif isinstance(value, list):
        for index, item in enumerate(cast("list[object]", value)):
            label_all(item, label, f"{path}[{index}]", out)
    return out


def merge(
    target: dict[str, Any],
    sources: dict[str, str],
    layer: Mapping[str, Any],
    layer_sources: Mapping[str, str],
    path: str = "",
) -> None:
    """Merge ``layer`` over ``target`` key by key; mappings merge, anything else replaces.

    ``sources`` follows along: a replaced subtree takes the layer's sources.
    """
    for key, value in layer.items():
        here = join(path, str(key))
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            if here in layer_sources:
                sources[here] = layer_sources[here]
            merge(
                cast("dict[str, Any]", current),
                sources,
                cast("Mapping[str, Any]", value),
                layer_sources,
                here,
            )
            continue
        for stale in [p for p in sources if _under(p, here)]:
            del sources[stale]
        target[key] = plain(cast("object", value))
        sources.update((p, s) for p, s in layer_sources.items() if _under(p, here))


_URL_PASSWORD: Final = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s/@]+@", re.I)


def scrub(text: str) -> str:
    """Mask secrets, key-shaped strings and passwords in URLs (``redis://:pw@host``)."""
    return redact(_URL_PASSWORD.sub(r"\g<head>***@", text))
