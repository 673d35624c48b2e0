# Everything runs from a virtual environment in .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data

# The Debian packages the tests use: DCMTK (storescu, dcmdump), dicom3tools (dciodvfy) and
# Orthanc (the PACS and the export destination of the query/retrieve and export tests),
# Chromium (the browser of the web console's tests), docker-compose (the compose file's
# schema check) and prometheus (promtool, the alert rules' check).
TEST_PACKAGES := dcmtk dicom3tools orthanc chromium docker-compose prometheus

.PHONY: install bytecode system-packages run deidentify test lint bench fuzz clean

install: $(VENV)/.installed

# Installs TEST_PACKAGES when this user may (root or password-less sudo); otherwise stops
# with the apt-get line to run.
system-packages:
	@scripts/system-packages $(TEST_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The project's modules compiled once, for every process started after: where Python may
# not write bytecode as it imports (PYTHONDONTWRITEBYTECODE, as in many container setups)
# each service and command would compile them again at every start: 0.1 to 0.3 s for a
# service here, 0.07 s for `anon deidentify`, about 5 % of the time of end-to-end tests.
bytecode: install
	@$(BIN)/python -c "import compileall, pathlib, services, shared; raise SystemExit(not all(\
	    compileall.compile_dir(pathlib.Path(m.__file__).parent, quiet=1) for m in (shared, services)))"

# The whole system in one process on embedded defaults: a Storage SCP on port 11112
# (AE title ANONSCP) feeding the de-identification workers; Ctrl-C stops it.
run: bytecode
	$(BIN)/anon serve --data-dir "$(DATA)"

# De-identify a folder without the services: make deidentify IN=/path/to/dicom OUT=/path/out
deidentify: bytecode
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make deidentify IN=<folder of DICOM files> OUT=<output folder>"; exit 2; }
	$(BIN)/anon deidentify "$(IN)" --out "$(OUT)" --recursive --data-dir "$(DATA)"

# The tests in one process by default. TEST_WORKERS=2 runs them in two (most of their time
# is spent waiting for servers and subprocesses), whole files to one process, then alone
# those that stop a shared server or time themselves (marked exclusive): about 11 minutes
# instead of 17, but tests that depend on timing have failed intermittently that way.
TEST_WORKERS ?= 1
test: bytecode system-packages
ifeq ($(TEST_WORKERS),1)
	$(BIN)/python -m pytest
else
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not exclusive"
	$(BIN)/python -m pytest -m exclusive
endif

lint: install
	$(BIN)/ruff check shared services tests benchmarks fuzz
	$(BIN)/mypy

bench: bytecode
	$(BIN)/python -m benchmarks.deidentify
	$(BIN)/python -m benchmarks.pipeline
	$(BIN)/python -m benchmarks.rt_batch
	$(BIN)/python -m benchmarks.cli_startup

# Fuzz the reader and the engine for MINUTES (default 30) on one core; see fuzz/README.md.
MINUTES ?= 30
fuzz: install
	$(BIN)/pip install --quiet -e '.[fuzz]'
	$(BIN)/python -m fuzz.run --minutes $(MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
