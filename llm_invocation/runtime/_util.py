"""Small helpers shared by the runtime's modules."""

from __future__ import annotations

from typing import cast

import trio

__all__ = ["members", "unwrap"]


def members(group: BaseExceptionGroup[BaseException]) -> tuple[BaseException, ...]:
    """The exceptions directly inside ``group``."""
    return cast("tuple[BaseException, ...]", group.exceptions)


def unwrap(exc: BaseException) -> BaseException:
    """Peel exception groups down to their one real exception.

    A group whose members are one exception plus cancellations (the nursery's body and
    siblings cancelled because of that exception) stands for that exception. A group with
    several real exceptions is returned as it is.
    """
    while isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        real = [m for m in members(group) if not isinstance(m, trio.Cancelled)]
        if len(real) != 1:
            return group
        exc = real[0]
    return exc
