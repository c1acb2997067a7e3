# Every target sets up .venv from scratch when it is missing or stale.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test run bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/identity-bot demo

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

run: $(STAMP)
	$(BIN)/identity-bot run

bench: $(STAMP)
	$(BIN)/python benchmarks/gateway.py
	$(BIN)/python benchmarks/auth_flood.py
	$(BIN)/python benchmarks/inbound.py

lint: $(STAMP)
	$(BIN)/ruff check bot handlers models tests

clean:
	rm -rf $(VENV) .identity-bot .pytest_cache benchmarks/.tools
