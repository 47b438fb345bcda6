# Two commands for a fresh clone: `make up` runs the system, `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: up test install console lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
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
