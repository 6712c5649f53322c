"""The response cache: answers of identical requests, by a key derived from the request.

`ResponseCache` is what the client needs: ``get`` and ``set`` of opaque bytes (the encoded
response) under a string key with a TTL. `MemoryResponseCache` keeps them in this process
(least recently used first out, TTL on `trio.current_time`); `RedisResponseCache` in Redis
(``SET ... PX``), shared by every process. `cache_key` names a request by what determines
its answer.

Redis keys are ``<prefix>cache:<key>``, without the stores' hash tag: entries are independent
and may spread over a cluster. coredis is imported only when a Redis cache opens.
"""

from __future__ import annotations

import abc
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, final

import msgspec
import trio

from ..types import Request
from ._redis_conn import RedisUser

__all__ = ["MemoryResponseCache", "RedisResponseCache", "ResponseCache", "cache_key"]

CACHE_KEY_VERSION: Final = "v1"
"""Hashed first; changes when the encoding changes, so old entries are no longer found."""


def cache_key(request: Request) -> str:
    """The cache key of ``request``: a sha256 (hex) over what determines the answer.

    The fields are the model, provider, messages, options, tools, tool choice and response
    format, encoded as msgspec JSON with sorted keys (defaults omitted, so an option left
    unset and one set to its default agree). Metadata, ``stream`` and ``cache`` do not
    change the answer and are left out.
    """
    fields = {
        "model": request.model,
        "provider": request.provider,
        "messages": request.messages,
        "options": request.options,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
    }
    encoded = msgspec.json.encode(fields, order="sorted")
    return hashlib.sha256(CACHE_KEY_VERSION.encode() + b"\n" + encoded).hexdigest()


class ResponseCache(abc.ABC):
    """Encoded responses by key, each for a TTL."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when absent or expired.

        Raises:
            StoreUnavailable: the shared cache cannot be reached.
        """

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (nothing when ``ttl <= 0``).

        Raises:
            StoreUnavailable: the shared cache cannot be reached.
        """

    async def aclose(self) -> None:
        """Release connections (nothing for the memory cache)."""
        return


@final
class MemoryResponseCache(ResponseCache):
    """At most ``max_entries`` responses in this process; the least recently used go first.

    Args:
        max_entries: how many entries to keep.
        clock: the time source (`trio.current_time` by default, so ``autojump_clock`` tests
            are exact).

    Raises:
        ValueError: ``max_entries`` is below 1.
    """

    def __init__(
        self, max_entries: int = 1024, *, clock: Callable[[], float] | None = None
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._clock = clock or trio.current_time
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when absent or expired."""
        await trio.lowlevel.checkpoint()
        return self.get_nowait(key)

    def get_nowait(self, key: str) -> bytes | None:
        """`get` without a checkpoint."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, evicting the least recently used."""
        await trio.lowlevel.checkpoint()
        self.set_nowait(key, value, ttl)

    def set_nowait(self, key: str, value: bytes, ttl: float) -> None:
        """`set` without a checkpoint."""
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (value, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@final
class RedisResponseCache(RedisUser, ResponseCache):
    """Responses in Redis (``SET key value PX ttl``), shared by every process using it.

    Use it as ``async with RedisResponseCache(url) as cache:`` (entered and left by the same
    task); after `aclose` or outside the block, operations raise `StoreUnavailable`.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
            ``unix://``. The password never appears in reprs or error messages.
        prefix: the start of every key: ``<prefix>cache:<key>``.
        timeout: seconds an operation may take before it raises `StoreUnavailable`.

    Raises:
        ValueError: the URL is not a Redis URL, the prefix is empty or the timeout is not
            positive.
    """

    def _key(self, key: str) -> str:
        return f"{self._conn.prefix}cache:{key}"

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when absent or expired.

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        self._check_open()
        name = self._key(key)
        value: Any = await self._conn.run("cache get", lambda client: client.get(name))
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (delete it when ``ttl <= 0``).

        Raises:
            StoreUnavailable: Redis cannot be reached, failed or was too slow.
        """
        self._check_open()
        name = self._key(key)
        if ttl <= 0:
            await self._conn.run("cache set", lambda client: client.delete([name]))
            return
        px = self._conn.ms(ttl)
        await self._conn.run("cache set", lambda client: client.set(name, value, px=px))
