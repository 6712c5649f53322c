"""A stdio MCP server whose one tool keeps the process busy, uncancellably.

``busy(path, seconds)`` writes the server's process id to ``path``, then sleeps in a worker
thread for ``seconds``: the SDK cannot cancel it, so the server outlives the end of its
stdin until the sleep is over (as a server in the middle of real work does).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("busy", log_level="WARNING")


@server.tool()
def busy(path: str, seconds: float) -> str:
    """Write the pid to ``path``, then sleep ``seconds``."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "done"


if __name__ == "__main__":
    server.run("stdio")
