"""The command line's inputs: prompts, terminal lines, the --config value and the ledger's place."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from llm_invocation.cli._input import LineReader, piped_text, prompt_text
from llm_invocation.cli._paths import config_source, default_ledger_path, ledger_wanted
from llm_invocation.errors import ConfigurationError, InvalidRequest


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass


# -- prompts --------------------------------------------------------------------------------------


def test_a_prompt_is_the_piped_text_a_blank_line_and_the_words() -> None:
    assert prompt_text("notes\n", ["sum", "up"]) == "notes\n\nsum up"


def test_a_prompt_without_words_is_the_piped_text_without_its_trailing_whitespace() -> None:
    assert prompt_text("  code\n\n", []) == "  code"


def test_an_empty_piped_text_leaves_the_words_alone() -> None:
    assert prompt_text("\n", ["hello"]) == "hello"


@pytest.mark.parametrize(("piped", "words"), [(None, [""]), ("  \n", [" "]), ("", [])])
def test_an_empty_prompt_is_refused(piped: str | None, words: list[str]) -> None:
    with pytest.raises(InvalidRequest, match="the prompt is empty"):
        prompt_text(piped, words)


def test_piped_input_that_is_not_text_is_an_invalid_request() -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\xfa"), encoding="utf-8")
    with pytest.raises(InvalidRequest, match="standard input is not valid utf-8 text"):
        piped_text(stream)


def test_a_closed_standard_input_is_not_read() -> None:
    closed = io.StringIO("never")
    closed.close()
    assert piped_text(closed) is None


# -- terminal lines -------------------------------------------------------------------------------


async def test_lines_are_read_one_at_a_time_without_their_endings(pipe: tuple[int, int]) -> None:
    read, write = pipe
    os.write(write, b"first\r\nsecond\nthi")
    os.write(write, b"rd")
    os.close(write)
    reader = LineReader(read)
    assert [await reader.readline() for _ in range(4)] == ["first", "second", "third", None]


async def test_a_line_that_is_not_text_is_refused_and_the_next_is_read(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    reader = LineReader(read)
    os.write(write, b"\xff\xfe\n")
    with pytest.raises(InvalidRequest, match="not valid utf-8"):
        await reader.readline()
    os.write(write, b"fine\n")
    assert await reader.readline() == "fine"


async def test_a_reader_whose_read_was_cancelled_refuses_to_read_again(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    reader = LineReader(read)
    with trio.CancelScope() as scope:
        scope.cancel()
        await reader.readline()
    assert scope.cancelled_caught
    with pytest.raises(trio.ClosedResourceError):
        await reader.readline()
    os.write(write, b"\n")  # lets a worker thread, if one started, finish


# -- --config -------------------------------------------------------------------------------------


def test_config_naming_a_file_is_that_file(tmp_path: Path) -> None:
    path = tmp_path / "settings"
    path.write_text("provider: mock\n")
    assert config_source(str(path)) == path


@pytest.mark.parametrize(
    "text", ["provider: mock", "{provider: mock}", "provider: mock\nmodel: mock", "provider:"]
)
def test_config_that_clearly_is_yaml_is_yaml_text(text: str) -> None:
    assert config_source(text) == text.encode()


@pytest.mark.parametrize("name", ["myconf", "conf/llm.yaml", "./missing.json", "a:b.yaml"])
def test_config_naming_no_file_is_a_missing_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=f"config file not found: {name}$"):
        config_source(name)


# -- the default ledger ---------------------------------------------------------------------------


def test_the_default_ledger_is_in_xdg_data_home(tmp_path: Path) -> None:
    path = default_ledger_path({"XDG_DATA_HOME": str(tmp_path)})
    assert path == tmp_path / "llm-invocation" / "ledger.sqlite3"


@pytest.mark.parametrize("value", ["", "relative/data"])
def test_the_default_ledger_falls_back_to_local_share_for_an_unusable_xdg_data_home(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = default_ledger_path({"XDG_DATA_HOME": value})
    assert path == tmp_path / ".local" / "share" / "llm-invocation" / "ledger.sqlite3"


@pytest.mark.parametrize(
    ("value", "wanted"), [("", True), ("on", True), ("OFF", False), ("0", False)]
)
def test_llm_ledger_turns_the_default_ledger_on_or_off(value: str, wanted: bool) -> None:
    assert ledger_wanted({"LLM_LEDGER": value}, no_log=False) is wanted


def test_no_log_turns_the_default_ledger_off_whatever_llm_ledger_says() -> None:
    assert ledger_wanted({"LLM_LEDGER": "on"}, no_log=True) is False


def test_an_llm_ledger_that_is_neither_on_nor_off_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="LLM_LEDGER must be 'on' or 'off'"):
        ledger_wanted({"LLM_LEDGER": "sometimes"}, no_log=False)
