"""Secrets that never leak: a masked string type and a text scrubber.

`Secret` holds an API key or token. Its ``repr`` and ``str`` are masked; the value is only
available through :meth:`Secret.reveal`, which the provider codecs call when they build a
request. Every `Secret` made in this process is remembered (by value, in a bounded set) so
that :func:`redact` can scrub it from any text: log lines, error messages, reprs of foreign
objects. :func:`redact` also masks strings shaped like well-known provider keys and
``Authorization``-style header values, so a key that never went through `Secret` is still
masked.
"""

from __future__ import annotations

import re
import threading
from typing import Final, final

__all__ = ["Secret", "mask", "redact", "register_secret"]

_MIN_SECRET_LEN: Final = 6
_MAX_REMEMBERED: Final = 4096

_lock = threading.Lock()
_known: dict[str, None] = {}  # insertion ordered, so the oldest is dropped first
_known_pattern: re.Pattern[str] | None = None

# Shapes of provider credentials. Kept deliberately broad: masking a harmless string that
# merely looks like a key costs nothing, leaking a key costs a rotation.
_KEY_SHAPES: Final = re.compile(
    r"""
    (?:sk|pk|rk)-(?:ant-|proj-|svcacct-|or-v1-)?[A-Za-z0-9_\-]{12,}  # OpenAI, Anthropic, ...
    | AIza[0-9A-Za-z_\-]{30,}                                       # Google API keys
    | gsk_[A-Za-z0-9]{20,}                                          # Groq
    | xai-[A-Za-z0-9]{20,}                                          # xAI
    | hf_[A-Za-z0-9]{20,}                                           # Hugging Face
    """,
    re.VERBOSE,
)
# Header or query parameter carrying a credential: keep the name, mask the value.
_CREDENTIAL_FIELDS: Final = re.compile(
    r"""(?ix)
    (?P<name>
        \bauthorization["']?\s*[:=]\s*["']?(?:bearer|basic|token)?\s*
      | \b(?:x-api-key|api-key|x-goog-api-key|api_key|apikey|access_token|token)["']?\s*[:=]\s*["']?
      | [?&]key=
    )
    (?P<value>(?=[^\s"'&,;}]*\d)[^\s"'&,;}]{8,})   # token-like: 8+ chars with a digit
    """
)


def mask(value: str) -> str:
    """Return a masked form of ``value`` that keeps only a hint of its shape.

    Short values are masked completely; longer ones keep their first three characters so an
    operator can tell an OpenAI key from an Anthropic one in a diagnostic.
    """
    if len(value) < 12:
        return "***"
    return f"{value[:3]}***"


def register_secret(value: str) -> None:
    """Remember ``value`` so that :func:`redact` masks it wherever it appears."""
    global _known_pattern
    if len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value in _known:
            return
        _known[value] = None
        while len(_known) > _MAX_REMEMBERED:
            del _known[next(iter(_known))]
        _known_pattern = None


def _pattern() -> re.Pattern[str] | None:
    global _known_pattern
    pattern = _known_pattern
    if pattern is None and _known:
        with _lock:
            ordered = sorted(_known, key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(s) for s in ordered))
            _known_pattern = pattern
    return pattern


def redact(text: str) -> str:
    """Mask every known secret, key-shaped string and credential field value in ``text``."""
    pattern = _pattern()
    if pattern is not None:
        text = pattern.sub(lambda m: mask(m.group(0)), text)
    text = _CREDENTIAL_FIELDS.sub(lambda m: m.group("name") + "***", text)
    return _KEY_SHAPES.sub(lambda m: mask(m.group(0)), text)


@final
class Secret:
    """A credential whose value never appears in a repr, str, log line or error message.

    Two secrets are equal when their values are; the hash does not reveal the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):  # pyright: ignore[reportUnnecessaryIsInstance]
            value = value.reveal()
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        """Return the plain value. Call only where the value leaves for its provider."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"

    def __str__(self) -> str:
        return mask(self._value)

    def __format__(self, spec: str) -> str:
        return format(mask(self._value), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the key in clear to wherever the pickle goes.
        raise TypeError("Secret values cannot be pickled")
