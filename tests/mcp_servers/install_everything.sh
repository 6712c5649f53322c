#!/usr/bin/env bash
# Installs the MCP reference server (@modelcontextprotocol/server-everything) that
# tests/test_mcp_everything.py runs, at one pinned version, into a cache folder outside
# the repository: $LLM_MCP_EVERYTHING_DIR, by default
# ${XDG_CACHE_HOME:-$HOME/.cache}/llm-invocation/server-everything.
#
# Idempotent: when that version is installed already it returns at once, without the
# network. Needs node and npm; without them it says so and exits 1.
set -euo pipefail

VERSION="2026.8.31"
PACKAGE="@modelcontextprotocol/server-everything"
DIR="${LLM_MCP_EVERYTHING_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-invocation/server-everything}"
MANIFEST="$DIR/node_modules/$PACKAGE/package.json"

installed_version() {
    [ -f "$MANIFEST" ] && node -p "require(process.argv[1]).version" "$MANIFEST" 2>/dev/null
}

if ! command -v node >/dev/null 2>&1; then
    echo "error: node is not installed: $PACKAGE runs on it" >&2
    exit 1
fi
if [ "$(installed_version || true)" = "$VERSION" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is not installed: cannot install $PACKAGE" >&2
    exit 1
fi

mkdir -p "$DIR"
# A package.json of our own pins the version; npm writes its lock file beside it.
cat >"$DIR/package.json" <<JSON
{
  "name": "llm-invocation-test-servers",
  "private": true,
  "description": "MCP servers that the llm-invocation tests run",
  "dependencies": { "$PACKAGE": "$VERSION" }
}
JSON
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error >&2

if [ "$(installed_version || true)" != "$VERSION" ]; then
    echo "error: $PACKAGE $VERSION did not install into $DIR" >&2
    exit 1
fi
echo "installed $PACKAGE $VERSION into $DIR" >&2
