"""Shared test set-up: one torch thread (2-core machines, parallel jobs), deterministic seeds, paths."""

from __future__ import annotations

import os
from collections import Counter
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


def _restored_tracking_uri():
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


# ``mlflow.set_tracking_uri`` writes MLFLOW_TRACKING_URI into os.environ: without these, a test (or a module
# fixture, set up before any test's own fixtures) that sets it sends every later test's subprocesses (which inherit
# the environment) to its store, in whatever order the tests run (pytest-xdist's workers run files in another order
# than a serial run): `cpabanim ui` then served another module's store in CI.
_tracking_uri_stays_in_its_test = pytest.fixture(autouse=True, name="_tracking_uri_stays_in_its_test")(
    _restored_tracking_uri
)
_tracking_uri_stays_in_its_module = pytest.fixture(
    autouse=True, scope="module", name="_tracking_uri_stays_in_its_module"
)(_restored_tracking_uri)


# The files that take longest start first. pytest-xdist (`--dist loadfile --no-loadscope-reorder`, the Makefile)
# hands a worker its next file when the current one is nearly done; by default it orders files by their number of
# tests, which put these (few tests, minutes each, SLURM's requeue waits mostly idle) at the end: the run's tail.
LONGEST_FIRST = ("tests/pipeline/test_e2e.py", "tests/pipeline/test_slurm_requeue.py", "tests/pipeline/test_slurm.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FIRST, then the other files by their number of tests (xdist's own order); each file's tests keep
    their order."""
    files = [item.nodeid.split("::")[0] for item in items]
    counts = Counter(files)
    rank = {name: LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST) for name in counts}
    order = {id(item): (rank[name], -counts[name], name) for item, name in zip(items, files)}
    items.sort(key=lambda item: order[id(item)])
