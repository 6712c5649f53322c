"""The connection behind the Redis stores and the Redis response cache.

One coredis client (one connection pool) per `Connection`, the key names, and the one
boundary where coredis, anyio and socket errors become `StoreUnavailable`: `Connection.run`.
`RedisUser` is what every Redis-backed store and cache shares: its connection, whether it
owns it, open and close.

Outages are logged here, once per connection: the first operation that fails logs one
ERROR naming the fail mode in force (``store_fail_mode``, see `Connection.fail_mode`), the
next one that succeeds logs one INFO; what fails in between is only raised. The stores'
users (the governor, the accountant) therefore count `StoreUnavailable` errors instead of
logging them. `Connection.listen` keeps one subscription to a pub/sub channel, reconnecting
after a failure; its failures count as outages too.
coredis is imported when a connection opens, never before, so importing the package stays
cheap without Redis.

coredis 6 runs on anyio and works under trio; its client is an async context manager whose
pool keeps a task group (a nursery) open, so a connection must be opened and closed by the
same task, with ``async with``.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, cast, final

import trio

from . import _redis_lua
from ._base import StoreUnavailable

if TYPE_CHECKING:
    import coredis
    from coredis.commands.script import Script

__all__ = ["Connection", "RedisUser", "hash_tagged"]

T = TypeVar("T")

log = logging.getLogger("llm_invocation.store")

_FAIL_MODES: Final = {
    "closed": "calls are refused until it is back",
    "open": "calls are admitted unchecked until it is back",
}

LISTEN_RETRY_MAX: Final = 5.0
"""The longest pause between two attempts to subscribe again after a failure."""

SCRIPTS: Final = {
    "acquire": _redis_lua.ACQUIRE,
    "leave": _redis_lua.LEAVE,
    "settle_rate": _redis_lua.SETTLE_RATE,
    "renew": _redis_lua.RENEW,
    "observe": _redis_lua.OBSERVE,
    "rate_levels": _redis_lua.RATE_LEVELS,
    "reserve": _redis_lua.RESERVE,
    "settle_budget": _redis_lua.SETTLE_BUDGET,
    "budget_levels": _redis_lua.BUDGET_LEVELS,
    "spend_report": _redis_lua.SPEND_REPORT,
}


def _members(group: BaseExceptionGroup[BaseException]) -> tuple[BaseException, ...]:
    return cast("tuple[BaseException, ...]", group.exceptions)


def hash_tagged(prefix: str) -> str:
    """The start of every store key: ``prefix`` as a Redis Cluster hash tag.

    ``"llm:"`` becomes ``"{llm:}"``, so every key of the stores hashes to one slot and a
    script may touch any of them. A prefix that already holds a non-empty ``{tag}`` is used
    as it is.

    Raises:
        ValueError: ``prefix`` is empty.
    """
    if not prefix:
        raise ValueError("the Redis key prefix must not be empty")
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 1) > start + 1:
        return prefix  # Redis hashes the first non-empty {...}
    return "{" + prefix + "}"


def _redact(url: str) -> tuple[str, list[str]]:
    """``url`` with its passwords replaced by ``***``, and the spellings of those passwords.

    The password may be in the user info (``redis://:pw@host``) or the query
    (``?password=pw``).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<an unparsable Redis URL>", []
    secrets: set[str] = set()
    if password:
        secrets |= {password, urllib.parse.unquote(password)}
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostinfo}")
    if any(name == "password" and value for name, value in query):
        secrets |= {value for name, value in query if name == "password" and value}
        redacted = [(n, "***" if n == "password" else v) for n, v in query]
        parts = parts._replace(query=urllib.parse.urlencode(redacted, safe="*"))
    if not secrets:
        return url, []
    return parts.geturl(), sorted(secrets, key=len, reverse=True)


