# Targets are what CI and the README run. Everything installs into .venv inside the repo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo

.PHONY: venv demo test lint format bench real heldout clean chromium

venv: $(STAMP)

# torch first, pinned to the CPU wheel on this machine's disk: a bare "torch" would pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/bertgeom demo --out $(RUN_DIR)

# the browser test renders the report in headless Chromium (Debian's package)
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: venv chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: venv
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: venv
	$(BIN)/python benchmarks/prepare.py

# the same pipeline on the real genomes of ../shared/data (about 25 minutes on 2 cores)
real: venv
	$(BIN)/bertgeom run --config src/bertgeom/resources/real.toml

# lineage-disjoint evaluation on ../shared/data: whole lineages held out of training (~25 minutes)
heldout: venv
	$(BIN)/bertgeom run --config src/bertgeom/resources/heldout.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
