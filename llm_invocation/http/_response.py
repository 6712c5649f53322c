"""`HttpResponse`: what the pool hands a provider session, whatever transport answered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final, final

from ..errors import LLMError

__all__ = ["HttpResponse"]

_NO_LIMIT: Final = 1 << 62


@final
class HttpResponse:
    """A response with its body unread: status, lower-case headers and the body's pieces.

    Iterating gives the body as it arrives (content codings undone); every failure while
    reading is already a typed `LLMError` (see `llm_invocation.http.translate_http_error`).
    """

    __slots__ = ("_body", "_translate", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        translate: Callable[[Exception], LLMError],
    ) -> None:
        self.status = status
        self.headers = headers
        """Header names in lower case; a repeated header's values joined with ``", "``."""
        self._body = body
        self._translate = translate

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
        except (StopAsyncIteration, LLMError):
            raise
        except Exception as exc:  # httpx's, OS, TLS, zlib errors: the one boundary
            raise self._translate(exc) from exc

    async def read(self, limit: int | None = None) -> bytes:
        """The rest of the body, or its first ``limit`` bytes when it is longer.

        Raises:
            LLMError: reading failed.
        """
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
