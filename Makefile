# Two commands do all the set-up on a fresh machine:
#   make run    the whole pipeline on the embedded default (synthetic data, small model, CPU, offline)
#   make test   the test suite
# Both create .venv and install the package with its pinned torch pair first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The tested pair. pyproject.toml allows a range, so that `pip install cpabanim` keeps a cluster image's own torch
# (tests/test_install.py); this venv gets exactly the pair the project is tested with.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
UV := uv==0.13.10
export OMP_NUM_THREADS ?= 1

.PHONY: venv run run-dvc test lint bench test-gpu bench-gpu gpu-wheels clean-outputs

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the same packages as pip in under half the time (126 s, not 328 s, on a fresh 2-core machine
	# without a cache), unpacking in parallel. The tested torch pair is pinned in the same resolution as the
	# project, so no other package may pull a different torch build. --compile-bytecode as pip does: where
	# PYTHONDONTWRITEBYTECODE is set (CI images), every process would compile its imports again (torch + MLflow +
	# Snakemake: 22 s instead of 8).
	# --system-certs: the platform's certificates, as pip uses them (uv's own bundle fails behind a proxy that
	# re-signs TLS). Where uv cannot install (pip's own index settings, which uv does not read), pip does, as before.
	$(BIN)/pip install $(UV) && $(BIN)/uv pip install --system-certs --compile-bytecode --python $(BIN)/python \
		$(TORCH_PAIR) -e '.[test]' || { echo "uv could not install: pip instead (slower)" >&2; \
		$(BIN)/pip install $(TORCH_PAIR) && $(BIN)/pip install -e '.[test]'; }
	$(BIN)/pip check
	touch $@

# Snakemake records what ran in dvc.lock (`cpabanim record`): `dvc status` is clean after it.
run: venv
	$(BIN)/snakemake --cores all
	$(BIN)/dvc metrics show
	$(BIN)/dvc status

# The same pipeline through DVC (stage commands find `cpabanim` on PATH).
run-dvc: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/dvc metrics show

# Two test processes (pytest-xdist), one file per process at a time (module fixtures such as the e2e
# runs are built once): most tests use one core, and the service tests (SLURM, PostgreSQL, Chromium) mostly wait.
TEST_WORKERS ?= 2
test: venv lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Style and imports (ruff) before the tests: unused names, import order, formatting (docs/architecture.md).
lint: venv
	$(BIN)/ruff check cpabanim tests
	$(BIN)/ruff format --check cpabanim tests

bench: venv
	$(BIN)/cpabanim bench cpab
	$(BIN)/cpabanim bench train

# On a machine with a CUDA GPU (docs/model.md, "On a GPU"): the CUDA tests (CPAB parity, bf16 AMP training,
# pinned-memory loader, torch.compile, 2-process nccl DDP when 2 GPUs exist) and the figures (vox-256 step
# profile at batch 16, CPAB with the paper's Adam fit and with the LM fit vs TPS; the CPAB core on CUDA; the
# input pipeline at 256 px), JSON files and logs in outputs/bench/. scripts/gpu-checks.sh also runs on a GPU
# node's own PyTorch image without this venv (PYTHON=python3), with the wheels of `make gpu-wheels`.
test-gpu: venv
	PYTHON=$(BIN)/python scripts/gpu-checks.sh test

bench-gpu: venv
	PYTHON=$(BIN)/python scripts/gpu-checks.sh bench

# The wheels a GPU node's PyTorch image (Python 3.12, no package index) lacks for the checks: jsonschema's.
GPU_WHEELS := jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)

clean-outputs:
	rm -rf data/processed data/masks models outputs logs mlflow.db mlflow.db.lock .snakemake .cpabanim
