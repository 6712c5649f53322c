"""Private: the conversion walker behind `Config`.

One walker converts loose values (YAML scalars, environment strings, keyword arguments) into
the types a `msgspec.Struct` declares, driven by `msgspec.inspect.type_info`. Constraints
come from ``msgspec.Meta`` (``gt``/``ge``/``lt``/``le``, lengths) and from keys in
``Meta.extra``:

- ``format``: ``"duration"`` (seconds or a string such as ``"1h30m"``, see `parse_duration`),
  ``"path"`` (a string or an ``os.PathLike``), ``"http-url"``, ``"store"`` (``"memory"`` or a
  ``redis://`` URL), ``"proxy"``, ``"header-name"``, ``"header-value"``, ``"env-name"``;
- ``schema``: validates a free-form ``dict`` against a Struct, keeping only the given keys;
- ``secret``: the value is secret-bearing (as every `Secret` is, and every ``"proxy"`` and
  ``"store"`` URL): a problem there names the path and what was expected, never the value.

Integers are 64-bit, floats finite, durations at most `MAX_SECONDS`, free-form mappings hold
JSON-like values only. Every problem is collected in a `Walk` with its dotted path and the
source that supplied the value; nothing is raised halfway, so one run reports every problem.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Final, cast

import msgspec
import msgspec.inspect as mi

from .._secrets import Secret, redact
from ..errors import ConfigProblem, ConfigurationError
from ._checks import (
    MAX_INT,
    MIN_INT,
    env_name_problem,
    header_name_problem,
    header_value_problem,
    http_url_problem,
    json_like_problem,
    money_problem,
    proxy_url_problem,
    register_url_credentials,
    store_url_problem,
    text_problem,
)
from ._durations import DURATION_HINT, MAX_SECONDS, parse_duration

__all__ = [
    "INVALID",
    "UNEXPECTED",
    "Walk",
    "build",
    "check_fields",
    "convert",
    "join",
    "key_text",
    "over_default",
    "scrub",
    "show",
    "struct_info",
    "unexpected",
    "unknown_field",
]

_log = logging.getLogger("llm_invocation.config")

#: How a problem begins when a check failed in a way it did not foresee (a bug, not bad input).
UNEXPECTED: Final = "could not be checked"


class _Invalid:
    """The marker a conversion returns after it recorded a problem."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()


# ------------------------------------------------------------------------------------ paths


def join(path: str, key: str) -> str:
    """Return the dotted path of ``key`` below ``path`` (``key`` may be a rendered sub-path)."""
    if not path:
        return key
    if not key or key.startswith("["):
        return path + key
    return f"{path}.{key}"


def key_text(key: object) -> str:
    """Return a mapping key as a path component, whatever its type or size."""
    return key if isinstance(key, str) else show(key)


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


# ------------------------------------------------------------------------------------- show


def _int_text(value: int) -> str:
    return str(value) if abs(value) < 10**18 else "a number of more than 18 digits"


def show(value: object) -> str:
    """Describe ``value`` for a message without echoing anything long enough to be a key."""
    if isinstance(value, Secret):
        return "a secret"
    if isinstance(value, str):
        return repr(value) if len(value) <= 24 else f"a {len(value)}-character string"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return str(value) if len(value.as_tuple().digits) <= 18 else "a long number"
    return f"a {type(value).__name__}"


def _kind(value: object) -> str:
    """Describe only the type of ``value``: for the secret-bearing paths."""
    if isinstance(value, Secret | str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float | Decimal):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


# ------------------------------------------------------------------------------------- walk


