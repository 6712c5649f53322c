"""`HttpResponse`: what the pool hands a provider session, whatever transport answered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final, final

import httpx
import trio

from ..errors import LLMError

if TYPE_CHECKING:
    from ._body import ResponseBody

__all__ = ["HttpResponse"]

_NO_LIMIT: Final = 1 << 62


@final
class HttpResponse:
    """A response with its body unread: status, lower-case headers and the body's pieces.

    Iterating gives the body as it arrives (content codings undone); every failure while
    reading is already a typed `LLMError` (see `llm_invocation.http.translate_http_error`).
    `receive` reads the next piece with a time limit of the caller's, and `abort` stops the
    reads from another task: the task that reads the body need not be the one that holds the
    response open.
    """

    __slots__ = ("_aborted", "_body", "_raw", "_scope", "_translate", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        translate: Callable[[Exception], LLMError],
        raw: ResponseBody | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        """Header names in lower case; a repeated header's values joined with ``", "``."""
        self._body = body
        self._translate = translate
        # Our own transport's body, when ``body`` is that body itself: its reads take a
        # time limit and can be closed from any task without a cancel scope.
        self._raw = raw
        self._scope: trio.CancelScope | None = None  # another body's read in progress
        self._aborted = False

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status}>"

    def __aiter__(self) -> HttpResponse:
        return self

    async def __anext__(self) -> bytes:
        """The next piece of the body.

        Raises:
            StopAsyncIteration: the body is done.
            LLMError: reading failed (`StreamingFailed`, `InvocationTimeout`...).
        """
        try:
            return await self._body.__anext__()
        except (StopAsyncIteration, LLMError, trio.TooSlowError):
            raise  # (TooSlowError: the caller's deadline, given to `HttpPool.stream`)
        except Exception as exc:  # httpx's, OS, TLS, zlib errors: the one boundary
            raise self._translate(exc) from exc

    async def receive(self, timeout: float) -> bytes:
        """The next piece of the body, waiting at most ``timeout`` seconds (> 0) for it.

        Raises:
            StopAsyncIteration: the body is done.
            trio.TooSlowError: nothing arrived within ``timeout``; the response is then
                unusable (its connection is closed, not reused).
            LLMError: reading failed, or the response was aborted (`StreamingFailed`).
        """
        if self._aborted:
            await trio.lowlevel.checkpoint()
            raise self._translate(httpx.ReadError("the response was closed"))
        raw = self._raw
        if raw is not None:
            try:
                return await raw.receive(timeout)
            except StopAsyncIteration:
                raise
            except trio.TooSlowError:
                self._aborted = True
                raise
            except Exception as exc:  # httpx's, OS, TLS errors: the one boundary
                raise self._translate(exc) from exc
        with trio.move_on_after(timeout) as scope:
            self._scope = scope
            try:
                return await self.__anext__()
            finally:
                self._scope = None
        if self._aborted:
            raise self._translate(httpx.ReadError("the response was closed"))
        self._aborted = True  # cut in the middle of a read: nothing more comes from it
        raise trio.TooSlowError(f"nothing arrived within {timeout:g}s")

    def abort(self) -> None:
        """Stop reading now, from any task: a `receive` in progress, and every later one,
        fails with `StreamingFailed`. The connection is closed unless the body was done."""
        if self._aborted:
            return
        self._aborted = True
        if self._raw is not None:
            self._raw.close()
        elif self._scope is not None:
            self._scope.cancel()

    async def read(self, limit: int | None = None) -> bytes:
        """The rest of the body, or its first ``limit`` bytes when it is longer.

        Raises:
            LLMError: reading failed.
        """
        raw = self._raw
        if raw is not None and not self._aborted:
            # Our transport's body that came whole with the head: no read at all.
            await trio.lowlevel.checkpoint_if_cancelled()
            whole = raw.whole_nowait()
            if whole is not None:
                return whole if limit is None else whole[:limit]
        cap = _NO_LIMIT if limit is None else limit
        pieces: list[bytes] = []
        size = 0
        async for piece in self:
            pieces.append(piece)
            size += len(piece)
            if size >= cap:
                break
        data = b"".join(pieces)
        return data if limit is None else data[:limit]
