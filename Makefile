# Targets are what CI and the README run. Everything installs into .venv inside the repo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo

MODEL_NAME ?= sc2-spike-small
MODEL_VERSION ?= 2026-12
MODEL_RUN ?= runs/model
MODEL_PROVENANCE ?= 6,504 public SARS-CoV-2 genomes of ../shared/data (see its README): \
sequenced samples from andersen-lab/HCoV-19-Genomics (San Diego, 2020-2024), nextstrain/ncov \
example data (GenBank, 2019-2020) and Nextclade example sets, each labelled with one of 8 classes \
only where three methods agree (nearest Nextclade reference-tree tip, Nextstrain clade rules, \
cov-lineages constellations) and passing QC; recombinants left out. Mostly USA genomes; beta (16) \
and lambda (17) are scarce.

.PHONY: venv demo test lint format bench real model heldout clean chromium

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

# the shipped model: train `small` on the real genomes of ../shared/data (prepare, train,
# evaluate: src/bertgeom/resources/model.toml), then install it as package data with float16
# weights and a model card (src/bertgeom/resources/models/$(MODEL_NAME)/)
model: venv
	$(BIN)/bertgeom run --config src/bertgeom/resources/model.toml
	$(BIN)/bertgeom models install $(MODEL_RUN) --name $(MODEL_NAME) --version $(MODEL_VERSION) \
		--provenance "$(MODEL_PROVENANCE)" \
		--command-line "make model  # on a fresh clone, with ../shared/data beside it" \
		--command-line "bertgeom run --config src/bertgeom/resources/model.toml" \
		--command-line "bertgeom models install $(MODEL_RUN) --name $(MODEL_NAME) --version $(MODEL_VERSION)"

# lineage-disjoint evaluation on ../shared/data: whole lineages held out of training (~25 minutes)
heldout: venv
	$(BIN)/bertgeom run --config src/bertgeom/resources/heldout.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
