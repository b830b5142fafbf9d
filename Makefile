# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest bench chaos fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/agentstream dev --demo

lint: $(DEVSTAMP)
	$(BIN)/ruff check agentstream tests bench chaos
	$(BIN)/ruff format --check agentstream tests bench chaos

typecheck: $(DEVSTAMP)
	$(BIN)/mypy agentstream chaos

pytest: $(DEVSTAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	cd bench && ../$(BIN)/python overhead.py && ../$(BIN)/python slow_llm.py

# Fault scenarios under load (not part of `make test`; ~10 min): CHAOS_ARGS="-s redis-sigstop"
chaos: $(STAMP)
	$(BIN)/python -m chaos run $(CHAOS_ARGS)

# Bad input through the codec, validation and the DLQ header parser: 10^5 cases (~3 min)
fuzz: $(DEVSTAMP)
	$(BIN)/python -m chaos fuzz --cases 100000

clean:
	rm -rf $(VENV) .agentstream .chaos .mypy_cache .ruff_cache .pytest_cache
