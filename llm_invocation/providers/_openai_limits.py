"""OpenAI's rate-limit headers (WIRE-FORMATS 1.8), shared by Chat Completions, the Responses
API, Azure and the compatible servers.

``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` and ``retry-after``; the unsuffixed
``x-ratelimit-limit|remaining|reset`` (Together) count requests. Counts may be sent as
``5000`` or ``5000.0``; resets as Go durations (``6m0s``, ``12ms``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from ._base import RateLimitInfo, count_in_range, parse_duration_header, parse_retry_after

__all__ = ["parse_openai_rate_limits"]

_NO_LIMITS: Final = RateLimitInfo()
_NAMES: Final = frozenset(
    f"x-ratelimit-{what}{of}"
    for what in ("limit", "remaining", "reset")
    for of in ("", "-requests", "-tokens")
) | {"retry-after", "retry-after-ms"}
"""Every header read here: a response with none of them (most are) is answered at once."""


def _int_header(value: str | None) -> int | None:
    """A count header (``5000``, also ``5000.0``); None when malformed or out of range."""
    if not value:
        return None
    try:
        return count_in_range(int(value))
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return None
    return count_in_range(int(number)) if math.isfinite(number) else None


def _duration_header(value: str | None) -> float | None:
    return parse_duration_header(value) if value else None


def parse_openai_rate_limits(
    headers: Mapping[str, str], *, retry_after_on_success: bool = False
) -> RateLimitInfo | None:
    """The rate-limit state OpenAI-style headers tell; None when no such header is present.

    Args:
        headers: the response headers, names in lower case.
        retry_after_on_success: the server sends ``retry-after`` on every 2xx (Together), so
            it is no back-off signal here.
    """
    if _NAMES.isdisjoint(headers):
        return None
    get = headers.get
    info = RateLimitInfo(
        requests_limit=_int_header(get("x-ratelimit-limit-requests") or get("x-ratelimit-limit")),
        requests_remaining=_int_header(
            get("x-ratelimit-remaining-requests") or get("x-ratelimit-remaining")
        ),
        requests_reset=_duration_header(
            get("x-ratelimit-reset-requests") or get("x-ratelimit-reset")
        ),
        tokens_limit=_int_header(get("x-ratelimit-limit-tokens")),
        tokens_remaining=_int_header(get("x-ratelimit-remaining-tokens")),
        tokens_reset=_duration_header(get("x-ratelimit-reset-tokens")),
        retry_after=None if retry_after_on_success else parse_retry_after(headers),
    )
    if info == _NO_LIMITS:
        return None
    return info
