"""Unique ids for invocations, reservations, leases and ledger entries, made cheaply.

An id is 24 hex digits: 16 random ones chosen once per process (again in a forked child, and
after 2**32 ids) and an 8-digit counter. Ids never repeat within a process, and two
processes share a prefix with odds of 1 in 2**64, as two random 64-bit ids would; making one
costs no system call (`secrets.token_hex` reads the OS's random source every time).
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from typing import Final

__all__ = ["new_id"]

_WRAP: Final = 1 << 32
_lock = threading.Lock()
_prefix = secrets.token_hex(8)
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix = secrets.token_hex(8)
    _counter = itertools.count()


def new_id() -> str:
    """A new id, unique in this process and across processes (see the module)."""
    number = next(_counter)  # atomic: threads never get the same number
    prefix = _prefix
    if number >= _WRAP:
        with _lock:
            if _prefix == prefix:
                _reseed()
        return new_id()
    return f"{prefix}{number:08x}"


os.register_at_fork(after_in_child=_reseed)
