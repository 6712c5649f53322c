"""Each benchmark runs to its report at a small size.

The numbers are not checked here (timing assertions do not belong in tests); what is checked
is that every benchmark still runs against the current code and prints its comparisons.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# name -> (arguments for a small run, lines the report must contain)
RUNS: dict[str, tuple[list[str], list[str]]] = {
    "runtime_bench": (
        ["--n", "2000", "--rounds", "1"],
        ["bare channel request/reply", "actor call", "call / bare pair:"],
    ),
    "governance_bench": (
        ["--n", "200", "--calls", "300", "--fairness", "1"],
        [
            "store acquire+settle, 50 task(s)",
            "governor Acquire+Release",
            "budget reserve+settle",
            "settlement",
            "shared concurrency in use",
        ],
    ),
    "stream_bench": (
        ["--quick"],
        [
            "per streamed chunk",
            "ours / bare httpx, per chunk:",
            "ours / bare httpx, per request:",
            "ours / openai-python",
            "over TLS",
            "ours / bare httpx over TLS, per chunk:",
            "ours / aiohttp over TLS, per chunk:",  # a ratio, or why it was skipped
            "through a local proxy",
            "ours via proxy / ours direct:",
            "bare via proxy / bare direct:",
            "tracing on / off, per chunk:",  # a ratio, or why it was skipped
        ],
    ),
    "scale_bench": (
        ["--quick"],
        [
            "streams, CPU per chunk, ours / aiohttp:",  # a ratio, or why it was skipped
            "streams, wall, ours / aiohttp:",
            "non-streamed request CPU, ours / aiohttp:",
            "TLS CPU per chunk, ours / aiohttp:",
            "open_client time:",
            "open_client RSS:",
            "ours, memory per stream:",
            "ours, event-loop lag p99:",
            "ours, garbage collector:",
            "at 1 chunk a second",
        ],
    ),
    "request_bench": (
        ["--quick"],
        [
            "per non-streamed request",
            "ours / bare httpx:",
            "governed / ours:",
            "ours / aiohttp:",  # a ratio, or why it was skipped
        ],
    ),
    "front_bench": (
        ["--quick", "--clients", "10"],
        [
            "CPU per chunk",
            "front / direct:",
            "gateway / direct:",
            "ratios at 10 clients",
            "added relay latency p50",
        ],
    ),
}


def test_every_benchmark_is_run() -> None:
    present = {path.stem for path in BENCHMARKS.glob("*_bench.py")}
    assert present == set(RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_benchmark_runs_to_its_report(name: str) -> None:
    arguments, expected = RUNS[name]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    missing = [line for line in expected if line not in done.stdout]
    assert not missing, f"{missing} not in:\n{done.stdout}"
    if name == "governance_bench":  # every row measured something (none divided to zero work)
        rows = [line for line in done.stdout.splitlines() if "task(s)" in line]
        assert rows and all(" 0 " not in f" {line} " for line in rows), done.stdout
