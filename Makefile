# Two commands do all the set-up on a fresh machine:
#   make run    the whole pipeline on the embedded default (synthetic data, small model, CPU, offline)
#   make test   the test suite
# Both create .venv and install the package with its pinned torch pair first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

.PHONY: venv run run-dvc test bench clean-outputs

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: no other package may pull a different torch build.
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[test]'
	$(BIN)/pip check
	touch $@

run: venv
	$(BIN)/snakemake --cores all
	$(BIN)/dvc metrics show

# The same pipeline through DVC (stage commands find `cpabanim` on PATH).
run-dvc: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/dvc metrics show

test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/cpabanim bench cpab
	$(BIN)/cpabanim bench train

clean-outputs:
	rm -rf data/processed data/masks models outputs mlflow.db .snakemake
