# Set-up and checks. Every target creates .venv when it is missing, so a fresh clone needs
# only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := dev,redis,yaml,otel

.PHONY: all test quick lint typecheck demo bench clean

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

test: lint typecheck
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
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
