"""The offline demo that `make demo` runs."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from llm_invocation.cli._demo import run_demo
from llm_invocation.cli._demo_runtime import run_runtime_demo


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
        [sys.executable, "-m", "llm_invocation", "demo", "--runtime", "--calls", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "shut down cleanly" in done.stdout
    assert "Traceback" not in done.stderr


async def test_the_main_demo_fans_out_offline_and_recovers_failures() -> None:
    out = io.StringIO()
    summary = await run_demo(out, calls=60, offline=True)
    assert summary.succeeded == 60
    assert summary.failed == 0
    assert summary.retries >= 3  # the scripted 429, overload and dropped connection
    assert summary.fallbacks >= 1  # the provider that stays down
    assert summary.completion_tokens > 0
    text = out.getvalue()
    assert "live [" in text
    assert "clean shutdown" in text


async def test_progress_waits_until_the_live_line_is_finished() -> None:
    """On a terminal the progress bar rewrites its line: it must not overwrite the live one."""
    out = io.StringIO()
    reports: list[tuple[int, int, str]] = []

    def progress(done: int, total: int) -> None:
        reports.append((done, total, out.getvalue()))

    summary = await run_demo(out, calls=40, offline=True, progress=progress)
    assert summary.succeeded == 40
    assert reports, "progress was never reported"
    for _, _, written in reports:
        live_line = written[written.index("live [") :]
        assert "\n" in live_line, "progress reported while the live line was open"
    assert reports[-1][:2] == (40, 40)
    assert [done for done, _, _ in reports] == sorted(done for done, _, _ in reports)


def test_make_demo_command_runs_offline_without_keys() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "llm_invocation", "demo", "--calls", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "offline" in done.stdout
    assert "30 succeeded" in done.stdout
