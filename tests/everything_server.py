"""The MCP reference server, ``server-everything`` (on node), for the tests that run it.

It is installed by ``tests/mcp_servers/install_everything.sh`` into
``$LLM_MCP_EVERYTHING_DIR`` (by default ``~/.cache/llm-invocation/server-everything``).
Without node or without the server, `find_node` skips the test, saying so; with
``LLM_REQUIRE_NODE=1`` (as in CI) it fails it instead.

`serving` runs the server over HTTP (``streamableHttp`` or ``sse``) for the time of a
``with``; `stdio` and `http` are the client's configurations for it; `connected` opens a
mock client with the server registered as ``every``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncGenerator, Generator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

import llm_invocation as llm

__all__ = [
    "INSTALL",
    "PACKAGE",
    "NodeServer",
    "connected",
    "entry_point",
    "find_node",
    "free_port",
    "http",
    "serving",
    "stdio",
]

PACKAGE = "@modelcontextprotocol/server-everything"
INSTALL = "tests/mcp_servers/install_everything.sh"


def install_dir() -> Path:
    configured = os.environ.get("LLM_MCP_EVERYTHING_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "llm-invocation" / "server-everything"


def package_dir() -> Path:
    return install_dir() / "node_modules" / PACKAGE


def entry_point() -> Path:
    return package_dir() / "dist" / "index.js"


def pinned_version() -> str:
    """The version the install script pins (its ``VERSION=`` line)."""
    script = (Path(__file__).parent.parent / INSTALL).read_text()
    found = re.search(r'^VERSION="([^"]+)"$', script, re.MULTILINE)
    assert found is not None, f"no VERSION= line in {INSTALL}"
    return found.group(1)


def installed_version() -> str | None:
    try:
        manifest: Any = json.loads((package_dir() / "package.json").read_text())
        version: Any = manifest["version"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return version if isinstance(version, str) else None


def find_node() -> str:
    """node's path; skips (or fails under LLM_REQUIRE_NODE=1) without node or the server."""
    found = shutil.which("node")
    if found is None:
        reason = f"node is not installed: the {PACKAGE} tests need it"
    elif installed_version() != pinned_version() or not entry_point().is_file():
        reason = (
            f"{PACKAGE} {pinned_version()} is not installed (run {INSTALL}; it installs "
            "into $LLM_MCP_EVERYTHING_DIR, by default ~/.cache/llm-invocation/server-everything)"
        )
    else:
        return found
    if os.environ.get("LLM_REQUIRE_NODE") == "1":
        pytest.fail(reason + " (LLM_REQUIRE_NODE=1)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeServer:
    """The reference server over HTTP (``streamableHttp`` or ``sse``) on ``port``.

    Started when made, and ready then: it says on stderr that it listens. Its stdout (a
    line per request) is discarded; the rest of its stderr is read and dropped by a thread,
    so a chatty server never blocks on a full pipe.
    """

    def __init__(self, node: str, transport: str, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [node, str(entry_point()), transport],
            env={**os.environ, "PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        stderr = self.process.stderr
        assert stderr is not None
        said: list[str] = []
        for line in stderr:
            said.append(line)
            if line.rstrip().endswith(f"on port {port}"):
                break
        else:
            self.process.wait()
            stderr.close()
            raise RuntimeError(
                f"the {transport} server exited ({self.process.returncode}) before it "
                f"listened: {''.join(said)[-500:]}"
            )
        self._drain = threading.Thread(target=_drain, args=(stderr,), daemon=True)
        self._drain.start()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._drain.join(10)
        assert self.process.stderr is not None
        self.process.stderr.close()


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


@contextmanager
def serving(node: str, transport: str) -> Generator[str]:
    """The server's URL over ``transport`` (``streamableHttp`` or ``sse``) while it runs;
    each client of it has a session of its own."""
    server = NodeServer(node, transport, free_port())
    path = "mcp" if transport == "streamableHttp" else "sse"
    try:
        yield f"http://127.0.0.1:{server.port}/{path}"
    finally:
        server.stop()


def stdio(node: str, **options: Any) -> dict[str, Any]:
    return {
        "transport": "stdio",
        "command": node,
        "args": [str(entry_point()), "stdio"],
        "timeout": 10,
        **options,
    }


def http(url: str) -> dict[str, Any]:
    return {"transport": "http", "url": url, "timeout": 10}


@asynccontextmanager
async def connected(
    server: dict[str, Any], scenarios: Any = None, /, **options: Any
) -> AsyncGenerator[llm.Client]:
    """A mock client (no limits) with the server registered as ``every``.

    ``scenarios`` script the mock's answers; ``options`` go to ``register_mcp_server``.
    """
    async with llm.open_mock_client(scenarios) as client:
        await client.register_mcp_server("every", server, **options)
        yield client
