"""Private: Ctrl-C, received as a signal and turned into a cancellation where it does no harm.

trio would raise `KeyboardInterrupt` wherever the program happens to be, an actor of the
client's tree included. The command line receives SIGINT instead (`interruptible`) and
cancels the command's work: inside the client (`Interrupt.scope`) for the commands that open
one, so the client still closes normally and records what it did; the whole command for the
others, or at a second Ctrl-C. Once the command has ended, `KeyboardInterrupt` is raised for
the caller to turn into exit status 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable
from typing import final

import trio

__all__ = ["Interrupt", "interruptible"]


@final
class Interrupt:
    """Where Ctrl-C cancels a command's work: the `scope` it runs it in."""

    def __init__(self) -> None:
        self.requested = False
        self._scope: trio.CancelScope | None = None

    def scope(self) -> trio.CancelScope:
        """A cancel scope for the work that Ctrl-C cancels (cancelled already if it came)."""
        self._scope = trio.CancelScope()
        if self.requested:
            self._scope.cancel()
        return self._scope

    def request(self) -> None:
        """Cancel the scope now, or as soon as it is entered."""
        self.requested = True
        if self._scope is not None:
            self._scope.cancel()


async def interruptible(
    command: Callable[[Interrupt], Awaitable[int]], *, graceful: bool = False
) -> int:
    """Run ``command``; on Ctrl-C cancel it and raise `KeyboardInterrupt` once it has ended.

    Args:
        command: the command; it is given the `Interrupt` whose scope Ctrl-C cancels.
        graceful: the command runs its work in `Interrupt.scope`; the first Ctrl-C cancels
            that scope only, a second one the whole command. Otherwise the first Ctrl-C
            cancels the whole command.

    Raises:
        KeyboardInterrupt: after Ctrl-C, whatever the command raised while it ended.
    """
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        return await command(interrupt)  # no signal reaches another thread
    interrupted = False
    try:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        if graceful and not interrupted:
                            interrupt.request()
                        else:
                            nursery.cancel_scope.cancel()
                        interrupted = True

                nursery.start_soon(watch)
                code = await command(interrupt)
                nursery.cancel_scope.cancel()
    except BaseException:
        if interrupted:  # whatever the cancellation made of it, Ctrl-C is what happened
            raise KeyboardInterrupt from None
        raise
    if interrupted:
        raise KeyboardInterrupt
    return code
