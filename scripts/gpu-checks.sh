#!/usr/bin/env bash
# The GPU checks of docs/model.md ("On a GPU") in one command, on a machine with a CUDA GPU:
#
#   scripts/gpu-checks.sh test     the CUDA tests (CPAB parity and no host sync, bf16 AMP training with pinned
#                                  memory, workers and channels_last, compiled networks, 2-GPU nccl DDP)
#   scripts/gpu-checks.sh bench    the figures: vox-256 step profile at batch 16 (CPAB with the paper's Adam fit,
#                                  CPAB with the LM fit, TPS), the CPAB core on CUDA, the input pipeline
#   scripts/gpu-checks.sh all      both
#
# Python: $PYTHON, else the project's .venv, else python3 -- a GPU node's own PyTorch image works without the
# project's venv: the checks import only torch, torchvision, numpy, scipy, yaml, OpenCV, scikit-image, Pillow,
# matplotlib, tqdm and jsonschema (MLflow, DVC, Snakemake and the face models are not needed). Where jsonschema
# is missing and no package index is reachable, `make gpu-wheels` (on a machine with one) puts its wheels in
# .whl/, and this script installs them into a temporary folder. Figures and logs go to $OUT (else outputs/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
out="${OUT:-outputs/bench}"
mkdir -p "$out"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$python" -c "import jsonschema" 2>/dev/null; then
    compgen -G ".whl/*.whl" >/dev/null || { echo "gpu-checks: jsonschema missing and no wheels in .whl/ (make gpu-wheels)"; exit 2; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cpabanim-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/cpabanim-site"
fi
"$python" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu-checks: no CUDA device")
print(f"card: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}")
EOF

if [[ "$what" == test || "$what" == all ]]; then
    # addopts cleared: pytest-timeout (the project's test extra) may be absent on a GPU node's image
    "$python" -m pytest -p no:cacheprovider -o addopts="" -ra tests/cpab/test_cuda.py tests/train/test_gpu.py \
        2>&1 | tee "$out/test_gpu.log"
fi
if [[ "$what" == bench || "$what" == all ]]; then
    cli=("$python" -m cpabanim)
    "${cli[@]}" bench train --profile --device cuda --preset vox-256 --batch-size 16 \
        --json "$out/train_profile_vox256_b16_adam.json" 2>&1 | tee "$out/bench.log"
    CPABANIM_BENCH_SET="model.fit_method=lm" "${cli[@]}" bench train --profile --device cuda --preset vox-256 \
        --batch-size 16 --json "$out/train_profile_vox256_b16_lm.json" 2>&1 | tee -a "$out/bench.log"
    "${cli[@]}" bench cpab --device cuda --json "$out/cpab_cuda.json" 2>&1 | tee -a "$out/bench.log"
    "${cli[@]}" bench data --preset vox-256 --batch-size 16 --workers 8 --json "$out/data_256.json" \
        2>&1 | tee -a "$out/bench.log"
fi
