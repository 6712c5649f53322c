"""The command line: every command, its output and its error paths."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import llm_invocation as llm
from llm_invocation.cli import main

KEY = "sk-test-CLI-SECRET-0123456789"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command line configures the package's logger; later tests expect it untouched."""
    logger = logging.getLogger("llm_invocation")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])  # setLevel (not the attribute) also clears logging's cache
    logger.propagate = saved[2]


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name.startswith("LLM_"):
            monkeypatch.delenv(name, raising=False)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_chat_one_shot_streams_the_reply_and_says_it_uses_the_mock() -> None:
    code, out, err = run("chat", "hello", "there")
    assert code == 0
    assert out.startswith("You said: hello there")
    assert "using the built-in mock provider" in err
    assert "prompt +" in err and "completion tokens" in err


def test_chat_with_an_unknown_provider_prefix_is_one_error_line_not_a_mock_answer() -> None:
    code, out, err = run("chat", "--model", "foo:bar", "hello")
    assert code == 1
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "provider 'foo'" in lines[0] and "provider_not_found" in lines[0]


def test_chat_json_prints_the_response() -> None:
    code, out, _ = run("chat", "--json", "--system", "be brief", "hi")
    assert code == 0
    response = json.loads(out)
    assert response["provider"] == "mock"
    assert response["choices"][0]["message"]["content"].startswith("You said: hi")


def test_chat_interactive_session_keeps_the_history() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm_invocation", "chat"],
        input="first\nsecond\n/exit\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line]
    assert lines[0].startswith("You said: first")
    assert lines[1].startswith("You said: second")
    assert "interactive chat" in done.stderr


def test_complete_streams_and_prints_json() -> None:
    code, out, _ = run("complete", "Once", "upon")
    assert code == 0
    assert out.startswith("You said: Once upon")
    code, out, _ = run("complete", "--json", "Once")
    assert code == 0
    assert json.loads(out)["text"].startswith("You said: Once")


def test_models_lists_the_mock_models() -> None:
    code, out, _ = run("models", "--provider", "mock")
    assert code == 0
    assert out.strip()
    code, out, _ = run("models", "--provider", "mock", "--json")
    assert all(m["provider"] == "mock" for m in json.loads(out))


def test_tokens_counts_arguments_and_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run("tokens", "--model", "gpt-4o", "hello", "world")
    assert (code, out.split()[0]) == (0, "2")
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello world"))
    code, out, _ = run("tokens")
    assert out.startswith("2 tokens (o200k_base")


