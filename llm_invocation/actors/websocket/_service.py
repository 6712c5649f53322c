"""What the front needs from whoever runs invocations: `InvocationService`.

The front depends on this small protocol, not on the client: `llm_invocation.Client` and the
invocation layer's `Invoker` both satisfy it, and a test can pass anything that does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal, Protocol, overload

from ...config import Config
from ...types import Request, Response, Usage

__all__ = ["InvocationService", "Relayable"]


class Relayable(Protocol):
    """One invocation as the front relays it (a plain stream or a tool loop): an async
    context manager and an async iterator, with the response and usage at the end."""

    @property
    def response(self) -> Response: ...

    @property
    def usage(self) -> Usage | None: ...

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> object: ...

    def __aiter__(self) -> AsyncIterator[object]: ...


class InvocationService(Protocol):
    """Starts the invocations a front relays, and tells its configuration."""

    @property
    def config(self) -> Config:
        """The configuration: the front reads its default settings and the default model."""
        ...

    @overload
    def invoke(self, request: Request, /) -> Relayable: ...
    @overload
    def invoke(
        self, request: Request, /, *, tool_mode: Literal["auto"], max_steps: int | None = None
    ) -> Relayable: ...