class Walk:
    """Collects problems while converting; knows which source supplied each path.

    While it converts a secret-bearing value (``hiding``), `show` names only the type of a
    value, never the value.
    """

    __slots__ = ("default_source", "hiding", "problems", "sources")

    def __init__(
        self, sources: Mapping[str, str] | None = None, default_source: str | None = None
    ) -> None:
        self.sources: Mapping[str, str] = {} if sources is None else sources
        self.default_source = default_source
        self.problems: list[ConfigProblem] = []
        self.hiding = 0

    def add(self, path: str, message: str, *, source: str | None = None) -> None:
        """Record a problem at ``path``; the message is scrubbed of secrets."""
        self.problems.append(
            ConfigProblem(
                path=scrub(path) or "<root>",
                message=scrub(message),
                source=source if source is not None else self.source_of(path),
            )
        )

    def show(self, value: object) -> str:
        """Describe ``value`` for a message: only its type while hiding."""
        return _kind(value) if self.hiding else show(value)

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


# ------------------------------------------------------------------------------ conversions


def _number_text(value: float | Decimal) -> str:
    if isinstance(value, float) and value.is_integer():
        return _int_text(int(value))
    if isinstance(value, int):
        return _int_text(value)
    return str(value)


_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def _to_bool(value: object, path: str, walk: Walk) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    walk.add(path, f"expected true or false, got {walk.show(value)}")
    return INVALID


def _to_number(t: mi.IntType | mi.FloatType, value: object, path: str, walk: Walk) -> object:
    integer = isinstance(t, mi.IntType)
    number: int | float | None = None
    if isinstance(value, str):
        try:
            number = int(value.strip()) if integer else float(value.strip())
        except ValueError:  # not a number, or more digits than int() reads
            number = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    if number is None or (integer and not isinstance(number, int)):
        kind = "an integer" if integer else "a number"
        walk.add(path, f"expected {kind}, got {walk.show(value)}")
        return INVALID
    if integer:
        assert isinstance(number, int)
        if not MIN_INT <= number <= MAX_INT:
            walk.add(path, f"is out of range for a 64-bit integer, got {walk.show(number)}")
            return INVALID
        return number if _in_bounds(t, number, path, walk) else INVALID
    try:
        number = float(number)
    except OverflowError:  # an int beyond the floats
        number = math.inf
    if not math.isfinite(number):
        walk.add(path, f"expected a finite number, got {walk.show(value)}")
        return INVALID
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
    got = "" if walk.hiding else f", got {_number_text(value)}"
    walk.add(path, f"must be {bound}{got}")
    return False


def _to_decimal(value: object, path: str, walk: Walk) -> object:
    number: Decimal | None = None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, str | float):
        try:
            number = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            number = None
    if number is None or not number.is_finite():
        walk.add(path, f"expected an amount of money such as 0.50, got {walk.show(value)}")
        return INVALID
    if number < 0:
        walk.add(path, f"must not be negative, got {walk.show(number)}")
        return INVALID
    if (problem := money_problem(number)) is not None:
        walk.add(path, problem)
        return INVALID
    return number


def _to_str(t: mi.StrType, value: object, path: str, walk: Walk) -> object:
    if not isinstance(value, str):
        walk.add(path, f"expected a string, got {walk.show(value)}")
        return INVALID
    if t.min_length is not None and len(value) < t.min_length:
        walk.add(path, "must not be empty" if t.min_length == 1 else "is too short")
        return INVALID
    if t.max_length is not None and len(value) > t.max_length:
        walk.add(path, f"must be at most {t.max_length} characters long")
        return INVALID
    if (problem := text_problem(value)) is not None:
        walk.add(path, problem)
        return INVALID
    return value


def _to_literal(t: mi.LiteralType, value: object, path: str, walk: Walk) -> object:
    if isinstance(value, str | int | bool) and value in t.values:
        return value
    if isinstance(value, str) and value.strip().lower() in t.values:
        return value.strip().lower()
    choices = ", ".join(repr(v) for v in t.values)
    hint = ""
    if isinstance(value, str) and not walk.hiding and len(value) <= 100:
        close = difflib.get_close_matches(value, [str(v) for v in t.values], n=1)
        hint = f" - did you mean {close[0]!r}?" if close else ""
    walk.add(path, f"must be one of {choices}, got {walk.show(value)}{hint}")
    return INVALID


