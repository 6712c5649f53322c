"""Connections of `FastHTTPTransport`: sockets, TLS, the read-deadline watchdog, the pool.

* **Plain http** runs on a non-blocking stdlib socket: ``recv`` straight into the decoder and
  a wait only when the kernel has nothing (through the run's `Reactor`, ``_reactor.py``,
  which wakes readers a few per scheduler batch); ``send`` and ``wait_writable`` only when
  the kernel buffer is full. Every call that can block checkpoints, and every wait is
  cancellable.
* **https** runs on the same socket and the same loop: an `ssl.SSLObject` between two
  memory BIOs (`TLS`, ``_records.py``). The bytes the socket has are fed to the incoming
  BIO and every whole record they complete is decrypted in the same call, up to the size
  asked for (`trio.SSLStream` hands out one record per read, through several layers of
  locks and checkpoints); what is written is encrypted into the outgoing BIO and sent like
  plain bytes. The handshake (SNI, certificate and host name checks, ALPN ``http/1.1``) is the
  context's, as before; the end of the stream without ``close_notify`` is an end of stream,
  as in `trio.SSLStream` with ``https_compatible=True``; closing a healthy connection sends
  ``close_notify`` without waiting for the peer's.
* **Read deadlines.** A trio cancel scope with a deadline costs about as much as the wait and
  the read it guards (7 us here), so on plain http a waiting read only records its deadline
  and one system task per transport (`Watchdog`, started at the first read deadline of a trio
  run) sleeps until the soonest one and wakes an expired reader, which raises
  `httpx.ReadTimeout` and closes its connection. Everything else uses cancel scopes.
* **Pool** (`ConnectionPool`). Per origin (scheme, host, port) a LIFO stack of idle
  connections: checkout pops the freshest, return pushes, both O(1). An idle connection that
  is past ``keepalive_expiry``, or whose socket is readable while idle (the peer closed it or
  sent something unasked: checked with ``MSG_PEEK``), is discarded at checkout. Admission is
  FIFO, up to ``max_connections`` requests holding a connection at once.

Every OS, TLS and trio error becomes an httpx exception here (`io_error` and the timeout
checks), chained to its cause, so the pool can still tell a TLS certificate problem apart.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import ssl
from collections import deque
from typing import Final, final

import httpx
import trio

from ._reactor import TrioWaiter, Waiter, watch
from ._records import TLS, TLS_READ
from ._resolve import Resolver

__all__ = [
    "Connection",
    "ConnectionPool",
    "Origin",
    "Watchdog",
    "close_socket",
    "io_error",
    "open_socket",
    "open_tls",
]

_IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
_TLS_WRITE: Final = 65536
"""The most plaintext bytes encrypted at once when sending."""

Origin = tuple[str, str, int]
"""(scheme, host, port) of a connection."""


def io_error(kind: type[httpx.TransportError], exc: BaseException) -> httpx.TransportError:
    """The httpx exception for an OS, TLS or trio error: the one translation in this module."""
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError) and exc.__cause__:
        exc = exc.__cause__
    text = str(exc) or type(exc).__name__
    return kind(text)


def close_socket(sock: socket.socket) -> None:
    """Close ``sock`` at once, waking any task waiting on it (it gets ClosedResourceError)."""
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def open_socket(
    host: str, port: int, *, nodelay: bool, resolver: Resolver | None = None
) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port``, trying each address in order
    (``resolver``'s, else looked up now).

    Raises:
        OSError: name resolution failed, or no address accepted the connection.
    """
    if resolver is not None:
        infos = await resolver.resolve(host, port)
    else:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(0.0)  # non-blocking
            if nodelay and family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code in _IN_PROGRESS:
                # Through the reactor: thousands of connections that complete at once are
                # handed out a few per scheduler batch, like reads.
                waiter = watch(sock, writable=True)
                try:
                    await waiter.wait()
                finally:
                    waiter.forget()
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"{os.strerror(code)} (connecting to {address[0]}:{port})")
        except OSError as exc:
            close_socket(sock)
            last = exc
            continue
        except BaseException:
            close_socket(sock)
            raise
        return sock
    raise last if last is not None else OSError(f"no address found for {host}")


