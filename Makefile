# Set-up and checks. Every target creates .venv when it is missing, so a fresh clone needs
# only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := dev,redis,yaml,otel
# Test processes (pytest-xdist): one per CPU; each test file runs whole in one of them.
JOBS   ?= auto

.PHONY: all test quick lint typecheck browser mcp-servers demo bench clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/pyright

# The web page test drives Debian's chromium; install it when missing and we may (root).
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	    else echo "note: chromium is not installed: the web page test will skip"; fi; }

# The MCP reference server that tests/test_mcp_everything.py runs on node (a pinned npm
# package, cached outside the tree); without node its tests skip.
mcp-servers:
	@bash tests/mcp_servers/install_everything.sh || \
	  echo "note: the MCP reference server is not installed: its tests will skip"

test: lint typecheck browser mcp-servers
	$(BIN)/coverage erase
	$(BIN)/pytest -n $(JOBS) --dist loadfile --cov --cov-report= $(PYTEST_ARGS)
	$(BIN)/coverage report --fail-under=85
	$(BIN)/coverage report --include='llm_invocation/runtime/*' --fail-under=90

quick: $(STAMP)
	$(BIN)/pytest -q -m 'not slow' $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m llm_invocation demo

bench: $(STAMP)
	@for b in benchmarks/*_bench.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .coverage .pytest_cache .ruff_cache build dist *.egg-info
