"""``llm-invocation serve`` shuts down gracefully on SIGTERM and SIGINT.

A real process: ``python -m llm_invocation serve`` against the fake provider server (a slow
stream), a trio-websocket client on 127.0.0.1, and the SQLite ledger read afterwards.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket

import llm_invocation as llm
from llm_invocation.actors.websocket import (
    ChunkFrame,
    ChunksFrame,
    DoneFrame,
    ErrorFrame,
    ServerFrame,
    decode_server_message,
)
from llm_invocation.store.ledger import LedgerEntry, open_ledger
from llm_invocation.testing import FakeServer, Scenario, Scenarios, open_fake_server

KEY = "sk-test-SHUTDOWN-0123456789"
GRACE = 1.0
START_LIMIT = 30.0  # the process's start-up (imports) on a loaded machine


def endless() -> Scenario:
    """Streams far longer than the grace: 2 characters every 20 ms for about 40 s."""
    return Scenario(text="e" * 4000, chunk_chars=2, interval=0.02)


def short() -> Scenario:
    """Streams for about 0.5 s, well within a grace of 20 s."""
    return Scenario(text="s" * 50, chunk_chars=2, interval=0.02)


class Served:
    """The ``serve`` process, its port and its files."""

    def __init__(self, process: trio.Process, port: int, ledger: Path, log: Path) -> None:
        self.process = process
        self.port = port
        self.ledger = ledger
        self.log = log


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, "the process closed its output"
        data += chunk
    return data.decode()


@asynccontextmanager
async def serving(tmp_path: Path, server: FakeServer, *, grace: float) -> AsyncGenerator[Served]:
    ledger = tmp_path / "ledger.sqlite3"
    config = tmp_path / "llm.yaml"
    config.write_text(
        f"ledger_path: {ledger}\nwebsocket:\n  port: 0\n  grace: {grace}\n", encoding="utf-8"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("LLM_")
    }
    env |= {"LLM_API_KEY": KEY, "LLM_BASE_URL": server.base_url("openai")}
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "llm_invocation", "--config", str(config), "serve"],
            stdout=-1,  # subprocess.PIPE
            stderr=stderr,
            env=env,
        )
    try:
        assert process.stdout is not None
        with trio.fail_after(START_LIMIT):
            line = await read_line(process.stdout)
        assert line.startswith("chat page: http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        yield Served(process, port, ledger, log)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


@asynccontextmanager
async def websocket(port: int) -> AsyncGenerator[trio_websocket.WebSocketConnection]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, f"127.0.0.1:{port}", "/ws", message_queue_size=0
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


def invoke(id: str) -> str:
    request = llm.Request(model="gpt-4o-mini", messages=[llm.user("tell me a long story")])
    frame: dict[str, Any] = {"type": "invoke", "id": id, "request": msgspec.to_builtins(request)}
    return msgspec.json.encode(frame).decode()


def text_of(frame: ServerFrame) -> str:
    if isinstance(frame, ChunkFrame):
        return frame.chunk.text
    if isinstance(frame, ChunksFrame):
        return "".join(chunk.text for chunk in frame.chunks)
    return ""


async def ledger_entries(path: Path) -> list[LedgerEntry]:
    async with open_ledger(path) as ledger:
        return await ledger.entries()


class Reader:
    """Reads the server's frames and notes when each arrived, until the connection closes."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[float, ServerFrame]] = []
        self.first_text = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = trio.Event()

    async def run(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                now = trio.current_time()
                for frame in decode_server_message(message):
                    self.frames.append((now, frame))
                    if text_of(frame):
                        self.first_text.set()
        except trio_websocket.ConnectionClosed as closed:
            if closed.reason is not None:
                self.close_code = closed.reason.code
                self.close_reason = closed.reason.reason
        finally:
            self.closed.set()


async def test_sigterm_lets_streams_run_through_the_grace_then_cancels_settles_and_exits_0(
    tmp_path: Path,
) -> None:
    async with (
        open_fake_server(Scenarios(endless())) as server,
        serving(tmp_path, server, grace=GRACE) as served,
        websocket(served.port) as ws,
    ):
        reader = Reader(ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.run)
            await ws.send_message(invoke("long"))
            with trio.fail_after(10):
                await reader.first_text.wait()
            signalled = trio.current_time()
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(GRACE + 1.0):
                await served.process.wait()
            exited = trio.current_time()
            with trio.fail_after(5):
                await reader.closed.wait()
        assert served.process.returncode == 0
        assert exited - signalled <= GRACE + 1.0
        # The stream went on during the grace: chunks arrived well after the signal.
        late = [at for at, frame in reader.frames if text_of(frame) and at > signalled + GRACE / 2]
        assert late, "no chunk arrived during the grace"
        ends = [frame for _, frame in reader.frames if isinstance(frame, DoneFrame | ErrorFrame)]
        assert len(ends) == 1
        (end,) = ends
        assert isinstance(end, ErrorFrame)
        assert (end.id, end.code) == ("long", "canceled")
        assert end.details == {"reason": "shutting_down"}
        assert end.usage is not None and end.usage.completion_tokens > 0
        assert (reader.close_code, reader.close_reason) == (1001, "server shutting down")
    log = served.log.read_text()
    assert "SIGTERM: shutting down" in log
    assert "Traceback" not in log and KEY not in log
    (entry,) = await ledger_entries(served.ledger)
    assert entry.status == "cancelled"
    assert entry.completion_tokens == end.usage.completion_tokens


async def test_sigint_lets_a_stream_finish_within_the_grace_and_records_it_ok(
    tmp_path: Path,
) -> None:
    grace = 20.0  # the stream needs about 0.5 s of it; the process leaves once it is done
    async with (
        open_fake_server(Scenarios(short())) as server,
        serving(tmp_path, server, grace=grace) as served,
        websocket(served.port) as ws,
    ):
        reader = Reader(ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.run)
            await ws.send_message(invoke("brief"))
            with trio.fail_after(10):
                await reader.first_text.wait()
            served.process.send_signal(signal.SIGINT)
            with trio.fail_after(grace + 1.0):
                await served.process.wait()
            with trio.fail_after(5):
                await reader.closed.wait()
        assert served.process.returncode == 0
        ends = [frame for _, frame in reader.frames if isinstance(frame, DoneFrame | ErrorFrame)]
        assert len(ends) == 1
        (end,) = ends
        assert isinstance(end, DoneFrame)
        assert end.response.text == "s" * 50
        assert reader.close_code == 1001
    log = served.log.read_text()
    assert "SIGINT: shutting down" in log
    assert "Traceback" not in log
    (entry,) = await ledger_entries(served.ledger)
    assert entry.status == "ok"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])  # noqa: S104 - refusing it is the test
def test_serve_on_a_public_address_without_tokens_is_refused_in_one_line(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import logging

    from llm_invocation.cli import main

    for name in list(os.environ):
        if name.startswith("LLM_") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    logger = logging.getLogger("llm_invocation")  # the command line sets its logging up
    monkeypatch.setattr(logger, "handlers", logger.handlers[:])
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    level = logger.level
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(["serve", "--host", host, "--port", "0"], out=out, err=err)
    finally:
        logger.setLevel(level)  # setLevel (not the attribute) also clears logging's cache
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    assert code == 1
    assert out.getvalue() == ""
    assert len(lines) == 1
    assert "without tokens" in lines[0] and "insecure_no_auth" in lines[0]
    assert "(configuration)" in lines[0]
    assert "Traceback" not in err.getvalue()