@final
class Connection:
    """A coredis client for one URL and key prefix, shared by the stores made on it.

    Attributes:
        location: the URL with its password replaced by ``***`` (safe to log and show).
        prefix: the key prefix as given (``"llm:"``).
        base: the prefix as a hash tag (``"{llm:}"``): the start of every store key.
        timeout: seconds an operation may take before it fails with `StoreUnavailable`.
        fail_mode: what the users of the connection do while Redis is unreachable
            (``"closed"``, ``"open"``), named in the outage log lines; None: not said.
        down: whether the last operation failed (an outage is under way).
    """

    def __init__(
        self, url: str, *, prefix: str, timeout: float, fail_mode: str | None = None
    ) -> None:
        self.location, self._secrets = _redact(url)
        scheme = url.partition("://")[0].lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {self.location}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.prefix = prefix
        self.base = hash_tagged(prefix)
        self.timeout = float(timeout)
        self._url = url
        self._client: coredis.Redis[bytes] | None = None
        self._scripts: dict[str, Script[bytes]] = {}
        self._translated: tuple[type[BaseException], ...] = ()
        self._opened = False
        self._users = 0
        self.fail_mode = fail_mode
        self.down = False
        self._listen_warned = False

    def __repr__(self) -> str:
        return f"Connection({self.location!r}, prefix={self.prefix!r})"

    @asynccontextmanager
    async def open(self) -> AsyncGenerator[Connection]:
        """Connect for the duration of the block (lazily: the first operation connects).

        An exception from the block comes out as itself, not wrapped in the pool's group.

        Raises:
            RuntimeError: the connection was opened before.
            ValueError: the URL is not a valid Redis URL.
        """
        if self._opened:
            raise RuntimeError(f"{self!r} was opened before: make a new one")
        self._opened = True
        client = self._make_client()
        try:
            async with client:
                self._client = client
                try:
                    yield self
                finally:
                    self._client = None
        except BaseExceptionGroup as group:
            # The pool's task group wraps what passes through it; take the block's own
            # exception (or a lone failure) out, as open_runtime does.
            real = [m for m in _members(group) if not isinstance(m, trio.Cancelled)]
            if len(real) != 1:
                raise
            error = real[0]
            context = error.__context__
            try:
                raise error
            finally:
                error.__context__ = context  # not the group we just took it out of

    def _make_client(self) -> coredis.Redis[bytes]:
        import anyio
        import coredis
        import coredis.exceptions
        from coredis.retry import NoRetryPolicy

        self._translated = (
            coredis.exceptions.RedisError,
            OSError,  # includes TimeoutError
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        )
        try:
            client: coredis.Redis[bytes] = coredis.Redis.from_url(
                self._url,
                decode_responses=False,
                stream_timeout=self.timeout,
                connect_timeout=self.timeout,
                # A script that timed out may have run: never run it twice on our own.
                retry_policy=NoRetryPolicy(),
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"not a valid Redis URL: {self.location} ({self._scrub(str(exc))})"
            ) from None
        self._scripts = {name: client.register_script(source) for name, source in SCRIPTS.items()}
        return client

    def acquire_user(self) -> None:
        """Count one more store using this connection."""
        self._users += 1

    def release_user(self) -> None:
        """Count one store fewer; when none is left, drop the pool's connections."""
        self._users -= 1
        if self._users <= 0 and self._client is not None:
            self._client.connection_pool.disconnect()

    async def script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run one of the `SCRIPTS` (EVALSHA, loading it on NOSCRIPT).

        Raises:
            StoreUnavailable: Redis cannot be reached, failed, or did not answer in time.
        """

        async def call(client: coredis.Redis[bytes]) -> Any:
            script = cast("Callable[..., Awaitable[Any]]", self._scripts[name])
            return await script(list(keys), list(args), client=client)

        return await self.run(name, call)

    async def run(self, what: str, operation: Callable[[coredis.Redis[bytes]], Awaitable[T]]) -> T:
        """Run ``operation`` on the client within the timeout: the error boundary.

        The first failure of an outage is logged (ERROR), and the first success after it
        (INFO); see the module documentation.

        Raises:
            StoreUnavailable: the connection is not open, Redis cannot be reached or answered
                with an error, or it did not answer within the timeout. The lower-layer
                error is the ``__cause__``; messages never contain the password.
        """
        client = self._client
        if client is None:
            state = "closed" if self._opened else "not open (use `async with`)"
            raise StoreUnavailable(f"the Redis connection to {self.location} is {state}")
        with trio.move_on_after(self.timeout):
            try:
                result = await operation(client)
            except Exception as exc:
                if not self._is_transport_error(exc):
                    raise
                detail = self._scrub(f"{type(exc).__name__}: {exc}")
                error = StoreUnavailable(
                    f"Redis at {self.location} is unreachable or failed in {what}: {detail}"
                )
                self.went_down(error)
                raise error from exc
            self.came_back()
            return result
        error = StoreUnavailable(
            f"Redis at {self.location} is unreachable: it did not answer {what} within "
            f"{self.timeout:g} s"
        )
        self.went_down(error)
        raise error

    def went_down(self, error: StoreUnavailable) -> None:
        """Note a failure: the first of an outage is logged once (ERROR)."""
        if self.down:
            return
        self.down = True
        mode = self.fail_mode
        if mode is None:
            log.error("%s", error)
        else:
            consequence = _FAIL_MODES.get(mode, "")
            log.error(
                "%s (store_fail_mode=%s%s)",
                error,
                mode,
                f": {consequence}" if consequence else "",
            )

    def came_back(self) -> None:
        """Note a success: the first after an outage is logged once (INFO)."""
        if not self.down:
            return
        self.down = False
        mode = f" (store_fail_mode={self.fail_mode})" if self.fail_mode is not None else ""
        log.info("Redis at %s is reachable again%s", self.location, mode)

    async def listen(self, channel: str, on_message: Callable[[bytes], None]) -> None:
        """Call ``on_message(data)`` for every message published on ``channel``, until
        cancelled.

        One dedicated connection of the pool is subscribed. When the subscription breaks it
        is made again at once, then after pauses growing to `LISTEN_RETRY_MAX`; a failure to
        subscribe counts as an outage (`went_down`). Messages published meanwhile are lost.
        Outside the connection's ``async with`` it waits until cancelled.
        Never raises but `trio.Cancelled`.
        """
        delay = 0.0
        while True:
            client = self._client
            if client is None:
                await trio.sleep_forever()
                return  # pragma: no cover - sleep_forever never returns
            subscribed = False
            try:
                from coredis.retry import NoRetryPolicy

                async with client.pubsub(
                    channels=[channel],
                    retry_policy=NoRetryPolicy(),
                    ignore_subscribe_messages=True,
                    subscription_timeout=self.timeout,
                ) as pubsub:
                    subscribed = True
                    delay = 0.0
                    self.came_back()
                    async for message in pubsub:
                        data = message["data"]
                        if isinstance(data, bytes):
                            on_message(data)
            except Exception as exc:  # noqa: BLE001 - a hint channel: retried, never fatal
                detail = self._scrub(f"{type(exc).__name__}: {exc}")
                if not subscribed and self._is_transport_error(exc):
                    self.went_down(
                        StoreUnavailable(
                            f"Redis at {self.location} is unreachable (subscribing to its "
                            f"release notices): {detail}"
                        )
                    )
                elif not self._is_transport_error(exc) and not self._listen_warned:
                    self._listen_warned = True
                    log.warning(
                        "the subscription to Redis release notices at %s failed: %s; it is "
                        "made again, and waiters ask Redis again meanwhile (reported once)",
                        self.location,
                        detail,
                    )
            await trio.sleep(delay)
            delay = min(max(2 * delay, 0.05), LISTEN_RETRY_MAX)

    def _is_transport_error(self, exc: BaseException) -> bool:
        if isinstance(exc, BaseExceptionGroup):
            group = cast("BaseExceptionGroup[BaseException]", exc)
            return all(self._is_transport_error(m) for m in _members(group))
        return isinstance(exc, self._translated)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def ms(self, seconds: float) -> int:
        """Whole milliseconds for a TTL, at least one."""
        return max(1, math.ceil(seconds * 1000))


class RedisUser:
    """A user of a `Connection`: its own (opened by ``async with``) or shared, and closable.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
            ``unix://``. The password never appears in reprs or error messages.
        prefix: the start of every key.
        timeout: seconds an operation may take before it raises `StoreUnavailable`.
        fail_mode: what the users do while Redis is unreachable (``"closed"`` or
            ``"open"``), named in the outage log lines (see `set_fail_mode`).

    Raises:
        ValueError: the URL is not a Redis URL, the prefix is empty or the timeout is not
            positive.
    """

    _conn: Connection
    _owns: bool
    _closed: bool
    _cm: AbstractAsyncContextManager[Connection] | None

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llm:",
        timeout: float = 1.0,
        fail_mode: str | None = None,
    ) -> None:
        self._setup(Connection(url, prefix=prefix, timeout=timeout, fail_mode=fail_mode), owns=True)

    @classmethod
    def _on(cls, connection: Connection) -> Self:
        """A user of ``connection``, which its opener opens and closes."""
        user = cls.__new__(cls)
        user._setup(connection, owns=False)
        return user

    @classmethod
    def sharing(cls, other: RedisUser) -> Self:
        """A user of ``other``'s connection (for example the response cache on the stores'
        pool): one pool, and one outage log line for all of them. ``other``'s opener opens
        and closes it; call `aclose` on this user when done."""
        return cls._on(other._conn)

    def _setup(self, connection: Connection, *, owns: bool) -> None:
        self._conn = connection
        self._owns = owns
        self._closed = False
        self._cm = None
        connection.acquire_user()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._conn.location!r}, prefix={self._conn.prefix!r})"

    def set_fail_mode(self, mode: str) -> None:
        """Name the fail mode the connection's users apply while Redis is unreachable
        (``"closed"``, ``"open"``), for its outage log lines. The connection is shared by
        the stores opened together, so one call covers them all."""
        self._conn.fail_mode = mode

    async def __aenter__(self) -> Self:
        """Open this user's own connection pool.

        Raises:
            RuntimeError: the connection is shared (its opener opens it), or was opened before.
        """
        if not self._owns:
            raise RuntimeError(f"{self!r} shares a connection opened by open_redis_stores")
        cm = self._conn.open()
        await cm.__aenter__()
        self._cm = cm
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._close()
        cm, self._cm = self._cm, None
        if cm is None:
            return None
        return await cm.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Stop using the connection; its pool closes when no user is left."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.release_user()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed")
