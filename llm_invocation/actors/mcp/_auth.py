"""HTTP authentication of an MCP server beyond static headers.

`MCPAuth` is either

- an ``httpx2.Auth`` (the SDK's OAuth provider, ``mcp.client.auth.OAuthClientProvider``, is
  one): it signs every request and may refresh its tokens itself; or
- a header provider: a function, plain or ``async``, called once per connection (and so
  again on every reconnection), returning headers such as ``{"Authorization": "Bearer …"}``
  that are added to the configured ones.

The values are secrets: they are never logged, and an error names only the provider.
This module imports nothing heavy (the ``httpx2`` type is for type checkers only).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from ...errors import ConfigurationError

if TYPE_CHECKING:
    import httpx2

__all__ = ["HeaderProvider", "MCPAuth", "provided_headers"]

HeaderProvider: TypeAlias = Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]]
"""Returns the headers of a new connection (called once per connection)."""

MCPAuth: TypeAlias = "httpx2.Auth | HeaderProvider"
"""How an ``http`` or ``sse`` MCP server is authenticated (see the module)."""


async def provided_headers(provider: HeaderProvider) -> dict[str, str]:
    """Call ``provider`` (awaiting it if it is async) and check what it returned.

    Raises:
        ConfigurationError: it did not return a mapping of strings to strings (the values
            are not shown).
    """
    value: object = provider()
    if inspect.isawaitable(value):
        value = await cast("Awaitable[object]", value)
    if isinstance(value, Mapping):
        given = cast("Mapping[Any, Any]", value)
        headers = {k: v for k, v in given.items() if isinstance(k, str) and isinstance(v, str)}
        if len(headers) == len(given):
            return headers
    name = getattr(provider, "__qualname__", type(provider).__name__)
    raise ConfigurationError(
        f"the MCP header provider {name} must return a mapping of strings to strings",
        details={"reason": "invalid_mcp_auth"},
    )
