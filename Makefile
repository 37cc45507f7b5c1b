# Threadline's two front-door commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: serve test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

# Reinstall only when the project's requirements change.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.runtime

# A second SDK generation for the lesson tests: the newest openai 1.x (it still has client.beta.threads),
# kept out of the venv so the venv's own openai stays the current one. Tests put it on PYTHONPATH.
OPENAI_1X := 1.109.1
SDK_1X    := $(VENV)/sdk-1x

$(SDK_1X)/.openai-$(OPENAI_1X): | $(BIN)/python
	rm -rf $(SDK_1X)
	$(PIP) install --target $(SDK_1X) openai==$(OPENAI_1X) python-dotenv
	touch $@

serve: $(VENV)/.runtime
	$(BIN)/threadline serve

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# The whole suite on SQLite, then again on PostgreSQL (127.0.0.1:5432; skipped outside CI if absent).
test: lint typecheck $(SDK_1X)/.openai-$(OPENAI_1X)
	$(BIN)/pytest -q
	THREADLINE_TEST_BACKEND=postgres $(BIN)/pytest -q

bench: $(VENV)/.dev
	$(BIN)/python -m bench.runs
	$(BIN)/python -m bench.context
	$(BIN)/python -m bench.embedded
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.streaming
	$(BIN)/python -m bench.files

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