async def open_tls(
    sock: socket.socket,
    context: ssl.SSLContext,
    server_hostname: str,
    waiter: Waiter | TrioWaiter | None = None,
) -> TLS:
    """Shake hands over the connected non-blocking ``sock`` (SNI ``server_hostname``),
    waiting for its answers through ``waiter`` (the connection's: trio's own wait without).

    The host name and certificate checks are the context's (``check_hostname``,
    ``verify_mode``); the server must choose ALPN ``http/1.1`` or nothing. No timeout of
    its own: the caller's cancel scope bounds it.

    Raises:
        httpx.ConnectError: the handshake failed (certificate, protocol, connection), the
            server chose another protocol, or the connection ended.
        ValueError: ``server_hostname`` is empty or starts with a dot.
    """
    tls = TLS(context, server_hostname)
    obj = tls.obj
    outgoing = tls.outgoing
    try:
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            if outgoing.pending:
                await _send_all(sock, outgoing.read())
            if done:
                break
            if waiter is None:
                await trio.lowlevel.wait_readable(sock)
            else:
                await waiter.wait()
            try:
                tls.feed(sock.recv(TLS_READ))
            except BlockingIOError:
                continue
    except (OSError, ValueError, trio.ClosedResourceError) as exc:  # ssl.SSLError included
        raise io_error(httpx.ConnectError, exc) from exc
    chosen = obj.selected_alpn_protocol()
    if chosen not in (None, "http/1.1"):
        raise httpx.ConnectError(f"the server chose {chosen!r}: only http/1.1 is supported")
    tls.usable = True
    return tls


