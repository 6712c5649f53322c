"""The offline demo that `make demo` runs."""

from __future__ import annotations

import io
import subprocess
import sys

from llm_invocation._demo_runtime import run_runtime_demo


def test_the_runtime_demo_shows_a_crash_a_restart_and_a_clean_shutdown() -> None:
    out = io.StringIO()
    results = run_runtime_demo(out, jobs=60)
    text = out.getvalue()
    assert results["restarts"] == 1
    assert results["ok"] + results["refused"] + results["crashed"] == 60
    assert results["refused"] <= 2  # the two negative inputs, unless in hand at the crash
    assert results["crashed"] >= 1
    assert "1 crash, 1 restart" in text
    assert "shut down cleanly" in text


def test_python_dash_m_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm_invocation", "demo", "--jobs", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "shut down cleanly" in done.stdout
    assert "Traceback" not in done.stderr
