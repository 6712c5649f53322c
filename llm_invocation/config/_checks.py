"""Private: checks of single configuration values, and the masks of the secret-bearing ones.

Every check returns the reason a value is unusable, or None, and never repeats the value: a
URL may carry a password, a header value a token. The bounds here keep hostile input (a
400-digit number, a value nested a thousand levels deep, a structure that holds itself) from
reaching code that would fail on it with something other than a configuration problem.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal
from typing import Final, NamedTuple, cast
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

import httpx

from .._secrets import register_secret

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_MONEY",
    "MAX_NODES",
    "MIN_INT",
    "MONEY_PLACES",
    "Oversize",
    "env_name_problem",
    "header_name_problem",
    "header_value_problem",
    "http_url_problem",
    "json_like_problem",
    "mask_header_value",
    "mask_url_credentials",
    "money_problem",
    "oversize",
    "proxy_url_problem",
    "register_url_credentials",
    "store_url_problem",
    "text_problem",
]

#: The deepest nesting a configuration value may have (a section counts as one level).
MAX_DEPTH: Final = 32
#: The most values (mappings, lists and scalars, aliases expanded) one layer may hold.
MAX_NODES: Final = 100_000
#: Integers are 64-bit signed.
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1
#: The largest amount of money, and the most decimal places one may have.
MAX_MONEY: Final = Decimal(10) ** 15
MONEY_PLACES: Final = 18

_CONTROL_OR_SPACE: Final = re.compile(r"[\x00-\x20\x7f]")
_HEADER_VALUE_BAD: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PROXY_HOST: Final = re.compile(r"[A-Za-z0-9._~-]+|[0-9A-Fa-f:.]+")
_AUTH_SCHEME: Final = re.compile(r"(?i)(bearer|basic|token|digest|negotiate|apikey)(?=\s)")


# ------------------------------------------------------------------------------------- text


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be configuration text: a NUL character or invalid Unicode."""
    if "\x00" in value:
        return "must not contain a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid text (a lone surrogate: was it read from invalid UTF-8?)"
    return None


def header_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an HTTP header name."""
    if not _TOKEN.fullmatch(name):
        return "is not a valid HTTP header name"
    return None


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent in an HTTP header (a line break, a control character)."""
    problem = text_problem(value)
    if problem is None and _HEADER_VALUE_BAD.search(value):
        problem = "must not contain line breaks or control characters"
    return problem


def env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an environment variable name."""
    if not name or "=" in name or "\x00" in name:
        return "is not a valid environment variable name"
    return text_problem(name)


# ------------------------------------------------------------------------------------ money


def money_problem(number: Decimal) -> str | None:
    """Why a finite, non-negative ``number`` is not a usable amount of money."""
    if number > MAX_MONEY:
        return "is too large (at most 1000000000000000)"
    exponent = number.as_tuple().exponent
    if number and isinstance(exponent, int) and exponent < -MONEY_PLACES:
        return f"has too many decimal places (at most {MONEY_PLACES})"
    return None


# ------------------------------------------------------------------------------------- URLs


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts


def _httpx_accepts(url: str) -> bool:
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return False
    return True


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an ``http://`` or ``https://`` URL."""
    parts = _split(url)
    if parts is None or text_problem(url) is not None:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "expected an http:// or https:// URL"
    if not parts.hostname or _CONTROL_OR_SPACE.search(url) or not _httpx_accepts(url):
        return "is not a valid URL (a bad host, port or character)"
    return None


def store_url_problem(url: str) -> str | None:
    """Why ``url`` is neither ``memory`` nor a ``redis://`` or ``rediss://`` URL."""
    if url == "memory":
        return None
    expected = "expected 'memory' or a redis:// or rediss:// URL"
    parts = _split(url)
    if parts is None or text_problem(url) is not None:
        return f"{expected} (this one is malformed)"
    if parts.scheme not in ("redis", "rediss") or not parts.netloc:
        return expected
    if not parts.hostname or _CONTROL_OR_SPACE.search(url):
        return f"{expected} (this one has no valid host)"
    if parts.path not in ("", "/") and not re.fullmatch(r"/\d{1,5}", parts.path):
        return f"{expected} (the path may only be a database number such as /0)"
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key == "timeout" and store_timeout(value) is None:
            return "its timeout= must be a number of seconds above 0 and at most 600"
    return None


