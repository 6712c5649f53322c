"""Shared test set-up: a wall-clock limit for every trio test, and environment switches."""

from __future__ import annotations

import functools
import inspect
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

# A trio test that runs longer than this (wall clock, so autojump_clock tests are unaffected)
# is cancelled and fails, instead of hanging the whole run. Slow tests may ask for more with
# @pytest.mark.wall_limit(seconds).
TEST_WALL_LIMIT = float(os.environ.get("LLM_TEST_WALL_LIMIT", "30"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "wall_limit(seconds): wall-clock limit of a trio test")


def _guarded(
    fn: Callable[..., Coroutine[Any, Any, None]], limit: float
) -> Callable[..., Coroutine[Any, Any, None]]:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> None:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:

            def expire() -> None:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass

            timer = threading.Timer(limit, expire)
            timer.daemon = True
            timer.start()
            try:
                await fn(*args, **kwargs)
            finally:
                timer.cancel()
        if scope.cancelled_caught:
            pytest.fail(f"test still running after {limit:g}s of wall-clock time: cancelled")

    return run


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if isinstance(item, pytest.Function):
        marker = item.get_closest_marker("wall_limit")
        limit = float(marker.args[0]) if marker else TEST_WALL_LIMIT
        hypothesis = getattr(item.obj, "hypothesis", None)
        if hypothesis is not None and inspect.iscoroutinefunction(hypothesis.inner_test):
            hypothesis.inner_test = _guarded(hypothesis.inner_test, limit)
        elif inspect.iscoroutinefunction(item.obj):
            item.obj = _guarded(item.obj, limit)
    yield


@pytest.fixture(autouse=True, scope="session")
def _process_wide_data() -> None:
    """The tokenizer and the price table load once per process, in a worker thread, on
    first use. They are loaded here, before any test: a test on trio's autojump clock that
    happened to be its process's first user would see the clock run on (to whatever timer
    comes next) while the thread loads, and which test comes first in a process depends on
    how the files are shared out between processes."""
    from llm_invocation import pricing, tokens

    tokens.get_encoding(tokens.DEFAULT_ENCODING)
    pricing._SNAPSHOT.get_blocking()  # pyright: ignore[reportPrivateUsage]


@pytest.fixture(autouse=True, scope="session")
def _user_data_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The command line keeps a usage ledger in the user's data folder: tests never use the
    real one (subprocesses inherit the variable)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("user-data")))
    yield
    patch.undo()


@pytest.fixture
def conformance_dir() -> Path:
    """The folder of recorded provider responses named by ``LLM_CONFORMANCE_DIR``.

    Tests that use it skip, saying why, when the variable is unset; they fail when it names
    a folder that does not exist (a broken CI set-up must not pass silently).
    """
    path = os.environ.get("LLM_CONFORMANCE_DIR")
    if not path:
        pytest.skip("LLM_CONFORMANCE_DIR is not set: recorded provider responses unavailable")
    folder = Path(path)
    if not folder.is_dir():
        pytest.fail(f"LLM_CONFORMANCE_DIR={path!r} is not a directory")
    return folder


def load_index(folder: Path) -> list[dict[str, Any]]:
    """The ``fixtures`` list of a conformance folder's ``index.json``."""
    data = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    fixtures: list[dict[str, Any]] = data["fixtures"]
    return fixtures


MCP_DEMO = Path(__file__).parent / "mcp_servers" / "demo_server.py"

# Serves the demo server over streamable HTTP at the SDK's default path (/mcp) on a port the
# system picks, and prints that port first.
HTTP_LAUNCHER = textwrap.dedent(
    """
    import socket, sys
    sys.path.insert(0, sys.argv[1])
    import anyio, uvicorn
    from demo_server import server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    anyio.run(uvicorn.Server(config).serve, [sock])
    """
)


@pytest.fixture(scope="module")
def mcp_http_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    launcher = tmp_path_factory.mktemp("mcp_http") / "launch.py"
    launcher.write_text(HTTP_LAUNCHER)
    command = [sys.executable, str(launcher), str(MCP_DEMO.parent)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            yield int(process.stdout.readline())
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
