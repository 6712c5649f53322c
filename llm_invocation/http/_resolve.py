"""`Resolver`: the addresses of a host, looked up once for many connections.

A numeric address (``127.0.0.1``, ``::1``) is converted without a lookup and without a trip
through the scheduler. A host name is looked up by `trio.socket.getaddrinfo` (the system's
resolver, in a worker thread) and its addresses are kept for ``ttl`` seconds, as aiohttp
does by default: a fan-out that opens thousands of connections to one provider makes one
lookup, not thousands. Concurrent first lookups of a name share one. A failed lookup is not
kept: the next connection asks again.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from typing import Any, Final, final

import trio

__all__ = ["DEFAULT_DNS_TTL", "Resolver"]

DEFAULT_DNS_TTL: Final = 10.0
"""Seconds the addresses of a host name are kept."""
_MAX_NAMES: Final = 256

AddressInfo = tuple[int, int, int, str, Any]
"""``(family, type, proto, canonname, sockaddr)``, as `socket.getaddrinfo` gives them."""


@final
class Resolver:
    """The TCP addresses of ``host:port``: see the module documentation.

    Args:
        ttl: seconds the addresses of a host name are kept (0: looked up every time).

    Raises:
        ValueError: ``ttl`` is negative or not a number.
    """

    def __init__(self, ttl: float = DEFAULT_DNS_TTL) -> None:
        if not ttl >= 0:
            raise ValueError(f"the DNS cache time must be a number of seconds >= 0, got {ttl!r}")
        self.ttl = ttl
        self.lookups = 0
        """Lookups of host names made so far."""
        self._numeric: dict[tuple[str, int], list[AddressInfo]] = {}
        self._names: OrderedDict[tuple[str, int], tuple[float, list[AddressInfo]]] = OrderedDict()
        self._pending: dict[tuple[str, int], trio.Event] = {}

    async def resolve(self, host: str, port: int) -> list[AddressInfo]:
        """The addresses to try, in the resolver's order.

        Raises:
            OSError: (`socket.gaierror`) the name cannot be resolved.
        """
        key = (host, port)
        numeric = self._numeric.get(key)
        if numeric is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            return numeric
        numeric = _numeric(host, port)
        if numeric is not None:
            if len(self._numeric) < _MAX_NAMES:
                self._numeric[key] = numeric
            await trio.lowlevel.checkpoint_if_cancelled()
            return numeric
        while True:
            kept = self._names.get(key)
            if kept is not None and kept[0] > trio.current_time():
                await trio.lowlevel.checkpoint_if_cancelled()
                return kept[1]
            pending = self._pending.get(key)
            if pending is None:
                return await self._lookup(key)
            await pending.wait()  # then the cache, or a lookup of our own if it failed

    async def _lookup(self, key: tuple[str, int]) -> list[AddressInfo]:
        done = self._pending[key] = trio.Event()
        try:
            self.lookups += 1
            found = await trio.socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
            infos: list[AddressInfo] = [
                (family, kind, proto, name, address) for family, kind, proto, name, address in found
            ]
            if self.ttl > 0 and infos:
                self._names[key] = (trio.current_time() + self.ttl, infos)
                self._names.move_to_end(key)
                while len(self._names) > _MAX_NAMES:
                    self._names.popitem(last=False)
            return infos
        finally:
            del self._pending[key]
            done.set()


def _numeric(host: str, port: int) -> list[AddressInfo] | None:
    """The addresses of a numeric ``host`` (no lookup, no I/O); None for a host name."""
    try:
        infos = socket.getaddrinfo(
            host,
            port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        )
    except (socket.gaierror, UnicodeError):
        return None
    return [(family, kind, proto, name, address) for family, kind, proto, name, address in infos]
