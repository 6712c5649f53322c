"""Private: how configuration values are shown (reprs, `Config.redacted`), secrets masked.

What is masked follows the declared types, not the look of a value: a `Secret` shows as its
mask (`~llm_invocation._secrets.mask`), a ``secret`` string (an HTTP header value) as ``***``
(keeping a ``Bearer`` scheme), a ``proxy`` or ``store`` URL with its user, password and
``password=`` parameter as ``***``. Every other string is scrubbed of known secrets and
key-shaped text.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, cast

import msgspec
import msgspec.inspect as mi

from .._secrets import Secret
from ._checks import mask_header_value, mask_url_credentials
from ._walk import scrub, struct_info

__all__ = ["redacted_value", "safe_repr"]


def _extra(t: mi.Metadata) -> Mapping[str, object]:
    return cast("Mapping[str, object]", t.extra or {})  # pyright: ignore[reportUnknownMemberType] - msgspec types it as a bare dict


def _masked_text(t: mi.Type, value: object) -> str | None:
    """The masked form of a secret-bearing value of type ``t``, or None if it is not one."""
    if not isinstance(t, mi.Metadata):
        return None
    extra = _extra(t)
    text = value.reveal() if isinstance(value, Secret) else value
    if not isinstance(text, str):
        return None
    if extra.get("format") in ("proxy", "store"):
        return scrub(mask_url_credentials(text))
    if extra.get("secret") and not isinstance(value, Secret):  # a Secret masks itself
        return mask_header_value(text)
    return _masked_text(t.type, value)


def _inner(t: mi.Type, value: object) -> mi.Type:
    """The type to show ``value`` with: the non-None member of an optional."""
    while isinstance(t, mi.UnionType):
        options = [o for o in t.types if not isinstance(o, mi.NoneType)]
        if value is None or len(options) != 1:
            return mi.AnyType()
        t = options[0]
    return t


def _items(t: mi.Type) -> tuple[mi.Type, mi.Type] | None:
    """The item types of a list (item, item) or dict (key, value) type, under metadata."""
    while isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.ListType):
        return t.item_type, t.item_type
    if isinstance(t, mi.DictType):
        return t.key_type, t.value_type
    return None


def safe_repr(t: mi.Type, value: object) -> str:
    """Return the repr of a field value of type ``t`` with every secret masked."""
    t = _inner(t, value)
    masked = _masked_text(t, value)
    if masked is not None:
        return f"Secret({masked!r})" if isinstance(value, Secret) else repr(masked)
    if isinstance(value, str):
        return scrub(repr(value))
    if isinstance(value, msgspec.Struct | Secret):
        return repr(value)  # a section masks its own fields, a secret itself
    items = _items(t) or (mi.AnyType(), mi.AnyType())
    if isinstance(value, Mapping):
        pairs = cast("Mapping[object, object]", value).items()
        return "{" + ", ".join(_pair_repr(items[1], k, v) for k, v in pairs) + "}"
    if isinstance(value, list | tuple):
        shown = [safe_repr(items[0], v) for v in cast("list[object] | tuple[object, ...]", value)]
        return "[" + ", ".join(shown) + "]"
    return scrub(repr(value))


def _pair_repr(t: mi.Type, key: object, value: object) -> str:
    name = scrub(repr(key))
    if isinstance(value, str) and _masked_text(_inner(t, value), value) is None:
        return scrub(f"{key!r}: {value!r}")  # scrub with the key: ``Authorization: ...``
    return f"{name}: {safe_repr(t, value)}"


def redacted_value(t: mi.Type, value: object) -> Any:
    """Return a value of type ``t`` as JSON-able builtins with every secret masked."""
    t = _inner(t, value)
    masked = _masked_text(t, value)
    if masked is not None:
        return masked
    if isinstance(value, msgspec.Struct):
        info = struct_info(type(value))
        return {f.name: redacted_value(f.type, getattr(value, f.name)) for f in info.fields}
    if isinstance(value, Secret | Decimal):
        return str(value)
    if isinstance(value, str):
        return scrub(value)
    items = _items(t) or (mi.AnyType(), mi.AnyType())
    if isinstance(value, list | tuple):
        return [redacted_value(items[0], v) for v in cast("list[object]", value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in cast("Mapping[object, object]", value).items():
            name = scrub(str(key))
            if isinstance(item, str) and _masked_text(_inner(items[1], item), item) is None:
                head = f"{key}: "  # scrub with the key, as in a header line
                line = scrub(head + item)
                out[name] = line[len(head) :] if line.startswith(head) else scrub(item)
            else:
                out[name] = redacted_value(items[1], item)
        return out
    return value
