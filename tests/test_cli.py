"""The command line: every command, its output and its error paths."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

import llm_invocation as llm
from llm_invocation._version import __version__ as llm_version
from llm_invocation.cli import main
from llm_invocation.testing import FakeServer, Scenario, Scenarios, open_fake_server

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


@pytest.fixture(autouse=True)
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's data folder, where the command line keeps its default ledger: a temporary
    one (subprocesses inherit it)."""
    data = tmp_path / "user-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return data


def no_stdin() -> io.StringIO:
    """A standard input that is closed: neither a terminal nor piped."""
    closed = io.StringIO()
    closed.close()
    return closed


def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run the command line in process; ``stdin``: text piped to it (default: none)."""
    out, err = io.StringIO(), io.StringIO()
    piped = io.StringIO(stdin) if stdin is not None else no_stdin()
    code = main(list(argv), out=out, err=err, stdin=piped)
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


def test_tokens_counts_its_arguments() -> None:
    code, out, _ = run("tokens", "--model", "gpt-4o", "hello", "world")
    assert (code, out) == (0, "2 tokens (o200k_base, 11 characters)\n")


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


def test_usage_before_anything_was_recorded_is_a_one_line_error() -> None:
    code, out, err = run("usage")
    assert code == 1
    assert out == ""
    assert err.startswith("error: no ledger at ") and "nothing recorded yet" in err
    assert len(err.splitlines()) == 1


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


def test_a_bad_configuration_is_reported_on_one_line_naming_every_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_TIMEOUT", "soon")
    monkeypatch.setenv("LLM_MAX_RETRIES", "many")
    code, _, err = run("chat", "hi")
    assert code == 1
    assert err.startswith("error: 2 configuration problems: ")
    assert "LLM_TIMEOUT" in err and "LLM_MAX_RETRIES" in err
    assert len(err.splitlines()) == 1


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
    code, out, err = run("fly")
    assert (code, out) == (2, "")
    assert err.startswith("error: argument COMMAND: invalid choice: 'fly'")


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
            stdin=b"",
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


# -- the habits users bring: -m, -s, piped input, --version ---------------------------------------


class FakeTerminal(io.StringIO):
    """A terminal as standard input: reading it for a prompt is a defect."""

    def isatty(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        raise AssertionError("a terminal was read for a prompt")


async def run_beside(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """`run` from a trio test: the command line runs its own trio in a worker thread."""
    return await trio.to_thread.run_sync(functools.partial(run, *argv, stdin=stdin))


@contextlib.asynccontextmanager
async def fake_openai(
    monkeypatch: pytest.MonkeyPatch, scenarios: Scenarios | None = None
) -> AsyncIterator[FakeServer]:
    """A fake OpenAI server on 127.0.0.1, configured as the provider through the environment."""
    async with open_fake_server(scenarios or Scenarios(Scenario(text="from the server"))) as server:
        monkeypatch.setenv("LLM_API_KEY", KEY)
        monkeypatch.setenv("LLM_BASE_URL", server.base_url("openai"))
        yield server


def test_version_prints_the_package_version() -> None:
    code, out, err = run("--version")
    assert (code, out, err) == (0, f"llm-invocation {llm_version}\n", "")


def test_model_has_the_short_option_m() -> None:
    code, out, _ = run("chat", "-m", "mock:mock-large", "--json", "hi")
    assert code == 0
    assert json.loads(out)["model"] == "mock-large"


async def test_system_has_the_short_option_s(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fake_openai(monkeypatch) as server:
        code, _, err = await run_beside("chat", "-s", "be brief", "hi")
        seen = server.requests
    assert code == 0, err
    assert seen[0].json["messages"][0] == {"role": "system", "content": "be brief"}


async def test_complete_with_a_system_prompt_asks_the_chat_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with fake_openai(monkeypatch) as server:
        code, out, err = await run_beside("complete", "-s", "be brief", "Once")
        seen = server.requests
    assert (code, out) == (0, "from the server\n"), err
    assert seen[0].path == "/openai/v1/chat/completions"
    assert [m["role"] for m in seen[0].json["messages"]] == ["system", "user"]


async def test_piped_input_comes_first_then_a_blank_line_then_the_prompt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with fake_openai(monkeypatch) as server:
        code, _, err = await run_beside("chat", "summarize", stdin="line one\nline two\n")
        seen = server.requests
    assert code == 0, err
    assert seen[0].json["messages"][-1]["content"] == "line one\nline two\n\nsummarize"


async def test_piped_input_alone_is_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fake_openai(monkeypatch) as server:
        code, _, err = await run_beside("chat", stdin="  indented\nsecond\n\n")
        seen = server.requests
    assert code == 0, err
    assert seen[0].json["messages"][-1]["content"] == "  indented\nsecond"


def test_a_terminal_is_never_read_for_a_prompt() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["chat", "hello"], out=out, err=err, stdin=FakeTerminal())
    assert code == 0, err.getvalue()
    assert out.getvalue().startswith("You said: hello")


def test_tokens_count_piped_input() -> None:
    code, out, _ = run("tokens", "-m", "gpt-4o", stdin="hello world")
    assert (code, out.split()[0]) == (0, "2")


# -- --config -------------------------------------------------------------------------------------


def test_config_may_come_after_the_command(tmp_path: Path) -> None:
    path = tmp_path / "llm.conf"  # no YAML extension: a path all the same
    path.write_text("rate_limits: {requests_per_minute: 7}\n")
    code, out, err = run("config", "check", "--config", str(path))
    assert code == 0, err
    assert json.loads(out)["rate_limits"]["requests_per_minute"] == 7


def test_config_after_the_command_wins_over_one_before(tmp_path: Path) -> None:
    before, after = tmp_path / "before.yaml", tmp_path / "after.yaml"
    before.write_text("rate_limits: {requests_per_minute: 1}\n")
    after.write_text("rate_limits: {requests_per_minute: 2}\n")
    code, out, _ = run("--config", str(before), "config", "check", "--config", str(after))
    assert code == 0
    assert json.loads(out)["rate_limits"]["requests_per_minute"] == 2


def test_config_that_names_no_file_is_reported_as_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("--config", "myconf", "chat", "hi")
    assert (code, out) == (1, "")
    assert err == "error: config file not found: myconf (configuration)\n"


@pytest.mark.parametrize(
    "text", ["rate_limits: {requests_per_minute: 9}", '{"rate_limits": {"requests_per_minute": 9}}']
)
def test_config_may_be_inline_yaml_or_json(text: str) -> None:
    code, out, err = run("--config", text, "config", "check")
    assert code == 0, err
    assert json.loads(out)["rate_limits"]["requests_per_minute"] == 9


# -- models: the names -m takes -------------------------------------------------------------------


def test_models_of_the_mock_are_the_names_it_answers_to() -> None:
    code, out, _ = run("models")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["mock:mock", "mock:mock-large", "mock:mock-small"]
    for name in names:
        code, _, err = run("chat", "-m", name, "hi")
        assert code == 0, err
        assert f"[{name}]" in err


async def test_models_of_a_provider_are_named_as_m_takes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with fake_openai(monkeypatch) as server:
        code, out, err = await run_beside("models")
        assert code == 0, err
        names = [line.split()[0] for line in out.splitlines()]
        assert names == ["openai:gpt-4o-mini"]
        code, reply, err = await run_beside("chat", "-m", names[0], "hi")
        seen = server.requests
    assert code == 0, err
    assert reply.startswith("from the server")
    assert seen[-1].model == "gpt-4o-mini"


async def test_models_leaves_out_those_that_cannot_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    scenarios = Scenarios(Scenario(text="from the server"))
    scenarios.add("text-embedding-3-small", Scenario(text="not a chat model"))
    async with fake_openai(monkeypatch, scenarios):
        code, out, err = await run_beside("models", "--json")
    assert code == 0, err
    assert [m["name"] for m in json.loads(out)] == ["openai:gpt-4o-mini"]


# -- the default ledger ---------------------------------------------------------------------------


def test_usage_reports_a_chat_from_the_default_ledger(user_data: Path) -> None:
    assert run("chat", "-m", "mock:mock-small", "hi")[0] == 0
    code, out, err = run("usage", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["total"]["calls"] == 1
    assert (user_data / "llm-invocation" / "ledger.sqlite3").is_file()


def test_complete_is_recorded_in_the_default_ledger_too() -> None:
    assert run("complete", "Once")[0] == 0
    code, out, _ = run("usage", "--json")
    assert (code, json.loads(out)["total"]["calls"]) == (0, 1)


def test_no_log_records_nothing(user_data: Path) -> None:
    assert run("chat", "--no-log", "hi")[0] == 0
    assert not (user_data / "llm-invocation").exists()


def test_llm_ledger_off_records_nothing(user_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_LEDGER", "off")
    assert run("chat", "hi")[0] == 0
    assert not (user_data / "llm-invocation").exists()


def test_a_configured_ledger_path_is_used_instead_of_the_default(
    user_data: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "team.sqlite3"
    assert run("--config", f"ledger_path: {ledger}", "chat", "hi")[0] == 0
    code, out, _ = run("usage", "--ledger", str(ledger), "--json")
    assert (code, json.loads(out)["total"]["calls"]) == (0, 1)
    assert not (user_data / "llm-invocation").exists()


# -- every error is one line ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bad:
    """A command line that must fail: its arguments, environment, piped input, and a piece of
    the one error line that says why (so it cannot fail for another reason)."""

    argv: tuple[str, ...]
    says: str
    env: tuple[tuple[str, str], ...] = ()
    stdin: str | None = None
    recorded_first: bool = False


BAD = [
    Bad(("chat", ""), "the prompt is empty"),
    Bad(("chat", " \n\t "), "the prompt is empty"),
    Bad(("chat",), "no prompt"),
    Bad(("chat",), "the prompt is empty", stdin="\n  \n"),
    Bad(("chat", "--max-tokens", "0", "hi"), "--max-tokens: must be at least 1"),
    Bad(("chat", "--max-tokens", "-5", "hi"), "--max-tokens: must be at least 1"),
    Bad(("chat", "--max-tokens", "lots", "hi"), "expected a whole number"),
    Bad(("chat", "--temperature", "nan", "hi"), "--temperature: must be a finite number"),
    Bad(("chat", "--temperature", "-1", "hi"), "--temperature: must be a finite number"),
    Bad(("chat", "-m", "nowhere:x", "hi"), "provider_not_found"),
    Bad(("chat", "--config", "myconf", "hi"), "config file not found: myconf"),
    Bad(("--config", "myconf", "chat", "hi"), "config file not found: myconf"),
    Bad(("chat", "--config", "provider: [", "hi"), "configuration problem"),
    Bad(("chat", "--bogus", "hi"), "unrecognized arguments: --bogus"),
    Bad(("chat", "hi"), "LLM_LEDGER must be 'on' or 'off'", env=(("LLM_LEDGER", "maybe"),)),
    Bad(("chat", "hi"), "LLM_TIMEOUT", env=(("LLM_TIMEOUT", "soon"),)),
    Bad(("complete", ""), "the prompt is empty"),
    Bad(("complete",), "no prompt"),
    Bad(("complete", "--max-tokens", "0", "x"), "--max-tokens: must be at least 1"),
    Bad(("models", "--provider", "nowhere"), "provider_not_found"),
    Bad(("models", "--config", "missing.yaml"), "config file not found: missing.yaml"),
    Bad(("tokens",), "no text to count"),
    Bad(("usage", "--group-by", "color"), "cannot group a report by 'color'", recorded_first=True),
    Bad(("usage", "--ledger", "missing.sqlite3"), "no ledger at"),
    Bad(("serve", "--port", "-1"), "--port: must be between 0 and 65535"),
    Bad(("serve", "--port", "65536"), "--port: must be between 0 and 65535"),
    Bad(("demo", "--calls", "0"), "--calls: must be at least 1"),
    Bad(("demo", "--calls", "-3"), "--calls: must be at least 1"),
    Bad(("config",), "the following arguments are required"),
    Bad(("config", "check", "--config", "missing.yaml"), "config file not found: missing.yaml"),
    Bad((), "the following arguments are required: COMMAND"),
    Bad(("fly",), "invalid choice: 'fly'"),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda bad: " ".join(bad.argv) or "(nothing)")
def test_every_error_is_one_line_without_a_traceback(
    bad: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if bad.recorded_first:
        assert run("chat", "hi")[0] == 0
    for name, value in bad.env:
        monkeypatch.setenv(name, value)
    code, out, err = run(*bad.argv, stdin=bad.stdin)
    said = [line for line in err.splitlines() if not line.startswith("note:")]
    assert code != 0
    assert out == ""
    assert len(said) == 1, err
    assert said[0].startswith("error: ")
    assert bad.says in said[0]
    assert "Traceback" not in err
