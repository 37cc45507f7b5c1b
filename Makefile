# Threadline's two front-door commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: serve test test-unit test-integration test-api test-clients test-conformance lint typecheck bench clean llama doctor system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

# llama.cpp, built from source for a CPU baseline rather than for this machine: x86-64-v3 (AVX2, FMA,
# F16C; no AVX-512, no AMX) or the compiler's default for arm64, so a venv or image built here runs on
# any machine of that baseline. `make llama LLAMA_BUILD=native` builds for this CPU only (faster, not
# portable); `make llama LLAMA_CMAKE_ARGS=...` takes any llama.cpp CMake flags. The version is pinned in
# pyproject.toml; pip's wheel cache is bypassed so the flags chosen here are the ones built.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
LLAMA_BUILD   ?= portable
ifeq ($(LLAMA_BUILD),native)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
endif
LLAMA_STAMP := $(VENV)/.llama-$(LLAMA_VERSION)-$(LLAMA_BUILD)

$(LLAMA_STAMP): | $(BIN)/python
	rm -f $(VENV)/.llama-*
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --no-cache-dir --force-reinstall --no-binary llama-cpp-python \
		"llama-cpp-python==$(LLAMA_VERSION)"
	touch $@

llama: $(LLAMA_STAMP)

# Reinstall only when the project's requirements change.
$(VENV)/.runtime: pyproject.toml $(LLAMA_STAMP) | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(LLAMA_STAMP) | $(BIN)/python
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

# Debian packages, installed only when one is missing and only as root: bubblewrap and a font that
# draws Chinese in charts for code_interpreter's sandbox; Chromium and a CJK font for the console's
# browser tests. Elsewhere code_interpreter refuses with a clear error and the browser tests skip
# (under CI=true they fail).
SYSTEM_PACKAGES := bubblewrap fonts-wqy-microhei chromium fonts-noto-cjk

system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	fi

serve: $(VENV)/.runtime
	$(BIN)/threadline serve

doctor: $(VENV)/.runtime
	$(BIN)/threadline doctor

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# The whole suite on SQLite, then again on PostgreSQL (127.0.0.1:5432; skipped outside CI if absent).
test: system-packages lint typecheck $(SDK_1X)/.openai-$(OPENAI_1X)
	$(BIN)/pytest -q
	THREADLINE_TEST_BACKEND=postgres $(BIN)/pytest -q

# One layer at a time (SQLite; THREADLINE_TEST_BACKEND=postgres for PostgreSQL): unit (the domain with
# the in-process scripted model, in seconds), integration (store, workers, model host, sandbox, remote
# guard), api (the HTTP API through the official SDKs), clients (frameworks and programs written for
# OpenAI), conformance (OpenAI's specs as the oracle). `make test` runs them all, on both databases.
LAYERS := unit integration api clients conformance
UNIT_PLUGINS_OFF := -p no:hypothesispytest -p no:schemathesis -p no:langsmith_plugin

test-unit: $(VENV)/.dev
	$(BIN)/pytest -q $(UNIT_PLUGINS_OFF) tests/unit

$(addprefix test-,$(filter-out unit,$(LAYERS))): test-%: system-packages $(VENV)/.dev $(SDK_1X)/.openai-$(OPENAI_1X)
	$(BIN)/pytest -q tests/$*

bench: system-packages $(VENV)/.dev
	$(BIN)/python -m bench.runs
	$(BIN)/python -m bench.context
	$(BIN)/python -m bench.embedded
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.streaming
	$(BIN)/python -m bench.responses
	$(BIN)/python -m bench.files
	$(BIN)/python -m bench.sandbox
	$(BIN)/python -m bench.retrieval
	$(BIN)/python -m bench.pgvector
	$(BIN)/python -m bench.ingestion
	$(BIN)/python -m bench.chat

clean:
	rm -rf $(VENV) data test-artifacts .pytest_cache .mypy_cache .ruff_cache