def _to_list(t: mi.ListType, value: object, path: str, walk: Walk) -> object:
    if not isinstance(value, list | tuple):
        walk.add(path, f"expected a list, got {walk.show(value)}")
        return INVALID
    items = cast("list[object] | tuple[object, ...]", value)
    if t.max_length is not None and len(items) > t.max_length:
        walk.add(path, f"takes at most {t.max_length} items, got {len(items)}")
        return INVALID
    out = [convert(t.item_type, item, f"{path}[{i}]", walk) for i, item in enumerate(items)]
    return INVALID if any(item is INVALID for item in out) else out


def _to_dict(t: mi.DictType, value: object, path: str, walk: Walk) -> object:
    if not isinstance(value, Mapping):
        walk.add(path, f"expected a mapping, got {walk.show(value)}")
        return INVALID
    out: dict[str, object] = {}
    valid = True
    free_form = isinstance(t.value_type, mi.AnyType)
    hiding, walk.hiding = walk.hiding, 0  # keys are names, not secrets
    try:
        keys = {
            key: _dict_key(t.key_type, key, path, walk)
            for key in cast("Mapping[object, object]", value)
        }
    finally:
        walk.hiding = hiding
    for key, item in cast("Mapping[object, object]", value).items():
        checked = keys[key]
        if checked is INVALID:
            valid = False
            continue
        assert isinstance(key, str)
        here = join(path, key)
        if free_form and (found := json_like_problem(item, here)) is not None:
            walk.add(found.path, found.message)
            valid = False
            continue
        converted = convert(t.value_type, item, here, walk)
        valid = valid and converted is not INVALID
        out[key] = converted
    return out if valid else INVALID


def _dict_key(t: mi.Type, key: object, path: str, walk: Walk) -> object:
    if not isinstance(key, str):
        walk.add(join(path, key_text(key)), f"keys must be strings, got {show(key)}")
        return INVALID
    if isinstance(t, mi.Metadata | mi.StrType) and (problem := _key_problem(t, key)) is not None:
        walk.add(join(path, key), problem)
        return INVALID
    return key


def _key_problem(t: mi.Metadata | mi.StrType, key: str) -> str | None:
    if (problem := text_problem(key)) is not None:
        return f"the name {problem}"
    if isinstance(t, mi.Metadata):
        kind = _extra(t).get("format")
        check = _NAME_CHECKS.get(kind) if isinstance(kind, str) else None
        if check is not None:
            return check(key)
    return None


def _to_secret(t: mi.CustomType, value: object, path: str, walk: Walk) -> object:
    del t  # only Secret is supported
    if isinstance(value, Secret):
        text = value.reveal()
    elif isinstance(value, str):
        text = value
    else:
        walk.add(path, f"expected a string, got {_kind(value)}")
        return INVALID
    if not text.strip():
        walk.add(path, "must not be empty")
        return INVALID
    if (problem := text_problem(text)) is not None:
        walk.add(path, problem)
        return INVALID
    return value if isinstance(value, Secret) else Secret(text)


# ------------------------------------------------------------------------------- formats


def _extra(t: mi.Metadata) -> Mapping[str, object]:
    return cast("Mapping[str, object]", t.extra or {})  # pyright: ignore[reportUnknownMemberType] - msgspec types it as a bare dict


def _check_http_url(value: str, path: str, walk: Walk) -> object:
    problem = http_url_problem(value)
    if problem is None:
        return value
    if problem.startswith("expected"):
        problem = f"{problem}, got {walk.show(value)}"
    walk.add(path, problem)
    return INVALID


def _check_store(value: str, path: str, walk: Walk) -> object:
    if (problem := store_url_problem(value)) is not None:
        walk.add(path, problem)
        return INVALID
    register_url_credentials(value)
    return value


def _check_proxy(value: str, path: str, walk: Walk) -> object:
    if (problem := proxy_url_problem(value)) is not None:
        walk.add(path, problem)
        return INVALID
    register_url_credentials(value)
    return value


