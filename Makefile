# Everything runs from a virtual environment in .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# De-identify a folder on embedded defaults: make run IN=/path/to/dicom OUT=/path/to/output
run: install
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make run IN=<folder of DICOM files> OUT=<output folder>"; exit 2; }
	$(BIN)/anon deidentify "$(IN)" --out "$(OUT)" --recursive --data-dir "$(DATA)"

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check shared services tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.deidentify

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