def test_usage_reports_from_a_ledger_file(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.sqlite3"

    async def fill() -> None:
        config = llm.Config(provider="mock", model="mock", ledger_path=str(ledger))
        async with llm.open_client(config) as client:
            for team in ("a", "b", "b"):
                await client.invoke_sync(messages=[llm.user("hi")], metadata={"team": team})

    trio.run(fill)
    code, out, _ = run("usage", "--ledger", str(ledger), "--group-by", "tag:team")
    assert code == 0
    assert "TOTAL" in out
    code, out, _ = run("usage", "--ledger", str(ledger), "--json")
    assert json.loads(out)["total"]["calls"] == 3


def test_usage_without_a_ledger_is_a_one_line_error() -> None:
    code, out, err = run("usage")
    assert code == 1
    assert out == ""
    assert err.startswith("error: ") and "ledger" in err
    assert "Traceback" not in err


def test_usage_of_a_missing_ledger_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqlite3"
    code, out, err = run("usage", "--ledger", str(missing))
    assert code == 1
    assert out == ""
    assert err.startswith("error: no ledger at ") and "typo.sqlite3" in err
    assert not missing.exists()


def test_usage_of_a_file_that_is_not_a_ledger_is_a_one_line_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("these are not the rows you are looking for\n" * 100)
    code, out, err = run("usage", "--ledger", str(notes))
    assert code == 1
    assert out == ""
    assert err.startswith("error: could not open the usage ledger") and "not a database" in err
    assert len(err.splitlines()) == 1
    assert notes.read_text().startswith("these are not")  # left as it was


def test_config_check_prints_the_effective_config_with_keys_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    code, out, _ = run("config", "check")
    assert code == 0
    effective = json.loads(out)
    assert effective["provider"] == "openai"  # a key makes its provider the default
    assert KEY not in out
    assert "openai" in effective["providers"]


def test_config_check_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text("provider: mock\nmodel: mock\nrate_limits: {requests_per_minute: 60}\n")
    code, out, _ = run("--config", str(path), "config", "check")
    assert code == 0
    assert json.loads(out)["rate_limits"]["requests_per_minute"] == 60


def test_a_bad_configuration_is_reported_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_TIMEOUT", "soon")
    code, _, err = run("chat", "hi")
    assert code == 1
    assert err.startswith("error: 1 configuration problem")
    assert "LLM_TIMEOUT" in err
    assert "Traceback" not in err


def test_an_unknown_provider_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run("chat", "--model", "nowhere:x", "--provider", "nowhere", "hi")
    assert code == 1
    assert "error:" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_a_provider_error_exits_non_zero_with_its_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    monkeypatch.setenv("LLM_MAX_RETRIES", "0")
    code, _, err = run("chat", "--model", "openai:gpt-4o-mini", "hi")
    assert code == 1
    assert err.startswith("error: [openai]")
    assert "(provider_error)" in err
    assert KEY not in err


def test_demo_runs_with_a_progress_report() -> None:
    code, out, err = run("demo", "--calls", "20")
    assert code == 0
    assert "20 succeeded" in out
    assert "progress: 20/20" in err


def test_unknown_commands_exit_with_usage_status() -> None:
    with pytest.raises(SystemExit) as info:
        run("fly")
    assert info.value.code == 2


def test_serve_on_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run("serve", "--port", str(port))
    assert code == 1
    assert out == ""
    assert f"error: [Errno {errno.EADDRINUSE}] cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err and err.count("error:") == 1


def test_serve_runs_the_front_and_shuts_down_cleanly_on_sigterm() -> None:
    import signal

    import httpx

    with subprocess.Popen(
        [sys.executable, "-m", "llm_invocation", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("chat page: http://127.0.0.1:"), line
            page = httpx.get(line.split()[-1], timeout=10)
            assert page.status_code == 200
            assert "<html" in page.text.lower()
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
            assert process.returncode == 0
            assert "using the built-in mock provider" in err
            assert "SIGTERM: shutting down" in err
            assert "Traceback" not in err
        finally:
            if process.poll() is None:
                process.kill()


# -- the note about the mock tells the truth ------------------------------------------------------


async def test_chat_with_llm_api_key_talks_to_openai_and_makes_no_note_about_the_mock() -> None:
    from llm_invocation.testing import Scenario, Scenarios, open_fake_server

    async with open_fake_server(Scenarios(Scenario(text="from the server"))) as server:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env = {k: v for k, v in env.items() if not k.startswith("LLM_")}
        env |= {"LLM_API_KEY": KEY, "LLM_BASE_URL": server.base_url("openai")}
        done = await trio.run_process(
            [sys.executable, "-m", "llm_invocation", "chat", "hello"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        seen = server.requests
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert out.startswith("from the server")
    assert "mock" not in err
    assert [(r.path, r.model, r.headers["authorization"]) for r in seen] == [
        ("/openai/v1/chat/completions", "gpt-4", "present")
    ]
    assert KEY not in out + err


def test_a_model_whose_provider_has_no_key_is_one_error_line_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_MODEL", "gpt-4")
    code, out, err = run("chat", "hi")
    assert (code, out) == (1, "")
    assert err.startswith("error: [openai] provider 'openai' needs an API key")
    assert "LLM_API_KEY" in err and "OPENAI_API_KEY" in err
    assert err.endswith("(missing_api_key)\n")
    assert "mock" not in err


def test_the_mock_asked_for_answers_without_the_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDER", "mock")
    code, out, err = run("chat", "hello")
    assert code == 0
    assert out.startswith("You said: hello")
    assert "note:" not in err


@pytest.mark.parametrize(
    ("env", "provider", "model"),
    [({}, "mock", None), ({"LLM_API_KEY": KEY}, "openai", "gpt-4")],
)
def test_config_check_prints_the_provider_and_model_that_answer(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], provider: str, model: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, _ = run("config", "check")
    assert code == 0
    effective = json.loads(out)
    assert (effective["provider"], effective["model"]) == (provider, model)
    assert KEY not in out


def test_the_note_is_said_once_not_again_by_the_clients_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run("chat", "hello")
    assert code == 0
    assert err.count("built-in mock") == 1
    assert "built-in mock" not in capsys.readouterr().err