async def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send all of ``data`` on the non-blocking ``sock``, waiting while its buffer is full.

    Raises:
        OSError: sending failed.
    """
    with memoryview(data) as view:
        sent = 0
        while sent < len(data):
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)


@final
class Watchdog:
    """Read deadlines of raw-socket waits, enforced by one system task.

    A trio cancel scope with a deadline costs about as much as the wait and the read it
    would guard, so a waiting connection only stores its deadline; this task sleeps until
    the soonest one and wakes an expired waiter (`Connection.interrupt`: the waiter raises
    `httpx.ReadTimeout`, and its connection is closed). Started at the first deadline of a
    trio run; it ends with the run or when the transport closes.
    """

    __slots__ = ("closed", "connections", "scope", "spawned", "wake_at")

    def __init__(self, connections: set[Connection]) -> None:
        self.connections = connections
        self.wake_at = math.inf  # when the task looks next; inf: not before it is woken
        self.scope: trio.CancelScope | None = None
        self.spawned = False
        self.closed = False

    def wake(self, deadline: float) -> None:
        """Make sure the task looks again no later than ``deadline``."""
        self.wake_at = deadline
        if self.scope is not None:
            self.scope.deadline = deadline
        elif not self.spawned and not self.closed:
            self.spawned = True
            trio.lowlevel.spawn_system_task(self._run, name="FastHTTPTransport read deadlines")

    def close(self) -> None:
        self.closed = True
        if self.scope is not None:
            self.scope.cancel()

    async def _run(self) -> None:
        try:
            while not self.closed:
                now = trio.current_time()
                soonest = math.inf
                for conn in self.connections:
                    deadline = conn.deadline
                    if deadline <= now:
                        if not conn.closed:
                            conn.interrupt()
                    elif deadline < soonest:
                        soonest = deadline
                self.wake_at = soonest
                with trio.CancelScope(deadline=soonest) as self.scope:
                    await trio.sleep_forever()
                self.scope = None
        finally:
            self.scope = None
            self.spawned = False
            self.wake_at = math.inf


@final
class Connection:
    """One HTTP/1.1 connection: a non-blocking socket, maybe with TLS over it."""

    __slots__ = (
        "closed",
        "deadline",
        "eager",
        "idle_since",
        "limit",
        "origin",
        "probe",
        "responded",
        "reused",
        "sock",
        "tls",
        "waiter",
        "watchdog",
    )

    def __init__(
        self,
        origin: Origin,
        sock: socket.socket,
        tls: TLS | None,
        watchdog: Watchdog,
        waiter: Waiter | TrioWaiter | None = None,
    ) -> None:
        self.origin = origin
        self.sock = sock
        self.tls = tls
        self.watchdog = watchdog
        self.closed = False
        self.deadline = math.inf  # while waiting to read: when the wait times out
        # The caller's deadline for the exchange in progress, set by every exchange
        # (`FastHTTPTransport.exchange`): a wait that reaches it raises `trio.TooSlowError`.
        self.limit = math.inf
        self.eager = False  # the last read filled the buffer: more is likely waiting
        self.reused = False
        self.responded = False  # a byte of the current response arrived
        self.idle_since = 0.0
        self.probe: select.poll | None = None  # see `is_stale`
        # Waits to read go through the run's `Reactor` (trio's own wait without epoll), with
        # the ``waiter`` the handshake used, if it was given one (`watch`).
        self.waiter: Waiter | TrioWaiter = watch(sock) if waiter is None else waiter

    def close(self) -> None:
        """Close the socket at once (idempotent); a task waiting on it gets a ReadError.

        A healthy TLS session first sends its ``close_notify``, if the socket takes it now.
        """
        if not self.closed:
            self.closed = True
            if self.tls is not None and (alert := self.tls.close_notify()):
                try:
                    self.sock.send(alert)
                except OSError:
                    pass  # the peer is gone, or the buffer is full: closing is enough
            self.waiter.forget()
            close_socket(self.sock)

    def interrupt(self) -> None:
        """Wake a task waiting on the socket with `trio.ClosedResourceError` (the watchdog's
        way to end a wait past its deadline); the connection stays open."""
        self.waiter.interrupt()
        trio.lowlevel.notify_closing(self.sock)

    def _watched(self, timeout: float | None) -> float:
        """The deadline of a read that waits at most ``timeout`` seconds (None: no limit of
        its own) and not past the caller's `limit`, the watchdog told of it."""
        deadline = self._until(timeout)
        if deadline < self.watchdog.wake_at:
            self.watchdog.wake(deadline)
        return deadline

    def _until(self, timeout: float | None) -> float:
        """When a wait of ``timeout`` seconds (None: no limit of its own) ends: then, or at
        the caller's `limit` when that comes first."""
        if timeout is None:
            return self.limit
        return min(trio.current_time() + timeout, self.limit)

    def _expired(
        self, timeout_error: type[httpx.TimeoutException], what: str, timeout: float | None
    ) -> Exception:
        """The error of a wait that ran out: `trio.TooSlowError` when the caller's `limit`
        passed, else ``timeout_error`` (the request's own timeout)."""
        if self.limit <= trio.current_time():
            return trio.TooSlowError("the caller's deadline passed during the exchange")
        return timeout_error(what if timeout is None else f"{what} {timeout:g}s")

    def is_stale(self) -> bool:
        """Whether the idle socket is readable: the peer closed it, reset it or sent bytes."""
        if self.closed:
            return True  # (its descriptor's number may be another socket's by now)
        if self.tls is not None and self.tls.pending():
            return True  # the session ended, or bytes came after the response (an alert...)
        # A poll of the socket alone, made once per connection: a reused connection is asked
        # at every checkout, and a peeking ``recv`` raised (and built) an exception each time.
        # Any event (bytes, the peer's end, an error or a closed descriptor) makes it stale.
        probe = self.probe
        try:
            if probe is None:
                probe = self.probe = select.poll()
                probe.register(self.sock, select.POLLIN)
            return bool(probe.poll(0))
        except (OSError, ValueError):  # ValueError: the socket is closed (fd -1)
            return True

    async def recv(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the stream.

        Raises:
            httpx.ReadTimeout: nothing arrived within ``timeout`` seconds.
            httpx.ReadError: the connection failed or was closed.
        """
        if self.tls is not None:
            return await self._recv_tls(size, timeout)
        sock = self.sock
        if self.eager:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = sock.recv(size)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise io_error(httpx.ReadError, exc) from exc
            else:
                self.eager = len(data) == size
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        deadline = self._watched(timeout)
        while True:
            self.deadline = deadline
            try:
                await self.waiter.wait()
                data = sock.recv(size)
            except BlockingIOError:
                continue
            except trio.ClosedResourceError as exc:
                if not self.closed and self.deadline <= trio.current_time():
                    raise self._expired(httpx.ReadTimeout, "no data within", timeout) from None
                raise io_error(httpx.ReadError, exc) from exc
            except (OSError, ValueError) as exc:  # ValueError: the socket is closed (fd -1)
                if self.closed:
                    raise httpx.ReadError("the connection was closed") from exc
                raise io_error(httpx.ReadError, exc) from exc
            finally:
                self.deadline = math.inf
            self.eager = len(data) == size
            return data

    async def _recv_tls(self, size: int, timeout: float | None) -> bytes:
        # The plain loop, with the socket's bytes fed to the TLS object in between: records
        # already received are decrypted without touching the socket, and every whole record
        # a read completes is handed out at once (up to ``size``). The read deadline is the
        # watchdog's, as on plain sockets.
        tls = self.tls
        assert tls is not None
        checked = False  # whether this call met a cancel point already
        if tls.pending():
            await trio.lowlevel.checkpoint_if_cancelled()
            checked = True
            data = self._decrypt(tls, size)
            if data is not None:
                if tls.outgoing.pending:
                    await self._answer(tls, timeout)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        sock = self.sock
        deadline = self._watched(timeout)
        waited = False
        while True:
            self.deadline = deadline
            try:
                if not self.eager:
                    waited = True
                    await self.waiter.wait()
                elif not checked:
                    checked = True
                    await trio.lowlevel.checkpoint_if_cancelled()
                received = sock.recv(TLS_READ)
            except BlockingIOError:
                self.eager = False
                continue
            except trio.ClosedResourceError as exc:
                tls.usable = False
                if not self.closed and self.deadline <= trio.current_time():
                    raise self._expired(httpx.ReadTimeout, "no data within", timeout) from None
                raise io_error(httpx.ReadError, exc) from exc
            except (OSError, ValueError) as exc:  # ValueError: the socket is closed (fd -1)
                tls.usable = False
                if self.closed:
                    raise httpx.ReadError("the connection was closed") from exc
                raise io_error(httpx.ReadError, exc) from exc
            finally:
                self.deadline = math.inf
            self.eager = len(received) == TLS_READ
            tls.feed(received)
            data = self._decrypt(tls, size)
            if tls.outgoing.pending:
                await self._answer(tls, timeout)
            if data is not None:
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data

    async def _answer(self, tls: TLS, timeout: float | None) -> None:
        """Send what reading made the TLS object say (a key update's, a renegotiation's
        answer). A failed session's alert is dropped, as `trio.SSLStream` drops it: the
        error is raised, and the connection closed, without it.

        Raises:
            httpx.WriteTimeout, httpx.WriteError: see `send`.
        """
        data = tls.outgoing.read()
        if tls.usable:
            tls.usable = False  # as in `_send_tls`: a send cut short is no clean state
            await self._send_raw(data, timeout)
            tls.usable = True

    @staticmethod
    def _decrypt(tls: TLS, size: int) -> bytes | None:
        """`TLS.decrypt`, its errors translated.

        Raises:
            httpx.ReadError: the records are corrupt, or the peer sent an alert.
        """
        try:
            return tls.decrypt(size)
        except ssl.SSLError as exc:
            raise io_error(httpx.ReadError, exc) from exc

    async def send(self, data: bytes, timeout: float | None) -> None:
        """Send all of ``data``, waiting only while the kernel's buffer is full.

        Raises:
            httpx.WriteTimeout: the buffer stayed full for ``timeout`` seconds.
            httpx.WriteError: the connection failed or was closed.
        """
        if self.tls is not None:
            await self._send_tls(data, timeout)
        else:
            await self._send_raw(data, timeout)

    async def _send_raw(self, data: bytes, timeout: float | None) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise io_error(httpx.WriteError, exc) from exc
        if sent == len(data):
            return
        deadline = self._until(timeout)
        with memoryview(data) as view:
            while sent < len(data):
                try:
                    with trio.CancelScope(deadline=deadline) as scope:
                        await trio.lowlevel.wait_writable(sock)
                    if scope.cancelled_caught:
                        raise self._expired(httpx.WriteTimeout, "could not send within", timeout)
                    sent += sock.send(view[sent:])
                except BlockingIOError:
                    continue
                except (OSError, ValueError, trio.ClosedResourceError) as exc:
                    raise io_error(httpx.WriteError, exc) from exc

    async def _send_tls(self, data: bytes, timeout: float | None) -> None:
        # Encrypted in pieces, each sent before the next is made, so a large body is never
        # held twice. Until all is sent the session counts as broken: a send cut short
        # leaves a partial record behind, and no close_notify may follow it.
        tls = self.tls
        assert tls is not None
        if not data:
            await trio.lowlevel.checkpoint()
            return
        tls.usable = False
        with memoryview(data) as view:
            for start in range(0, len(data), _TLS_WRITE):
                piece = view[start : start + _TLS_WRITE]
                while True:
                    try:
                        records = tls.encrypt(piece)
                    except ssl.SSLWantReadError:
                        # The peer renegotiates: send what we have, take its answer, again.
                        await self._send_raw(tls.outgoing.read(), timeout)
                        await self._receive_records(timeout)
                        continue
                    except ssl.SSLError as exc:
                        raise io_error(httpx.WriteError, exc) from exc
                    break
                await self._send_raw(records, timeout)
        tls.usable = True

    async def _receive_records(self, timeout: float | None) -> None:
        """Feed the TLS object what the socket receives next (a renegotiation's answer).

        Raises:
            httpx.WriteTimeout: nothing came within ``timeout`` seconds.
            httpx.WriteError: the connection failed or ended.
        """
        assert self.tls is not None
        sock = self.sock
        while True:
            try:
                with trio.move_on_at(self._until(timeout)):
                    await trio.lowlevel.wait_readable(sock)
                    received = sock.recv(TLS_READ)
                    break
            except BlockingIOError:
                continue
            except (OSError, ValueError, trio.ClosedResourceError) as exc:
                raise io_error(httpx.WriteError, exc) from exc
            raise self._expired(httpx.WriteTimeout, "could not send within", timeout)
        if not received:
            raise httpx.WriteError("the connection ended during a renegotiation")
        self.tls.feed(received)


@final
class ConnectionPool:
    """Idle connections per origin (LIFO), the open set, admission and the counters."""

    __slots__ = (
        "admission",
        "closed",
        "connections",
        "created",
        "discarded",
        "idle",
        "idle_count",
        "in_use",
        "keepalive_expiry",
        "max_connections",
        "max_idle",
        "resent",
        "reused",
        "token",
        "watchdog",
    )

    def __init__(self, *, max_connections: int, max_idle: int, keepalive_expiry: float) -> None:
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.admission = trio.Semaphore(max_connections)
        self.idle: dict[Origin, deque[Connection]] = {}
        self.connections: set[Connection] = set()
        self.watchdog = Watchdog(self.connections)
        self.idle_count = 0
        self.in_use = 0
        self.created = 0
        self.reused = 0
        self.resent = 0
        self.discarded = 0
        self.closed = False
        self.token: trio.lowlevel.TrioToken | None = None

    async def admit(self, timeout: float | None, deadline: float = math.inf) -> None:
        """Wait for a slot, first come first served, until the caller's ``deadline`` at
        the latest.

        Raises:
            httpx.PoolTimeout: none came within ``timeout`` seconds.
            trio.TooSlowError: ``deadline`` passed first.
        """
        try:
            self.admission.acquire_nowait()
        except trio.WouldBlock:
            pass
        else:
            return
        until = math.inf if timeout is None else trio.current_time() + timeout
        with trio.move_on_at(min(until, deadline)):
            await self.admission.acquire()
            return
        if deadline <= until:
            raise trio.TooSlowError("the caller's deadline passed waiting for a connection")
        raise httpx.PoolTimeout(f"no connection available within {timeout:g}s")

    def check_out(self, origin: Origin) -> Connection | None:
        """A healthy idle connection to ``origin`` (marked in use), or None."""
        idle = self.idle.get(origin)
        if not idle:
            return None
        expired = trio.current_time() - self.keepalive_expiry
        while idle:
            conn = idle.pop()
            self.idle_count -= 1
            if conn.idle_since < expired or conn.is_stale():
                self.discard(conn)
                continue
            conn.reused = True
            self.reused += 1
            self.in_use += 1
            return conn
        return None

    def add(self, conn: Connection) -> None:
        """Count a new connection (in use), evicting an idle one if the total is at its cap."""
        if len(self.connections) >= self.max_connections:
            for idle in self.idle.values():
                if idle:
                    self.idle_count -= 1
                    self.discard(idle.popleft())
                    break
        self.connections.add(conn)
        self.created += 1
        self.in_use += 1

    def check_in(self, conn: Connection, *, reuse: bool, release: bool = True) -> None:
        """Take back a connection in use: to the pool if ``reuse``, else close it.

        ``release`` frees the request's admission slot too. Never blocks.
        """
        self.in_use -= 1
        if reuse and not conn.closed and not self.closed and self.max_idle:
            idle = self.idle.get(conn.origin)
            if idle is None:
                idle = self.idle[conn.origin] = deque()
            now = trio.current_time()
            if len(idle) >= self.max_idle:
                self.idle_count -= 1
                self.discard(idle.popleft())
            while idle and idle[0].idle_since < now - self.keepalive_expiry:
                self.idle_count -= 1
                self.discard(idle.popleft())
            conn.idle_since = now
            conn.eager = False
            idle.append(conn)
            self.idle_count += 1
        else:
            conn.close()
            self.connections.discard(conn)
        if release:
            self.admission.release()

    def abandon(self, conn: Connection) -> None:
        """Take back the connection of a body dropped unclosed; safe from ``__del__``."""
        token = self.token
        try:
            if token is None:
                raise trio.RunFinishedError
            # The garbage collector may run this anywhere, even inside trio's own code:
            # only hand the work to the run loop here.
            token.run_sync_soon(self.close_abandoned, conn)
        except trio.RunFinishedError:
            conn.closed = True
            conn.sock.close()

    def close_abandoned(self, conn: Connection) -> None:
        self.check_in(conn, reuse=False)

    def discard(self, conn: Connection) -> None:
        conn.close()
        self.connections.discard(conn)
        self.discarded += 1

    def close(self) -> None:
        self.closed = True
        self.watchdog.close()
        for idle in self.idle.values():
            idle.clear()
        self.idle_count = 0
        for conn in list(self.connections):
            conn.close()
        self.connections.clear()
