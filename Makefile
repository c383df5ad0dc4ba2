# `make demo` and `make test` create .venv and install into it first.
# torch is installed before the rest so that pip does not resolve a loose `torch` to a multi-GB build
# you did not ask for; pick yours with e.g. `make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/lightning-asr fit --config configs/demo.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=15

test-benchmarks: $(VENV)/.installed
	$(PY) -m pytest -q -m benchmarks --durations=5

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: install demo test test-benchmarks lint