def _checker(check: Callable[[str], str | None]) -> Callable[[str, str, Walk], object]:
    def run(value: str, path: str, walk: Walk) -> object:
        if (problem := check(value)) is not None:
            walk.add(path, problem)
            return INVALID
        return value

    return run


_NAME_CHECKS: Final[dict[str, Callable[[str], str | None]]] = {
    "header-name": header_name_problem,
    "env-name": env_name_problem,
}
_CHECKS: Final[dict[str, Callable[[str, str, Walk], object]]] = {
    "http-url": _check_http_url,
    "store": _check_store,
    "proxy": _check_proxy,
    "header-value": _checker(header_value_problem),
    **{kind: _checker(check) for kind, check in _NAME_CHECKS.items()},
}


def _to_seconds(value: str | float, path: str, walk: Walk) -> object:
    try:
        seconds = parse_duration(value)
    except ValueError:
        walk.add(path, f"{DURATION_HINT}, got {walk.show(value)}")
        return INVALID
    if seconds > MAX_SECONDS:
        walk.add(path, "is too long: at most 100 years (36525d)")
        return INVALID
    return seconds


def _to_formatted(t: mi.Metadata, value: object, path: str, walk: Walk) -> object:
    extra = _extra(t)
    kind = extra.get("format")
    if kind == "duration" and isinstance(value, str | int | float) and not isinstance(value, bool):
        value = _to_seconds(value, path, walk)
        if value is INVALID:
            return INVALID
    elif kind == "path" and isinstance(value, os.PathLike):
        value = os.fspath(cast("os.PathLike[str]", value))
    converted = convert(t.type, value, path, walk)
    if converted is INVALID:
        return INVALID
    check = _CHECKS.get(kind) if isinstance(kind, str) else None
    if check is not None:
        text = converted.reveal() if isinstance(converted, Secret) else converted
        if isinstance(text, str) and check(text, path, walk) is INVALID:
            return INVALID
        return converted
    schema = extra.get("schema")
    if isinstance(schema, type) and isinstance(converted, dict):
        given = cast("dict[str, object]", converted)
        checked = build(struct_info(cast("type[msgspec.Struct]", schema)), given, path, walk)
        if checked is INVALID:
            return INVALID
        return {name: getattr(checked, name) for name in given}
    return converted


def _is_mapping(value: object) -> bool:
    return isinstance(value, Mapping)


def _to_union(t: mi.UnionType, value: object, path: str, walk: Walk) -> object:
    optional = any(isinstance(option, mi.NoneType) for option in t.types)
    if optional and (value is None or (isinstance(value, str) and value == "")):
        return None
    options = [option for option in t.types if not isinstance(option, mi.NoneType)]
    if len(options) == 2 and {type(option) for option in options} == {mi.ListType, mi.DictType}:
        # ``list[X] | dict[K, X]`` (named or unnamed items): a mapping is the dict form
        wanted = mi.DictType if _is_mapping(value) else mi.ListType
        options = [option for option in options if isinstance(option, wanted)]
    if len(options) != 1:  # otherwise the config schema only uses ``X | None``
        raise AssertionError(f"unsupported union at {path}: {t}")
    return convert(options[0], value, path, walk)


_sensitivity: dict[int, tuple[mi.Type, bool]] = {}


def _sensitive(t: mi.Type) -> bool:
    """Whether values of type ``t`` are, or hold, secrets (cached: the types are few)."""
    known = _sensitivity.get(id(t))
    if known is None or known[0] is not t:
        known = _sensitivity[id(t)] = (t, _find_sensitive(t))  # keeps ``t`` and its id alive
    return known[1]


def _find_sensitive(t: mi.Type) -> bool:
    if isinstance(t, mi.CustomType):
        return t.cls is Secret
    if isinstance(t, mi.Metadata):
        extra = _extra(t)
        secret = bool(extra.get("secret")) or extra.get("format") in ("proxy", "store")
        return secret or _find_sensitive(t.type)
    if isinstance(t, mi.UnionType):
        return any(_find_sensitive(option) for option in t.types)
    if isinstance(t, mi.ListType):
        return _find_sensitive(t.item_type)
    if isinstance(t, mi.DictType):
        return _find_sensitive(t.value_type)
    return False