def store_timeout(value: str) -> float | None:
    """A store URL's ``timeout=`` in seconds, or None when it is not in (0, 600]."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 < seconds <= 600 else None


def proxy_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable proxy URL, or None when it is one.

    A proxy URL is ``http://`` or ``https://``, a host, optionally credentials and a port,
    and nothing more. The message never repeats the URL (it may hold credentials).
    """
    parts = _split(url)
    if parts is None or text_problem(url) is not None or _CONTROL_OR_SPACE.search(url):
        return "is not a valid proxy URL (expected http://host:port, credentials optional)"
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        return "SOCKS proxies are not supported: use an http:// or https:// proxy"
    if scheme not in ("http", "https"):
        return "expected an http:// or https:// proxy URL"
    if not parts.hostname or not _PROXY_HOST.fullmatch(parts.hostname):
        return "has no valid host (expected http://host:port, credentials optional)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must be scheme://host:port (credentials optional), without a path or query"
    try:
        httpx.Proxy(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return "is not a valid proxy URL (expected http://host:port, credentials optional)"
    return None


def register_url_credentials(url: str) -> None:
    """Make the user, password and ``password=`` parameter of a valid URL secrets."""
    parts = _split(url)
    if parts is None:
        return
    for part in (parts.username, parts.password):
        if part:
            register_secret(part)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() == "password" and value:
            register_secret(value)


def mask_url_credentials(url: str) -> str:
    """Return ``url`` with its user, password and ``password=`` parameter shown as ``***``.

    A URL that cannot be parsed is masked whole.
    """
    parts = _split(url)
    if parts is None:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        masked = ("***" if user else "") + (":***" if colon and password else colon)
        netloc = f"{masked}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() == "password" for name, _ in pairs):
            masked_pairs = [(n, "***" if n.lower() == "password" else v) for n, v in pairs]
            query = urlencode(masked_pairs, safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


def mask_header_value(value: str) -> str:
    """Return a header value as ``***``, keeping only a leading scheme (``Bearer ***``)."""
    scheme = _AUTH_SCHEME.match(value)
    return f"{scheme.group(1)} ***" if scheme else "***"


# ---------------------------------------------------------------------------- bounded data


class Oversize(NamedTuple):
    """Where a value is nested too deeply or holds too much, relative to its root."""

    path: str
    message: str


def _key_text(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return repr(key)
    if isinstance(key, int):
        return str(key) if abs(key) < 10**18 else "<a huge number>"
    return f"<a {type(key).__name__}>"


def _child(path: str, key: str) -> str:
    if not path:
        return key
    return path + key if key.startswith("[") else f"{path}.{key}"


def oversize(
    value: object, path: str = "", *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES
) -> Oversize | None:
    """Find where ``value`` nests deeper than ``max_depth`` or holds more than ``max_nodes``
    values (shared values count each time they appear; a value that holds itself nests
    without end). Mappings, lists and tuples are looked into; nothing recurses.
    """
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    count = 0
    while stack:
        item, here, depth = stack.pop()
        count += 1
        if count > max_nodes:
            return Oversize(path, f"holds more than {max_nodes} values")
        if depth > max_depth:
            return Oversize(here, f"nests deeper than {max_depth} levels (or holds itself)")
        if isinstance(item, Mapping):
            for key, child in cast("Mapping[object, object]", item).items():
                stack.append((child, _child(here, _key_text(key)), depth + 1))
        elif isinstance(item, list | tuple):
            for index, child in enumerate(cast("list[object] | tuple[object, ...]", item)):
                stack.append((child, f"{here}[{index}]", depth + 1))
    return None


def json_like_problem(value: object, path: str = "") -> Oversize | None:
    """Find the first value below ``value`` that is not JSON-like: null, true/false, a 64-bit
    integer, a float, text, a list, or a mapping with text keys. Nothing recurses.
    """
    found = oversize(value, path)
    if found is not None:
        return found
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, here = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                return Oversize(here, "is out of range for a 64-bit integer")
        elif isinstance(item, float):
            if not math.isfinite(item):
                return Oversize(here, "must be a finite number")
        elif isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                return Oversize(here, problem)
        elif isinstance(item, Mapping):
            for key, child in cast("Mapping[object, object]", item).items():
                if not isinstance(key, str):
                    return Oversize(_child(here, _key_text(key)), "keys must be strings")
                stack.append((child, _child(here, key)))
        elif isinstance(item, list | tuple):
            for index, child in enumerate(cast("list[object] | tuple[object, ...]", item)):
                stack.append((child, f"{here}[{index}]"))
        else:
            message = (
                "must be JSON-like (null, true/false, a number, text, a list or a mapping),"
                f" got a {type(item).__name__}"
            )
            return Oversize(here, message)
    return None
