"""Ids for invocations, reservations, leases and ledger entries: unique, cheap, fork-safe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from llm_invocation import _ids
from llm_invocation._ids import new_id


def test_ids_are_24_hex_digits_and_never_repeat_across_threads() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [one for into in made for one in into]
    assert len(set(every)) == len(every) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{24}", one) for one in every)


def test_a_wrapped_counter_takes_a_new_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    first = new_id()
    monkeypatch.setattr(_ids, "_counter", iter([_ids._WRAP]))  # pyright: ignore[reportPrivateUsage]
    after = new_id()
    assert after[:16] != first[:16]
    assert after.endswith("00000000")


_FORK = """
import os
from llm_invocation._ids import new_id

parent = new_id()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, new_id().encode())
    os._exit(0)
os.close(write)
child = os.read(read, 64).decode()
os.waitpid(pid, 0)
print(parent, child)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_makes_ids_of_its_own() -> None:
    # In a fresh single-threaded interpreter: forking this test process (with its threads)
    # is what the reseed protects against, not what the test should do.
    done = subprocess.run(
        [sys.executable, "-c", _FORK], capture_output=True, text=True, check=True, timeout=60
    )
    parent, child = done.stdout.split()
    assert re.fullmatch(r"[0-9a-f]{24}", child)
    assert child[:16] != parent[:16]