def _convert(t: mi.Type, value: object, path: str, walk: Walk) -> object:
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
        result = _to_secret(t, value, path, walk)
    else:
        raise AssertionError(f"unsupported configuration type at {path}: {t}")
    return result


def convert(t: mi.Type, value: object, path: str, walk: Walk) -> object:
    """Return ``value`` converted to type ``t``, or `INVALID` after recording a problem.

    Never raises: a check that fails unexpectedly is recorded as a problem at ``path``
    (beginning with `UNEXPECTED`) and logged once, without the value.
    """
    hide = not walk.hiding and _sensitive(t)
    walk.hiding += hide
    try:
        return _convert(t, value, path, walk)
    except Exception as error:  # noqa: BLE001 - the loaders raise only ConfigurationError
        unexpected(walk, path, error)
        return INVALID
    finally:
        walk.hiding -= hide


def unexpected(walk: Walk, path: str, error: BaseException) -> None:
    """Record (and log once, by type only) a check that failed in a way it did not foresee."""
    _log.warning("configuration check at %s failed: %s", scrub(path), type(error).__name__)
    walk.add(path, f"{UNEXPECTED}: {type(error).__name__}")


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


def unknown_field(key: str, names: list[str]) -> str:
    """The message for a key that names no field, with a suggestion when one is close."""
    close = difflib.get_close_matches(key, names, n=1) if len(key) <= 100 else []
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
        walk.add(path, f"expected a mapping, got {walk.show(data)}")
        return INVALID
    given = cast("Mapping[object, object]", data)
    fields = {field.name: field for field in info.fields}
    before = len(walk.problems)
    values: dict[str, object] = {}
    for key, raw in given.items():
        if not isinstance(key, str):
            walk.add(join(path, key_text(key)), f"keys must be strings, got {show(key)}")
            continue
        field = fields.get(key)
        if field is None:
            walk.add(join(path, key), unknown_field(key, list(fields)))
            continue
        values[key] = convert(field.type, over_default(field, raw), join(path, key), walk)
    for field in info.fields:
        if field.required and field.name not in given:
            walk.add(join(path, field.name), "is required")
    if len(walk.problems) > before:
        return INVALID
    try:
        return cls(**values)
    except ConfigurationError as error:  # cross-field checks of the section's __post_init__
        for problem in error.problems:
            here = path if problem.path == "<root>" else join(path, problem.path)
            walk.add(here, problem.message)
        return INVALID


def over_default(field: mi.Field, value: object) -> object:
    """A mapping given for a section whose default is not the section's plain defaults (the
    global ``rate_limits``) merged over that default, so it changes only the keys it names;
    any other value as it is."""
    if not isinstance(field.type, mi.StructType) or not isinstance(value, Mapping):
        return value
    given = cast("Mapping[object, object]", value)
    factory = field.default_factory
    if factory is msgspec.NODEFAULT:
        return given
    default = cast("object", factory())
    if not isinstance(default, field.type.cls):
        return given
    base: dict[object, object] = {
        name: getattr(default, name) for name in default.__struct_fields__
    }
    base.update(given)
    return base


def check_fields(obj: msgspec.Struct, walk: Walk) -> None:
    """Convert and validate the fields of a Struct in place (for ``__post_init__``)."""
    for field in struct_info(type(obj)).fields:
        value = getattr(obj, field.name)
        converted = convert(field.type, over_default(field, value), field.name, walk)
        if converted is not INVALID and converted is not value:
            msgspec.structs.force_setattr(obj, field.name, converted)


_URL_PASSWORD: Final = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s/@]+@", re.I)


def scrub(text: str) -> str:
    """Mask secrets, key-shaped strings and passwords in URLs (``redis://:pw@host``)."""
    return redact(_URL_PASSWORD.sub(r"\g<head>***@", text))
