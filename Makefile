# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest bench clients schemas-release asyncapi chaos fuzz clean

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
	$(BIN)/ruff check agentstream tests bench clients chaos
	$(BIN)/ruff format --check agentstream tests bench clients chaos

typecheck: $(DEVSTAMP)
	$(BIN)/mypy agentstream chaos

pytest: $(DEVSTAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	cd bench && ../$(BIN)/python overhead.py && ../$(BIN)/python slow_llm.py

# Freeze changed contracts under their next schema ids (schemas/released/), once compatible.
schemas-release: $(STAMP)
	$(BIN)/python -m agentstream.schemas.release

# The AsyncAPI document of the topology (tests/test_asyncapi.py fails when it is stale).
asyncapi: $(STAMP)
	$(BIN)/agentstream asyncapi --output docs/asyncapi.yaml

# Java, Go and TypeScript examples (clients/) built and run against `agentstream dev`; a missing
# toolchain is reported as SKIPPED (CLIENTS_ARGS=--require-all makes that a failure, as in CI).
clients: $(STAMP)
	$(BIN)/python clients/run.py $(CLIENTS_ARGS)

# Fault scenarios under load (not part of `make test`; ~10 min): CHAOS_ARGS="-s redis-sigstop"
chaos: $(STAMP)
	$(BIN)/python -m chaos run $(CHAOS_ARGS)

# Bad input through the codec, validation and the DLQ header parser: 10^5 cases (~3 min)
fuzz: $(DEVSTAMP)
	$(BIN)/python -m chaos fuzz --cases 100000

clean:
	rm -rf $(VENV) .agentstream .chaos .mypy_cache .ruff_cache .pytest_cache
