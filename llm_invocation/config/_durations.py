"""Private: durations, read from seconds or strings such as ``"1h30m"`` and written back."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Final, cast

__all__ = ["DURATION_HINT", "MAX_SECONDS", "format_duration", "parse_duration"]

#: The longest duration a configuration accepts: 100 years (36525 days), in seconds.
MAX_SECONDS: Final = 36525 * 86400

DURATION_HINT: Final = "expected seconds or a duration such as '100ms', '30s', '1h30m', '2d'"

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


def parse_duration(text: str | float) -> float:
    """Return the number of seconds a duration stands for.

    Accepts a non-negative number of seconds (``30``, ``1.5``, ``"30"``) or a string of one or
    more ``<number><unit>`` parts with units ``ns``, ``us``, ``ms``, ``s``, ``m``, ``h`` and
    ``d``: ``"100ms"``, ``"1.5s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, Go's ``"6m0s"``.

    Raises:
        ValueError: when ``text`` is negative, not finite (or too large for a float), a bool,
            or not a duration. The message repeats ``text`` only when it is short.
    """
    if isinstance(text, bool) or not isinstance(cast("object", text), str | int | float):
        raise ValueError(f"expected a duration, got {type(text).__name__}")
    if not isinstance(text, str):
        try:
            seconds = float(text)
        except OverflowError:
            raise ValueError("a duration must be a finite number >= 0, got a huge number") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a duration must be a finite number >= 0, got {seconds!r}")
        return seconds
    shown = repr(text) if len(text) <= 24 else f"a {len(text)}-character string"
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        return _finite(Decimal(stripped), shown)
    total = Decimal(0)
    position = 0
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise ValueError(f"invalid duration {shown}: {DURATION_HINT}")
        total += Decimal(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0:
        raise ValueError(f"invalid duration {shown}: {DURATION_HINT}")
    return _finite(total, shown)


def _finite(total: Decimal, shown: str) -> float:
    seconds = float(total)
    if not math.isfinite(seconds):
        raise ValueError(f"the duration {shown} is too long")
    return seconds


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as the shortest readable duration: ``"100ms"``, ``"30s"``, ``"1h30m"``.

    `parse_duration` reads the result back (to the microsecond).

    Raises:
        ValueError: when ``seconds`` is negative or not finite (or too large for a float).
    """
    try:
        seconds = float(seconds)
    except (OverflowError, TypeError, ValueError):
        raise ValueError("a duration must be a finite number >= 0") from None
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
