"""Four processes share one Redis concurrency limit through the real governor: the limit is
kept busy and shared fairly.

The measurement is ``benchmarks/_fairness.py`` (the same one `governance_bench` reports):
four processes of four tasks each, every task holding a slot of a shared limit of four for
200 ms, again and again for 3 s. Release notices wake the waiter next in line in whichever
process it is, and the line is one for all processes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from .store_worker import redis_url_or_skip

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CONCURRENCY = 4


def fairness_module() -> ModuleType:
    """``benchmarks/_fairness.py`` (the benchmarks are scripts, not a package)."""
    name = "benchmarks_fairness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "_fairness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured() -> Any:
    url = redis_url_or_skip()
    fairness = fairness_module()
    result = trio.run(
        lambda: fairness.measure(
            url,
            processes=4,
            tasks=4,
            concurrency=CONCURRENCY,
            hold=0.2,
            duration=3.0,
            max_wait=10.0,
        )
    )
    print("\n".join(fairness.report(result)))
    return result


def test_the_shared_concurrency_is_in_use_at_least_90_percent_of_the_time(measured: Any) -> None:
    assert measured.utilisation >= 0.90, measured


def test_the_shared_concurrency_is_never_exceeded(measured: Any) -> None:
    assert measured.peak == CONCURRENCY, measured


def test_no_waiter_is_refused_while_capacity_is_free(measured: Any) -> None:
    assert sum(measured.refused) == 0, measured


def test_each_process_gets_a_fair_share(measured: Any) -> None:
    mean = sum(measured.calls) / len(measured.calls)
    assert len(measured.calls) == 4
    assert all(0.75 * mean <= calls <= 1.25 * mean for calls in measured.calls), measured
