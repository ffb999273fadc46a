"""Shared test set-up: one torch thread (2-core machines, parallel jobs), deterministic seeds, paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_FACES = PROJECT_ROOT.parent / "shared" / "data" / "faces"


@pytest.fixture(autouse=True)
def _torch_threads_and_seed():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
requires_faces = pytest.mark.skipif(
    not SHARED_FACES.is_dir(), reason=f"real face clips not found at {SHARED_FACES} (../shared/data/faces)"
)


@pytest.fixture(autouse=True)
def _tracking_uri_stays_in_its_test():
    """``mlflow.set_tracking_uri`` writes MLFLOW_TRACKING_URI into os.environ: without this, a test that sets it
    sends every later test's subprocesses (which inherit the environment) to its store, in whatever order the
    tests run (pytest-xdist's workers run files in another order than a serial run)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
