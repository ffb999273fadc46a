# Two commands do all the set-up on a fresh machine:
#   make run    the whole pipeline on the embedded default (synthetic data, small model, CPU, offline)
#   make test   the test suite
# Both create .venv and install the package with its pinned torch pair first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

.PHONY: venv run run-dvc test bench test-gpu bench-gpu clean-outputs

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

# On a machine with a CUDA GPU (docs/model.md, "Training step profile"): the CUDA tests (CPAB parity, bf16 AMP
# training, pinned-memory loader, torch.compile, 2-process nccl DDP when 2 GPUs exist) ...
test-gpu: venv
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'test-gpu: no CUDA device')"
	$(BIN)/python -m pytest -ra tests/cpab/test_cuda.py tests/train/test_gpu.py

# ... and the figures: the vox-256 step profile at batch 16, CPAB (paper's Adam fit, then our LM fit) vs TPS,
# the CPAB core benchmark on CUDA, and the input pipeline at 256 px. JSON files in outputs/bench/.
BENCH_GPU_DIR ?= outputs/bench
bench-gpu: venv
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench-gpu: no CUDA device')"
	$(BIN)/python -c "import torch; print('card:', torch.cuda.get_device_name(0))"
	$(BIN)/cpabanim bench train --profile --device cuda --preset vox-256 --batch-size 16 \
		--json $(BENCH_GPU_DIR)/train_profile_vox256_b16_adam.json
	CPABANIM_BENCH_SET="model.fit_method=lm" $(BIN)/cpabanim bench train --profile --device cuda --preset vox-256 \
		--batch-size 16 --json $(BENCH_GPU_DIR)/train_profile_vox256_b16_lm.json
	$(BIN)/cpabanim bench cpab --device cuda --json $(BENCH_GPU_DIR)/cpab_cuda.json
	$(BIN)/cpabanim bench data --preset vox-256 --batch-size 16 --workers 8 --json $(BENCH_GPU_DIR)/data_256.json

clean-outputs:
	rm -rf data/processed data/masks models outputs logs mlflow.db mlflow.db.lock .snakemake .cpabanim
