"""Runs a stdio MCP server and writes down every line the client sends it.

Usage: ``python stdio_tap.py LOG COMMAND [ARGS...]``. The server's stdout is the tap's own
(its answers go straight to the client); the client's lines are appended to ``LOG`` and
flushed before they are passed on, so a line the server has answered is in ``LOG`` already,
with every line sent before it. When the client closes its end the tap stops the server
(a server with work still pending would otherwise stay until the client's grace runs out).
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    log_path, *command = sys.argv[1:]
    server = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert server.stdin is not None
    with open(log_path, "ab") as log:
        for line in sys.stdin.buffer:
            log.write(line)
            log.flush()
            try:
                server.stdin.write(line)
                server.stdin.flush()
            except BrokenPipeError:
                break
    try:
        server.stdin.close()
    except BrokenPipeError:
        pass
    server.terminate()
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
